// SPDX-License-Identifier: GPL-2.0
/*
 * The SPP table (SPPT) of EPT-based sub-page write permissions, in the
 * format the CPU walks (SDM "Sub-Page Permission Table"): four levels
 * indexed by guest-physical address bits 47:12 like EPT, non-leaf entries
 * holding the next table's physical address with bit 0 (valid) set, leaf
 * entries holding a 64-bit vector in which sub-page i is writable if bit 2i
 * is set.  Guest-physical addresses of 48 bits and more never reach it.
 *
 * The table mirrors the permission store of mmu/spp.c: SET writes the
 * vectors where the table's levels exist and prunes tables that map
 * nothing any more; a missing level is built from the store at the CPU's
 * first SPPT miss on it.  Changes are serialized by the VM's spp_lock.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kvm_host.h>
#include <linux/mm.h>

#include "mmu/spp.h"
#include "spp.h"
#include "vmx.h"

#define SPPT_FULL_ACCESS	0x5555555555555555ULL
#define SPPT_ENTRY_VALID	BIT_ULL(0)
#define SPPT_ADDR_MASK		GENMASK_ULL(51, 12)

/* SPPT misses in a row on the same complete path before KVM gives up. */
#define SPPT_MAX_MISS_REPEATS	16

/**
 * vmx_sppt_vector() - SPPT leaf entry of a 32-bit write-permission vector
 * @access: bit i set = sub-page i writable
 *
 * Return: the 64-bit leaf entry, with sub-page i's permission in bit 2i.
 */
u64 vmx_sppt_vector(u32 access)
{
	u64 v = 0;
	int i;

	for (i = 0; i < 32; i++)
		if (access & BIT(i))
			v |= BIT_ULL(2 * i);
	return v;
}

static bool sppt_maps(gfn_t gfn)
{
	return gfn < VMX_SPPT_GFN_LIMIT;
}

static unsigned int sppt_index(gfn_t gfn, int level)
{
	return (gfn >> ((level - 1) * 9)) & 511;
}

static u64 *sppt_table(u64 entry)
{
	return __va(entry & SPPT_ADDR_MASK);
}

/**
 * vmx_sppt_prepare() - allocate the SPPT levels that map a gfn
 * @t: the SPP table
 * @gfn: guest frame number
 *
 * New leaf tables are filled with "all writable" entries.  Sleeps; the
 * caller serializes changes of @t.
 *
 * Return: 0 on success, -EINVAL for a gfn the SPPT cannot map, -ENOMEM.
 */
int vmx_sppt_prepare(struct vmx_sppt *t, gfn_t gfn)
{
	u64 *table = t->root, *entry;
	int level, i;

	if (!sppt_maps(gfn))
		return -EINVAL;

	for (level = 4; level > 1; level--) {
		entry = &table[sppt_index(gfn, level)];
		if (!(READ_ONCE(*entry) & SPPT_ENTRY_VALID)) {
			u64 *next = (u64 *)get_zeroed_page(GFP_KERNEL_ACCOUNT);

			if (!next)
				return -ENOMEM;
			if (level == 2)
				for (i = 0; i < 512; i++)
					next[i] = SPPT_FULL_ACCESS;
			/* The CPU may walk the table as soon as it is linked. */
			smp_wmb();
			WRITE_ONCE(*entry, __pa(next) | SPPT_ENTRY_VALID);
		}
		table = sppt_table(READ_ONCE(*entry));
	}
	return 0;
}

/* The leaf entry of @gfn, or NULL if a level is missing. */
static u64 *sppt_leaf(struct vmx_sppt *t, gfn_t gfn)
{
	u64 *table = t->root, entry;
	int level;

	if (!sppt_maps(gfn))
		return NULL;

	for (level = 4; level > 1; level--) {
		entry = READ_ONCE(table[sppt_index(gfn, level)]);
		if (!(entry & SPPT_ENTRY_VALID))
			return NULL;
		table = sppt_table(entry);
	}
	return &table[sppt_index(gfn, 1)];
}

/**
 * vmx_sppt_set() - store the write permissions of a gfn in the SPP table
 * @t: the SPP table
 * @gfn: guest frame number
 * @access: 32-bit write-permission vector
 *
 * Does nothing if a level of @gfn's path is missing: the CPU then takes an
 * SPPT miss, whose handler builds the path from the permission store.  Does
 * nothing either for a gfn above the 48 bits of gpa the SPPT maps.
 *
 * Return: true if the leaf entry was written.
 */
bool vmx_sppt_set(struct vmx_sppt *t, gfn_t gfn, u32 access)
{
	u64 *leaf = sppt_leaf(t, gfn);

	if (leaf)
		WRITE_ONCE(*leaf, vmx_sppt_vector(access));
	return leaf;
}

static bool sppt_table_unused(u64 *table, int level)
{
	u64 empty = level == 1 ? SPPT_FULL_ACCESS : 0;
	int i;

	for (i = 0; i < 512; i++)
		if (READ_ONCE(table[i]) != empty)
			return false;
	return true;
}

/**
 * vmx_sppt_prune() - unlink the SPPT tables on a gfn's path that map nothing
 * @t: the SPP table
 * @gfn: guest frame number
 * @freed: list the unlinked tables go to (via their struct page)
 *
 * A leaf table is unused when all its entries allow every write, an upper
 * table when it links no table.  The caller frees @freed with
 * put_pages_list() once the CPUs can no longer walk the tables.
 */
void vmx_sppt_prune(struct vmx_sppt *t, gfn_t gfn, struct list_head *freed)
{
	u64 *path[5];
	int level;

	if (!sppt_maps(gfn))
		return;
	path[4] = t->root;
	for (level = 4; level > 1; level--) {
		u64 entry = READ_ONCE(path[level][sppt_index(gfn, level)]);

		if (!(entry & SPPT_ENTRY_VALID))
			return;
		path[level - 1] = sppt_table(entry);
	}
	for (level = 1; level < 4; level++) {
		if (!sppt_table_unused(path[level], level))
			return;
		WRITE_ONCE(path[level + 1][sppt_index(gfn, level + 1)], 0);
		list_add(&virt_to_page(path[level])->lru, freed);
	}
}

static void sppt_free_level(u64 *table, int level)
{
	int i;

	if (level > 1)
		for (i = 0; i < 512; i++)
			if (table[i] & SPPT_ENTRY_VALID)
				sppt_free_level(sppt_table(table[i]), level - 1);
	free_page((unsigned long)table);
}

/**
 * vmx_sppt_init() - allocate the root of an SPP table
 * @t: the SPP table
 *
 * Return: 0 on success, -ENOMEM.
 */
int vmx_sppt_init(struct vmx_sppt *t)
{
	t->root = (u64 *)get_zeroed_page(GFP_KERNEL_ACCOUNT);
	return t->root ? 0 : -ENOMEM;
}

/**
 * vmx_sppt_destroy() - free a whole SPP table
 * @t: the SPP table
 */
void vmx_sppt_destroy(struct vmx_sppt *t)
{
	if (t->root)
		sppt_free_level(t->root, 4);
	t->root = NULL;
}

/* Number of SPPT pages (all levels) under @table, itself included. */
static unsigned long sppt_count_pages(u64 *table, int level)
{
	unsigned long n = 1;
	int i;

	if (level > 1)
		for (i = 0; i < 512; i++)
			if (table[i] & SPPT_ENTRY_VALID)
				n += sppt_count_pages(sppt_table(table[i]),
						      level - 1);
	return n;
}

/**
 * vmx_spp_init_vm() - give a VM an SPP table
 * @kvm: the VM, which enables sub-page write protection on the hardware path
 *
 * Return: 0 on success, -ENOMEM.
 */
int vmx_spp_init_vm(struct kvm *kvm)
{
	return vmx_sppt_init(&to_kvm_vmx(kvm)->sppt);
}

/**
 * vmx_spp_destroy_vm() - free a VM's SPP table, if it has one
 * @kvm: the VM
 */
void vmx_spp_destroy_vm(struct kvm *kvm)
{
	vmx_sppt_destroy(&to_kvm_vmx(kvm)->sppt);
}

/**
 * vmx_spp_update() - mirror a gfn's new write permissions in the SPP table
 * @kvm: the VM
 * @gfn: the guest frame
 * @access: its new 32-bit write-permission vector
 * @freed: if not NULL and @gfn is no longer protected, the tables that map
 *	   nothing any more are unlinked onto this list
 *
 * Caller holds spp_lock.
 */
void vmx_spp_update(struct kvm *kvm, gfn_t gfn, u32 access,
		    struct list_head *freed)
{
	struct vmx_sppt *t = &to_kvm_vmx(kvm)->sppt;

	lockdep_assert_held(&kvm->arch.spp_lock);
	if (!t->root)
		return;
	vmx_sppt_set(t, gfn, access);
	if (freed && access == KVM_SUBPAGE_FULL_ACCESS)
		vmx_sppt_prune(t, gfn, freed);
	t->seq++;
}

/**
 * vmx_spp_table_pages() - how many pages a VM's SPP table holds
 * @kvm: the VM
 *
 * Caller holds spp_lock.
 *
 * Return: the number of 4 KiB tables, all levels, or 0 without a table.
 */
unsigned long vmx_spp_table_pages(struct kvm *kvm)
{
	struct vmx_sppt *t = &to_kvm_vmx(kvm)->sppt;

	lockdep_assert_held(&kvm->arch.spp_lock);
	return t->root ? sppt_count_pages(t->root, 4) : 0;
}

/**
 * vmx_sppt_root() - physical address of a VM's SPP table, for SPPTP
 * @kvm: the VM
 *
 * Return: the root's physical address, or 0 if the VM does not use
 * hardware SPP.
 */
u64 vmx_sppt_root(struct kvm *kvm)
{
	struct vmx_sppt *t = &to_kvm_vmx(kvm)->sppt;

	return t->root ? __pa(t->root) : 0;
}

/**
 * vmx_sppt_miss() - build the SPPT levels of a faulting gpa
 * @vcpu: the vCPU that took the SPPT-miss VM exit
 * @gpa: the guest-physical address of the access
 *
 * The exit may come while the CPU delivers an event (an interrupt frame
 * pushed onto a protected page): the event has been requeued and is
 * delivered again when the guest resumes.
 *
 * Return: 1 to resume the guest, 0 if the CPU keeps missing on a complete
 * path while no permission changed (the caller reports it to userspace), or
 * -ENOMEM.
 */
int vmx_sppt_miss(struct kvm_vcpu *vcpu, gpa_t gpa)
{
	struct vmx_sppt *t = &to_kvm_vmx(vcpu->kvm)->sppt;
	struct vcpu_vmx *vmx = to_vmx(vcpu);
	struct kvm *kvm = vcpu->kvm;
	gfn_t gfn = gpa_to_gfn(gpa);
	unsigned long seq;
	bool complete;
	int r = 0, i;

	/* Only a VM with an SPP table runs with the SPP control set. */
	if (WARN_ON_ONCE(!t->root))
		return -EIO;

	++vcpu->stat.spp_sppt_misses;
	/* The CPU cannot miss on a gpa the SPPT does not map. */
	if (!sppt_maps(gfn))
		return 0;
	mutex_lock(&kvm->arch.spp_lock);
	seq = t->seq;
	complete = sppt_leaf(t, gfn);
	if (!complete) {
		/* A new leaf table: fill in all 512 gfns it maps. */
		t->seq++;
		r = vmx_sppt_prepare(t, gfn);
		for (i = 0; !r && i < 512; i++) {
			gfn_t g = (gfn & ~511ULL) + i;
			u32 access = kvm_spp_gfn_access(kvm, g);

			if (access != KVM_SUBPAGE_FULL_ACCESS)
				vmx_sppt_set(t, g, access);
		}
	}
	mutex_unlock(&kvm->arch.spp_lock);
	if (r)
		return r;

	/*
	 * A miss on a complete path is a race with a SET that pruned the path
	 * after this vCPU's translation was cached (another vCPU may have
	 * rebuilt it since): flush this vCPU's stale translations and retry.
	 * Only misses on the same gfn with no SPPT change in between count as
	 * repeats; many of them cannot be a race.
	 */
	if (!complete || vmx->sppt_last_miss != gfn + 1 ||
	    vmx->sppt_last_miss_seq != seq) {
		vmx->sppt_miss_repeats = 0;
	} else if (++vmx->sppt_miss_repeats >= SPPT_MAX_MISS_REPEATS) {
		vmx->sppt_miss_repeats = 0;
		return 0;
	}
	vmx->sppt_last_miss = gfn + 1;
	vmx->sppt_last_miss_seq = seq;
	if (complete)
		kvm_make_request(KVM_REQ_TLB_FLUSH_CURRENT, vcpu);
	return 1;
}
