/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __KVM_X86_MMU_SPP_H
#define __KVM_X86_MMU_SPP_H

#include <linux/kvm_host.h>

#include "kvm_emulate.h"

#ifdef CONFIG_KVM_SPP
int kvm_spp_check_extension(void);
int kvm_vm_ioctl_enable_spp(struct kvm *kvm, struct kvm_enable_cap *cap);
int kvm_vm_ioctl_subpages_access(struct kvm *kvm, unsigned int ioctl,
				 void __user *argp);
void kvm_spp_destroy_vm(struct kvm *kvm);
void kvm_spp_remove_slot(struct kvm *kvm, struct kvm_memory_slot *slot);
bool kvm_spp_gfn_protected(struct kvm *kvm, gfn_t gfn);
int kvm_spp_check_emulated_write(struct kvm_vcpu *vcpu, unsigned long addr,
				 unsigned int bytes, unsigned int insn_len);

static inline bool kvm_spp_enabled(struct kvm *kvm)
{
	/* Pairs with smp_store_release() in kvm_vm_ioctl_enable_spp(). */
	return smp_load_acquire(&kvm->arch.spp_enabled);
}
#else
static inline int kvm_spp_check_extension(void) { return 0; }
static inline void kvm_spp_destroy_vm(struct kvm *kvm) { }
static inline void kvm_spp_remove_slot(struct kvm *kvm,
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
#endif /* CONFIG_KVM_SPP */

#endif /* __KVM_X86_MMU_SPP_H */
