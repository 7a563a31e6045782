/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __KVM_X86_MMU_SPP_H
#define __KVM_X86_MMU_SPP_H

#include <linux/kvm_host.h>

#include "kvm_emulate.h"

#ifdef CONFIG_KVM_SPP
u32 kvm_spp_gfn_access(struct kvm *kvm, gfn_t gfn);
gpa_t kvm_spp_fault_gpa(struct kvm_vcpu *vcpu, gpa_t cr2_or_gpa,
			u64 error_code);
int kvm_spp_write_fault(struct kvm_vcpu *vcpu, gpa_t cr2_or_gpa, gpa_t gpa,
			u64 error_code, void *insn, int insn_len);
int kvm_spp_emulation_failure(struct kvm_vcpu *vcpu);
u64 kvm_spp_spte_mask(struct kvm *kvm, const struct kvm_memory_slot *slot,
		      gfn_t gfn, int level);
u64 kvm_spp_protected_spte_mask(struct kvm *kvm,
				const struct kvm_memory_slot *slot, gfn_t gfn);
void kvm_spp_slot_dirty_logging(struct kvm *kvm,
				const struct kvm_memory_slot *slot);

int kvm_spp_check_extension(struct kvm *kvm);
int kvm_vm_ioctl_enable_spp(struct kvm *kvm, struct kvm_enable_cap *cap);
int kvm_vm_ioctl_subpages_access(struct kvm *kvm, unsigned int ioctl,
				 void __user *argp);
void kvm_spp_destroy_vm(struct kvm *kvm);
void kvm_spp_init_memslot(struct kvm *kvm, struct kvm_memory_slot *slot);
bool kvm_spp_gfn_protected(struct kvm *kvm, gfn_t gfn);
int kvm_spp_check_emulated_write(struct kvm_vcpu *vcpu, unsigned long addr,
				 unsigned int bytes, unsigned int insn_len);
int kvm_spp_check_gpa_write(struct kvm_vcpu *vcpu, gpa_t gpa,
			    unsigned int bytes, unsigned int insn_len);
bool kvm_spp_check_kvm_write(struct kvm_vcpu *vcpu, gpa_t gpa, u64 len);
bool kvm_spp_claim(struct kvm_vcpu *vcpu, const struct kvm_spp_range *ranges,
		   int nr, bool exit);
void kvm_spp_release_claims(struct kvm_vcpu *vcpu);

static inline bool kvm_spp_enabled(struct kvm *kvm)
{
	/* Pairs with smp_store_release() in kvm_vm_ioctl_enable_spp(). */
	return smp_load_acquire(&kvm->arch.spp_enabled);
}

/*
 * The vCPU enters the guest: the writes it checked (kvm_spp_check_*())
 * while handling the last exit are done.
 */
static inline void kvm_spp_enter_guest(struct kvm_vcpu *vcpu)
{
	if (!vcpu->arch.spp_checked)
		return;
	/* The checked writes are done before a SET sees the flag clear. */
	smp_store_release(&vcpu->arch.spp_checked, false);
}
#else
static inline void kvm_spp_enter_guest(struct kvm_vcpu *vcpu) { }
static inline gpa_t kvm_spp_fault_gpa(struct kvm_vcpu *vcpu,
				      gpa_t cr2_or_gpa, u64 error_code)
{
	return INVALID_GPA;
}

static inline int kvm_spp_write_fault(struct kvm_vcpu *vcpu,
				      gpa_t cr2_or_gpa, gpa_t gpa,
				      u64 error_code, void *insn, int insn_len)
{
	return -EIO;
}

static inline int kvm_spp_emulation_failure(struct kvm_vcpu *vcpu)
{
	return -EIO;
}

static inline u64 kvm_spp_spte_mask(struct kvm *kvm,
				    const struct kvm_memory_slot *slot,
				    gfn_t gfn, int level)
{
	return 0;
}

static inline u64 kvm_spp_protected_spte_mask(struct kvm *kvm,
					      const struct kvm_memory_slot *slot,
					      gfn_t gfn)
{
	return 0;
}

static inline void kvm_spp_slot_dirty_logging(struct kvm *kvm,
					      const struct kvm_memory_slot *slot) { }
static inline int kvm_spp_check_extension(struct kvm *kvm) { return 0; }
static inline void kvm_spp_destroy_vm(struct kvm *kvm) { }
static inline void kvm_spp_init_memslot(struct kvm *kvm,
					struct kvm_memory_slot *slot) { }

static inline bool kvm_spp_gfn_protected(struct kvm *kvm, gfn_t gfn)
{
	return false;
}

static inline bool kvm_spp_enabled(struct kvm *kvm) { return false; }

static inline int kvm_spp_check_emulated_write(struct kvm_vcpu *vcpu,
					       unsigned long addr,
					       unsigned int bytes,
					       unsigned int insn_len)
{
	return X86EMUL_CONTINUE;
}

static inline int kvm_spp_check_gpa_write(struct kvm_vcpu *vcpu, gpa_t gpa,
					  unsigned int bytes,
					  unsigned int insn_len)
{
	return X86EMUL_CONTINUE;
}

static inline bool kvm_spp_check_kvm_write(struct kvm_vcpu *vcpu, gpa_t gpa,
					   u64 len)
{
	return true;
}

static inline bool kvm_spp_claim(struct kvm_vcpu *vcpu,
				 const struct kvm_spp_range *ranges, int nr,
				 bool exit)
{
	return true;
}

static inline void kvm_spp_release_claims(struct kvm_vcpu *vcpu) { }
#endif /* CONFIG_KVM_SPP */

#endif /* __KVM_X86_MMU_SPP_H */
