/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __KVM_X86_VMX_SPP_H
#define __KVM_X86_VMX_SPP_H

#include <linux/kvm_host.h>

#include <asm/vmx.h>

/* The SPP table maps guest-physical address bits 47:12. */
#define VMX_SPPT_GFN_LIMIT	BIT_ULL(36)

/* An SPP table (vmx/sppt.c) and its change count. */
struct vmx_sppt {
	u64 *root;
	unsigned long seq;
};

#ifdef CONFIG_KVM_SPP
extern bool enable_spp;

u64 vmx_sppt_vector(u32 access);
int vmx_sppt_init(struct vmx_sppt *t);
void vmx_sppt_destroy(struct vmx_sppt *t);
int vmx_sppt_prepare(struct vmx_sppt *t, gfn_t gfn);
bool vmx_sppt_set(struct vmx_sppt *t, gfn_t gfn, u32 access);
void vmx_sppt_prune(struct vmx_sppt *t, gfn_t gfn, struct list_head *freed);

int vmx_spp_init_vm(struct kvm *kvm);
void vmx_spp_destroy_vm(struct kvm *kvm);
void vmx_spp_update(struct kvm *kvm, gfn_t gfn, u32 access,
		    struct list_head *freed);
unsigned long vmx_spp_table_pages(struct kvm *kvm);
u64 vmx_sppt_root(struct kvm *kvm);
int vmx_sppt_miss(struct kvm_vcpu *vcpu, gpa_t gpa);

void vmx_spp_hardware_setup(void);
void vmx_spp_hardware_unsetup(void);
u32 vmx_spp_secondary_exec_control(struct kvm *kvm, u32 exec_control);
void vmx_spp_init_vmcs(struct kvm_vcpu *vcpu);
int vmx_handle_spp_exit(struct kvm_vcpu *vcpu);
bool vmx_spp_claim_nested(struct kvm_vcpu *vcpu, bool exit);
#else
static inline void vmx_spp_destroy_vm(struct kvm *kvm) { }
static inline void vmx_spp_hardware_setup(void) { }
static inline void vmx_spp_hardware_unsetup(void) { }

static inline u32 vmx_spp_secondary_exec_control(struct kvm *kvm,
						 u32 exec_control)
{
	return exec_control & ~SECONDARY_EXEC_SPP;
}

static inline void vmx_spp_init_vmcs(struct kvm_vcpu *vcpu) { }

static inline bool vmx_spp_claim_nested(struct kvm_vcpu *vcpu, bool exit)
{
	return true;
}
#endif

#endif /* __KVM_X86_VMX_SPP_H */
