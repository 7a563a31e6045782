// SPDX-License-Identifier: GPL-2.0
/*
 * cpufacts: print what the (emulated) CPU offers for KVM, as the booted
 * kernel sees it: vendor virtualization (VMX/SVM), second-level paging
 * (EPT/NPT) and EPT-based sub-page write permissions (SPP), i.e.
 * IA32_VMX_PROCBASED_CTLS2 (MSR 0x48b) allowed-1 bit 23.
 */
#include <cpuid.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int rdmsr(uint32_t msr, uint64_t *val)
{
	int fd = open("/dev/cpu/0/msr", O_RDONLY);
	int ok;

	if (fd < 0)
		return -1;
	ok = pread(fd, val, sizeof(*val), msr) == sizeof(*val);
	close(fd);
	return ok ? 0 : -1;
}

int main(void)
{
	unsigned int a, b, c, d, brand[12] = { 0 };
	int vmx, svm = 0, ept = 0, npt = 0, spp = 0;
	uint64_t ctls, ctls2;
	char *model;

	__cpuid(1, a, b, c, d);
	vmx = !!(c & (1u << 5));
	__cpuid(0x80000000, a, b, c, d);
	if (a >= 0x80000004) {
		__cpuid(0x80000002, brand[0], brand[1], brand[2], brand[3]);
		__cpuid(0x80000003, brand[4], brand[5], brand[6], brand[7]);
		__cpuid(0x80000004, brand[8], brand[9], brand[10], brand[11]);
	}
	if (a >= 0x80000001) {
		__cpuid(0x80000001, a, b, c, d);
		svm = !!(c & (1u << 2));
	}
	if (svm) {
		__cpuid(0x8000000a, a, b, c, d);
		npt = !!(d & 1);
	}
	if (vmx && !rdmsr(0x482, &ctls) && (ctls >> 63) & 1 &&
	    !rdmsr(0x48b, &ctls2)) {
		ept = !!((ctls2 >> 32) & (1u << 1));
		spp = !!((ctls2 >> 32) & (1u << 23));
	}
	model = (char *)brand;
	while (*model == ' ')
		model++;
	printf("# cpu: %s\n", *model ? model : "unknown");
	printf("# facts: virt=%s paging=%s spp=%s\n",
	       vmx ? "vmx" : svm ? "svm" : "none",
	       ept ? "ept" : npt ? "npt" : "none", spp ? "yes" : "no");
	return 0;
}
