// SPDX-License-Identifier: GPL-2.0
/*
 * VMX side of sub-page write protection: the "sub-page write permissions"
 * secondary VM-execution control (bit 23), the SPP table pointer (VMCS field
 * 0x2030) and the SPP-related VM exit (basic exit reason 66).  The SPP table
 * is built in vmx/sppt.c; the permission store and the arming of EPT leaves
 * live in mmu/spp.c.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kvm_host.h>
#include <linux/moduleparam.h>

#include <asm/vmx.h>

#include "capabilities.h"
#include "mmu.h"
#include "mmu/spp.h"
#include "nested.h"
#include "spp.h"
#include "vmx.h"
#include "x86.h"

/* Exit qualification of exit reason 66: set for a miss, clear for a misconfig. */
#define SPP_EXIT_QUAL_MISS	BIT(11)

bool __read_mostly enable_spp = true;
module_param_named(spp, enable_spp, bool, 0444);
MODULE_PARM_DESC(spp, "Use EPT-based sub-page write permissions when the CPU has them");

/**
 * vmx_spp_hardware_setup() - decide whether VMs get hardware SPP
 *
 * Hardware SPP needs EPT and the "sub-page write permissions" control.
 */
void vmx_spp_hardware_setup(void)
{
	if (!enable_ept || !cpu_has_vmx_spp())
		enable_spp = false;
	kvm_mmu_set_spp_mask(enable_spp ? VMX_EPT_SPP_BIT : 0);
	kvm_caps.has_spp = enable_spp;
	kvm_caps.spp_gfn_limit = enable_spp ? VMX_SPPT_GFN_LIMIT : 0;
	if (enable_spp)
		pr_info("EPT-based sub-page write protection enabled\n");
}

/**
 * vmx_spp_hardware_unsetup() - stop offering hardware SPP
 */
void vmx_spp_hardware_unsetup(void)
{
	kvm_caps.has_spp = false;
	kvm_caps.spp_gfn_limit = 0;
	kvm_mmu_set_spp_mask(0);
}

/**
 * vmx_spp_secondary_exec_control() - filter the SPP execution control
 * @kvm: the VM
 * @exec_control: secondary execution controls being built for a vCPU
 *
 * Return: @exec_control with SPP on only if @kvm uses hardware SPP.
 */
u32 vmx_spp_secondary_exec_control(struct kvm *kvm, u32 exec_control)
{
	if (!vmx_sppt_root(kvm))
		exec_control &= ~SECONDARY_EXEC_SPP;
	return exec_control;
}

/**
 * vmx_spp_init_vmcs() - point the vCPU's VMCS at its VM's SPP table
 * @vcpu: the vCPU
 */
void vmx_spp_init_vmcs(struct kvm_vcpu *vcpu)
{
	u64 root = vmx_sppt_root(vcpu->kvm);

	if (root)
		vmcs_write64(SPPT_POINTER, root);
}

/**
 * vmx_handle_spp_exit() - handle the SPP-related VM exit
 * @vcpu: the vCPU
 *
 * An SPPT miss (qualification bit 11 set) means a level of the SPP table is
 * missing for the faulting address: build it and resume.  Misses that keep
 * repeating on a complete path while no permission changes, and
 * misconfigurations (bit 11 clear: reserved bits, or an odd bit in a leaf),
 * can only come from a KVM bug; they are reported to userspace as
 * KVM_EXIT_INTERNAL_ERROR instead of re-entering the guest into the same
 * exit, without taking the VM down.
 *
 * Return: 1 to resume the guest, <= 0 to exit to userspace.
 */
int vmx_handle_spp_exit(struct kvm_vcpu *vcpu)
{
	unsigned long qual = vmx_get_exit_qual(vcpu);
	gpa_t gpa = vmcs_read64(GUEST_PHYSICAL_ADDRESS);
	struct kvm_run *run = vcpu->run;
	int r;

	/* The exit may have unblocked NMIs by an IRET: block them again. */
	if (!(to_vmx(vcpu)->idt_vectoring_info & VECTORING_INFO_VALID_MASK) &&
	    cpu_has_virtual_nmis() && (qual & INTR_INFO_UNBLOCK_NMI))
		vmcs_set_bits(GUEST_INTERRUPTIBILITY_INFO, GUEST_INTR_STATE_NMI);

	if (qual & SPP_EXIT_QUAL_MISS) {
		r = vmx_sppt_miss(vcpu, gpa);
		if (r)
			return r;
		pr_warn_ratelimited("vcpu %d: SPPT misses repeat on a complete path at gpa 0x%llx\n",
				    vcpu->vcpu_id, gpa);
	} else {
		pr_err_ratelimited("SPPT misconfiguration at gpa 0x%llx, qualification 0x%lx\n",
				   gpa, qual);
	}
	run->exit_reason = KVM_EXIT_INTERNAL_ERROR;
	run->internal.suberror = KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON;
	run->internal.ndata = 4;
	run->internal.data[0] = EXIT_REASON_SPP;
	run->internal.data[1] = vcpu->arch.last_vmentry_cpu;
	run->internal.data[2] = qual;
	run->internal.data[3] = gpa;
	return 0;
}

/**
 * vmx_spp_claim_nested() - apply sub-page permissions to what L2 makes KVM write
 * @vcpu: the vCPU entering L2 with the current vmcs12
 * @exit: on a denied write, hold VMLAUNCH/VMRESUME with KVM_EXIT_SPP
 *
 * While L2 runs, KVM writes L1 memory that vmcs12 designates without any
 * instruction it could hold: the VM-exit MSR-store list, the PML log and the
 * shadow VMCS at a nested VM exit, the virtual-APIC page and the posted-
 * interrupt descriptor (the CPU, too, writes them through KVM's mappings).
 * Claim them for the time L2 runs (kvm_spp_claim()).
 *
 * Return: true if L1 may enter L2.
 */
bool vmx_spp_claim_nested(struct kvm_vcpu *vcpu, bool exit)
{
	struct vmcs12 *vmcs12 = get_vmcs12(vcpu);
	struct kvm_spp_range r[KVM_SPP_MAX_CLAIMS];
	int n = 0;

	if (!kvm_spp_enabled(vcpu->kvm))
		return true;
	/* A longer list fails the MSR store before it writes past this. */
	if (vmcs12->vm_exit_msr_store_count)
		r[n++] = (struct kvm_spp_range) {
			.gpa = vmcs12->vm_exit_msr_store_addr,
			.len = min_t(u32, vmcs12->vm_exit_msr_store_count,
				     8 * VMX_MISC_MSR_LIST_MULTIPLIER) *
			       sizeof(struct vmx_msr_entry),
		};
	if (nested_cpu_has_pml(vmcs12))
		r[n++] = (struct kvm_spp_range) {
			.gpa = vmcs12->pml_address, .len = PAGE_SIZE,
		};
	if (nested_cpu_has_shadow_vmcs(vmcs12) &&
	    vmcs12->vmcs_link_pointer != INVALID_GPA)
		r[n++] = (struct kvm_spp_range) {
			.gpa = vmcs12->vmcs_link_pointer, .len = VMCS12_SIZE,
		};
	if (nested_cpu_has(vmcs12, CPU_BASED_TPR_SHADOW))
		r[n++] = (struct kvm_spp_range) {
			.gpa = vmcs12->virtual_apic_page_addr, .len = PAGE_SIZE,
		};
	if (nested_cpu_has_posted_intr(vmcs12))
		r[n++] = (struct kvm_spp_range) {
			.gpa = vmcs12->posted_intr_desc_addr, .len = 64,
		};
	return kvm_spp_claim(vcpu, r, n, exit);
}
