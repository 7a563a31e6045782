// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit test of the SPP table builder (vmx/sppt.c): random gfns get random
 * write-permission vectors, then the table is walked the way the SDM says
 * the CPU walks it (SPPTP -> 3 non-leaf levels indexed by GPA bits like EPT
 * -> a 64-bit leaf with sub-page i's write permission in bit 2i), checking
 * reserved bits on the way.  Removing every protection must free every
 * table but the root.
 */
#include <kunit/test.h>
#include <linux/kvm_host.h>
#include <linux/random.h>

#include "spp.h"

#define NR_GFNS		400

/* Bits that must be clear in a present non-leaf SPPT entry. */
static u64 sppt_reserved_mask(void)
{
	return GENMASK_ULL(11, 1) | GENMASK_ULL(63, 52) |
	       GENMASK_ULL(51, boot_cpu_data.x86_phys_bits);
}

/*
 * Walk @root for @gfn like the CPU: return the leaf, 0 if a level is not
 * present ("SPPT miss"), and fail the test on a misconfigured entry.
 */
static u64 sdm_walk(struct kunit *test, u64 root_pa, gfn_t gfn, int *tables)
{
	u64 pa = root_pa, entry, leaf;
	int level;

	for (level = 4; level > 1; level--) {
		entry = ((u64 *)__va(pa))[(gfn >> (9 * (level - 1))) & 511];
		if (!(entry & 1))
			return 0;
		KUNIT_EXPECT_EQ(test, entry & sppt_reserved_mask(), 0ULL);
		pa = entry & GENMASK_ULL(51, 12);
		if (tables)
			(*tables)++;
	}
	leaf = ((u64 *)__va(pa))[gfn & 511];
	/* Odd bits of a leaf are reserved: a misconfiguration. */
	KUNIT_EXPECT_EQ(test, leaf & 0xaaaaaaaaaaaaaaaaULL, 0ULL);
	return leaf;
}

static void expect_vector(struct kunit *test, u64 leaf, u32 access)
{
	int i;

	for (i = 0; i < 32; i++)
		KUNIT_EXPECT_EQ(test, (leaf >> (2 * i)) & 1, (u64)((access >> i) & 1));
}

static void sppt_vector_test(struct kunit *test)
{
	KUNIT_EXPECT_EQ(test, vmx_sppt_vector(0), 0ULL);
	KUNIT_EXPECT_EQ(test, vmx_sppt_vector(~0U), 0x5555555555555555ULL);
	KUNIT_EXPECT_EQ(test, vmx_sppt_vector(1), 1ULL);
	KUNIT_EXPECT_EQ(test, vmx_sppt_vector(BIT(31)), BIT_ULL(62));
	KUNIT_EXPECT_EQ(test, vmx_sppt_vector(0x80000003), 0x4000000000000005ULL);
}

static gfn_t random_gfn(int i)
{
	/* Clusters in one leaf table, neighbours, and far-apart gfns. */
	switch (i % 4) {
	case 0:
		return 0x12345000 / PAGE_SIZE + get_random_u32_below(512);
	case 1:
		return get_random_u32_below(1 << 20);
	case 2:
		return (u64)get_random_u32_below(1 << 24) << 12 |
		       get_random_u32_below(4096);
	default:
		return ((u64)get_random_u32() << 4) & GENMASK_ULL(35, 0);
	}
}

static void sppt_build_walk_prune_test(struct kunit *test)
{
	struct vmx_sppt t = {};
	gfn_t *gfn;
	u32 *access;
	LIST_HEAD(freed);
	struct list_head *pos;
	int i, j, nfreed = 0;
	u64 root_pa;

	gfn = kunit_kcalloc(test, NR_GFNS, sizeof(*gfn), GFP_KERNEL);
	access = kunit_kcalloc(test, NR_GFNS, sizeof(*access), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, gfn);
	KUNIT_ASSERT_NOT_NULL(test, access);
	KUNIT_ASSERT_EQ(test, vmx_sppt_init(&t), 0);
	root_pa = __pa(t.root);

	for (i = 0; i < NR_GFNS; i++) {
		gfn[i] = random_gfn(i);
		access[i] = i % 7 ? get_random_u32() : 0;
		if (access[i] == KVM_SUBPAGE_FULL_ACCESS)
			access[i] = 0;
		KUNIT_ASSERT_EQ(test, vmx_sppt_prepare(&t, gfn[i]), 0);
		vmx_sppt_set(&t, gfn[i], access[i]);
	}

	/* Every gfn reads back its last vector (a gfn may repeat). */
	for (i = 0; i < NR_GFNS; i++) {
		u32 want = access[i];

		for (j = i + 1; j < NR_GFNS; j++)
			if (gfn[j] == gfn[i])
				want = access[j];
		expect_vector(test, sdm_walk(test, root_pa, gfn[i], NULL), want);
	}

	/* Neighbours of a protected gfn in its leaf table are writable. */
	for (i = 0; i < NR_GFNS; i += 37) {
		gfn_t n = gfn[i] ^ 1;
		u64 leaf = sdm_walk(test, root_pa, n, NULL);

		for (j = 0; j < NR_GFNS; j++)
			if (gfn[j] == n)
				break;
		if (j == NR_GFNS)
			KUNIT_EXPECT_EQ(test, leaf, 0x5555555555555555ULL);
	}

	/* Unprotect everything: all tables but the root are unlinked. */
	for (i = 0; i < NR_GFNS; i++) {
		vmx_sppt_set(&t, gfn[i], KVM_SUBPAGE_FULL_ACCESS);
		vmx_sppt_prune(&t, gfn[i], &freed);
	}
	for (i = 0; i < 512; i++)
		KUNIT_EXPECT_EQ(test, t.root[i], 0ULL);
	for (i = 0; i < NR_GFNS; i++)
		KUNIT_EXPECT_EQ(test, sdm_walk(test, root_pa, gfn[i], NULL), 0ULL);
	list_for_each(pos, &freed)
		nfreed++;
	KUNIT_EXPECT_GT(test, nfreed, 3);
	put_pages_list(&freed);
	vmx_sppt_destroy(&t);
	KUNIT_EXPECT_NULL(test, t.root);
}

static void sppt_partial_prune_test(struct kunit *test)
{
	struct vmx_sppt t = {};
	LIST_HEAD(freed);
	u64 root_pa;

	KUNIT_ASSERT_EQ(test, vmx_sppt_init(&t), 0);
	root_pa = __pa(t.root);
	KUNIT_ASSERT_EQ(test, vmx_sppt_prepare(&t, 0x1000), 0);
	KUNIT_ASSERT_EQ(test, vmx_sppt_prepare(&t, 0x1001), 0);
	vmx_sppt_set(&t, 0x1000, 0x0f0f0f0f);
	vmx_sppt_set(&t, 0x1001, 0xf0f0f0f0);

	/* The leaf table still maps 0x1001: nothing may be freed. */
	vmx_sppt_set(&t, 0x1000, KVM_SUBPAGE_FULL_ACCESS);
	vmx_sppt_prune(&t, 0x1000, &freed);
	KUNIT_EXPECT_TRUE(test, list_empty(&freed));
	expect_vector(test, sdm_walk(test, root_pa, 0x1001, NULL), 0xf0f0f0f0);
	KUNIT_EXPECT_EQ(test, sdm_walk(test, root_pa, 0x1000, NULL),
			0x5555555555555555ULL);

	vmx_sppt_set(&t, 0x1001, KVM_SUBPAGE_FULL_ACCESS);
	vmx_sppt_prune(&t, 0x1001, &freed);
	KUNIT_EXPECT_FALSE(test, list_empty(&freed));
	KUNIT_EXPECT_EQ(test, sdm_walk(test, root_pa, 0x1001, NULL), 0ULL);
	put_pages_list(&freed);
	vmx_sppt_destroy(&t);
}

/*
 * The SPPT maps gpa bits 47:12 only: a gfn with higher bits set must never
 * reach the table, or it would rewrite (or prune) the leaf of the gfn it
 * aliases.
 */
static void sppt_full_width_gfn_test(struct kunit *test)
{
	const gfn_t gfn = 0x12345, alias = gfn + (1ULL << 36);
	struct vmx_sppt t = {};
	LIST_HEAD(freed);
	u64 root_pa;

	KUNIT_ASSERT_EQ(test, vmx_sppt_init(&t), 0);
	root_pa = __pa(t.root);
	KUNIT_ASSERT_EQ(test, vmx_sppt_prepare(&t, gfn), 0);
	KUNIT_EXPECT_TRUE(test, vmx_sppt_set(&t, gfn, 0x00ff00ff));

	KUNIT_EXPECT_EQ(test, vmx_sppt_prepare(&t, alias), -EINVAL);
	KUNIT_EXPECT_FALSE(test, vmx_sppt_set(&t, alias, 0));
	KUNIT_EXPECT_FALSE(test, vmx_sppt_set(&t, alias, KVM_SUBPAGE_FULL_ACCESS));
	vmx_sppt_prune(&t, alias, &freed);
	KUNIT_EXPECT_TRUE(test, list_empty(&freed));
	KUNIT_EXPECT_FALSE(test, vmx_sppt_set(&t, ~0ULL >> 12, 0));
	expect_vector(test, sdm_walk(test, root_pa, gfn, NULL), 0x00ff00ff);

	vmx_sppt_set(&t, gfn, KVM_SUBPAGE_FULL_ACCESS);
	vmx_sppt_prune(&t, gfn, &freed);
	put_pages_list(&freed);
	vmx_sppt_destroy(&t);
}

static struct kunit_case sppt_test_cases[] = {
	KUNIT_CASE(sppt_vector_test),
	KUNIT_CASE(sppt_build_walk_prune_test),
	KUNIT_CASE(sppt_partial_prune_test),
	KUNIT_CASE(sppt_full_width_gfn_test),
	{}
};

static struct kunit_suite sppt_test_suite = {
	.name = "kvm_spp_sppt",
	.test_cases = sppt_test_cases,
};

kunit_test_suite(sppt_test_suite);

