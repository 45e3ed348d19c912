//! Reading the kernel's counters and the conntrack table.
use std::time::SystemTime;

use aya::maps::PerCpuValues;
use filter_common::{names, CtEntry, CtKey, RuleStats, MAX_RULE_SLOTS, STAT_COUNT};

use super::{
    error::{DataplaneError, Result},
    maps::Maps,
    sys,
};
use crate::clock::KtimeClock;

/// The counters of one rule slot, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounters {
    pub packets: u64,
    pub bytes: u64,
    /// The latest hit on any CPU, in wall-clock time.
    pub last_hit: Option<SystemTime>,
    /// The same as the raw `bpf_ktime_get_ns` value (0: never).
    pub last_hit_ktime_ns: u64,
}

impl RuleCounters {
    fn sum(values: &PerCpuValues<RuleStats>, clock: &KtimeClock) -> Self {
        let mut c = Self::default();
        for v in values.iter() {
            c.packets = c.packets.wrapping_add(v.packets);
            c.bytes = c.bytes.wrapping_add(v.bytes);
            c.last_hit_ktime_ns = c.last_hit_ktime_ns.max(v.last_hit_ns);
        }
        c.last_hit = clock.to_system_time(c.last_hit_ktime_ns);
        c
    }

    /// Whether the slot never counted anything.
    pub fn is_zero(&self) -> bool {
        self.packets == 0 && self.bytes == 0 && self.last_hit_ktime_ns == 0
    }
}

// The batched reader decodes `RuleStats` by hand: three u64, in order.
const _: () = assert!(std::mem::size_of::<RuleStats>() == 24);

impl Maps {
    pub(crate) fn stats(&self) -> Result<[u64; STAT_COUNT as usize]> {
        let mut out = [0u64; STAT_COUNT as usize];
        for (index, total) in (0u32..).zip(out.iter_mut()) {
            let values = self
                .stats
                .get(&index, 0)
                .map_err(|e| DataplaneError::map(names::STATS, "reading a counter", e))?;
            *total = values.iter().fold(0u64, |a, v| a.wrapping_add(*v));
        }
        Ok(out)
    }

    pub(crate) fn rule_stats(&self, slot: u32) -> Result<RuleCounters> {
        let values = self
            .rule_stats
            .get(&slot, 0)
            .map_err(|e| DataplaneError::map(names::RULE_STATS, "reading a rule counter", e))?;
        Ok(RuleCounters::sum(&values, &KtimeClock::now()))
    }

    pub(crate) fn all_rule_stats(&self) -> Result<Vec<(u32, RuleCounters)>> {
        match self.all_rule_stats_batched() {
            Ok(out) => Ok(out),
            Err(e) => {
                tracing::debug!(
                    "batched read of {} failed ({e}); reading slot by slot",
                    names::RULE_STATS
                );
                self.all_rule_stats_one_by_one()
            }
        }
    }

    /// One `BPF_MAP_LOOKUP_BATCH` per 4096 slots.
    fn all_rule_stats_batched(&self) -> std::io::Result<Vec<(u32, RuleCounters)>> {
        use aya::maps::IterableMap as _;
        use std::os::fd::AsFd as _;
        let clock = KtimeClock::now();
        let ncpu = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let size = std::mem::size_of::<RuleStats>();
        let stride = size.div_ceil(8) * 8;
        let u64_at = |b: &[u8], at: usize| {
            b.get(at..at + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_ne_bytes)
        };
        let mut out = Vec::new();
        sys::percpu_array_lookup_batch(
            self.rule_stats.map().fd().as_fd(),
            size,
            ncpu,
            |slot, values| {
                let mut c = RuleCounters::default();
                for cpu in values.chunks_exact(stride) {
                    c.packets = c.packets.wrapping_add(u64_at(cpu, 0));
                    c.bytes = c.bytes.wrapping_add(u64_at(cpu, 8));
                    c.last_hit_ktime_ns = c.last_hit_ktime_ns.max(u64_at(cpu, 16));
                }
                if !c.is_zero() {
                    c.last_hit = clock.to_system_time(c.last_hit_ktime_ns);
                    out.push((slot, c));
                }
            },
        )?;
        Ok(out)
    }

    fn all_rule_stats_one_by_one(&self) -> Result<Vec<(u32, RuleCounters)>> {
        let clock = KtimeClock::now();
        let len = self.rule_stats.len().min(MAX_RULE_SLOTS);
        let mut out = Vec::new();
        for slot in 0..len {
            let values = self
                .rule_stats
                .get(&slot, 0)
                .map_err(|e| DataplaneError::map(names::RULE_STATS, "reading a rule counter", e))?;
            let c = RuleCounters::sum(&values, &clock);
            if !c.is_zero() {
                out.push((slot, c));
            }
        }
        Ok(out)
    }

    pub(crate) fn reset_rule_stats(&mut self, slot: u32) -> Result<()> {
        let zeros = aya::util::nr_cpus()
            .map_err(|(_, e)| DataplaneError::io("reading", "/sys/devices/system/cpu/possible", e))
            .map(|n| vec![RuleStats::default(); n])?;
        let zeros = PerCpuValues::try_from(zeros)
            .map_err(|e| DataplaneError::map(names::RULE_STATS, "sizing", e.into()))?;
        self.rule_stats
            .set(slot, zeros, 0)
            .map_err(|e| DataplaneError::map(names::RULE_STATS, "resetting a rule counter", e))
    }

    /// Zeroes the counters of `slots` in batches, falling back to one
    /// slot at a time where batches are refused.
    pub(crate) fn reset_rule_stats_of(&mut self, slots: &[u32]) -> Result<()> {
        use aya::maps::IterableMap as _;
        use std::os::fd::AsFd as _;
        if slots.is_empty() {
            return Ok(());
        }
        let ncpu = aya::util::nr_cpus().map_err(|(_, e)| {
            DataplaneError::io("reading", "/sys/devices/system/cpu/possible", e)
        })?;
        let batched = sys::percpu_array_zero_batch(
            self.rule_stats.map().fd().as_fd(),
            slots,
            std::mem::size_of::<RuleStats>(),
            ncpu,
        );
        match batched {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::debug!(
                    "batched reset of {} failed ({e}); resetting slot by slot",
                    names::RULE_STATS
                );
                slots
                    .iter()
                    .try_for_each(|&slot| self.reset_rule_stats(slot))
            }
        }
    }

    pub(crate) fn conntrack_entries(&self) -> Result<Vec<(CtKey, CtEntry)>> {
        // Entries evicted during the walk are skipped by aya; the cap keeps a
        // walk over a churning table finite (a vanished key restarts it).
        let mut out = Vec::new();
        for item in self.ct.iter().take(self.ct_walk_limit()) {
            out.push(item.map_err(|e| DataplaneError::map(names::CT, "listing", e))?);
        }
        Ok(out)
    }

    pub(crate) fn clear_conntrack(&mut self) -> Result<()> {
        for (key, _) in self.conntrack_entries()? {
            match self.ct.remove(&key) {
                // Gone already (expired and evicted meanwhile): as good.
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(DataplaneError::map(names::CT, "clearing", e)),
            }
        }
        Ok(())
    }

    pub(crate) fn conntrack_count(&self) -> Result<usize> {
        let mut n = 0;
        for key in self.ct.keys().take(self.ct_walk_limit()) {
            key.map_err(|e| DataplaneError::map(names::CT, "counting", e))?;
            n += 1;
        }
        Ok(n)
    }

    /// The conntrack table's size (`max_entries` of the kernel map, which
    /// for an adopted map is the size its creator chose).
    pub(crate) fn conntrack_capacity(&self) -> Result<u32> {
        use aya::maps::IterableMap as _;
        self.ct
            .map()
            .info()
            .map(|i| i.max_entries())
            .map_err(|e| DataplaneError::map(names::CT, "reading its kernel info", e))
    }

    /// Twice the table size: more keys than that means the walk restarted.
    fn ct_walk_limit(&self) -> usize {
        let max = self
            .conntrack_capacity()
            .unwrap_or(filter_common::DEFAULT_CT_ENTRIES);
        usize::try_from(max).unwrap_or(usize::MAX).saturating_mul(2)
    }

    pub(crate) fn lookup_conntrack(&self, key: &CtKey) -> Result<Option<CtEntry>> {
        match self.ct.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(DataplaneError::map(names::CT, "looking up", e)),
        }
    }
}
