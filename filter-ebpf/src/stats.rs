//! Counters: `FILTER_STATS` (one verdict reason per packet) and
//! `FILTER_RSTATS` / `FILTER_RSHARED` (packets, bytes and last hit per rule
//! slot).
//!
//! `FILTER_STATS` and `FILTER_RSTATS` are per-CPU arrays, so plain
//! read-modify-write is race free: a program runs with migration disabled
//! and one CPU never sees another's copy. User space sums the CPUs. Rule
//! slots past `HOT_RULE_SLOTS` share one copy (ARCHITECTURE.md, "Counter
//! slots"), counted with atomic adds.
use core::ptr::addr_of_mut;

use filter_common::{RuleStats, HOT_RULE_SLOTS};

use crate::{
    conntrack::atomic_add,
    maps::{FILTER_RSHARED, FILTER_RSTATS, FILTER_STATS},
};

/// Counts one packet under `STAT_*` reason `stat`. The pipeline calls this
/// exactly once per packet, on its way out.
#[inline(always)]
pub fn count(stat: u32) {
    if let Some(c) = FILTER_STATS.get_ptr_mut(stat) {
        // SAFETY: a valid per-CPU map value; this CPU is the only writer.
        unsafe { *c += 1 };
    }
}

/// Counts one packet of `bytes` IP-layer bytes on rule counter `slot` (the
/// rule, default or fixed reason that decided it). A slot past the array is
/// ignored: the lookup fails, nothing is written.
#[inline(always)]
pub fn count_rule(slot: u32, bytes: u32, now: u64) {
    if slot < HOT_RULE_SLOTS {
        if let Some(r) = FILTER_RSTATS.get_ptr_mut(slot) {
            let r: *mut RuleStats = r;
            // SAFETY: as above.
            unsafe {
                (*r).packets += 1;
                (*r).bytes += u64::from(bytes);
                (*r).last_hit_ns = now;
            }
        }
    } else if let Some(r) = FILTER_RSHARED.get_ptr_mut(slot - HOT_RULE_SLOTS) {
        let r: *mut RuleStats = r;
        // SAFETY: a valid map value that other CPUs update too: the sums are
        // atomic; the last hit is a plain store, any CPU's recent time is
        // as good.
        unsafe {
            atomic_add(addr_of_mut!((*r).packets), 1);
            atomic_add(addr_of_mut!((*r).bytes), u64::from(bytes));
            (*r).last_hit_ns = now;
        }
    }
}
