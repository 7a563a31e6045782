// SPDX-License-Identifier: GPL-2.0
/*
 * spp_demo - a minimal VMM showing KVM sub-page write protection (SPP).
 *
 * The VMM guards one 4 KiB guest page with a per-sub-page write permission
 * vector (32 sub-pages of 128 bytes), then runs a 16-bit real-mode guest
 * that writes one byte into each sub-page.  Writes to writable sub-pages go
 * through; writes to protected ones exit to the VMM with KVM_EXIT_SPP, and
 * the VMM skips the faulting instruction.  Only raw /dev/kvm ioctls are used.
 *
 * See Documentation/virt/kvm/x86/spp.rst.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/kvm.h>

#define MEM_SIZE	0x10000		/* one memslot: 64 KiB at GPA 0 */
#define CODE_GPA	0x1000		/* guest code */
#define DATA_GPA	0x2000		/* the sub-page protected page */
#define WRITE_OFF	64		/* where in each sub-page the guest writes */
#define GUEST_VAL	0x40		/* sub-page i receives GUEST_VAL + i */
#define FILL		0xee		/* the data page's original contents */
#define NR_SUBPAGES	32
#define SUBPAGE		KVM_SUBPAGE_SIZE

/* Bit i set = sub-page i writable: sub-pages 8-15 and 24-31 protected. */
#define ACCESS		0x00ff00ffU

#define __STR(x)	#x
#define STR(x)		__STR(x)

/*
 * The guest, assembled by gcc as 16-bit code and copied to CODE_GPA:
 *	for (i = 0; i < 32; i++)
 *		*(u8 *)(DATA_GPA + 128 * i + WRITE_OFF) = GUEST_VAL + i;
 *	hlt;
 *
 * Before each write the guest reloads CR3, which flushes its TLB.  A real
 * CPU checks sub-page permissions on every write, but Bochs 2.7 caches a
 * write that SPP permitted in its TLB for the whole page, so without the
 * flush a later write to a protected sub-page would go unchecked there.
 */
asm(
"	.pushsection .rodata.guest, \"a\"\n"
"	.code16\n"
"	.globl	guest_code, guest_code_end\n"
"guest_code:\n"
"	xor	%ax, %ax\n"
"	mov	%ax, %ds\n"
"	mov	$" STR(DATA_GPA + WRITE_OFF) ", %bx\n"
"	movb	(%bx), %dl\n"		/* first touch: KVM maps the page */
"	mov	$" STR(NR_SUBPAGES) ", %cx\n"
"	mov	$" STR(GUEST_VAL) ", %al\n"
"1:	mov	%cr3, %edx\n"		/* flush the TLB: see below */
"	mov	%edx, %cr3\n"
"	movb	%al, (%bx)\n"		/* the write SPP checks */
"	inc	%al\n"
"	add	$" STR(SUBPAGE) ", %bx\n"
"	loop	1b\n"
"	hlt\n"
"guest_code_end:\n"
"	.code64\n"
"	.popsection\n");
extern const unsigned char guest_code[], guest_code_end[];

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static int kvm_ioctl(int fd, unsigned long req, void *arg, const char *name)
{
	int r = ioctl(fd, req, arg);

	if (r < 0)
		die(name);
	return r;
}

/*
 * Print the permission map of a page: one cell per sub-page, 'W' writable,
 * 'P' write-protected, under a ruler of sub-page indices; optionally
 * followed by the byte ranges of each run of equal cells.
 */
static void print_access(__u32 access, bool ranges)
{
	char cells[NR_SUBPAGES + 1] = { 0 };
	int i, end;

	for (i = 0; i < NR_SUBPAGES; i++)
		cells[i] = access & (1U << i) ? 'W' : 'P';
	printf("  sub-page  0         1         2         3\n");
	printf("            01234567890123456789012345678901\n");
	printf("  access    %s\n", cells);
	for (i = 0; ranges && i < NR_SUBPAGES; i = end) {
		for (end = i; end < NR_SUBPAGES && cells[end] == cells[i]; end++)
			;
		printf("    sub-pages %2d-%-2d  bytes 0x%03x-0x%03x  %s\n",
		       i, end - 1, i * SUBPAGE, end * SUBPAGE - 1,
		       cells[i] == 'W' ? "writable" : "write-protected");
	}
}

/*
 * Print the vCPU's SPP counters from its binary stats file descriptor
 * (see KVM_GET_STATS_FD in api.rst).  Silently skips absent names.
 */
static void print_spp_stats(int vcpu)
{
	struct kvm_stats_header h;
	struct kvm_stats_desc *d;
	size_t dsz;
	char *descs;
	__u32 i;
	__u64 val;
	int fd;

	fd = ioctl(vcpu, KVM_GET_STATS_FD, NULL);
	if (fd < 0)
		return;
	if (pread(fd, &h, sizeof(h), 0) != sizeof(h))
		goto out;
	dsz = sizeof(*d) + h.name_size;
	descs = malloc(dsz * h.num_desc);
	if (!descs || pread(fd, descs, dsz * h.num_desc, h.desc_offset) !=
	    (ssize_t)(dsz * h.num_desc))
		goto out_free;
	for (i = 0; i < h.num_desc; i++) {
		d = (struct kvm_stats_desc *)(descs + i * dsz);
		if (strcmp(d->name, "spp_exits") &&
		    strcmp(d->name, "spp_emulated_writes"))
			continue;
		if (pread(fd, &val, sizeof(val), h.data_offset + d->offset) ==
		    sizeof(val))
			printf("  stat %-20s %llu%s\n", d->name,
			       (unsigned long long)val,
			       strcmp(d->name, "spp_emulated_writes") ? "" :
			       "  (permitted writes that exited to KVM)");
	}
out_free:
	free(descs);
out:
	close(fd);
}

int main(void)
{
	struct kvm_userspace_memory_region region = { 0 };
	struct kvm_enable_cap cap = { .cap = KVM_CAP_X86_SPP };
	struct kvm_subpage_access sa = { 0 };
	__u32 access = ACCESS, readback[2];
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_run *run;
	int kvm, vm, vcpu, spp, i, j;
	int nexits = 0, nwritten = 0, nprotected = 0, ok = 1;
	char result[NR_SUBPAGES + 1] = { 0 };
	bool denied[NR_SUBPAGES] = { 0 };
	unsigned char *mem, *data;
	long run_size;
	__u64 off;

	/*
	 * 1. Does this kernel support SPP, and how is it enforced?  Bits 15:0
	 *    of the answer are the max pages per SET/GET call; bit 16 tells
	 *    whether the CPU's SPP feature is used (no exit for a write to a
	 *    writable sub-page) or KVM emulates every write to a protected page.
	 */
	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die("open /dev/kvm");
	spp = kvm_ioctl(kvm, KVM_CHECK_EXTENSION, (void *)KVM_CAP_X86_SPP,
			"KVM_CHECK_EXTENSION");
	if (!spp) {
		fprintf(stderr, "KVM_CAP_X86_SPP: not supported by this kernel\n");
		return 1;
	}
	printf("KVM_CAP_X86_SPP = 0x%x: %s, up to %d pages per call\n", spp,
	       spp & KVM_SPP_CAP_HW_ACCELERATED ?
	       "hardware-accelerated (VMX SPP)" :
	       "emulated (read-only mapping + instruction emulation)",
	       spp & KVM_SPP_CAP_MAX_PAGES_MASK);

	/*
	 * 2. Create the VM and opt in to SPP.  This must happen before the
	 *    first vCPU is created (-EBUSY otherwise); flags/args must be 0.
	 */
	vm = kvm_ioctl(kvm, KVM_CREATE_VM, 0, "KVM_CREATE_VM");
	kvm_ioctl(vm, KVM_ENABLE_CAP, &cap, "KVM_ENABLE_CAP(KVM_CAP_X86_SPP)");

	/* Needed for real mode on Intel CPUs without unrestricted guest. */
	kvm_ioctl(vm, KVM_SET_TSS_ADDR, (void *)0xfffbd000UL,
		  "KVM_SET_TSS_ADDR");

	/*
	 * 3. Guest memory: one slot.  Permissions belong to gfns, not to
	 *    memslots: they could be set before the slot exists, and they
	 *    survive deleting, moving or re-creating it.
	 */
	mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED)
		die("mmap guest memory");
	memcpy(mem + CODE_GPA, guest_code, guest_code_end - guest_code);
	data = mem + DATA_GPA;
	memset(data, FILL, 4096);
	region.slot = 0;
	region.guest_phys_addr = 0;
	region.memory_size = MEM_SIZE;
	region.userspace_addr = (unsigned long)mem;
	kvm_ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region,
		  "KVM_SET_USER_MEMORY_REGION");

	/*
	 * 4. Guard the data page.  access_map points to one __u32 vector per
	 *    page; bit i set means bytes [128*i, 128*i+127] are writable.
	 */
	sa.base_gfn = DATA_GPA >> 12;
	sa.npages = 1;
	sa.access_map = (unsigned long)&access;
	kvm_ioctl(vm, KVM_SUBPAGES_SET_ACCESS, &sa, "KVM_SUBPAGES_SET_ACCESS");

	/* Read back the code page and the data page: a 2-page GET. */
	sa.base_gfn = CODE_GPA >> 12;
	sa.npages = 2;
	sa.access_map = (unsigned long)readback;
	kvm_ioctl(vm, KVM_SUBPAGES_GET_ACCESS, &sa, "KVM_SUBPAGES_GET_ACCESS");
	printf("GET_ACCESS: gfn 0x%x = 0x%08x (unprotected), gfn 0x%x = 0x%08x\n",
	       CODE_GPA >> 12, readback[0], DATA_GPA >> 12, readback[1]);
	if (readback[0] != KVM_SUBPAGE_FULL_ACCESS || readback[1] != access) {
		fprintf(stderr, "GET_ACCESS does not match what was set\n");
		ok = 0;
	}
	printf("\nPage at GPA 0x%x before the guest runs:\n", DATA_GPA);
	print_access(readback[1], true);

	/* 5. One vCPU in real mode, CS base 0, starting at CODE_GPA. */
	vcpu = kvm_ioctl(vm, KVM_CREATE_VCPU, 0, "KVM_CREATE_VCPU");
	run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size < (long)sizeof(*run))
		die("KVM_GET_VCPU_MMAP_SIZE");
	run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		die("mmap kvm_run");
	kvm_ioctl(vcpu, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	kvm_ioctl(vcpu, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
	memset(&regs, 0, sizeof(regs));
	regs.rip = CODE_GPA;
	regs.rflags = 0x2;
	kvm_ioctl(vcpu, KVM_SET_REGS, &regs, "KVM_SET_REGS");

	/* 6. Run until the guest halts; skip each denied write. */
	printf("\nRunning the guest:\n");
	for (;;) {
		kvm_ioctl(vcpu, KVM_RUN, NULL, "KVM_RUN");
		if (run->exit_reason == KVM_EXIT_HLT)
			break;
		if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR) {
			fprintf(stderr, "KVM_EXIT_INTERNAL_ERROR, suberror %u\n",
				run->internal.suberror);
			return 1;
		}
		if (run->exit_reason != KVM_EXIT_SPP) {
			fprintf(stderr, "unexpected exit reason %u\n",
				run->exit_reason);
			return 1;
		}

		/*
		 * KVM_EXIT_SPP: nothing of the write reached memory and RIP
		 * still points at the faulting instruction.  run->spp.action
		 * tells the next KVM_RUN what to do: RETRY (after changing
		 * the permissions), ALLOW this one write, or (as here) SKIP
		 * it: KVM completes the instruction with the write dropped.
		 */
		kvm_ioctl(vcpu, KVM_GET_REGS, &regs, "KVM_GET_REGS");
		off = run->spp.gpa - DATA_GPA;
		i = off < 4096 ? (int)(off / SUBPAGE) : -1;
		printf("  KVM_EXIT_SPP: gpa 0x%llx rip 0x%llx insn_len %u sub-page %d%s\n",
		       (unsigned long long)run->spp.gpa,
		       (unsigned long long)regs.rip, run->spp.insn_len, i,
		       run->spp.flags & KVM_SPP_EXIT_EMULATED ?
		       " (emulated)" : "");
		if (i < 0 || denied[i] || ++nexits > NR_SUBPAGES) {
			fprintf(stderr, "unexpected KVM_EXIT_SPP\n");
			return 1;
		}
		denied[i] = true;
		run->spp.action = KVM_SPP_ACTION_SKIP;
	}

	/*
	 * 7. Check every sub-page: a writable one must hold the guest's byte,
	 *    a protected one must have caused an exit and kept its bytes;
	 *    no other byte of the page may have changed.
	 */
	for (i = 0; i < NR_SUBPAGES; i++) {
		bool prot = !(access & (1U << i));
		unsigned char *sp = data + i * SUBPAGE;
		bool others_intact = true;

		for (j = 0; j < SUBPAGE; j++)
			if (j != WRITE_OFF && sp[j] != FILL)
				others_intact = false;
		if (sp[WRITE_OFF] == GUEST_VAL + i)
			nwritten++;
		nprotected += prot;
		if (prot && denied[i] && sp[WRITE_OFF] == FILL && others_intact)
			result[i] = 'd';
		else if (!prot && !denied[i] && sp[WRITE_OFF] == GUEST_VAL + i &&
			 others_intact)
			result[i] = 'w';
		else
			result[i] = '!';
		if (result[i] == '!')
			ok = 0;
	}

	printf("\nPage at GPA 0x%x after the guest ran:\n", DATA_GPA);
	print_access(access, false);
	printf("  result    %s\n", result);
	printf("            w = written, d = denied (bytes kept), ! = wrong\n\n");
	printf("  KVM_EXIT_SPP exits: %d (protected sub-pages written: %d)\n",
	       nexits, nprotected);
	printf("  writes that went through: %d\n", nwritten);
	print_spp_stats(vcpu);
	if (nexits != nprotected)
		ok = 0;

	printf("spp_demo: %s\n", ok ? "PASS" : "FAIL");
	return ok ? 0 : 1;
}
