// SPDX-License-Identifier: GPL-2.0-only
/*
 * spp_guard_test: sub-page write protection (KVM_CAP_X86_SPP) against a
 * guest that is not cooperating.
 *
 * spp_test checks the semantics of guest stores one instruction at a time.
 * This test attacks the boundary the way a guest kernel would, on whatever
 * path the host offers (SPP hardware or KVM's software enforcement):
 *
 * - event_frames: exceptions and interrupts are delivered while the stack is
 *   on a page with a protected sub-page.  A frame that lands in writable
 *   sub-pages is delivered (hardware path; the first write to the page is
 *   the frame push, so the SPP table is built by an SPPT miss taken during
 *   event delivery); a frame the CPU cannot push without KVM's help ends in
 *   KVM_EXIT_SPP with KVM_SPP_EXIT_EVENT_DELIVERY, RIP unchanged, the event
 *   still pending and the protected bytes unchanged, and once the VMM lifts
 *   the protection the event is delivered exactly once.  KVM never emulates
 *   the instruction at RIP in place of the event.
 * - page_table_page: the guest's own page-table page has a protected
 *   sub-page, and the guest reads and writes through a PTE whose accessed
 *   and dirty flags it cleared, at the PTE's page offset and at another.
 *   The data must go to (and come from) the data page, the PTE must only
 *   gain its A/D flags, and no exit may happen.
 * - answer_each_write: one store denied on both pages it crosses exits
 *   twice; the two answers (SKIP, ALLOW, mixed) each apply to their part.
 * - toggle_race: four vCPUs write permitted and protected sub-pages of the
 *   same pages while the host toggles the protection of the whole range
 *   (pruning and rebuilding the SPP table on the hardware path).  Every
 *   KVM_EXIT_SPP names a toggled sub-page, no protected byte changes while a
 *   SET that protects it is in force, every permitted write lands, and no
 *   vCPU ever sees KVM_EXIT_INTERNAL_ERROR.
 * - cpl3_writes: guest user mode writes a writable and a protected sub-page
 *   and a supervisor page; the #PF of the latter pushes its frame on RSP0
 *   into a protected sub-page (event delivery from CPL3).
 * - nested_writebacks_vmx/svm: an L1 hypervisor makes KVM write L1 memory
 *   it names (vmcs12 write-back, VMSAVE, the VM-exit MSR-store list, vmcb12
 *   and the host save area while L2 runs): no write reaches a protected
 *   sub-page, instructions are held, and SET cannot protect what KVM is
 *   committed to write while L2 runs (EBUSY).
 *
 * None of the checked writes is preceded by a guest TLB flush on the
 * software path.  Bochs 2.7 (the emulated SPP CPU of the bench) keeps a
 * write that SPP permitted in its TLB for the whole 4 KiB page, which the
 * SDM does not allow; on the hardware path the guest therefore invalidates
 * its TLB entry before writes to a sub-page the host may have protected.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "test_util.h"
#include "kvm_util.h"
#include "processor.h"
#include "apic.h"
#include "svm_util.h"
#include "vmx.h"
#include "ucall_common.h"

#include "spp_labels.h"

#define GUARD_SLOT		10
#define GUARD_GPA		0xc0000000UL	/* identity mapped */
#define GUARD_GFN		(GUARD_GPA >> PAGE_SHIFT)
#define GUARD_NPAGES		16
#define FULL			KVM_SUBPAGE_FULL_ACCESS
#define SUBPAGE			KVM_SUBPAGE_SIZE
#define PROT(n)			((uint32_t)~(1U << (n)))
#define PG(p)			(GUARD_GPA + (uint64_t)(p) * 4096)
#define PAGE_OFF(a)		((uint64_t)(a) & 4095)
#define GUARD_TIMEOUT		300

static uint32_t spp_cap;

/* Whether the VM under test uses SPP hardware; read by the guest too. */
static bool guest_spp_hw;

static void spp_set(struct kvm_vm *vm, uint64_t gfn, uint32_t npages,
		    const uint32_t *vec)
{
	struct kvm_subpage_access sa = {
		.base_gfn = gfn,
		.npages = npages,
		.access_map = (uintptr_t)vec,
	};

	vm_ioctl(vm, KVM_SUBPAGES_SET_ACCESS, &sa);
}

static void spp_set1(struct kvm_vm *vm, uint64_t gfn, uint32_t vec)
{
	spp_set(vm, gfn, 1, &vec);
}

static uint64_t stat_of(int fd, const char *name)
{
	struct kvm_stats_header header;
	struct kvm_stats_desc *descs, *desc;
	uint64_t val = 0;
	bool found = false;
	int i;

	read_stats_header(fd, &header);
	descs = read_stats_descriptors(fd, &header);
	for (i = 0; i < header.num_desc && !found; i++) {
		desc = get_stats_descriptor(descs, i, &header);
		found = !strcmp(desc->name, name);
		if (found)
			read_stat_data(fd, &header, desc, &val, 1);
	}
	free(descs);
	close(fd);
	TEST_ASSERT(found, "stat '%s' not found", name);
	return val;
}

#define vcpu_stat(vcpu, name)	stat_of(vcpu_get_stats_fd(vcpu), name)

static uint8_t pattern(uint64_t off)
{
	return (off * 31 + 7) & 0x7f;
}

static void fill_pattern(struct kvm_vm *vm, int page)
{
	uint8_t *hva = addr_gpa2hva(vm, PG(page));
	int i;

	for (i = 0; i < PAGE_SIZE; i++)
		hva[i] = pattern(page * PAGE_SIZE + i);
}

/*
 * A VM with SPP enabled, @nr_vcpus vCPUs running @guest_code and a memslot
 * of GUARD_NPAGES pages at GUARD_GPA, identity mapped, filled with pattern().
 */
static struct kvm_vm *guard_vm(int nr_vcpus, struct kvm_vcpu **vcpus,
			       void *guest_code)
{
	struct kvm_vm *vm = vm_create(nr_vcpus);
	int i;

	vm_enable_cap(vm, KVM_CAP_X86_SPP, 0);
	guest_spp_hw = spp_cap & KVM_SPP_CAP_HW_ACCELERATED;
	sync_global_to_guest(vm, guest_spp_hw);
	vm_userspace_mem_region_add(vm, VM_MEM_SRC_ANONYMOUS, GUARD_GPA,
				    GUARD_SLOT, GUARD_NPAGES, 0);
	virt_map(vm, GUARD_GPA, GUARD_GPA, GUARD_NPAGES);
	for (i = 0; i < nr_vcpus; i++)
		vcpus[i] = vm_vcpu_add(vm, i, guest_code);
	for (i = 0; i < GUARD_NPAGES; i++)
		fill_pattern(vm, i);
	return vm;
}

static uint32_t spp_flags(uint32_t extra)
{
	return (guest_spp_hw ? 0 : KVM_SPP_EXIT_EMULATED) | extra;
}

static void __noreturn unexpected_exit(struct kvm_vcpu *vcpu, const char *where)
{
	struct kvm_run *run = vcpu->run;
	struct ucall uc;

	if (run->exit_reason == KVM_EXIT_SPP)
		TEST_FAIL("%s: unexpected KVM_EXIT_SPP gpa 0x%llx flags 0x%x",
			  where, run->spp.gpa, run->spp.flags);
	if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR)
		TEST_FAIL("%s: KVM_EXIT_INTERNAL_ERROR suberror %u data[0] 0x%llx",
			  where, run->internal.suberror,
			  run->internal.ndata ? run->internal.data[0] : 0);
	if (get_ucall(vcpu, &uc) == UCALL_ABORT)
		REPORT_GUEST_ASSERT(uc);
	TEST_FAIL("%s: unexpected exit reason %u (%s)", where,
		  run->exit_reason, exit_reason_str(run->exit_reason));
}

/* The guest's last step: run it to GUEST_DONE, then free the VM. */
static void run_to_done(struct kvm_vm *vm, struct kvm_vcpu *vcpu,
			const char *where)
{
	vcpu_run(vcpu);
	if (get_ucall(vcpu, NULL) != UCALL_DONE)
		unexpected_exit(vcpu, where);
	kvm_vm_free(vm);
}

static uint64_t expect_sync(struct kvm_vcpu *vcpu, const char *where)
{
	struct ucall uc;

	if (get_ucall(vcpu, &uc) != UCALL_SYNC)
		unexpected_exit(vcpu, where);
	return uc.args[1];
}

/*
 * event_frames
 *
 * The stack page is page 2 of the memslot.  The guest points RSP at the
 * start of sub-page EV_RSP_SUBPAGE, so the event frame and the handler's
 * stack use the sub-pages just below it.  "Permitted": only a sub-page far
 * above RSP is protected; "denied": the sub-page that receives the frame is.
 */
#define EV_PAGE			2
#define EV_RSP_SUBPAGE		16
#define EV_RSP			(PG(EV_PAGE) + EV_RSP_SUBPAGE * SUBPAGE)
#define EV_FRAME_SUBPAGE	(EV_RSP_SUBPAGE - 1)
#define EV_FAR_SUBPAGE		24
#define EV_VECTOR		0xe3

enum ev_kind { EV_EXCEPTION, EV_INTERRUPT };

static uint64_t ev_handled[2];

static void guest_ud_handler(struct ex_regs *regs)
{
	WRITE_ONCE(ev_handled[EV_EXCEPTION], ev_handled[EV_EXCEPTION] + 1);
	regs->rip += 2;		/* ud2 */
}

static void guest_irq_handler(struct ex_regs *regs)
{
	WRITE_ONCE(ev_handled[EV_INTERRUPT], ev_handled[EV_INTERRUPT] + 1);
	x2apic_write_reg(APIC_EOI, 0);
}


static void guest_event_frames(void)
{
	uint64_t icr = APIC_DEST_SELF | APIC_INT_ASSERT | APIC_DM_FIXED |
		       EV_VECTOR;

	x2apic_enable();
	for (;;) {
		/* An exception raised with RSP on the protected page. */
		asm volatile("mov %%rsp, %%rbx\n\t"
			     "mov %0, %%rsp\n\t"
			     "ev_ud2: ud2\n\t"
			     "mov %%rbx, %%rsp\n\t"
			     : : "r"(EV_RSP) : "rbx", "memory");
		GUEST_SYNC(ev_handled[EV_EXCEPTION]);

		/*
		 * A self-IPI sent with interrupts already enabled (and STI's
		 * shadow over): KVM injects it as soon as the WRMSR to the ICR
		 * completes, i.e. it is delivered with RIP at the CLI.  This
		 * does not depend on how the CPU (or an emulator) implements
		 * the STI shadow.
		 */
		asm volatile("mov %%rsp, %%rbx\n\t"
			     "mov %0, %%rsp\n\t"
			     "sti\n\t"
			     "nop\n\t"
			     "wrmsr\n\t"
			     "ev_irq_rip: cli\n\t"
			     "mov %%rbx, %%rsp\n\t"
			     : : "r"(EV_RSP), "c"(APIC_BASE_MSR + (APIC_ICR >> 4)),
			       "a"((uint32_t)icr), "d"((uint32_t)(icr >> 32))
			     : "rbx", "memory");
		GUEST_SYNC(ev_handled[EV_INTERRUPT]);
	}
}

/* The protected bytes of the stack page still hold the pattern. */
static void check_protected(struct kvm_vm *vm, uint32_t vec, int page)
{
	uint8_t *hva = addr_gpa2hva(vm, PG(page));
	int sp, i;

	for (sp = 0; sp < PAGE_SIZE / SUBPAGE; sp++) {
		if (vec & (1U << sp))
			continue;
		for (i = sp * SUBPAGE; i < (sp + 1) * SUBPAGE; i++)
			TEST_ASSERT(hva[i] == pattern(page * PAGE_SIZE + i),
				    "protected byte 0x%x of page %d changed: 0x%x",
				    i, page, hva[i]);
	}
}

/*
 * Run until the event of @kind has been handled once more.  An exit for it
 * must be an event-delivery KVM_EXIT_SPP with the event still pending and
 * RIP unchanged; the host then lifts the protection.  Return the number of
 * such exits.
 */
static int run_event(struct kvm_vm *vm, struct kvm_vcpu *vcpu,
		     enum ev_kind kind, uint32_t vec, uint64_t handled)
{
	uint64_t want_rip = kind == EV_EXCEPTION ? (uint64_t)ev_ud2 :
			    (uint64_t)ev_irq_rip;
	struct kvm_vcpu_events ev;
	struct kvm_regs regs;
	int exits = 0;

	for (;;) {
		vcpu_run(vcpu);
		if (vcpu->run->exit_reason != KVM_EXIT_SPP)
			break;
		exits++;
		TEST_ASSERT(exits == 1, "KVM_EXIT_SPP again after unprotecting");
		TEST_ASSERT(vcpu->run->spp.flags ==
			    spp_flags(KVM_SPP_EXIT_EVENT_DELIVERY),
			    "spp.flags 0x%x, expected 0x%x", vcpu->run->spp.flags,
			    spp_flags(KVM_SPP_EXIT_EVENT_DELIVERY));
		TEST_ASSERT(vcpu->run->spp.gpa >> PAGE_SHIFT ==
			    PG(EV_PAGE) >> PAGE_SHIFT,
			    "spp.gpa 0x%llx not on the stack page",
			    vcpu->run->spp.gpa);
		TEST_ASSERT_EQ(vcpu->run->spp.insn_len, 0);
		vcpu_regs_get(vcpu, &regs);
		TEST_ASSERT(regs.rip == want_rip, "rip 0x%llx, expected 0x%lx",
			    regs.rip, want_rip);
		vcpu_events_get(vcpu, &ev);
		if (kind == EV_EXCEPTION)
			TEST_ASSERT(ev.exception.injected && ev.exception.nr == UD_VECTOR,
				    "#UD not pending (injected %u nr %u)",
				    ev.exception.injected, ev.exception.nr);
		else
			TEST_ASSERT(ev.interrupt.injected && ev.interrupt.nr == EV_VECTOR,
				    "IRQ not pending (injected %u nr %u)",
				    ev.interrupt.injected, ev.interrupt.nr);
		check_protected(vm, vec, EV_PAGE);
		/* The handler has not run. */
		TEST_ASSERT_EQ(*(uint64_t *)addr_gva2hva(vm, (uint64_t)&ev_handled[kind]),
			       handled);
		spp_set1(vm, GUARD_GFN + EV_PAGE, FULL);
	}
	TEST_ASSERT_EQ(expect_sync(vcpu, "event delivery"), handled + 1);
	return exits;
}

static void event_case(enum ev_kind kind, bool denied)
{
	uint32_t vec = denied ? PROT(EV_FRAME_SUBPAGE) : PROT(EV_FAR_SUBPAGE);
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	int exits;

	vm = guard_vm(1, &vcpu, guest_event_frames);
	vm_install_exception_handler(vm, UD_VECTOR, guest_ud_handler);
	vm_install_exception_handler(vm, EV_VECTOR, guest_irq_handler);
	spp_set1(vm, GUARD_GFN + EV_PAGE, vec);

	if (kind == EV_INTERRUPT) {
		/* The exception round, on an unprotected stack. */
		spp_set1(vm, GUARD_GFN + EV_PAGE, FULL);
		TEST_ASSERT_EQ(run_event(vm, vcpu, EV_EXCEPTION, FULL, 0), 0);
		fill_pattern(vm, EV_PAGE);
		spp_set1(vm, GUARD_GFN + EV_PAGE, vec);
	}

	exits = run_event(vm, vcpu, kind, vec, 0);
	if (!exits)
		check_protected(vm, vec, EV_PAGE);
	ksft_print_msg("%s path, %s, frame %s: %d event-delivery exits, %lu SPPT misses\n",
		       guest_spp_hw ? "hardware" : "software",
		       kind == EV_EXCEPTION ? "#UD" : "self-IPI",
		       denied ? "in a protected sub-page" : "in writable sub-pages",
		       exits, vcpu_stat(vcpu, "spp_sppt_misses"));
	TEST_ASSERT_EQ(vcpu_stat(vcpu, "spp_exits"), exits);
	/*
	 * SPP hardware pushes a frame into writable sub-pages itself; the
	 * software path cannot let the CPU write a protected page selectively,
	 * and a denied frame always exits.
	 */
	TEST_ASSERT_EQ(exits, denied || !guest_spp_hw ? 1 : 0);
	/*
	 * The frame push is the first access to the page: on the hardware
	 * path a permitted one builds the SPP table in an SPPT miss taken
	 * during event delivery (a denied one never gets to walk it).
	 */
	if (guest_spp_hw && kind == EV_EXCEPTION && !denied)
		TEST_ASSERT(vcpu_stat(vcpu, "spp_sppt_misses") >= 1,
			    "no SPPT miss on the hardware path");
	kvm_vm_free(vm);
}

TEST(event_frames)
{
	event_case(EV_EXCEPTION, false);
	event_case(EV_EXCEPTION, true);
	event_case(EV_INTERRUPT, false);
	event_case(EV_INTERRUPT, true);
}

/*
 * page_table_page
 *
 * The data page is page PT_DATA_PAGE of the memslot; the host finds its PTE
 * in the guest's page tables and maps the page-table page into the guest at
 * PT_MAP_GVA.  Each round, the guest ages the PTE as a kernel's page reclaim
 * does (clears its accessed and dirty flags, through that mapping, while
 * the page-table page is unprotected), the host protects one sub-page of
 * the page-table page, and the guest invalidates the TLB entry and reads or
 * writes the data page at the PTE's own page offset or at another one.
 *
 * The guest changes its PTE itself: with shadow paging, KVM keeps its shadow
 * of a guest page table in sync by trapping the guest's writes to it, and
 * does not see the host's (INVLPG does not resynchronise a page KVM
 * write-protects), so a PTE the host edited would not be walked again.
 */
#define PT_DATA_PAGE		3
#define PT_OTHER_SUBPAGE	20
#define PT_VALUE		0x5a5a00c0ffee0000ULL
#define PTE_A			((uint64_t)1 << 5)
#define PTE_D			((uint64_t)1 << 6)
#define PT_MAP_GVA		0xd0000000UL

struct pt_cmd {
	uint64_t gva;
	uint64_t write;
	uint64_t val;
	uint64_t pte_gva;
};

static struct pt_cmd pt_cmd;

static void guest_page_table(void)
{
	uint64_t *pte, v;

	for (;;) {
		pte = (uint64_t *)pt_cmd.pte_gva;
		WRITE_ONCE(*pte, READ_ONCE(*pte) & ~(PTE_A | PTE_D));
		GUEST_SYNC(0);
		asm volatile("invlpg (%0)" : : "r"(pt_cmd.gva) : "memory");
		if (pt_cmd.write) {
			WRITE_ONCE(*(uint64_t *)pt_cmd.gva, pt_cmd.val);
			v = pt_cmd.val;
		} else {
			v = READ_ONCE(*(uint64_t *)pt_cmd.gva);
		}
		GUEST_SYNC(v);
	}
}

TEST(page_table_page)
{
	uint64_t *pte, pte_val, pte_gpa, data_off, got, want;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	uint8_t *data;
	int own, write, same, n = 0;
	uint32_t vec;

	vm = guard_vm(1, &vcpu, guest_page_table);
	pte = vm_get_page_table_entry(vm, PG(PT_DATA_PAGE));
	pte_gpa = addr_hva2gpa(vm, pte);
	pte_val = *pte | PTE_A | PTE_D;
	data = addr_gpa2hva(vm, PG(PT_DATA_PAGE));
	ksft_print_msg("PTE of gva 0x%lx at gpa 0x%lx (sub-page %lu)\n",
		       PG(PT_DATA_PAGE), pte_gpa,
		       PAGE_OFF(pte_gpa) / SUBPAGE);
	TEST_ASSERT(PAGE_OFF(pte_gpa) / SUBPAGE != PT_OTHER_SUBPAGE,
		    "the PTE is in the sub-page meant to be the other one");
	virt_pg_map(vm, PT_MAP_GVA, pte_gpa & ~4095UL);
	pt_cmd.pte_gva = PT_MAP_GVA + PAGE_OFF(pte_gpa);

	for (own = 1; own >= 0; own--) {
		vec = own ? PROT(PAGE_OFF(pte_gpa) / SUBPAGE) :
			    PROT(PT_OTHER_SUBPAGE);
		for (same = 1; same >= 0; same--) {
			for (write = 0; write <= 1; write++) {
				data_off = PAGE_OFF(pte_gpa) +
					   (same ? 0 : 8 * SUBPAGE);
				pt_cmd.gva = PG(PT_DATA_PAGE) + data_off;
				pt_cmd.write = write;
				pt_cmd.val = PT_VALUE + n;
				sync_global_to_guest(vm, pt_cmd);
				want = write ? pt_cmd.val :
				       *(uint64_t *)(data + data_off);

				/* The guest ages the PTE, unprotected. */
				spp_set1(vm, pte_gpa >> PAGE_SHIFT, FULL);
				vcpu_run(vcpu);
				expect_sync(vcpu, "aging the PTE");
				TEST_ASSERT(*pte == (pte_val & ~(PTE_A | PTE_D)),
					    "PTE 0x%lx after the guest cleared A/D",
					    *pte);
				spp_set1(vm, pte_gpa >> PAGE_SHIFT, vec);

				vcpu_run(vcpu);
				got = expect_sync(vcpu, "page-table page");
				TEST_ASSERT(got == want &&
					    *(uint64_t *)(data + data_off) == want,
					    "%s PTE sub-page protected, %s offset, %s: guest got 0x%lx, data page holds 0x%lx, expected 0x%lx (PTE 0x%lx)",
					    own ? "the" : "another",
					    same ? "the PTE's" : "another",
					    write ? "write" : "read", got,
					    *(uint64_t *)(data + data_off), want,
					    *pte);
				/* The PTE only gained its A (and D) flag. */
				TEST_ASSERT(*pte == (write ? pte_val :
						     pte_val & ~PTE_D),
					    "PTE 0x%lx after %s, expected 0x%lx",
					    *pte, write ? "write" : "read",
					    write ? pte_val : pte_val & ~PTE_D);
				n++;
			}
		}
	}
	TEST_ASSERT_EQ(vcpu_stat(vcpu, "spp_exits"), 0);
	ksft_print_msg("%d accesses via A/D-clear PTEs on a protected PT page, %lu emulated\n",
		       n, vcpu_stat(vcpu, "insn_emulation"));
	kvm_vm_free(vm);
}

/*
 * wide_writes
 *
 * Instructions a guest kernel or libc issues on every context switch or
 * lock, which KVM's emulator had no use for before SPP: FXSAVE (with and
 * without REX.W), XSAVE, XSAVEOPT, XSAVEC, XSAVES (x87 and SSE state) and
 * CMPXCHG16B, into a page whose last sub-page is protected.  They must work
 * on both paths, with no exit: on the software path KVM emulates them.
 * Each runs twice, into the protected page and into an unprotected one
 * (the CPU's own result): the bytes must be the same.  An XSAVE whose
 * header lands in a protected sub-page exits with KVM_EXIT_SPP at the
 * header, nothing of it written (software path), and completes once the
 * VMM lifts the protection.  An SSE4.1 store (PEXTRQ) is what KVM still
 * cannot emulate: KVM_SPP_EXIT_NOT_EMULATED on the software path.
 */
#define WW_PAGE			5
#define WW_REF_PAGE		6
#define WW_FX64_OFF		0
#define WW_FX_OFF		512
#define WW_XS_OFF		1024
#define WW_XS_LEN		640	/* legacy area, header, 64 more */
#define WW_XS_HDR_SUBPAGE	((WW_XS_OFF + 512) / SUBPAGE)
#define WW_CX16_OFF		3072
#define WW_SSE41_OFF		3328
#define WW_CX16_NEW		0x1122334455667788ULL
#define X86_FEATURE_CX16_	KVM_X86_CPU_FEATURE(0x1, 0, ECX, 13)
#define X86_FEATURE_XSAVEOPT_	KVM_X86_CPU_FEATURE(0xD, 1, EAX, 0)
#define X86_FEATURE_XSAVEC_	KVM_X86_CPU_FEATURE(0xD, 1, EAX, 1)
#define X86_FEATURE_SSE4_1_	KVM_X86_CPU_FEATURE(0x1, 0, ECX, 19)

enum {
	WW_FXSAVE64 = 1, WW_FXSAVE, WW_XSAVE, WW_XSAVE_DENIED, WW_XSAVEOPT,
	WW_XSAVEC, WW_XSAVES, WW_CX16, WW_SSE41, WW_NR
};

static const struct {
	const char *name;
	int off, len;
} ww[WW_NR] = {
	[WW_FXSAVE64]	  = { "fxsave64", WW_FX64_OFF, 416 },
	[WW_FXSAVE]	  = { "fxsave", WW_FX_OFF, 416 },
	[WW_XSAVE]	  = { "xsave64", WW_XS_OFF, WW_XS_LEN },
	[WW_XSAVE_DENIED] = { "xsave64 (header denied)", WW_XS_OFF, WW_XS_LEN },
	[WW_XSAVEOPT]	  = { "xsaveopt64", WW_XS_OFF, WW_XS_LEN },
	[WW_XSAVEC]	  = { "xsavec64", WW_XS_OFF, WW_XS_LEN },
	[WW_XSAVES]	  = { "xsaves64", WW_XS_OFF, WW_XS_LEN },
	[WW_CX16]	  = { "cmpxchg16b", WW_CX16_OFF, 16 },
	[WW_SSE41]	  = { "pextrq", WW_SSE41_OFF, 8 },
};

/* On the hardware path, forget a write permission Bochs cached (see top). */
static void ww_flush(void)
{
	if (guest_spp_hw)
		asm volatile("invlpg (%0)" : : "r"(PG(WW_PAGE)) : "memory");
}

#define WW_TWICE(id, insn, off, ...)					\
do {									\
	GUEST_SYNC(id);							\
	ww_flush();							\
	asm volatile(insn : : "r"(PG(WW_PAGE) + (off)), ##__VA_ARGS__	\
		     : "memory");					\
	asm volatile(insn : : "r"(PG(WW_REF_PAGE) + (off)), ##__VA_ARGS__ \
		     : "memory");					\
} while (0)

static void ww_cx16(uint64_t base)
{
	uint64_t lo = READ_ONCE(*(uint64_t *)(base + WW_CX16_OFF));
	uint64_t hi = READ_ONCE(*(uint64_t *)(base + WW_CX16_OFF + 8));

	asm volatile("lock cmpxchg16b (%2)"
		     : "+a"(lo), "+d"(hi)
		     : "r"(base + WW_CX16_OFF), "b"(WW_CX16_NEW),
		       "c"(~WW_CX16_NEW)
		     : "memory");
}

static void guest_wide(void)
{
	bool xsave = this_cpu_has(X86_FEATURE_XSAVE);

	WW_TWICE(WW_FXSAVE64, "fxsave64 (%0)", WW_FX64_OFF);
	WW_TWICE(WW_FXSAVE, "fxsave (%0)", WW_FX_OFF);
	if (xsave) {
		set_cr4(get_cr4() | X86_CR4_OSXSAVE);
		WW_TWICE(WW_XSAVE, "xsave64 (%0)", WW_XS_OFF, "a"(3), "d"(0));
		WW_TWICE(WW_XSAVE_DENIED, "xsave64 (%0)", WW_XS_OFF, "a"(3),
			 "d"(0));
	}
	if (xsave && this_cpu_has(X86_FEATURE_XSAVEOPT_))
		WW_TWICE(WW_XSAVEOPT, "xsaveopt64 (%0)", WW_XS_OFF, "a"(3),
			 "d"(0));
	if (xsave && this_cpu_has(X86_FEATURE_XSAVEC_))
		WW_TWICE(WW_XSAVEC, "xsavec64 (%0)", WW_XS_OFF, "a"(3), "d"(0));
	if (xsave && this_cpu_has(X86_FEATURE_XSAVES))
		WW_TWICE(WW_XSAVES, "xsaves64 (%0)", WW_XS_OFF, "a"(3), "d"(0));
	if (this_cpu_has(X86_FEATURE_CX16_)) {
		GUEST_SYNC(WW_CX16);
		ww_flush();
		ww_cx16(PG(WW_PAGE));
		ww_cx16(PG(WW_REF_PAGE));
	}
	if (this_cpu_has(X86_FEATURE_SSE4_1_))
		WW_TWICE(WW_SSE41, "pextrq $0, %%xmm0, (%0)", WW_SSE41_OFF);
	GUEST_SYNC(WW_NR);
	GUEST_DONE();
}

/* Both pages start with the same bytes. */
static void ww_fill(struct kvm_vm *vm)
{
	uint8_t *p = addr_gpa2hva(vm, PG(WW_PAGE));
	uint8_t *r = addr_gpa2hva(vm, PG(WW_REF_PAGE));
	int i;

	for (i = 0; i < PAGE_SIZE; i++) {
		p[i] = pattern(WW_PAGE * PAGE_SIZE + i);
		r[i] = p[i];
	}
}

/* @id has completed: the protected page holds what the CPU wrote. */
static void ww_check(struct kvm_vm *vm, int id)
{
	uint8_t *p = addr_gpa2hva(vm, PG(WW_PAGE) + ww[id].off);
	uint8_t *r = addr_gpa2hva(vm, PG(WW_REF_PAGE) + ww[id].off);
	int i;

	for (i = 0; i < ww[id].len; i++)
		/*
		 * Skip the x87 last-instruction opcode and pointers (FOP, FIP,
		 * FDP): what a CPU stores there depends on its x87 history
		 * (the host's included: AMD's FXSAVE leak workaround runs x87
		 * code), not on the instruction.
		 */
		TEST_ASSERT(p[i] == r[i] || (id < WW_CX16 && i >= 6 && i < 24),
			    "%s: byte 0x%x is 0x%x, the CPU wrote 0x%x",
			    ww[id].name, ww[id].off + i, p[i], r[i]);
	if (id == WW_CX16)
		TEST_ASSERT_EQ(*(uint64_t *)p, WW_CX16_NEW);
	check_protected(vm, id == WW_XSAVE_DENIED ?
			PROT(WW_XS_HDR_SUBPAGE) : PROT(31), WW_PAGE);
}

TEST(wide_writes)
{
	int id = 0, next, exits = 0, id_exits = 0, done = 0, i;
	struct kvm_vcpu *vcpu;
	struct kvm_regs regs;
	struct kvm_vm *vm;
	uint8_t *page;

	vm = guard_vm(1, &vcpu, guest_wide);
	page = addr_gpa2hva(vm, PG(WW_PAGE));
	for (;;) {
		vcpu_run(vcpu);
		if (vcpu->run->exit_reason == KVM_EXIT_SPP) {
			exits++;
			TEST_ASSERT(!id_exits++, "%s: KVM_EXIT_SPP again",
				    ww[id].name);
			vcpu_regs_get(vcpu, &regs);
			if (id == WW_XSAVE_DENIED) {
				TEST_ASSERT_EQ(vcpu->run->spp.flags, spp_flags(0));
				TEST_ASSERT_EQ(vcpu->run->spp.gpa,
					       PG(WW_PAGE) + WW_XS_OFF + 512);
				TEST_ASSERT(vcpu->run->spp.insn_len,
					    "insn_len 0");
				check_protected(vm, PROT(WW_XS_HDR_SUBPAGE),
						WW_PAGE);
				/* The CPU may have stored part of it. */
				for (i = 0; !guest_spp_hw && i < WW_XS_LEN; i++)
					TEST_ASSERT(page[WW_XS_OFF + i] ==
						    pattern(WW_PAGE * PAGE_SIZE +
							    WW_XS_OFF + i),
						    "denied xsave wrote byte 0x%x",
						    WW_XS_OFF + i);
			} else {
				TEST_ASSERT(id == WW_SSE41 && !guest_spp_hw,
					    "%s: KVM_EXIT_SPP flags 0x%x gpa 0x%llx",
					    ww[id].name, vcpu->run->spp.flags,
					    vcpu->run->spp.gpa);
				TEST_ASSERT_EQ(vcpu->run->spp.flags,
					       spp_flags(KVM_SPP_EXIT_NOT_EMULATED));
				check_protected(vm, PROT(31), WW_PAGE);
			}
			spp_set1(vm, GUARD_GFN + WW_PAGE, FULL);
			continue;
		}
		next = expect_sync(vcpu, "wide_writes");
		if (id) {
			ww_check(vm, id);
			TEST_ASSERT(id_exits == (id == WW_XSAVE_DENIED ||
						 (id == WW_SSE41 && !guest_spp_hw)),
				    "%s: %d exits", ww[id].name, id_exits);
			done++;
		}
		id_exits = 0;
		if (next == WW_NR)
			break;
		id = next;
		ww_fill(vm);
		spp_set1(vm, GUARD_GFN + WW_PAGE, id == WW_XSAVE_DENIED ?
			 PROT(WW_XS_HDR_SUBPAGE) : PROT(31));
	}
	vcpu_run(vcpu);
	TEST_ASSERT(get_ucall(vcpu, NULL) == UCALL_DONE, "no GUEST_DONE");
	ksft_print_msg("%s path: %d instructions checked, %d exits\n",
		       guest_spp_hw ? "hardware" : "software", done, exits);
	TEST_ASSERT(done >= 2, "nothing ran");
	TEST_ASSERT_EQ(vcpu_stat(vcpu, "spp_exits"), exits);
	kvm_vm_free(vm);
}

/*
 * vmx_instruction_writes
 *
 * VMPTRST stores to guest memory without KVM's emulator: KVM writes on
 * behalf of the intercepted instruction.  Into a protected sub-page it must
 * end in KVM_EXIT_SPP (insn_len 0: no decoded instruction), nothing
 * written, and succeed once the VMM lifts the protection.
 */
#define VX_PAGE			6
#define VX_OFF			(3 * SUBPAGE + 16)


static void guest_vmx_writes(struct vmx_pages *vmx_pages)
{
	GUEST_ASSERT(prepare_for_vmx_operation(vmx_pages));
	GUEST_ASSERT(load_vmcs(vmx_pages));
	asm volatile("vx_vmptrst: vmptrst (%0)" : : "r"(PG(VX_PAGE) + VX_OFF)
		     : "memory", "cc");
	GUEST_SYNC(vmx_pages->vmcs_gpa);
	GUEST_DONE();
}

TEST(vmx_instruction_writes)
{
	vm_vaddr_t vmx_pages_gva;
	struct kvm_vcpu *vcpu;
	struct kvm_regs regs;
	struct kvm_vm *vm;
	uint64_t vmcs_gpa;
	int exits = 0;

	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));

	vm = guard_vm(1, &vcpu, guest_vmx_writes);
	vcpu_alloc_vmx(vm, &vmx_pages_gva);
	vcpu_args_set(vcpu, 1, vmx_pages_gva);
	spp_set1(vm, GUARD_GFN + VX_PAGE, PROT(VX_OFF / SUBPAGE));
	for (;;) {
		vcpu_run(vcpu);
		if (vcpu->run->exit_reason != KVM_EXIT_SPP)
			break;
		exits++;
		TEST_ASSERT(exits == 1, "KVM_EXIT_SPP again");
		TEST_ASSERT_EQ(vcpu->run->spp.gpa, PG(VX_PAGE) + VX_OFF);
		TEST_ASSERT_EQ(vcpu->run->spp.flags, spp_flags(0));
		TEST_ASSERT_EQ(vcpu->run->spp.insn_len, 0);
		vcpu_regs_get(vcpu, &regs);
		TEST_ASSERT(regs.rip == (uint64_t)vx_vmptrst,
			    "rip 0x%llx, expected 0x%lx", regs.rip,
			    (uint64_t)vx_vmptrst);
		check_protected(vm, PROT(VX_OFF / SUBPAGE), VX_PAGE);
		spp_set1(vm, GUARD_GFN + VX_PAGE, FULL);
	}
	vmcs_gpa = expect_sync(vcpu, "vmptrst");
	TEST_ASSERT_EQ(exits, 1);
	TEST_ASSERT_EQ(*(uint64_t *)addr_gpa2hva(vm, PG(VX_PAGE) + VX_OFF),
		       vmcs_gpa);
	kvm_vm_free(vm);
}

/*
 * nested_ept_tables
 *
 * L1's EPT tables for L2 (EPT12) live in L1 memory, and KVM shadows them:
 * it relies on seeing every write L1 makes to them.  An introspection agent
 * protects one sub-page of the EPT12 leaf table; L1 then changes an entry
 * in a writable sub-page of it, after the host's SET made KVM map the table
 * back in (a zap, then L1's read fault).  The leaf must not be armed with
 * the SPP bit (the CPU would let the write through without KVM seeing it),
 * so after INVEPT L2 sees the new translation, not the one L1 replaced.
 */
#define NT_L2_PAGE		12	/* L2 GPA, mapped by EPT12 to ... */
#define NT_A_PAGE		8	/* ... this L1 page first, then to */
#define NT_B_PAGE		9	/* this one */
#define NT_A_VAL		0xaaaa5555aaaa5555ULL
#define NT_B_VAL		0xbbbb6666bbbb6666ULL
#define NT_TABLE_GVA		0xe0000000UL
#define NT_PROT_SUBPAGE		31
#define EPT_ADDR_MASK		0x000ffffffffff000ULL

static uint64_t *nt_entry;
static uint64_t nt_b_gpa;

static void nt_l2(void)
{
	GUEST_SYNC(READ_ONCE(*(uint64_t *)PG(NT_L2_PAGE)));
	vmcall();
	GUEST_SYNC(READ_ONCE(*(uint64_t *)PG(NT_L2_PAGE)));
	vmcall();
}

static void nt_l1(struct vmx_pages *vmx_pages)
{
	struct { uint64_t eptp, gpa; } desc = { 0, 0 };
	unsigned long l2_stack[64];
	uint64_t e;

	GUEST_ASSERT(prepare_for_vmx_operation(vmx_pages));
	GUEST_ASSERT(load_vmcs(vmx_pages));
	prepare_vmcs(vmx_pages, nt_l2, &l2_stack[64]);
	GUEST_ASSERT(!vmlaunch());
	GUEST_ASSERT_EQ(vmreadz(VM_EXIT_REASON), EXIT_REASON_VMCALL);

	GUEST_SYNC(0);		/* the host sets the table's vector again */
	e = READ_ONCE(*nt_entry);
	WRITE_ONCE(*nt_entry, (e & ~EPT_ADDR_MASK) | nt_b_gpa);
	desc.eptp = vmreadz(EPT_POINTER);
	asm volatile("invept %0, %1" : : "m"(desc), "r"(2UL) : "cc", "memory");

	vmwrite(GUEST_RIP, vmreadz(GUEST_RIP) + vmreadz(VM_EXIT_INSTRUCTION_LEN));
	GUEST_ASSERT(!vmresume());
	GUEST_ASSERT_EQ(vmreadz(VM_EXIT_REASON), EXIT_REASON_VMCALL);
	GUEST_DONE();
}

/* The L1 gpa of the EPT12 leaf table that maps @l2_gpa. */
static uint64_t ept12_leaf_table(struct kvm_vm *vm, struct vmx_pages *vmx,
				 uint64_t l2_gpa)
{
	uint64_t *table = vmx->eptp_hva, gpa = vmx->eptp_gpa, e;
	int level;

	for (level = 4; level > 1; level--) {
		e = table[(l2_gpa >> (12 + 9 * (level - 1))) & 511];
		TEST_ASSERT(e & 7, "EPT12 level %d entry not present", level);
		gpa = e & EPT_ADDR_MASK;
		table = addr_gpa2hva(vm, gpa);
	}
	return gpa;
}

TEST(nested_ept_tables)
{
	uint64_t table_gpa, index, val, emul;
	vm_vaddr_t vmx_pages_gva;
	struct vmx_pages *vmx;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct ucall uc;

	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));
	TEST_REQUIRE(kvm_cpu_has_ept());

	vm = guard_vm(1, &vcpu, nt_l1);
	vmx = vcpu_alloc_vmx(vm, &vmx_pages_gva);
	vcpu_args_set(vcpu, 1, vmx_pages_gva);
	prepare_eptp(vmx, vm, 0);
	nested_map_memslot(vmx, vm, 0);
	nested_map(vmx, vm, PG(NT_L2_PAGE), PG(NT_A_PAGE), PAGE_SIZE);

	table_gpa = ept12_leaf_table(vm, vmx, PG(NT_L2_PAGE));
	index = (PG(NT_L2_PAGE) >> 12) & 511;
	TEST_ASSERT(index * 8 / SUBPAGE != NT_PROT_SUBPAGE,
		    "the entry must be in a writable sub-page");
	virt_map(vm, NT_TABLE_GVA, table_gpa, 1);
	nt_entry = (uint64_t *)(NT_TABLE_GVA + index * 8);
	nt_b_gpa = PG(NT_B_PAGE);
	sync_global_to_guest(vm, nt_entry);
	sync_global_to_guest(vm, nt_b_gpa);
	*(uint64_t *)addr_gpa2hva(vm, PG(NT_A_PAGE)) = NT_A_VAL;
	*(uint64_t *)addr_gpa2hva(vm, PG(NT_B_PAGE)) = NT_B_VAL;

	spp_set1(vm, table_gpa >> PAGE_SHIFT, PROT(NT_PROT_SUBPAGE));
	vcpu_run(vcpu);
	val = expect_sync(vcpu, "L2's first read");
	TEST_ASSERT(val == NT_A_VAL, "L2 read 0x%lx, expected 0x%llx", val,
		    NT_A_VAL);

	vcpu_run(vcpu);
	expect_sync(vcpu, "L1 after the first VMCALL");
	/* Same vector: on the hardware path, the table is zapped and refaults. */
	spp_set1(vm, table_gpa >> PAGE_SHIFT, PROT(NT_PROT_SUBPAGE));
	emul = vcpu_stat(vcpu, "spp_emulated_writes");

	vcpu_run(vcpu);
	val = expect_sync(vcpu, "L2's second read");
	emul = vcpu_stat(vcpu, "spp_emulated_writes") - emul;
	ksft_print_msg("L1's write to its EPT12 table: %lu emulated (%s path); L2 read 0x%lx\n",
		       emul, guest_spp_hw ? "hardware" : "software", val);
	TEST_ASSERT(val == NT_B_VAL,
		    "L2 read 0x%lx: KVM missed L1's EPT12 write (expected 0x%llx)",
		    val, NT_B_VAL);
	TEST_ASSERT_EQ(emul, 1);

	vcpu_run(vcpu);
	if (get_ucall(vcpu, &uc) != UCALL_DONE)
		unexpected_exit(vcpu, "L1's end");
	kvm_vm_free(vm);
}

/*
 * nested_event_frames
 *
 * L2 runs on nested EPT, so KVM shadows L1's EPT tables for it, the fault
 * path KVM also takes with shadow paging.  L2's INT3 pushes its frame into
 * a protected sub-page: KVM must not emulate the instruction at RIP in
 * place of the event, the exit is event delivery (in guest mode), nothing
 * is written, and once the VMM lifts the protection the #BP is delivered
 * exactly once.
 */
#define NE_PAGE			13
#define NE_RSP_SUBPAGE		16
#define NE_RSP			(PG(NE_PAGE) + NE_RSP_SUBPAGE * SUBPAGE)

static int ne_bp;

static void ne_bp_handler(struct ex_regs *regs)
{
	ne_bp++;
}

static void ne_l2(void)
{
	asm volatile("mov %%rsp, %%rbx\n\t"
		     "mov %0, %%rsp\n\t"
		     "ne_int3: int3\n\t"
		     "mov %%rbx, %%rsp"
		     : : "r"(NE_RSP) : "rbx", "memory");
	vmcall();
}

static void ne_l1(struct vmx_pages *vmx_pages)
{
	unsigned long l2_stack[64];

	GUEST_ASSERT(prepare_for_vmx_operation(vmx_pages));
	GUEST_ASSERT(load_vmcs(vmx_pages));
	prepare_vmcs(vmx_pages, ne_l2, &l2_stack[64]);
	GUEST_ASSERT(!vmlaunch());
	GUEST_ASSERT_EQ(vmreadz(VM_EXIT_REASON), EXIT_REASON_VMCALL);
	GUEST_SYNC(READ_ONCE(ne_bp));
	GUEST_DONE();
}

TEST(nested_event_frames)
{
	vm_vaddr_t vmx_pages_gva;
	struct vmx_pages *vmx;
	struct kvm_vcpu *vcpu;
	struct kvm_regs regs;
	struct kvm_vm *vm;
	int i;

	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));
	TEST_REQUIRE(kvm_cpu_has_ept());

	vm = guard_vm(1, &vcpu, ne_l1);
	vm_install_exception_handler(vm, BP_VECTOR, ne_bp_handler);
	vmx = vcpu_alloc_vmx(vm, &vmx_pages_gva);
	vcpu_args_set(vcpu, 1, vmx_pages_gva);
	prepare_eptp(vmx, vm, 0);
	nested_map_memslot(vmx, vm, 0);
	nested_map(vmx, vm, PG(0), PG(0), GUARD_NPAGES * PAGE_SIZE);

	spp_set1(vm, GUARD_GFN + NE_PAGE, PROT(NE_RSP_SUBPAGE - 1));
	for (i = 0; i < 2; i++) {
		vcpu_run(vcpu);
		if (vcpu->run->exit_reason != KVM_EXIT_SPP)
			unexpected_exit(vcpu, "L2's #BP frame");
		TEST_ASSERT_EQ(vcpu->run->spp.flags,
			       spp_flags(KVM_SPP_EXIT_EVENT_DELIVERY));
		TEST_ASSERT(vcpu->run->spp.gpa >= NE_RSP - SUBPAGE &&
			    vcpu->run->spp.gpa < NE_RSP,
			    "spp.gpa 0x%llx", vcpu->run->spp.gpa);
		TEST_ASSERT(vcpu->run->flags & KVM_RUN_X86_GUEST_MODE,
			    "not in L2");
		vcpu_regs_get(vcpu, &regs);
		TEST_ASSERT_EQ(regs.rip, (uint64_t)ne_int3);
		check_protected(vm, PROT(NE_RSP_SUBPAGE - 1), NE_PAGE);
	}
	spp_set1(vm, GUARD_GFN + NE_PAGE, FULL);
	vcpu_run(vcpu);
	TEST_ASSERT_EQ(expect_sync(vcpu, "L1 after L2's #BP"), 1);
	TEST_ASSERT_EQ(vcpu_stat(vcpu, "spp_exits"), 2);
	run_to_done(vm, vcpu, "L1's end");
}

/*
 * resume_actions
 *
 * What the VMM answers a KVM_EXIT_SPP with, in run->spp.action: SKIP
 * completes the instruction with the write dropped (a PUSH still moves RSP),
 * ALLOW lets this one write through and keeps the protection, RETRY (the
 * default) runs the instruction again, and anything else fails KVM_RUN with
 * EINVAL and changes nothing.
 */
#define RA_PAGE			7
#define RA_PROT_SUBPAGE		5
#define RA_ADDR			(PG(RA_PAGE) + RA_PROT_SUBPAGE * SUBPAGE + 8)
#define RA_RSP			(PG(RA_PAGE) + (RA_PROT_SUBPAGE + 1) * SUBPAGE)
#define RA_V(n)			(0x1111111111111111ULL * (n))

static void guest_resume(void)
{
	uint64_t rsp;

	WRITE_ONCE(*(uint64_t *)RA_ADDR, RA_V(1));	/* skipped */
	GUEST_SYNC(1);
	WRITE_ONCE(*(uint64_t *)RA_ADDR, RA_V(2));	/* allowed */
	GUEST_SYNC(2);
	WRITE_ONCE(*(uint64_t *)RA_ADDR, RA_V(3));	/* EINVAL, then retried */
	GUEST_SYNC(3);
	asm volatile("mov %%rsp, %%rbx\n\t"
		     "mov %1, %%rsp\n\t"
		     "push %2\n\t"			/* skipped */
		     "mov %%rsp, %0\n\t"
		     "mov %%rbx, %%rsp\n\t"
		     : "=r"(rsp) : "r"(RA_RSP), "r"(RA_V(4)) : "rbx", "memory");
	GUEST_SYNC(rsp);
	GUEST_DONE();
}

/* Run until KVM_EXIT_SPP for the write at @gpa; return its RIP. */
static uint64_t expect_spp(struct kvm_vcpu *vcpu, uint64_t gpa)
{
	struct kvm_regs regs;

	vcpu_run(vcpu);
	if (vcpu->run->exit_reason != KVM_EXIT_SPP)
		unexpected_exit(vcpu, "waiting for KVM_EXIT_SPP");
	TEST_ASSERT(vcpu->run->spp.gpa == gpa, "spp.gpa 0x%llx, expected 0x%lx",
		    vcpu->run->spp.gpa, gpa);
	TEST_ASSERT(vcpu->run->spp.insn_len, "insn_len 0");
	TEST_ASSERT_EQ(vcpu->run->spp.action, KVM_SPP_ACTION_RETRY);
	vcpu_regs_get(vcpu, &regs);
	return regs.rip;
}

static uint64_t ra_mem(struct kvm_vm *vm, uint64_t gpa)
{
	return *(uint64_t *)addr_gpa2hva(vm, gpa);
}

TEST(resume_actions)
{
	struct kvm_vcpu *vcpu;
	struct kvm_regs regs;
	struct kvm_vm *vm;
	uint64_t old, rip;

	vm = guard_vm(1, &vcpu, guest_resume);
	spp_set1(vm, GUARD_GFN + RA_PAGE, PROT(RA_PROT_SUBPAGE));
	old = ra_mem(vm, RA_ADDR);

	/* SKIP: the instruction completes, memory is unchanged. */
	expect_spp(vcpu, RA_ADDR);
	vcpu->run->spp.action = KVM_SPP_ACTION_SKIP;
	vcpu_run(vcpu);
	TEST_ASSERT_EQ(expect_sync(vcpu, "after SKIP"), 1);
	TEST_ASSERT_EQ(ra_mem(vm, RA_ADDR), old);

	/* ALLOW: this write lands; the protection stays. */
	expect_spp(vcpu, RA_ADDR);
	vcpu->run->spp.action = KVM_SPP_ACTION_ALLOW;
	vcpu_run(vcpu);
	TEST_ASSERT_EQ(expect_sync(vcpu, "after ALLOW"), 2);
	TEST_ASSERT_EQ(ra_mem(vm, RA_ADDR), RA_V(2));

	/* Unknown action: EINVAL, nothing changed; then RETRY after SET. */
	rip = expect_spp(vcpu, RA_ADDR);
	vcpu->run->spp.action = 3;
	TEST_ASSERT(__vcpu_run(vcpu) == -1 && errno == EINVAL,
		    "action 3: errno %d", errno);
	vcpu->run->spp.action = 0xff;
	TEST_ASSERT(__vcpu_run(vcpu) == -1 && errno == EINVAL,
		    "action 0xff: errno %d", errno);
	vcpu_regs_get(vcpu, &regs);
	TEST_ASSERT_EQ(regs.rip, rip);
	TEST_ASSERT_EQ(ra_mem(vm, RA_ADDR), RA_V(2));
	/* Still protected: RETRY exits again. */
	vcpu->run->spp.action = KVM_SPP_ACTION_RETRY;
	TEST_ASSERT_EQ(expect_spp(vcpu, RA_ADDR), rip);
	spp_set1(vm, GUARD_GFN + RA_PAGE, FULL);
	vcpu_run(vcpu);
	TEST_ASSERT_EQ(expect_sync(vcpu, "after RETRY"), 3);
	TEST_ASSERT_EQ(ra_mem(vm, RA_ADDR), RA_V(3));

	/* SKIP of a PUSH onto a protected sub-page: RSP moves, no write. */
	spp_set1(vm, GUARD_GFN + RA_PAGE, PROT(RA_PROT_SUBPAGE));
	old = ra_mem(vm, RA_RSP - 8);
	expect_spp(vcpu, RA_RSP - 8);
	vcpu->run->spp.action = KVM_SPP_ACTION_SKIP;
	vcpu_run(vcpu);
	TEST_ASSERT_EQ(expect_sync(vcpu, "after the PUSH"), RA_RSP - 8);
	TEST_ASSERT_EQ(ra_mem(vm, RA_RSP - 8), old);
	TEST_ASSERT_EQ(vcpu_stat(vcpu, "spp_exits"), 5);

	vcpu_run(vcpu);
	TEST_ASSERT_EQ(get_ucall(vcpu, NULL), UCALL_DONE);
	kvm_vm_free(vm);
}

/*
 * skip_in_mov_ss_shadow
 *
 * The denied write is the instruction right after MOV SS, in its interrupt
 * shadow, and the VMM single-steps the guest.  SKIP completes it the way
 * KVM completes any emulated instruction: the shadow ends, the single-step
 * trap comes right after it, RIP is past it.
 */
static void guest_mov_ss(void)
{
	asm volatile("mov %%ss, %%eax\n\t"
		     "mov %%eax, %%ss\n\t"
		     "movq %1, (%0)\n\t"
		     "nop\n\t"
		     : : "r"(RA_ADDR), "r"(RA_V(5)) : "rax", "memory");
	GUEST_SYNC(0);
}

TEST(skip_in_mov_ss_shadow)
{
	struct kvm_guest_debug dbg = {
		.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP,
	};
	struct kvm_vcpu_events ev;
	struct kvm_vcpu *vcpu;
	struct kvm_regs regs;
	struct kvm_vm *vm;
	uint64_t old, rip;
	uint8_t len;

	vm = guard_vm(1, &vcpu, guest_mov_ss);
	spp_set1(vm, GUARD_GFN + RA_PAGE, PROT(RA_PROT_SUBPAGE));
	old = ra_mem(vm, RA_ADDR);

	rip = expect_spp(vcpu, RA_ADDR);
	len = vcpu->run->spp.insn_len;
	vcpu_events_get(vcpu, &ev);
	ksft_print_msg("at the denied write: interrupt.shadow 0x%x, insn_len %u\n",
		       ev.interrupt.shadow, len);
	/*
	 * With EPT, the write exits as an EPT violation, and VMX reports the
	 * MOV SS shadow at the exit.  Where the emulated CPU does not, only
	 * the completion of the skipped instruction is checked: QEMU 7.2's
	 * SVM model does not put it in the VMCB's interrupt state, and with
	 * ept=0 (a #PF exit) Bochs 2.7 clears it before saving the guest's
	 * interruptibility state, unlike SDM 27.3.4 (both measured).
	 */
	if (kvm_cpu_has(X86_FEATURE_VMX) && kvm_is_tdp_enabled())
		TEST_ASSERT_EQ(ev.interrupt.shadow, KVM_X86_SHADOW_INT_MOV_SS);

	vcpu_guest_debug_set(vcpu, &dbg);
	vcpu->run->spp.action = KVM_SPP_ACTION_SKIP;
	vcpu_run(vcpu);
	TEST_ASSERT_KVM_EXIT_REASON(vcpu, KVM_EXIT_DEBUG);
	vcpu_regs_get(vcpu, &regs);
	TEST_ASSERT(regs.rip == rip + len, "rip 0x%llx, expected 0x%lx",
		    regs.rip, rip + len);
	vcpu_events_get(vcpu, &ev);
	TEST_ASSERT_EQ(ev.interrupt.shadow, 0);
	TEST_ASSERT_EQ(ra_mem(vm, RA_ADDR), old);

	dbg.control = 0;
	vcpu_guest_debug_set(vcpu, &dbg);
	vcpu_run(vcpu);
	expect_sync(vcpu, "after the single step");
	kvm_vm_free(vm);
}

/*
 * allow_one_vcpu
 *
 * ALLOW is for one write of one vCPU: another vCPU stopped at the same
 * denied write is denied again when it retries.
 */
static void guest_allow(void)
{
	WRITE_ONCE(*(uint64_t *)RA_ADDR, RA_V(6));
	GUEST_SYNC(0);
}

TEST(allow_one_vcpu)
{
	struct kvm_vcpu *vcpus[2];
	struct kvm_vm *vm;
	uint64_t old;

	vm = guard_vm(2, vcpus, guest_allow);
	spp_set1(vm, GUARD_GFN + RA_PAGE, PROT(RA_PROT_SUBPAGE));
	old = ra_mem(vm, RA_ADDR);

	expect_spp(vcpus[0], RA_ADDR);
	expect_spp(vcpus[1], RA_ADDR);
	vcpus[0]->run->spp.action = KVM_SPP_ACTION_ALLOW;
	vcpu_run(vcpus[0]);
	expect_sync(vcpus[0], "vCPU 0 after ALLOW");
	TEST_ASSERT_EQ(ra_mem(vm, RA_ADDR), RA_V(6));

	/* vCPU 1 retries (the default action): denied again, nothing lands. */
	*(uint64_t *)addr_gpa2hva(vm, RA_ADDR) = old;
	expect_spp(vcpus[1], RA_ADDR);
	TEST_ASSERT_EQ(ra_mem(vm, RA_ADDR), old);
	TEST_ASSERT_EQ(vcpu_stat(vcpus[1], "spp_exits"), 2);
	kvm_vm_free(vm);
}

/*
 * answer_each_write
 *
 * One instruction, two denied writes: an 8-byte store that crosses from
 * page A, whose last sub-page is protected, into page B, whose first is.
 * The exit names A; after an answer, emulating the store again exits for B
 * (same RIP); after that answer the store completes, each part as
 * answered.  Before KVM kept the answers of an instruction, the second
 * answer made it forget the first: SKIP/ALLOW never finished such a write.
 */
#define AE_PAGE			8
#define AE_ADDR			(PG(AE_PAGE + 1) - 4)
#define AE_V			0x8877665544332211ULL

static void guest_answer_each(void)
{
	int i;

	for (i = 0; i < 4; i++) {
		if (guest_spp_hw) {
			asm volatile("invlpg (%0)" : : "r"(AE_ADDR) : "memory");
			asm volatile("invlpg (%0)" : : "r"(AE_ADDR + 4) : "memory");
		}
		WRITE_ONCE(*(uint64_t *)AE_ADDR, AE_V);
		GUEST_SYNC(i);
	}
	GUEST_DONE();
}

TEST(answer_each_write)
{
	static const uint8_t actions[4][2] = {
		{ KVM_SPP_ACTION_ALLOW, KVM_SPP_ACTION_ALLOW },
		{ KVM_SPP_ACTION_SKIP, KVM_SPP_ACTION_SKIP },
		{ KVM_SPP_ACTION_ALLOW, KVM_SPP_ACTION_SKIP },
		{ KVM_SPP_ACTION_SKIP, KVM_SPP_ACTION_ALLOW },
	};
	uint32_t *lo, *hi, old_lo, old_hi;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	uint64_t rip;
	int i;

	vm = guard_vm(1, &vcpu, guest_answer_each);
	spp_set1(vm, GUARD_GFN + AE_PAGE, PROT(31));
	spp_set1(vm, GUARD_GFN + AE_PAGE + 1, PROT(0));
	lo = addr_gpa2hva(vm, AE_ADDR);
	hi = addr_gpa2hva(vm, AE_ADDR + 4);
	for (i = 0; i < 4; i++) {
		*lo = old_lo = 0x10101010 * (i + 1);
		*hi = old_hi = 0x01010101 * (i + 1);
		rip = expect_spp(vcpu, AE_ADDR);
		vcpu->run->spp.action = actions[i][0];
		TEST_ASSERT_EQ(expect_spp(vcpu, PG(AE_PAGE + 1)), rip);
		TEST_ASSERT_EQ(*lo, old_lo);
		TEST_ASSERT_EQ(*hi, old_hi);
		vcpu->run->spp.action = actions[i][1];
		vcpu_run(vcpu);
		TEST_ASSERT_EQ(expect_sync(vcpu, "after the second answer"), i);
		TEST_ASSERT_EQ(*lo, actions[i][0] == KVM_SPP_ACTION_ALLOW ?
			       (uint32_t)AE_V : old_lo);
		TEST_ASSERT_EQ(*hi, actions[i][1] == KVM_SPP_ACTION_ALLOW ?
			       (uint32_t)(AE_V >> 32) : old_hi);
	}
	TEST_ASSERT_EQ(vcpu_stat(vcpu, "spp_exits"), 8);
	run_to_done(vm, vcpu, "answer_each_write");
}

/*
 * toggle_race
 *
 * RACE_VCPUS vCPUs loop over RACE_PAGES pages; vCPU i writes its iteration
 * count to offset 8 * i of sub-page 0 (never protected) and of sub-page 1
 * (protected and unprotected by the host in turn) of each page, then
 * reports its loop count with GUEST_SYNC.  The host skips every denied write.
 * The exit per loop keeps the test fair on a single host CPU, and works
 * around Bochs 2.7, whose emulated host was seen to stop taking timer
 * interrupts while a guest ran for seconds without a VM exit.
 */
#define RACE_VCPUS		4
#define RACE_PAGES		4
#define RACE_FIRST_PAGE		4
#define RACE_TOGGLED		1
#define RACE_ROUNDS		40
#define RACE_SECONDS		5

static uint64_t race_stop;
static uint64_t race_iters[RACE_VCPUS];


static void guest_race(int id)
{
	uint64_t it, p, base;

	for (it = 1; !READ_ONCE(race_stop); it++) {
		for (p = 0; p < RACE_PAGES; p++) {
			base = PG(RACE_FIRST_PAGE + p) + 8 * id;
			WRITE_ONCE(*(uint64_t *)base, it);
			if (guest_spp_hw)
				asm volatile("invlpg (%0)" : : "r"(base) : "memory");
			asm volatile("race_store: movq %0, (%1)\n\t"
				     "race_store_end:\n\t"
				     : : "r"(it), "r"(base + RACE_TOGGLED * SUBPAGE)
				     : "memory");
		}
		WRITE_ONCE(race_iters[id], it);
		GUEST_SYNC(it);
	}
	GUEST_DONE();
}

struct race_vcpu {
	pthread_t thread;
	struct kvm_vcpu *vcpu;
	bool churn;
	uint64_t denied;
	uint64_t mmio;
	uint64_t loops;
};

static void *race_vcpu_thread(void *arg)
{
	struct race_vcpu *rv = arg;
	struct kvm_vcpu *vcpu = rv->vcpu;
	struct kvm_run *run = vcpu->run;
	struct kvm_regs regs;
	struct ucall uc;
	uint64_t off;

	for (;;) {
		vcpu_run(vcpu);
		if (run->exit_reason == KVM_EXIT_SPP) {
			off = run->spp.gpa - PG(RACE_FIRST_PAGE);
			TEST_ASSERT(run->spp.gpa >= PG(RACE_FIRST_PAGE) &&
				    off < RACE_PAGES * PAGE_SIZE &&
				    (off & (PAGE_SIZE - 1)) / SUBPAGE == RACE_TOGGLED,
				    "vCPU %u: KVM_EXIT_SPP at gpa 0x%llx, not a toggled sub-page",
				    vcpu->id, run->spp.gpa);
			TEST_ASSERT(run->spp.flags == spp_flags(0),
				    "vCPU %u: spp.flags 0x%x", vcpu->id,
				    run->spp.flags);
			vcpu_regs_get(vcpu, &regs);
			TEST_ASSERT(regs.rip == (uint64_t)race_store,
				    "vCPU %u: denied write at rip 0x%llx",
				    vcpu->id, regs.rip);
			TEST_ASSERT_EQ(run->spp.insn_len,
				       race_store_end - race_store);
			regs.rip += run->spp.insn_len;
			vcpu_regs_set(vcpu, &regs);
			rv->denied++;
			continue;
		}
		/* The memslot is being re-created: the write is lost. */
		if (run->exit_reason == KVM_EXIT_MMIO && rv->churn) {
			TEST_ASSERT(run->mmio.phys_addr >= PG(RACE_FIRST_PAGE) &&
				    run->mmio.phys_addr < PG(RACE_FIRST_PAGE + RACE_PAGES),
				    "vCPU %u: MMIO exit at 0x%llx", vcpu->id,
				    run->mmio.phys_addr);
			rv->mmio++;
			continue;
		}
		switch (get_ucall(vcpu, &uc)) {
		case UCALL_SYNC:
			WRITE_ONCE(rv->loops, uc.args[1]);
			continue;
		case UCALL_DONE:
			return NULL;
		}
		unexpected_exit(vcpu, "toggle race");
	}
}

static void race_snapshot(struct kvm_vm *vm, uint8_t *snap)
{
	int p;

	for (p = 0; p < RACE_PAGES; p++)
		memcpy(snap + p * SUBPAGE,
		       (uint8_t *)addr_gpa2hva(vm, PG(RACE_FIRST_PAGE + p)) +
		       RACE_TOGGLED * SUBPAGE, SUBPAGE);
}

/*
 * Delete the memslot of the race pages and create it again at once, with
 * the same host memory, while the vCPUs write to it.
 */
static void race_recreate_memslot(struct kvm_vm *vm)
{
	struct userspace_mem_region *region = memslot2region(vm, GUARD_SLOT);
	struct kvm_userspace_memory_region2 gone = region->region;

	gone.memory_size = 0;
	vm_ioctl(vm, KVM_SET_USER_MEMORY_REGION2, &gone);
	vm_ioctl(vm, KVM_SET_USER_MEMORY_REGION2, &region->region);
}

/* Wait until every vCPU has completed @n more loops. */
static void race_wait_loops(struct race_vcpu *rv, uint64_t n)
{
	uint64_t start[RACE_VCPUS];
	int i;

	for (i = 0; i < RACE_VCPUS; i++)
		start[i] = READ_ONCE(rv[i].loops);
	for (i = 0; i < RACE_VCPUS; i++)
		while (READ_ONCE(rv[i].loops) < start[i] + n)
			usleep(1000);
}

#define RACE_CHURN_DIRTY_LOG	BIT(0)
#define RACE_CHURN_MEMSLOT	BIT(1)

/*
 * The host toggles the protection of sub-page RACE_TOGGLED of the race
 * pages; with @churn, it also turns dirty logging on and off and deletes
 * and re-creates their memslot in every round, the way a VMM does at run
 * time.  No protected byte may change after a SET returns, and every
 * vCPU's last permitted write must land.  (This found make_spte() taking
 * the MMIO SPTE left by the deleted memslot for a writable one and
 * skipping the write-protection checks.)
 */
static void race_run(unsigned int churn)
{
	uint8_t snap[RACE_PAGES * SUBPAGE], now[RACE_PAGES * SUBPAGE];
	struct kvm_vcpu *vcpus[RACE_VCPUS];
	struct race_vcpu rv[RACE_VCPUS];
	uint32_t prot[RACE_PAGES], full[RACE_PAGES];
	uint64_t denied = 0, mmio = 0, iters, *hva;
	struct timespec pause = { .tv_nsec = 2 * 1000 * 1000 }, t0, t;
	struct kvm_vm *vm;
	int i, r, p;

	for (p = 0; p < RACE_PAGES; p++) {
		prot[p] = PROT(RACE_TOGGLED);
		full[p] = FULL;
	}
	vm = guard_vm(RACE_VCPUS, vcpus, guest_race);
	for (i = 0; i < RACE_VCPUS; i++) {
		vcpu_args_set(vcpus[i], 1, i);
		rv[i] = (struct race_vcpu){ .vcpu = vcpus[i], .churn = !!churn };
	}
	spp_set(vm, GUARD_GFN + RACE_FIRST_PAGE, RACE_PAGES, prot);
	for (i = 0; i < RACE_VCPUS; i++)
		pthread_create(&rv[i].thread, NULL, race_vcpu_thread, &rv[i]);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (r = 0; r < RACE_ROUNDS; r++) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (r >= 4 && t.tv_sec - t0.tv_sec >= RACE_SECONDS)
			break;
		/* Protected: nothing may change until the next SET. */
		spp_set(vm, GUARD_GFN + RACE_FIRST_PAGE, RACE_PAGES, prot);
		race_snapshot(vm, snap);
		if (churn & RACE_CHURN_DIRTY_LOG)
			vm_mem_region_set_flags(vm, GUARD_SLOT,
						KVM_MEM_LOG_DIRTY_PAGES);
		nanosleep(&pause, NULL);
		if (churn & RACE_CHURN_MEMSLOT) {
			race_recreate_memslot(vm);
			nanosleep(&pause, NULL);
		}
		race_snapshot(vm, now);
		for (p = 0; p < (int)sizeof(now); p += 8)
			TEST_ASSERT(!memcmp(snap + p, now + p, 8),
				    "round %d: page %d offset %d of the protected sub-page changed after SET returned: 0x%lx -> 0x%lx",
				    r, p / SUBPAGE, p % SUBPAGE,
				    *(uint64_t *)(snap + p), *(uint64_t *)(now + p));
		spp_set(vm, GUARD_GFN + RACE_FIRST_PAGE, RACE_PAGES, full);
		if (churn & RACE_CHURN_DIRTY_LOG)
			vm_mem_region_set_flags(vm, GUARD_SLOT, 0);
		nanosleep(&pause, NULL);
	}
	spp_set(vm, GUARD_GFN + RACE_FIRST_PAGE, RACE_PAGES, prot);
	/* Writes lost while the memslot was gone are written again. */
	race_wait_loops(rv, 2);
	race_stop = 1;
	sync_global_to_guest(vm, race_stop);
	for (i = 0; i < RACE_VCPUS; i++) {
		pthread_join(rv[i].thread, NULL);
		denied += rv[i].denied;
		mmio += rv[i].mmio;
	}

	/* Every vCPU's last permitted write landed on every page. */
	sync_global_from_guest(vm, race_iters);
	iters = 0;
	for (i = 0; i < RACE_VCPUS; i++) {
		TEST_ASSERT(race_iters[i] > 0, "vCPU %d never completed a loop", i);
		TEST_ASSERT_EQ(rv[i].loops, race_iters[i]);
		iters += race_iters[i];
		for (p = 0; p < RACE_PAGES; p++) {
			hva = addr_gpa2hva(vm, PG(RACE_FIRST_PAGE + p) + 8 * i);
			TEST_ASSERT(*hva == race_iters[i],
				    "vCPU %d page %d: permitted slot 0x%lx, %lu loops done",
				    i, p, *hva, race_iters[i]);
		}
	}
	ksft_print_msg(
		"%s path%s: %d rounds, %lu loops, %lu denied, %lu lost to the memslot gap, %lu SPPT misses (vCPU 0)\n",
		guest_spp_hw ? "hardware" : "software",
		churn ? ", dirty logging and memslot churn" : "", r,
		iters, denied, mmio, vcpu_stat(vcpus[0], "spp_sppt_misses"));
	TEST_ASSERT(denied > 0, "no write was ever denied");
	race_stop = 0;
	kvm_vm_free(vm);
}

TEST(toggle_race)
{
	race_run(0);
}

TEST(memslot_churn_race)
{
	race_run(RACE_CHURN_DIRTY_LOG | RACE_CHURN_MEMSLOT);
}

/*
 * cpl3_writes
 *
 * Guest user mode (CPL3) against protected pages: a write to a writable
 * sub-page lands, a write to a protected one exits (RIP and CPL3 kept) and
 * is skipped by the VMM, a CPL3 write to a supervisor page that KVM write-
 * protects for SPP raises the guest's #PF and writes nothing, and the #PF
 * frame, pushed on the kernel stack (RSP0 from the TSS) into a protected
 * sub-page, is held as event delivery and delivered exactly once when the
 * VMM lifts the protection.  The two user data pages are different pages
 * because of Bochs's TLB (see the top of this file): the denied write is
 * the first write to its page.
 */
#define C3_OK_PAGE		12	/* user data, write to sub-page 2 */
#define C3_USTACK_PAGE		13	/* user stack */
#define C3_KSTACK_PAGE		14	/* RSP0: kernel stack for CPL3 events */
#define C3_DENY_PAGE		15	/* user data, write to sub-page 3 */
#define C3_PROT_SUBPAGE		3
#define C3_OK			(PG(C3_OK_PAGE) + 2 * SUBPAGE + 8)
#define C3_DENIED		(PG(C3_DENY_PAGE) + C3_PROT_SUBPAGE * SUBPAGE + 8)
#define C3_RSP0_SUBPAGE		16
#define C3_RSP0			(PG(C3_KSTACK_PAGE) + C3_RSP0_SUBPAGE * SUBPAGE)
#define C3_KWRITE		(PG(C3_KSTACK_PAGE) + 20 * SUBPAGE)
#define C3_USER_DS		(5 * 8 + 3)
#define C3_USER_CS		(6 * 8 + 3)
#define C3_KERNEL_CS		0x8
#define C3_KERNEL_DS		0x10


/* The user-mode code, alone in its page (the only code page marked user). */
asm(".pushsection .text\n"
	".balign 4096\n"
	"cpl3_code:\n"
	"	movq %r8, (%r12)\n"
	"cpl3_denied:\n"
	"	movq %r9, (%r13)\n"
	"cpl3_kwrite:\n"
	"	movq %r10, (%r14)\n"
	"cpl3_kwrite_end:\n"
	"cpl3_ud2:\n"
	"	ud2\n"
	".balign 4096\n"
	".popsection");

static uint64_t cpl3_kernel_rsp;
static int cpl3_pf, cpl3_ud;

static void cpl3_pf_handler(struct ex_regs *regs)
{
	uint64_t cr2;

	asm volatile("mov %%cr2, %0" : "=r"(cr2));
	GUEST_ASSERT_EQ(regs->rip, (uint64_t)cpl3_kwrite);
	GUEST_ASSERT_EQ(regs->cs, C3_USER_CS);
	GUEST_ASSERT_EQ(cr2, C3_KWRITE);
	cpl3_pf++;
	regs->rip = (uint64_t)cpl3_kwrite_end;
}

/* ud2 ends user mode: back to guest_cpl3() at CPL0. */
static void cpl3_ud_handler(struct ex_regs *regs)
{
	uint64_t *frame = &regs->rflags;	/* then RSP and SS */

	GUEST_ASSERT_EQ(regs->rip, (uint64_t)cpl3_ud2);
	cpl3_ud++;
	regs->rip = (uint64_t)cpl3_back;
	regs->cs = C3_KERNEL_CS;
	frame[1] = cpl3_kernel_rsp;
	frame[2] = C3_KERNEL_DS;
}

/* Run cpl3_code at CPL3 until its ud2 (no call between these and the asm). */
static noinline void cpl3_enter(void)
{
	register uint64_t r8 asm("r8") = RA_V(1);
	register uint64_t r9 asm("r9") = RA_V(2);
	register uint64_t r10 asm("r10") = RA_V(3);
	register uint64_t r12 asm("r12") = C3_OK;
	register uint64_t r13 asm("r13") = C3_DENIED;
	register uint64_t r14 asm("r14") = C3_KWRITE;

	asm volatile("mov %%rsp, %[krsp]\n\t"
		     "pushq %[ss]\n\t"
		     "pushq %[rsp]\n\t"
		     "pushq $2\n\t"
		     "pushq %[cs]\n\t"
		     "pushq %[rip]\n\t"
		     "iretq\n"
		     "cpl3_back:"
		     : [krsp]"=m"(cpl3_kernel_rsp)
		     : [ss]"i"(C3_USER_DS), [rsp]"r"(PG(C3_USTACK_PAGE + 1)),
		       [cs]"i"(C3_USER_CS), [rip]"r"((uint64_t)cpl3_code),
		       "r"(r8), "r"(r9), "r"(r10), "r"(r12), "r"(r13), "r"(r14)
		     : "memory", "cc");
}

static void guest_cpl3(void)
{
	GUEST_SYNC(1);
	cpl3_enter();
	GUEST_SYNC(2);
	GUEST_DONE();
}

/* Let CPL3 access @gva: set the U bit at every level of its translation. */
static void make_user(struct kvm_vm *vm, uint64_t gva)
{
	uint64_t *table = addr_gpa2hva(vm, vm->pgd), *e;
	int level;

	for (level = 3; level >= 0; level--) {
		e = &table[(gva >> (12 + 9 * level)) & 511];
		TEST_ASSERT(*e & PTE_PRESENT_MASK, "0x%lx not mapped", gva);
		*e |= PTE_USER_MASK;
		if (!level || (*e & PTE_LARGE_MASK))
			break;
		table = addr_gpa2hva(vm, *e & PHYSICAL_PAGE_MASK);
	}
}

static uint8_t c3_byte(struct kvm_vm *vm, uint64_t gpa)
{
	return *(uint8_t *)addr_gpa2hva(vm, gpa);
}

TEST(cpl3_writes)
{
	uint64_t *gdt, frame_gpa;
	struct kvm_vcpu *vcpu;
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_vm *vm;
	int i;

	vm = guard_vm(1, &vcpu, guest_cpl3);
	vm_install_exception_handler(vm, PF_VECTOR, cpl3_pf_handler);
	vm_install_exception_handler(vm, UD_VECTOR, cpl3_ud_handler);
	gdt = addr_gva2hva(vm, vm->arch.gdt);
	gdt[C3_USER_DS >> 3] = 0x00cff3000000ffffULL;	/* data, DPL 3 */
	gdt[C3_USER_CS >> 3] = 0x00affb000000ffffULL;	/* 64-bit code, DPL 3 */
	*(uint64_t *)((uint8_t *)addr_gva2hva(vm, vm->arch.tss) + 4) = C3_RSP0;
	make_user(vm, (uint64_t)cpl3_code);
	make_user(vm, PG(C3_OK_PAGE));
	make_user(vm, PG(C3_USTACK_PAGE));
	make_user(vm, PG(C3_DENY_PAGE));

	vcpu_run(vcpu);
	TEST_ASSERT_EQ(expect_sync(vcpu, "before user mode"), 1);
	spp_set1(vm, GUARD_GFN + C3_OK_PAGE, PROT(C3_PROT_SUBPAGE));
	spp_set1(vm, GUARD_GFN + C3_DENY_PAGE, PROT(C3_PROT_SUBPAGE));
	spp_set1(vm, GUARD_GFN + C3_KSTACK_PAGE, PROT(C3_RSP0_SUBPAGE - 1));

	/* The denied write, at CPL3. */
	vcpu_run(vcpu);
	if (vcpu->run->exit_reason != KVM_EXIT_SPP)
		unexpected_exit(vcpu, "CPL3 write to a protected sub-page");
	TEST_ASSERT_EQ(vcpu->run->spp.gpa, C3_DENIED);
	TEST_ASSERT_EQ(vcpu->run->spp.flags, spp_flags(0));
	TEST_ASSERT_EQ(vcpu->run->spp.insn_len, cpl3_kwrite - cpl3_denied);
	vcpu_regs_get(vcpu, &regs);
	vcpu_sregs_get(vcpu, &sregs);
	TEST_ASSERT_EQ(regs.rip, (uint64_t)cpl3_denied);
	TEST_ASSERT_EQ(sregs.cs.selector, C3_USER_CS);
	TEST_ASSERT_EQ(sregs.cs.dpl, 3);
	TEST_ASSERT_EQ(*(uint64_t *)addr_gpa2hva(vm, C3_OK), RA_V(1));
	vcpu->run->spp.action = KVM_SPP_ACTION_SKIP;

	/*
	 * The CPL3 write to the supervisor page faults in the guest; the #PF
	 * frame goes to RSP0, into the protected sub-page below it.
	 */
	vcpu_run(vcpu);
	if (vcpu->run->exit_reason != KVM_EXIT_SPP)
		unexpected_exit(vcpu, "#PF frame on a protected sub-page");
	TEST_ASSERT_EQ(vcpu->run->spp.flags,
		       spp_flags(KVM_SPP_EXIT_EVENT_DELIVERY));
	frame_gpa = vcpu->run->spp.gpa;
	TEST_ASSERT(frame_gpa >= C3_RSP0 - SUBPAGE && frame_gpa < C3_RSP0,
		    "spp.gpa 0x%lx, expected in the sub-page below RSP0",
		    frame_gpa);
	vcpu_regs_get(vcpu, &regs);
	TEST_ASSERT_EQ(regs.rip, (uint64_t)cpl3_kwrite);
	for (i = 0; i < SUBPAGE; i++)
		TEST_ASSERT_EQ(c3_byte(vm, C3_RSP0 - SUBPAGE + i),
			       pattern(C3_KSTACK_PAGE * PAGE_SIZE +
				       (C3_RSP0_SUBPAGE - 1) * SUBPAGE + i));
	spp_set1(vm, GUARD_GFN + C3_KSTACK_PAGE, FULL);

	vcpu_run(vcpu);
	TEST_ASSERT_EQ(expect_sync(vcpu, "back at CPL0"), 2);
	sync_global_from_guest(vm, cpl3_pf);
	sync_global_from_guest(vm, cpl3_ud);
	TEST_ASSERT_EQ(cpl3_pf, 1);
	TEST_ASSERT_EQ(cpl3_ud, 1);
	for (i = 0; i < 8; i++) {
		TEST_ASSERT_EQ(c3_byte(vm, C3_DENIED + i),
			       pattern(C3_DENY_PAGE * PAGE_SIZE +
				       PAGE_OFF(C3_DENIED) + i));
		TEST_ASSERT_EQ(c3_byte(vm, C3_KWRITE + i),
			       pattern(C3_KSTACK_PAGE * PAGE_SIZE +
				       PAGE_OFF(C3_KWRITE) + i));
	}
	TEST_ASSERT_EQ(vcpu_stat(vcpu, "spp_exits"), 2);

	run_to_done(vm, vcpu, "the end");
}

/*
 * nested_writebacks_vmx, nested_writebacks_svm
 *
 * With nested virtualization, KVM itself writes L1 memory that L1 names:
 * vmcs12 back to its VMCS region (VMCLEAR, a VMPTRLD switch), VMSAVE's
 * fields, and while L2 runs, the VM-exit MSR-store list and vmcb12 at a
 * nested VM exit and the host save area at an SMI.  None of these may
 * change a protected byte.  Instructions are held (KVM_EXIT_SPP, insn_len
 * 0, RIP at the instruction, nothing written) until the VMM lifts the
 * protection; VMLAUNCH/VMRUN is held the same way if what L2 would make KVM
 * write is protected, and while L2 runs, a SET that would deny such a write
 * fails with EBUSY (one that does not, succeeds), until L2 exits to L1.
 */
#define NW_MSR_PAGE		10
#define NW_MSR_SUBPAGE		5
#define NW_MSR_OFF		(NW_MSR_SUBPAGE * SUBPAGE + 32)
#define NW_SYSENTER_CS		0x1234
#define NW_VMCS_SUBPAGE		31
#define NS_SAVE_PAGE		11
#define NS_STAR			0x0023001000000000ULL

enum {
	NW_VMCLEAR = 1, NW_VMPTRLD, NW_ENTER, NW_L2, NW_L2_EXITED, NW_VMSAVE
};


static int spp_try_set1(struct kvm_vm *vm, uint64_t gfn, uint32_t vec)
{
	struct kvm_subpage_access sa = {
		.base_gfn = gfn,
		.npages = 1,
		.access_map = (uintptr_t)&vec,
	};

	return __vm_ioctl(vm, KVM_SUBPAGES_SET_ACCESS, &sa) ? errno : 0;
}

/* Run into a held instruction: KVM_EXIT_SPP at @gpa, RIP at @rip if set. */
static void expect_held(struct kvm_vcpu *vcpu, uint64_t gpa, const char *rip,
			const char *what)
{
	struct kvm_regs regs;
	int i;

	/* Retried as is, it stays held. */
	for (i = 0; i < 2; i++) {
		vcpu_run(vcpu);
		if (vcpu->run->exit_reason != KVM_EXIT_SPP)
			unexpected_exit(vcpu, what);
		TEST_ASSERT(vcpu->run->spp.gpa == gpa,
			    "%s: spp.gpa 0x%llx, expected 0x%lx", what,
			    vcpu->run->spp.gpa, gpa);
		TEST_ASSERT(vcpu->run->spp.flags == spp_flags(0),
			    "%s: spp.flags 0x%x", what, vcpu->run->spp.flags);
		TEST_ASSERT(!vcpu->run->spp.insn_len, "%s: insn_len %u", what,
			    vcpu->run->spp.insn_len);
		TEST_ASSERT(!(vcpu->run->flags & KVM_RUN_X86_GUEST_MODE),
			    "%s: held in guest mode", what);
		vcpu_regs_get(vcpu, &regs);
		TEST_ASSERT(!rip || regs.rip == (uint64_t)rip,
			    "%s: rip 0x%llx, expected 0x%lx", what, regs.rip,
			    (uint64_t)rip);
	}
}

/*
 * At the guest's GUEST_SYNC(@stage), protect sub-page @sub of the page at
 * @page: the next instruction is held at @gpa with nothing of the page
 * written, and goes on once the protection is lifted.
 */
static void hold_page_write(struct kvm_vm *vm, struct kvm_vcpu *vcpu,
			    int stage, uint64_t page, int sub, uint64_t gpa,
			    const char *rip, const char *what)
{
	uint8_t before[PAGE_SIZE], *hva = addr_gpa2hva(vm, page);

	vcpu_run(vcpu);
	TEST_ASSERT_EQ(expect_sync(vcpu, what), stage);
	spp_set1(vm, page >> PAGE_SHIFT, PROT(sub));
	memcpy(before, hva, PAGE_SIZE);
	expect_held(vcpu, gpa, rip, what);
	TEST_ASSERT(!memcmp(before, hva, PAGE_SIZE),
		    "%s wrote to a page with a protected sub-page", what);
	spp_set1(vm, page >> PAGE_SHIFT, FULL);
}

/*
 * The guest is in L2 at a GUEST_SYNC: a SET that would deny a write of
 * @claimed fails with EBUSY and changes nothing, one of @free succeeds.
 */
static void expect_claimed(struct kvm_vm *vm, uint64_t claimed, uint64_t free)
{
	uint64_t gfn = claimed >> PAGE_SHIFT;
	int sub = PAGE_OFF(claimed) / SUBPAGE;
	uint32_t vec;
	struct kvm_subpage_access sa = {
		.base_gfn = gfn, .npages = 1, .access_map = (uintptr_t)&vec,
	};

	TEST_ASSERT_EQ(spp_try_set1(vm, gfn, PROT(sub)), EBUSY);
	vm_ioctl(vm, KVM_SUBPAGES_GET_ACCESS, &sa);
	TEST_ASSERT_EQ(vec, FULL);
	/* A range that only ends in the claimed sub-page is refused too. */
	TEST_ASSERT_EQ(spp_try_set1(vm, gfn, PROT(sub) & PROT(0)), EBUSY);
	TEST_ASSERT_EQ(spp_try_set1(vm, free >> PAGE_SHIFT,
				    PROT(PAGE_OFF(free) / SUBPAGE)), 0);
	spp_set1(vm, free >> PAGE_SHIFT, FULL);
}

static void nw_l2(void)
{
	GUEST_SYNC(NW_L2);
	vmcall();
}

static void nw_l1(struct vmx_pages *vmx)
{
	struct vmx_msr_entry *e = (void *)(PG(NW_MSR_PAGE) + NW_MSR_OFF);
	unsigned long l2_stack[64];

	GUEST_ASSERT(prepare_for_vmx_operation(vmx));
	GUEST_ASSERT(load_vmcs(vmx));
	GUEST_SYNC(NW_VMCLEAR);		/* vmcs12 goes back to the region */
	asm volatile("nw_vmclear: vmclear %0" : : "m"(vmx->vmcs_gpa)
		     : "cc", "memory");

	GUEST_ASSERT(!vmptrld(vmx->vmcs_gpa));
	*(uint32_t *)vmx->shadow_vmcs = vmcs_revision();
	GUEST_SYNC(NW_VMPTRLD);		/* so does the current one here */
	asm volatile("nw_vmptrld: vmptrld %0" : : "m"(vmx->shadow_vmcs_gpa)
		     : "cc", "memory");

	GUEST_ASSERT(load_vmcs(vmx));
	prepare_vmcs(vmx, nw_l2, &l2_stack[64]);
	e->index = MSR_IA32_SYSENTER_CS;
	e->reserved = 0;
	e->value = 0;
	vmwrite(GUEST_SYSENTER_CS, NW_SYSENTER_CS);
	vmwrite(VM_EXIT_MSR_STORE_ADDR, (uint64_t)e);
	vmwrite(VM_EXIT_MSR_STORE_COUNT, 1);
	GUEST_SYNC(NW_ENTER);
	GUEST_ASSERT(!vmlaunch());
	GUEST_ASSERT_EQ(vmreadz(VM_EXIT_REASON), EXIT_REASON_VMCALL);
	GUEST_SYNC(NW_L2_EXITED);
	GUEST_DONE();
}

TEST(nested_writebacks_vmx)
{
	uint64_t msr_gpa = PG(NW_MSR_PAGE) + NW_MSR_OFF, vmcs_sub;
	struct vmx_pages *vmx;
	struct kvm_vcpu *vcpu;
	vm_vaddr_t vmx_gva;
	struct kvm_vm *vm;

	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_X86_GUEST_MODE));

	vm = guard_vm(1, &vcpu, nw_l1);
	vmx = vcpu_alloc_vmx(vm, &vmx_gva);
	vcpu_args_set(vcpu, 1, vmx_gva);

	vmcs_sub = vmx->vmcs_gpa + NW_VMCS_SUBPAGE * SUBPAGE;
	hold_page_write(vm, vcpu, NW_VMCLEAR, vmx->vmcs_gpa, NW_VMCS_SUBPAGE,
			vmcs_sub, nw_vmclear, "VMCLEAR");
	hold_page_write(vm, vcpu, NW_VMPTRLD, vmx->vmcs_gpa, NW_VMCS_SUBPAGE,
			vmcs_sub, nw_vmptrld, "VMPTRLD of another VMCS");
	hold_page_write(vm, vcpu, NW_ENTER, PG(NW_MSR_PAGE), NW_MSR_SUBPAGE,
			msr_gpa, NULL, "VMLAUNCH with a protected MSR-store list");

	vcpu_run(vcpu);
	TEST_ASSERT_EQ(expect_sync(vcpu, "in L2"), NW_L2);
	TEST_ASSERT(vcpu->run->flags & KVM_RUN_X86_GUEST_MODE, "not in L2");
	expect_claimed(vm, msr_gpa, PG(NW_MSR_PAGE) + 20 * SUBPAGE);
	/* Claims are of what KVM writes, not of whole pages. */
	TEST_ASSERT_EQ(spp_try_set1(vm, GUARD_GFN + NW_MSR_PAGE,
				    PROT(NW_MSR_SUBPAGE + 1)), 0);
	spp_set1(vm, GUARD_GFN + NW_MSR_PAGE, FULL);

	vcpu_run(vcpu);
	TEST_ASSERT_EQ(expect_sync(vcpu, "back in L1"), NW_L2_EXITED);
	TEST_ASSERT_EQ(*(uint64_t *)addr_gpa2hva(vm, msr_gpa + 8),
		       NW_SYSENTER_CS);
	/* L2 is gone: nothing is claimed any more. */
	TEST_ASSERT_EQ(spp_try_set1(vm, GUARD_GFN + NW_MSR_PAGE,
				    PROT(NW_MSR_SUBPAGE)), 0);
	spp_set1(vm, GUARD_GFN + NW_MSR_PAGE, FULL);

	run_to_done(vm, vcpu, "L1's end");
}

static void ns_l2(void)
{
	GUEST_SYNC(NW_L2);
	vmmcall();
}

static void ns_l1(struct svm_test_data *svm)
{
	unsigned long l2_stack[64];

	generic_svm_setup(svm, ns_l2, &l2_stack[64]);
	wrmsr(MSR_STAR, NS_STAR);
	GUEST_SYNC(NW_VMSAVE);
	asm volatile("ns_vmsave: vmsave %%rax" : : "a"(PG(NS_SAVE_PAGE))
		     : "memory");
	GUEST_SYNC(NW_ENTER);
	run_guest(svm->vmcb, svm->vmcb_gpa);
	GUEST_ASSERT_EQ(svm->vmcb->control.exit_code, SVM_EXIT_VMMCALL);
	GUEST_SYNC(NW_L2_EXITED);
	GUEST_DONE();
}

TEST(nested_writebacks_svm)
{
	uint64_t star_gpa = PG(NS_SAVE_PAGE) + offsetof(struct vmcb, save.star);
	struct svm_test_data *svm;
	struct kvm_vcpu *vcpu;
	vm_vaddr_t svm_gva;
	struct kvm_vm *vm;
	uint64_t vmcb_gfn;

	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_SVM));
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_X86_GUEST_MODE));

	vm = guard_vm(1, &vcpu, ns_l1);
	svm = vcpu_alloc_svm(vm, &svm_gva);
	vcpu_args_set(vcpu, 1, svm_gva);
	vmcb_gfn = svm->vmcb_gpa >> PAGE_SHIFT;

	hold_page_write(vm, vcpu, NW_VMSAVE, PG(NS_SAVE_PAGE),
			PAGE_OFF(star_gpa) / SUBPAGE, star_gpa, ns_vmsave,
			"VMSAVE");
	hold_page_write(vm, vcpu, NW_ENTER, svm->vmcb_gpa, NW_VMCS_SUBPAGE,
			svm->vmcb_gpa + NW_VMCS_SUBPAGE * SUBPAGE, NULL,
			"VMRUN with a protected vmcb12");
	TEST_ASSERT_EQ(*(uint64_t *)addr_gpa2hva(vm, star_gpa), NS_STAR);

	vcpu_run(vcpu);
	TEST_ASSERT_EQ(expect_sync(vcpu, "in L2"), NW_L2);
	TEST_ASSERT(vcpu->run->flags & KVM_RUN_X86_GUEST_MODE, "not in L2");
	expect_claimed(vm, svm->vmcb_gpa + NW_VMCS_SUBPAGE * SUBPAGE,
		       PG(NS_SAVE_PAGE));
	/* L1's host save area, written if an SMI arrives while L2 runs. */
	expect_claimed(vm, svm->save_area_gpa + offsetof(struct vmcb, save),
		       svm->save_area_gpa + PAGE_SIZE - SUBPAGE);

	vcpu_run(vcpu);
	TEST_ASSERT_EQ(expect_sync(vcpu, "back in L1"), NW_L2_EXITED);
	TEST_ASSERT_EQ(spp_try_set1(vm, vmcb_gfn, PROT(NW_VMCS_SUBPAGE)), 0);
	spp_set1(vm, vmcb_gfn, FULL);

	run_to_done(vm, vcpu, "L1's end");
}

int main(int argc, char *argv[])
{
	spp_cap = kvm_check_cap(KVM_CAP_X86_SPP);
	TEST_REQUIRE(spp_cap);

	return test_harness_run(argc, argv);
}
