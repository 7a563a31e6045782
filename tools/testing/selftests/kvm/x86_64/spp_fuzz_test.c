// SPDX-License-Identifier: GPL-2.0-only
/*
 * spp_fuzz_test: sub-page write protection (KVM_CAP_X86_SPP) against a
 * reference model, driven by a seeded random stream of operations.
 *
 *   spp_fuzz_test [-s SEED] [-n OPS]
 *
 * Without -s the seed comes from the clock; it is printed first, and
 * "spp_fuzz_test -s SEED -n OPS" replays the same run.
 *
 * The host keeps a model of 4 guest pages (their bytes) and of the
 * permission vectors of a window of gfns around them.  Each operation is one
 * of: KVM_SUBPAGES_SET_ACCESS of a random range with random vectors,
 * KVM_SUBPAGES_GET_ACCESS of a random range (compared with the model), a
 * memslot change (dirty logging on/off, delete and re-create), or a guest
 * write: mov of 1, 2, 4, 8 and 16 bytes, stos/movs of every element size
 * with DF 0 and 1, with and without rep (1 to 64 bytes), lock add, lock
 * xadd, lock cmpxchg (succeeding and failing), xchg, lock cmpxchg8b, push,
 * call, fxsave and fxsave64, at random offsets biased towards sub-page and
 * page boundaries.
 *
 * A guest write is a list of single writes ("units": one per iteration of
 * a string instruction).  Each unit is all-or-nothing.  On every exit the
 * host works out which units ran (RCX for rep), checks that those were
 * permitted and that the unit KVM stopped at is denied, checks spp.gpa,
 * spp.flags and insn_len, and compares all 4 pages byte by byte with the
 * model.  It then answers at random: KVM_SPP_ACTION_SKIP (the unit is
 * dropped), KVM_SPP_ACTION_ALLOW (it lands once), or retry after lifting
 * the protection.  At the end, the spp_exits statistic must equal the
 * number of exits seen.
 *
 * Software path: KVM checks every byte, so the model is exact.  Hardware
 * path (Bochs 2.7 tigerlake): the CPU checks the sub-page of the first byte
 * of a write on each page, so a unit that is denied byte-exactly but whose
 * first bytes are writable may go either way; its outcome is then read from
 * memory (all or nothing).  The guest invalidates its TLB entries before
 * each write on the hardware path only (Bochs caches permitted writes for
 * the whole page, see spp.rst).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"
#include "kvm_util.h"
#include "processor.h"
#include "ucall_common.h"

#include "spp_labels.h"

#define FZ_SLOT			10
#define FZ_GPA			0xc0000000UL	/* identity mapped */
#define FZ_GFN			(FZ_GPA >> PAGE_SHIFT)
#define FZ_NPAGES		4
#define FZ_BYTES		(FZ_NPAGES * PAGE_SIZE)
/* The model's permission window: 2 gfns on each side of the memslot. */
#define FZ_WIN_GFN		(FZ_GFN - 2)
#define FZ_WIN			(FZ_NPAGES + 4)
#define FULL			KVM_SUBPAGE_FULL_ACCESS
#define SUBPAGE			KVM_SUBPAGE_SIZE
#define FX_LEN			416	/* FXSAVE writes bytes 0-415 */
#define MAX_UNITS		64

enum fz_kind {
	FZ_MOV, FZ_MOVDQU, FZ_STOS, FZ_MOVS, FZ_ADD, FZ_XADD, FZ_CMPXCHG,
	FZ_XCHG, FZ_CX8, FZ_PUSH, FZ_CALL, FZ_FXSAVE, FZ_FXSAVE64, FZ_DONE,
};

static const char * const kind_name[] = {
	"mov", "movdqu", "stos", "movs", "lock add", "lock xadd",
	"lock cmpxchg", "xchg", "lock cmpxchg8b", "push", "call", "fxsave",
	"fxsave64", "done",
};

/* One guest write, as the guest reads it (copied in before each run). */
struct fz_op {
	uint32_t kind;
	uint32_t size;		/* operand or element size */
	uint32_t rep;		/* string: with a rep prefix */
	uint32_t df;		/* string: direction flag */
	uint64_t addr;		/* target (for push/call: the new top - 8) */
	uint64_t count;		/* string: RCX */
	uint64_t src;		/* movs: RSI */
	uint64_t val;		/* value, stos RAX, cmpxchg new value */
	uint64_t cmp;		/* cmpxchg: RAX; cmpxchg8b: EDX:EAX */
	uint64_t flush[2];	/* hardware path: pages to invalidate */
};

/* Not static: the guest re-reads it after each GUEST_SYNC. */
struct fz_op fop;
static bool guest_spp_hw;
static uint8_t fz_src[PAGE_SIZE] __aligned(64);
/* FXSAVE into 0x00- and 0xff-filled buffers: which bytes the CPU stores. */
static uint8_t fz_fx[512] __aligned(64);
static uint8_t fz_fx_ff[512] __aligned(64);


static noinline void guest_call(uint64_t top)
{
	asm volatile("mov %%rsp, %%r11\n\t"
		     "mov %0, %%rsp\n\t"
		     "call fz_call_ret\n\t"
		     ".global fz_call_ret\n"
		     "fz_call_ret:\n\t"
		     "mov %%r11, %%rsp"
		     : : "r"(top) : "r11", "memory");
}

static void guest_fill(void *p, uint8_t v)
{
	uint64_t d = (uint64_t)p, c = 512;

	asm volatile("rep stosb" : "+D"(d), "+c"(c) : "a"(v) : "memory");
}

static void guest_push(uint64_t top, uint64_t v)
{
	asm volatile("mov %%rsp, %%r11\n\t"
		     "mov %0, %%rsp\n\t"
		     "pushq %1\n\t"
		     "mov %%r11, %%rsp"
		     : : "r"(top), "r"(v) : "r11", "memory");
}

#define STR_OP(insn)							\
do {									\
	if (o->df)							\
		asm volatile("std\n\t" insn "\n\tcld"			\
			     : "+D"(d), "+S"(s), "+c"(c)		\
			     : "a"(o->val) : "memory");			\
	else								\
		asm volatile(insn					\
			     : "+D"(d), "+S"(s), "+c"(c)		\
			     : "a"(o->val) : "memory");			\
} while (0)

#define STR_SIZES(stem)							\
do {									\
	if (o->size == 1)						\
		STR_OP(stem "b");					\
	else if (o->size == 2)						\
		STR_OP(stem "w");					\
	else if (o->size == 4)						\
		STR_OP(stem "l");					\
	else								\
		STR_OP(stem "q");					\
} while (0)

static void guest_string(const struct fz_op *o)
{
	uint64_t d = o->addr, s = o->src, c = o->count;

	if (o->kind == FZ_STOS) {
		if (o->rep)
			STR_SIZES("rep stos");
		else
			STR_SIZES("stos");
	} else {
		if (o->rep)
			STR_SIZES("rep movs");
		else
			STR_SIZES("movs");
	}
}

#define RMW(insn, cons, ...)						\
do {									\
	if (o->size == 1)						\
		asm volatile(insn "b %b1, (%2)" : cons : __VA_ARGS__);	\
	else if (o->size == 2)						\
		asm volatile(insn "w %w1, (%2)" : cons : __VA_ARGS__);	\
	else if (o->size == 4)						\
		asm volatile(insn "l %k1, (%2)" : cons : __VA_ARGS__);	\
	else								\
		asm volatile(insn "q %1, (%2)" : cons : __VA_ARGS__);	\
} while (0)

static void guest_rmw(const struct fz_op *o)
{
	uint64_t a = o->addr, v = o->val, r = o->cmp;

	switch (o->kind) {
	case FZ_MOV:
		RMW("mov", "+a"(r), "q"(v), "r"(a) : "memory");
		break;
	case FZ_ADD:
		RMW("lock add", "+a"(r), "q"(v), "r"(a) : "memory");
		break;
	case FZ_XADD:
		RMW("lock xadd", "+q"(v), "0"(v), "r"(a) : "memory");
		break;
	case FZ_XCHG:
		RMW("xchg", "+q"(v), "0"(v), "r"(a) : "memory");
		break;
	case FZ_CMPXCHG:
		RMW("lock cmpxchg", "+a"(r), "q"(v), "r"(a) : "memory");
		break;
	}
}

static void guest_code(void)
{
	const struct fz_op *o = &fop;
	uint64_t lo, hi;

	for (;;) {
		barrier();
		if (READ_ONCE(o->kind) == FZ_DONE)
			GUEST_DONE();
		if (guest_spp_hw) {
			asm volatile("invlpg (%0)" : : "r"(o->flush[0]) : "memory");
			asm volatile("invlpg (%0)" : : "r"(o->flush[1]) : "memory");
		}
		switch (o->kind) {
		case FZ_MOVDQU:
			asm volatile("movdqu (%0), %%xmm0\n\t"
				     "movdqu %%xmm0, (%1)"
				     : : "r"(&o->val), "r"(o->addr)
				     : "xmm0", "memory");
			break;
		case FZ_STOS:
		case FZ_MOVS:
			guest_string(o);
			break;
		case FZ_CX8:
			lo = o->cmp;
			hi = o->cmp >> 32;
			asm volatile("lock cmpxchg8b (%2)"
				     : "+a"(lo), "+d"(hi)
				     : "r"(o->addr), "b"((uint32_t)o->val),
				       "c"((uint32_t)(o->val >> 32))
				     : "memory");
			break;
		case FZ_PUSH:
			guest_push(o->addr + 8, o->val);
			break;
		case FZ_CALL:
			guest_call(o->addr + 8);
			break;
		case FZ_FXSAVE:
			guest_fill(fz_fx, 0);
			guest_fill(fz_fx_ff, 0xff);
			asm volatile("fxsave (%0)" : : "r"(fz_fx) : "memory");
			asm volatile("fxsave (%0)" : : "r"(fz_fx_ff) : "memory");
			asm volatile("fxsave (%0)" : : "r"(o->addr) : "memory");
			break;
		case FZ_FXSAVE64:
			guest_fill(fz_fx, 0);
			guest_fill(fz_fx_ff, 0xff);
			asm volatile("fxsave64 (%0)" : : "r"(fz_fx) : "memory");
			asm volatile("fxsave64 (%0)" : : "r"(fz_fx_ff) : "memory");
			asm volatile("fxsave64 (%0)" : : "r"(o->addr) : "memory");
			break;
		default:
			guest_rmw(o);
			break;
		}
		GUEST_SYNC(0);
	}
}

/* The host side: random numbers, the model, the checks. */
static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* xorshift64* */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dULL;
}

static uint64_t rnd_below(uint64_t n)
{
	return rnd() % n;
}

struct unit {
	uint64_t gpa;
	uint32_t len;
	bool fx;		/* FXSAVE: FOP/FIP/FDP (bytes 6-23) are free */
	uint8_t data[FX_LEN];
	bool stored[FX_LEN];	/* FXSAVE: the bytes the CPU stores */
};

/*
 * What KVM checks and answers separately: each run of stored bytes (one
 * for all but FXSAVE), split at page boundaries.
 */
struct piece {
	uint64_t gpa;
	uint32_t off, len;
};

#define MAX_PIECES		32

static struct {
	uint64_t seed;
	int op;			/* index of the operation being checked */
	bool hw;
	/*
	 * The CPU checks (and makes) the writes: SPP hardware, and the memslot
	 * does not log dirty pages (then KVM emulates every write to a
	 * protected page, as on the software path).
	 */
	bool cpu_checks;
	uint8_t mem[FZ_BYTES];	/* expected bytes of the memslot */
	uint32_t vec[FZ_WIN];	/* expected vectors of the window */
	struct unit units[MAX_UNITS];
	int nr_units;
	/* SKIP/ALLOW answers given for the pieces of unit ans_unit. */
	int ans_unit, nr_ans;
	/* Hardware path: pages the current instruction wrote. */
	bool hw_wrote[FZ_NPAGES];
	uint8_t ans[MAX_PIECES];
	unsigned long exits, skips, allows, retries, sets, gets, slot_ops;
	unsigned long maybe_permitted, maybe_denied, units_done, multi_exits;
	unsigned long cpu_partial;
	unsigned long kinds[FZ_DONE];
} m;

#define FZ_ASSERT(cond, fmt, ...)					\
	TEST_ASSERT(cond, "seed %lu op %d (%s size %u rep %u df %u addr 0x%lx count %lu): " fmt \
		    "\n\treplay: spp_fuzz_test -s %lu -n %d",		\
		    m.seed, m.op, kind_name[fop.kind], fop.size, fop.rep, \
		    fop.df, fop.addr, fop.count, ##__VA_ARGS__, m.seed, m.op + 1)

static uint32_t vec_of(uint64_t gfn)
{
	if (gfn < FZ_WIN_GFN || gfn >= FZ_WIN_GFN + FZ_WIN)
		return FULL;
	return m.vec[gfn - FZ_WIN_GFN];
}

static bool byte_writable(uint64_t gpa)
{
	return vec_of(gpa >> PAGE_SHIFT) & (1U << ((gpa & (PAGE_SIZE - 1)) / SUBPAGE));
}

static int unit_pieces(const struct unit *u, struct piece *p)
{
	uint32_t i = 0, start;
	int n = 0;

	while (i < u->len) {
		if (!u->stored[i]) {
			i++;
			continue;
		}
		start = i++;
		while (i < u->len && u->stored[i] &&
		       ((u->gpa + i) & (PAGE_SIZE - 1)))
			i++;
		p[n].gpa = u->gpa + start;
		p[n].off = start;
		p[n++].len = i - start;
	}
	return n;
}

static bool piece_permitted(const struct piece *p)
{
	uint32_t i;

	for (i = 0; i < p->len; i++)
		if (!byte_writable(p->gpa + i))
			return false;
	return true;
}

/* Byte-exact verdict: what KVM's checks must say. */
static bool unit_permitted(const struct unit *u)
{
	struct piece p[MAX_PIECES];
	int i, n = unit_pieces(u, p);

	for (i = 0; i < n; i++)
		if (!piece_permitted(&p[i]))
			return false;
	return true;
}

/*
 * What a CPU that checks the first byte on each page may permit; and once
 * it permitted a write to a page, Bochs 2.7 permits the later writes of the
 * same instruction to that page (e.g. fast strings) without checking.
 */
static bool unit_maybe_permitted(const struct unit *u)
{
	uint64_t last = u->gpa + u->len - 1;
	int first = (u->gpa - FZ_GPA) >> PAGE_SHIFT;
	int end = (last - FZ_GPA) >> PAGE_SHIFT;

	if (!m.cpu_checks)
		return unit_permitted(u);
	if (m.hw_wrote[first] && m.hw_wrote[end])
		return true;
	if (!byte_writable(u->gpa))
		return false;
	return first == end || byte_writable(last & ~(PAGE_SIZE - 1));
}

/*
 * Whether the CPU itself may have stored byte @gpa of @u, without KVM: on a
 * page without protection; with SPP hardware, also on a page where it
 * permitted the first byte of @u (Bochs then permits the rest of the
 * instruction's writes to the page, see unit_maybe_permitted()).
 */
static bool cpu_may_store(const struct unit *u, uint64_t gpa)
{
	uint64_t page = gpa & ~(PAGE_SIZE - 1);

	if (vec_of(gpa >> PAGE_SHIFT) == FULL)
		return true;
	if (!m.cpu_checks)
		return false;
	return m.hw_wrote[(gpa - FZ_GPA) >> PAGE_SHIFT] ||
	       byte_writable(u->gpa > page ? u->gpa : page);
}

static void hw_wrote(const struct unit *u)
{
	m.hw_wrote[(u->gpa - FZ_GPA) >> PAGE_SHIFT] = true;
	m.hw_wrote[(u->gpa + u->len - 1 - FZ_GPA) >> PAGE_SHIFT] = true;
}

static uint8_t *mem_hva;

static void apply_bytes(const struct unit *u, uint32_t from, uint32_t len)
{
	uint64_t off = u->gpa - FZ_GPA;
	uint32_t i;

	for (i = from; i < from + len; i++)
		if (u->stored[i])
			m.mem[off + i] = (u->fx && i >= 6 && i < 24) ?
					 mem_hva[off + i] : u->data[i];
}

static void apply_unit(const struct unit *u)
{
	apply_bytes(u, 0, u->len);
	m.units_done++;
}

static void clear_answers(void)
{
	m.nr_ans = 0;
	m.ans_unit = -1;
	memset(m.ans, 0, sizeof(m.ans));
}

static void check_memory(const char *when)
{
	int i;

	if (!memcmp(m.mem, mem_hva, FZ_BYTES))
		return;
	for (i = 0; i < FZ_BYTES && m.mem[i] == mem_hva[i]; i++)
		;
	FZ_ASSERT(0, "%s: gpa 0x%lx is 0x%02x, the model says 0x%02x (vector 0x%08x)",
		  when, FZ_GPA + i, mem_hva[i], m.mem[i],
		  vec_of((FZ_GPA + i) >> PAGE_SHIFT));
}

static void spp_set(struct kvm_vm *vm, uint64_t gfn, uint32_t n,
		    const uint32_t *v)
{
	struct kvm_subpage_access sa = {
		.base_gfn = gfn, .npages = n, .access_map = (uintptr_t)v,
	};
	uint32_t i;

	vm_ioctl(vm, KVM_SUBPAGES_SET_ACCESS, &sa);
	for (i = 0; i < n; i++)
		if (gfn + i >= FZ_WIN_GFN && gfn + i < FZ_WIN_GFN + FZ_WIN)
			m.vec[gfn + i - FZ_WIN_GFN] = v[i];
	m.sets++;
}

static uint32_t random_vector(void)
{
	uint32_t b = 1U << rnd_below(32);

	switch (rnd_below(8)) {
	case 0:
	case 1:
		return FULL;
	case 2:
		return 0;
	case 3:
		return ~b;
	case 4:
		return b;
	case 5:
		return (uint32_t)rnd();
	default:
		return (uint32_t)(rnd() | rnd());
	}
}

static void random_set(struct kvm_vm *vm)
{
	uint32_t v[FZ_WIN], n, i, first = rnd_below(FZ_WIN);
	bool same = rnd_below(2);

	n = 1 + rnd_below(FZ_WIN - first);
	v[0] = random_vector();
	for (i = 1; i < n; i++)
		v[i] = same ? v[0] : random_vector();
	spp_set(vm, FZ_WIN_GFN + first, n, v);
}

static void random_get(struct kvm_vm *vm)
{
	uint32_t v[FZ_WIN], n, i, first = rnd_below(FZ_WIN);
	struct kvm_subpage_access sa = {
		.base_gfn = FZ_WIN_GFN + first, .access_map = (uintptr_t)v,
	};

	n = 1 + rnd_below(FZ_WIN - first);
	sa.npages = n;
	vm_ioctl(vm, KVM_SUBPAGES_GET_ACCESS, &sa);
	for (i = 0; i < n; i++)
		FZ_ASSERT(v[i] == m.vec[first + i],
			  "GET gfn 0x%lx: 0x%08x, the model says 0x%08x",
			  FZ_WIN_GFN + first + i, v[i], m.vec[first + i]);
	m.gets++;
}

/* Dirty logging on/off, or delete and re-create the memslot. */
static void slot_change(struct kvm_vm *vm)
{
	struct userspace_mem_region *r = memslot2region(vm, FZ_SLOT);
	uint32_t flags = r->region.flags;

	if (rnd_below(2)) {
		flags ^= KVM_MEM_LOG_DIRTY_PAGES;
		vm_mem_region_set_flags(vm, FZ_SLOT, flags);
		m.cpu_checks = m.hw && !(flags & KVM_MEM_LOG_DIRTY_PAGES);
	} else {
		vm_set_user_memory_region(vm, FZ_SLOT, flags, FZ_GPA, 0,
					  mem_hva);
		vm_set_user_memory_region(vm, FZ_SLOT, flags, FZ_GPA, FZ_BYTES,
					  mem_hva);
	}
	m.slot_ops++;
}

/* A target address: anywhere, or straddling a sub-page or page boundary. */
static uint64_t random_addr(uint32_t span, uint32_t align)
{
	uint64_t off, b;

	if (rnd_below(3)) {
		b = SUBPAGE * (1 + rnd_below(FZ_BYTES / SUBPAGE - 1));
		off = rnd_below(span + 1);
		off = off > b ? 0 : b - off;
		if (off + span > FZ_BYTES)
			off = FZ_BYTES - span;
	} else {
		off = rnd_below(FZ_BYTES - span + 1);
	}
	off &= ~(uint64_t)(align - 1);
	return FZ_GPA + off;
}

static void add_unit(uint64_t gpa, uint32_t len, const void *data)
{
	struct unit *u = &m.units[m.nr_units++];

	u->gpa = gpa;
	u->len = len;
	u->fx = false;
	memcpy(u->data, data, len);
	memset(u->stored, true, len);
}

static uint64_t model_read(uint64_t gpa, uint32_t len)
{
	uint64_t v = 0;

	memcpy(&v, &m.mem[gpa - FZ_GPA], len);
	return v;
}

static const uint32_t sizes[] = { 1, 2, 4, 8 };

/* Draw the next guest write and its units. */
static void random_write(void)
{
	uint64_t old, new, a;
	uint32_t i, e;

	memset(&fop, 0, sizeof(fop));
	m.nr_units = 0;
	fop.kind = rnd_below(FZ_DONE);
	fop.size = sizes[rnd_below(4)];
	fop.val = rnd();
	switch (fop.kind) {
	case FZ_MOVDQU:
		fop.size = 16;
		fop.addr = random_addr(16, 1);
		fop.cmp = rnd();
		/* movdqu stores val then cmp (the 16 bytes at &fop.val). */
		add_unit(fop.addr, 16, &fop.val);
		break;
	case FZ_STOS:
	case FZ_MOVS:
		e = fop.size;
		fop.rep = rnd_below(4) != 0;
		fop.df = rnd_below(2);
		fop.count = fop.rep ? 1 + rnd_below(64 / e) : 1;
		a = random_addr(fop.count * e, 1);
		fop.src = (uint64_t)fz_src + rnd_below(PAGE_SIZE - 64);
		if (fop.df) {
			fop.addr = a + (fop.count - 1) * e;
			fop.src += (fop.count - 1) * e;
		} else {
			fop.addr = a;
		}
		for (i = 0; i < fop.count; i++) {
			int64_t step = fop.df ? -(int64_t)(i * e) : i * e;

			add_unit(fop.addr + step, e, fop.kind == FZ_STOS ?
				 (void *)&fop.val : &fz_src[fop.src + step -
							     (uint64_t)fz_src]);
		}
		break;
	case FZ_CX8:
		fop.size = 8;
		fop.addr = random_addr(8, 1);
		old = model_read(fop.addr, 8);
		fop.cmp = rnd_below(3) ? old : old ^ (1ULL << rnd_below(64));
		/* A failing compare writes the old value back. */
		new = fop.cmp == old ? fop.val : old;
		add_unit(fop.addr, 8, &new);
		break;
	case FZ_PUSH:
	case FZ_CALL:
		fop.size = 8;
		fop.addr = random_addr(8, 1);
		new = fop.kind == FZ_PUSH ? fop.val : (uint64_t)fz_call_ret;
		add_unit(fop.addr, 8, &new);
		break;
	case FZ_FXSAVE:
	case FZ_FXSAVE64:
		fop.size = FX_LEN;
		fop.addr = random_addr(FX_LEN, 16);
		add_unit(fop.addr, FX_LEN, fz_fx);	/* data: at check time */
		m.units[0].fx = true;
		break;
	default:	/* mov, lock add/xadd/cmpxchg, xchg: 1-8 bytes */
		fop.addr = random_addr(fop.size, 1);
		old = model_read(fop.addr, fop.size);
		new = fop.val;
		if (fop.kind == FZ_ADD || fop.kind == FZ_XADD)
			new = old + fop.val;
		if (fop.kind == FZ_CMPXCHG) {
			fop.cmp = rnd_below(3) ? old : old + 1;
			if (fop.size < 8)
				fop.cmp &= (1ULL << (8 * fop.size)) - 1;
			new = fop.cmp == old ? fop.val : old;
		}
		add_unit(fop.addr, fop.size, &new);
		break;
	}
	fop.flush[0] = m.units[0].gpa;
	fop.flush[1] = m.units[0].gpa;
	for (i = 0; i < (uint32_t)m.nr_units; i++) {
		a = m.units[i].gpa;
		if (a < fop.flush[0])
			fop.flush[0] = a;
		if (a + m.units[i].len - 1 > fop.flush[1])
			fop.flush[1] = a + m.units[i].len - 1;
	}
	m.kinds[fop.kind]++;
}

/* Whether bytes [from, from + len) of @u are in @mem (FXSAVE: but 6-23). */
static bool bytes_landed(const struct unit *u, const uint8_t *mem,
			 uint32_t from, uint32_t len)
{
	const uint8_t *p = &mem[u->gpa - FZ_GPA];
	uint32_t i;

	for (i = from; i < from + len; i++)
		if (u->stored[i] && p[i] != u->data[i] &&
		    !(u->fx && i >= 6 && i < 24))
			return false;
	return true;
}

static bool unit_landed(const struct unit *u)
{
	return bytes_landed(u, mem_hva, 0, u->len);
}

/* FXSAVE: what the CPU stored in the guest's buffers just before. */
static void fx_prepare(struct kvm_vm *vm, struct unit *u)
{
	uint8_t *zero = addr_gva2hva(vm, (vm_vaddr_t)fz_fx);
	uint8_t *ff = addr_gva2hva(vm, (vm_vaddr_t)fz_fx_ff);
	uint32_t i;

	if (!u->fx)
		return;
	memcpy(u->data, zero, FX_LEN);
	for (i = 0; i < FX_LEN; i++)
		u->stored[i] = zero[i] == ff[i];
}

/* Unit @i, which had SKIP/ALLOW answers, completed: KVM emulated it. */
static void unit_ran_answered(int i)
{
	struct unit *u = &m.units[i];
	struct piece p[MAX_PIECES];
	int k, n = unit_pieces(u, p);

	for (k = 0; k < n; k++) {
		if (piece_permitted(&p[k]) || m.ans[k] == KVM_SPP_ACTION_ALLOW) {
			apply_bytes(u, p[k].off, p[k].len);
			continue;
		}
		FZ_ASSERT(m.ans[k] == KVM_SPP_ACTION_SKIP,
			  "unit %d: piece at 0x%lx (%u bytes) is denied, unanswered, but the instruction completed",
			  i, p[k].gpa, p[k].len);
	}
	m.units_done++;
	clear_answers();
}

/* Units [from, to) ran without (another) exit: check them. */
static void units_ran(int from, int to, struct kvm_vm *vm)
{
	struct unit *u;
	int i;

	for (i = from; i < to; i++) {
		u = &m.units[i];
		fx_prepare(vm, u);
		if (i == m.ans_unit) {
			unit_ran_answered(i);
			continue;
		}
		if (unit_permitted(u)) {
			apply_unit(u);
			hw_wrote(u);
			continue;
		}
		FZ_ASSERT(unit_maybe_permitted(u),
			  "unit %d (gpa 0x%lx, %u bytes) is denied, but ran without KVM_EXIT_SPP",
			  i, u->gpa, u->len);
		/* Hardware granularity: all or nothing, read it back. */
		if (unit_landed(u)) {
			apply_unit(u);
			hw_wrote(u);
			m.maybe_permitted++;
		} else {
			m.maybe_denied++;
		}
	}
}

static void handle_spp_exit(struct kvm_vm *vm, struct kvm_vcpu *vcpu, int *k)
{
	struct kvm_run *run = vcpu->run;
	struct piece p[MAX_PIECES];
	struct kvm_regs regs;
	uint32_t v[2], b, n;
	struct unit *u;
	uint64_t gfn, a, off;
	int j = 0, q, np;
	uint32_t i;

	m.exits++;
	vcpu_regs_get(vcpu, &regs);
	if ((fop.kind == FZ_STOS || fop.kind == FZ_MOVS) && fop.rep) {
		FZ_ASSERT(regs.rcx >= 1 && regs.rcx <= fop.count,
			  "exit with RCX %llu", regs.rcx);
		j = fop.count - regs.rcx;
		FZ_ASSERT(regs.rdi == m.units[j].gpa,
			  "exit at iteration %d with RDI 0x%llx", j, regs.rdi);
	}
	FZ_ASSERT(j >= *k, "exit at unit %d after unit %d was done", j, *k);
	units_ran(*k, j, vm);
	*k = j;
	u = &m.units[j];
	fx_prepare(vm, u);
	if (m.ans_unit != j)
		clear_answers();
	else
		m.multi_exits++;
	FZ_ASSERT(!unit_permitted(u),
		  "KVM_EXIT_SPP gpa 0x%llx for unit %d (gpa 0x%lx, %u bytes), which is permitted",
		  run->spp.gpa, j, u->gpa, u->len);
	np = unit_pieces(u, p);
	/*
	 * Before it faults on the protected page, the CPU may have stored
	 * bytes on a page without protection, which the guest maps writable
	 * (QEMU TCG does for FXSAVE, in its own order), or with SPP hardware
	 * on a page where it permitted the write's first byte (Bochs does).
	 * KVM's own writes are all or nothing.
	 */
	for (i = 0; i < u->len; i++) {
		off = u->gpa + i - FZ_GPA;
		if (!u->stored[i] || !cpu_may_store(u, u->gpa + i) ||
		    m.mem[off] == mem_hva[off])
			continue;
		if (mem_hva[off] == u->data[i] || (u->fx && i >= 6 && i < 24)) {
			m.mem[off] = mem_hva[off];
			m.cpu_partial++;
		}
	}
	/* KVM stops at the first denied piece it has no answer for. */
	for (q = 0; q < np; q++)
		if (!m.ans[q] && !piece_permitted(&p[q]))
			break;
	FZ_ASSERT(q < np, "KVM_EXIT_SPP gpa 0x%llx, but every denied piece of unit %d was answered",
		  run->spp.gpa, j);
	FZ_ASSERT(run->spp.gpa == p[q].gpa,
		  "spp.gpa 0x%llx, expected 0x%lx (unit %d at 0x%lx, %u bytes, piece %d)",
		  run->spp.gpa, p[q].gpa, j, u->gpa, u->len, q);
	FZ_ASSERT(run->spp.flags == (m.hw ? 0 : KVM_SPP_EXIT_EMULATED),
		  "spp.flags 0x%x", run->spp.flags);
	FZ_ASSERT(run->spp.insn_len, "insn_len 0");
	FZ_ASSERT(run->spp.action == KVM_SPP_ACTION_RETRY, "action %u",
		  run->spp.action);
	check_memory("at KVM_EXIT_SPP");

	/* KVM keeps at most 16 answers per instruction (E2BIG). */
	switch (m.nr_ans < 16 ? rnd_below(4) : 2) {
	case 0:
	case 1:
		run->spp.action = rnd_below(2) ? KVM_SPP_ACTION_SKIP :
						  KVM_SPP_ACTION_ALLOW;
		if (run->spp.action == KVM_SPP_ACTION_SKIP)
			m.skips++;
		else
			m.allows++;
		m.ans_unit = j;
		m.ans[q] = run->spp.action;
		m.nr_ans++;
		break;
	default:
		/* Lift the unit's sub-pages (or the whole pages), retry. */
		gfn = u->gpa >> PAGE_SHIFT;
		n = ((u->gpa + u->len - 1) >> PAGE_SHIFT) - gfn + 1;
		v[0] = vec_of(gfn);
		v[1] = vec_of(gfn + 1);
		for (a = u->gpa; a < u->gpa + u->len; a += b) {
			b = SUBPAGE - (a & (SUBPAGE - 1));
			v[(a >> PAGE_SHIFT) - gfn] |=
				1U << ((a & (PAGE_SIZE - 1)) / SUBPAGE);
		}
		if (rnd_below(4) == 0) {
			v[0] = FULL;
			v[1] = FULL;
		}
		spp_set(vm, gfn, n, v);
		m.retries++;
		clear_answers();	/* RETRY: KVM forgets them too */
		break;
	}
}

static void run_write(struct kvm_vm *vm, struct kvm_vcpu *vcpu)
{
	struct ucall uc;
	int k = 0, rounds = 0;

	sync_global_to_guest(vm, fop);
	memset(m.hw_wrote, 0, sizeof(m.hw_wrote));
	for (;;) {
		FZ_ASSERT(++rounds <= 2 * MAX_UNITS + 2, "no progress");
		vcpu_run(vcpu);
		if (vcpu->run->exit_reason == KVM_EXIT_SPP) {
			handle_spp_exit(vm, vcpu, &k);
			continue;
		}
		FZ_ASSERT(vcpu->run->exit_reason == KVM_EXIT_IO,
			  "exit reason %u (%s)", vcpu->run->exit_reason,
			  exit_reason_str(vcpu->run->exit_reason));
		switch (get_ucall(vcpu, &uc)) {
		case UCALL_SYNC:
			break;
		case UCALL_ABORT:
			REPORT_GUEST_ASSERT(uc);
		default:
			FZ_ASSERT(0, "unexpected ucall %lu", uc.cmd);
		}
		break;
	}
	units_ran(k, m.nr_units, vm);
	FZ_ASSERT(m.ans_unit < 0, "answers left for unit %d", m.ans_unit);
	check_memory("after the write");
}

static uint64_t vcpu_stat(struct kvm_vcpu *vcpu, const char *name)
{
	int fd = vcpu_get_stats_fd(vcpu);
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

int main(int argc, char *argv[])
{
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	uint32_t cap, full[FZ_WIN];
	int opt, nr_ops = 10000, i;
	uint64_t roll;

	m.seed = (uint64_t)time(NULL) * 1000003 + getpid();
	while ((opt = getopt(argc, argv, "s:n:")) != -1) {
		switch (opt) {
		case 's':
			m.seed = strtoull(optarg, NULL, 0);
			break;
		case 'n':
			nr_ops = atoi_positive("Number of operations", optarg);
			break;
		default:
			printf("usage: %s [-s SEED] [-n OPS]\n", argv[0]);
			exit(KSFT_FAIL);
		}
	}

	ksft_print_header();
	cap = kvm_check_cap(KVM_CAP_X86_SPP);
	TEST_REQUIRE(cap);
	ksft_set_plan(1);
	m.hw = cap & KVM_SPP_CAP_HW_ACCELERATED;
	m.cpu_checks = m.hw;
	rng_state = m.seed ? m.seed : 1;
	ksft_print_msg("seed %lu, %d operations, %s path (replay: %s -s %lu -n %d)\n",
		       m.seed, nr_ops, m.hw ? "hardware" : "software", argv[0],
		       m.seed, nr_ops);

	vm = vm_create(1);
	vm_enable_cap(vm, KVM_CAP_X86_SPP, 0);
	vcpu = vm_vcpu_add(vm, 0, guest_code);
	guest_spp_hw = m.hw;
	sync_global_to_guest(vm, guest_spp_hw);
	vm_userspace_mem_region_add(vm, VM_MEM_SRC_ANONYMOUS, FZ_GPA, FZ_SLOT,
				    FZ_NPAGES, 0);
	virt_map(vm, FZ_GPA, FZ_GPA, FZ_NPAGES);
	mem_hva = addr_gpa2hva(vm, FZ_GPA);
	for (i = 0; i < FZ_BYTES; i++) {
		m.mem[i] = rnd();
		mem_hva[i] = m.mem[i];
	}
	for (i = 0; i < PAGE_SIZE; i++)
		fz_src[i] = rnd();
	sync_global_to_guest(vm, fz_src);
	for (i = 0; i < FZ_WIN; i++)
		full[i] = FULL;
	spp_set(vm, FZ_WIN_GFN, FZ_WIN, full);

	clear_answers();
	for (m.op = 0; m.op < nr_ops; m.op++) {
		roll = rnd_below(100);
		if (roll < 15)
			random_set(vm);
		else if (roll < 20)
			random_get(vm);
		else if (roll < 21)
			slot_change(vm);
		random_write();
		run_write(vm, vcpu);
	}

	fop.kind = FZ_DONE;
	sync_global_to_guest(vm, fop);
	vcpu_run(vcpu);
	TEST_ASSERT_EQ(get_ucall(vcpu, NULL), UCALL_DONE);
	TEST_ASSERT_EQ(vcpu_stat(vcpu, "spp_exits"), m.exits);

	for (i = 0; i < FZ_DONE; i++)
		ksft_print_msg("%-15s %lu\n", kind_name[i], m.kinds[i]);
	ksft_print_msg(
		"%lu units written or denied, %lu exits (%lu skip, %lu allow, %lu retry; %lu more for an answered instruction), %lu SET, %lu GET, %lu memslot changes\n",
		m.units_done, m.exits, m.skips, m.allows, m.retries,
		m.multi_exits, m.sets, m.gets, m.slot_ops);
	ksft_print_msg(
		"%lu bytes the CPU stored itself before a fault (unprotected page; SPP hardware: permitted first byte)\n",
		m.cpu_partial);
	if (m.hw)
		ksft_print_msg(
			"hardware granularity: %lu byte-exactly denied units landed, %lu did not\n",
			m.maybe_permitted, m.maybe_denied);
	ksft_test_result_pass("%d operations, seed %lu\n", nr_ops, m.seed);
	kvm_vm_free(vm);
	ksft_finished();
}
