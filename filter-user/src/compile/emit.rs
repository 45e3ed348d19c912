//! Turning one planned table into map entries (ARCHITECTURE.md steps 1–7).
use std::collections::HashSet;

use filter_common::{
    names, proto_has_ports, CellKey, InnerSummary, RuleHit, TableMeta, ACTION_ACCEPT, FAMILY_V6,
    ID_NONE, MAX_ADDR_CLASS_ENTRIES, MAX_CELLS, MAX_INNER_ENTRIES, MAX_PORT_ENTRIES,
    MAX_RULE_ENTRIES, TABLE_HAS_INNER, TABLE_HAS_LOCAL, TABLE_HAS_SPORT,
};

use super::{
    classes::{intersect, local_classes, port_runs, Interner},
    port_cover::{port_key, port_prefixes},
    prefix::Prefix,
    push_down::push_down,
    rules::{RuleBox, PROTO_CLASSES},
    tables::TableSpec,
    CompileError, LpmEntry,
};
use crate::ruleset::PortRange;

/// The entries of every map but `FILTER_ENIS` and `FILTER_CONFIG`.
#[derive(Debug, Default)]
pub(crate) struct Entries {
    pub tables: Vec<(u32, TableMeta)>,
    pub dport: Vec<LpmEntry<filter_common::PortKeyData, u32>>,
    pub sport: Vec<LpmEntry<filter_common::PortKeyData, u32>>,
    pub local: Vec<LpmEntry<filter_common::AddrKeyData, u32>>,
    pub cells: Vec<(CellKey, u32)>,
    pub rules: Vec<LpmEntry<filter_common::AddrKeyData, RuleHit>>,
    pub inner: Vec<LpmEntry<filter_common::AddrKeyData, RuleHit>>,
}

/// Half of a map's capacity: two generations share every map during an
/// apply (ARCHITECTURE.md, "Atomic generations").
pub(crate) const fn half(capacity: u32) -> usize {
    (capacity / 2) as usize
}

/// Builds tables one after the other into [`Entries`], sharing rule sets
/// (and their remote-address prefixes) between all tables of the generation.
pub(crate) struct Emitter<'a> {
    boxes: &'a [RuleBox],
    slot_bit: u32,
    rule_sets: Interner,
    pub out: Entries,
}

/// One table's classes of one kind (dport, sport or local), interned by set.
struct TableClasses {
    interner: Interner,
}

impl<'a> Emitter<'a> {
    pub fn new(boxes: &'a [RuleBox], slot_bit: u32) -> Emitter<'a> {
        Emitter {
            boxes,
            slot_bit,
            rule_sets: Interner::new(slot_bit),
            out: Entries::default(),
        }
    }

    /// The entries, and how many rule sets they use; the rest is freed.
    pub fn finish(self) -> (Entries, usize) {
        (self.out, self.rule_sets.len())
    }

    /// Emits table `id` of `spec`, whose inner-access groups have the given
    /// hits (by rank) and whose default verdict counts into `default_slot`.
    pub fn table(
        &mut self,
        id: u32,
        spec: &TableSpec,
        inner_hits: &[RuleHit],
        default_slot: u32,
    ) -> Result<(), CompileError> {
        let has_sport = spec
            .rules
            .iter()
            .any(|&r| !self.boxes[r as usize].src.is_any());
        let has_local = spec
            .rules
            .iter()
            .any(|&r| self.boxes[r as usize].local.is_some());
        let mut flags = 0;
        if has_sport {
            flags |= TABLE_HAS_SPORT;
        }
        if has_local {
            flags |= TABLE_HAS_LOCAL;
        }
        let inner = self.inner(id, spec, inner_hits)?;
        if !inner.is_empty() {
            flags |= TABLE_HAS_INNER;
        }
        let meta = TableMeta {
            flags,
            default_action: spec.default_action,
            default_slot,
            inner: inner_summary(inner.iter().map(|(p, _)| p)),
            // The runs: `layout.rs`, once every table is emitted.
            ..TableMeta::default()
        };
        self.out.tables.push((id, meta));
        if has_sport || has_local {
            self.classes_with_cells(id, spec, has_sport, has_local)
        } else {
            self.classes_without_cells(id, spec)
        }
    }

    /// Inner access: each member prefix resolves to its first inner-access
    /// group (by rank) that contains it. Returns the prefixes emitted.
    fn inner(
        &mut self,
        id: u32,
        spec: &TableSpec,
        hits: &[RuleHit],
    ) -> Result<Vec<(Prefix, u32)>, CompileError> {
        let mut items = spec.inner.clone();
        let resolved = push_down(&mut items);
        check(
            self.out.inner.len() + resolved.len(),
            MAX_INNER_ENTRIES,
            "inner-access prefixes",
            spec,
        )?;
        for (prefix, rank) in &resolved {
            let (prefix_len, key) = prefix.key(id);
            self.out.inner.push(LpmEntry {
                prefix_len,
                key,
                value: hits[*rank as usize],
            });
        }
        Ok(resolved)
    }

    /// Step 3 only: the destination-port class is the rule-set id.
    fn classes_without_cells(&mut self, id: u32, spec: &TableSpec) -> Result<(), CompileError> {
        for proto in PROTO_CLASSES {
            for (lo, hi, set) in runs(proto, &self.ranges(spec, proto, |b| b.dst)) {
                let rule_set = self.rule_set(&set, spec)?;
                push_ports(&mut self.out.dport, id, proto, lo, hi, rule_set);
            }
        }
        check(
            self.out.dport.len(),
            MAX_PORT_ENTRIES,
            "destination-port prefixes",
            spec,
        )
    }

    /// Steps 3–6: destination-port, source-port and local classes, and a
    /// cell for every combination that some rule covers.
    fn classes_with_cells(
        &mut self,
        id: u32,
        spec: &TableSpec,
        has_sport: bool,
        has_local: bool,
    ) -> Result<(), CompileError> {
        let mut dclasses = TableClasses {
            interner: Interner::new(self.slot_bit),
        };
        let mut sclasses = TableClasses {
            interner: Interner::new(self.slot_bit),
        };
        let mut lclasses = TableClasses {
            interner: Interner::new(self.slot_bit),
        };
        // Per protocol class: the distinct dport and sport class ids.
        let mut per_proto: Vec<(Vec<u32>, Vec<u32>)> = Vec::new();
        for proto in PROTO_CLASSES {
            let dst = self.ranges(spec, proto, |b| b.dst);
            let d = dclasses.emit(&mut self.out.dport, id, proto, &dst);
            let s = if has_sport {
                let src = self.ranges(spec, proto, |b| b.src);
                sclasses.emit(&mut self.out.sport, id, proto, &src)
            } else {
                vec![ID_NONE]
            };
            per_proto.push((d, s));
        }
        check(
            self.out.dport.len(),
            MAX_PORT_ENTRIES,
            "destination-port prefixes",
            spec,
        )?;
        check(
            self.out.sport.len(),
            MAX_PORT_ENTRIES,
            "source-port prefixes",
            spec,
        )?;
        let mut lids = vec![ID_NONE];
        if has_local {
            lids.clear();
            for (prefix, set) in local_classes(&spec.rules, self.boxes) {
                let (class, new) = lclasses.interner.intern(&set);
                if new {
                    lids.push(class);
                }
                let (prefix_len, key) = prefix.key(id);
                self.out.local.push(LpmEntry {
                    prefix_len,
                    key,
                    value: class,
                });
            }
            check(
                self.out.local.len(),
                MAX_ADDR_CLASS_ENTRIES,
                "local-address prefixes",
                spec,
            )?;
        }
        // A class id of NONE stands for "this dimension is not used": every
        // rule of the table.
        let set_of = |classes: &TableClasses, class: u32| -> Option<Vec<u32>> {
            (class != ID_NONE).then(|| classes.interner.set(class).to_vec())
        };
        let mut seen = HashSet::new();
        for (dids, sids) in per_proto {
            for &d in &dids {
                let dset = set_of(&dclasses, d).unwrap_or_else(|| spec.rules.clone());
                for &s in &sids {
                    let ds = match set_of(&sclasses, s) {
                        Some(sset) => intersect(&dset, &sset),
                        None => dset.clone(),
                    };
                    if ds.is_empty() {
                        continue;
                    }
                    for &l in &lids {
                        let key = CellKey {
                            table: id,
                            dport_class: d,
                            sport_class: s,
                            local_class: l,
                        };
                        if !seen.insert(key) {
                            continue;
                        }
                        let dsl = match set_of(&lclasses, l) {
                            Some(lset) => intersect(&ds, &lset),
                            None => ds.clone(),
                        };
                        if dsl.is_empty() {
                            continue;
                        }
                        let rule_set = self.rule_set(&dsl, spec)?;
                        self.out.cells.push((key, rule_set));
                        check(self.out.cells.len(), MAX_CELLS, names::CELLS, spec)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// `(range, rule)` of every rule of the table that applies to `proto`.
    fn ranges(
        &self,
        spec: &TableSpec,
        proto: u8,
        range: impl Fn(&RuleBox) -> PortRange,
    ) -> Vec<(PortRange, u32)> {
        spec.rules
            .iter()
            .filter(|&&r| self.boxes[r as usize].protos.contains(proto))
            .map(|&r| (range(&self.boxes[r as usize]), r))
            .collect()
    }

    /// The rule-set id of `set`, emitting its remote-address prefixes the first
    /// time: every remote prefix of the set's rules, with the strongest rule
    /// that contains it.
    fn rule_set(&mut self, set: &[u32], spec: &TableSpec) -> Result<u32, CompileError> {
        let (id, new) = self.rule_sets.intern(set);
        if new {
            let mut items: Vec<_> = set
                .iter()
                .flat_map(|&r| self.boxes[r as usize].remote.iter().map(move |p| (*p, r)))
                .collect();
            let resolved = push_down(&mut items);
            // Counted before anything is added: a rule set too big for the
            // map is refused before it costs memory.
            check(
                self.out.rules.len() + resolved.len(),
                MAX_RULE_ENTRIES,
                "remote-address prefixes",
                spec,
            )?;
            self.out
                .rules
                .extend(resolved.into_iter().map(|(prefix, rule)| {
                    let (prefix_len, key) = prefix.key(id);
                    LpmEntry {
                        prefix_len,
                        key,
                        value: self.boxes[rule as usize].hit,
                    }
                }));
        }
        Ok(id)
    }
}

impl TableClasses {
    /// Emits the port entries of one protocol class and returns the distinct
    /// class ids it used.
    fn emit(
        &mut self,
        out: &mut Vec<LpmEntry<filter_common::PortKeyData, u32>>,
        table: u32,
        proto: u8,
        ranges: &[(PortRange, u32)],
    ) -> Vec<u32> {
        let mut ids = Vec::new();
        for (lo, hi, set) in runs(proto, ranges) {
            let (class, _) = self.interner.intern(&set);
            if !ids.contains(&class) {
                ids.push(class);
            }
            push_ports(out, table, proto, lo, hi, class);
        }
        ids
    }
}

/// The port runs of one protocol class. Protocols without ports are looked
/// up with port 0, so only the run holding port 0 matters; it becomes one
/// entry that ignores the port (prefix length `PORT_KEY_FIXED_BITS`).
fn runs(proto: u8, ranges: &[(PortRange, u32)]) -> Vec<(u16, u16, Vec<u32>)> {
    let mut runs = port_runs(ranges);
    if !proto_has_ports(proto) {
        runs.retain(|(lo, _, _)| *lo == 0);
        for run in &mut runs {
            run.1 = u16::MAX;
        }
    }
    runs
}

/// The LPM entries of one port run.
fn push_ports(
    out: &mut Vec<LpmEntry<filter_common::PortKeyData, u32>>,
    table: u32,
    proto: u8,
    lo: u16,
    hi: u16,
    value: u32,
) {
    for (port, bits) in port_prefixes(lo, hi) {
        let (prefix_len, key) = port_key(table, proto, port, bits);
        out.push(LpmEntry {
            prefix_len,
            key,
            value,
        });
    }
}

fn check(
    count: usize,
    capacity: u32,
    map: &'static str,
    spec: &TableSpec,
) -> Result<(), CompileError> {
    if count > half(capacity) {
        return Err(CompileError::MapFull {
            map,
            limit: half(capacity),
            table: spec.label.clone(),
        });
    }
    Ok(())
}

/// The inner-access hit of a group.
pub(crate) fn inner_hit(slot: u32) -> RuleHit {
    RuleHit {
        action: u32::from(ACTION_ACCEPT),
        slot,
    }
}

/// The [`InnerSummary`] of a table whose inner-access members are
/// `members`: per family, the longest prefix containing them all, cut to the
/// bits the summary keeps (32 for IPv4, 64 for IPv6).
pub(crate) fn inner_summary<'p>(members: impl Iterator<Item = &'p Prefix>) -> InnerSummary {
    let mut cover: [Option<Prefix>; 2] = [None, None];
    for m in members {
        let i = usize::from(m.family == FAMILY_V6);
        cover[i] = Some(cover[i].map_or(*m, |c| c.join(m)));
    }
    let mut s = InnerSummary::NOBODY;
    if let Some(c) = cover[0] {
        let len = u32::from(c.len.min(32));
        s.v4_mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
        s.v4_net = ((c.addr >> 96) as u32) & s.v4_mask;
    }
    if let Some(c) = cover[1] {
        let len = u32::from(c.len.min(64));
        s.v6_mask = u64::MAX.checked_shl(64 - len).unwrap_or(0);
        s.v6_net = ((c.addr >> 64) as u64) & s.v6_mask;
    }
    s
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::compile::prefix::{left_aligned, mask};

    fn p(s: &str) -> Prefix {
        Prefix::from_net(&s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
    }

    fn may(s: &InnerSummary, ip: &str) -> bool {
        let ip: IpAddr = ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
        let (family, addr) = left_aligned(ip);
        s.may_contain(family, &addr.to_be_bytes())
    }

    #[test]
    fn the_summary_covers_the_members_and_rules_out_the_rest() {
        let members = [
            p("192.0.2.10/32"),
            p("192.0.2.11/32"),
            p("2001:db8:0:1::10/128"),
        ];
        let s = inner_summary(members.iter());
        assert!(may(&s, "192.0.2.10") && may(&s, "192.0.2.11"));
        assert!(!may(&s, "192.0.2.12") && !may(&s, "198.18.0.1"));
        // IPv6 is cut to its first 64 bits: the whole /64 may be a member.
        assert!(may(&s, "2001:db8:0:1::10") && may(&s, "2001:db8:0:1::99"));
        assert!(!may(&s, "2001:db8:0:2::10"));
    }

    #[test]
    fn no_members_rule_out_everyone_but_the_zero_address() {
        let s = inner_summary([p("192.0.2.0/24")].iter());
        assert!(!may(&s, "2001:db8::1") && may(&s, "::"));
        let nobody = inner_summary(std::iter::empty());
        assert_eq!(nobody, InnerSummary::NOBODY);
        assert!(!may(&nobody, "192.0.2.1"));
        // The all-zero summary (never written) filters nothing.
        assert!(may(&InnerSummary::default(), "192.0.2.1"));
    }

    #[test]
    fn a_slash_zero_member_covers_everything() {
        let s = inner_summary([p("0.0.0.0/0"), p("::/0")].iter());
        assert!(may(&s, "203.0.113.9") && may(&s, "2001:db8::9"));
    }

    proptest! {
        /// Never a false "not a member": every address of every member
        /// passes the filter.
        #[test]
        fn every_member_address_passes(
            members in proptest::collection::vec((any::<bool>(), any::<u128>(), 0u8..=128), 1..8),
            pick in any::<u128>(),
        ) {
            let prefixes: Vec<Prefix> = members
                .iter()
                .map(|&(v6, addr, len)| {
                    let (family, len) = if v6 { (FAMILY_V6, len) } else { (filter_common::FAMILY_V4, len.min(32)) };
                    let addr = if v6 { addr } else { addr & (u128::from(u32::MAX) << 96) };
                    Prefix { family, addr: mask(addr, len), len }
                })
                .collect();
            let s = inner_summary(prefixes.iter());
            for m in &prefixes {
                // An address of `m`: its prefix, then arbitrary host bits.
                let host = if m.len >= 128 { 0 } else { pick >> m.len };
                let mut addr = m.addr | host;
                if m.family != FAMILY_V6 {
                    addr &= u128::from(u32::MAX) << 96;
                }
                prop_assert!(s.may_contain(m.family, &addr.to_be_bytes()), "{m:?} {addr:x}");
            }
        }
    }
}
