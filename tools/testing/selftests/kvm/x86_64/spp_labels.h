/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Functions and labels of the guest code that the sub-page write protection
 * tests write in assembly (instructions whose address or length the host
 * checks).
 */
#ifndef SELFTEST_KVM_SPP_LABELS_H
#define SELFTEST_KVM_SPP_LABELS_H

#include <stdint.h>

/* spp_test.c: the guest's writes, one store instruction each ... */
void spp_st1(uint64_t dst, const void *src);
void spp_st2(uint64_t dst, const void *src);
void spp_st4(uint64_t dst, const void *src);
void spp_st8(uint64_t dst, const void *src);
void spp_st16(uint64_t dst, const void *src);
uint64_t spp_stosb(uint64_t dst, uint64_t val, uint64_t count);
uint64_t spp_stosq(uint64_t dst, uint64_t val, uint64_t count);
uint64_t spp_cmpxchg(uint64_t dst, uint64_t old, uint64_t new);
uint64_t spp_cmpxchg8b(uint64_t dst, uint64_t old, uint64_t new);
uint64_t spp_cmpxchg16b(uint64_t dst, const uint64_t *old,
			const uint64_t *new);
uint64_t spp_xchg(uint64_t dst, uint64_t val);
void spp_lock_add(uint64_t dst, uint64_t val);
uint64_t spp_push(uint64_t rsp, uint64_t val);

/* ... their store instruction and the byte after it. */
extern const char spp_st1_insn[], spp_st1_end[], spp_st2_insn[], spp_st2_end[];
extern const char spp_st4_insn[], spp_st4_end[], spp_st8_insn[], spp_st8_end[];
extern const char spp_st16_insn[], spp_st16_end[];
extern const char spp_stosb_insn[], spp_stosb_end[];
extern const char spp_stosq_insn[], spp_stosq_end[];
extern const char spp_cmpxchg_insn[], spp_cmpxchg_end[];
extern const char spp_cmpxchg8b_insn[], spp_cmpxchg8b_end[];
extern const char spp_cmpxchg16b_insn[], spp_cmpxchg16b_end[];
extern const char spp_xchg_insn[], spp_xchg_end[];
extern const char spp_lock_add_insn[], spp_lock_add_end[];
extern const char spp_push_insn[], spp_push_end[];

/* spp_guard_test.c */
extern const char ev_ud2[], ev_irq_rip[];
extern const char vx_vmptrst[];
extern const char ne_int3[];
extern const char race_store[], race_store_end[];
extern const char cpl3_code[], cpl3_denied[], cpl3_kwrite[],
		  cpl3_kwrite_end[], cpl3_ud2[], cpl3_back[];
extern const char nw_vmclear[], nw_vmptrld[], ns_vmsave[];

/* spp_fuzz_test.c */
extern const char fz_call_ret[];

#endif /* SELFTEST_KVM_SPP_LABELS_H */
