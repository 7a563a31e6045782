// SPDX-License-Identifier: GPL-2.0
/*
 * EPT-based sub-page write protection (SPP).
 *
 * A VMM can make any 128-byte sub-page of a 4 KiB guest page read-only: the
 * write permission of a page is a 32-bit vector, bit i covering bytes
 * [128 * i, 128 * i + 127].  The vectors of protected pages (those whose
 * vector is not all-ones) live in an xarray indexed by gfn, as value entries,
 * so the store costs memory only for protected pages.
 *
 * Enforcement without SPP hardware: a protected gfn is write-tracked through
 * KVM's page-track machinery, so it is never mapped writable (nor by a huge
 * page) and every guest write to it faults and is emulated.  The emulator
 * asks kvm_spp_check_emulated_write() before it writes guest memory; a write
 * is let through only if every byte lands in a writable sub-page, otherwise
 * the vCPU exits to userspace with KVM_EXIT_SPP, nothing written and RIP
 * still at the instruction.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kvm_host.h>
#include <linux/slab.h>
#include <linux/xarray.h>

#include "mmu.h"
#include "mmu_internal.h"
#include "page_track.h"
#include "spp.h"

#define CREATE_TRACE_POINTS
#include "spptrace.h"

/* Largest number of pages one KVM_SUBPAGES_{SET,GET}_ACCESS call handles. */
#define KVM_SPP_MAX_PAGES	512

#define SPP_SUBPAGE_SHIFT	7

static u32 spp_get_vector(struct kvm *kvm, gfn_t gfn)
{
	void *entry = xa_load(&kvm->arch.spp_access, gfn);

	return entry ? (u32)xa_to_value(entry) : KVM_SUBPAGE_FULL_ACCESS;
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

/**
 * kvm_spp_check_extension() - value of KVM_CHECK_EXTENSION(KVM_CAP_X86_SPP)
 *
 * Return: the largest number of pages one KVM_SUBPAGES_SET_ACCESS or
 * KVM_SUBPAGES_GET_ACCESS call accepts, ORed with KVM_SPP_CAP_HW_ACCELERATED
 * when the CPU enforces the permissions itself.
 */
int kvm_spp_check_extension(void)
{
	return KVM_SPP_MAX_PAGES;
}

/**
 * kvm_vm_ioctl_enable_spp() - KVM_ENABLE_CAP(KVM_CAP_X86_SPP) on a VM
 * @kvm: the VM
 * @cap: the request; flags and all arguments must be zero
 *
 * Return: 0 on success, -EINVAL for nonzero flags or arguments, -EEXIST if
 * SPP is already enabled, -EBUSY if the VM already has vCPUs.
 */
int kvm_vm_ioctl_enable_spp(struct kvm *kvm, struct kvm_enable_cap *cap)
{
	int r;

	if (cap->flags || cap->args[0] || cap->args[1] || cap->args[2] ||
	    cap->args[3])
		return -EINVAL;

	mutex_lock(&kvm->lock);
	if (kvm->arch.spp_enabled) {
		r = -EEXIST;
	} else if (kvm->created_vcpus) {
		r = -EBUSY;
	} else {
		xa_init(&kvm->arch.spp_access);
		smp_store_release(&kvm->arch.spp_enabled, true);
		r = 0;
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

/*
 * Every gfn of the range must be backed by a memslot of address space 0 that
 * SPP can protect.  Caller holds slots_lock or kvm->srcu.
 */
static int spp_check_memslots(struct kvm *kvm, gfn_t gfn, u32 npages)
{
	gfn_t end = gfn + npages;
	struct kvm_memory_slot *slot;

	while (gfn < end) {
		slot = gfn_to_memslot(kvm, gfn);
		if (!slot || (slot->flags & KVM_MEMSLOT_INVALID))
			return -ENOENT;
		if (kvm_slot_can_be_private(slot))
			return -EOPNOTSUPP;
		gfn = slot->base_gfn + slot->npages;
	}
	return 0;
}

static int spp_set_access(struct kvm *kvm, const struct kvm_subpage_access *sa,
			  const u32 *vec)
{
	struct xarray *xa = &kvm->arch.spp_access;
	struct kvm_memory_slot *slot;
	bool protect = false;
	unsigned long i;
	gfn_t gfn;
	void *old;
	int r;

	lockdep_assert_held(&kvm->slots_lock);

	r = spp_check_memslots(kvm, sa->base_gfn, sa->npages);
	if (r)
		return r;

	for (i = 0; i < sa->npages; i++)
		protect |= vec[i] != KVM_SUBPAGE_FULL_ACCESS;

	/*
	 * Protected gfns are write-tracked; with TDP that needs the per-memslot
	 * tracking metadata, which is allocated on first use only.
	 */
	if (protect && !kvm_page_track_write_tracking_enabled(kvm)) {
		r = kvm_page_track_enable_external_write_tracking(kvm);
		if (r)
			return r;
	}

	/* Reserve the new entries so that the update below cannot fail. */
	for (i = 0; i < sa->npages; i++) {
		gfn = sa->base_gfn + i;
		if (vec[i] == KVM_SUBPAGE_FULL_ACCESS || xa_load(xa, gfn))
			continue;
		r = xa_reserve(xa, gfn, GFP_KERNEL_ACCOUNT);
		if (r) {
			while (i--)
				xa_release(xa, sa->base_gfn + i);
			return r;
		}
	}

	write_lock(&kvm->mmu_lock);
	for (i = 0; i < sa->npages; i++) {
		gfn = sa->base_gfn + i;
		slot = gfn_to_memslot(kvm, gfn);
		old = xa_load(xa, gfn);
		trace_kvm_spp_set_access(gfn,
					 old ? xa_to_value(old) : KVM_SUBPAGE_FULL_ACCESS,
					 vec[i]);
		if (vec[i] == KVM_SUBPAGE_FULL_ACCESS) {
			if (!old)
				continue;
			xa_erase(xa, gfn);
			__kvm_write_track_remove_gfn(kvm, slot, gfn);
			continue;
		}
		old = xa_store(xa, gfn, xa_mk_value(vec[i]), GFP_NOWAIT);
		WARN_ON_ONCE(xa_is_err(old));
		/*
		 * Write-protect the gfn (all SPTEs, any level) and forbid huge
		 * mappings covering it; flushes TLBs as needed.
		 */
		if (!old)
			__kvm_write_track_add_gfn(kvm, slot, gfn);
	}
	write_unlock(&kvm->mmu_lock);
	return 0;
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
 * whole range or nothing.  GET reads the vectors back.
 *
 * Return: 0 on success; -ENXIO if SPP is not enabled, -EINVAL for bad flags
 * or range, -E2BIG for too many pages, -EFAULT for a bad user pointer,
 * -ENOENT if a gfn is not in a memslot, -EOPNOTSUPP for private memory,
 * -ENOMEM.
 */
int kvm_vm_ioctl_subpages_access(struct kvm *kvm, unsigned int ioctl,
				 void __user *argp)
{
	struct kvm_subpage_access sa;
	void __user *map;
	u32 *vec;
	int r, idx;

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
	idx = srcu_read_lock(&kvm->srcu);
	r = spp_check_memslots(kvm, sa.base_gfn, sa.npages);
	if (!r)
		spp_get_access(kvm, &sa, vec);
	srcu_read_unlock(&kvm->srcu, idx);
	if (!r && copy_to_user(map, vec, sa.npages * sizeof(*vec)))
		r = -EFAULT;
	kfree(vec);
	return r;
}

/**
 * kvm_spp_remove_slot() - forget the permissions of a deleted or moved slot
 * @kvm: the VM
 * @slot: the memslot going away
 *
 * The write-tracking counts go away with the memslot's metadata.
 */
void kvm_spp_remove_slot(struct kvm *kvm, struct kvm_memory_slot *slot)
{
	XA_STATE(xas, &kvm->arch.spp_access, slot->base_gfn);
	void *entry;

	if (!kvm_spp_enabled(kvm))
		return;

	xas_lock(&xas);
	xas_for_each(&xas, entry, slot->base_gfn + slot->npages - 1)
		xas_store(&xas, NULL);
	xas_unlock(&xas);
}

/**
 * kvm_spp_destroy_vm() - free the permission store of a VM
 * @kvm: the VM
 */
void kvm_spp_destroy_vm(struct kvm *kvm)
{
	if (kvm->arch.spp_enabled)
		xa_destroy(&kvm->arch.spp_access);
}

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

static int complete_spp_exit(struct kvm_vcpu *vcpu)
{
	/* Re-enter at RIP: the VMM skipped the instruction or lets it retry. */
	return 1;
}

static void spp_prepare_exit(struct kvm_vcpu *vcpu, gpa_t gpa,
			     unsigned int insn_len, u32 flags)
{
	struct kvm_run *run = vcpu->run;

	run->exit_reason = KVM_EXIT_SPP;
	run->spp.gpa = gpa;
	run->spp.flags = flags;
	run->spp.insn_len = insn_len;
	memset(run->spp.pad, 0, sizeof(run->spp.pad));
	vcpu->arch.complete_userspace_io = complete_spp_exit;
	++vcpu->stat.spp_exits;
	trace_kvm_spp_exit(vcpu->vcpu_id, gpa, insn_len, flags);
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

	while (bytes) {
		now = min_t(unsigned int, bytes, PAGE_SIZE - offset_in_page(addr));
		gpa = kvm_mmu_gva_to_gpa_write(vcpu, addr, NULL);
		if (gpa == INVALID_GPA)
			return X86EMUL_CONTINUE;
		vector = spp_get_vector(vcpu->kvm, gpa_to_gfn(gpa));
		if (vector != KVM_SUBPAGE_FULL_ACCESS) {
			protected = true;
			if (!spp_range_writable(vector, offset_in_page(gpa), now)) {
				spp_prepare_exit(vcpu, gpa, insn_len,
						 KVM_SPP_EXIT_EMULATED);
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
