/* SPDX-License-Identifier: GPL-2.0 */
#if !defined(_TRACE_KVM_SPP_H) || defined(TRACE_HEADER_MULTI_READ)
#define _TRACE_KVM_SPP_H

#include <linux/tracepoint.h>

#undef TRACE_SYSTEM
#define TRACE_SYSTEM kvm

TRACE_EVENT(kvm_spp_set_access,
	TP_PROTO(u64 gfn, u32 old_access, u32 new_access),
	TP_ARGS(gfn, old_access, new_access),

	TP_STRUCT__entry(
		__field(u64, gfn)
		__field(u32, old_access)
		__field(u32, new_access)
	),

	TP_fast_assign(
		__entry->gfn = gfn;
		__entry->old_access = old_access;
		__entry->new_access = new_access;
	),

	TP_printk("gfn 0x%llx access 0x%08x -> 0x%08x",
		  __entry->gfn, __entry->old_access, __entry->new_access)
);

TRACE_EVENT(kvm_spp_exit,
	TP_PROTO(unsigned int vcpu_id, u64 gpa, u8 insn_len, u32 flags),
	TP_ARGS(vcpu_id, gpa, insn_len, flags),

	TP_STRUCT__entry(
		__field(unsigned int, vcpu_id)
		__field(u64, gpa)
		__field(u8, insn_len)
		__field(u32, flags)
	),

	TP_fast_assign(
		__entry->vcpu_id = vcpu_id;
		__entry->gpa = gpa;
		__entry->insn_len = insn_len;
		__entry->flags = flags;
	),

	TP_printk("vcpu %u denied write at gpa 0x%llx insn_len %u flags 0x%x",
		  __entry->vcpu_id, __entry->gpa, __entry->insn_len,
		  __entry->flags)
);

TRACE_EVENT(kvm_spp_resume,
	TP_PROTO(unsigned int vcpu_id, u64 gpa, u8 action),
	TP_ARGS(vcpu_id, gpa, action),

	TP_STRUCT__entry(
		__field(unsigned int, vcpu_id)
		__field(u64, gpa)
		__field(u8, action)
	),

	TP_fast_assign(
		__entry->vcpu_id = vcpu_id;
		__entry->gpa = gpa;
		__entry->action = action;
	),

	TP_printk("vcpu %u %s the denied write at gpa 0x%llx",
		  __entry->vcpu_id, __entry->action == 1 ? "skips" : "allows",
		  __entry->gpa)
);

#endif /* _TRACE_KVM_SPP_H */

#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH mmu
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE spptrace

/* This part must be outside protection */
#include <trace/define_trace.h>
