// SPDX-License-Identifier: GPL-2.0-only
/*
 * spp_test: KVM sub-page write protection (KVM_CAP_X86_SPP).
 *
 * A 4 KiB guest page is split into 32 sub-pages of 128 bytes; userspace sets
 * a 32-bit vector per page with KVM_SUBPAGES_SET_ACCESS (bit i set: sub-page
 * i is writable, KVM_SUBPAGE_FULL_ACCESS: the page is not protected).  A
 * guest write to a protected page is let through only if every byte it
 * writes lands in a writable sub-page; otherwise KVM_RUN exits with
 * KVM_EXIT_SPP (gpa of the first byte of the denied access on the page where
 * it was denied, length of the faulting instruction), RIP still points at the
 * instruction and nothing of the write reached memory.
 *
 * The test checks the capability and KVM_ENABLE_CAP rules, the SET/GET
 * round trip and errno table, and the enforcement for 1/2/4/8/16-byte
 * stores, stores straddling sub-pages and pages, rep stos, locked
 * read-modify-write instructions, push, retrying a denied write after
 * lifting the protection, 2 MiB THP backed memory, memslot deletion/move and
 * dirty logging.
 *
 * The protected memory is a separate memslot at SPP_GPA, identity mapped in
 * the guest, away from the guest's code, stack and page tables.  The guest
 * writes with small assembly helpers whose faulting instruction has a known
 * address and length.  The host replays every step on a model of the memslot
 * and compares the whole memslot against it, so both the written and the
 * protected bytes are checked.  The test is kept short: it also runs on
 * emulated hardware where every exit is expensive.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/falloc.h>

#include "kselftest_harness.h"
#include "test_util.h"
#include "kvm_util.h"
#include "processor.h"
#include "vmx.h"
#include "ucall_common.h"

#include "spp_labels.h"

#define SPP_SLOT		10
#define SPP_GPA			0xc0000000UL
#define SPP_GVA			SPP_GPA		/* identity mapped */
#define SPP_GFN			(SPP_GPA >> PAGE_SHIFT)
#define SPP_GPA_MOVED		0xd0000000UL
#define SPP_NPAGES		8
#define SPP_MAX_PAGES		512
#define SUBPAGES		(PAGE_SIZE / KVM_SUBPAGE_SIZE)
#define FULL			KVM_SUBPAGE_FULL_ACCESS
#define SPP_TIMEOUT		120
#define MAX_STEPS		256

/* Vector with the sub-pages in @mask protected and all others writable. */
#define SPP_PROT(mask)		((uint32_t)~(uint32_t)(mask))
#define SP_BIT(n)		(1U << (n))

/* Guest virtual address of page @p / of sub-page @s of page @p. */
#define PG(p)			(SPP_GVA + (uint64_t)(p) * PAGE_SIZE)
#define SP(p, s)		(PG(p) + (uint64_t)(s) * KVM_SUBPAGE_SIZE)
#define GPA(gva)		((gva) - SPP_GVA + SPP_GPA)

#define TEST_ASSERT_ERRNO(call, err)						\
do {										\
	int __ret = (call);							\
	int __errno = errno;							\
	int __err = (err);							\
										\
	TEST_ASSERT(__ret == -1 && __errno == __err,				\
		    "%s: expected errno %d (%s), got ret %d errno %d (%s)",	\
		    #call, __err, strerror(__err), __ret, __errno,		\
		    strerror(__errno));						\
} while (0)

/* KVM_CHECK_EXTENSION(KVM_CAP_X86_SPP), read in main(). */
static uint32_t spp_cap;

/*
 * Guest write primitives.  The faulting instruction of each is bracketed by
 * <name>_insn and <name>_end so that the host knows its address and length.
 * Fixed registers give fixed encodings (checked in check_insns()):
 *
 *   spp_stN(dst, src)          store N bytes read from src to dst
 *   spp_stos{b,q}(dst, v, n)   rep stos of n bytes/quadwords, returns RCX
 *   spp_cmpxchg(dst, old, new) lock cmpxchg, returns RAX
 *   spp_xchg(dst, v)           xchg, returns the register operand
 *   spp_lock_add(dst, v)       lock add
 *   spp_push(rsp, v)           push v on a stack whose top is rsp, returns
 *                              RSP after the push
 */
asm(".pushsection .text\n"
"spp_st1:\n"
"	movq (%rsi), %rax\n"
"spp_st1_insn:\n"
"	movb %al, (%rdi)\n"
"spp_st1_end:\n"
"	ret\n"
"spp_st2:\n"
"	movq (%rsi), %rax\n"
"spp_st2_insn:\n"
"	movw %ax, (%rdi)\n"
"spp_st2_end:\n"
"	ret\n"
"spp_st4:\n"
"	movq (%rsi), %rax\n"
"spp_st4_insn:\n"
"	movl %eax, (%rdi)\n"
"spp_st4_end:\n"
"	ret\n"
"spp_st8:\n"
"	movq (%rsi), %rax\n"
"spp_st8_insn:\n"
"	movq %rax, (%rdi)\n"
"spp_st8_end:\n"
"	ret\n"
"spp_st16:\n"
"	movdqu (%rsi), %xmm0\n"
"spp_st16_insn:\n"
"	movdqu %xmm0, (%rdi)\n"
"spp_st16_end:\n"
"	ret\n"
"spp_stosb:\n"
"	movq %rsi, %rax\n"
"	movq %rdx, %rcx\n"
"spp_stosb_insn:\n"
"	rep stosb\n"
"spp_stosb_end:\n"
"	movq %rcx, %rax\n"
"	ret\n"
"spp_stosq:\n"
"	movq %rsi, %rax\n"
"	movq %rdx, %rcx\n"
"spp_stosq_insn:\n"
"	rep stosq\n"
"spp_stosq_end:\n"
"	movq %rcx, %rax\n"
"	ret\n"
"spp_cmpxchg:\n"
"	movq %rsi, %rax\n"
"spp_cmpxchg_insn:\n"
"	lock cmpxchgq %rdx, (%rdi)\n"
"spp_cmpxchg_end:\n"
"	ret\n"
"spp_cmpxchg8b:\n"
"	pushq %rbx\n"
"	movq %rdx, %rbx\n"
"	movq %rdx, %rcx\n"
"	shrq $32, %rcx\n"
"	movq %rsi, %rax\n"
"	movq %rsi, %rdx\n"
"	shrq $32, %rdx\n"
"spp_cmpxchg8b_insn:\n"
"	lock cmpxchg8b (%rdi)\n"
"spp_cmpxchg8b_end:\n"
"	shlq $32, %rdx\n"
"	movl %eax, %eax\n"
"	orq %rdx, %rax\n"
"	popq %rbx\n"
"	ret\n"
"spp_cmpxchg16b:\n"
"	pushq %rbx\n"
"	movq (%rdx), %rbx\n"
"	movq 8(%rdx), %rcx\n"
"	movq (%rsi), %rax\n"
"	movq 8(%rsi), %rdx\n"
"spp_cmpxchg16b_insn:\n"
"	lock cmpxchg16b (%rdi)\n"
"spp_cmpxchg16b_end:\n"
"	popq %rbx\n"
"	ret\n"
"spp_xchg:\n"
"spp_xchg_insn:\n"
"	xchgq %rsi, (%rdi)\n"
"spp_xchg_end:\n"
"	movq %rsi, %rax\n"
"	ret\n"
"spp_lock_add:\n"
"spp_lock_add_insn:\n"
"	lock addq %rsi, (%rdi)\n"
"spp_lock_add_end:\n"
"	ret\n"
"spp_push:\n"
"	movq %rsp, %rdx\n"
"	movq %rdi, %rsp\n"
"spp_push_insn:\n"
"	pushq %rsi\n"
"spp_push_end:\n"
"	movq %rsp, %rax\n"
"	movq %rdx, %rsp\n"
"	ret\n"
".popsection\n");

enum spp_op {
	OP_ST1, OP_ST2, OP_ST4, OP_ST8, OP_ST16,
	OP_STOSB, OP_STOSQ, OP_CMPXCHG, OP_XCHG, OP_LOCK_ADD, OP_PUSH,
	OP_CMPXCHG8B, OP_CMPXCHG16B, NR_OPS,
};

struct spp_insn {
	const char *name;
	const char *start;	/* address of the faulting instruction */
	const char *end;
	uint8_t len;		/* its encoding length, i.e. spp.insn_len */
	uint8_t size;		/* bytes written per access */
};

static const struct spp_insn spp_insns[NR_OPS] = {
	[OP_ST1]	= { "movb %al,(%rdi)",		spp_st1_insn,	spp_st1_end,	2, 1 },
	[OP_ST2]	= { "movw %ax,(%rdi)",		spp_st2_insn,	spp_st2_end,	3, 2 },
	[OP_ST4]	= { "movl %eax,(%rdi)",		spp_st4_insn,	spp_st4_end,	2, 4 },
	[OP_ST8]	= { "movq %rax,(%rdi)",		spp_st8_insn,	spp_st8_end,	3, 8 },
	[OP_ST16]	= { "movdqu %xmm0,(%rdi)",	spp_st16_insn,	spp_st16_end,	4, 16 },
	[OP_STOSB]	= { "rep stosb",		spp_stosb_insn,	spp_stosb_end,	2, 1 },
	[OP_STOSQ]	= { "rep stosq",		spp_stosq_insn,	spp_stosq_end,	3, 8 },
	[OP_CMPXCHG]	= { "lock cmpxchg %rdx,(%rdi)",	spp_cmpxchg_insn, spp_cmpxchg_end, 5, 8 },
	[OP_XCHG]	= { "xchg %rsi,(%rdi)",		spp_xchg_insn,	spp_xchg_end,	3, 8 },
	[OP_LOCK_ADD]	= { "lock add %rsi,(%rdi)",	spp_lock_add_insn, spp_lock_add_end, 4, 8 },
	[OP_PUSH]	= { "push %rsi",		spp_push_insn,	spp_push_end,	1, 8 },
	[OP_CMPXCHG8B]	= { "lock cmpxchg8b (%rdi)", spp_cmpxchg8b_insn,
			    spp_cmpxchg8b_end, 4, 8 },
	[OP_CMPXCHG16B]	= { "lock cmpxchg16b (%rdi)", spp_cmpxchg16b_insn,
			    spp_cmpxchg16b_end, 5, 16 },
};

/*
 * One guest write.  The host fills guest_steps[], copies it to the guest and
 * checks every KVM_EXIT_SPP against the step the guest is executing
 * (guest_cur_step).
 */
struct spp_step {
	uint8_t op;
	bool denied;
	uint64_t gva;		/* destination; OP_PUSH: RSP before the push */
	uint64_t a;		/* stos/xchg/add/push: value; cmpxchg: old */
	uint64_t b;		/* stos: count; cmpxchg: new; cmpxchg16b: old */
	uint8_t val[16];	/* data of OP_ST*; cmpxchg16b: new */
	uint64_t exp_gpa;	/* denied: expected spp.gpa */
	uint64_t exp_rcx;	/* denied rep stos: RCX and RDI at the exit */
	uint64_t exp_rdi;
};

static struct spp_step guest_steps[MAX_STEPS];
static int guest_nr_steps;
static int guest_cur_step;

/*
 * Flush the guest's TLB before each step.  A CPU checks sub-page permissions
 * on every write; Bochs 2.7 (the SPP CPU this test runs on) caches a write
 * permitted by SPP in its TLB for the whole 4 KiB page, so without a flush a
 * later write to a protected sub-page of the same page would not be checked.
 */
static void guest_flush_tlb(void)
{
	uint64_t cr3;

	asm volatile("mov %%cr3, %0\n\tmov %0, %%cr3" : "=r"(cr3) : : "memory");
}

static void guest_do_step(const struct spp_step *s)
{
	uint64_t cur, ret;

	guest_flush_tlb();

	switch (s->op) {
	case OP_ST1:
		spp_st1(s->gva, s->val);
		break;
	case OP_ST2:
		spp_st2(s->gva, s->val);
		break;
	case OP_ST4:
		spp_st4(s->gva, s->val);
		break;
	case OP_ST8:
		spp_st8(s->gva, s->val);
		break;
	case OP_ST16:
		spp_st16(s->gva, s->val);
		break;
	case OP_STOSB:
		ret = spp_stosb(s->gva, s->a, s->b);
		GUEST_ASSERT_EQ(ret, s->denied ? s->exp_rcx : 0);
		break;
	case OP_STOSQ:
		ret = spp_stosq(s->gva, s->a, s->b);
		GUEST_ASSERT_EQ(ret, s->denied ? s->exp_rcx : 0);
		break;
	case OP_CMPXCHG:
		cur = READ_ONCE(*(uint64_t *)s->gva);
		ret = spp_cmpxchg(s->gva, s->a, s->b);
		/* A skipped cmpxchg leaves RAX = old. */
		GUEST_ASSERT_EQ(ret, s->denied ? s->a : cur);
		break;
	case OP_XCHG:
		cur = READ_ONCE(*(uint64_t *)s->gva);
		ret = spp_xchg(s->gva, s->a);
		GUEST_ASSERT_EQ(ret, s->denied ? s->a : cur);
		break;
	case OP_LOCK_ADD:
		spp_lock_add(s->gva, s->a);
		break;
	case OP_CMPXCHG8B:
		cur = READ_ONCE(*(uint64_t *)s->gva);
		ret = spp_cmpxchg8b(s->gva, s->a, s->b);
		GUEST_ASSERT_EQ(ret, s->denied ? s->a : cur);
		break;
	case OP_CMPXCHG16B: {
		uint64_t old[2] = { s->a, s->b };

		cur = READ_ONCE(*(uint64_t *)s->gva);
		ret = spp_cmpxchg16b(s->gva, old, (const uint64_t *)s->val);
		GUEST_ASSERT_EQ(ret, s->denied ? s->a : cur);
		break;
	}
	case OP_PUSH:
		ret = spp_push(s->gva, s->a);
		GUEST_ASSERT_EQ(ret, s->denied ? s->gva : s->gva - 8);
		break;
	default:
		GUEST_FAIL("bad op %u", s->op);
	}
}

static void guest_run_steps(void)
{
	int i;

	for (;;) {
		for (i = 0; i < READ_ONCE(guest_nr_steps); i++) {
			WRITE_ONCE(guest_cur_step, i);
			guest_do_step(&guest_steps[i]);
		}
		GUEST_DONE();
	}
}

#define RETRY_OFF1	64
#define RETRY_OFF2	(2 * KVM_SUBPAGE_SIZE + 8)
#define RETRY_VAL1	0x8877665544332211ULL
#define RETRY_VAL2	0xf1e2d3c4b5a69788ULL

static void guest_retry(void)
{
	uint64_t v = RETRY_VAL1;

	/* The page is not protected yet: KVM may map it writable. */
	spp_st8(SPP_GVA + RETRY_OFF1, &v);
	GUEST_SYNC(1);

	/* Sub-page 2 is protected now; the host retries this store. */
	v = RETRY_VAL2;
	spp_st8(SPP_GVA + RETRY_OFF2, &v);
	GUEST_SYNC(2);
	GUEST_DONE();
}

/* Host side helpers. */

static int __spp_set(struct kvm_vm *vm, uint64_t gfn, uint32_t npages,
		     uint32_t flags, const uint32_t *map)
{
	struct kvm_subpage_access sa = {
		.base_gfn = gfn,
		.npages = npages,
		.flags = flags,
		.access_map = (uint64_t)(uintptr_t)map,
	};

	return __vm_ioctl(vm, KVM_SUBPAGES_SET_ACCESS, &sa);
}

static int __spp_get(struct kvm_vm *vm, uint64_t gfn, uint32_t npages,
		     uint32_t flags, uint32_t *map)
{
	struct kvm_subpage_access sa = {
		.base_gfn = gfn,
		.npages = npages,
		.flags = flags,
		.access_map = (uint64_t)(uintptr_t)map,
	};

	return __vm_ioctl(vm, KVM_SUBPAGES_GET_ACCESS, &sa);
}

static void spp_set(struct kvm_vm *vm, uint64_t gfn, uint32_t npages,
		    const uint32_t *map)
{
	int r = __spp_set(vm, gfn, npages, 0, map);

	TEST_ASSERT_VM_VCPU_IOCTL(!r, KVM_SUBPAGES_SET_ACCESS, r, vm);
}

static void spp_get(struct kvm_vm *vm, uint64_t gfn, uint32_t npages,
		    uint32_t *map)
{
	int r = __spp_get(vm, gfn, npages, 0, map);

	TEST_ASSERT_VM_VCPU_IOCTL(!r, KVM_SUBPAGES_GET_ACCESS, r, vm);
}

static void spp_set1(struct kvm_vm *vm, uint64_t gfn, uint32_t vec)
{
	spp_set(vm, gfn, 1, &vec);
}

static uint32_t spp_get1(struct kvm_vm *vm, uint64_t gfn)
{
	uint32_t vec = 0xa5a5a5a5;

	spp_get(vm, gfn, 1, &vec);
	return vec;
}

/* GET [gfn, gfn + n) and compare with @exp. */
static void check_vectors(struct kvm_vm *vm, uint64_t gfn, uint32_t n,
			  const uint32_t *exp)
{
	uint32_t *got = malloc(n * sizeof(*got));
	uint32_t i;

	TEST_ASSERT(got, "malloc");
	memset(got, 0xa5, n * sizeof(*got));
	spp_get(vm, gfn, n, got);
	for (i = 0; i < n; i++)
		TEST_ASSERT(got[i] == exp[i],
			    "gfn 0x%lx: GET returned 0x%08x, expected 0x%08x",
			    gfn + i, got[i], exp[i]);
	free(got);
}

static void check_vectors_full(struct kvm_vm *vm, uint64_t gfn, uint32_t n)
{
	uint32_t *exp = malloc(n * sizeof(*exp));
	uint32_t i;

	TEST_ASSERT(exp, "malloc");
	for (i = 0; i < n; i++)
		exp[i] = FULL;
	check_vectors(vm, gfn, n, exp);
	free(exp);
}

static bool read_stat(int fd, const char *name, uint64_t *val)
{
	struct kvm_stats_header header;
	struct kvm_stats_desc *descs, *desc;
	bool found = false;
	int i;

	read_stats_header(fd, &header);
	descs = read_stats_descriptors(fd, &header);
	for (i = 0; i < header.num_desc; i++) {
		desc = get_stats_descriptor(descs, i, &header);
		if (strcmp(desc->name, name))
			continue;
		read_stat_data(fd, &header, desc, val, 1);
		found = true;
		break;
	}
	free(descs);
	return found;
}

static uint64_t vcpu_stat(struct kvm_vcpu *vcpu, const char *name)
{
	int fd = vcpu_get_stats_fd(vcpu);
	uint64_t val = 0;
	bool found = read_stat(fd, name, &val);

	close(fd);
	TEST_ASSERT(found, "vCPU stat '%s' not found", name);
	return val;
}

static void log_vm_stat(struct kvm_vm *vm, const char *name, const char *when)
{
	int fd = vm_get_stats_fd(vm);
	uint64_t val = 0;

	if (read_stat(fd, name, &val))
		ksft_print_msg("%s: VM stat %s = %lu\n", when, name, val);
	close(fd);
}

/* Whether the VM under test uses SPP hardware (set by __spp_vm_init()). */
static bool vm_spp_hw;

static bool spp_hw(void)
{
	return vm_spp_hw;
}

/* The hardware path reports its exits with flags 0. */
static void check_spp_flags(struct kvm_run *run)
{
	uint32_t want = spp_hw() ? 0 : KVM_SPP_EXIT_EMULATED;

	TEST_ASSERT(run->spp.flags == want, "spp.flags 0x%x, expected 0x%x",
		    run->spp.flags, want);
}

static void check_insns(void)
{
	int i;

	for (i = 0; i < NR_OPS; i++)
		TEST_ASSERT(spp_insns[i].end - spp_insns[i].start == spp_insns[i].len,
			    "%s is encoded in %ld bytes, expected %u",
			    spp_insns[i].name,
			    (long)(spp_insns[i].end - spp_insns[i].start),
			    spp_insns[i].len);
}

static void __noreturn unexpected_exit(struct kvm_vcpu *vcpu, const char *where)
{
	struct kvm_run *run = vcpu->run;
	struct kvm_regs regs;

	vcpu_regs_get(vcpu, &regs);
	if (run->exit_reason == KVM_EXIT_SPP)
		TEST_FAIL("%s: unexpected KVM_EXIT_SPP, gpa 0x%llx, rip 0x%llx",
			  where, run->spp.gpa, regs.rip);
	if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR)
		TEST_FAIL("%s: KVM_EXIT_INTERNAL_ERROR suberror %u, rip 0x%llx",
			  where, run->internal.suberror, regs.rip);
	TEST_FAIL("%s: unexpected exit reason %u (%s), rip 0x%llx", where,
		  run->exit_reason, exit_reason_str(run->exit_reason), regs.rip);
}

/*
 * Check a KVM_EXIT_SPP for a write by @op at @gpa: exit reason, spp.gpa,
 * spp.flags, spp.insn_len and RIP (still at the faulting instruction).
 */
static void check_spp_exit(struct kvm_vcpu *vcpu, enum spp_op op, uint64_t gpa,
			   struct kvm_regs *regs)
{
	const struct spp_insn *insn = &spp_insns[op];
	struct kvm_run *run = vcpu->run;

	if (run->exit_reason != KVM_EXIT_SPP)
		unexpected_exit(vcpu, "waiting for KVM_EXIT_SPP");
	vcpu_regs_get(vcpu, regs);
	TEST_ASSERT(run->spp.gpa == gpa, "%s: spp.gpa 0x%llx, expected 0x%lx",
		    insn->name, run->spp.gpa, gpa);
	check_spp_flags(run);
	TEST_ASSERT(run->spp.insn_len == insn->len,
		    "%s: spp.insn_len %u, expected %u", insn->name,
		    run->spp.insn_len, insn->len);
	TEST_ASSERT(regs->rip == (uint64_t)insn->start,
		    "%s: rip 0x%llx at KVM_EXIT_SPP, expected 0x%lx",
		    insn->name, regs->rip, (uint64_t)insn->start);
}

static void expect_ucall(struct kvm_vcpu *vcpu, uint64_t cmd, uint64_t stage)
{
	struct ucall uc;

	switch (get_ucall(vcpu, &uc)) {
	case UCALL_ABORT:
		REPORT_GUEST_ASSERT(uc);
		break;
	case UCALL_NONE:
		unexpected_exit(vcpu, "waiting for a ucall");
	default:
		TEST_ASSERT(uc.cmd == cmd, "ucall %lu, expected %lu", uc.cmd, cmd);
		if (cmd == UCALL_SYNC)
			TEST_ASSERT(uc.args[1] == stage,
				    "GUEST_SYNC(%lu), expected %lu",
				    uc.args[1], stage);
	}
}

FIXTURE(spp) {
	struct kvm_vm *vm;
	struct kvm_vcpu *vcpu;
	uint8_t *hva;		/* host mapping of the SPP memslot */
	uint8_t *expect;	/* expected contents of the SPP memslot */
	uint64_t size;
};

FIXTURE_SETUP(spp)
{
	check_insns();
}

FIXTURE_TEARDOWN(spp)
{
	free(self->expect);
	if (self->vm)
		kvm_vm_free(self->vm);
}

static uint8_t pattern(uint64_t off)
{
	/* Bit 7 clear, unlike every byte of the plain stores' data. */
	return (off * 31 + 7) & 0x7f;
}

static void fill_pattern(FIXTURE_DATA(spp) *self)
{
	uint64_t i;

	for (i = 0; i < self->size; i++)
		self->expect[i] = pattern(i);
	memcpy(self->hva, self->expect, self->size);
}

/*
 * VM with SPP enabled (before the vCPU is created) and an @npages memslot at
 * SPP_GPA, identity mapped, filled with pattern().
 */
static void __spp_vm_init(FIXTURE_DATA(spp) *self,
			  enum vm_mem_backing_src_type src, uint32_t npages,
			  uint32_t slot_flags, uint64_t enable_flags)
{
	self->vm = vm_create(1);
	vm_enable_cap(self->vm, KVM_CAP_X86_SPP, enable_flags);
	vm_spp_hw = (spp_cap & KVM_SPP_CAP_HW_ACCELERATED) &&
		    !(enable_flags & KVM_SPP_ENABLE_SOFTWARE);
	vm_userspace_mem_region_add(self->vm, src, SPP_GPA, SPP_SLOT, npages,
				    slot_flags);
	virt_map(self->vm, SPP_GVA, SPP_GPA, npages);
	self->vcpu = vm_vcpu_add(self->vm, 0, guest_run_steps);
	self->size = npages * PAGE_SIZE;
	self->hva = addr_gpa2hva(self->vm, SPP_GPA);
	self->expect = malloc(self->size);
	TEST_ASSERT(self->expect, "malloc");
	fill_pattern(self);
}

static void spp_vm_init(FIXTURE_DATA(spp) *self,
			enum vm_mem_backing_src_type src, uint32_t npages,
			uint32_t slot_flags)
{
	__spp_vm_init(self, src, npages, slot_flags, 0);
}

/*
 * Byte-exact semantics of KVM's own enforcement: every byte of a write must
 * land in a writable sub-page.  With SPP hardware, writes that cross a
 * sub-page boundary, fast string stores and pushes are checked by the CPU
 * with its own granularity (Bochs 2.7 checks the sub-page of the first byte
 * and caches a permitted write in its TLB for the whole page), so these
 * tests ask KVM for the software path, which also checks every write KVM
 * emulates on the hardware path.
 */
static void spp_vm_init_sw(FIXTURE_DATA(spp) *self, uint32_t npages)
{
	__spp_vm_init(self, VM_MEM_SRC_ANONYMOUS, npages, 0,
		      KVM_SPP_ENABLE_SOFTWARE);
}

static struct spp_step *add_step(enum spp_op op, uint64_t gva, bool denied,
				 uint64_t exp_gpa)
{
	int n = guest_nr_steps;
	struct spp_step *s;
	int i;

	TEST_ASSERT(n < MAX_STEPS, "too many steps");
	s = &guest_steps[guest_nr_steps++];
	memset(s, 0, sizeof(*s));
	s->op = op;
	s->gva = gva;
	s->denied = denied;
	s->exp_gpa = exp_gpa;
	/* Bit 7 set in every byte: differs from pattern(). */
	for (i = 0; i < sizeof(s->val); i++)
		s->val[i] = 0x80 | ((n * 29 + i * 7 + 3) & 0x7f);
	s->a = 0x8182838485868788ULL + n;
	s->b = 0x9192939495969798ULL + n;
	return s;
}

static struct spp_step *allow(enum spp_op op, uint64_t gva)
{
	return add_step(op, gva, false, 0);
}

static struct spp_step *deny(enum spp_op op, uint64_t gva, uint64_t exp_gpa)
{
	return add_step(op, gva, true, exp_gpa);
}

static struct spp_step *stos(enum spp_op op, uint64_t gva, uint64_t val,
			     uint64_t count)
{
	struct spp_step *s = allow(op, gva);

	s->a = val;
	s->b = count;
	return s;
}

/*
 * rep stos of @count elements at @gva, denied when it reaches @stop: the
 * iterations before are complete, RCX = remaining count, RDI = @stop, and
 * spp.gpa is @stop too (the first byte of the denied iteration).
 */
static void stos_denied(enum spp_op op, uint64_t gva, uint64_t val,
			uint64_t count, uint64_t stop)
{
	struct spp_step *s = stos(op, gva, val, count);
	uint64_t done = (stop - gva) / spp_insns[op].size;

	TEST_ASSERT(done < count, "bad stos step");
	s->denied = true;
	s->exp_gpa = GPA(stop);
	s->exp_rcx = count - done;
	s->exp_rdi = stop;
}

static const char *step_str(int i)
{
	static char buf[128];
	const struct spp_step *s = &guest_steps[i];

	snprintf(buf, sizeof(buf), "step %d (%s to gva 0x%lx, %s)", i,
		 spp_insns[s->op].name, s->gva, s->denied ? "denied" : "allowed");
	return buf;
}

static uint8_t *model(FIXTURE_DATA(spp) *self, uint64_t gva, uint64_t len)
{
	TEST_ASSERT(gva >= SPP_GVA && gva + len <= SPP_GVA + self->size,
		    "gva 0x%lx+%lu outside the SPP memslot", gva, len);
	return self->expect + (gva - SPP_GVA);
}

/* Apply the effect of every step, in order, to self->expect. */
static void apply_steps(FIXTURE_DATA(spp) *self)
{
	uint64_t k, n, v;
	uint8_t *p;
	int i;

	for (i = 0; i < guest_nr_steps; i++) {
		const struct spp_step *s = &guest_steps[i];
		uint8_t size = spp_insns[s->op].size;

		switch (s->op) {
		case OP_ST1:
		case OP_ST2:
		case OP_ST4:
		case OP_ST8:
		case OP_ST16:
			if (!s->denied)
				memcpy(model(self, s->gva, size), s->val, size);
			break;
		case OP_STOSB:
		case OP_STOSQ:
			n = s->denied ? (s->exp_rdi - s->gva) / size : s->b;
			p = model(self, s->gva, n * size);
			for (k = 0; k < n; k++)
				memcpy(p + k * size, &s->a, size);
			break;
		case OP_CMPXCHG:
		case OP_CMPXCHG8B:
			p = model(self, s->gva, 8);
			if (!s->denied && !memcmp(p, &s->a, 8))
				memcpy(p, &s->b, 8);
			break;
		case OP_CMPXCHG16B:
			p = model(self, s->gva, 16);
			if (!s->denied && !memcmp(p, &s->a, 8) &&
			    !memcmp(p + 8, &s->b, 8))
				memcpy(p, s->val, 16);
			break;
		case OP_XCHG:
			if (!s->denied)
				memcpy(model(self, s->gva, 8), &s->a, 8);
			break;
		case OP_LOCK_ADD:
			p = model(self, s->gva, 8);
			if (!s->denied) {
				memcpy(&v, p, 8);
				v += s->a;
				memcpy(p, &v, 8);
			}
			break;
		case OP_PUSH:
			if (!s->denied)
				memcpy(model(self, s->gva - 8, 8), &s->a, 8);
			break;
		default:
			TEST_FAIL("bad op %u", s->op);
		}
	}
}

/* The whole SPP memslot must match the model, byte for byte. */
static void check_memory(FIXTURE_DATA(spp) *self)
{
	uint64_t i;

	for (i = 0; i < self->size; i++)
		TEST_ASSERT(self->hva[i] == self->expect[i],
			    "gpa 0x%lx (page %lu sub-page %lu): 0x%02x, expected 0x%02x",
			    SPP_GPA + i, (unsigned long)(i / PAGE_SIZE),
			    (unsigned long)(i % PAGE_SIZE) / KVM_SUBPAGE_SIZE, self->hva[i],
			    self->expect[i]);
}

static uint64_t read64(FIXTURE_DATA(spp) *self, uint64_t gva)
{
	uint64_t v;

	memcpy(&v, model(self, gva, 8), 8);
	return v;
}

/*
 * Run guest_steps[] in the guest.  Every denied step must cause exactly one
 * KVM_EXIT_SPP, which is checked and skipped; allowed steps must not exit.
 * Then compare the memslot with the model.  Returns the number of SPP exits.
 */
static int run_steps(FIXTURE_DATA(spp) *self)
{
	struct kvm_vcpu *vcpu = self->vcpu;
	struct kvm_run *run = vcpu->run;
	int *cur = addr_gva2hva(self->vm, (vm_vaddr_t)&guest_cur_step);
	int i, ndenied = 0, exits = 0, last = -1;
	bool exited[MAX_STEPS] = {};
	struct kvm_regs regs;
	struct ucall uc;

	for (i = 0; i < guest_nr_steps; i++)
		ndenied += guest_steps[i].denied;
	sync_global_to_guest(self->vm, guest_steps);
	sync_global_to_guest(self->vm, guest_nr_steps);

	for (;;) {
		vcpu_run(vcpu);
		if (run->exit_reason == KVM_EXIT_SPP) {
			const struct spp_step *s;

			i = READ_ONCE(*cur);
			TEST_ASSERT(i > last && i < guest_nr_steps,
				    "KVM_EXIT_SPP (gpa 0x%llx) in step %d, previous exit in step %d",
				    run->spp.gpa, i, last);
			s = &guest_steps[i];
			TEST_ASSERT(s->denied, "%s: KVM_EXIT_SPP, spp.gpa 0x%llx",
				    step_str(i), run->spp.gpa);
			TEST_ASSERT(run->spp.gpa == s->exp_gpa,
				    "%s: spp.gpa 0x%llx, expected 0x%lx",
				    step_str(i), run->spp.gpa, s->exp_gpa);
			check_spp_exit(vcpu, s->op, s->exp_gpa, &regs);
			if (s->op == OP_STOSB || s->op == OP_STOSQ) {
				TEST_ASSERT(regs.rcx == s->exp_rcx,
					    "%s: rcx %llu, expected %lu",
					    step_str(i), regs.rcx, s->exp_rcx);
				TEST_ASSERT(regs.rdi == s->exp_rdi,
					    "%s: rdi 0x%llx, expected 0x%lx",
					    step_str(i), regs.rdi, s->exp_rdi);
			}
			if (s->op == OP_PUSH)
				TEST_ASSERT(regs.rsp == s->gva,
					    "%s: rsp 0x%llx, expected 0x%lx",
					    step_str(i), regs.rsp, s->gva);
			/* Skip the denied instruction. */
			regs.rip += run->spp.insn_len;
			vcpu_regs_set(vcpu, &regs);
			exited[i] = true;
			last = i;
			exits++;
			continue;
		}

		switch (get_ucall(vcpu, &uc)) {
		case UCALL_DONE:
			goto done;
		case UCALL_ABORT:
			REPORT_GUEST_ASSERT(uc);
			break;
		default:
			unexpected_exit(vcpu, "running steps");
		}
	}
done:
	for (i = 0; i < guest_nr_steps; i++)
		TEST_ASSERT(exited[i] == guest_steps[i].denied,
			    "%s: no KVM_EXIT_SPP", step_str(i));
	TEST_ASSERT(exits == ndenied, "%d SPP exits, expected %d", exits,
		    ndenied);
	apply_steps(self);
	check_memory(self);
	guest_nr_steps = 0;
	return exits;
}

/*
 * Whether the CPU offers EPT sub-page write permissions (allowed-1 bit 23 of
 * IA32_VMX_PROCBASED_CTLS2) and kvm_intel may use them: -1 if unknown.
 */
static int host_offers_spp(void)
{
	uint64_t ctls2;
	char param = 0;
	int fd;

	fd = open("/dev/cpu/0/msr", O_RDONLY);
	if (fd < 0)
		return -1;
	if (pread(fd, &ctls2, sizeof(ctls2), 0x48b) != sizeof(ctls2))
		ctls2 = 0;
	close(fd);
	if (!(ctls2 & (1ULL << (32 + 23))))
		return 0;

	fd = open("/sys/module/kvm_intel/parameters/spp", O_RDONLY);
	if (fd < 0)
		return -1;
	if (read(fd, &param, 1) != 1)
		param = 0;
	close(fd);
	return param == 'Y';
}

TEST(cap_and_enable)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_X86_SPP };
	uint32_t map[1] = { FULL };
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	int i;

	ksft_print_msg("KVM_CAP_X86_SPP = 0x%x: %u pages per call, %s path\n",
		       spp_cap, spp_cap & KVM_SPP_CAP_MAX_PAGES_MASK,
		       spp_cap & KVM_SPP_CAP_HW_ACCELERATED ? "hardware" : "software");
	TEST_ASSERT(spp_cap, "KVM_CAP_X86_SPP not reported");
	/* KVM uses SPP hardware exactly when the CPU offers it. */
	if (host_offers_spp() >= 0)
		TEST_ASSERT(!!(spp_cap & KVM_SPP_CAP_HW_ACCELERATED) == host_offers_spp(),
			    "KVM_SPP_CAP_HW_ACCELERATED %s, CPU %s SPP",
			    spp_cap & KVM_SPP_CAP_HW_ACCELERATED ? "set" : "clear",
			    host_offers_spp() ? "offers" : "does not offer");
	TEST_ASSERT_EQ(spp_cap & KVM_SPP_CAP_MAX_PAGES_MASK, SPP_MAX_PAGES);
	TEST_ASSERT(!(spp_cap & ~(KVM_SPP_CAP_MAX_PAGES_MASK | KVM_SPP_CAP_HW_ACCELERATED)),
		    "unknown bits in KVM_CAP_X86_SPP 0x%x", spp_cap);

	vm = vm_create_barebones();
	TEST_ASSERT_EQ(vm_check_cap(vm, KVM_CAP_X86_SPP), spp_cap);

	/* Not enabled: ENXIO, checked before anything else. */
	TEST_ASSERT_ERRNO(__spp_set(vm, SPP_GFN, 1, 0, map), ENXIO);
	TEST_ASSERT_ERRNO(__spp_get(vm, SPP_GFN, 1, 0, map), ENXIO);
	TEST_ASSERT_ERRNO(__spp_set(vm, SPP_GFN, 0, 1, NULL), ENXIO);
	TEST_ASSERT_ERRNO(__spp_get(vm, SPP_GFN, SPP_MAX_PAGES + 1, 0, NULL), ENXIO);

	/* cap.flags and cap.args[1..3] must be 0, args[0] only has one flag. */
	cap.flags = 1;
	TEST_ASSERT_ERRNO(__vm_ioctl(vm, KVM_ENABLE_CAP, &cap), EINVAL);
	cap.flags = 0;
	for (i = 0; i < 4; i++) {
		memset(cap.args, 0, sizeof(cap.args));
		cap.args[i] = i ? 1 : KVM_SPP_ENABLE_SOFTWARE << 1;
		TEST_ASSERT_ERRNO(__vm_ioctl(vm, KVM_ENABLE_CAP, &cap), EINVAL);
	}
	memset(cap.args, 0, sizeof(cap.args));
	/* The failed attempts did not enable it. */
	TEST_ASSERT_ERRNO(__spp_get(vm, SPP_GFN, 1, 0, map), ENXIO);

	TEST_ASSERT_EQ(__vm_ioctl(vm, KVM_ENABLE_CAP, &cap), 0);
	TEST_ASSERT_ERRNO(__vm_ioctl(vm, KVM_ENABLE_CAP, &cap), EEXIST);
	/*
	 * Enabled, and this VM has no memslot at all: permissions belong to
	 * gfns, not to memslots.
	 */
	check_vectors_full(vm, SPP_GFN, 1);
	map[0] = SPP_PROT(SP_BIT(9));
	spp_set(vm, SPP_GFN, 1, map);
	check_vectors(vm, SPP_GFN, 1, map);
	kvm_vm_free(vm);

	/* Too late once a vCPU exists. */
	vm = vm_create_with_one_vcpu(&vcpu, NULL);
	TEST_ASSERT_ERRNO(__vm_ioctl(vm, KVM_ENABLE_CAP, &cap), EBUSY);
	TEST_ASSERT_ERRNO(__spp_get(vm, SPP_GFN, 1, 0, map), ENXIO);
	kvm_vm_free(vm);
}

static uint32_t rnd_state = 0x2545f491;

static uint32_t rnd32(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 17;
	rnd_state ^= rnd_state << 5;
	return rnd_state;
}

TEST_F_TIMEOUT(spp, roundtrip, SPP_TIMEOUT)
{
	const uint32_t n = SPP_MAX_PAGES;
	uint32_t cur[2 * SPP_MAX_PAGES], upd[200], full[SPP_MAX_PAGES];
	struct kvm_vm *vm;
	uint32_t i;

	spp_vm_init(self, VM_MEM_SRC_ANONYMOUS, 2 * n, 0);
	vm = self->vm;

	/* Never set: unprotected. */
	check_vectors_full(vm, SPP_GFN, n);
	check_vectors_full(vm, SPP_GFN + n, n);

	for (i = 0; i < n; i++)
		cur[i] = rnd32();
	cur[0] = 0;
	cur[1] = FULL;
	cur[2] = 1;
	cur[3] = 0x80000000;
	cur[4] = SPP_PROT(SP_BIT(0));
	cur[5] = SPP_PROT(SP_BIT(31));
	cur[n - 2] = FULL;
	cur[n - 1] = 0;
	for (i = n; i < 2 * n; i++)
		cur[i] = FULL;

	spp_set(vm, SPP_GFN, n, cur);
	check_vectors(vm, SPP_GFN, n, cur);
	/* The pages after the SET range were never set. */
	check_vectors(vm, SPP_GFN + n, n, cur + n);
	/* A GET straddling set and never-set pages. */
	check_vectors(vm, SPP_GFN + n / 2, n, cur + n / 2);
	check_vectors(vm, SPP_GFN + 77, 1, cur + 77);

	/* Overwrite part of the range. */
	for (i = 0; i < ARRAY_SIZE(upd); i++)
		upd[i] = rnd32();
	upd[0] = FULL;
	upd[1] = 0;
	spp_set(vm, SPP_GFN + 100, ARRAY_SIZE(upd), upd);
	memcpy(cur + 100, upd, sizeof(upd));
	check_vectors(vm, SPP_GFN, n, cur);
	check_vectors(vm, SPP_GFN + n / 2, n, cur + n / 2);

	/* Unprotect half of it again. */
	for (i = 0; i < ARRAY_SIZE(full); i++)
		full[i] = FULL;
	spp_set(vm, SPP_GFN + n / 2, n, full);
	for (i = n / 2; i < n; i++)
		cur[i] = FULL;
	check_vectors(vm, SPP_GFN, n, cur);
	check_vectors(vm, SPP_GFN + n, n, cur + n);
}

/* SET must fail with @err and change nothing; GET must fail with @err. */
static void expect_set_fails(struct kvm_vm *vm, uint64_t gfn, uint32_t npages,
			     uint32_t flags, const uint32_t *map, int err,
			     const uint32_t *old)
{
	TEST_ASSERT_ERRNO(__spp_set(vm, gfn, npages, flags, map), err);
	check_vectors(vm, SPP_GFN, SPP_NPAGES, old);
}

static void expect_fails(struct kvm_vm *vm, uint64_t gfn, uint32_t npages,
			 uint32_t flags, uint32_t *map, int err,
			 const uint32_t *old)
{
	expect_set_fails(vm, gfn, npages, flags, map, err, old);
	TEST_ASSERT_ERRNO(__spp_get(vm, gfn, npages, flags, map), err);
}

TEST_F_TIMEOUT(spp, bad_input, SPP_TIMEOUT)
{
	uint32_t old[SPP_NPAGES], buf[SPP_MAX_PAGES + 1];
	uint32_t *bad = (uint32_t *)1;
	uint32_t *kaddr = (uint32_t *)0xffff880000000000ULL;
	long pgsz = getpagesize();
	uint32_t *edge;
	struct kvm_vm *vm;
	uint8_t *mem;
	int i;

	spp_vm_init(self, VM_MEM_SRC_ANONYMOUS, SPP_NPAGES, 0);
	vm = self->vm;
	for (i = 0; i < SPP_NPAGES; i++)
		old[i] = 0xf0f0f0f0U >> i;
	old[SPP_NPAGES - 1] = FULL;
	spp_set(vm, SPP_GFN, SPP_NPAGES, old);
	check_vectors(vm, SPP_GFN, SPP_NPAGES, old);
	for (i = 0; i < ARRAY_SIZE(buf); i++)
		buf[i] = 0x12345678 + i;

	/* EINVAL: flags != 0. */
	expect_fails(vm, SPP_GFN, 1, 1, buf, EINVAL, old);
	expect_fails(vm, SPP_GFN, 1, 0x80000000, buf, EINVAL, old);
	/* EINVAL: npages == 0. */
	expect_fails(vm, SPP_GFN, 0, 0, buf, EINVAL, old);
	/* EINVAL: base_gfn + npages overflows. */
	expect_fails(vm, ~0ULL, 1, 0, buf, EINVAL, old);
	expect_fails(vm, ~0ULL - 1, 2, 0, buf, EINVAL, old);
	expect_fails(vm, ~0ULL - (SPP_MAX_PAGES - 1), SPP_MAX_PAGES, 0, buf,
		     EINVAL, old);
	/* EINVAL: beyond any possible guest gfn (52-bit physical addresses). */
	expect_fails(vm, 1ULL << 50, 1, 0, buf, EINVAL, old);
	/* E2BIG: more than 512 pages. */
	expect_fails(vm, SPP_GFN, SPP_MAX_PAGES + 1, 0, buf, E2BIG, old);

	/*
	 * Ranges that memslots cover partly or not at all are fine: GET reads
	 * "unprotected" where nothing was set, and SET stores the vectors.
	 */
	check_vectors_full(vm, SPP_GFN + SPP_NPAGES, 4);
	check_vectors_full(vm, SPP_GFN - 4, 4);
	spp_set(vm, SPP_GFN + SPP_NPAGES - 1, 3, buf);
	check_vectors(vm, SPP_GFN + SPP_NPAGES - 1, 3, buf);
	spp_set(vm, SPP_GFN + SPP_NPAGES - 1, 1, old + SPP_NPAGES - 1);
	check_vectors(vm, SPP_GFN, SPP_NPAGES, old);

	/* EFAULT: bad access_map pointers. */
	expect_fails(vm, SPP_GFN, 1, 0, bad, EFAULT, old);
	expect_fails(vm, SPP_GFN, SPP_NPAGES, 0, kaddr, EFAULT, old);

	mem = mmap(NULL, 2 * pgsz, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	TEST_ASSERT(mem != MAP_FAILED, "mmap");
	/* The first 4 entries are in the first page, the rest in the second. */
	edge = (uint32_t *)(mem + pgsz) - 4;
	for (i = 0; i < 4; i++)
		edge[i] = 0x11111111 * (i + 1);

	/* Second page unreadable: SET fails and changes nothing. */
	TEST_ASSERT_EQ(mprotect(mem + pgsz, pgsz, PROT_NONE), 0);
	expect_fails(vm, SPP_GFN, SPP_NPAGES, 0, edge, EFAULT, old);
	expect_fails(vm, SPP_GFN, 1, 0, (uint32_t *)(mem + pgsz), EFAULT, old);

	/* Second page read-only: fine for SET, EFAULT for GET. */
	TEST_ASSERT_EQ(mprotect(mem + pgsz, pgsz, PROT_READ | PROT_WRITE), 0);
	memcpy(mem + pgsz, old, sizeof(old));
	TEST_ASSERT_EQ(mprotect(mem + pgsz, pgsz, PROT_READ), 0);
	spp_set(vm, SPP_GFN, SPP_NPAGES, (uint32_t *)(mem + pgsz));
	check_vectors(vm, SPP_GFN, SPP_NPAGES, old);
	TEST_ASSERT_ERRNO(__spp_get(vm, SPP_GFN, SPP_NPAGES, 0, edge), EFAULT);
	TEST_ASSERT_ERRNO(__spp_get(vm, SPP_GFN, 1, 0, (uint32_t *)(mem + pgsz)),
			  EFAULT);
	munmap(mem, 2 * pgsz);

	/* The checks are done in the order of the errno table. */
	expect_set_fails(vm, SPP_GFN, SPP_MAX_PAGES + 1, 1, buf, EINVAL, old);
	expect_set_fails(vm, ~0ULL, SPP_MAX_PAGES + 1, 0, buf, EINVAL, old);
	expect_set_fails(vm, SPP_GFN, 0xffff, 0, bad, E2BIG, old);
	expect_set_fails(vm, SPP_GFN + SPP_NPAGES, 1, 0, bad, EFAULT, old);

	check_vectors(vm, SPP_GFN, SPP_NPAGES, old);
}

/*
 * A VM that can have private memory cannot use SPP: KVM cannot emulate
 * writes to private memory, and any gfn can turn private at run time.
 */
TEST(guest_memfd)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_X86_SPP };
	uint32_t map[1] = { 0 };
	struct kvm_vm *vm;

	if (!(kvm_check_cap(KVM_CAP_VM_TYPES) & BIT(KVM_X86_SW_PROTECTED_VM)))
		SKIP(return, "KVM_X86_SW_PROTECTED_VM not supported");

	vm = vm_create_barebones_type(KVM_X86_SW_PROTECTED_VM);
	TEST_ASSERT_ERRNO(__vm_ioctl(vm, KVM_ENABLE_CAP, &cap), EINVAL);
	TEST_ASSERT_ERRNO(__spp_set(vm, SPP_GFN, 1, 0, map), ENXIO);
	TEST_ASSERT_ERRNO(__spp_get(vm, SPP_GFN, 1, 0, map), ENXIO);
	kvm_vm_free(vm);
}

TEST_F_TIMEOUT(spp, write_sizes, SPP_TIMEOUT)
{
	static const uint8_t ops[] = { OP_ST1, OP_ST2, OP_ST4, OP_ST8, OP_ST16 };
	/* Disjoint, mostly unaligned offsets inside the sub-page. */
	static const uint8_t offs[] = { 3, 5, 10, 19, 37 };
	const uint32_t vec = 0x5a3cc3a5;
	int sp, k, allowed = 0, denied = 0;
	uint64_t gva;

	spp_vm_init(self, VM_MEM_SRC_ANONYMOUS, SPP_NPAGES, 0);
	spp_set1(self->vm, SPP_GFN, vec);

	for (sp = 0; sp < SUBPAGES; sp++) {
		for (k = 0; k < ARRAY_SIZE(ops); k++) {
			gva = SP(0, sp) + offs[k];
			if (vec & SP_BIT(sp)) {
				allow(ops[k], gva);
				allowed++;
			} else {
				deny(ops[k], gva, GPA(gva));
				denied++;
			}
		}
	}

	TEST_ASSERT_EQ(run_steps(self), denied);
	TEST_ASSERT_EQ(vcpu_stat(self->vcpu, "spp_exits"), denied);
	/* With SPP hardware only the first touch of the page is emulated. */
	if (spp_hw())
		TEST_ASSERT(vcpu_stat(self->vcpu, "spp_emulated_writes") <= 1,
			    "spp_emulated_writes %lu with SPP hardware",
			    vcpu_stat(self->vcpu, "spp_emulated_writes"));
	else
		TEST_ASSERT_EQ(vcpu_stat(self->vcpu, "spp_emulated_writes"),
			       allowed);
	TEST_ASSERT_EQ(spp_get1(self->vm, SPP_GFN), vec);
}

TEST_F_TIMEOUT(spp, unaligned_and_crossing, SPP_TIMEOUT)
{
	const uint32_t vecs[SPP_NPAGES] = {
		[0] = SPP_PROT(SP_BIT(1)),
		[1] = SPP_PROT(SP_BIT(0)),
		[2] = SPP_PROT(SP_BIT(0)),
		[3] = SPP_PROT(SP_BIT(31)),
		[4] = SPP_PROT(SP_BIT(1)),
		[5] = SPP_PROT(SP_BIT(1)),
		[6] = FULL,
		[7] = SPP_PROT(SP_BIT(0)),
	};
	int exits;

	spp_vm_init_sw(self, SPP_NPAGES);
	spp_set(self->vm, SPP_GFN, SPP_NPAGES, vecs);

	/* Page 0: sub-page 1 protected; denied writes report their start. */
	deny(OP_ST2, PG(0) + 127, GPA(PG(0) + 127));	/* writable -> protected */
	deny(OP_ST4, PG(0) + 126, GPA(PG(0) + 126));
	deny(OP_ST8, PG(0) + 123, GPA(PG(0) + 123));
	deny(OP_ST16, PG(0) + 120, GPA(PG(0) + 120));
	deny(OP_ST4, PG(0) + 254, GPA(PG(0) + 254));	/* protected -> writable */
	deny(OP_ST8, PG(0) + 252, GPA(PG(0) + 252));
	allow(OP_ST4, PG(0) + 382);			/* writable -> writable */
	allow(OP_ST8, PG(0) + 509);
	allow(OP_ST16, PG(0) + 632);
	allow(OP_ST2, PG(0) + 767);

	/* Into the protected first sub-page of the next page: B's gpa. */
	deny(OP_ST8, PG(1) + 4092, GPA(PG(2)));
	deny(OP_ST16, PG(1) + 4088, GPA(PG(2)));
	deny(OP_ST4, PG(1) + 4094, GPA(PG(2)));
	/* Writable last sub-page into writable first sub-page. */
	allow(OP_ST4, PG(2) + 4094);
	/* Protected last sub-page: denied on the first page. */
	deny(OP_ST8, PG(3) + 4092, GPA(PG(3) + 4092));
	allow(OP_ST8, PG(4) + 4092);
	/* Into an unprotected page. */
	allow(OP_ST16, PG(5) + 4088);
	/* From an unprotected page into a protected sub-page. */
	deny(OP_ST8, PG(6) + 4092, GPA(PG(7)));
	deny(OP_ST2, PG(6) + 4095, GPA(PG(7)));

	exits = run_steps(self);
	TEST_ASSERT_EQ(vcpu_stat(self->vcpu, "spp_exits"), exits);
	/* 7 permitted writes touch protected pages (page crossings may count twice). */
	TEST_ASSERT(spp_hw() || vcpu_stat(self->vcpu, "spp_emulated_writes") >= 7,
		    "spp_emulated_writes %lu, expected at least 7",
		    vcpu_stat(self->vcpu, "spp_emulated_writes"));
	check_vectors(self->vm, SPP_GFN, SPP_NPAGES, vecs);
}

TEST_F_TIMEOUT(spp, rep_stos, SPP_TIMEOUT)
{
	const uint32_t vecs[4] = {
		SPP_PROT(SP_BIT(1) | SP_BIT(6) | SP_BIT(8)),
		SPP_PROT(SP_BIT(0)),
		FULL,
		SPP_PROT(SP_BIT(0)),
	};
	const uint64_t q = 0xc1c2c3c4c5c6c7c8ULL;
	int exits;

	spp_vm_init_sw(self, SPP_NPAGES);
	spp_set(self->vm, SPP_GFN, ARRAY_SIZE(vecs), vecs);

	/* 20 bytes written up to sub-page 1, then denied. */
	stos_denied(OP_STOSB, PG(0) + 108, 0xa5, 40, SP(0, 1));
	/* Sub-pages 2..4 are writable. */
	stos(OP_STOSB, PG(0) + 356, 0xb6, 200);
	/* Two quadwords, then denied at sub-page 6. */
	stos_denied(OP_STOSQ, SP(0, 6) - 16, q, 4, SP(0, 6));
	/* The second quadword straddles into sub-page 8: denied at its start. */
	stos_denied(OP_STOSQ, SP(0, 8) - 12, q + 1, 4, SP(0, 8) - 4);
	stos(OP_STOSQ, SP(0, 9) + 8, q + 2, 8);
	/* Across the page boundary into a protected sub-page. */
	stos_denied(OP_STOSB, PG(1) - 10, 0xc7, 20, PG(1));
	/* From an unprotected page into a protected sub-page. */
	stos_denied(OP_STOSB, PG(3) - 8, 0xd8, 16, PG(3));

	exits = run_steps(self);
	TEST_ASSERT_EQ(exits, 5);
	TEST_ASSERT_EQ(vcpu_stat(self->vcpu, "spp_exits"), exits);
}

TEST_F_TIMEOUT(spp, locked_rmw_and_push, SPP_TIMEOUT)
{
	struct spp_step *s;
	int exits, i;

	spp_vm_init_sw(self, SPP_NPAGES);
	spp_set1(self->vm, SPP_GFN, SPP_PROT(SP_BIT(1)));

	/* Protected sub-page: denied whether or not the compare matches. */
	s = deny(OP_CMPXCHG, SP(0, 1) + 8, GPA(SP(0, 1) + 8));
	s->a = ~read64(self, s->gva);
	s = deny(OP_CMPXCHG, SP(0, 1) + 16, GPA(SP(0, 1) + 16));
	s->a = read64(self, s->gva);
	/* Writable sub-page of the same page. */
	s = allow(OP_CMPXCHG, SP(0, 0) + 8);
	s->a = read64(self, s->gva);
	s = allow(OP_CMPXCHG, SP(0, 0) + 16);
	s->a = ~read64(self, s->gva);

	deny(OP_XCHG, SP(0, 1) + 24, GPA(SP(0, 1) + 24));
	allow(OP_XCHG, SP(0, 0) + 24);
	deny(OP_LOCK_ADD, SP(0, 1) + 32, GPA(SP(0, 1) + 32));
	allow(OP_LOCK_ADD, SP(0, 0) + 32);

	/* push writes the 8 bytes below RSP. */
	deny(OP_PUSH, SP(0, 2), GPA(SP(0, 2) - 8));
	allow(OP_PUSH, SP(0, 1));
	allow(OP_PUSH, SP(0, 2) + 64);
	deny(OP_PUSH, SP(0, 1) + 4, GPA(SP(0, 1) - 4));

	/*
	 * CMPXCHG8B and CMPXCHG16B, compare failing and succeeding (the
	 * sequence that once froze the emulated host, issue 7 item 9).
	 */
	s = deny(OP_CMPXCHG8B, SP(0, 1) + 40, GPA(SP(0, 1) + 40));
	s->a = read64(self, s->gva);
	s->b = 0x8b8b8b8b01010101ULL;
	s = allow(OP_CMPXCHG8B, SP(0, 0) + 40);
	s->a = ~read64(self, s->gva);
	s = allow(OP_CMPXCHG8B, SP(0, 0) + 40);
	s->a = read64(self, s->gva);
	s->b = 0x8b8b8b8b02020202ULL;
	for (i = 0; i < 3; i++) {
		uint64_t gva = i ? SP(0, 0) + 48 : SP(0, 1) + 48;

		s = i ? allow(OP_CMPXCHG16B, gva) :
			deny(OP_CMPXCHG16B, gva, GPA(gva));
		s->a = read64(self, gva);
		s->b = read64(self, gva + 8);
		if (i == 1)	/* the compare fails */
			s->b = ~s->b;
		memset(s->val, 0x16 + i, sizeof(s->val));
	}

	exits = run_steps(self);
	TEST_ASSERT_EQ(exits, 8);
	TEST_ASSERT_EQ(vcpu_stat(self->vcpu, "spp_exits"), exits);
}

TEST_F_TIMEOUT(spp, unprotect_then_write, SPP_TIMEOUT)
{
	struct kvm_vcpu *vcpu;
	struct kvm_regs regs;
	uint64_t v;

	spp_vm_init(self, VM_MEM_SRC_ANONYMOUS, SPP_NPAGES, 0);
	vcpu = self->vcpu;
	vcpu_arch_set_entry_point(vcpu, guest_retry);

	vcpu_run(vcpu);
	expect_ucall(vcpu, UCALL_SYNC, 1);
	v = RETRY_VAL1;
	memcpy(model(self, SPP_GVA + RETRY_OFF1, 8), &v, 8);
	check_memory(self);

	/* Protect sub-page 2 of a page the guest has already written. */
	spp_set1(self->vm, SPP_GFN, SPP_PROT(SP_BIT(2)));
	vcpu_run(vcpu);
	check_spp_exit(vcpu, OP_ST8, SPP_GPA + RETRY_OFF2, &regs);
	check_memory(self);

	/* Still protected (another vector): the retry is denied again. */
	spp_set1(self->vm, SPP_GFN, SPP_PROT(SP_BIT(2) | SP_BIT(5)));
	vcpu_run(vcpu);
	check_spp_exit(vcpu, OP_ST8, SPP_GPA + RETRY_OFF2, &regs);
	check_memory(self);

	/* Unprotect and re-enter without skipping: the store is retried. */
	spp_set1(self->vm, SPP_GFN, FULL);
	TEST_ASSERT_EQ(spp_get1(self->vm, SPP_GFN), FULL);
	vcpu_run(vcpu);
	expect_ucall(vcpu, UCALL_SYNC, 2);
	v = RETRY_VAL2;
	memcpy(model(self, SPP_GVA + RETRY_OFF2, 8), &v, 8);
	check_memory(self);

	vcpu_run(vcpu);
	expect_ucall(vcpu, UCALL_DONE, 0);
	TEST_ASSERT_EQ(vcpu_stat(vcpu, "spp_exits"), 2);
}

TEST_F_TIMEOUT(spp, huge_page, SPP_TIMEOUT)
{
	const int npages = PG_SIZE_2M / PAGE_SIZE, prot = 200;
	int p;

	if (!thp_configured() || get_trans_hugepagesz() != PG_SIZE_2M)
		SKIP(return, "2 MiB transparent huge pages not available");

	spp_vm_init(self, VM_MEM_SRC_ANONYMOUS_THP, npages, 0);

	/* Nothing protected: let KVM map the 2 MiB region. */
	for (p = 0; p < npages; p += 8) {
		allow(OP_ST8, PG(p) + 8);
		if (p == prot)
			allow(OP_ST8, PG(p + 1) + 8);
	}
	allow(OP_ST8, PG(prot - 1) + 8);
	TEST_ASSERT_EQ(run_steps(self), 0);
	log_vm_stat(self->vm, "pages_2m", "before SET");

	/*
	 * Protect sub-page 3 of one 4 KiB page.  Write sub-page 3 of pages
	 * before and after it first: a huge mapping rebuilt by these faults
	 * must not make the protected page writable.
	 */
	spp_set1(self->vm, SPP_GFN + prot, SPP_PROT(SP_BIT(3)));
	for (p = 0; p < npages; p += 8) {
		if (p == prot) {
			allow(OP_ST8, SP(p - 1, 3) + 16);
			allow(OP_ST8, SP(p + 1, 3) + 16);
			deny(OP_ST8, SP(p, 3) + 16, GPA(SP(p, 3) + 16));
			allow(OP_ST8, SP(p, 5) + 16);
		} else {
			allow(OP_ST8, SP(p, 3) + 16);
		}
	}
	TEST_ASSERT_EQ(run_steps(self), 1);
	log_vm_stat(self->vm, "pages_2m", "after SET");
	TEST_ASSERT_EQ(vcpu_stat(self->vcpu, "spp_exits"), 1);
	/* The page's first touch was the denied write; hardware does the rest. */
	TEST_ASSERT_EQ(vcpu_stat(self->vcpu, "spp_emulated_writes"),
		       spp_hw() ? 0 : 1);
}

#define COUNT_PERMITTED	64
#define COUNT_DENIED	8

/*
 * Even sub-pages writable, odd ones protected.  Touch the page, then write
 * writable sub-pages COUNT_PERMITTED times and protected ones COUNT_DENIED
 * times, with a GUEST_SYNC between the phases for the host to read stats.
 */
static void guest_exit_counts(void)
{
	uint8_t *page = (uint8_t *)SPP_GVA;
	int i;

	READ_ONCE(page[0]);
	WRITE_ONCE(page[8], 1);
	GUEST_SYNC(1);
	for (i = 0; i < COUNT_PERMITTED; i++)
		WRITE_ONCE(page[(i % 16) * 256 + 16], i);
	GUEST_SYNC(2);
	for (i = 0; i < COUNT_DENIED; i++)
		WRITE_ONCE(page[(i % 16) * 256 + 128 + 16], i);
	GUEST_SYNC(3);
	GUEST_DONE();
}

struct exit_stats {
	uint64_t pf, emul, spp_emul, spp_exits;
};

static void read_exit_stats(struct kvm_vcpu *vcpu, struct exit_stats *st)
{
	st->pf = vcpu_stat(vcpu, "pf_taken");
	st->emul = vcpu_stat(vcpu, "insn_emulation");
	st->spp_emul = vcpu_stat(vcpu, "spp_emulated_writes");
	st->spp_exits = vcpu_stat(vcpu, "spp_exits");
}

/*
 * What a permitted and a denied write cost, from KVM's own counters:
 * page faults taken, instructions emulated and SPP exits.  Timer and other
 * unrelated exits do not show up in these counters.
 */
TEST_F_TIMEOUT(spp, exit_counts, SPP_TIMEOUT)
{
	struct exit_stats s1, s2, s3;
	struct kvm_vcpu *vcpu;
	struct kvm_regs regs;
	int exits = 0;
	uint8_t *hva;
	int i;

	spp_vm_init(self, VM_MEM_SRC_ANONYMOUS, SPP_NPAGES, 0);
	vcpu = self->vcpu;
	vcpu_arch_set_entry_point(vcpu, guest_exit_counts);
	spp_set1(self->vm, SPP_GFN, 0x55555555);

	vcpu_run(vcpu);
	expect_ucall(vcpu, UCALL_SYNC, 1);
	read_exit_stats(vcpu, &s1);
	vcpu_run(vcpu);
	expect_ucall(vcpu, UCALL_SYNC, 2);
	read_exit_stats(vcpu, &s2);
	for (;;) {
		vcpu_run(vcpu);
		if (vcpu->run->exit_reason != KVM_EXIT_SPP)
			break;
		check_spp_flags(vcpu->run);
		TEST_ASSERT_EQ(vcpu->run->spp.gpa,
			       SPP_GPA + (exits % 16) * 256 + 128 + 16);
		vcpu_regs_get(vcpu, &regs);
		regs.rip += vcpu->run->spp.insn_len;
		vcpu_regs_set(vcpu, &regs);
		exits++;
	}
	expect_ucall(vcpu, UCALL_SYNC, 3);
	read_exit_stats(vcpu, &s3);

	ksft_print_msg("%s path: %d permitted writes: %lu page faults, %lu emulations; ",
		       spp_hw() ? "hardware" : "software", COUNT_PERMITTED,
		       s2.pf - s1.pf, s2.emul - s1.emul);
	printf("%d denied writes: %d SPP exits, %lu page faults, %lu emulations\n",
	       COUNT_DENIED, exits, s3.pf - s2.pf, s3.emul - s2.emul);

	/* Each denied write: exactly one exit, nothing written. */
	TEST_ASSERT_EQ(exits, COUNT_DENIED);
	TEST_ASSERT_EQ(s3.spp_exits - s2.spp_exits, COUNT_DENIED);
	hva = addr_gpa2hva(self->vm, SPP_GPA);
	for (i = 0; i < 16; i++) {
		TEST_ASSERT_EQ(hva[i * 256 + 16], (uint8_t)(COUNT_PERMITTED - 16 + i));
		TEST_ASSERT_EQ(hva[i * 256 + 128 + 16], pattern(i * 256 + 128 + 16));
	}

	/* The hardware path builds the SPP table at the CPU's first miss. */
	if (spp_hw())
		TEST_ASSERT(vcpu_stat(vcpu, "spp_sppt_misses") >= 1,
			    "no SPPT miss on the hardware path");
	else
		TEST_ASSERT_EQ(vcpu_stat(vcpu, "spp_sppt_misses"), 0);

	if (spp_hw()) {
		/* The point of SPP hardware: permitted writes cost nothing. */
		TEST_ASSERT_EQ(s2.pf - s1.pf, 0);
		TEST_ASSERT_EQ(s2.emul - s1.emul, 0);
		TEST_ASSERT_EQ(s2.spp_emul - s1.spp_emul, 0);
	} else {
		/* Software path: every permitted write traps and is emulated. */
		TEST_ASSERT_EQ(s2.spp_emul - s1.spp_emul, COUNT_PERMITTED);
		TEST_ASSERT_EQ(s2.pf - s1.pf, COUNT_PERMITTED);
	}
}

/* A field of /proc/meminfo, in KiB. */
static long meminfo_kb(const char *field)
{
	char line[128];
	long val = -1;
	FILE *f;

	f = fopen("/proc/meminfo", "r");
	TEST_ASSERT(f, "open /proc/meminfo");
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, strlen(field)) &&
		    line[strlen(field)] == ':')
			val = strtol(line + strlen(field) + 1, NULL, 10);
	fclose(f);
	TEST_ASSERT(val >= 0, "no %s in /proc/meminfo", field);
	return val;
}

#define COST_PAGES	(64 * SPP_MAX_PAGES)	/* 128 MiB of guest memory */

/* The VM's debugfs file spp_store: what SPP holds, counted by KVM. */
#define SHM_PERMIT_OFF	(0 * KVM_SUBPAGE_SIZE + 24)
#define SHM_DENY_OFF	(1 * KVM_SUBPAGE_SIZE + 40)
#define SHM_ROUNDS	8

/* Each round: one permitted and one denied store to the protected page. */
static void guest_shmem(void)
{
	uint64_t round;

	for (round = 1; round <= SHM_ROUNDS; round++) {
		WRITE_ONCE(*(uint64_t *)(SPP_GVA + SHM_PERMIT_OFF),
			   0x5a5a000000000000ULL | round);
		/* Bochs 2.7 caches a permitted write for the whole page. */
		guest_flush_tlb();
		WRITE_ONCE(*(uint64_t *)(SPP_GVA + SHM_DENY_OFF), round);
		GUEST_SYNC(round);
	}
	GUEST_DONE();
}

static void print_eptad(void)
{
	char v = '-';
	int fd = -1;

	if (host_cpu_is_intel)
		fd = open("/sys/module/kvm_intel/parameters/eptad", O_RDONLY);
	if (fd >= 0) {
		TEST_ASSERT_EQ(read(fd, &v, 1), 1);
		close(fd);
	}
	ksft_print_msg("%s path, kvm_intel.eptad=%c\n",
		       spp_hw() ? "hardware" : "software", v);
}

/*
 * Shared memory behind a protected page: the guest's permitted writes
 * (written by the CPU through an armed leaf on the hardware path) must be
 * in the page the VMM shares, and stay there when the host zaps the
 * mapping (MADV_DONTNEED on the VMM's mapping: the MMU notifier zaps the
 * SPTE, and with it the dirty state KVM hands to the page).  When the host
 * punches the page out of the file, KVM must drop its leaf: the next write
 * goes to the new page, not to the freed one.  Denied writes exit every
 * round, before and after.  Round 6 onwards nothing changes on the host:
 * on the hardware path, the permitted write then costs no page fault (the
 * leaf was re-armed), only the denied one does.
 */
TEST_F_TIMEOUT(spp, shmem_zap, SPP_TIMEOUT)
{
	struct userspace_mem_region *region;
	uint64_t round, v, pf5 = 0, pf8;
	struct kvm_vcpu *vcpu;
	struct kvm_regs regs;
	off_t off;

	spp_vm_init(self, VM_MEM_SRC_SHMEM, SPP_NPAGES, 0);
	vcpu = self->vcpu;
	vcpu_arch_set_entry_point(vcpu, guest_shmem);
	region = memslot2region(self->vm, SPP_SLOT);
	TEST_ASSERT(region->fd >= 0, "shmem memslot without a file");
	off = (uint8_t *)region->host_mem - (uint8_t *)region->mmap_start;
	spp_set1(self->vm, SPP_GFN, SPP_PROT(SP_BIT(1)));
	print_eptad();

	for (round = 1; round <= SHM_ROUNDS; round++) {
		vcpu_run(vcpu);
		if (vcpu->run->exit_reason != KVM_EXIT_SPP)
			unexpected_exit(vcpu, "waiting for KVM_EXIT_SPP");
		check_spp_flags(vcpu->run);
		TEST_ASSERT_EQ(vcpu->run->spp.gpa, SPP_GPA + SHM_DENY_OFF);
		TEST_ASSERT(vcpu->run->spp.insn_len, "insn_len 0");
		vcpu_regs_get(vcpu, &regs);
		regs.rip += vcpu->run->spp.insn_len;
		vcpu_regs_set(vcpu, &regs);
		vcpu_run(vcpu);
		expect_ucall(vcpu, UCALL_SYNC, round);
		v = 0x5a5a000000000000ULL | round;
		memcpy(model(self, SPP_GVA + SHM_PERMIT_OFF, 8), &v, 8);
		check_memory(self);

		if (round == 2) {
			/* Zap: the data stays in the file's page. */
			TEST_ASSERT_EQ(madvise(self->hva, self->size,
					       MADV_DONTNEED), 0);
			check_memory(self);
		} else if (round == 3) {
			/* Free the page: it reads back as zeroes. */
			TEST_ASSERT_EQ(fallocate(region->fd,
						 FALLOC_FL_PUNCH_HOLE |
						 FALLOC_FL_KEEP_SIZE,
						 off, PAGE_SIZE), 0);
			memset(model(self, SPP_GVA, PAGE_SIZE), 0, PAGE_SIZE);
			check_memory(self);
		} else if (round == 5) {
			pf5 = vcpu_stat(vcpu, "pf_taken");
		}
	}
	vcpu_run(vcpu);
	expect_ucall(vcpu, UCALL_DONE, 0);
	pf8 = vcpu_stat(vcpu, "pf_taken");
	ksft_print_msg("rounds 6-8: %lu page faults for 3 permitted and 3 denied writes\n",
		       pf8 - pf5);
	TEST_ASSERT_EQ(vcpu_stat(vcpu, "spp_exits"), SHM_ROUNDS);
	TEST_ASSERT_EQ(pf8 - pf5, spp_hw() ? 3 : 6);
}

struct spp_store {
	unsigned long pages, entries, blocks, vectors, nodes, bytes, sppt;
};

static void store_read(struct kvm_vm *vm, struct spp_store *st)
{
	static const char * const keys[] = {
		"protected_pages", "store_entries", "store_blocks",
		"store_vectors", "store_nodes", "store_bytes", "sppt_pages",
	};
	unsigned long *vals[] = {
		&st->pages, &st->entries, &st->blocks,
		&st->vectors, &st->nodes, &st->bytes, &st->sppt,
	};
	char path[128], key[32];
	unsigned long val;
	int found = 0, i;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/kernel/debug/kvm/%d-%d/spp_store",
		 getpid(), vm->fd);
	f = fopen(path, "r");
	TEST_ASSERT(f, "open %s", path);
	while (fscanf(f, "%31s %lu", key, &val) == 2) {
		for (i = 0; i < ARRAY_SIZE(keys); i++) {
			if (!strcmp(key, keys[i])) {
				*vals[i] = val;
				found++;
			}
		}
	}
	fclose(f);
	TEST_ASSERT_EQ(found, ARRAY_SIZE(keys));
	/* The formula: 256-byte maple tree nodes, 24-byte block headers. */
	TEST_ASSERT_EQ(st->bytes,
		       st->nodes * 256 + st->blocks * 24 + st->vectors * 4);
}

#define SPARSE_PAGES	10000
#define SPARSE_SPAN	(1ULL << 28)		/* gfns of 1 TiB */
#define BIG_SLOT	(SPP_SLOT + 1)
#define BIG_GPA		0x4000000000ULL		/* 256 GiB */
#define BIG_PAGES	(1ULL << 20)		/* 4 GiB, never touched */

/*
 * Memory the permission store costs: KVM counts what it holds (debugfs
 * spp_store: maple tree nodes, blocks of vectors), which does not depend
 * on the allocator (a slab delta is printed for reference; it differs
 * under KASAN).  Dense: COST_PAGES contiguous pages with distinct vectors,
 * one block per call.  Sparse: 10,000 pages spread over the gfns of 1 TiB,
 * one value entry each; no memslot is needed to protect them.  And blocks
 * that later calls leave mostly unused, or that mostly allow every write,
 * are split so that their memory goes.  And
 * nothing per guest page: protecting one page of a 4 GiB memslot for the
 * first time allocates no per-memslot array (KVM's write tracking would
 * vmalloc 2 bytes per page, 2 MiB here).
 */
TEST_F_TIMEOUT(spp, memory_cost, SPP_TIMEOUT)
{
	uint32_t *map = malloc(SPP_MAX_PAGES * sizeof(*map));
	uint64_t span, stride, gfn;
	long vm0, vm1, slab1, slab2;
	struct spp_store st0, st1;
	double per_page;
	uint32_t i, j;

	TEST_ASSERT(map, "malloc");
	/*
	 * The store is keyed by gfn: the memslot of the dense pages is there,
	 * but neither mapped in the guest nor touched (no vCPU runs).
	 */
	self->vm = vm_create(1);
	vm_enable_cap(self->vm, KVM_CAP_X86_SPP, 0);
	vm_spp_hw = spp_cap & KVM_SPP_CAP_HW_ACCELERATED;
	vm_userspace_mem_region_add(self->vm, VM_MEM_SRC_ANONYMOUS, SPP_GPA,
				    SPP_SLOT, COST_PAGES, 0);
	vm_userspace_mem_region_add(self->vm, VM_MEM_SRC_ANONYMOUS, BIG_GPA,
				    BIG_SLOT, BIG_PAGES, 0);

	vm0 = meminfo_kb("VmallocUsed");
	spp_set1(self->vm, (BIG_GPA >> PAGE_SHIFT) + 12345, 0);
	vm1 = meminfo_kb("VmallocUsed");
	spp_set1(self->vm, (BIG_GPA >> PAGE_SHIFT) + 12345, FULL);

	store_read(self->vm, &st0);
	TEST_ASSERT_EQ(st0.pages, 0);
	TEST_ASSERT_EQ(st0.entries, 0);
	slab1 = meminfo_kb("Slab");
	for (j = 0; j < COST_PAGES / SPP_MAX_PAGES; j++) {
		for (i = 0; i < SPP_MAX_PAGES; i++)
			map[i] = 0x0f0f0f0f ^ i;
		spp_set(self->vm, SPP_GFN + j * SPP_MAX_PAGES, SPP_MAX_PAGES, map);
	}
	slab2 = meminfo_kb("Slab");
	store_read(self->vm, &st1);
	per_page = (double)st1.bytes / COST_PAGES;

	ksft_print_msg("first protected page of a %llu-page memslot: %ld KiB vmalloc'ed\n",
		       BIG_PAGES, vm1 - vm0);
	ksft_print_msg(
		"%u dense protected pages: %lu nodes * 256 + %lu blocks * 24 + %lu vectors * 4 = %lu bytes = %.2f bytes/page, %lu SPPT pages (%s path; slab delta %ld KiB, for reference only)\n",
		COST_PAGES, st1.nodes, st1.blocks, st1.vectors, st1.bytes,
		per_page,
		st1.sppt, spp_hw() ? "hardware" : "software",
		slab2 - slab1);

	/* Counted, not measured: exact on every allocator configuration. */
	TEST_ASSERT_EQ(st1.pages, COST_PAGES);
	TEST_ASSERT_EQ(st1.entries, COST_PAGES / SPP_MAX_PAGES);
	TEST_ASSERT_EQ(st1.blocks, COST_PAGES / SPP_MAX_PAGES);
	TEST_ASSERT_EQ(st1.vectors, COST_PAGES);
	/* Dense protection: 4 bytes of vector and at most 5 of tree per page. */
	TEST_ASSERT(per_page > 4 && per_page <= 9, "%.2f bytes per protected page",
		    per_page);
	/* Unprotecting frees it all. */
	for (i = 0; i < SPP_MAX_PAGES; i++)
		map[i] = FULL;
	for (j = 0; j < COST_PAGES / SPP_MAX_PAGES; j++)
		spp_set(self->vm, SPP_GFN + j * SPP_MAX_PAGES, SPP_MAX_PAGES, map);
	store_read(self->vm, &st1);
	TEST_ASSERT_EQ(st1.pages, 0);
	TEST_ASSERT_EQ(st1.entries, 0);
	TEST_ASSERT_EQ(st1.blocks, 0);
	TEST_ASSERT_EQ(st1.vectors, 0);
	TEST_ASSERT(st1.nodes <= 1, "%lu nodes left in an empty store", st1.nodes);

	/* A block whose middle a later call unprotects: 2 small blocks left. */
	for (i = 0; i < SPP_MAX_PAGES; i++)
		map[i] = 0x0f0f0f0f ^ i;
	spp_set(self->vm, SPP_GFN, SPP_MAX_PAGES, map);
	for (i = 0; i < SPP_MAX_PAGES; i++)
		map[i] = FULL;
	spp_set(self->vm, SPP_GFN + 6, SPP_MAX_PAGES - 12, map);
	store_read(self->vm, &st1);
	TEST_ASSERT_EQ(st1.pages, 12);
	TEST_ASSERT_EQ(st1.entries, 2);
	TEST_ASSERT_EQ(st1.blocks, 2);
	TEST_ASSERT_EQ(st1.vectors, 12);
	for (i = 0; i < 6; i++)
		TEST_ASSERT_EQ(spp_get1(self->vm, SPP_GFN + i), 0x0f0f0f0f ^ i);
	TEST_ASSERT_EQ(spp_get1(self->vm, SPP_GFN + 6), FULL);
	TEST_ASSERT_EQ(spp_get1(self->vm, SPP_GFN + SPP_MAX_PAGES - 1),
		       0x0f0f0f0f ^ (SPP_MAX_PAGES - 1));
	/* A call that protects 2 pages of 512: 2 value entries, no block. */
	map[0] = 0x11111111;
	map[SPP_MAX_PAGES - 1] = 0x22222222;
	spp_set(self->vm, SPP_GFN, SPP_MAX_PAGES, map);
	store_read(self->vm, &st1);
	TEST_ASSERT_EQ(st1.pages, 2);
	TEST_ASSERT_EQ(st1.entries, 2);
	TEST_ASSERT_EQ(st1.blocks, 0);
	TEST_ASSERT_EQ(spp_get1(self->vm, SPP_GFN), 0x11111111);
	TEST_ASSERT_EQ(spp_get1(self->vm, SPP_GFN + 1), FULL);
	TEST_ASSERT_EQ(spp_get1(self->vm, SPP_GFN + SPP_MAX_PAGES - 1),
		       0x22222222);
	map[0] = FULL;
	map[SPP_MAX_PAGES - 1] = FULL;
	spp_set(self->vm, SPP_GFN, SPP_MAX_PAGES, map);

	/*
	 * The worst case: pages far apart, each alone in its group (a value
	 * entry, no block), at pseudo-random offsets over 1 TiB of gfns (or
	 * all the gfns the VM has, if fewer).
	 */
	span = SPARSE_SPAN;
	if (span > self->vm->max_gfn + 1)
		span = self->vm->max_gfn + 1;
	stride = span / SPARSE_PAGES;
	for (i = 0; i < SPARSE_PAGES; i++) {
		gfn = i * stride + (i * 2654435761u) % (stride - 1);
		spp_set1(self->vm, gfn, 0x0f0f0f0f);
	}
	store_read(self->vm, &st1);
	ksft_print_msg(
		"%u pages over %lu MiB of gfns: %lu nodes * 256 + %lu blocks = %lu bytes = %.1f bytes/page\n",
		SPARSE_PAGES, span >> 8, st1.nodes, st1.blocks, st1.bytes,
		(double)st1.bytes / SPARSE_PAGES);
	TEST_ASSERT_EQ(st1.pages, SPARSE_PAGES);
	TEST_ASSERT_EQ(st1.entries, SPARSE_PAGES);
	TEST_ASSERT_EQ(st1.blocks, 0);
	/* 10,000 protected pages of a 1 TiB guest: less than 1 MiB. */
	TEST_ASSERT(st1.bytes < (1 << 20), "%lu bytes for %u sparse pages",
		    st1.bytes, SPARSE_PAGES);
	/* Nothing per guest page (2 bytes per page would be 2048 KiB). */
	TEST_ASSERT(vm1 - vm0 < 256, "protecting one page vmalloc'ed %ld KiB",
		    vm1 - vm0);
	free(map);
}

#define L2_DONE_PORT	0x2000
#define L2_ALLOWED_OFF	(0 * KVM_SUBPAGE_SIZE + 40)
#define L2_DENIED_OFF	(1 * KVM_SUBPAGE_SIZE + 40)

/* L2: one write to a writable and one to a protected sub-page of L1's page. */
static void l2_guest_code(void)
{
	asm volatile("movb %%al, (%%rdi)"
		     : : "a"(0xa1), "D"(SPP_GVA + L2_ALLOWED_OFF) : "memory");
	asm volatile("movb %%al, (%%rdi)"
		     : : "a"(0xd1), "D"(SPP_GVA + L2_DENIED_OFF) : "memory");
	asm volatile("inb %%dx, %%al" : : "d"(L2_DONE_PORT) : "rax");
}

static void l1_guest_code(struct vmx_pages *vmx_pages)
{
	unsigned long l2_stack[64];

	GUEST_ASSERT(prepare_for_vmx_operation(vmx_pages));
	GUEST_ASSERT(load_vmcs(vmx_pages));
	prepare_vmcs(vmx_pages, l2_guest_code, &l2_stack[64]);
	GUEST_ASSERT(!vmlaunch());
	GUEST_FAIL("L2 exited to L1");
}

/*
 * Permissions protect L1's memory from its nested guest as well: L2 runs
 * without the SPP control (on SPP hardware too), so its writes to protected
 * pages are emulated by L0 and checked; a denied one exits to userspace
 * with L2's state, to be skipped like any other.
 */
TEST_F_TIMEOUT(spp, nested_l2, SPP_TIMEOUT)
{
	vm_vaddr_t vmx_pages_gva;
	struct kvm_vcpu *vcpu;
	struct kvm_regs regs;
	uint8_t *hva;

	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));

	spp_vm_init(self, VM_MEM_SRC_ANONYMOUS, SPP_NPAGES, 0);
	vcpu = self->vcpu;
	vcpu_arch_set_entry_point(vcpu, l1_guest_code);
	vcpu_alloc_vmx(self->vm, &vmx_pages_gva);
	vcpu_args_set(vcpu, 1, vmx_pages_gva);
	spp_set1(self->vm, SPP_GFN, SPP_PROT(SP_BIT(1)));

	vcpu_run(vcpu);
	if (vcpu->run->exit_reason != KVM_EXIT_SPP)
		unexpected_exit(vcpu, "waiting for L2's KVM_EXIT_SPP");
	TEST_ASSERT_EQ(vcpu->run->spp.gpa, SPP_GPA + L2_DENIED_OFF);
	check_spp_flags(vcpu->run);
	/* movb %al,(%rdi) is 88 07. */
	TEST_ASSERT_EQ(vcpu->run->spp.insn_len, 2);
	vcpu_regs_get(vcpu, &regs);
	regs.rip += vcpu->run->spp.insn_len;
	vcpu_regs_set(vcpu, &regs);

	vcpu_run(vcpu);
	if (vcpu->run->exit_reason == KVM_EXIT_IO &&
	    vcpu->run->io.port != L2_DONE_PORT) {
		struct ucall uc;

		if (get_ucall(vcpu, &uc) == UCALL_ABORT)
			REPORT_GUEST_ASSERT(uc);
	}
	TEST_ASSERT_KVM_EXIT_REASON(vcpu, KVM_EXIT_IO);
	TEST_ASSERT_EQ(vcpu->run->io.port, L2_DONE_PORT);

	hva = addr_gpa2hva(self->vm, SPP_GPA);
	TEST_ASSERT_EQ(hva[L2_ALLOWED_OFF], 0xa1);
	TEST_ASSERT_EQ(hva[L2_DENIED_OFF], pattern(L2_DENIED_OFF));
	TEST_ASSERT_EQ(vcpu_stat(vcpu, "spp_exits"), 1);
	TEST_ASSERT_EQ(vcpu_stat(vcpu, "spp_emulated_writes"), 1);
}

/*
 * A memslot MOVE that KVM rejects (here: to a gfn beyond the guest's
 * physical address width) changes nothing: the permissions stay, and so
 * does their enforcement.
 */
TEST_F_TIMEOUT(spp, failed_move_keeps_permissions, SPP_TIMEOUT)
{
	struct kvm_userspace_memory_region region;
	struct userspace_mem_region *r;
	int ret;

	spp_vm_init(self, VM_MEM_SRC_ANONYMOUS, SPP_NPAGES, 0);
	spp_set1(self->vm, SPP_GFN, SPP_PROT(SP_BIT(2)));

	r = memslot2region(self->vm, SPP_SLOT);
	region = (struct kvm_userspace_memory_region) {
		.slot = SPP_SLOT,
		.flags = r->region.flags,
		.guest_phys_addr = 1ULL << 52,
		.memory_size = r->region.memory_size,
		.userspace_addr = r->region.userspace_addr,
	};
	ret = __vm_ioctl(self->vm, KVM_SET_USER_MEMORY_REGION, &region);
	TEST_ASSERT(ret && errno == EINVAL, "MOVE beyond MAXPHYADDR: ret %d errno %d",
		    ret, errno);

	TEST_ASSERT_EQ(spp_get1(self->vm, SPP_GFN), SPP_PROT(SP_BIT(2)));
	allow(OP_ST8, SP(0, 1) + 8);
	deny(OP_ST8, SP(0, 2) + 8, GPA(SP(0, 2) + 8));
	TEST_ASSERT_EQ(run_steps(self), 1);
}

/*
 * Permissions belong to gfns, not to memslots (like memory attributes): a
 * VMM such as QEMU deletes and re-creates memslots at run time, and the
 * protection must not vanish with them.
 */
TEST_F_TIMEOUT(spp, memslot_delete_move, SPP_TIMEOUT)
{
	const uint32_t vecs[4] = {
		SPP_PROT(SP_BIT(0)), 0, 0x0000ffff, SPP_PROT(SP_BIT(31)),
	};
	const uint32_t later[2] = { SPP_PROT(SP_BIT(7)), FULL };
	struct kvm_vm *vm;

	spp_vm_init(self, VM_MEM_SRC_ANONYMOUS, SPP_NPAGES, 0);
	vm = self->vm;
	spp_set(vm, SPP_GFN, ARRAY_SIZE(vecs), vecs);
	deny(OP_ST8, SP(0, 0) + 8, GPA(SP(0, 0) + 8));
	deny(OP_ST8, SP(1, 5) + 8, GPA(SP(1, 5) + 8));
	TEST_ASSERT_EQ(run_steps(self), 2);

	/* Deleted: the vectors stay, and SET works on the hole. */
	vm_mem_region_delete(vm, SPP_SLOT);
	check_vectors(vm, SPP_GFN, ARRAY_SIZE(vecs), vecs);
	spp_set(vm, SPP_GFN + 4, ARRAY_SIZE(later), later);
	check_vectors(vm, SPP_GFN + 4, ARRAY_SIZE(later), later);

	/* Re-created: both the old and the new vectors apply at once. */
	vm_userspace_mem_region_add(vm, VM_MEM_SRC_ANONYMOUS, SPP_GPA, SPP_SLOT,
				    SPP_NPAGES, 0);
	self->hva = addr_gpa2hva(vm, SPP_GPA);
	fill_pattern(self);
	check_vectors(vm, SPP_GFN, ARRAY_SIZE(vecs), vecs);
	allow(OP_ST8, SP(0, 1) + 8);
	deny(OP_ST8, SP(0, 0) + 8, GPA(SP(0, 0) + 8));
	deny(OP_ST8, SP(1, 5) + 8, GPA(SP(1, 5) + 8));
	allow(OP_ST8, SP(2, 3) + 8);
	deny(OP_ST8, SP(2, 30) + 8, GPA(SP(2, 30) + 8));
	allow(OP_ST8, SP(4, 6) + 8);
	deny(OP_ST8, SP(4, 7) + 8, GPA(SP(4, 7) + 8));
	allow(OP_ST8, SP(5, 7) + 8);
	TEST_ASSERT_EQ(run_steps(self), 4);
	TEST_ASSERT_EQ(vcpu_stat(self->vcpu, "spp_exits"), 6);

	/* Moved: the vectors stay with the gfns, not with the memory. */
	vm_mem_region_move(vm, SPP_SLOT, SPP_GPA_MOVED);
	check_vectors(vm, SPP_GFN, ARRAY_SIZE(vecs), vecs);
	check_vectors_full(vm, SPP_GPA_MOVED >> PAGE_SHIFT, SPP_NPAGES);
	/* And back: enforced again. */
	vm_mem_region_move(vm, SPP_SLOT, SPP_GPA);
	allow(OP_ST8, SP(3, 30) + 16);
	deny(OP_ST8, SP(3, 31) + 16, GPA(SP(3, 31) + 16));
	deny(OP_ST8, SP(1, 0) + 16, GPA(SP(1, 0) + 16));
	TEST_ASSERT_EQ(run_steps(self), 2);
}

/*
 * Permissions set while no memslot maps the gfn forbid huge pages in the
 * memslot created later: a 2 MiB mapping of the region must not make the
 * protected 4 KiB page writable.
 */
TEST_F_TIMEOUT(spp, memslot_recreate_huge, SPP_TIMEOUT)
{
	const int npages = PG_SIZE_2M / PAGE_SIZE, prot = 300;
	struct kvm_vm *vm;
	int p;

	if (!thp_configured() || get_trans_hugepagesz() != PG_SIZE_2M)
		SKIP(return, "2 MiB transparent huge pages not available");

	spp_vm_init(self, VM_MEM_SRC_ANONYMOUS_THP, npages, 0);
	vm = self->vm;
	vm_mem_region_delete(vm, SPP_SLOT);
	spp_set1(vm, SPP_GFN + prot, SPP_PROT(SP_BIT(3)));
	vm_userspace_mem_region_add(vm, VM_MEM_SRC_ANONYMOUS_THP, SPP_GPA,
				    SPP_SLOT, npages, 0);
	self->hva = addr_gpa2hva(vm, SPP_GPA);
	fill_pattern(self);

	/* Fault the region in from its first page, then the rest. */
	for (p = 0; p < npages; p += 4)
		if (p != prot)
			allow(OP_ST8, SP(p, 3) + 16);
	deny(OP_ST8, SP(prot, 3) + 16, GPA(SP(prot, 3) + 16));
	allow(OP_ST8, SP(prot, 4) + 16);
	TEST_ASSERT_EQ(run_steps(self), 1);
	log_vm_stat(vm, "pages_2m", "after the writes");
}

TEST_F_TIMEOUT(spp, dirty_log, SPP_TIMEOUT)
{
	unsigned long bmap[1];

	spp_vm_init(self, VM_MEM_SRC_ANONYMOUS, SPP_NPAGES, KVM_MEM_LOG_DIRTY_PAGES);
	spp_set1(self->vm, SPP_GFN + 1, SPP_PROT(SP_BIT(0)));
	spp_set1(self->vm, SPP_GFN + 3, SPP_PROT(SP_BIT(0)));
	/* Start from a clean log. */
	kvm_vm_get_dirty_log(self->vm, SPP_SLOT, bmap);

	allow(OP_ST8, SP(1, 1) + 8);		/* permitted, emulated */
	deny(OP_ST8, SP(3, 0) + 8, GPA(SP(3, 0) + 8));
	allow(OP_ST8, PG(5) + 8);		/* unprotected page */
	TEST_ASSERT_EQ(run_steps(self), 1);

	bmap[0] = 0;
	kvm_vm_get_dirty_log(self->vm, SPP_SLOT, bmap);
	ksft_print_msg("dirty log 0x%lx (page 3: denied write only)\n", bmap[0]);
	TEST_ASSERT(bmap[0] & BIT(1), "permitted emulated write not logged: 0x%lx",
		    bmap[0]);
	TEST_ASSERT(bmap[0] & BIT(5), "write to unprotected page not logged: 0x%lx",
		    bmap[0]);
	TEST_ASSERT(!(bmap[0] & (BIT(0) | BIT(2) | BIT(4) | BIT(6) | BIT(7))),
		    "untouched pages logged: 0x%lx", bmap[0]);

	/* Again after the log was cleared (and the pages write-protected). */
	allow(OP_ST8, SP(1, 2) + 8);
	TEST_ASSERT_EQ(run_steps(self), 0);
	bmap[0] = 0;
	kvm_vm_get_dirty_log(self->vm, SPP_SLOT, bmap);
	TEST_ASSERT_EQ(bmap[0], BIT(1));
}

/*
 * Dirty logging switched on while a leaf is armed, then off again: while
 * logging, every permitted write is logged; afterwards, the hardware path
 * re-arms the leaf at the first write, and the CPU checks the rest.
 */
TEST_F_TIMEOUT(spp, dirty_log_toggle, SPP_TIMEOUT)
{
	const int n = 16;
	unsigned long bmap[1];
	struct kvm_vm *vm;
	uint64_t emul;
	int i;

	spp_vm_init(self, VM_MEM_SRC_ANONYMOUS, SPP_NPAGES, 0);
	vm = self->vm;
	spp_set1(vm, SPP_GFN + 2, SPP_PROT(SP_BIT(0)));
	allow(OP_ST8, SP(2, 1) + 8);	/* maps (and arms) the leaf */
	allow(OP_ST8, SP(2, 2) + 8);
	TEST_ASSERT_EQ(run_steps(self), 0);

	vm_mem_region_set_flags(vm, SPP_SLOT, KVM_MEM_LOG_DIRTY_PAGES);
	kvm_vm_get_dirty_log(vm, SPP_SLOT, bmap);
	allow(OP_ST8, SP(2, 3) + 8);
	deny(OP_ST8, SP(2, 0) + 8, GPA(SP(2, 0) + 8));
	TEST_ASSERT_EQ(run_steps(self), 1);
	bmap[0] = 0;
	kvm_vm_get_dirty_log(vm, SPP_SLOT, bmap);
	TEST_ASSERT(bmap[0] & BIT(2), "permitted write not logged: 0x%lx", bmap[0]);

	vm_mem_region_set_flags(vm, SPP_SLOT, 0);
	emul = vcpu_stat(self->vcpu, "spp_emulated_writes");
	for (i = 0; i < n; i++)
		allow(OP_ST8, SP(2, 1 + i) + 24);
	deny(OP_ST8, SP(2, 0) + 24, GPA(SP(2, 0) + 24));
	TEST_ASSERT_EQ(run_steps(self), 1);
	emul = vcpu_stat(self->vcpu, "spp_emulated_writes") - emul;
	ksft_print_msg("%d permitted writes after logging stopped: %lu emulated (%s path)\n",
		       n, emul, spp_hw() ? "hardware" : "software");
	TEST_ASSERT_EQ(emul, spp_hw() ? 0 : n);
}

int main(int argc, char *argv[])
{
	spp_cap = kvm_check_cap(KVM_CAP_X86_SPP);
	TEST_REQUIRE(spp_cap);

	return test_harness_run(argc, argv);
}
