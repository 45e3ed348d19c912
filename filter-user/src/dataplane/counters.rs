//! Reading the kernel's counters and the conntrack table.
use std::time::SystemTime;

use aya::maps::PerCpuValues;
use filter_common::{names, CtEntry, CtKey, RuleStats, HOT_RULE_SLOTS, MAX_RULE_SLOTS, STAT_COUNT};

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
    /// Adds one CPU's copy (or the shared one) of a slot.
    fn add(&mut self, v: &RuleStats) {
        self.packets = self.packets.wrapping_add(v.packets);
        self.bytes = self.bytes.wrapping_add(v.bytes);
        self.last_hit_ktime_ns = self.last_hit_ktime_ns.max(v.last_hit_ns);
    }

    fn of<'a>(copies: impl IntoIterator<Item = &'a RuleStats>, clock: &KtimeClock) -> Self {
        let mut c = Self::default();
        copies.into_iter().for_each(|v| c.add(v));
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

/// Where a rule slot's counters live: `FILTER_RSTATS` (per CPU) below
/// `HOT_RULE_SLOTS`, `FILTER_RSHARED` from there on.
enum Home {
    PerCpu(u32),
    Shared(u32),
}

fn home(slot: u32) -> Home {
    match slot.checked_sub(HOT_RULE_SLOTS) {
        None => Home::PerCpu(slot),
        Some(index) => Home::Shared(index),
    }
}

fn possible_cpus() -> Result<usize> {
    aya::util::nr_cpus()
        .map_err(|(_, e)| DataplaneError::io("reading", "/sys/devices/system/cpu/possible", e))
}

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
        self.rule_stats_at(slot, &KtimeClock::now())
    }

    fn rule_stats_at(&self, slot: u32, clock: &KtimeClock) -> Result<RuleCounters> {
        match home(slot) {
            Home::PerCpu(index) => {
                let values = self.rule_stats.get(&index, 0).map_err(|e| {
                    DataplaneError::map(names::RULE_STATS, "reading a rule counter", e)
                })?;
                Ok(RuleCounters::of(values.iter(), clock))
            }
            Home::Shared(index) => {
                let value = self.rule_stats_shared.get(&index, 0).map_err(|e| {
                    DataplaneError::map(names::RULE_STATS_SHARED, "reading a rule counter", e)
                })?;
                Ok(RuleCounters::of([&value], clock))
            }
        }
    }

    /// Every slot below `upto` that counted something.
    pub(crate) fn all_rule_stats(&self, upto: u32) -> Result<Vec<(u32, RuleCounters)>> {
        match self.all_rule_stats_batched(upto) {
            Ok(out) => Ok(out),
            Err(e) => {
                tracing::debug!(
                    "batched read of the rule counters failed ({e}); reading slot by slot"
                );
                self.all_rule_stats_one_by_one(upto)
            }
        }
    }

    /// One `BPF_MAP_LOOKUP_BATCH` per 4096 slots.
    fn all_rule_stats_batched(&self, upto: u32) -> std::io::Result<Vec<(u32, RuleCounters)>> {
        use aya::maps::IterableMap as _;
        use std::os::fd::AsFd as _;
        let clock = KtimeClock::now();
        let ncpu = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let size = std::mem::size_of::<RuleStats>();
        let stride = sys::percpu_copy_size(size);
        let decode = |b: &[u8]| {
            let u64_at = |at: usize| {
                b.get(at..at + 8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map_or(0, u64::from_ne_bytes)
            };
            RuleStats {
                packets: u64_at(0),
                bytes: u64_at(8),
                last_hit_ns: u64_at(16),
            }
        };
        let mut out = Vec::new();
        let mut keep = |slot: u32, mut c: RuleCounters| {
            if slot < upto && !c.is_zero() {
                c.last_hit = clock.to_system_time(c.last_hit_ktime_ns);
                out.push((slot, c));
            }
        };
        sys::percpu_array_lookup_batch(
            self.rule_stats.map().fd().as_fd(),
            size,
            ncpu,
            |slot, values| {
                let mut c = RuleCounters::default();
                for cpu in values.chunks_exact(stride) {
                    c.add(&decode(cpu));
                }
                keep(slot, c);
            },
        )?;
        sys::array_for_each_in(
            self.rule_stats_shared.map().fd().as_fd(),
            0..upto.saturating_sub(HOT_RULE_SLOTS),
            |index, v: RuleStats| {
                let mut c = RuleCounters::default();
                c.add(&v);
                keep(index + HOT_RULE_SLOTS, c);
            },
        )?;
        Ok(out)
    }

    fn all_rule_stats_one_by_one(&self, upto: u32) -> Result<Vec<(u32, RuleCounters)>> {
        let clock = KtimeClock::now();
        let mut out = Vec::new();
        for slot in 0..upto.min(MAX_RULE_SLOTS) {
            let c = self.rule_stats_at(slot, &clock)?;
            if !c.is_zero() {
                out.push((slot, c));
            }
        }
        Ok(out)
    }

    pub(crate) fn reset_rule_stats(&mut self, slot: u32) -> Result<()> {
        match home(slot) {
            Home::PerCpu(index) => {
                let zeros = PerCpuValues::try_from(vec![RuleStats::default(); possible_cpus()?])
                    .map_err(|e| DataplaneError::map(names::RULE_STATS, "sizing", e.into()))?;
                self.rule_stats.set(index, zeros, 0).map_err(|e| {
                    DataplaneError::map(names::RULE_STATS, "resetting a rule counter", e)
                })
            }
            Home::Shared(index) => self
                .rule_stats_shared
                .set(index, RuleStats::default(), 0)
                .map_err(|e| {
                    DataplaneError::map(names::RULE_STATS_SHARED, "resetting a rule counter", e)
                }),
        }
    }

    /// Zeroes the counters of `slots` in batches, falling back to one
    /// slot at a time where batches are refused.
    pub(crate) fn reset_rule_stats_of(&mut self, slots: &[u32]) -> Result<()> {
        use aya::maps::IterableMap as _;
        use std::os::fd::AsFd as _;
        let (mut per_cpu, mut shared) = (Vec::new(), Vec::new());
        for &slot in slots {
            match home(slot) {
                Home::PerCpu(index) => per_cpu.push(index),
                Home::Shared(index) => shared.push(index),
            }
        }
        let value = std::mem::size_of::<RuleStats>();
        let batched = sys::array_zero_batch(
            self.rule_stats.map().fd().as_fd(),
            &per_cpu,
            sys::percpu_copy_size(value) * possible_cpus()?,
        )
        .and_then(|()| {
            sys::array_zero_batch(self.rule_stats_shared.map().fd().as_fd(), &shared, value)
        });
        match batched {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::debug!(
                    "batched reset of the rule counters failed ({e}); resetting slot by slot"
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
