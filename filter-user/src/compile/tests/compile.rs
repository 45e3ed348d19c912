//! `compile` on hand-written rule sets, checked through the lookup model and
//! on the shape of the entries.
use std::collections::HashSet;

use filter_common::{
    ADDR_KEY_FIXED_BITS, FAMILY_V4, FAMILY_V6, ID_NONE, MAX_ADDR_CLASS_ENTRIES,
    PORT_KEY_FIXED_BITS, RULE_SLOT_DEFAULT_DENY, RULE_SLOT_FIRST_DYNAMIC, SLOT_ID_BIT,
    STAT_DROP_DEFAULT, STAT_DROP_NACL, STAT_DROP_SG_RULE, STAT_PASS_ND, STAT_PASS_UNGUARDED,
    TABLE_HAS_INNER, TABLE_HAS_LOCAL, TABLE_HAS_SPORT,
};

use super::fixtures::*;
use crate::{
    compile::{
        compile, compile_from,
        model::{Hook, Model},
        CompileError, Compiled, SlotTable,
    },
    ruleset::{Action, AttachMode, Direction, GroupKind, Peer, Protocol, Ruleset},
    verdict::{Decision, Packet, Reason, Verdict},
};

fn build(rs: &Ruleset, generation: u32) -> Compiled {
    compile(rs, generation, &ifindex_of(rs), &mut SlotTable::new())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn decide(c: &Compiled, eni: u32, direction: Direction, pkt: Packet) -> Decision {
    Model::new(c)
        .classify_direction(eni + 10, direction, &pkt)
        .decision
}

fn rule(id: &str) -> Reason {
    Reason::Rule { id: id.into() }
}

fn accept(reason: Reason) -> Decision {
    Decision {
        verdict: Verdict::Accept,
        reason,
    }
}

fn drop(reason: Reason) -> Decision {
    Decision {
        verdict: Verdict::Drop,
        reason,
    }
}

/// sg-web: web from anywhere, ssh from 10/8 but not 10.0.5/24, egress all
/// but 192.0.2.0/24.
fn web() -> Ruleset {
    let mut rs = base();
    let g = group(&mut rs, "sg-web", GroupKind::Basic, false);
    Rule::cidr(
        "sg-web/http",
        Direction::Ingress,
        Action::Accept,
        "0.0.0.0/0",
    )
    .dst(80, 80)
    .add(&mut rs, g);
    Rule::cidr(
        "sg-web/ssh",
        Direction::Ingress,
        Action::Accept,
        "10.0.0.0/8",
    )
    .dst(22, 22)
    .add(&mut rs, g);
    Rule::cidr(
        "sg-web/no-ssh",
        Direction::Ingress,
        Action::Drop,
        "10.0.5.0/24",
    )
    .dst(22, 22)
    .add(&mut rs, g);
    Rule::cidr("sg-web/v6", Direction::Ingress, Action::Accept, "::/0")
        .dst(443, 443)
        .add(&mut rs, g);
    Rule::cidr(
        "sg-web/no-doc",
        Direction::Egress,
        Action::Drop,
        "192.0.2.0/24",
    )
    .proto(Protocol::All)
    .priority(2)
    .add(&mut rs, g);
    eni(
        &mut rs,
        "eni-web",
        AttachMode::Tap,
        &["10.0.1.10", "fd00:0:0:1::10"],
        &[g],
    );
    rs
}

#[test]
fn priorities_deny_on_tie_and_defaults() {
    let rs = web();
    let c = build(&rs, 1);
    let ing = Direction::Ingress;
    assert_eq!(
        decide(&c, 0, ing, tcp("198.51.100.1", 4000, "10.0.1.10", 80)),
        accept(rule("sg-web/http"))
    );
    assert_eq!(
        decide(&c, 0, ing, tcp("198.51.100.1", 4000, "10.0.1.10", 81)),
        drop(Reason::DefaultDeny)
    );
    assert_eq!(
        decide(&c, 0, ing, tcp("10.9.0.1", 4000, "10.0.1.10", 22)),
        accept(rule("sg-web/ssh"))
    );
    assert_eq!(
        decide(&c, 0, ing, tcp("10.0.5.1", 4000, "10.0.1.10", 22)),
        drop(rule("sg-web/no-ssh"))
    );
    assert_eq!(
        decide(&c, 0, ing, tcp("2001:db8::1", 4000, "fd00:0:0:1::10", 443)),
        accept(rule("sg-web/v6"))
    );
    assert_eq!(
        decide(&c, 0, ing, tcp("2001:db8::1", 4000, "fd00:0:0:1::10", 80)),
        drop(Reason::DefaultDeny)
    );
    let eg = Direction::Egress;
    assert_eq!(
        decide(&c, 0, eg, tcp("10.0.1.10", 4000, "192.0.2.9", 80)),
        drop(rule("sg-web/no-doc"))
    );
    assert_eq!(
        decide(&c, 0, eg, tcp("10.0.1.10", 4000, "198.51.100.9", 80)),
        accept(Reason::DefaultAccept)
    );
}

#[test]
fn hooks_and_attach_modes_give_the_direction() {
    let mut rs = web();
    rs.enis[0].mode = AttachMode::Tap;
    let c = build(&rs, 1);
    let model = Model::new(&c);
    let to_instance = tcp("198.51.100.1", 4000, "10.0.1.10", 80);
    let tc = model.classify(10, Hook::Tc, &to_instance);
    assert_eq!(
        (tc.direction, tc.decision),
        (Some(Direction::Ingress), accept(rule("sg-web/http")))
    );
    let xdp = model.classify(10, Hook::Xdp, &to_instance);
    assert_eq!(xdp.direction, Some(Direction::Egress));
    rs.enis[0].mode = AttachMode::Nic;
    let c = build(&rs, 1);
    let xdp = Model::new(&c).classify(10, Hook::Xdp, &to_instance);
    assert_eq!(
        (xdp.direction, xdp.decision),
        (Some(Direction::Ingress), accept(rule("sg-web/http")))
    );
    assert_eq!(
        Model::new(&c).classify(99, Hook::Xdp, &to_instance).stat,
        STAT_PASS_UNGUARDED
    );
}

#[test]
fn stats_counters_name_the_path() {
    let c = build(&web(), 1);
    let model = Model::new(&c);
    let v = model.classify_direction(10, Direction::Ingress, &tcp("10.0.5.1", 1, "10.0.1.10", 22));
    assert_eq!(v.stat, STAT_DROP_SG_RULE);
    let v = model.classify_direction(10, Direction::Ingress, &tcp("10.0.5.1", 1, "10.0.1.10", 23));
    assert_eq!(
        (v.stat, v.slot),
        (STAT_DROP_DEFAULT, RULE_SLOT_DEFAULT_DENY)
    );
    let nd = Packet {
        src: ip("fe80::1"),
        dst: ip("ff02::1"),
        proto: 58,
        src_port: 0,
        dst_port: 0,
        icmp_type: 135,
    };
    let v = model.classify_direction(10, Direction::Ingress, &nd);
    assert_eq!((v.stat, v.decision.reason), (STAT_PASS_ND, Reason::Pass));
}

#[test]
fn every_id_carries_the_generation_slot() {
    let mut rs = web();
    let g = rs.groups.len() - 1;
    Rule::cidr("sg-web/q", Direction::Ingress, Action::Accept, "0.0.0.0/0")
        .src(53, 53)
        .local("10.0.1.10/32")
        .add(&mut rs, g);
    for generation in [6, 7] {
        let c = build(&rs, generation);
        let bit = (generation & 1) * SLOT_ID_BIT;
        let has_bit = |id: u32| id == ID_NONE || id & SLOT_ID_BIT == bit;
        assert!(c.enis.iter().all(|(k, v)| k.slot == generation & 1
            && v.sg_table.iter().chain(&v.nacl_table).all(|t| has_bit(*t))));
        assert!(c.tables.iter().all(|(id, _)| has_bit(*id)));
        assert!(c
            .dport
            .iter()
            .chain(&c.sport)
            .all(|e| has_bit(e.key.table) && has_bit(e.value)));
        assert!(c
            .local
            .iter()
            .all(|e| has_bit(e.key.id) && has_bit(e.value)));
        assert!(c.cells.iter().all(|(k, v)| has_bit(k.table)
            && has_bit(k.dport_class)
            && has_bit(k.sport_class)
            && has_bit(k.local_class)
            && has_bit(*v)));
        assert!(c.rules.iter().chain(&c.inner).all(|e| has_bit(e.key.id)));
    }
}

/// No two entries of one map share a key, no key has bits past its prefix,
/// and every prefix covers the fixed fields.
pub(super) fn assert_well_formed(c: &Compiled) {
    fn check<K: std::fmt::Debug + Eq + std::hash::Hash + Copy, V>(
        entries: &[crate::compile::LpmEntry<K, V>],
        fixed: u32,
        max: u32,
        host_bits_clear: impl Fn(&K, u32) -> bool,
    ) {
        let mut seen = HashSet::new();
        for e in entries {
            assert!(
                (fixed..=max).contains(&e.prefix_len),
                "{:?}/{}",
                e.key,
                e.prefix_len
            );
            assert!(
                host_bits_clear(&e.key, e.prefix_len - fixed),
                "{:?}/{}",
                e.key,
                e.prefix_len
            );
            assert!(
                seen.insert((e.prefix_len, e.key)),
                "duplicate {:?}/{}",
                e.key,
                e.prefix_len
            );
        }
    }
    let port_ok = |k: &filter_common::PortKeyData, bits: u32| {
        u16::from_be_bytes(k.port) & !(u16::MAX.checked_shl(16 - bits).unwrap_or(0)) == 0
    };
    let addr_ok = |k: &filter_common::AddrKeyData, bits: u32| {
        u128::from_be_bytes(k.addr) & !(u128::MAX.checked_shl(128 - bits).unwrap_or(0)) == 0
    };
    check(
        &c.dport,
        PORT_KEY_FIXED_BITS,
        PORT_KEY_FIXED_BITS + 16,
        port_ok,
    );
    check(
        &c.sport,
        PORT_KEY_FIXED_BITS,
        PORT_KEY_FIXED_BITS + 16,
        port_ok,
    );
    check(
        &c.local,
        ADDR_KEY_FIXED_BITS,
        ADDR_KEY_FIXED_BITS + 128,
        addr_ok,
    );
    check(
        &c.rules,
        ADDR_KEY_FIXED_BITS,
        ADDR_KEY_FIXED_BITS + 128,
        addr_ok,
    );
    check(
        &c.inner,
        ADDR_KEY_FIXED_BITS,
        ADDR_KEY_FIXED_BITS + 128,
        addr_ok,
    );
    let cells: HashSet<_> = c.cells.iter().map(|(k, _)| k).collect();
    assert_eq!(cells.len(), c.cells.len(), "duplicate cells");
    let tables: HashSet<_> = c.tables.iter().map(|(k, _)| k).collect();
    assert_eq!(tables.len(), c.tables.len(), "duplicate tables");
}

#[test]
fn entries_are_well_formed() {
    let mut rs = web();
    let g = rs.groups.len() - 1;
    Rule::cidr("sg-web/q", Direction::Ingress, Action::Accept, "10.0.0.0/8")
        .dst(1000, 2000)
        .src(53, 53)
        .add(&mut rs, g);
    Rule::cidr("sg-web/l", Direction::Ingress, Action::Drop, "0.0.0.0/0")
        .proto(Protocol::All)
        .local("10.0.1.0/28")
        .priority(3)
        .add(&mut rs, g);
    assert_well_formed(&build(&rs, 2));
}

/// ENIs listing the same groups in the same order share tables; the order
/// matters because it names the rule among equals (as `crate::eval` does).
#[test]
fn enis_with_the_same_group_list_share_tables() {
    let mut rs = base();
    let a = group(&mut rs, "sg-a", GroupKind::Basic, false);
    let b = group(&mut rs, "sg-b", GroupKind::Basic, false);
    Rule::cidr("sg-a/1", Direction::Ingress, Action::Accept, "0.0.0.0/0").add(&mut rs, a);
    Rule::cidr("sg-b/1", Direction::Ingress, Action::Accept, "0.0.0.0/0").add(&mut rs, b);
    eni(&mut rs, "e1", AttachMode::Tap, &["10.0.1.1"], &[a, b]);
    eni(&mut rs, "e2", AttachMode::Tap, &["10.0.1.2"], &[a, b]);
    eni(&mut rs, "e3", AttachMode::Tap, &["10.0.1.3"], &[b, a]);
    let c = build(&rs, 1);
    assert_eq!(c.enis[0].1.sg_table, c.enis[1].1.sg_table);
    assert_ne!(c.enis[0].1.sg_table, c.enis[2].1.sg_table);
    assert_eq!(c.tables.len(), 4);
    assert!(c.enis.iter().all(|(_, e)| e.nacl_table == [ID_NONE; 2]));
    let pkt = tcp("198.51.100.1", 1, "10.0.1.1", 80);
    assert_eq!(
        decide(&c, 0, Direction::Ingress, pkt),
        accept(rule("sg-a/1"))
    );
    assert_eq!(
        decide(&c, 2, Direction::Ingress, pkt),
        accept(rule("sg-b/1"))
    );
}

#[test]
fn nacl_first_match_default_and_vswitch_skip() {
    let mut rs = web();
    let acl = acl(
        &mut rs,
        "acl-web",
        vec![
            acl_entry(
                "no-bad",
                Action::Drop,
                Protocol::All,
                crate::ruleset::PortRange::ANY,
                "198.51.100.0/24",
            ),
            acl_entry(
                "web",
                Action::Accept,
                Protocol::Tcp,
                ports(80, 80),
                "0.0.0.0/0",
            ),
        ],
        vec![acl_entry(
            "out",
            Action::Accept,
            Protocol::All,
            crate::ruleset::PortRange::ANY,
            "0.0.0.0/0",
        )],
    );
    rs.vswitches[0].acl = Some(acl);
    let c = build(&rs, 1);
    let ing = Direction::Ingress;
    let nacl = |entry: &str| Reason::Nacl {
        acl: "acl-web".into(),
        entry: entry.into(),
    };
    assert_eq!(
        decide(&c, 0, ing, tcp("198.51.100.1", 1, "10.0.1.10", 80)),
        drop(nacl("no-bad"))
    );
    assert_eq!(
        decide(&c, 0, ing, tcp("203.0.113.1", 1, "10.0.1.10", 80)),
        accept(rule("sg-web/http"))
    );
    // ssh is not in the ACL: dropped by its default...
    let v = Model::new(&c).classify_direction(10, ing, &tcp("10.0.9.1", 1, "10.0.1.10", 22));
    assert_eq!(
        (v.decision, v.stat),
        (
            drop(Reason::NaclDefault {
                acl: "acl-web".into()
            }),
            STAT_DROP_NACL
        )
    );
    // ...but inside the vSwitch the ACL is skipped and the group decides.
    assert_eq!(
        decide(&c, 0, ing, tcp("10.0.1.99", 1, "10.0.1.10", 22)),
        accept(rule("sg-web/ssh"))
    );
    // IPv6 has no ACL entry: default drop, except inside the vSwitch.
    assert_eq!(
        decide(&c, 0, ing, tcp("2001:db8::1", 1, "fd00:0:0:1::10", 443)),
        drop(Reason::NaclDefault {
            acl: "acl-web".into()
        })
    );
    assert_eq!(
        decide(&c, 0, ing, tcp("fd00:0:0:1::99", 1, "fd00:0:0:1::10", 443)),
        accept(rule("sg-web/v6"))
    );
    // Egress: the group first, then the ACL.
    let eg = Direction::Egress;
    assert_eq!(
        decide(&c, 0, eg, tcp("10.0.1.10", 1, "192.0.2.1", 80)),
        drop(rule("sg-web/no-doc"))
    );
    assert_eq!(
        decide(&c, 0, eg, tcp("10.0.1.10", 1, "203.0.113.1", 80)),
        accept(Reason::DefaultAccept)
    );
    assert_eq!(
        decide(&c, 0, eg, tcp("fd00:0:0:1::10", 1, "2001:db8::1", 80)),
        drop(Reason::NaclDefault {
            acl: "acl-web".into()
        })
    );
    assert_well_formed(&c);
}

#[test]
fn inner_access_accepts_members_before_any_rule() {
    let mut rs = base();
    let g = group(&mut rs, "sg-in", GroupKind::Basic, true);
    let h = group(&mut rs, "sg-iso", GroupKind::Basic, false);
    rs.groups[g].members.push(net("10.0.2.7/32"));
    rs.groups[h].members.push(net("10.0.2.8/32"));
    Rule::cidr(
        "sg-in/drop-all",
        Direction::Ingress,
        Action::Drop,
        "0.0.0.0/0",
    )
    .proto(Protocol::All)
    .add(&mut rs, g);
    eni(&mut rs, "e1", AttachMode::Tap, &["10.0.1.1"], &[g, h]);
    let c = build(&rs, 1);
    assert!(c.tables.iter().any(|(_, m)| m.flags & TABLE_HAS_INNER != 0));
    // The summary lets the members through and rules the internet out, so
    // its packets skip the inner lookup.
    for (_, m) in c
        .tables
        .iter()
        .filter(|(_, m)| m.flags & TABLE_HAS_INNER != 0)
    {
        let v4 = |a: [u8; 4]| {
            let mut addr = [0; 16];
            addr[..4].copy_from_slice(&a);
            addr
        };
        assert!(m.inner.may_contain(FAMILY_V4, &v4([10, 0, 2, 7])));
        assert!(!m.inner.may_contain(FAMILY_V4, &v4([203, 0, 113, 1])));
        assert!(!m.inner.may_contain(
            FAMILY_V6,
            &[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        ));
    }
    let inner = Reason::InnerAccept {
        group: "sg-in".into(),
    };
    assert_eq!(
        decide(&c, 0, Direction::Ingress, tcp("10.0.2.7", 1, "10.0.1.1", 5)),
        accept(inner.clone())
    );
    assert_eq!(
        decide(&c, 0, Direction::Egress, tcp("10.0.1.1", 1, "10.0.2.7", 5)),
        accept(inner)
    );
    assert_eq!(
        decide(&c, 0, Direction::Ingress, tcp("10.0.2.8", 1, "10.0.1.1", 5)),
        drop(rule("sg-in/drop-all"))
    );
}

#[test]
fn quintuple_and_local_rules_use_cells() {
    let mut rs = base();
    let g = group(&mut rs, "sg", GroupKind::Advanced, false);
    Rule::cidr("sg/dns", Direction::Ingress, Action::Accept, "0.0.0.0/0")
        .proto(Protocol::Udp)
        .dst(1024, 65535)
        .src(53, 53)
        .add(&mut rs, g);
    Rule::cidr("sg/only-a", Direction::Ingress, Action::Accept, "0.0.0.0/0")
        .dst(80, 80)
        .local("10.0.1.1/32")
        .add(&mut rs, g);
    Rule::cidr("sg/out", Direction::Egress, Action::Accept, "10.0.0.0/8")
        .proto(Protocol::All)
        .add(&mut rs, g);
    eni(
        &mut rs,
        "e1",
        AttachMode::Tap,
        &["10.0.1.1", "10.0.1.2"],
        &[g],
    );
    let c = build(&rs, 1);
    let ingress = c.enis[0].1.sg_table[0];
    let meta = c
        .tables
        .iter()
        .find(|(id, _)| *id == ingress)
        .map(|(_, m)| *m)
        .unwrap_or_default();
    assert_eq!(meta.flags, TABLE_HAS_SPORT | TABLE_HAS_LOCAL);
    assert!(!c.cells.is_empty());
    let udp = |sport, dport| Packet {
        proto: 17,
        ..tcp("198.51.100.1", sport, "10.0.1.2", dport)
    };
    let ing = Direction::Ingress;
    assert_eq!(decide(&c, 0, ing, udp(53, 40000)), accept(rule("sg/dns")));
    assert_eq!(
        decide(&c, 0, ing, udp(54, 40000)),
        drop(Reason::DefaultDeny)
    );
    assert_eq!(decide(&c, 0, ing, udp(53, 1000)), drop(Reason::DefaultDeny));
    assert_eq!(
        decide(&c, 0, ing, tcp("198.51.100.1", 1, "10.0.1.1", 80)),
        accept(rule("sg/only-a"))
    );
    assert_eq!(
        decide(&c, 0, ing, tcp("198.51.100.1", 1, "10.0.1.2", 80)),
        drop(Reason::DefaultDeny)
    );
    // Advanced groups drop egress by default.
    let eg = Direction::Egress;
    assert_eq!(
        decide(&c, 0, eg, tcp("10.0.1.1", 1, "10.9.9.9", 80)),
        accept(rule("sg/out"))
    );
    assert_eq!(
        decide(&c, 0, eg, tcp("10.0.1.1", 1, "11.9.9.9", 80)),
        drop(Reason::DefaultDeny)
    );
    assert_well_formed(&c);
}

#[test]
fn protocol_classes_and_families() {
    let mut rs = base();
    let g = group(&mut rs, "sg", GroupKind::Basic, false);
    let pl = prefix_list(&mut rs, "pl", &["203.0.113.0/24", "2001:db8:1::/48"]);
    Rule::cidr("sg/icmp6-on-v4", Direction::Ingress, Action::Accept, "::/0")
        .proto(Protocol::Icmp)
        .add(&mut rs, g);
    Rule::cidr("sg/icmp", Direction::Ingress, Action::Accept, "0.0.0.0/0")
        .proto(Protocol::Icmp)
        .priority(2)
        .add(&mut rs, g);
    Rule::new(
        "sg/all-pl",
        Direction::Ingress,
        Action::Accept,
        Peer::PrefixList(pl),
    )
    .proto(Protocol::All)
    .priority(3)
    .add(&mut rs, g);
    eni(
        &mut rs,
        "e1",
        AttachMode::Tap,
        &["10.0.1.1", "fd00:0:0:1::1"],
        &[g],
    );
    let c = build(&rs, 1);
    let pkt = |src: &str, dst: &str, proto: u8, icmp_type: u8| Packet {
        src: ip(src),
        dst: ip(dst),
        proto,
        src_port: 0,
        dst_port: 0,
        icmp_type,
    };
    let ing = Direction::Ingress;
    assert_eq!(
        decide(&c, 0, ing, pkt("198.51.100.1", "10.0.1.1", 1, 8)),
        accept(rule("sg/icmp"))
    );
    // icmp names IPv4 only: an IPv6 packet with protocol 1 matches only `all`.
    assert_eq!(
        decide(&c, 0, ing, pkt("2001:db8:1::1", "fd00:0:0:1::1", 1, 8)),
        accept(rule("sg/all-pl"))
    );
    assert_eq!(
        decide(&c, 0, ing, pkt("2001:db8:2::1", "fd00:0:0:1::1", 1, 8)),
        drop(Reason::DefaultDeny)
    );
    // SCTP (132) folds into PROTO_OTHER, which only `all` rules match.
    assert_eq!(
        decide(&c, 0, ing, pkt("203.0.113.5", "10.0.1.1", 132, 0)),
        accept(rule("sg/all-pl"))
    );
    assert_eq!(
        decide(&c, 0, ing, pkt("198.51.100.1", "10.0.1.1", 132, 0)),
        drop(Reason::DefaultDeny)
    );
}

/// `compile_from` reads the slot table and returns the next one: the
/// caller's stays as it was (an apply that fails later keeps it), and the
/// one returned is what `compile` leaves in its argument.
#[test]
fn compile_from_leaves_the_slot_table_and_returns_the_next() {
    let rs = web();
    let before = SlotTable::new();
    let (from, next) =
        compile_from(&rs, 1, &ifindex_of(&rs), &before).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(before, SlotTable::new());
    let mut slots = SlotTable::new();
    let compiled = compile(&rs, 1, &ifindex_of(&rs), &mut slots).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(next, before, "the rules took slots");
    assert_eq!(next, slots);
    assert_eq!(from.slot_reasons, compiled.slot_reasons);
}

#[test]
fn slots_are_stable_and_fresh_slots_are_reported() {
    let mut rs = web();
    let mut slots = SlotTable::new();
    let first = compile(&rs, 1, &ifindex_of(&rs), &mut slots).unwrap_or_else(|e| panic!("{e}"));
    let slot_of = |c: &Compiled, r: &Reason| {
        c.slot_reasons
            .iter()
            .find(|(_, v)| *v == r)
            .map(|(k, _)| *k)
    };
    let http = slot_of(&first, &rule("sg-web/http"));
    assert!(http.is_some_and(|s| s >= RULE_SLOT_FIRST_DYNAMIC));
    assert_eq!(first.fresh_slots.len(), rs.groups[0].rules.len());
    rs.groups[0].rules.remove(1);
    Rule::cidr(
        "sg-web/new",
        Direction::Ingress,
        Action::Accept,
        "0.0.0.0/0",
    )
    .dst(8080, 8080)
    .add(&mut rs, 0);
    let second = compile(&rs, 2, &ifindex_of(&rs), &mut slots).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(slot_of(&second, &rule("sg-web/http")), http);
    let new = slot_of(&second, &rule("sg-web/new"));
    assert_eq!(second.fresh_slots, new.into_iter().collect::<Vec<_>>());
    assert_ne!(
        new,
        slot_of(&first, &rule("sg-web/ssh")),
        "a freed slot cools for one generation"
    );
    assert_eq!(
        slot_of(&second, &Reason::DefaultDeny),
        Some(RULE_SLOT_DEFAULT_DENY)
    );
    assert_eq!(second.eni_index, first.eni_index);
}

#[test]
fn a_missing_interface_is_pending_and_a_shared_one_an_error() {
    let mut rs = web();
    let mut slots = SlotTable::new();
    // SPEC §2.4: no interface yet, so no FILTER_ENIS entry, but the value
    // to write when it appears.
    let pending = compile(&rs, 1, &|_| None, &mut slots).unwrap_or_else(|e| panic!("{e}"));
    assert!(pending.enis.is_empty());
    assert_eq!(pending.interfaces.len(), 1);
    assert_eq!(pending.interfaces[0].name, rs.enis[0].interface);
    let present = compile(&rs, 3, &|_| Some(7), &mut slots).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(present.enis.len(), 1);
    assert_eq!(present.enis[0].1, present.interfaces[0].config);
    let mut slots = SlotTable::new();
    eni(&mut rs, "eni-2", AttachMode::Tap, &["10.0.1.11"], &[0]);
    let err = compile(&rs, 1, &|_| Some(7), &mut slots);
    assert!(
        matches!(err, Err(CompileError::SameInterface { ifindex: 7, .. })),
        "{err:?}"
    );
}

#[test]
fn a_table_too_big_for_a_map_is_refused_by_name() {
    let mut rs = base();
    let g = group(&mut rs, "sg-big", GroupKind::Basic, false);
    for i in 0..=(MAX_ADDR_CLASS_ENTRIES / 2) {
        let local = format!(
            "10.{}.{}.{}/32",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff
        );
        Rule::cidr(
            &format!("sg-big/{i}"),
            Direction::Ingress,
            Action::Accept,
            "0.0.0.0/0",
        )
        .local(&local)
        .add(&mut rs, g);
    }
    eni(&mut rs, "e1", AttachMode::Tap, &["10.0.1.1"], &[g]);
    let mut slots = SlotTable::new();
    match compile(&rs, 1, &ifindex_of(&rs), &mut slots) {
        Err(e @ CompileError::MapFull { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("local-address prefixes")
                    && text.contains("sg-big ingress")
                    && text.contains("e1"),
                "{text}"
            );
        }
        other => panic!("expected MapFull, got {other:?}"),
    }
    assert_eq!(slots, SlotTable::new());
}

#[test]
fn conntrack_timeouts_become_nanoseconds() {
    let mut rs = web();
    rs.conntrack.tcp_established_s = 910;
    rs.conntrack.revalidate = false;
    let c = build(&rs, 1);
    assert_eq!(c.config.tcp_established_ns, 910_000_000_000);
    assert_eq!(c.config.on_change, filter_common::ON_CHANGE_KEEP);
}
