//! Counters: `FILTER_STATS` (one verdict reason per packet) and
//! `FILTER_RSTATS` (packets, bytes and last hit per rule slot).
//!
//! Both are per-CPU arrays, so plain read-modify-write is race free: a
//! program runs with migration disabled and one CPU never sees another's
//! copy. User space sums the CPUs.
use filter_common::RuleStats;

use crate::maps::{FILTER_RSTATS, FILTER_STATS};

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
    if let Some(r) = FILTER_RSTATS.get_ptr_mut(slot) {
        let r: *mut RuleStats = r;
        // SAFETY: as above.
        unsafe {
            (*r).packets += 1;
            (*r).bytes += u64::from(bytes);
            (*r).last_hit_ns = now;
        }
    }
}
