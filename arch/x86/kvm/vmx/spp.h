/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __KVM_X86_VMX_SPP_H
#define __KVM_X86_VMX_SPP_H

#include <linux/kvm_host.h>

#include <asm/vmx.h>

#ifdef CONFIG_KVM_SPP
extern bool enable_spp;

void vmx_spp_hardware_setup(void);
void vmx_spp_hardware_unsetup(void);
u32 vmx_spp_secondary_exec_control(struct kvm *kvm, u32 exec_control);
void vmx_spp_init_vmcs(struct kvm_vcpu *vcpu);
int vmx_handle_spp_exit(struct kvm_vcpu *vcpu);
bool vmx_spp_claim_nested(struct kvm_vcpu *vcpu, bool exit);
#else
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
