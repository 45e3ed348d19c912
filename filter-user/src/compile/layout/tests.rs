use filter_common::{
    proto_class_index, AddrKeyData, PortKeyData, RuleHit, TableMeta, ADDR_KEY_FIXED_BITS,
    FAMILY_V4, FAMILY_V6, ID_NONE, PORT_KEY_FIXED_BITS, PROTO_TCP, SLOT_ID_BIT, TABLE_LIVE,
};
use proptest::prelude::*;

use super::*;

const TABLE: u32 = SLOT_ID_BIT | 3;

fn tables() -> Vec<(u32, TableMeta)> {
    vec![(TABLE, TableMeta::default())]
}

fn prefixes<'a>(
    tables: &'a [(u32, TableMeta)],
    dport: &'a [LpmEntry<PortKeyData, u32>],
    rules: &'a [LpmEntry<AddrKeyData, RuleHit>],
) -> Prefixes<'a> {
    Prefixes {
        tables,
        rule_sets: 1,
        dport,
        sport: &[],
        local: &[],
        rules,
        inner: &[],
    }
}

fn port(port: u16, bits: u32, class: u32) -> LpmEntry<PortKeyData, u32> {
    LpmEntry {
        prefix_len: PORT_KEY_FIXED_BITS + bits,
        key: PortKeyData {
            table: TABLE,
            proto: PROTO_TCP,
            _pad: 0,
            port: port.to_be_bytes(),
        },
        value: class,
    }
}

fn rule(family: u8, addr: u128, bits: u32, slot: u32) -> LpmEntry<AddrKeyData, RuleHit> {
    LpmEntry {
        prefix_len: ADDR_KEY_FIXED_BITS + bits,
        key: AddrKeyData {
            id: SLOT_ID_BIT,
            family,
            _pad: [0; 3],
            addr: addr.to_be_bytes(),
        },
        value: RuleHit { action: 1, slot },
    }
}

fn v4(a: [u8; 4]) -> u128 {
    u128::from(u32::from_be_bytes(a)) << 96
}

/// The longest prefix that holds `key`, the way an LPM trie answers.
fn longest<V: Copy>(spans: &[(u128, u32, V)], key: u128) -> Option<V> {
    spans
        .iter()
        .filter(|(addr, bits, _)| {
            let host = u128::MAX.checked_shr(*bits).unwrap_or(0);
            key & !host == *addr & !host
        })
        .max_by_key(|(_, bits, _)| *bits)
        .map(|(_, _, v)| *v)
}

fn build(p: &Prefixes<'_>) -> Layout {
    Layout::build(p, 1).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn nested_prefixes_become_the_ranges_of_the_innermost() {
    let tables = tables();
    let rules = [
        rule(FAMILY_V4, v4([10, 0, 0, 0]), 8, 20),
        rule(FAMILY_V4, v4([10, 1, 0, 0]), 16, 21),
        rule(FAMILY_V4, v4([10, 1, 2, 0]), 24, 20),
    ];
    let layout = build(&prefixes(&tables, &[], &rules));
    let (_, sets) = layout.rule_sets[0];
    let starts: Vec<(u128, u32, u32)> = layout.bounds[sets.v4.start as usize..]
        [..sets.v4.len as usize]
        .iter()
        .map(|b| ((u128::from(b.hi) << 64) | u128::from(b.lo), b.value, b.slot))
        .collect();
    assert_eq!(
        starts,
        vec![
            (0, 0, 0),
            (v4([10, 0, 0, 0]), 1, 20),
            (v4([10, 1, 0, 0]), 1, 21),
            (v4([10, 1, 2, 0]), 1, 20),
            (v4([10, 1, 3, 0]), 1, 21),
            (v4([10, 2, 0, 0]), 1, 20),
            (v4([11, 0, 0, 0]), 0, 0),
        ]
    );
    assert_eq!(sets.v6, Run::default(), "no IPv6 rule: an empty run");
    assert_ne!(layout.tables[0].1.flags & TABLE_LIVE, 0);
}

#[test]
fn equal_neighbours_merge_and_ports_stay_in_their_space() {
    let tables = tables();
    // 0–65535 and its upper half, with the same class: one range.
    let dport = [port(0, 0, 7), port(0x8000, 1, 7)];
    let layout = build(&prefixes(&tables, &dport, &[]));
    let run = layout.tables[0].1.dport[proto_class_index(PROTO_TCP)];
    assert_eq!(run.len, 1);
    assert_eq!(layout.find(run, 65_535).map(|b| b.value), Some(7));
    // A single port: ranges before, on and after it, none past 65535.
    let dport = [port(443, 16, 2)];
    let layout = build(&prefixes(&tables, &dport, &[]));
    let run = layout.tables[0].1.dport[proto_class_index(PROTO_TCP)];
    assert_eq!(run.len, 3);
    for (key, class) in [
        (0, ID_NONE),
        (442, ID_NONE),
        (443, 2),
        (444, ID_NONE),
        (65_535, ID_NONE),
    ] {
        assert_eq!(
            layout.find(run, key).map(|b| b.value),
            Some(class),
            "port {key}"
        );
    }
}

#[test]
fn a_full_half_is_refused_and_bad_entries_are_named() {
    let tables = tables();
    let rules = [rule(FAMILY_V6, 1 << 120, 8, 20)];
    let p = prefixes(&tables, &[], &rules);
    assert!(matches!(
        Layout::build_within(&p, 1, 2),
        Err(LayoutError::TooMany {
            count: 3,
            limit: 2,
            ..
        })
    ));
    assert!(Layout::build_within(&p, 1, 3).is_ok());

    let short = [LpmEntry {
        prefix_len: ADDR_KEY_FIXED_BITS - 1,
        ..rules[0]
    }];
    assert!(matches!(
        Layout::build(&prefixes(&tables, &[], &short), 1),
        Err(LayoutError::BadEntry(_))
    ));
    let other_set = [LpmEntry {
        key: AddrKeyData {
            id: SLOT_ID_BIT | 1,
            ..rules[0].key
        },
        ..rules[0]
    }];
    assert!(matches!(
        Layout::build(&prefixes(&tables, &[], &other_set), 1),
        Err(LayoutError::BadEntry(_))
    ));
}

/// Prefixes of one family in a narrow space (so that they nest often), and
/// distinct values.
fn spans(family: u8) -> impl Strategy<Value = Vec<(u128, u32, u32)>> {
    let width = if family == FAMILY_V4 { 32 } else { 128 };
    prop::collection::vec((any::<u16>(), 0u32..=16), 0..40).prop_map(move |raw| {
        let mut out: Vec<(u128, u32, u32)> = Vec::new();
        for (i, (bits, len)) in raw.into_iter().enumerate() {
            // The top 16 bits vary; a length past them reaches the host part.
            let len = if len == 16 { width } else { len };
            let addr = u128::from(bits) << 112;
            let host = u128::MAX.checked_shr(len).unwrap_or(0);
            let addr = addr & !host;
            if !out.iter().any(|(a, l, _)| *a == addr && *l == len) {
                out.push((addr, len, 100 + i as u32));
            }
        }
        out
    })
}

proptest! {
    #[test]
    fn the_search_finds_the_longest_prefix(
        v4_spans in spans(FAMILY_V4),
        v6_spans in spans(FAMILY_V6),
        probes in prop::collection::vec(any::<u16>(), 1..64),
    ) {
        let tables = tables();
        let rules: Vec<_> = v4_spans
            .iter()
            .map(|&(a, l, v)| rule(FAMILY_V4, a, l, v))
            .chain(v6_spans.iter().map(|&(a, l, v)| rule(FAMILY_V6, a, l, v)))
            .collect();
        let layout = build(&prefixes(&tables, &[], &rules));
        let (_, sets) = layout.rule_sets[0];
        for (family, spans, run) in [(FAMILY_V4, &v4_spans, sets.v4), (FAMILY_V6, &v6_spans, sets.v6)] {
            let width = if family == FAMILY_V4 { 32 } else { 128 };
            let keep = u128::MAX.checked_shl(128 - width).unwrap_or(0);
            for &p in &probes {
                // On a prefix's edges and inside.
                for key in [u128::from(p) << 112, (u128::from(p) << 112) | (keep >> 16 & keep)] {
                    let want = longest(spans, key);
                    let got = layout.find(run, key).filter(|b| b.value != 0).map(|b| b.slot);
                    prop_assert_eq!(got, want, "family {} key {:#x}", family, key);
                }
            }
        }
    }
}
