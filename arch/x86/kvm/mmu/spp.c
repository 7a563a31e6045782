// SPDX-License-Identifier: GPL-2.0
/*
 * EPT-based sub-page write protection (SPP).
 *
 * A VMM can make any 128-byte sub-page of a 4 KiB guest page read-only: the
 * write permission of a page is a 32-bit vector, bit i covering bytes
 * [128 * i, 128 * i + 127].  The vectors of protected pages (those whose
 * vector is not all-ones) live in a maple tree of gfn ranges (see struct
 * spp_block), so the store costs memory only for protected pages, however
 * far apart they are.
 *
 * The permissions are keyed by gfn, independent of memslots (like memory
 * attributes): they apply to whatever memslot maps the gfn, now or later,
 * and outlive memslot deletion and moves.  They cost nothing per guest page:
 * the MMU asks kvm_spp_gfn_protected() (one load for a VM without SPP, a
 * maple tree lookup otherwise) wherever it asks whether a gfn is write-tracked,
 * and a protected gfn disallows huge pages through the memslots' lpage_info.
 *
 * Enforcement without SPP hardware: a protected gfn is never mapped writable
 * (nor by a huge page), so every guest write to it faults and is emulated.
 * The emulator asks kvm_spp_check_emulated_write() before it writes guest
 * memory; a write is let through only if every byte lands in a writable
 * sub-page, otherwise the vCPU exits to userspace with KVM_EXIT_SPP, nothing
 * written and RIP still at the instruction.
 *
 * Enforcement with SPP hardware (VMX, see vmx/spp.c): the protected gfns are
 * still mapped read-only, but their 4 KiB EPT leaves are armed with
 * shadow_spp_mask and the CPU looks the write permission up in a table the
 * vendor module keeps (kvm_x86_ops.spp_update()), so a write to a writable
 * sub-page costs no VM exit at all.  A denied write is an EPT violation
 * that reaches the emulation path above, which classifies it by the same
 * permission store.  A leaf is armed only when SPP is the sole reason it is
 * read-only: not while the gfn holds a guest page table KVM shadows or is
 * write-tracked by another user, whose writes must trap.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/debugfs.h>
#include <linux/kvm_host.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/maple_tree.h>
#include <linux/rcupdate.h>

#include "mmu.h"
#include "mmu_internal.h"
#include "page_track.h"
#include "spp.h"
#include "spte.h"
#include "x86.h"

#include "trace.h"

/* Largest number of pages one KVM_SUBPAGES_{SET,GET}_ACCESS call handles. */
#define KVM_SPP_MAX_PAGES	512

#define SPP_SUBPAGE_SHIFT	7

/*
 * The store is a maple tree keyed by gfn.  An entry covers a range of gfns
 * and is either a value entry, the vector of every gfn of the range, or a
 * struct spp_block, whose vec[gfn - base] is the vector of gfn.  A gfn
 * without an entry allows every write.  One KVM_SUBPAGES_SET_ACCESS stores
 * one entry over its whole range, so the store grows with the number of
 * calls that protect something, not with the number of pages, and a B-tree
 * does not grow with the distance between entries.  A block can be
 * pointed to by several ranges once later calls have cut holes in it.
 *
 * Blocks never change once stored; readers hold rcu_read_lock(), writers
 * hold slots_lock and spp_lock.
 */
struct spp_block {
	gfn_t base;
	u32 nr;		/* vectors */
	u32 live;	/* gfns of the tree that use a vector of the block */
	u32 *vec;
};

static u32 spp_entry_vector(void *entry, gfn_t gfn)
{
	struct spp_block *b = entry;

	if (!entry)
		return KVM_SUBPAGE_FULL_ACCESS;
	if (xa_is_value(entry))
		return (u32)xa_to_value(entry);
	return READ_ONCE(b->vec[gfn - b->base]);
}

static u32 spp_get_vector(struct kvm *kvm, gfn_t gfn)
{
	u32 vector;

	rcu_read_lock();
	vector = spp_entry_vector(mtree_load(&kvm->arch.spp_access, gfn), gfn);
	rcu_read_unlock();
	return vector;
}

/*
 * Call @fn for each protected gfn in [@start, @last], in gfn order.  The
 * caller holds slots_lock, which keeps the store from changing; @fn must
 * not sleep.
 */
typedef void (*spp_gfn_fn_t)(struct kvm *kvm, gfn_t gfn, void *data);

static void spp_walk_protected(struct kvm *kvm, gfn_t start, gfn_t last,
			       spp_gfn_fn_t fn, void *data)
{
	MA_STATE(mas, &kvm->arch.spp_access, start, start);
	void *entry;
	gfn_t gfn;

	lockdep_assert_held(&kvm->slots_lock);
	rcu_read_lock();
	mas_for_each(&mas, entry, last) {
		for (gfn = max(mas.index, start); gfn <= min(mas.last, last); gfn++)
			if (spp_entry_vector(entry, gfn) != KVM_SUBPAGE_FULL_ACCESS)
				fn(kvm, gfn, data);
	}
	rcu_read_unlock();
}

/*
 * Whether every byte of [offset, offset + len) of a page is in a writable
 * sub-page of @vector.  @len is at least 1 and the range is within the page.
 */
static bool spp_range_writable(u32 vector, unsigned int offset,
			       unsigned int len)
{
	unsigned int first = offset >> SPP_SUBPAGE_SHIFT;
	unsigned int last = (offset + len - 1) >> SPP_SUBPAGE_SHIFT;
	u32 mask = GENMASK(last, first);

	return (vector & mask) == mask;
}

/*
 * The first byte of [gpa, gpa + len) that the sub-page permissions deny
 * writing, or INVALID_GPA if every byte may be written.  The range may span
 * pages.
 */
static gpa_t spp_first_denied(struct kvm *kvm, gpa_t gpa, u64 len)
{
	unsigned int off, now, sub;
	u32 vector;

	for (; len; gpa += now, len -= now) {
		off = offset_in_page(gpa);
		now = min_t(u64, len, PAGE_SIZE - off);
		vector = spp_get_vector(kvm, gpa_to_gfn(gpa));
		if (spp_range_writable(vector, off, now))
			continue;
		for (sub = off >> SPP_SUBPAGE_SHIFT; vector & BIT(sub); sub++)
			;
		return max(gpa, (gpa & PAGE_MASK) + (sub << SPP_SUBPAGE_SHIFT));
	}
	return INVALID_GPA;
}

/* Whether the VM uses the hardware path: the CPU applies the permissions. */
static bool spp_hw(struct kvm *kvm)
{
	return kvm_spp_enabled(kvm) && kvm->arch.spp_hw;
}

/*
 * Whether the CPU applies @gfn's sub-page permissions itself once its 4 KiB
 * leaf is mapped: never while the memslot logs dirty pages (the CPU would
 * not log permitted writes), nor above what the CPU's table of permissions
 * maps (kvm_caps.spp_gfn_limit).
 */
static bool spp_cpu_enforces(struct kvm *kvm,
			     const struct kvm_memory_slot *slot, gfn_t gfn)
{
	return spp_hw(kvm) && slot && gfn < kvm_caps.spp_gfn_limit &&
	       !kvm_slot_dirty_track_enabled(slot);
}

/**
 * kvm_spp_spte_mask() - SPTE bits that arm SPP on a write-protected leaf
 * @kvm: the VM
 * @slot: the gfn's memslot
 * @gfn: the guest frame
 * @level: the level of the leaf SPTE being made
 *
 * Only 4 KiB leaves of protected gfns the CPU can check are armed, and not
 * while the memslot logs dirty pages: writes permitted by the CPU would not
 * be logged.  Nor when SPP is not the only reason the leaf is read-only:
 * the gfn holds a guest page table that KVM shadows, or another user
 * write-tracks it; every write to such a gfn must fault.  Caller holds
 * mmu_lock.
 *
 * Return: shadow_spp_mask (set by the vendor module), or 0.
 */
u64 kvm_spp_spte_mask(struct kvm *kvm, const struct kvm_memory_slot *slot,
		      gfn_t gfn, int level)
{
	if (level != PG_LEVEL_4K ||
	    spp_get_vector(kvm, gfn) == KVM_SUBPAGE_FULL_ACCESS)
		return 0;
	return kvm_spp_protected_spte_mask(kvm, slot, gfn);
}

/**
 * kvm_spp_protected_spte_mask() - kvm_spp_spte_mask() for a protected gfn
 * @kvm: the VM
 * @slot: the gfn's memslot
 * @gfn: a gfn the caller knows to be protected, mapped by a 4 KiB leaf
 *
 * Return: shadow_spp_mask, or 0.
 */
u64 kvm_spp_protected_spte_mask(struct kvm *kvm,
				const struct kvm_memory_slot *slot, gfn_t gfn)
{
	if (!spp_cpu_enforces(kvm, slot, gfn) ||
	    kvm_gfn_is_write_tracked(kvm, slot, gfn) ||
	    kvm_mmu_gfn_is_shadowed(kvm, gfn))
		return 0;
	return shadow_spp_mask;
}

struct spp_slot_walk {
	struct kvm_memory_slot *slot;
	bool flush;
};

static void spp_disarm_gfn(struct kvm *kvm, gfn_t gfn, void *data)
{
	struct spp_slot_walk *w = data;

	w->flush |= kvm_mmu_slot_gfn_write_protect(kvm, w->slot, gfn,
						   PG_LEVEL_4K);
}

/**
 * kvm_spp_slot_dirty_logging() - disarm SPP when dirty logging starts
 * @kvm: the VM
 * @slot: the memslot whose KVM_MEM_LOG_DIRTY_PAGES flag changed
 *
 * When @slot starts logging dirty pages, its armed leaves are disarmed (the
 * CPU would not log the writes it permits), with one TLB flush for the
 * whole memslot; every write to a protected gfn then faults and is logged
 * by the emulator.  When logging stops, the leaves stay disarmed until the
 * first write to one faults (kvm_spp_write_fault() re-arms it).
 */
void kvm_spp_slot_dirty_logging(struct kvm *kvm,
				const struct kvm_memory_slot *slot)
{
	/* Only the memslot's rmaps are used: it is not changed. */
	struct spp_slot_walk w = { .slot = (struct kvm_memory_slot *)slot };

	if (!spp_hw(kvm) || !kvm_slot_dirty_track_enabled(slot))
		return;
	write_lock(&kvm->mmu_lock);
	spp_walk_protected(kvm, slot->base_gfn,
			   slot->base_gfn + slot->npages - 1,
			   spp_disarm_gfn, &w);
	if (w.flush)
		kvm_flush_remote_tlbs_memslot(kvm, slot);
	write_unlock(&kvm->mmu_lock);
}

static void spp_disallow_lpage(struct kvm *kvm, gfn_t gfn, void *data)
{
	kvm_mmu_gfn_disallow_lpage(data, gfn);
}

/**
 * kvm_spp_init_memslot() - apply the permissions to a new memslot
 * @kvm: the VM
 * @slot: a memslot being created or moved, not yet visible to vCPUs
 *
 * Protected gfns are never mapped by huge pages: count them in @slot's
 * lpage_info like the permissions had been set after the memslot appeared.
 */
void kvm_spp_init_memslot(struct kvm *kvm, struct kvm_memory_slot *slot)
{
	if (!kvm_spp_enabled(kvm))
		return;
	spp_walk_protected(kvm, slot->base_gfn,
			   slot->base_gfn + slot->npages - 1,
			   spp_disallow_lpage, slot);
}

/**
 * kvm_spp_check_extension() - value of KVM_CHECK_EXTENSION(KVM_CAP_X86_SPP)
 * @kvm: the VM, or NULL when asked on /dev/kvm
 *
 * Return: the largest number of pages one KVM_SUBPAGES_SET_ACCESS or
 * KVM_SUBPAGES_GET_ACCESS call accepts, ORed with KVM_SPP_CAP_HW_ACCELERATED
 * when the CPU enforces the permissions itself.
 */
int kvm_spp_check_extension(struct kvm *kvm)
{
	bool hw = kvm_caps.has_spp;

	/* A VM that enabled SPP reports the path it really uses. */
	if (kvm && kvm_spp_enabled(kvm))
		hw = spp_hw(kvm);
	return KVM_SPP_MAX_PAGES | (hw ? KVM_SPP_CAP_HW_ACCELERATED : 0);
}

/*
 * debugfs "spp_store": what SPP holds for the VM, counted rather than
 * measured so that the numbers do not depend on the allocator:
 *
 *   protected_pages  gfns with a protected sub-page
 *   store_entries    ranges of the maple tree with an entry
 *   store_blocks     struct spp_block allocated
 *   store_vectors    vectors those blocks hold
 *   store_nodes      maple tree nodes (all levels)
 *   store_bytes      store_nodes * sizeof(struct maple_node) +
 *                    store_blocks * sizeof(struct spp_block) +
 *                    store_vectors * sizeof(u32)
 *   sppt_pages       4 KiB pages of the SPP table (hardware path)
 *
 * Every range of the tree, empty ones included, is visited in index order,
 * so that every leaf is met and the nodes of one level are met in
 * contiguous runs; the ancestors of a leaf are found through the parent
 * pointers (256-byte aligned, bit 0 set at the root, see maple_tree.h).
 */
static int spp_store_show(struct seq_file *m, void *v)
{
	unsigned long pages = 0, entries = 0, nodes = 0, sppt = 0;
	struct maple_node *last[MAPLE_HEIGHT_MAX + 1] = {}, *node;
	unsigned long blocks, vectors, parent;
	struct kvm *kvm = m->private;
	struct ma_state mas;
	void *entry;
	int level;
	gfn_t gfn;

	mas_init(&mas, &kvm->arch.spp_access, 0);

	mutex_lock(&kvm->slots_lock);
	rcu_read_lock();
	for (entry = mas_walk(&mas); ; entry = mas_next_range(&mas, ULONG_MAX)) {
		if (entry) {
			entries++;
			for (gfn = mas.index; gfn <= mas.last; gfn++)
				pages += spp_entry_vector(entry, gfn) !=
					 KVM_SUBPAGE_FULL_ACCESS;
		}
		node = mas.status == ma_active ?
		       (void *)((unsigned long)mas.node & ~MAPLE_NODE_MASK) : NULL;
		for (level = 0; node && level <= MAPLE_HEIGHT_MAX; level++) {
			if (last[level] == node)
				break;
			last[level] = node;
			nodes++;
			parent = (unsigned long)node->parent;
			node = parent & 1 ? NULL :
			       (void *)(parent & ~MAPLE_NODE_MASK);
		}
		if (mas.last == ULONG_MAX || mas.status != ma_active)
			break;
	}
	rcu_read_unlock();
	blocks = kvm->arch.spp_blocks;
	vectors = kvm->arch.spp_block_vectors;
	if (spp_hw(kvm)) {
		mutex_lock(&kvm->arch.spp_lock);
		sppt = kvm_x86_call(spp_table_pages)(kvm);
		mutex_unlock(&kvm->arch.spp_lock);
	}
	mutex_unlock(&kvm->slots_lock);

	seq_printf(m, "protected_pages %lu\nstore_entries %lu\nstore_blocks %lu\nstore_vectors %lu\nstore_nodes %lu\nstore_bytes %lu\nsppt_pages %lu\n",
		   pages, entries, blocks, vectors, nodes,
		   nodes * sizeof(struct maple_node) +
		   blocks * sizeof(struct spp_block) + vectors * sizeof(u32),
		   sppt);
	return 0;
}

static int spp_store_open(struct inode *inode, struct file *file)
{
	struct kvm *kvm = inode->i_private;
	int r;

	if (!kvm_get_kvm_safe(kvm))
		return -ENOENT;
	r = single_open(file, spp_store_show, kvm);
	if (r < 0)
		kvm_put_kvm(kvm);
	return r;
}

static int spp_store_release(struct inode *inode, struct file *file)
{
	struct kvm *kvm = inode->i_private;

	kvm_put_kvm(kvm);
	return single_release(inode, file);
}

static const struct file_operations spp_store_fops = {
	.owner		= THIS_MODULE,
	.open		= spp_store_open,
	.read		= seq_read,
	.llseek		= seq_lseek,
	.release	= spp_store_release,
};

/**
 * kvm_vm_ioctl_enable_spp() - KVM_ENABLE_CAP(KVM_CAP_X86_SPP) on a VM
 * @kvm: the VM
 * @cap: the request; args[0] may hold KVM_SPP_ENABLE_SOFTWARE, flags and
 *	 the other arguments must be zero
 *
 * When the CPU can enforce SPP, the VM gets an SPP table and its vCPUs run
 * with hardware SPP, unless userspace asks for the software path.
 *
 * Return: 0 on success, -EINVAL for unknown flags or arguments, -EEXIST if
 * SPP is already enabled, -EBUSY if the VM already has vCPUs, -ENOMEM.
 */
int kvm_vm_ioctl_enable_spp(struct kvm *kvm, struct kvm_enable_cap *cap)
{
	int r;

	if (cap->flags || (cap->args[0] & ~KVM_SPP_ENABLE_SOFTWARE) ||
	    cap->args[1] || cap->args[2] || cap->args[3])
		return -EINVAL;
	/*
	 * KVM cannot emulate writes to private memory, and a gfn of a VM with
	 * private memory can turn private at any time (memory attributes).
	 */
	if (kvm->arch.vm_type != KVM_X86_DEFAULT_VM)
		return -EINVAL;

	mutex_lock(&kvm->lock);
	if (kvm->arch.spp_enabled) {
		r = -EEXIST;
	} else if (kvm->created_vcpus) {
		r = -EBUSY;
	} else {
		mutex_init(&kvm->arch.spp_lock);
		mt_init_flags(&kvm->arch.spp_access,
			      MT_FLAGS_USE_RCU | MT_FLAGS_LOCK_EXTERN);
		mt_set_external_lock(&kvm->arch.spp_access,
				     &kvm->arch.spp_lock);
		kvm->arch.spp_hw = kvm_caps.has_spp &&
				   !(cap->args[0] & KVM_SPP_ENABLE_SOFTWARE);
		r = kvm->arch.spp_hw ? kvm_x86_call(spp_init_vm)(kvm) : 0;
		if (!r) {
			/* Pairs with smp_load_acquire() in kvm_spp_enabled(). */
			smp_store_release(&kvm->arch.spp_enabled, true);
			if (!IS_ERR_OR_NULL(kvm->debugfs_dentry))
				debugfs_create_file("spp_store", 0444,
						    kvm->debugfs_dentry, kvm,
						    &spp_store_fops);
		}
	}
	mutex_unlock(&kvm->lock);
	return r;
}

/*
 * The checks shared by SET and GET that need no memslot: the errno of the
 * first failing one, in the order the API documents.
 */
static int spp_check_args(struct kvm *kvm, const struct kvm_subpage_access *sa)
{
	u64 end = sa->base_gfn + sa->npages;

	if (!kvm_spp_enabled(kvm))
		return -ENXIO;
	if (sa->flags || !sa->npages || end < sa->base_gfn ||
	    end > kvm_mmu_max_gfn() + 1)
		return -EINVAL;
	if (sa->npages > KVM_SPP_MAX_PAGES)
		return -E2BIG;
	return 0;
}

static struct spp_block *spp_block_alloc(struct kvm *kvm, gfn_t base, u32 nr,
					 const u32 *vec)
{
	struct spp_block *b = kmalloc(sizeof(*b), GFP_KERNEL_ACCOUNT);

	if (!b)
		return NULL;
	b->vec = kmemdup_array(vec, nr, sizeof(*vec), GFP_KERNEL_ACCOUNT);
	if (!b->vec) {
		kfree(b);
		return NULL;
	}
	b->base = base;
	b->nr = nr;
	b->live = 0;
	kvm->arch.spp_blocks++;
	kvm->arch.spp_block_vectors += nr;
	return b;
}

/* Free @b once no reader can see it. */
static void spp_block_free(struct kvm *kvm, struct spp_block *b)
{
	kvm->arch.spp_blocks--;
	kvm->arch.spp_block_vectors -= b->nr;
	kfree_rcu_mightsleep(b->vec);
	kfree_rcu_mightsleep(b);
}

/*
 * The entry for @nr gfns from @base with vectors @vec: NULL if they all
 * allow every write, a value entry if they are all the same, else a new
 * block (or ERR_PTR(-ENOMEM)).
 */
static void *spp_make_entry(struct kvm *kvm, gfn_t base, u32 nr,
			    const u32 *vec)
{
	struct spp_block *b;
	u32 i;

	for (i = 1; i < nr && vec[i] == vec[0]; i++)
		;
	if (i == nr)
		return vec[0] == KVM_SUBPAGE_FULL_ACCESS ? NULL :
		       xa_mk_value(vec[0]);
	b = spp_block_alloc(kvm, base, nr, vec);
	return b ?: ERR_PTR(-ENOMEM);
}

/* A store of one entry over a range, prepared so that it cannot fail. */
struct spp_store_op {
	struct ma_state mas;
	void *entry;
	unsigned int nr;
	struct spp_use {
		struct spp_block *b;
		u32 gfns;
	} *uses;
};

/* What one KVM_SUBPAGES_SET_ACCESS changes, per page. */
struct spp_change {
	DECLARE_BITMAP(newly, KVM_SPP_MAX_PAGES);	/* protected, was not */
	DECLARE_BITMAP(freed, KVM_SPP_MAX_PAGES);	/* was protected, is not */
	bool any_newly, any_freed, any_changed;
	u32 old[KVM_SPP_MAX_PAGES];
	struct spp_store_op op;
	/* Blocks the store leaves mostly unused, and the new one. */
	struct spp_block *sparse[KVM_SPP_MAX_PAGES + 1];
	unsigned int nr_sparse;
};

/* The old vectors of @sa's range, and what changes. */
static void spp_diff(struct kvm *kvm, const struct kvm_subpage_access *sa,
		     const u32 *vec, struct spp_change *c)
{
	gfn_t first = sa->base_gfn, last = first + sa->npages - 1, gfn;
	struct ma_state mas;
	void *entry;
	u32 i;

	mas_init(&mas, &kvm->arch.spp_access, first);
	for (i = 0; i < sa->npages; i++)
		c->old[i] = KVM_SUBPAGE_FULL_ACCESS;
	mas_for_each(&mas, entry, last)
		for (gfn = max(mas.index, first); gfn <= min(mas.last, last); gfn++)
			c->old[gfn - first] = spp_entry_vector(entry, gfn);
	for (i = 0; i < sa->npages; i++) {
		bool was = c->old[i] != KVM_SUBPAGE_FULL_ACCESS;
		bool is = vec[i] != KVM_SUBPAGE_FULL_ACCESS;

		if (is && !was) {
			__set_bit(i, c->newly);
			c->any_newly = true;
		} else if (was && !is) {
			__set_bit(i, c->freed);
			c->any_freed = true;
		} else if (c->old[i] != vec[i]) {
			c->any_changed = true;
		}
		trace_kvm_spp_set_access(first + i, c->old[i], vec[i]);
	}
}

/*
 * Prepare storing @entry over [@first, @last]: the tree nodes it needs and
 * the ranges of blocks it replaces.  Caller holds spp_lock.
 * Return: 0 or -ENOMEM, with nothing changed.
 */
static int spp_store_prepare(struct kvm *kvm, struct spp_store_op *op,
			     gfn_t first, gfn_t last, void *entry)
{
	struct ma_state *mas = &op->mas;
	unsigned int i = 0;
	void *old;
	int r;

	lockdep_assert_held(&kvm->arch.spp_lock);
	mas_init(mas, &kvm->arch.spp_access, first);
	op->entry = entry;
	op->nr = 0;
	op->uses = NULL;
	mas_for_each(mas, old, last)
		op->nr += !xa_is_value(old);
	if (op->nr) {
		op->uses = kmalloc_array(op->nr, sizeof(*op->uses),
					 GFP_KERNEL_ACCOUNT);
		if (!op->uses)
			return -ENOMEM;
		mas_set(mas, first);
		mas_for_each(mas, old, last) {
			if (xa_is_value(old) || WARN_ON_ONCE(i == op->nr))
				continue;
			op->uses[i].b = old;
			op->uses[i++].gfns = min(mas->last, last) -
					     max(mas->index, first) + 1;
		}
		op->nr = i;
	}
	mas_set_range(mas, first, last);
	r = mas_preallocate(mas, entry, GFP_KERNEL_ACCOUNT);
	if (r) {
		kfree(op->uses);
		return r;
	}
	return 0;
}

/*
 * Make the prepared store.  A block no range uses any more is freed; a
 * block of which ranges use less than half goes to @sparse (if not NULL,
 * room for op->nr blocks) for spp_compact().
 */
static void spp_store_commit(struct kvm *kvm, struct spp_store_op *op,
			     struct spp_block **sparse, unsigned int *nr_sparse)
{
	struct spp_block *b;
	unsigned int i, j;

	mas_store_prealloc(&op->mas, op->entry);
	if (op->entry && !xa_is_value(op->entry)) {
		b = op->entry;
		b->live += op->mas.last - op->mas.index + 1;
	}
	for (i = 0; i < op->nr; i++)
		op->uses[i].b->live -= op->uses[i].gfns;
	for (i = 0; i < op->nr; i++) {
		b = op->uses[i].b;
		if (!b)
			continue;
		for (j = i + 1; j < op->nr; j++)
			if (op->uses[j].b == b)
				op->uses[j].b = NULL;
		if (!b->live)
			spp_block_free(kvm, b);
		else if (sparse && b->live < b->nr / 2)
			sparse[(*nr_sparse)++] = b;
	}
	kfree(op->uses);
}

/* spp_store_prepare() and spp_store_commit(), not compacting. */
static int spp_store(struct kvm *kvm, gfn_t first, gfn_t last, void *entry)
{
	struct spp_store_op op;
	int r;

	r = spp_store_prepare(kvm, &op, first, last, entry);
	if (!r)
		spp_store_commit(kvm, &op, NULL, NULL);
	return r;
}

static u32 spp_nr_protected(const u32 *vec, u32 nr)
{
	u32 i, n = 0;

	for (i = 0; i < nr; i++)
		n += vec[i] != KVM_SUBPAGE_FULL_ACCESS;
	return n;
}

/*
 * Best effort, changing no vector: give each range that uses @b entries of
 * its own (none for the runs that allow every write), so that the memory
 * of a block that is mostly unused, or mostly allows every write, goes.
 */
static void spp_compact(struct kvm *kvm, struct spp_block *b)
{
	MA_STATE(mas, &kvm->arch.spp_access, b->base, b->base);
	gfn_t first, last, end = b->base + b->nr - 1;
	void *entry, *e;
	u32 i, j, off;
	bool done;

	for (;;) {
		/* The next range that uses @b. */
		do {
			entry = mas_find(&mas, end);
		} while (entry && entry != b);
		if (!entry)
			return;
		first = mas.index;
		last = min(mas.last, end);
		/* Its runs of vectors that are all protected or all not. */
		off = first - b->base;
		for (i = 0; i <= last - first; i = j) {
			bool prot = b->vec[off + i] != KVM_SUBPAGE_FULL_ACCESS;

			for (j = i + 1; j <= last - first &&
			     (b->vec[off + j] != KVM_SUBPAGE_FULL_ACCESS) == prot;
			     j++)
				;
			e = prot ? spp_make_entry(kvm, first + i, j - i,
						  &b->vec[off + i]) : NULL;
			if (IS_ERR(e))
				return;
			/* The store that ends the use of @b frees it. */
			done = b->live == j - i;
			if (spp_store(kvm, first + i, first + j - 1, e)) {
				if (e && !xa_is_value(e))
					spp_block_free(kvm, e);
				return;
			}
			if (done)
				return;
		}
		mas_set(&mas, last + 1);
	}
}

/*
 * Count the protection changes of [@from, @to) (indexes in @sa) in @slot's
 * lpage_info, one update per huge page, so that no huge page maps a
 * protected gfn; and, if @wrprot, write-protect the newly protected gfns.
 * Caller holds mmu_lock for write.  Return: true if TLBs must be flushed.
 */
static bool spp_update_slot(struct kvm *kvm, struct kvm_memory_slot *slot,
			    const struct kvm_subpage_access *sa,
			    struct spp_change *c, u32 from, u32 to, bool wrprot)
{
	gfn_t gfn, region = 0, region_gfn = 0;
	bool flush = false;
	u32 i, run = to;
	int count = 0, d;

	for (i = from; i <= to; i++) {
		d = 0;
		if (i < to)
			d = test_bit(i, c->newly) ? 1 :
			    test_bit(i, c->freed) ? -1 : 0;
		gfn = sa->base_gfn + i;
		if (count &&
		    (i == to || (d && gfn >> KVM_HPAGE_GFN_SHIFT(PG_LEVEL_2M) !=
				      region))) {
			kvm_mmu_gfn_update_lpage_count(slot, region_gfn, count);
			count = 0;
		}
		if (d) {
			if (!count) {
				region = gfn >> KVM_HPAGE_GFN_SHIFT(PG_LEVEL_2M);
				region_gfn = gfn;
			}
			count += d;
		}
		if (!wrprot)
			continue;
		if (d > 0 && run == to)
			run = i;
		if (d <= 0 && run != to) {
			flush |= kvm_mmu_slot_spp_protect(kvm, slot,
							  sa->base_gfn + run,
							  gfn);
			run = to;
		}
	}
	return flush;
}

/* spp_update_slot() over every memslot, in every address space. */
static bool spp_update_slots(struct kvm *kvm,
			     const struct kvm_subpage_access *sa,
			     struct spp_change *c, bool wrprot)
{
	gfn_t start = sa->base_gfn, end = sa->base_gfn + sa->npages;
	struct kvm_memslot_iter iter;
	bool flush = false;
	gfn_t from, to;
	int as_id;

	lockdep_assert_held_write(&kvm->mmu_lock);
	for (as_id = 0; as_id < kvm_arch_nr_memslot_as_ids(kvm); as_id++) {
		kvm_for_each_memslot_in_gfn_range(&iter, __kvm_memslots(kvm, as_id),
						  start, end) {
			from = max(start, iter.slot->base_gfn);
			to = min(end, iter.slot->base_gfn + iter.slot->npages);
			flush |= spp_update_slot(kvm, iter.slot, sa, c,
						 from - start, to - start,
						 wrprot);
		}
	}
	return flush;
}

/* Whether the new vectors @vec of @sa deny writing a byte of @r. */
static bool spp_claim_denied(const struct kvm_spp_range *r,
			     const struct kvm_subpage_access *sa, const u32 *vec)
{
	gpa_t gpa = r->gpa, end = r->gpa + r->len;
	unsigned int off, now;
	gfn_t gfn;

	for (; gpa < end; gpa += now) {
		off = offset_in_page(gpa);
		now = min_t(u64, end - gpa, PAGE_SIZE - off);
		gfn = gpa_to_gfn(gpa);
		if (gfn < sa->base_gfn || gfn - sa->base_gfn >= sa->npages)
			continue;
		if (!spp_range_writable(vec[gfn - sa->base_gfn], off, now))
			return true;
	}
	return false;
}

/*
 * A SET must not deny a write KVM has committed to make for a vCPU that runs
 * a nested guest (see kvm_spp_claim()): -EBUSY, nothing changed.
 */
static int spp_check_claims(struct kvm *kvm, const struct kvm_subpage_access *sa,
			    const u32 *vec)
{
	struct kvm_vcpu *vcpu;
	unsigned long i;
	int c;

	lockdep_assert_held(&kvm->arch.spp_lock);
	kvm_for_each_vcpu(i, vcpu, kvm)
		for (c = 0; c < vcpu->arch.spp_nr_claims; c++)
			if (spp_claim_denied(&vcpu->arch.spp_claims[c], sa, vec))
				return -EBUSY;
	return 0;
}

/* Wait for the vCPUs that checked a write against the old vectors. */
static void spp_wait_checks(struct kvm *kvm)
{
	struct kvm_vcpu *vcpu;
	unsigned long i;

	/* Pairs with smp_mb() in spp_note_check(). */
	smp_mb();
	kvm_for_each_vcpu(i, vcpu, kvm) {
		if (READ_ONCE(vcpu->arch.spp_checked)) {
			synchronize_srcu_expedited(&kvm->srcu);
			return;
		}
	}
}

static int spp_set_access(struct kvm *kvm, const struct kvm_subpage_access *sa,
			  const u32 *vec)
{
	bool protect = false, hw = spp_hw(kvm), wrprot, zap, flush;
	struct spp_change *c;
	LIST_HEAD(freed);
	void *entry;
	unsigned long i;
	int r;

	lockdep_assert_held(&kvm->slots_lock);

	for (i = 0; i < sa->npages; i++)
		protect |= vec[i] != KVM_SUBPAGE_FULL_ACCESS;
	/* Not zeroed: spp_diff() and the store fill what is read. */
	c = kmalloc(sizeof(*c), GFP_KERNEL_ACCOUNT);
	if (!c)
		return -ENOMEM;
	bitmap_zero(c->newly, KVM_SPP_MAX_PAGES);
	bitmap_zero(c->freed, KVM_SPP_MAX_PAGES);
	c->any_newly = false;
	c->any_freed = false;
	c->any_changed = false;
	c->nr_sparse = 0;

	/* spp_lock orders the update against vCPUs claiming memory. */
	mutex_lock(&kvm->arch.spp_lock);
	r = protect ? spp_check_claims(kvm, sa, vec) : 0;
	if (r)
		goto fail;
	spp_diff(kvm, sa, vec, c);
	entry = spp_make_entry(kvm, sa->base_gfn, sa->npages, vec);
	r = PTR_ERR_OR_ZERO(entry);
	if (r)
		goto fail;
	r = spp_store_prepare(kvm, &c->op, sa->base_gfn,
			      sa->base_gfn + sa->npages - 1, entry);
	if (r) {
		if (entry && !xa_is_value(entry))
			spp_block_free(kvm, entry);
		goto fail;
	}

	/*
	 * Hardware path: the SPPT gets the new vectors of protected gfns before
	 * their EPT leaves can be armed, where its levels exist; missing levels
	 * are built from the store at the CPU's first SPPT miss on them.
	 * Unprotected gfns are cleared below.
	 */
	if (hw) {
		for (i = 0; i < sa->npages; i++)
			if (vec[i] != KVM_SUBPAGE_FULL_ACCESS)
				kvm_x86_call(spp_update)(kvm, sa->base_gfn + i,
							 vec[i], NULL);
	}

	/*
	 * The store changes outside mmu_lock: a fault decides whether a leaf
	 * is writable (or armed) under mmu_lock, so one that read the old
	 * vectors made its SPTE before the write-protection below, which
	 * takes mmu_lock for write, and one that reads them after sees the
	 * new ones.  Blocks left mostly unused, and a new block that mostly
	 * allows every write, are split into smaller entries (best effort,
	 * with no vector changing).
	 */
	spp_store_commit(kvm, &c->op, c->sparse, &c->nr_sparse);
	if (entry && !xa_is_value(entry) &&
	    spp_nr_protected(((struct spp_block *)entry)->vec, sa->npages) <
	    sa->npages / 2)
		c->sparse[c->nr_sparse++] = entry;
	for (i = 0; i < c->nr_sparse; i++)
		spp_compact(kvm, c->sparse[i]);

	/*
	 * Newly protected gfns are write-protected in one pass (a huge leaf
	 * is split at the next write fault: no huge page may map them now);
	 * with the TDP MMU and SPP hardware, their 4 KiB leaves are armed as
	 * the fault path would arm them.  The legacy MMU's leaves are zapped
	 * on the hardware path, to be mapped back armed.
	 */
	wrprot = !hw || tdp_mmu_enabled;
	write_lock(&kvm->mmu_lock);
	flush = spp_update_slots(kvm, sa, c, wrprot);
	write_unlock(&kvm->mmu_lock);

	if (hw) {
		for (i = 0; i < sa->npages; i++) {
			if (vec[i] != KVM_SUBPAGE_FULL_ACCESS)
				continue;
			kvm_x86_call(spp_update)(kvm, sa->base_gfn + i, vec[i],
						 &freed);
		}
		/* Armed leaves with new vectors: no TLB may keep the old ones. */
		flush |= c->any_changed;
	}
	mutex_unlock(&kvm->arch.spp_lock);

	/*
	 * Hardware path: unprotected gfns lose their armed leaves (writes the
	 * CPU permits through them would not be seen by dirty logging), and
	 * so do newly protected ones on the legacy MMU.  A zap bumps the MMU
	 * invalidation sequence, so a racing fault is retried.  The pruned
	 * SPPT tables go once no TLB can cache their entries.
	 */
	zap = hw && (c->any_freed || (c->any_newly && !wrprot));
	if (zap)
		kvm_zap_gfn_range(kvm, sa->base_gfn, sa->base_gfn + sa->npages);
	if (flush || !list_empty(&freed))
		kvm_flush_remote_tlbs(kvm);
	put_pages_list(&freed);

	/*
	 * A vCPU may be making a write it checked against the old vectors:
	 * checks and writes run in an SRCU read-side section, so wait for
	 * it, unless no vCPU checked a write since it last entered the guest
	 * (spp_note_check()).  No lock a vCPU could wait for is held here but
	 * slots_lock, as when memslots change.
	 */
	if (protect)
		spp_wait_checks(kvm);
	kfree(c);
	return 0;

fail:
	mutex_unlock(&kvm->arch.spp_lock);
	kfree(c);
	return r;
}

static void spp_get_access(struct kvm *kvm, const struct kvm_subpage_access *sa,
			   u32 *vec)
{
	unsigned long i;

	for (i = 0; i < sa->npages; i++)
		vec[i] = spp_get_vector(kvm, sa->base_gfn + i);
}

/**
 * kvm_vm_ioctl_subpages_access() - KVM_SUBPAGES_SET_ACCESS and _GET_ACCESS
 * @kvm: the VM
 * @ioctl: KVM_SUBPAGES_SET_ACCESS or KVM_SUBPAGES_GET_ACCESS
 * @argp: user pointer to struct kvm_subpage_access
 *
 * SET stores the write-permission vectors of a range of gfns and changes
 * the protection of the pages at once for all vCPUs; it either applies the
 * whole range or nothing.  GET reads the vectors back.  The range need not
 * be mapped by a memslot: permissions belong to gfns, not to memslots.
 *
 * Return: 0 on success; -ENXIO if SPP is not enabled, -EINVAL for bad flags
 * or range, -E2BIG for too many pages, -EFAULT for a bad user pointer,
 * -EBUSY if SET would deny a write KVM makes for a vCPU's nested guest
 * (kvm_spp_claim()), -ENOMEM.
 */
int kvm_vm_ioctl_subpages_access(struct kvm *kvm, unsigned int ioctl,
				 void __user *argp)
{
	struct kvm_subpage_access sa;
	void __user *map;
	u32 *vec;
	int r;

	if (copy_from_user(&sa, argp, sizeof(sa)))
		return -EFAULT;
	r = spp_check_args(kvm, &sa);
	if (r)
		return r;
	map = u64_to_user_ptr(sa.access_map);

	if (ioctl == KVM_SUBPAGES_SET_ACCESS) {
		vec = memdup_array_user(map, sa.npages, sizeof(*vec));
		if (IS_ERR(vec))
			return PTR_ERR(vec);
		mutex_lock(&kvm->slots_lock);
		r = spp_set_access(kvm, &sa, vec);
		mutex_unlock(&kvm->slots_lock);
		kfree(vec);
		return r;
	}

	vec = kmalloc_array(sa.npages, sizeof(*vec), GFP_KERNEL_ACCOUNT);
	if (!vec)
		return -ENOMEM;
	spp_get_access(kvm, &sa, vec);
	r = 0;
	if (copy_to_user(map, vec, sa.npages * sizeof(*vec)))
		r = -EFAULT;
	kfree(vec);
	return r;
}

/**
 * kvm_spp_destroy_vm() - free the permission store of a VM
 * @kvm: the VM
 */
void kvm_spp_destroy_vm(struct kvm *kvm)
{
	MA_STATE(mas, &kvm->arch.spp_access, 0, 0);
	struct spp_block *b;
	void *entry;

	if (!kvm->arch.spp_enabled)
		return;
	mutex_lock(&kvm->arch.spp_lock);
	mas_for_each(&mas, entry, ULONG_MAX) {
		if (xa_is_value(entry))
			continue;
		b = entry;
		b->live -= mas.last - mas.index + 1;
		if (!b->live) {
			kfree(b->vec);
			kfree(b);
		}
	}
	/* No reader is left: free the nodes now, not after a grace period. */
	mt_clear_in_rcu(&kvm->arch.spp_access);
	__mt_destroy(&kvm->arch.spp_access);
	mutex_unlock(&kvm->arch.spp_lock);
}

/**
 * kvm_spp_gfn_access() - the write-permission vector of a gfn
 * @kvm: a VM with sub-page write protection enabled
 * @gfn: the guest frame
 *
 * Return: the 32-bit vector, KVM_SUBPAGE_FULL_ACCESS if @gfn is not
 * protected.
 */
u32 kvm_spp_gfn_access(struct kvm *kvm, gfn_t gfn)
{
	return spp_get_vector(kvm, gfn);
}
EXPORT_SYMBOL_GPL(kvm_spp_gfn_access);

/**
 * kvm_spp_gfn_protected() - whether a gfn has a protected sub-page
 * @kvm: the VM
 * @gfn: the guest frame
 *
 * Return: true if some sub-page of @gfn is write-protected.
 */
bool kvm_spp_gfn_protected(struct kvm *kvm, gfn_t gfn)
{
	return kvm_spp_enabled(kvm) &&
	       spp_get_vector(kvm, gfn) != KVM_SUBPAGE_FULL_ACCESS;
}

/*
 * The next KVM_RUN after a KVM_EXIT_SPP does what userspace put in
 * run->spp.action:
 *
 * - KVM_SPP_ACTION_RETRY: re-enter at RIP (the VMM changed the permissions,
 *   moved RIP, or wants the exit again);
 * - KVM_SPP_ACTION_SKIP: emulate the instruction again with the denied write
 *   dropped, so that it completes as if the write had been made to ROM
 *   (RIP, registers, interrupt shadow and single-step as for any emulated
 *   instruction);
 * - KVM_SPP_ACTION_ALLOW: emulate the instruction again and let the denied
 *   write through this once; the permissions do not change.
 *
 * SKIP and ALLOW apply to the write of the same gpa and size that was
 * denied, by the instruction at RIP when KVM_RUN is called; they need an
 * exit with insn_len != 0 (KVM emulated the instruction).  Anything else
 * fails KVM_RUN with -EINVAL and changes nothing.
 *
 * An instruction may make several denied writes (a write denied on both
 * pages it crosses, the runs of FXSAVE): emulating it again after an answer
 * can end in the exit for the next one.  The answers are kept until the
 * instruction completes or userspace answers RETRY, so that each exit makes
 * progress; more than KVM_SPP_MAX_ANSWERS of them fail KVM_RUN with -E2BIG
 * (userspace then has to change the permissions and retry).
 */
static int complete_spp_exit(struct kvm_vcpu *vcpu)
{
	struct kvm_vcpu_arch *arch = &vcpu->arch;
	u8 action = vcpu->run->spp.action;
	int r;

	if (action == KVM_SPP_ACTION_RETRY) {
		arch->spp_nr_answers = 0;
		return 1;
	}
	r = -EINVAL;
	if ((action == KVM_SPP_ACTION_SKIP || action == KVM_SPP_ACTION_ALLOW) &&
	    arch->spp_denied_bytes)
		r = arch->spp_nr_answers < KVM_SPP_MAX_ANSWERS ? 0 : -E2BIG;
	if (r) {
		arch->complete_userspace_io = complete_spp_exit;
		return r;
	}
	trace_kvm_spp_resume(vcpu->vcpu_id, arch->spp_denied_gpa, action);
	arch->spp_answers[arch->spp_nr_answers].gpa = arch->spp_denied_gpa;
	arch->spp_answers[arch->spp_nr_answers].bytes = arch->spp_denied_bytes;
	arch->spp_answers[arch->spp_nr_answers++].action = action;
	arch->spp_denied_bytes = 0;
	arch->spp_resuming = true;
	r = kvm_emulate_instruction(vcpu, EMULTYPE_CHECK_WRITES);
	arch->spp_resuming = false;
	/* No new exit for the instruction: it is done with the answers. */
	if (!arch->spp_denied_bytes)
		arch->spp_nr_answers = 0;
	return r;
}

/*
 * What to do with a denied write of @bytes at @gpa: exit, or the action
 * userspace chose for it (see complete_spp_exit()).  @consume: the write
 * happens now, so the answer is used up.
 */
static u8 spp_resume_action(struct kvm_vcpu *vcpu, gpa_t gpa,
			    unsigned int bytes, bool consume)
{
	struct kvm_vcpu_arch *arch = &vcpu->arch;
	u8 action;
	int i;

	if (!arch->spp_resuming)
		return KVM_SPP_ACTION_RETRY;
	for (i = 0; i < arch->spp_nr_answers; i++) {
		if (arch->spp_answers[i].gpa != gpa ||
		    arch->spp_answers[i].bytes != bytes)
			continue;
		action = arch->spp_answers[i].action;
		if (consume)
			arch->spp_answers[i].action = KVM_SPP_ACTION_RETRY;
		return action;
	}
	return KVM_SPP_ACTION_RETRY;
}

/*
 * Exit to userspace for a denied write of @bytes at @gpa; @bytes is 0 when
 * the access was not emulated (then only a retry can answer the exit).
 */
static void spp_prepare_exit(struct kvm_vcpu *vcpu, gpa_t gpa,
			     unsigned int bytes, unsigned int insn_len,
			     u32 flags)
{
	struct kvm_vcpu_arch *arch = &vcpu->arch;
	struct kvm_run *run = vcpu->run;
	int i, n = 0;

	/* Answers used up (e.g. by earlier iterations of a rep) go. */
	for (i = 0; i < arch->spp_nr_answers; i++)
		if (arch->spp_answers[i].action != KVM_SPP_ACTION_RETRY)
			arch->spp_answers[n++] = arch->spp_answers[i];
	arch->spp_nr_answers = n;
	run->exit_reason = KVM_EXIT_SPP;
	run->spp.gpa = gpa;
	run->spp.flags = flags;
	run->spp.insn_len = insn_len;
	run->spp.action = KVM_SPP_ACTION_RETRY;
	memset(run->spp.pad, 0, sizeof(run->spp.pad));
	vcpu->arch.spp_denied_gpa = gpa;
	vcpu->arch.spp_denied_bytes = insn_len ? bytes : 0;
	vcpu->arch.complete_userspace_io = complete_spp_exit;
	++vcpu->stat.spp_exits;
	trace_kvm_spp_exit(vcpu->vcpu_id, gpa, insn_len, flags);
}

static u32 spp_exit_flags(struct kvm *kvm)
{
	return spp_hw(kvm) ? 0 : KVM_SPP_EXIT_EMULATED;
}

/* Whether @gfn's 4 KiB leaf gets the SPP bit when it is mapped now. */
static bool spp_can_arm(struct kvm_vcpu *vcpu, gfn_t gfn)
{
	struct kvm_memory_slot *slot = kvm_vcpu_gfn_to_memslot(vcpu, gfn);
	u64 mask;

	read_lock(&vcpu->kvm->mmu_lock);
	mask = kvm_spp_spte_mask(vcpu->kvm, slot, gfn, PG_LEVEL_4K);
	read_unlock(&vcpu->kvm->mmu_lock);
	return mask;
}

/**
 * kvm_spp_fault_gpa() - the protected guest-physical address of a write fault
 * @vcpu: the vCPU
 * @cr2_or_gpa: the faulting address: a GPA with TDP, otherwise an address the
 *		guest's page tables translate (a GVA with shadow paging, an L2
 *		GPA when L2 runs on shadow EPT/NPT)
 * @error_code: the page-fault error code (PFERR_*)
 *
 * Return: the guest-physical address written if its gfn is under sub-page
 * write protection, otherwise INVALID_GPA.
 */
gpa_t kvm_spp_fault_gpa(struct kvm_vcpu *vcpu, gpa_t cr2_or_gpa,
			u64 error_code)
{
	struct kvm_mmu *mmu = vcpu->arch.mmu;
	gpa_t gpa = cr2_or_gpa;

	if (!kvm_spp_enabled(vcpu->kvm))
		return INVALID_GPA;
	if (!mmu->root_role.direct)
		gpa = mmu->gva_to_gpa(vcpu, mmu, cr2_or_gpa, error_code &
				      (PFERR_WRITE_MASK | PFERR_USER_MASK),
				      NULL);
	if (gpa == INVALID_GPA ||
	    !kvm_spp_gfn_protected(vcpu->kvm, gpa_to_gfn(gpa)))
		return INVALID_GPA;
	return gpa;
}

/**
 * kvm_spp_write_fault() - handle a write fault on a protected gfn
 * @vcpu: the vCPU
 * @cr2_or_gpa: the faulting address, as for kvm_mmu_page_fault()
 * @gpa: the guest-physical address it writes (kvm_spp_fault_gpa())
 * @error_code: the page-fault error code (PFERR_*)
 * @insn: the instruction bytes if the CPU provided them, or NULL
 * @insn_len: their length
 *
 * Called for a write that faulted because its gfn is protected (software
 * path, with TDP or shadow paging), or because SPP denied it or the gfn's
 * leaf was not mapped or not armed (hardware path).  On the hardware path, a
 * write to a writable sub-page of a leaf that can now be armed is retried
 * once, for the CPU to check.
 * Otherwise:
 *
 * - The CPU was delivering an event (interrupt, exception, NMI) and one of
 *   its writes (the frame pushed on the stack, a descriptor's accessed bit)
 *   faulted.  KVM does not emulate event delivery, and emulating the
 *   instruction at RIP would run the wrong instruction: the vCPU exits with
 *   KVM_EXIT_SPP and KVM_SPP_EXIT_EVENT_DELIVERY, and the event, already
 *   requeued by the vendor code, is delivered again when the vCPU resumes.
 * - The fault is on the CPU's own write of a guest paging-structure entry
 *   (accessed/dirty flags), which SPP hardware does not apply sub-page
 *   permissions to.  @gpa is the entry's address, not that of the data the
 *   instruction accesses: the instruction is emulated without that hint, so
 *   that its own accesses go to (and are checked at) the right address.
 * - Otherwise the instruction is emulated; the emulator applies sub-page
 *   permissions to every write it makes.  A write to a gfn that is also a
 *   shadowed guest page table is emulated the same way (never unprotected
 *   and retried), and the shadow MMU sees it as for any emulated write.
 *
 * Return: 1 to resume the guest, 0 to exit to userspace, or -errno.
 */
int kvm_spp_write_fault(struct kvm_vcpu *vcpu, gpa_t cr2_or_gpa, gpa_t gpa,
			u64 error_code, void *insn, int insn_len)
{
	int emulation_type = EMULTYPE_PF | EMULTYPE_CHECK_WRITES;
	struct kvm *kvm = vcpu->kvm;
	gfn_t gfn = gpa_to_gfn(gpa);

	/*
	 * With SPP hardware, a data write to a writable sub-page only faults
	 * when the leaf was not present: it is armed now, so let the CPU do
	 * the write (or deliver the event) and check the sub-pages itself,
	 * which also covers instructions KVM cannot emulate.  Like an
	 * unprotect-and-retry, this is done once per RIP and address, so that
	 * a write the CPU keeps faulting on goes on to the checks below.
	 */
	if (vcpu->arch.mmu->root_role.direct &&
	    !(error_code & PFERR_GUEST_PAGE_MASK) &&
	    spp_range_writable(spp_get_vector(kvm, gfn), offset_in_page(gpa), 1) &&
	    (vcpu->arch.last_retry_eip != kvm_rip_read(vcpu) ||
	     vcpu->arch.last_retry_addr != gpa) &&
	    spp_can_arm(vcpu, gfn)) {
		/*
		 * A present leaf was not armed, e.g. it was mapped while the
		 * memslot logged dirty pages: zap it, and let the fault that
		 * maps it back (armed) be the one that retries.
		 */
		if (error_code & PFERR_PRESENT_MASK) {
			kvm_zap_gfn_range(kvm, gfn, gfn + 1);
			return 1;
		}
		vcpu->arch.last_retry_eip = kvm_rip_read(vcpu);
		vcpu->arch.last_retry_addr = gpa;
		return 1;
	}
	vcpu->arch.last_retry_eip = 0;
	vcpu->arch.last_retry_addr = 0;

	if (kvm_event_needs_reinjection(vcpu)) {
		spp_prepare_exit(vcpu, gpa, 0, 0, spp_exit_flags(kvm) |
				 KVM_SPP_EXIT_EVENT_DELIVERY);
		return 0;
	}

	if (error_code & PFERR_GUEST_PAGE_MASK)
		emulation_type |= EMULTYPE_PF_GUEST_PT;

	vcpu->arch.spp_fault_gpa = gpa;
	++vcpu->stat.pf_emulate;
	return x86_emulate_instruction(vcpu, cr2_or_gpa, emulation_type, insn,
				       insn_len);
}

/**
 * kvm_spp_emulation_failure() - KVM could not emulate an access to SPP memory
 * @vcpu: the vCPU
 *
 * The instruction that faulted on a protected gfn cannot be emulated (e.g.
 * AVX stores, MOVDIR64B), so KVM cannot apply the sub-page
 * permissions to it.  Exit to userspace with KVM_EXIT_SPP and
 * KVM_SPP_EXIT_NOT_EMULATED: the VMM decides, e.g. lifts the protection and
 * lets the instruction retry.  Nothing of the instruction was committed.
 *
 * Return: 0, to exit to userspace.
 */
int kvm_spp_emulation_failure(struct kvm_vcpu *vcpu)
{
	spp_prepare_exit(vcpu, vcpu->arch.spp_fault_gpa, 0, 0,
			 spp_exit_flags(vcpu->kvm) | KVM_SPP_EXIT_NOT_EMULATED);
	return 0;
}

/*
 * A vCPU is about to check a write it may then make: until it next enters
 * the guest, a SET must wait for it (SRCU) before returning.  The flag is
 * set before the store is read; spp_wait_checks() reads it after the store
 * changed, so one of the two sees the other.
 */
static void spp_note_check(struct kvm_vcpu *vcpu)
{
	if (!READ_ONCE(vcpu->arch.spp_checked)) {
		WRITE_ONCE(vcpu->arch.spp_checked, true);
		/* The flag before the store: pairs with spp_wait_checks(). */
		smp_mb();
	}
}

/**
 * kvm_spp_check_gpa_write() - apply sub-page permissions to a physical write
 * @vcpu: the vCPU whose instruction is being emulated
 * @gpa: guest-physical address the emulator is about to write
 * @bytes: size of the write, within one page
 * @insn_len: length of the instruction, for the exit to userspace
 *
 * The last check before the emulator writes guest memory, on the address it
 * actually writes: the linear-address check of kvm_spp_check_emulated_write()
 * could race with the guest changing its page tables.
 *
 * A denied write that userspace answered with KVM_SPP_ACTION_ALLOW or
 * KVM_SPP_ACTION_SKIP is let through or dropped, once.
 *
 * Return: X86EMUL_CONTINUE, X86EMUL_SPP_DROPPED for a write to drop, or
 * X86EMUL_IO_NEEDED after preparing a KVM_EXIT_SPP exit.
 */
int kvm_spp_check_gpa_write(struct kvm_vcpu *vcpu, gpa_t gpa,
			    unsigned int bytes, unsigned int insn_len)
{
	u32 vector;
	u8 action;

	spp_note_check(vcpu);
	vector = spp_get_vector(vcpu->kvm, gpa_to_gfn(gpa));
	if (vector == KVM_SUBPAGE_FULL_ACCESS ||
	    spp_range_writable(vector, offset_in_page(gpa), bytes))
		return X86EMUL_CONTINUE;
	action = spp_resume_action(vcpu, gpa, bytes, true);
	if (action != KVM_SPP_ACTION_RETRY)
		return action == KVM_SPP_ACTION_ALLOW ? X86EMUL_CONTINUE :
							X86EMUL_SPP_DROPPED;
	spp_prepare_exit(vcpu, gpa, bytes, insn_len, spp_exit_flags(vcpu->kvm));
	return X86EMUL_IO_NEEDED;
}

/**
 * kvm_spp_check_emulated_write() - apply sub-page permissions to a write
 * @vcpu: the vCPU whose instruction is being emulated
 * @addr: linear address of the write
 * @bytes: its size; it may cross into the next page
 * @insn_len: length of the instruction, for the exit to userspace
 *
 * Called by the emulator before it writes guest memory.  The write may go
 * on only if every byte lands in a writable sub-page; all pages it touches
 * are checked before anything is written.  Addresses that do not translate
 * are left to the write itself, which then raises the guest's fault.
 *
 * Return: X86EMUL_CONTINUE to let the write go on, or X86EMUL_IO_NEEDED
 * after preparing a KVM_EXIT_SPP exit for a denied write.
 */
int kvm_spp_check_emulated_write(struct kvm_vcpu *vcpu, unsigned long addr,
				 unsigned int bytes, unsigned int insn_len)
{
	bool protected = false;
	unsigned int now;
	u32 vector;
	gpa_t gpa;

	spp_note_check(vcpu);
	while (bytes) {
		now = min_t(unsigned int, bytes, PAGE_SIZE - offset_in_page(addr));
		gpa = kvm_mmu_gva_to_gpa_write(vcpu, addr, NULL);
		if (gpa == INVALID_GPA)
			return X86EMUL_CONTINUE;
		vector = spp_get_vector(vcpu->kvm, gpa_to_gfn(gpa));
		if (vector != KVM_SUBPAGE_FULL_ACCESS) {
			protected = true;
			/* A write userspace answered is decided at its gpa. */
			if (!spp_range_writable(vector, offset_in_page(gpa), now) &&
			    spp_resume_action(vcpu, gpa, now, false) ==
			    KVM_SPP_ACTION_RETRY) {
				spp_prepare_exit(vcpu, gpa, now, insn_len,
						 spp_exit_flags(vcpu->kvm));
				return X86EMUL_IO_NEEDED;
			}
		}
		addr += now;
		bytes -= now;
	}
	if (protected)
		++vcpu->stat.spp_emulated_writes;
	return X86EMUL_CONTINUE;
}

/**
 * kvm_spp_check_kvm_write() - apply sub-page permissions to a write by KVM
 * @vcpu: the vCPU whose intercepted instruction makes the write
 * @gpa: guest-physical address of the first byte
 * @len: size of the write; it may span pages
 *
 * For writes KVM makes itself, not through the emulator, to carry out an
 * instruction it intercepts (e.g. VMCLEAR writing vmcs12 back to L1's VMCS
 * region, VMSAVE).  A denied write holds the instruction: the vCPU exits
 * with KVM_EXIT_SPP, @gpa being the first denied byte, insn_len 0 and RIP
 * still at the instruction; only KVM_SPP_ACTION_RETRY can answer.  A SET
 * that returns has waited for a write this allowed (SRCU).
 *
 * Return: true if the write may go on, false after preparing the exit.
 */
bool kvm_spp_check_kvm_write(struct kvm_vcpu *vcpu, gpa_t gpa, u64 len)
{
	gpa_t denied;

	if (!kvm_spp_enabled(vcpu->kvm))
		return true;
	spp_note_check(vcpu);
	denied = spp_first_denied(vcpu->kvm, gpa, len);
	if (denied == INVALID_GPA)
		return true;
	spp_prepare_exit(vcpu, denied, 0, 0, spp_exit_flags(vcpu->kvm));
	return false;
}
EXPORT_SYMBOL_GPL(kvm_spp_check_kvm_write);

/**
 * kvm_spp_claim() - claim the memory KVM writes while a vCPU runs L2
 * @vcpu: the vCPU entering a nested guest
 * @ranges: guest memory that KVM, or the CPU through KVM's mappings, writes
 *	    on its own until the vCPU leaves the nested guest (vmcb12, the
 *	    VM-exit MSR-store list, the PML log, ...)
 * @nr: number of ranges, at most KVM_SPP_MAX_CLAIMS
 * @exit: prepare a KVM_EXIT_SPP that holds the VM-entry instruction if a
 *	  range is denied
 *
 * Such writes happen at a nested VM exit or behind KVM's back, where no
 * instruction can be held, so sub-page permissions are applied when L1
 * enters L2: the entry is refused if they deny writing a byte of @ranges,
 * and while the ranges are claimed a KVM_SUBPAGES_SET_ACCESS that would deny
 * one fails with -EBUSY.  The claim replaces the vCPU's earlier one and
 * lasts until kvm_spp_release_claims().
 *
 * Return: true if the ranges are claimed, false if a write is denied.
 */
bool kvm_spp_claim(struct kvm_vcpu *vcpu, const struct kvm_spp_range *ranges,
		   int nr, bool exit)
{
	struct kvm *kvm = vcpu->kvm;
	gpa_t denied = INVALID_GPA;
	int i;

	if (!kvm_spp_enabled(kvm))
		return true;
	if (WARN_ON_ONCE(nr > KVM_SPP_MAX_CLAIMS))
		return false;

	mutex_lock(&kvm->arch.spp_lock);
	for (i = 0; i < nr && denied == INVALID_GPA; i++)
		denied = spp_first_denied(kvm, ranges[i].gpa, ranges[i].len);
	if (denied == INVALID_GPA) {
		memcpy(vcpu->arch.spp_claims, ranges, nr * sizeof(*ranges));
		vcpu->arch.spp_nr_claims = nr;
	} else {
		vcpu->arch.spp_nr_claims = 0;
	}
	mutex_unlock(&kvm->arch.spp_lock);

	if (denied == INVALID_GPA)
		return true;
	if (exit)
		spp_prepare_exit(vcpu, denied, 0, 0, spp_exit_flags(kvm));
	return false;
}
EXPORT_SYMBOL_GPL(kvm_spp_claim);

/**
 * kvm_spp_release_claims() - the vCPU left its nested guest
 * @vcpu: the vCPU
 *
 * KVM no longer writes the memory kvm_spp_claim() claimed for @vcpu.
 */
void kvm_spp_release_claims(struct kvm_vcpu *vcpu)
{
	/* Only @vcpu changes its claims: no lock to see there are none. */
	if (!vcpu->arch.spp_nr_claims)
		return;
	mutex_lock(&vcpu->kvm->arch.spp_lock);
	vcpu->arch.spp_nr_claims = 0;
	mutex_unlock(&vcpu->kvm->arch.spp_lock);
}
EXPORT_SYMBOL_GPL(kvm_spp_release_claims);
