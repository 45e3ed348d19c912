//! The compiler's prefix tables laid out as the sorted ranges the kernel
//! binary-searches (`filter_common::ranges`): a few inlined array reads per
//! lookup instead of an LPM trie walk. Prefixes of one table either nest or
//! are disjoint, so one sweep with a stack of open prefixes builds each
//! [`Run`]. Design: ARCHITECTURE.md, "Sorted ranges".
use std::collections::BTreeMap;

use filter_common::{
    family_index, id_index, proto_class_index, AddrKeyData, Bound, PortKeyData, RuleHit,
    RuleSetRuns, Run, TableMeta, ACTION_NONE, ADDR_KEY_FIXED_BITS, FAMILY_V4, FAMILY_V6, ID_NONE,
    MAX_BOUNDS, MAX_RULE_SETS, MAX_RUN_BOUNDS, PORT_KEY_FIXED_BITS, SLOT_ID_BIT, TABLE_LIVE,
};

use super::LpmEntry;

/// One generation's `FILTER_TABLES`, `FILTER_RULE_SETS` and `FILTER_BOUNDS`
/// contents. Ids are the compiler's (with the slot bit). Every [`Run`]
/// names indexes of `bounds`: where they land in `FILTER_BOUNDS` is the
/// writer's choice (beside the running generation), and it adds that base
/// to each run as it writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Every table, [`TABLE_LIVE`] set and its runs filled in.
    pub tables: Vec<(u32, TableMeta)>,
    /// Every rule set of the generation (ids `0..n` of the slot), with
    /// empty runs for a family it has no rule of.
    pub rule_sets: Vec<(u32, RuleSetRuns)>,
    pub bounds: Vec<Bound>,
}

/// The prefix tables a layout is made from: [`super::Compiled`]'s, or a
/// test's.
#[derive(Clone, Copy, Debug)]
pub struct Prefixes<'a> {
    pub tables: &'a [(u32, TableMeta)],
    pub rule_sets: usize,
    pub dport: &'a [LpmEntry<PortKeyData, u32>],
    pub sport: &'a [LpmEntry<PortKeyData, u32>],
    pub local: &'a [LpmEntry<AddrKeyData, u32>],
    pub rules: &'a [LpmEntry<AddrKeyData, RuleHit>],
    pub inner: &'a [LpmEntry<AddrKeyData, RuleHit>],
}

/// Why a layout cannot be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("{what}: {count} is more than the {limit} one generation may use")]
    TooMany {
        what: &'static str,
        count: usize,
        limit: usize,
    },
    #[error(
        "one table's sorted ranges: {count} is more than the {limit} the kernel's binary search \
         covers"
    )]
    RunTooLong { count: usize, limit: usize },
    /// A compiler bug: a prefix shorter than its key's fixed fields, or one
    /// for an id that is not a table of the generation.
    #[error("prefix table entry {0} cannot be laid out")]
    BadEntry(String),
}

/// A prefix as the range `[lo, hi]` of a key space, and its value.
type Span<V> = (u128, u128, V);

/// The ranges of one prefix table over the key space `[0, last]`:
/// `(start, value)`, sorted, the first at key 0, no two neighbours of equal
/// value.
fn flatten<V: Copy + PartialEq>(mut spans: Vec<Span<V>>, nothing: V, last: u128) -> Vec<(u128, V)> {
    // Outer prefixes before the ones they contain.
    spans.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut out = vec![(0, nothing)];
    // The prefixes that contain the current key, innermost last.
    let mut open: Vec<(u128, V)> = Vec::new();
    for (lo, hi, value) in spans {
        close(&mut open, Some(lo), nothing, last, &mut out);
        open.push((hi, value));
        emit(&mut out, lo, value);
    }
    close(&mut open, None, nothing, last, &mut out);
    out
}

/// Closes the open prefixes that end before `key` (all of them for None):
/// after each, the one around it (or nothing) goes on.
fn close<V: Copy + PartialEq>(
    open: &mut Vec<(u128, V)>,
    key: Option<u128>,
    nothing: V,
    last: u128,
    out: &mut Vec<(u128, V)>,
) {
    while let Some(&(hi, _)) = open.last() {
        if key.is_some_and(|k| hi >= k) {
            break;
        }
        open.pop();
        if hi < last {
            emit(out, hi + 1, open.last().map_or(nothing, |o| o.1));
        }
    }
}

/// Starts a range at `start`; one that starts where another does replaces
/// it, and one of its neighbour's value is no new range.
fn emit<V: Copy + PartialEq>(out: &mut Vec<(u128, V)>, start: u128, value: V) {
    let Some(&(last_start, last_value)) = out.last() else {
        out.push((start, value));
        return;
    };
    if last_start == start {
        out.pop();
        if out.last().map(|l| l.1) != Some(value) {
            out.push((start, value));
        }
    } else if last_value != value {
        out.push((start, value));
    }
}

/// The span of a port-key prefix in the 16-bit port space.
fn port_span(e: &LpmEntry<PortKeyData, u32>) -> Option<Span<u32>> {
    let bits = e.prefix_len.checked_sub(PORT_KEY_FIXED_BITS)?;
    if bits > 16 {
        return None;
    }
    let lo = u128::from(u16::from_be_bytes(e.key.port)) & !(0xffff >> bits);
    Some((lo, lo | (0xffff >> bits), e.value))
}

/// The span of an address-key prefix in the 128-bit address space (IPv4
/// in the top 32 bits, as `Bound` keys hold it).
fn addr_span<V: Copy>(e: &LpmEntry<AddrKeyData, V>) -> Option<Span<V>> {
    let bits = e.prefix_len.checked_sub(ADDR_KEY_FIXED_BITS)?;
    let max = if e.key.family == FAMILY_V4 { 32 } else { 128 };
    if bits > max || !matches!(e.key.family, FAMILY_V4 | FAMILY_V6) {
        return None;
    }
    let host = u128::MAX.checked_shr(bits).unwrap_or(0);
    let lo = u128::from_be_bytes(e.key.addr) & !host;
    Some((lo, lo | host, e.value))
}

/// Groups entries by the prefix table they belong to, each as spans.
fn group<K, V: Copy, G: Ord>(
    entries: &[LpmEntry<K, V>],
    table_of: impl Fn(&K) -> G,
    span: impl Fn(&LpmEntry<K, V>) -> Option<Span<V>>,
) -> Result<BTreeMap<G, Vec<Span<V>>>, LayoutError>
where
    LpmEntry<K, V>: std::fmt::Debug,
{
    let mut groups: BTreeMap<G, Vec<Span<V>>> = BTreeMap::new();
    for e in entries {
        let s = span(e).ok_or_else(|| LayoutError::BadEntry(format!("{e:?}")))?;
        groups.entry(table_of(&e.key)).or_default().push(s);
    }
    Ok(groups)
}

/// Appends bounds and hands out their runs: at most `limit` bounds in all,
/// and no run longer than the kernel's search covers.
struct Writer {
    limit: usize,
    bounds: Vec<Bound>,
}

impl Writer {
    fn run<V: Copy + PartialEq>(
        &mut self,
        spans: Vec<Span<V>>,
        (nothing, last): (V, u128),
        bound: impl Fn(u128, V) -> Bound,
    ) -> Result<Run, LayoutError> {
        let ranges = flatten(spans, nothing, last);
        let start = self.bounds.len();
        if ranges.len() > MAX_RUN_BOUNDS as usize {
            return Err(LayoutError::RunTooLong {
                count: ranges.len(),
                limit: MAX_RUN_BOUNDS as usize,
            });
        }
        if start + ranges.len() > self.limit {
            return Err(LayoutError::TooMany {
                what: "sorted range bounds (FILTER_BOUNDS)",
                count: start + ranges.len(),
                limit: self.limit,
            });
        }
        self.bounds
            .extend(ranges.into_iter().map(|(key, v)| bound(key, v)));
        Ok(Run {
            start: start as u32,
            len: (self.bounds.len() - start) as u32,
        })
    }
}

fn class_bound(key: u128, class: u32) -> Bound {
    Bound {
        hi: (key >> 64) as u64,
        lo: key as u64,
        value: class,
        slot: 0,
    }
}

fn hit_bound(key: u128, hit: RuleHit) -> Bound {
    Bound {
        hi: (key >> 64) as u64,
        lo: key as u64,
        value: hit.action,
        slot: hit.slot,
    }
}

/// What a range no prefix covers holds, and the last key, per kind of
/// prefix table.
const PORT_CLASSES: (u32, u128) = (ID_NONE, 0xffff);
const ADDR_CLASSES: (u32, u128) = (ID_NONE, u128::MAX);
const ADDR_HITS: (RuleHit, u128) = (
    RuleHit {
        action: ACTION_NONE as u32,
        slot: 0,
    },
    u128::MAX,
);

fn table_mut(
    tables: &mut BTreeMap<u32, TableMeta>,
    id: u32,
) -> Result<&mut TableMeta, LayoutError> {
    tables
        .get_mut(&id)
        .ok_or_else(|| LayoutError::BadEntry(format!("table {id:#x} is not in the generation")))
}

impl Layout {
    /// Lays out the prefix tables of the generation in `slot`, within half
    /// of `FILTER_RULE_SETS` and of the largest `FILTER_BOUNDS`.
    pub fn build(p: &Prefixes<'_>, slot: u32) -> Result<Layout, LayoutError> {
        Self::build_within(p, slot, (MAX_BOUNDS / 2) as usize)
    }

    /// [`Layout::build`] with room for `limit` bounds.
    pub fn build_within(p: &Prefixes<'_>, slot: u32, limit: usize) -> Result<Layout, LayoutError> {
        let rule_set_limit = (MAX_RULE_SETS / 2) as usize;
        if p.rule_sets > rule_set_limit {
            return Err(LayoutError::TooMany {
                what: "rule sets",
                count: p.rule_sets,
                limit: rule_set_limit,
            });
        }
        let mut w = Writer {
            limit,
            bounds: Vec::new(),
        };
        let mut tables: BTreeMap<u32, TableMeta> = p
            .tables
            .iter()
            .map(|&(id, meta)| {
                let meta = TableMeta {
                    flags: meta.flags | TABLE_LIVE,
                    ..meta
                };
                (id, meta)
            })
            .collect();
        let by_class = |k: &PortKeyData| (k.table, proto_class_index(k.proto));
        let by_family = |k: &AddrKeyData| (k.id, family_index(k.family));
        for ((id, class), spans) in group(p.dport, by_class, port_span)? {
            table_mut(&mut tables, id)?.dport[class] = w.run(spans, PORT_CLASSES, class_bound)?;
        }
        for ((id, class), spans) in group(p.sport, by_class, port_span)? {
            table_mut(&mut tables, id)?.sport[class] = w.run(spans, PORT_CLASSES, class_bound)?;
        }
        for ((id, family), spans) in group(p.local, by_family, addr_span)? {
            table_mut(&mut tables, id)?.local[family] = w.run(spans, ADDR_CLASSES, class_bound)?;
        }
        for ((id, family), spans) in group(p.inner, by_family, addr_span)? {
            table_mut(&mut tables, id)?.members[family] = w.run(spans, ADDR_HITS, hit_bound)?;
        }

        let slot_bit = slot * SLOT_ID_BIT;
        let mut rule_sets: Vec<(u32, RuleSetRuns)> = (0..p.rule_sets as u32)
            .map(|i| (slot_bit | i, RuleSetRuns::default()))
            .collect();
        for ((id, family), spans) in group(p.rules, by_family, addr_span)? {
            let run = w.run(spans, ADDR_HITS, hit_bound)?;
            let index = (id & !SLOT_ID_BIT) as usize;
            let Some((_, runs)) = rule_sets.get_mut(index).filter(|(i, _)| *i == id) else {
                return Err(LayoutError::BadEntry(format!(
                    "rule set {id:#x} is not in the generation"
                )));
            };
            if family == family_index(FAMILY_V4) {
                runs.v4 = run;
            } else {
                runs.v6 = run;
            }
        }
        Ok(Layout {
            tables: tables.into_iter().collect(),
            rule_sets,
            bounds: w.bounds,
        })
    }

    /// The bound of the range of `run` that holds `key`: the kernel's
    /// binary search (`filter_common::search`), on this layout.
    pub fn find(&self, run: Run, key: u128) -> Option<&Bound> {
        let at = |i: u32| self.bounds.get(i as usize);
        filter_common::search(run, ((key >> 64) as u64, key as u64), at)
    }

    /// `FILTER_TABLES` as the kernel indexes it.
    pub fn table_index(id: u32) -> u32 {
        id_index(id, filter_common::MAX_TABLES)
    }

    /// `FILTER_RULE_SETS` as the kernel indexes it.
    pub fn rule_set_index(id: u32) -> u32 {
        id_index(id, MAX_RULE_SETS)
    }
}

#[cfg(test)]
mod tests;
