// SPDX-License-Identifier: GPL-2.0
/*
 * spp_bench: what KVM_SUBPAGES_SET_ACCESS costs, against KVM_CLEAR_DIRTY_LOG
 * over the same memory in the same run.  A benchmark, not a timed test: it
 * prints its measurements and fails only if an ioctl fails.
 *
 * Over a memslot of -p pages (default 262144, 1 GiB), SET is called with
 * 512 pages per call to protect, then to unprotect, every page, first with
 * the memory never touched by the guest (no SPTEs), then after the guest
 * wrote every page (SPTEs present), and once more with vectors that differ
 * from page to page (one block of vectors per call).  The fixed cost of a call is measured
 * with 1, 8, 64 and 512 pages.  Then dirty logging is enabled (manual
 * protect), the guest dirties every page again, and KVM_CLEAR_DIRTY_LOG
 * write-protects them, 512 pages per call.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <linux/bitmap.h>

#include "test_util.h"
#include "kvm_util.h"
#include "processor.h"
#include "ucall_common.h"
#include "kselftest.h"

#define BENCH_SLOT	10
#define BENCH_GPA	0x100000000ULL	/* 4 GiB, identity mapped */
#define CHUNK		512
#define FIXED_CALLS	64

static uint64_t npages = 262144;

static void guest_touch(uint64_t gva, uint64_t n)
{
	uint64_t i;

	/*
	 * At offset 0: Bochs 2.7 logs the unaligned gpa of a store in the PML
	 * buffer, which trips a WARN in vmx_flush_pml_buffer() once dirty
	 * logging is on (an emulator bug, see README.md).
	 */
	for (;;) {
		for (i = 0; i < n; i++)
			WRITE_ONCE(*(uint8_t *)(gva + i * PAGE_SIZE), i);
		GUEST_SYNC(0);
	}
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static void set_range(struct kvm_vm *vm, uint64_t gfn, uint32_t n,
		      const uint32_t *map)
{
	struct kvm_subpage_access sa = {
		.base_gfn = gfn,
		.npages = n,
		.access_map = (uint64_t)(uintptr_t)map,
	};

	vm_ioctl(vm, KVM_SUBPAGES_SET_ACCESS, &sa);
}

/*
 * SET every page of the memslot to @vec (or, if @distinct, to vectors that
 * differ from page to page), CHUNK pages per call: ns/page.
 */
static double set_all(struct kvm_vm *vm, uint32_t vec, bool distinct)
{
	uint32_t map[CHUNK];
	uint64_t t0, off;
	int i;

	for (i = 0; i < CHUNK; i++)
		map[i] = distinct ? vec ^ (1U << (i % 31)) : vec;
	t0 = now_ns();
	for (off = 0; off < npages; off += CHUNK)
		set_range(vm, (BENCH_GPA >> PAGE_SHIFT) + off, CHUNK, map);
	return (double)(now_ns() - t0) / npages;
}

static void touch(struct kvm_vcpu *vcpu)
{
	struct ucall uc;

	vcpu_run(vcpu);
	if (get_ucall(vcpu, &uc) == UCALL_ABORT)
		REPORT_GUEST_ASSERT(uc);
	TEST_ASSERT_EQ(uc.cmd, UCALL_SYNC);
}

int main(int argc, char *argv[])
{
	static const uint32_t sizes[] = { 1, 8, 64, 512 };
	double untouched[2], touched[2], distinct[2], clear;
	struct kvm_clear_dirty_log cl = { .slot = BENCH_SLOT };
	uint64_t gfn0 = BENCH_GPA >> PAGE_SHIFT;
	uint32_t map[CHUNK];
	struct kvm_vcpu *vcpu;
	unsigned long *bmap;
	struct kvm_vm *vm;
	uint64_t t0, off;
	int opt, i, k;

	while ((opt = getopt(argc, argv, "p:")) != -1) {
		if (opt == 'p')
			npages = strtoull(optarg, NULL, 0);
	}
	TEST_ASSERT(npages && !(npages % CHUNK), "-p must be a multiple of %d",
		    CHUNK);
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_X86_SPP));
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2));

	ksft_print_header();
	ksft_set_plan(1);

	/* Memslot 0 also holds the guest page tables that map the memslot. */
	vm = __vm_create(VM_SHAPE_DEFAULT, 1, npages);
	vm_enable_cap(vm, KVM_CAP_X86_SPP, 0);
	vm_enable_cap(vm, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
		      KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE);
	vm_userspace_mem_region_add(vm, VM_MEM_SRC_ANONYMOUS, BENCH_GPA,
				    BENCH_SLOT, npages, 0);
	virt_map(vm, BENCH_GPA, BENCH_GPA, npages);
	vcpu = vm_vcpu_add(vm, 0, guest_touch);
	vcpu_args_set(vcpu, 2, BENCH_GPA, npages);

	ksft_print_msg("spp_bench: %s path, memslot of %lu pages (%lu MiB), %d pages per call\n",
		       kvm_check_cap(KVM_CAP_X86_SPP) & KVM_SPP_CAP_HW_ACCELERATED ?
		       "hardware" : "software", npages, npages >> 8, CHUNK);

	untouched[0] = set_all(vm, ~1U, false);
	untouched[1] = set_all(vm, KVM_SUBPAGE_FULL_ACCESS, false);
	touch(vcpu);
	touched[0] = set_all(vm, ~1U, false);
	touched[1] = set_all(vm, KVM_SUBPAGE_FULL_ACCESS, false);
	touch(vcpu);
	distinct[0] = set_all(vm, ~1U, true);
	distinct[1] = set_all(vm, KVM_SUBPAGE_FULL_ACCESS, false);

	/* Fixed cost: protect and unprotect the same pages, FIXED_CALLS times. */
	for (k = 0; k < ARRAY_SIZE(sizes); k++) {
		uint32_t full[CHUNK];

		for (i = 0; i < CHUNK; i++) {
			map[i] = ~1U;
			full[i] = KVM_SUBPAGE_FULL_ACCESS;
		}
		t0 = now_ns();
		for (i = 0; i < FIXED_CALLS; i++) {
			set_range(vm, gfn0 + 4096, sizes[k], map);
			set_range(vm, gfn0 + 4096, sizes[k], full);
		}
		ksft_print_msg("spp_bench: SET call of %3u pages: %8.0f ns per call\n",
			       sizes[k], (double)(now_ns() - t0) / (2 * FIXED_CALLS));
	}

	/* KVM_CLEAR_DIRTY_LOG over the same memory, after the guest dirtied it. */
	vm_mem_region_set_flags(vm, BENCH_SLOT, KVM_MEM_LOG_DIRTY_PAGES);
	touch(vcpu);
	bmap = bitmap_zalloc(npages);
	kvm_vm_get_dirty_log(vm, BENCH_SLOT, bmap);
	for (off = 0; off < npages / 64; off++)
		bmap[off] = ~0UL;
	t0 = now_ns();
	for (off = 0; off < npages; off += CHUNK) {
		cl.first_page = off;
		cl.num_pages = CHUNK;
		cl.dirty_bitmap = bmap + off / 64;
		vm_ioctl(vm, KVM_CLEAR_DIRTY_LOG, &cl);
	}
	clear = (double)(now_ns() - t0) / npages;
	free(bmap);

	ksft_print_msg("spp_bench: SET protect,   untouched: %8.1f ns/page\n", untouched[0]);
	ksft_print_msg("spp_bench: SET unprotect, untouched: %8.1f ns/page\n", untouched[1]);
	ksft_print_msg("spp_bench: SET protect,   touched:   %8.1f ns/page\n", touched[0]);
	ksft_print_msg("spp_bench: SET unprotect, touched:   %8.1f ns/page\n", touched[1]);
	ksft_print_msg("spp_bench: SET protect,   touched, distinct vectors: %8.1f ns/page\n",
		       distinct[0]);
	ksft_print_msg("spp_bench: SET unprotect, touched, after distinct:   %8.1f ns/page\n",
		       distinct[1]);
	ksft_print_msg("spp_bench: CLEAR_DIRTY_LOG, dirty:   %8.1f ns/page\n", clear);
	ksft_print_msg("spp_bench: ratio SET protect touched / CLEAR_DIRTY_LOG: %.2f (goal <= 2)\n",
		       touched[0] / clear);
	ksft_print_msg("spp_bench: ratio, distinct vectors: %.2f\n",
		       distinct[0] / clear);
	ksft_test_result_pass("spp_bench\n");
	kvm_vm_free(vm);
	ksft_finished();
}
