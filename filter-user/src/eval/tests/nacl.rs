//! SPEC §2.3 and §3 step 3: network ACLs.
use super::builder::*;
use crate::{
    eval::{evaluate_nacl, LossReason, NaclOutcome},
    ruleset::{Action, Protocol, Ruleset},
    verdict::{Decision, Reason, Verdict},
};

const ENI_A: &[&str] = &["192.0.2.10", "2001:db8:1::10"];

/// A rule set whose security groups accept everything in both directions
/// (basic groups: egress default-accept), so the NACL alone drops.
fn with_acl(acl: AclB) -> Ruleset {
    doc()
        .acl(acl)
        .group(
            basic("sg-open")
                .rule(accept_in("all4").cidr("0.0.0.0/0"))
                .rule(accept_in("all6").cidr("::/0")),
        )
        .eni("eni-a", ENI_A, &["sg-open"])
        .build()
}

#[test]
fn first_matching_entry_wins() {
    // §2.3: the first entry is the strongest; a later entry never overrides
    // an earlier match, whatever its action.
    let rs = with_acl(
        acl("acl-web")
            .ingress(
                entry("block-ssh", Action::Drop)
                    .tcp(22, 22)
                    .cidr("198.51.100.0/24"),
            )
            .ingress(
                entry("ssh-host", Action::Accept)
                    .tcp(22, 22)
                    .cidr("198.51.100.7/32"),
            )
            .ingress(entry("all", Action::Accept).cidr("0.0.0.0/0"))
            .ingress(entry("never", Action::Drop).cidr("0.0.0.0/0")),
    );
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("drop before a narrower accept", IN, tcp("198.51.100.7:40000", "192.0.2.10:22"), DROP, "nacl:acl-web/block-ssh"),
        ("accept before a drop", IN, tcp("203.0.113.1:40000", "192.0.2.10:22"), ACCEPT, "sg-open/all4"),
        ("another port", IN, tcp("198.51.100.7:40000", "192.0.2.10:80"), ACCEPT, "sg-open/all4"),
    ];
    check(&rs, cases);

    let pkt = tcp("198.51.100.7:40000", "192.0.2.10:22");
    let ev = eval_at(&rs, "eni-a", IN, &pkt);
    assert_eq!(
        statuses(&ev),
        [
            decided("nacl:acl-web/block-ssh"),
            lost("nacl:acl-web/ssh-host", LossReason::LaterNaclEntry),
            lost("nacl:acl-web/all", LossReason::LaterNaclEntry),
            lost("nacl:acl-web/never", LossReason::LaterNaclEntry),
        ]
    );
    assert_eq!(winners(&ev), ["nacl:acl-web/block-ssh"; 3]);
    assert_eq!(
        evaluate_nacl(&rs, 0, IN, &pkt),
        NaclOutcome::Matched {
            acl: 0,
            entry: 0,
            action: Action::Drop,
            decision: ev.decision,
        }
    );
}

#[test]
fn empty_lists_drop() {
    // §3 step 3: no match drops, so an ACL with empty lists drops every
    // packet from outside the vSwitch, in both directions.
    let rs = with_acl(acl("acl-empty"));
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("ingress", IN, tcp("203.0.113.1:40000", "192.0.2.10:80"), DROP, "nacl:acl-empty/default-deny"),
        ("egress", OUT, tcp("192.0.2.10:40000", "203.0.113.1:80"), DROP, "nacl:acl-empty/default-deny"),
        ("ingress, IPv6", IN, icmpv6("2001:db8:ff::1", "2001:db8:1::10", 128), DROP, "nacl:acl-empty/default-deny"),
    ];
    check(&rs, cases);
    assert_eq!(
        evaluate_nacl(&rs, 0, IN, &tcp("203.0.113.1:40000", "192.0.2.10:80")),
        NaclOutcome::NoMatch {
            acl: 0,
            decision: Decision {
                verdict: Verdict::Drop,
                reason: Reason::NaclDefault {
                    acl: "acl-empty".to_owned()
                },
            },
        }
    );
}

#[test]
fn no_matching_entry_drops() {
    // §2.3 and §3 step 3: entries match on protocol, destination port and
    // remote CIDR (its family included); nothing matching drops.
    let rs = with_acl(
        acl("acl-web")
            .ingress(entry("web", Action::Accept).tcp(80, 80).cidr("0.0.0.0/0"))
            .ingress(entry("dns", Action::Accept).udp(53, 53).cidr("0.0.0.0/0"))
            .ingress(
                entry("ping", Action::Accept)
                    .proto(Protocol::Icmp)
                    .cidr("0.0.0.0/0"),
            )
            .ingress(
                entry("ping6", Action::Accept)
                    .proto(Protocol::Icmpv6)
                    .cidr("::/0"),
            ),
    );
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("tcp 80", IN, tcp("203.0.113.1:40000", "192.0.2.10:80"), ACCEPT, "sg-open/all4"),
        ("tcp 81", IN, tcp("203.0.113.1:40000", "192.0.2.10:81"), DROP, "nacl:acl-web/default-deny"),
        ("udp 80", IN, udp("203.0.113.1:40000", "192.0.2.10:80"), DROP, "nacl:acl-web/default-deny"),
        ("udp 53", IN, udp("203.0.113.1:40000", "192.0.2.10:53"), ACCEPT, "sg-open/all4"),
        ("tcp 53", IN, tcp("203.0.113.1:40000", "192.0.2.10:53"), DROP, "nacl:acl-web/default-deny"),
        ("IPv6 tcp 80, v4 entry", IN, tcp("[2001:db8:ff::1]:40000", "[2001:db8:1::10]:80"), DROP, "nacl:acl-web/default-deny"),
        ("icmp", IN, icmp("203.0.113.1", "192.0.2.10", 8), ACCEPT, "sg-open/all4"),
        ("icmpv6", IN, icmpv6("2001:db8:ff::1", "2001:db8:1::10", 128), ACCEPT, "sg-open/all6"),
        ("protocol 1 over IPv6", IN, icmp("2001:db8:ff::1", "2001:db8:1::10", 8), DROP, "nacl:acl-web/default-deny"),
    ];
    check(&rs, cases);
}

#[test]
fn no_acl_skips_the_step() {
    // §3 step 3: a vSwitch without an ACL: the groups alone decide.
    let rs = doc()
        .group(basic("sg-a").rule(accept_in("web").tcp(80, 80).cidr("0.0.0.0/0")))
        .eni("eni-a", ENI_A, &["sg-a"])
        .build();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("ingress", IN, tcp("203.0.113.1:40000", "192.0.2.10:80"), ACCEPT, "sg-a/web"),
        ("ingress, no rule", IN, tcp("203.0.113.1:40000", "192.0.2.10:81"), DROP, "default-deny"),
        ("egress", OUT, tcp("192.0.2.10:40000", "203.0.113.1:80"), ACCEPT, "default-accept"),
    ];
    check(&rs, cases);
    let pkt = tcp("203.0.113.1:40000", "192.0.2.10:80");
    assert_eq!(evaluate_nacl(&rs, 0, IN, &pkt), NaclOutcome::NoAcl);
    assert_eq!(
        eval_at(&rs, "eni-a", IN, &pkt).nacl,
        Some(NaclOutcome::NoAcl)
    );
}

#[test]
fn skipped_inside_the_vswitch() {
    // §3 step 3: traffic whose remote lies inside the vSwitch CIDR (either
    // family) is not filtered by the ACL, even one that drops everything.
    // The rest of the VPC is outside the vSwitch.
    let rs = with_acl(acl("acl-empty"));
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("a neighbour", IN, tcp("192.0.2.20:40000", "192.0.2.10:80"), ACCEPT, "sg-open/all4"),
        ("the network address", IN, udp("192.0.2.0:40000", "192.0.2.10:53"), ACCEPT, "sg-open/all4"),
        ("the last address", IN, udp("192.0.2.127:40000", "192.0.2.10:53"), ACCEPT, "sg-open/all4"),
        ("same VPC, another vSwitch", IN, udp("192.0.2.128:40000", "192.0.2.10:53"), DROP, "nacl:acl-empty/default-deny"),
        ("IPv6 neighbour", IN, tcp("[2001:db8:1::20]:40000", "[2001:db8:1::10]:80"), ACCEPT, "sg-open/all6"),
        ("IPv6 outside", IN, tcp("[2001:db8:2::20]:40000", "[2001:db8:1::10]:80"), DROP, "nacl:acl-empty/default-deny"),
        ("egress to a neighbour", OUT, tcp("192.0.2.10:40000", "192.0.2.20:80"), ACCEPT, "default-accept"),
        ("egress to outside", OUT, tcp("192.0.2.10:40000", "203.0.113.1:80"), DROP, "nacl:acl-empty/default-deny"),
    ];
    check(&rs, cases);
    assert_eq!(
        evaluate_nacl(&rs, 0, IN, &tcp("192.0.2.20:40000", "192.0.2.10:80")),
        NaclOutcome::InsideVswitch {
            cidr: net(VSWITCH_V4)
        }
    );
    assert_eq!(
        evaluate_nacl(
            &rs,
            0,
            OUT,
            &tcp("[2001:db8:1::10]:40000", "[2001:db8:1::20]:80")
        ),
        NaclOutcome::InsideVswitch {
            cidr: net(VSWITCH_V6)
        }
    );
}

#[test]
fn each_direction_has_its_own_list() {
    // §2.3: ingress entries match the source, egress entries the
    // destination; each direction reads only its own list.
    let rs = with_acl(
        acl("acl-web")
            .ingress(entry("from-net", Action::Accept).cidr("198.51.100.0/24"))
            .egress(entry("no-smtp", Action::Drop).tcp(25, 25).cidr("0.0.0.0/0"))
            .egress(entry("to-net", Action::Accept).cidr("203.0.113.0/24")),
    );
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("ingress from the ingress peer", IN, tcp("198.51.100.1:40000", "192.0.2.10:25"), ACCEPT, "sg-open/all4"),
        ("ingress from the egress peer", IN, tcp("203.0.113.1:40000", "192.0.2.10:80"), DROP, "nacl:acl-web/default-deny"),
        ("egress to the egress peer", OUT, tcp("192.0.2.10:40000", "203.0.113.1:80"), ACCEPT, "default-accept"),
        ("egress, port 25", OUT, tcp("192.0.2.10:40000", "203.0.113.1:25"), DROP, "nacl:acl-web/no-smtp"),
        ("egress to the ingress peer", OUT, tcp("192.0.2.10:40000", "198.51.100.1:80"), DROP, "nacl:acl-web/default-deny"),
    ];
    check(&rs, cases);
    let ev = eval_at(
        &rs,
        "eni-a",
        OUT,
        &tcp("192.0.2.10:40000", "203.0.113.1:80"),
    );
    assert!(matches!(
        ev.nacl,
        Some(NaclOutcome::Matched {
            entry: 1,
            action: Action::Accept,
            ..
        })
    ));
    assert_eq!(statuses(&ev), [decided("nacl:acl-web/to-net")]);
}
