//! Sorted ranges: how the data plane finds the class or rule that covers a
//! port or an address (ARCHITECTURE.md, "Sorted ranges").
//!
//! The compiler resolves each of its longest-prefix tables (one per table
//! and protocol class for ports, one per table or rule set and family for
//! addresses) into the disjoint ranges the prefixes cut the key space into,
//! each with the value of its longest covering prefix. A table's ranges are
//! a [`Run`] of consecutive [`Bound`]s in `FILTER_BOUNDS`, sorted by the
//! key where each range starts; the first starts at key 0, so every key
//! lies in exactly one range of a non-empty run. The kernel finds it with a
//! binary search: at most [`SEARCH_STEPS`] array reads, inlined by the
//! verifier, where an LPM trie lookup is a call that walks a node per
//! prefix bit that branches.
use crate::{assert_size, pod, SLOT_ID_BIT};

/// `FILTER_BOUNDS` entries the maps are created with (24 MiB): room for
/// two generations of about 80k diverse rules. A generation that needs more
/// makes the daemon grow the array (ARCHITECTURE.md, "Growing the maps").
pub const INITIAL_BOUNDS: u32 = 1 << 20;
/// The most `FILTER_BOUNDS` grows to (1.5 GiB); each generation may use
/// half, so the running one and the next always fit side by side.
pub const MAX_BOUNDS: u32 = 1 << 26;
/// `FILTER_RULE_SETS` entries, both generations.
pub const MAX_RULE_SETS: u32 = 1 << 20;
/// Binary-search steps the kernel takes at most: they bring a run of
/// [`MAX_RUN_BOUNDS`] down to one bound. The verifier walks every step, so
/// this, not the array's size, is what the programs are verified for.
pub const SEARCH_STEPS: u32 = 22;
/// The longest run one table may have (4 Mi ranges: two million prefixes).
pub const MAX_RUN_BOUNDS: u32 = 1 << SEARCH_STEPS;

/// The array index of a table or rule-set id in an array of `capacity`
/// entries: slot 0's ids fill the first half, slot 1's (which carry
/// [`SLOT_ID_BIT`]) the second. `ID_NONE` lands past the end, where a
/// lookup finds nothing.
#[inline(always)]
pub const fn id_index(id: u32, capacity: u32) -> u32 {
    (id & !SLOT_ID_BIT).wrapping_add((id >> 31) * (capacity / 2))
}

/// Where a family's run sits among per-family runs: IPv4 first, then IPv6
/// (any other family is searched as IPv6).
#[inline(always)]
pub const fn family_index(family: u8) -> usize {
    if family == crate::FAMILY_V4 {
        0
    } else {
        1
    }
}

/// The bound of the range of `run` that holds key `(hi, lo)`: the last
/// bound whose key is not greater, read with `at` (the kernel reads
/// `FILTER_BOUNDS`, the compiler's model its own copy). None for an empty
/// run, or one that `at` cannot read.
///
/// The run's first bound starts at key 0, so once the run is not empty the
/// answer exists; each step halves the bounds left, and [`SEARCH_STEPS`]
/// halvings bring the longest run allowed ([`MAX_RUN_BOUNDS`]) down to one.
#[inline(always)]
pub fn search<'a>(
    run: Run,
    (hi, lo): (u64, u64),
    at: impl Fn(u32) -> Option<&'a Bound>,
) -> Option<&'a Bound> {
    if run.len == 0 {
        return None;
    }
    let mut base = run.start;
    let mut left = run.len;
    for _ in 0..SEARCH_STEPS {
        if left <= 1 {
            break;
        }
        let half = left / 2;
        let mid = at(base + half)?;
        if mid.hi < hi || (mid.hi == hi && mid.lo <= lo) {
            base += half;
        }
        left -= half;
    }
    at(base)
}

/// Consecutive bounds of `FILTER_BOUNDS`: `[start, start + len)`, absolute
/// indexes. `len == 0`: no ranges, nothing matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Run {
    pub start: u32,
    pub len: u32,
}
assert_size!(Run, 8);

/// The start of one range and its value. Keys compare as `(hi, lo)`:
/// a port is `(0, port)`; an address is its 16 bytes read as two big-endian
/// integers (IPv4 in the first four bytes, the rest zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Bound {
    pub hi: u64,
    pub lo: u64,
    /// A class id ([`crate::ID_NONE`]: no class), or for rules and inner
    /// access the `ACTION_*` ([`crate::ACTION_NONE`]: no rule).
    pub value: u32,
    /// The rule's counter slot (rules and inner access; else 0).
    pub slot: u32,
}
assert_size!(Bound, 24);

impl Bound {
    /// The key of an address, as bounds store it.
    #[inline(always)]
    pub fn addr_key(addr: &[u8; 16]) -> (u64, u64) {
        let [a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7] = *addr;
        (
            u64::from_be_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
            u64::from_be_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
        )
    }
}

/// `FILTER_RULE_SETS[id_index(rule set)]`: the rule set's ranges on the
/// remote address, per family.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleSetRuns {
    pub v4: Run,
    pub v6: Run,
}
assert_size!(RuleSetRuns, 16);

impl RuleSetRuns {
    /// The run of a family (`FAMILY_V4`, else IPv6).
    #[inline(always)]
    pub fn family(&self, family: u8) -> Run {
        crate::family_run(&[self.v4, self.v6], family)
    }
}

/// Protocol classes a table keeps port ranges for, in [`proto_class_index`]
/// order.
pub const PROTO_CLASS_COUNT: usize = 6;

/// The index of a protocol class (`proto_class`) in a table's per-class
/// runs.
#[inline(always)]
pub const fn proto_class_index(class: u8) -> usize {
    match class {
        crate::PROTO_ICMP => 0,
        crate::PROTO_TCP => 1,
        crate::PROTO_UDP => 2,
        crate::PROTO_GRE => 3,
        crate::PROTO_ICMPV6 => 4,
        _ => 5,
    }
}

pod!(Run, Bound, RuleSetRuns);
