//! Shadow analysis on hand-written groups; every witness is checked against
//! the compiled lookups.
use super::fixtures::*;
use crate::{
    compile::{compile, model::Model, shadow_warnings, ShadowKind, ShadowWarning, SlotTable},
    ruleset::{Action, AttachMode, Direction, GroupKind, Peer, Protocol, Ruleset},
    verdict::Reason,
};

fn warnings(rs: &Ruleset) -> Vec<ShadowWarning> {
    let found = shadow_warnings(rs);
    // Every witness is decided by something other than the shadowed rule:
    // the covering rule, or one stronger still.
    let c =
        compile(rs, 1, &ifindex_of(rs), &mut SlotTable::new()).unwrap_or_else(|e| panic!("{e}"));
    let model = Model::new(&c);
    for w in &found {
        let eni = rs.eni_by_id(&w.enis[0]).unwrap_or_else(|| panic!("{w}"));
        let decided = model
            .classify_direction(eni as u32 + 10, w.direction, &w.witness)
            .decision;
        assert_ne!(decided.reason, Reason::Rule { id: w.rule.clone() }, "{w}");
        assert!(
            matches!(decided.reason, Reason::Rule { .. }),
            "{w}: {decided:?}"
        );
    }
    found
}

fn summary(found: &[ShadowWarning]) -> Vec<(ShadowKind, &str, &str)> {
    found
        .iter()
        .map(|w| (w.kind, w.rule.as_str(), w.by.as_str()))
        .collect()
}

fn one_group() -> (Ruleset, usize) {
    let mut rs = base();
    let g = group(&mut rs, "sg", GroupKind::Basic, false);
    eni(
        &mut rs,
        "e1",
        AttachMode::Tap,
        &["10.0.1.1", "fd00:0:0:1::1"],
        &[g],
    );
    (rs, g)
}

#[test]
fn a_rule_inside_a_stronger_one_is_shadowed() {
    let (mut rs, g) = one_group();
    Rule::cidr("sg/wide", Direction::Ingress, Action::Accept, "10.0.0.0/8")
        .dst(1, 1024)
        .add(&mut rs, g);
    Rule::cidr("sg/narrow", Direction::Ingress, Action::Drop, "10.0.5.0/24")
        .dst(22, 22)
        .priority(5)
        .add(&mut rs, g);
    let found = warnings(&rs);
    assert_eq!(
        summary(&found),
        vec![(ShadowKind::Shadowed, "sg/narrow", "sg/wide")]
    );
    let w = &found[0];
    assert_eq!((w.witness.dst_port, w.witness.proto), (22, 6));
    let c =
        compile(&rs, 1, &ifindex_of(&rs), &mut SlotTable::new()).unwrap_or_else(|e| panic!("{e}"));
    let decided = Model::new(&c)
        .classify_direction(10, Direction::Ingress, &w.witness)
        .decision;
    assert_eq!(
        decided.reason,
        Reason::Rule {
            id: "sg/wide".into()
        }
    );
    assert!(w.to_string().contains("never decides"), "{w}");
}

#[test]
fn an_accept_under_a_drop_of_the_same_priority_is_cancelled() {
    let (mut rs, g) = one_group();
    Rule::cidr("sg/ok", Direction::Egress, Action::Accept, "192.0.2.0/24")
        .proto(Protocol::Udp)
        .dst(53, 53)
        .add(&mut rs, g);
    Rule::cidr("sg/block", Direction::Egress, Action::Drop, "192.0.2.0/23")
        .proto(Protocol::All)
        .add(&mut rs, g);
    assert_eq!(
        summary(&warnings(&rs)),
        vec![(ShadowKind::CancelledAccept, "sg/ok", "sg/block")]
    );
}

#[test]
fn equal_rules_the_later_one_never_names_the_verdict() {
    let (mut rs, g) = one_group();
    Rule::cidr("sg/a", Direction::Ingress, Action::Accept, "0.0.0.0/0")
        .dst(80, 80)
        .add(&mut rs, g);
    Rule::cidr("sg/b", Direction::Ingress, Action::Accept, "0.0.0.0/0")
        .dst(80, 80)
        .add(&mut rs, g);
    assert_eq!(
        summary(&warnings(&rs)),
        vec![(ShadowKind::Shadowed, "sg/b", "sg/a")]
    );
}

#[test]
fn partial_overlaps_and_narrower_strong_rules_are_not_reported() {
    let (mut rs, g) = one_group();
    // Ports overlap only in part.
    Rule::cidr("sg/p1", Direction::Ingress, Action::Accept, "0.0.0.0/0")
        .dst(80, 90)
        .add(&mut rs, g);
    Rule::cidr("sg/p2", Direction::Ingress, Action::Accept, "0.0.0.0/0")
        .dst(85, 95)
        .priority(2)
        .add(&mut rs, g);
    // The stronger rule is the narrower one.
    Rule::cidr("sg/n1", Direction::Ingress, Action::Drop, "10.0.0.0/24")
        .dst(22, 22)
        .add(&mut rs, g);
    Rule::cidr("sg/n2", Direction::Ingress, Action::Accept, "10.0.0.0/16")
        .dst(22, 22)
        .priority(2)
        .add(&mut rs, g);
    // tcp does not cover all; a local restriction does not cover none.
    Rule::cidr("sg/t", Direction::Egress, Action::Accept, "0.0.0.0/0").add(&mut rs, g);
    Rule::cidr("sg/all", Direction::Egress, Action::Accept, "0.0.0.0/0")
        .proto(Protocol::All)
        .priority(2)
        .add(&mut rs, g);
    Rule::cidr("sg/l", Direction::Ingress, Action::Drop, "0.0.0.0/0")
        .proto(Protocol::All)
        .local("10.0.1.1/32")
        .add(&mut rs, g);
    Rule::cidr("sg/nl", Direction::Ingress, Action::Drop, "0.0.0.0/0")
        .proto(Protocol::All)
        .priority(100)
        .add(&mut rs, g);
    assert_eq!(summary(&warnings(&rs)), vec![]);
}

#[test]
fn peers_are_covered_address_by_address_and_family_by_family() {
    let (mut rs, g) = one_group();
    let pl = prefix_list(&mut rs, "pl", &["10.1.0.0/24", "10.2.0.7/32"]);
    let mixed = prefix_list(&mut rs, "pl-mixed", &["10.1.0.0/24", "2001:db8::/32"]);
    Rule::cidr("sg/v4-all", Direction::Ingress, Action::Drop, "10.0.0.0/8")
        .proto(Protocol::All)
        .add(&mut rs, g);
    Rule::new(
        "sg/pl",
        Direction::Ingress,
        Action::Accept,
        Peer::PrefixList(pl),
    )
    .priority(2)
    .add(&mut rs, g);
    Rule::new(
        "sg/mixed",
        Direction::Ingress,
        Action::Accept,
        Peer::PrefixList(mixed),
    )
    .priority(2)
    .add(&mut rs, g);
    // icmp names IPv4 only, so its IPv6 peer does not need covering.
    Rule::new(
        "sg/icmp",
        Direction::Ingress,
        Action::Accept,
        Peer::PrefixList(mixed),
    )
    .proto(Protocol::Icmp)
    .priority(2)
    .add(&mut rs, g);
    assert_eq!(
        summary(&warnings(&rs)),
        vec![
            (ShadowKind::Shadowed, "sg/pl", "sg/v4-all"),
            (ShadowKind::Shadowed, "sg/icmp", "sg/v4-all")
        ]
    );
}

#[test]
fn warnings_are_per_group_set_and_list_their_enis() {
    let mut rs = base();
    let a = group(&mut rs, "sg-a", GroupKind::Basic, false);
    let b = group(&mut rs, "sg-b", GroupKind::Basic, false);
    Rule::cidr("sg-a/web", Direction::Ingress, Action::Accept, "0.0.0.0/0")
        .dst(80, 80)
        .priority(5)
        .add(&mut rs, a);
    Rule::cidr("sg-b/deny", Direction::Ingress, Action::Drop, "0.0.0.0/0")
        .proto(Protocol::All)
        .priority(1)
        .add(&mut rs, b);
    eni(&mut rs, "only-a", AttachMode::Tap, &["10.0.1.1"], &[a]);
    eni(&mut rs, "both", AttachMode::Tap, &["10.0.1.2"], &[a, b]);
    eni(
        &mut rs,
        "both-again",
        AttachMode::Tap,
        &["10.0.1.3"],
        &[a, b],
    );
    let found = warnings(&rs);
    assert_eq!(
        summary(&found),
        vec![(ShadowKind::Shadowed, "sg-a/web", "sg-b/deny")]
    );
    assert_eq!(
        found[0].enis,
        vec!["both".to_string(), "both-again".to_string()]
    );
}
