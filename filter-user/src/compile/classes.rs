//! Cutting a table's rules into classes: the sets of rules that cover a
//! destination-port range, a source-port range or a local prefix.
//!
//! A class is named by the set of rules it stands for, sorted ascending
//! (rule ids are in strength order, so the first element is the strongest).
//! Equal sets get one id ([`Interner`]), which is what keeps the number of
//! classes near the number of distinct services rather than of rules.
use std::collections::BTreeSet;

use super::{fast_hash::FastMap, prefix::Prefix, rules::RuleBox};
use crate::ruleset::PortRange;

/// Maximal port runs `(lo, hi, covering rules)` over `0..=65535` for the
/// given `(range, rule)` pairs; ports no rule covers are left out. Adjacent
/// runs always differ (a boundary is where some rule starts or ends).
pub(crate) fn port_runs(ranges: &[(PortRange, u32)]) -> Vec<(u16, u16, Vec<u32>)> {
    // Sweep: +rule at `lo`, -rule at `hi + 1` (up to 65536, hence u32).
    let mut events: Vec<(u32, bool, u32)> = Vec::with_capacity(ranges.len() * 2);
    for &(range, rule) in ranges {
        events.push((u32::from(range.lo), true, rule));
        events.push((u32::from(range.hi) + 1, false, rule));
    }
    events.sort_unstable();
    // A BTreeSet, not a sorted Vec: with 100k rules active at once, inserting
    // into a Vec is quadratic.
    let mut active: BTreeSet<u32> = BTreeSet::new();
    let mut runs = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let at = events[i].0;
        while i < events.len() && events[i].0 == at {
            let (_, add, rule) = events[i];
            if add {
                active.insert(rule);
            } else {
                active.remove(&rule);
            }
            i += 1;
        }
        let next = events.get(i).map_or(65536, |e| e.0);
        if !active.is_empty() && at <= 65535 {
            runs.push((
                at as u16,
                (next - 1).min(65535) as u16,
                active.iter().copied().collect(),
            ));
        }
    }
    runs
}

/// Local classes of a table: every stored local prefix with the set of rules
/// whose local restriction contains it; rules without a restriction are in
/// every class (stored under `/0` of both families). Pre-order, so a
/// prefix's class is its parent's class plus the rules naming it exactly.
pub(crate) fn local_classes(rules: &[u32], boxes: &[RuleBox]) -> Vec<(Prefix, Vec<u32>)> {
    let mut items: Vec<(Prefix, u32)> = Vec::new();
    for &r in rules {
        match boxes[r as usize].local {
            Some(local) => items.push((local, r)),
            None => {
                items.push((Prefix::everything(filter_common::FAMILY_V4), r));
                items.push((Prefix::everything(filter_common::FAMILY_V6), r));
            }
        }
    }
    items.sort_unstable();
    items.dedup();
    let mut out: Vec<(Prefix, Vec<u32>)> = Vec::new();
    let mut stack: Vec<usize> = Vec::new(); // indices into `out`
    let mut i = 0;
    while i < items.len() {
        let prefix = items[i].0;
        let mut own = Vec::new();
        while i < items.len() && items[i].0 == prefix {
            own.push(items[i].1);
            i += 1;
        }
        while stack
            .last()
            .is_some_and(|&top| !out[top].0.contains(&prefix))
        {
            stack.pop();
        }
        let set = match stack.last() {
            Some(&parent) => union(&out[parent].1, &own),
            None => own,
        };
        stack.push(out.len());
        out.push((prefix, set));
    }
    out
}

/// Sorted union of two sorted sets.
pub(crate) fn union(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// Sorted intersection of two sorted sets.
pub(crate) fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// Gives equal rule sets one id. Ids are `base | n` with `n` counting from
/// 0, so the generation's slot bit is in every id.
#[derive(Debug)]
pub(crate) struct Interner {
    base: u32,
    ids: FastMap<Vec<u32>, u32>,
    sets: Vec<Vec<u32>>,
}

impl Interner {
    pub fn new(base: u32) -> Interner {
        Interner {
            base,
            ids: FastMap::default(),
            sets: Vec::new(),
        }
    }

    /// The id of `set`, and whether it was new.
    pub fn intern(&mut self, set: &[u32]) -> (u32, bool) {
        if let Some(&id) = self.ids.get(set) {
            return (id, false);
        }
        let id = self.base | self.sets.len() as u32;
        self.ids.insert(set.to_vec(), id);
        self.sets.push(set.to_vec());
        (id, true)
    }

    /// The set an id stands for.
    pub fn set(&self, id: u32) -> &[u32] {
        &self.sets[(id & !self.base) as usize]
    }

    pub fn len(&self) -> usize {
        self.sets.len()
    }
}

#[cfg(test)]
mod tests {
    use filter_common::RuleHit;

    use super::*;
    use crate::ruleset::Protocol;

    fn r(lo: u16, hi: u16) -> PortRange {
        PortRange { lo, hi }
    }

    #[test]
    fn runs_split_at_shared_ends_and_skip_gaps() {
        let runs = port_runs(&[
            (r(80, 80), 0),
            (r(1, 1024), 1),
            (r(1024, 2000), 2),
            (r(3000, 3000), 3),
        ]);
        assert_eq!(
            runs,
            vec![
                (1, 79, vec![1]),
                (80, 80, vec![0, 1]),
                (81, 1023, vec![1]),
                (1024, 1024, vec![1, 2]),
                (1025, 2000, vec![2]),
                (3000, 3000, vec![3]),
            ]
        );
    }

    #[test]
    fn runs_reach_both_ends_of_the_port_space() {
        let runs = port_runs(&[(PortRange::ANY, 4), (r(65535, 65535), 2)]);
        assert_eq!(runs, vec![(0, 65534, vec![4]), (65535, 65535, vec![2, 4])]);
    }

    #[test]
    fn interning_gives_equal_sets_one_id_with_the_slot_bit() {
        let mut interner = Interner::new(1 << 31);
        let (a, new_a) = interner.intern(&[1, 2, 3]);
        let (b, new_b) = interner.intern(&[1, 2]);
        let (c, new_c) = interner.intern(&[1, 2, 3]);
        assert!(new_a && new_b && !new_c);
        assert_eq!(a, c);
        assert_ne!(a, b);
        assert_eq!(a & (1 << 31), 1 << 31);
        assert_eq!(interner.set(b), &[1, 2]);
        assert_eq!(interner.len(), 2);
    }

    #[test]
    fn local_classes_inherit_from_containing_prefixes() {
        let net = |s: &str| {
            s.parse::<ipnet::IpNet>()
                .unwrap_or_else(|e| panic!("{s}: {e}"))
        };
        let hit = RuleHit::default();
        let boxes = vec![
            RuleBox::new(
                hit,
                Protocol::Tcp,
                PortRange::ANY,
                PortRange::ANY,
                None,
                &[],
            ),
            RuleBox::new(
                hit,
                Protocol::Tcp,
                PortRange::ANY,
                PortRange::ANY,
                Some(&net("10.0.0.0/8")),
                &[],
            ),
            RuleBox::new(
                hit,
                Protocol::Tcp,
                PortRange::ANY,
                PortRange::ANY,
                Some(&net("10.1.0.0/16")),
                &[],
            ),
            RuleBox::new(
                hit,
                Protocol::Tcp,
                PortRange::ANY,
                PortRange::ANY,
                Some(&net("fd00::/8")),
                &[],
            ),
        ];
        let classes = local_classes(&[0, 1, 2, 3], &boxes);
        let find = |s: &str| {
            classes
                .iter()
                .find(|(p, _)| *p == Prefix::from_net(&net(s)))
                .map(|(_, set)| set.clone())
        };
        assert_eq!(find("0.0.0.0/0"), Some(vec![0]));
        assert_eq!(find("10.0.0.0/8"), Some(vec![0, 1]));
        assert_eq!(find("10.1.0.0/16"), Some(vec![0, 1, 2]));
        assert_eq!(find("::/0"), Some(vec![0]));
        assert_eq!(find("fd00::/8"), Some(vec![0, 3]));
    }

    #[test]
    fn set_operations() {
        assert_eq!(union(&[1, 3, 5], &[2, 3, 6]), vec![1, 2, 3, 5, 6]);
        assert_eq!(intersect(&[1, 3, 5], &[2, 3, 5, 6]), vec![3, 5]);
    }
}
