//! SPEC §3 steps 1, 2 and 6: what passes unfiltered, the order of the NACL
//! and the groups per direction, and which step names the reason.
use super::builder::*;
use crate::{
    eval::{
        evaluate, evaluate_nacl, evaluate_non_ip, evaluate_sg, Evaluation, NaclOutcome, SgOutcome,
        TraceItem,
    },
    ruleset::{Action, Ruleset},
    verdict::{Decision, Reason, Verdict},
};

const ENI_A: &[&str] = &["192.0.2.10", "2001:db8:1::10"];

/// An advanced group (egress default-deny) behind an ACL, so each step can
/// drop in each direction.
fn two_steps() -> Ruleset {
    doc()
        .acl(
            acl("acl-web")
                .ingress(entry("bad-host", Action::Drop).cidr("198.51.100.66/32"))
                .ingress(entry("all", Action::Accept).cidr("0.0.0.0/0"))
                .egress(
                    entry("no-web-to-bad", Action::Drop)
                        .tcp(80, 80)
                        .cidr("198.51.100.66/32"),
                )
                .egress(entry("all", Action::Accept).cidr("0.0.0.0/0")),
        )
        .group(
            advanced("sg-a")
                .rule(accept_in("web").tcp(80, 80).cidr("0.0.0.0/0"))
                .rule(accept_out("web-out").tcp(80, 80).cidr("0.0.0.0/0"))
                .rule(drop_out("no-telnet").tcp(23, 23).cidr("0.0.0.0/0")),
        )
        .eni("eni-a", ENI_A, &["sg-a"])
        .build()
}

/// The kinds of the trace items, in order: `n` NACL entry, `i` inner
/// accept, `r` rule.
fn kinds(ev: &Evaluation) -> String {
    ev.trace
        .iter()
        .map(|t| match t.item {
            TraceItem::NaclEntry { .. } => 'n',
            TraceItem::InnerAccept { .. } => 'i',
            TraceItem::SgRule { .. } => 'r',
        })
        .collect()
}

#[test]
fn ingress_nacl_then_groups() {
    // §3 step 2, ingress: the NACL first; its drop ends it. Otherwise the
    // groups decide and, when both accept, name the reason (§3 step 6).
    let rs = two_steps();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("NACL drops", IN, tcp("198.51.100.66:40000", "192.0.2.10:80"), DROP, "nacl:acl-web/bad-host"),
        ("both accept: the group's reason", IN, tcp("198.51.100.1:40000", "192.0.2.10:80"), ACCEPT, "sg-a/web"),
        ("NACL accepts, groups drop", IN, tcp("198.51.100.1:40000", "192.0.2.10:81"), DROP, "default-deny"),
    ];
    check(&rs, cases);

    let dropped = eval_at(
        &rs,
        "eni-a",
        IN,
        &tcp("198.51.100.66:40000", "192.0.2.10:80"),
    );
    assert_eq!(
        dropped.sg, None,
        "the groups are not reached after a NACL drop"
    );
    assert!(matches!(
        dropped.nacl,
        Some(NaclOutcome::Matched { entry: 0, .. })
    ));
    assert_eq!(kinds(&dropped), "nn");

    let accepted = eval_at(
        &rs,
        "eni-a",
        IN,
        &tcp("198.51.100.1:40000", "192.0.2.10:80"),
    );
    assert!(matches!(
        accepted.nacl,
        Some(NaclOutcome::Matched { entry: 1, .. })
    ));
    assert!(matches!(accepted.sg, Some(SgOutcome::Matched { .. })));
    assert_eq!(kinds(&accepted), "nr", "ingress traces the NACL first");
}

#[test]
fn egress_groups_then_nacl() {
    // §3 step 2, egress: the groups first; their drop ends it. Otherwise the
    // NACL; its drop names the NACL, and when both accept the group names
    // the reason (§3 step 6).
    let rs = two_steps();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("both accept: the group's reason", OUT, tcp("192.0.2.10:40000", "198.51.100.1:80"), ACCEPT, "sg-a/web-out"),
        ("groups accept, NACL drops", OUT, tcp("192.0.2.10:40000", "198.51.100.66:80"), DROP, "nacl:acl-web/no-web-to-bad"),
        ("groups drop by rule", OUT, tcp("192.0.2.10:40000", "198.51.100.1:23"), DROP, "sg-a/no-telnet"),
        ("groups drop by default", OUT, tcp("192.0.2.10:40000", "198.51.100.1:443"), DROP, "default-deny"),
    ];
    check(&rs, cases);

    let dropped = eval_at(
        &rs,
        "eni-a",
        OUT,
        &tcp("192.0.2.10:40000", "198.51.100.1:23"),
    );
    assert_eq!(
        dropped.nacl, None,
        "the NACL is not reached after a group drop"
    );
    assert_eq!(kinds(&dropped), "r");

    let accepted = eval_at(
        &rs,
        "eni-a",
        OUT,
        &tcp("192.0.2.10:40000", "198.51.100.1:80"),
    );
    assert_eq!(kinds(&accepted), "rn", "egress traces the groups first");

    let nacl_dropped = eval_at(
        &rs,
        "eni-a",
        OUT,
        &tcp("192.0.2.10:40000", "198.51.100.66:80"),
    );
    assert!(matches!(
        nacl_dropped.sg,
        Some(SgOutcome::Matched {
            action: Action::Accept,
            ..
        })
    ));
    assert_eq!(kinds(&nacl_dropped), "rnn");
}

#[test]
fn steps_agree_with_the_whole() {
    // `evaluate` is exactly its steps: whatever step it reached gives the
    // same outcome alone.
    let rs = two_steps();
    let packets = [
        (IN, tcp("198.51.100.66:40000", "192.0.2.10:80")),
        (IN, tcp("198.51.100.1:40000", "192.0.2.10:80")),
        (IN, udp("[2001:db8:ff::1]:40000", "[2001:db8:1::10]:53")),
        (OUT, tcp("192.0.2.10:40000", "198.51.100.66:80")),
        (OUT, tcp("192.0.2.10:40000", "198.51.100.1:23")),
        (OUT, tcp("192.0.2.10:40000", "192.0.2.20:80")),
    ];
    for (direction, pkt) in packets {
        let ev = evaluate(&rs, 0, direction, &pkt);
        let nacl = evaluate_nacl(&rs, 0, direction, &pkt);
        let sg = evaluate_sg(&rs, 0, direction, &pkt);
        assert!(
            ev.nacl.is_some() || ev.sg.is_some(),
            "{direction:?} {pkt:?}"
        );
        if let Some(reached) = &ev.nacl {
            assert_eq!(*reached, nacl, "{direction:?} {pkt:?}");
        }
        if let Some(reached) = &ev.sg {
            assert_eq!(*reached, sg, "{direction:?} {pkt:?}");
        }
    }
}

#[test]
fn neighbour_discovery_passes() {
    // §3 step 1: ICMPv6 types 133–137 pass before any NACL or group, in
    // both directions; their neighbours in the type space and ICMPv4 do not.
    let rs = doc()
        .acl(acl("acl-empty"))
        .group(advanced("sg-a"))
        .eni("eni-a", ENI_A, &["sg-a"])
        .build();
    let mut cases: Vec<Case> = Vec::new();
    for (name, icmp_type) in [
        ("router solicitation", 133),
        ("router advertisement", 134),
        ("neighbour solicitation", 135),
        ("neighbour advertisement", 136),
        ("redirect", 137),
    ] {
        let inbound = icmpv6("2001:db8:ff::1", "2001:db8:1::10", icmp_type);
        let outbound = icmpv6("2001:db8:1::10", "2001:db8:ff::1", icmp_type);
        cases.push((name, IN, inbound, ACCEPT, "pass"));
        cases.push((name, OUT, outbound, ACCEPT, "pass"));
    }
    #[rustfmt::skip]
    let not_nd: &[Case] = &[
        ("icmpv6 type 132", IN, icmpv6("2001:db8:ff::1", "2001:db8:1::10", 132), DROP, "nacl:acl-empty/default-deny"),
        ("icmpv6 type 138", IN, icmpv6("2001:db8:ff::1", "2001:db8:1::10", 138), DROP, "nacl:acl-empty/default-deny"),
        ("icmpv6 echo", IN, icmpv6("2001:db8:ff::1", "2001:db8:1::10", 128), DROP, "nacl:acl-empty/default-deny"),
        ("icmpv4 type 135", IN, icmp("198.51.100.1", "192.0.2.10", 135), DROP, "nacl:acl-empty/default-deny"),
        ("egress icmpv6 type 138", OUT, icmpv6("2001:db8:1::10", "2001:db8:ff::1", 138), DROP, "default-deny"),
    ];
    cases.extend_from_slice(not_nd);
    check(&rs, &cases);

    let ev = eval_at(
        &rs,
        "eni-a",
        IN,
        &icmpv6("2001:db8:ff::1", "2001:db8:1::10", 135),
    );
    assert_eq!(
        ev,
        Evaluation {
            decision: Decision {
                verdict: Verdict::Accept,
                reason: Reason::Pass,
            },
            nacl: None,
            sg: None,
            trace: Vec::new(),
        }
    );
}

#[test]
fn non_ip_passes() {
    // §3 step 1: ARP and other non-IP frames pass.
    assert_eq!(
        evaluate_non_ip(),
        Decision {
            verdict: Verdict::Accept,
            reason: Reason::Pass,
        }
    );
}

#[test]
fn evaluation_serializes_to_json() {
    // The JSON API (`filterctl explain --json`) carries the whole story.
    let rs = two_steps();
    let ev = eval_at(
        &rs,
        "eni-a",
        OUT,
        &tcp("192.0.2.10:40000", "198.51.100.66:80"),
    );
    let json = serde_json::to_value(&ev).unwrap_or_else(|e| panic!("serialize: {e}"));
    assert_eq!(json["decision"]["verdict"], "drop");
    assert_eq!(json["decision"]["reason"]["kind"], "nacl");
    assert_eq!(json["sg"]["outcome"], "matched");
    assert_eq!(json["nacl"]["outcome"], "matched");
    assert_eq!(json["trace"][0]["item"]["kind"], "sg_rule");
    assert_eq!(json["trace"][0]["status"]["status"], "decided");
    assert_eq!(json["trace"][2]["status"]["why"], "later_nacl_entry");
    let back: Evaluation =
        serde_json::from_value(json).unwrap_or_else(|e| panic!("deserialize: {e}"));
    assert_eq!(back, ev);
}
