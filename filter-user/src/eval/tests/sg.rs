//! SPEC §2.1, §2.2 and §3 step 5: security groups.
use super::builder::*;
use crate::{
    eval::{evaluate_sg, LossReason, SgOutcome, TraceItem},
    ruleset::{Action, Protocol},
    verdict::{Decision, Reason, Verdict},
};

/// The addresses of the ENI under test, `eni-a`.
const ENI_A: &[&str] = &["192.0.2.10", "2001:db8:1::10"];

#[test]
fn priority_order_across_groups() {
    // §3 step 5.2: the smallest priority among the matching rules of all the
    // ENI's groups wins, whatever group it is in and whatever group order.
    for order in [["sg-a", "sg-b"], ["sg-b", "sg-a"]] {
        let rs = doc()
            .group(
                basic("sg-a")
                    .rule(drop_in("deny-all").prio(50).cidr("0.0.0.0/0"))
                    .rule(accept_in("https").prio(1).tcp(443, 443).cidr("0.0.0.0/0")),
            )
            .group(
                basic("sg-b")
                    .rule(
                        accept_in("ssh-office")
                            .prio(10)
                            .tcp(22, 22)
                            .cidr("198.51.100.0/24"),
                    )
                    .rule(
                        drop_in("block-host")
                            .prio(5)
                            .tcp(22, 22)
                            .cidr("198.51.100.66/32"),
                    ),
            )
            .eni("eni-a", ENI_A, &order)
            .build();
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("prio 1 accept beats the prio 50 drop of its group", IN, tcp("203.0.113.9:40000", "192.0.2.10:443"), ACCEPT, "sg-a/https"),
            ("prio 10 accept in sg-b beats prio 50 drop in sg-a", IN, tcp("198.51.100.1:40000", "192.0.2.10:22"), ACCEPT, "sg-b/ssh-office"),
            ("prio 5 drop beats the prio 10 accept", IN, tcp("198.51.100.66:40000", "192.0.2.10:22"), DROP, "sg-b/block-host"),
            ("only the prio 50 drop matches", IN, tcp("203.0.113.9:40000", "192.0.2.10:22"), DROP, "sg-a/deny-all"),
        ];
        check(&rs, cases);
    }
}

#[test]
fn weaker_priority_is_traced_as_lost() {
    let rs = doc()
        .group(
            basic("sg-a")
                .rule(drop_in("deny-all").prio(50).cidr("0.0.0.0/0"))
                .rule(accept_in("https").prio(1).tcp(443, 443).cidr("0.0.0.0/0")),
        )
        .eni("eni-a", ENI_A, &["sg-a"])
        .build();
    let ev = eval_at(
        &rs,
        "eni-a",
        IN,
        &tcp("203.0.113.9:40000", "192.0.2.10:443"),
    );
    assert_eq!(
        statuses(&ev),
        [
            lost("sg-a/deny-all", LossReason::WeakerPriority),
            decided("sg-a/https")
        ]
    );
    assert_eq!(winners(&ev), ["sg-a/https"]);
}

#[test]
fn deny_wins_tie_in_one_group() {
    // §3 step 5.2: at the winning priority any drop wins, whatever the rule
    // order (the accepts come first here).
    let rs = doc()
        .group(
            basic("sg-a")
                .rule(accept_in("web").prio(3).tcp(80, 80).cidr("0.0.0.0/0"))
                .rule(drop_in("block-net").prio(3).cidr("198.51.100.0/24"))
                .rule(accept_in("web6").prio(3).tcp(80, 80).cidr("::/0"))
                .rule(drop_in("block-net6").prio(3).cidr("2001:db8:ff::/64"))
                .rule(
                    accept_in("admin")
                        .prio(2)
                        .tcp(8443, 8443)
                        .cidr("198.51.100.5/32"),
                ),
        )
        .eni("eni-a", ENI_A, &["sg-a"])
        .build();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("accept and drop at prio 3: drop", IN, tcp("198.51.100.1:40000", "192.0.2.10:80"), DROP, "sg-a/block-net"),
        ("only the accept matches", IN, tcp("203.0.113.1:40000", "192.0.2.10:80"), ACCEPT, "sg-a/web"),
        ("IPv6 tie: drop", IN, tcp("[2001:db8:ff::1]:40000", "[2001:db8:1::10]:80"), DROP, "sg-a/block-net6"),
        ("IPv6, only the accept", IN, tcp("[2001:db8:fe::1]:40000", "[2001:db8:1::10]:80"), ACCEPT, "sg-a/web6"),
        ("a stronger accept beats the tie", IN, tcp("198.51.100.5:40000", "192.0.2.10:8443"), ACCEPT, "sg-a/admin"),
    ];
    check(&rs, cases);
    let ev = eval_at(
        &rs,
        "eni-a",
        IN,
        &tcp("198.51.100.1:40000", "192.0.2.10:80"),
    );
    assert_eq!(
        statuses(&ev),
        [
            lost("sg-a/web", LossReason::DropWinsTie),
            decided("sg-a/block-net")
        ]
    );
}

#[test]
fn deny_wins_tie_across_groups() {
    // §3 step 5.2: the tie is across all the ENI's groups, in either order.
    for order in [["sg-a", "sg-b"], ["sg-b", "sg-a"]] {
        let rs = doc()
            .group(basic("sg-a").rule(accept_in("web").tcp(80, 80).cidr("0.0.0.0/0")))
            .group(basic("sg-b").rule(drop_in("block-net").cidr("198.51.100.0/24")))
            .eni("eni-a", ENI_A, &order)
            .build();
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("sg-a accepts, sg-b drops: drop", IN, tcp("198.51.100.1:40000", "192.0.2.10:80"), DROP, "sg-b/block-net"),
            ("only sg-a matches", IN, tcp("203.0.113.1:40000", "192.0.2.10:80"), ACCEPT, "sg-a/web"),
        ];
        check(&rs, cases);
    }
}

#[test]
fn tie_among_equal_rules_names_first_in_group_then_rule_order() {
    // Module docs: among rules of the winning priority and verdict, the first
    // in the ENI's group order (`security_group_ids`, not document order),
    // then rule order, names the decision.
    let rs = doc()
        .group(
            basic("sg-a")
                .rule(accept_in("a1").cidr("198.51.100.0/24"))
                .rule(accept_in("a2").cidr("198.51.100.0/25"))
                .rule(drop_out("a3").cidr("203.0.113.0/24")),
        )
        .group(
            basic("sg-b")
                .rule(accept_in("b1").cidr("198.51.100.1/32"))
                .rule(accept_in("b2").cidr("0.0.0.0/0"))
                .rule(drop_out("b3").cidr("203.0.113.7/32"))
                .rule(drop_out("b4").cidr("0.0.0.0/0")),
        )
        .eni("eni-a", ENI_A, &["sg-b", "sg-a"])
        .build();
    let ev = eval_at(
        &rs,
        "eni-a",
        IN,
        &tcp("198.51.100.1:40000", "192.0.2.10:80"),
    );
    assert_eq!(ev.decision.reason.to_string(), "sg-b/b1");
    assert_eq!(
        statuses(&ev),
        [
            decided("sg-b/b1"),
            lost("sg-b/b2", LossReason::TieBreak),
            lost("sg-a/a1", LossReason::TieBreak),
            lost("sg-a/a2", LossReason::TieBreak),
        ]
    );
    let ev = eval_at(
        &rs,
        "eni-a",
        OUT,
        &tcp("192.0.2.10:40000", "203.0.113.7:80"),
    );
    assert_eq!(ev.decision.verdict, Verdict::Drop);
    assert_eq!(
        statuses(&ev),
        [
            decided("sg-b/b3"),
            lost("sg-b/b4", LossReason::TieBreak),
            lost("sg-a/a3", LossReason::TieBreak),
        ]
    );
}

#[test]
fn default_deny_inbound() {
    // §3 step 5.3: no matching rule drops ingress, for both group kinds.
    let rs = doc()
        .group(
            basic("sg-basic")
                .rule(accept_in("ssh").tcp(22, 22).cidr("198.51.100.0/24"))
                .rule(accept_out("all").cidr("0.0.0.0/0")),
        )
        .group(advanced("sg-adv").rule(accept_out("all").cidr("0.0.0.0/0")))
        .eni("eni-a", ENI_A, &["sg-basic"])
        .eni("eni-b", &["192.0.2.11"], &["sg-adv"])
        .build();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("no ingress rule matches", IN, tcp("203.0.113.1:40000", "192.0.2.10:22"), DROP, "default-deny"),
        ("udp, no rule", IN, udp("203.0.113.1:40000", "192.0.2.10:53"), DROP, "default-deny"),
        ("icmp, no rule", IN, icmp("203.0.113.1", "192.0.2.10", 8), DROP, "default-deny"),
    ];
    check(&rs, cases);
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("advanced, no ingress rule", IN, tcp("203.0.113.1:40000", "192.0.2.11:22"), DROP, "default-deny"),
    ];
    check_at(&rs, "eni-b", cases);
    assert_eq!(
        evaluate_sg(&rs, 0, IN, &tcp("203.0.113.1:40000", "192.0.2.10:22")),
        SgOutcome::NoMatch {
            decision: Decision {
                verdict: Verdict::Drop,
                reason: Reason::DefaultDeny
            }
        }
    );
}

#[test]
fn egress_default_basic_accepts_advanced_drops() {
    // §3 step 5.3: egress with no matching rule: accept through basic
    // groups, drop through advanced groups.
    let rs = doc()
        .group(basic("sg-basic").rule(drop_out("no-smtp").tcp(25, 25).cidr("0.0.0.0/0")))
        .group(advanced("sg-adv").rule(accept_out("web").tcp(443, 443).cidr("0.0.0.0/0")))
        .eni("eni-a", ENI_A, &["sg-basic"])
        .eni("eni-b", &["192.0.2.11", "2001:db8:1::11"], &["sg-adv"])
        .build();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("basic, no match", OUT, tcp("192.0.2.10:40000", "203.0.113.1:443"), ACCEPT, "default-accept"),
        ("basic, no match, IPv6", OUT, udp("[2001:db8:1::10]:40000", "[2001:db8:ff::1]:53"), ACCEPT, "default-accept"),
        ("basic, a drop rule matches", OUT, tcp("192.0.2.10:40000", "203.0.113.1:25"), DROP, "sg-basic/no-smtp"),
    ];
    check(&rs, cases);
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("advanced, no match", OUT, tcp("192.0.2.11:40000", "203.0.113.1:80"), DROP, "default-deny"),
        ("advanced, no match, IPv6", OUT, tcp("[2001:db8:1::11]:40000", "[2001:db8:ff::1]:443"), DROP, "default-deny"),
        ("advanced, an accept rule", OUT, tcp("192.0.2.11:40000", "203.0.113.1:443"), ACCEPT, "sg-adv/web"),
    ];
    check_at(&rs, "eni-b", cases);
}

#[test]
fn inner_access_accept_vs_drop() {
    // §2.1 and §3 step 5.1: members of a basic group with inner accept reach
    // each other in both directions; a group with inner drop and an advanced
    // group isolate their members (default-deny inbound, §3 step 5.3).
    let rs = doc()
        .group(
            basic("sg-open")
                .inner_accept()
                .members(&["198.51.100.7", "2001:db8:ff::7"]),
        )
        .group(basic("sg-closed"))
        .group(advanced("sg-adv"))
        .eni("eni-a", ENI_A, &["sg-open"])
        .eni("eni-b", &["192.0.2.11", "2001:db8:1::11"], &["sg-open"])
        .eni("eni-c", &["192.0.2.12"], &["sg-closed"])
        .eni("eni-d", &["192.0.2.13"], &["sg-closed"])
        .eni("eni-e", &["192.0.2.14"], &["sg-adv"])
        .eni("eni-f", &["192.0.2.15"], &["sg-adv"])
        .build();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("from a local member", IN, tcp("192.0.2.11:40000", "192.0.2.10:22"), ACCEPT, "inner-accept:sg-open"),
        ("from a local member, IPv6", IN, udp("[2001:db8:1::11]:40000", "[2001:db8:1::10]:53"), ACCEPT, "inner-accept:sg-open"),
        ("to a local member", OUT, tcp("192.0.2.10:40000", "192.0.2.11:22"), ACCEPT, "inner-accept:sg-open"),
        ("from a member_ip", IN, icmp("198.51.100.7", "192.0.2.10", 8), ACCEPT, "inner-accept:sg-open"),
        ("from an IPv6 member_ip", IN, icmpv6("2001:db8:ff::7", "2001:db8:1::10", 128), ACCEPT, "inner-accept:sg-open"),
        ("member_ips are hosts", IN, icmp("198.51.100.8", "192.0.2.10", 8), DROP, "default-deny"),
        ("not a member", IN, tcp("192.0.2.12:40000", "192.0.2.10:22"), DROP, "default-deny"),
    ];
    check(&rs, cases);
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("inner drop, from a member", IN, tcp("192.0.2.13:40000", "192.0.2.12:22"), DROP, "default-deny"),
        ("inner drop, to a member", OUT, tcp("192.0.2.12:40000", "192.0.2.13:22"), ACCEPT, "default-accept"),
    ];
    check_at(&rs, "eni-c", cases);
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("advanced, from a member", IN, tcp("192.0.2.15:40000", "192.0.2.14:22"), DROP, "default-deny"),
        ("advanced, to a member", OUT, tcp("192.0.2.14:40000", "192.0.2.15:22"), DROP, "default-deny"),
    ];
    check_at(&rs, "eni-e", cases);
}

#[test]
fn inner_access_needs_a_shared_group() {
    // §3 step 5.1: the remote must be a member of a group that the ENI
    // itself belongs to.
    let rs = doc()
        .group(basic("sg-a").inner_accept())
        .group(basic("sg-b").inner_accept().members(&["198.51.100.7"]))
        .eni("eni-a", ENI_A, &["sg-a"])
        .eni("eni-b", &["192.0.2.11"], &["sg-b"])
        .build();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("a member of another group", IN, tcp("192.0.2.11:40000", "192.0.2.10:22"), DROP, "default-deny"),
        ("a member_ip of another group", IN, tcp("198.51.100.7:40000", "192.0.2.10:22"), DROP, "default-deny"),
    ];
    check(&rs, cases);
}

#[test]
fn advanced_group_never_inner_accepts() {
    // §2.1: advanced groups are always isolated. Validation rejects
    // `inner_access_policy: accept` on them; the evaluator checks the kind
    // as well, so the flag alone never opens one.
    let rs = doc()
        .group(advanced("sg-adv").inner_accept())
        .eni("eni-a", ENI_A, &["sg-adv"])
        .eni("eni-b", &["192.0.2.11"], &["sg-adv"])
        .build();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("advanced with the flag set", IN, tcp("192.0.2.11:40000", "192.0.2.10:22"), DROP, "default-deny"),
    ];
    check(&rs, cases);
}

#[test]
fn inner_accept_wins_over_custom_drop() {
    // §3 step 5.1: inner accept wins over every custom rule, even a priority
    // 1 drop, in its own group or another one, in both directions.
    let rs = doc()
        .group(
            basic("sg-open")
                .inner_accept()
                .rule(drop_in("deny-in").prio(1).cidr("0.0.0.0/0"))
                .rule(drop_out("deny-out").prio(1).cidr("0.0.0.0/0")),
        )
        .group(basic("sg-strict").rule(drop_in("deny-peer").prio(1).cidr("192.0.2.11/32")))
        .eni("eni-a", ENI_A, &["sg-strict", "sg-open"])
        .eni("eni-b", &["192.0.2.11"], &["sg-open"])
        .build();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("ingress from a member", IN, tcp("192.0.2.11:40000", "192.0.2.10:22"), ACCEPT, "inner-accept:sg-open"),
        ("egress to a member", OUT, tcp("192.0.2.10:40000", "192.0.2.11:22"), ACCEPT, "inner-accept:sg-open"),
        ("ingress from a stranger", IN, tcp("203.0.113.1:40000", "192.0.2.10:22"), DROP, "sg-open/deny-in"),
        ("egress to a stranger", OUT, tcp("192.0.2.10:40000", "203.0.113.1:22"), DROP, "sg-open/deny-out"),
    ];
    check(&rs, cases);
    let ev = eval_at(&rs, "eni-a", IN, &tcp("192.0.2.11:40000", "192.0.2.10:22"));
    assert_eq!(
        statuses(&ev),
        [
            decided("inner-accept:sg-open"),
            lost("sg-strict/deny-peer", LossReason::OverriddenByInnerAccept),
            lost("sg-open/deny-in", LossReason::OverriddenByInnerAccept),
        ]
    );
    assert_eq!(
        winners(&ev),
        ["inner-accept:sg-open", "inner-accept:sg-open"]
    );
    let sg_open = rs.groups.iter().position(|g| g.id == "sg-open");
    assert!(matches!(
        ev.sg,
        Some(SgOutcome::InnerAccept { group, .. }) if Some(group) == sg_open
    ));
}

#[test]
fn several_inner_accept_groups_name_the_first() {
    // Module docs: when the remote shares several inner-accept groups with
    // the ENI, the first in the ENI's group order names the verdict.
    let rs = doc()
        .group(basic("sg-a").inner_accept())
        .group(basic("sg-b").inner_accept())
        .eni("eni-a", ENI_A, &["sg-b", "sg-a"])
        .eni("eni-b", &["192.0.2.11"], &["sg-a", "sg-b"])
        .build();
    let ev = eval_at(&rs, "eni-a", IN, &tcp("192.0.2.11:40000", "192.0.2.10:22"));
    assert_eq!(
        statuses(&ev),
        [
            decided("inner-accept:sg-b"),
            lost("inner-accept:sg-a", LossReason::TieBreak)
        ]
    );
}

#[test]
fn group_references_and_member_ips() {
    // §2.1 and §2.2: a group peer stands for the IPs of the local ENIs that
    // list the group plus its `member_ips`, each matching its own family.
    let rs = doc()
        .group(
            basic("sg-web")
                .rule(accept_in("mysql").tcp(3306, 3306).group("sg-app"))
                .rule(drop_out("no-app").tcp(8080, 8080).group("sg-app")),
        )
        .group(basic("sg-app").members(&["198.51.100.20", "2001:db8:ff::20"]))
        .eni("eni-a", ENI_A, &["sg-web"])
        .eni("eni-b", &["192.0.2.11", "2001:db8:1::11"], &["sg-app"])
        .build();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("from a local ENI of the group", IN, tcp("192.0.2.11:40000", "192.0.2.10:3306"), ACCEPT, "sg-web/mysql"),
        ("from a local ENI of the group, IPv6", IN, tcp("[2001:db8:1::11]:40000", "[2001:db8:1::10]:3306"), ACCEPT, "sg-web/mysql"),
        ("from a member_ip", IN, tcp("198.51.100.20:40000", "192.0.2.10:3306"), ACCEPT, "sg-web/mysql"),
        ("from an IPv6 member_ip", IN, tcp("[2001:db8:ff::20]:40000", "[2001:db8:1::10]:3306"), ACCEPT, "sg-web/mysql"),
        ("members are hosts", IN, tcp("198.51.100.21:40000", "192.0.2.10:3306"), DROP, "default-deny"),
        ("the ENI itself is no member", IN, tcp("192.0.2.10:40000", "192.0.2.10:3306"), DROP, "default-deny"),
        ("a member, wrong port", IN, tcp("192.0.2.11:40000", "192.0.2.10:3307"), DROP, "default-deny"),
        ("egress to a member", OUT, tcp("192.0.2.10:40000", "198.51.100.20:8080"), DROP, "sg-web/no-app"),
        ("egress to a stranger", OUT, tcp("192.0.2.10:40000", "198.51.100.21:8080"), ACCEPT, "default-accept"),
    ];
    check(&rs, cases);
}

#[test]
fn prefix_lists() {
    // §2.2: a prefix-list peer matches any of its entries, each in its own
    // family.
    let rs = doc()
        .prefix_list(
            "pl-office",
            &["203.0.113.0/25", "198.51.100.7/32", "2001:db8:ff::/64"],
        )
        .group(
            advanced("sg-a")
                .rule(accept_in("ssh").tcp(22, 22).plist("pl-office"))
                .rule(accept_out("out").plist("pl-office")),
        )
        .eni("eni-a", ENI_A, &["sg-a"])
        .build();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("network address of an entry", IN, tcp("203.0.113.0:40000", "192.0.2.10:22"), ACCEPT, "sg-a/ssh"),
        ("last address of an entry", IN, tcp("203.0.113.127:40000", "192.0.2.10:22"), ACCEPT, "sg-a/ssh"),
        ("just past an entry", IN, tcp("203.0.113.128:40000", "192.0.2.10:22"), DROP, "default-deny"),
        ("a /32 entry", IN, tcp("198.51.100.7:40000", "192.0.2.10:22"), ACCEPT, "sg-a/ssh"),
        ("next to the /32 entry", IN, tcp("198.51.100.8:40000", "192.0.2.10:22"), DROP, "default-deny"),
        ("an IPv6 entry", IN, tcp("[2001:db8:ff::1]:40000", "[2001:db8:1::10]:22"), ACCEPT, "sg-a/ssh"),
        ("outside the IPv6 entry", IN, tcp("[2001:db8:fe::1]:40000", "[2001:db8:1::10]:22"), DROP, "default-deny"),
        ("egress to an entry", OUT, udp("192.0.2.10:40000", "203.0.113.5:53"), ACCEPT, "sg-a/out"),
        ("egress elsewhere", OUT, udp("192.0.2.10:40000", "198.51.100.1:53"), DROP, "default-deny"),
    ];
    check(&rs, cases);
}

#[test]
fn address_family_of_cidrs_and_protocols() {
    // §2.2: `icmp` matches only IPv4 and `icmpv6` only IPv6; an IPv4 CIDR
    // matches only IPv4 packets and an IPv6 CIDR only IPv6 packets.
    let rs = doc()
        .group(
            basic("sg-a")
                .rule(accept_in("icmp4").proto(Protocol::Icmp).cidr("0.0.0.0/0"))
                .rule(accept_in("icmp6").proto(Protocol::Icmpv6).cidr("::/0"))
                .rule(accept_in("ssh4").tcp(22, 22).cidr("0.0.0.0/0"))
                .rule(accept_in("dns6").udp(53, 53).cidr("::/0"))
                .rule(
                    accept_in("icmp6-v4-cidr")
                        .proto(Protocol::Icmpv6)
                        .cidr("198.51.100.0/24"),
                ),
        )
        .eni("eni-a", ENI_A, &["sg-a"])
        .build();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("icmp over IPv4", IN, icmp("203.0.113.1", "192.0.2.10", 8), ACCEPT, "sg-a/icmp4"),
        ("icmpv6 over IPv6", IN, icmpv6("2001:db8:ff::1", "2001:db8:1::10", 128), ACCEPT, "sg-a/icmp6"),
        ("protocol 1 over IPv6 is not icmp", IN, icmp("2001:db8:ff::1", "2001:db8:1::10", 8), DROP, "default-deny"),
        ("protocol 58 over IPv4 is not icmpv6", IN, icmpv6("198.51.100.1", "192.0.2.10", 128), DROP, "default-deny"),
        ("tcp 22 over IPv4", IN, tcp("203.0.113.1:40000", "192.0.2.10:22"), ACCEPT, "sg-a/ssh4"),
        ("0.0.0.0/0 does not match IPv6", IN, tcp("[2001:db8:ff::1]:40000", "[2001:db8:1::10]:22"), DROP, "default-deny"),
        ("udp 53 over IPv6", IN, udp("[2001:db8:ff::1]:40000", "[2001:db8:1::10]:53"), ACCEPT, "sg-a/dns6"),
        ("::/0 does not match IPv4", IN, udp("203.0.113.1:40000", "192.0.2.10:53"), DROP, "default-deny"),
    ];
    check(&rs, cases);
}

#[test]
fn protocol_all_matches_every_protocol() {
    // §2.2: `all` matches every protocol number, including ones no rule can
    // name, in the family of its peer.
    let rs = doc()
        .group(
            basic("sg-a")
                .rule(accept_in("any4").cidr("198.51.100.0/24"))
                .rule(accept_in("any6").cidr("2001:db8:ff::/64"))
                .rule(accept_in("gre").proto(Protocol::Gre).cidr("203.0.113.0/24")),
        )
        .eni("eni-a", ENI_A, &["sg-a"])
        .build();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("tcp", IN, tcp("198.51.100.1:40000", "192.0.2.10:1"), ACCEPT, "sg-a/any4"),
        ("udp", IN, udp("198.51.100.1:40000", "192.0.2.10:65535"), ACCEPT, "sg-a/any4"),
        ("icmp", IN, icmp("198.51.100.1", "192.0.2.10", 0), ACCEPT, "sg-a/any4"),
        ("gre", IN, ip(47, "198.51.100.1", "192.0.2.10"), ACCEPT, "sg-a/any4"),
        ("sctp", IN, ip(132, "198.51.100.1", "192.0.2.10"), ACCEPT, "sg-a/any4"),
        ("an experimental number", IN, ip(253, "198.51.100.1", "192.0.2.10"), ACCEPT, "sg-a/any4"),
        ("protocol 0", IN, ip(0, "198.51.100.1", "192.0.2.10"), ACCEPT, "sg-a/any4"),
        ("protocol 255", IN, ip(255, "198.51.100.1", "192.0.2.10"), ACCEPT, "sg-a/any4"),
        ("icmpv6", IN, icmpv6("2001:db8:ff::1", "2001:db8:1::10", 128), ACCEPT, "sg-a/any6"),
        ("IPv6, unknown protocol", IN, ip(253, "2001:db8:ff::1", "2001:db8:1::10"), ACCEPT, "sg-a/any6"),
        ("gre rule", IN, ip(47, "203.0.113.1", "192.0.2.10"), ACCEPT, "sg-a/gre"),
        ("gre rule, not gre", IN, ip(132, "203.0.113.1", "192.0.2.10"), DROP, "default-deny"),
    ];
    check(&rs, cases);
}

#[test]
fn quintuple_rules_match_source_ports() {
    // §2.2 `source_port_range`: a quintuple rule also restricts the source
    // port; the ends are inclusive.
    let rs = doc()
        .group(
            basic("sg-a")
                .rule(
                    accept_in("dns-replies")
                        .udp(1024, 65535)
                        .sports(53, 53)
                        .cidr("0.0.0.0/0"),
                )
                .rule(
                    accept_in("bgp")
                        .tcp(179, 179)
                        .sports(1024, 65535)
                        .cidr("198.51.100.0/24"),
                ),
        )
        .eni("eni-a", ENI_A, &["sg-a"])
        .build();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("source port 53", IN, udp("203.0.113.1:53", "192.0.2.10:40000"), ACCEPT, "sg-a/dns-replies"),
        ("source port 52", IN, udp("203.0.113.1:52", "192.0.2.10:40000"), DROP, "default-deny"),
        ("source port 54", IN, udp("203.0.113.1:54", "192.0.2.10:40000"), DROP, "default-deny"),
        ("source right, destination below", IN, udp("203.0.113.1:53", "192.0.2.10:1023"), DROP, "default-deny"),
        ("source 1024, low end", IN, tcp("198.51.100.1:1024", "192.0.2.10:179"), ACCEPT, "sg-a/bgp"),
        ("source 1023", IN, tcp("198.51.100.1:1023", "192.0.2.10:179"), DROP, "default-deny"),
        ("source 65535, high end", IN, tcp("198.51.100.1:65535", "192.0.2.10:179"), ACCEPT, "sg-a/bgp"),
    ];
    check(&rs, cases);
}

#[test]
fn local_address_restriction() {
    // §2.2 local: ingress rules restrict the destination, egress rules the
    // source; an IPv4 local never matches an IPv6 packet.
    let rs = doc()
        .group(
            basic("sg-a")
                .rule(
                    accept_in("web-on-10")
                        .tcp(80, 80)
                        .cidr("0.0.0.0/0")
                        .local("192.0.2.10/32"),
                )
                .rule(
                    accept_in("web6")
                        .tcp(80, 80)
                        .cidr("::/0")
                        .local("2001:db8:1::10/128"),
                )
                .rule(
                    drop_out("no-smtp-12")
                        .tcp(25, 25)
                        .cidr("0.0.0.0/0")
                        .local("192.0.2.12/32"),
                ),
        )
        .eni(
            "eni-a",
            &[
                "192.0.2.10",
                "192.0.2.12",
                "2001:db8:1::10",
                "2001:db8:1::12",
            ],
            &["sg-a"],
        )
        .build();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("to the local address", IN, tcp("203.0.113.1:40000", "192.0.2.10:80"), ACCEPT, "sg-a/web-on-10"),
        ("to the ENI's other address", IN, tcp("203.0.113.1:40000", "192.0.2.12:80"), DROP, "default-deny"),
        ("IPv6, to the local address", IN, tcp("[2001:db8:ff::1]:40000", "[2001:db8:1::10]:80"), ACCEPT, "sg-a/web6"),
        ("IPv6, to the other address", IN, tcp("[2001:db8:ff::1]:40000", "[2001:db8:1::12]:80"), DROP, "default-deny"),
        ("egress from the local address", OUT, tcp("192.0.2.12:40000", "203.0.113.1:25"), DROP, "sg-a/no-smtp-12"),
        ("egress from the other address", OUT, tcp("192.0.2.10:40000", "203.0.113.1:25"), ACCEPT, "default-accept"),
        ("egress: local is the source, not the destination", OUT, tcp("192.0.2.10:40000", "192.0.2.12:25"), ACCEPT, "default-accept"),
    ];
    check(&rs, cases);
}

#[test]
fn port_range_ends() {
    // §2.2 `port_range`: inclusive on both ends, 1 and 65535 included; tcp
    // and udp ranges are separate.
    let rs = doc()
        .group(
            basic("sg-a")
                .rule(accept_in("range").tcp(1000, 2000).cidr("198.51.100.0/24"))
                .rule(accept_in("one").udp(1, 1).cidr("0.0.0.0/0"))
                .rule(accept_in("top").udp(65535, 65535).cidr("0.0.0.0/0"))
                .rule(accept_in("full").tcp(1, 65535).cidr("203.0.113.0/24")),
        )
        .eni("eni-a", ENI_A, &["sg-a"])
        .build();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("999", IN, tcp("198.51.100.1:40000", "192.0.2.10:999"), DROP, "default-deny"),
        ("1000", IN, tcp("198.51.100.1:40000", "192.0.2.10:1000"), ACCEPT, "sg-a/range"),
        ("2000", IN, tcp("198.51.100.1:40000", "192.0.2.10:2000"), ACCEPT, "sg-a/range"),
        ("2001", IN, tcp("198.51.100.1:40000", "192.0.2.10:2001"), DROP, "default-deny"),
        ("udp on a tcp range", IN, udp("198.51.100.1:40000", "192.0.2.10:1500"), DROP, "default-deny"),
        ("udp 1", IN, udp("198.51.100.1:40000", "192.0.2.10:1"), ACCEPT, "sg-a/one"),
        ("udp 2", IN, udp("198.51.100.1:40000", "192.0.2.10:2"), DROP, "default-deny"),
        ("udp 65534", IN, udp("198.51.100.1:40000", "192.0.2.10:65534"), DROP, "default-deny"),
        ("udp 65535", IN, udp("198.51.100.1:40000", "192.0.2.10:65535"), ACCEPT, "sg-a/top"),
        ("1/65535 at 1", IN, tcp("203.0.113.1:40000", "192.0.2.10:1"), ACCEPT, "sg-a/full"),
        ("1/65535 at 65535", IN, tcp("203.0.113.1:40000", "192.0.2.10:65535"), ACCEPT, "sg-a/full"),
    ];
    check(&rs, cases);
}

#[test]
fn cidr_edges() {
    // §2.2 peers: /32 and /128 are one host, /0 is a whole family, network
    // and broadcast addresses belong to their prefix.
    let rs = doc()
        .group(
            advanced("sg-a")
                .rule(accept_in("host").cidr("198.51.100.7/32"))
                .rule(accept_in("net").cidr("203.0.113.0/25"))
                .rule(accept_in("host6").cidr("2001:db8:ff::7/128"))
                .rule(accept_out("all4").cidr("0.0.0.0/0"))
                .rule(accept_out("all6").udp(53, 53).cidr("::/0")),
        )
        .eni("eni-a", ENI_A, &["sg-a"])
        .build();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("/32, the host", IN, tcp("198.51.100.7:40000", "192.0.2.10:22"), ACCEPT, "sg-a/host"),
        ("/32, the host below", IN, tcp("198.51.100.6:40000", "192.0.2.10:22"), DROP, "default-deny"),
        ("/32, the host above", IN, tcp("198.51.100.8:40000", "192.0.2.10:22"), DROP, "default-deny"),
        ("/25, network address", IN, tcp("203.0.113.0:40000", "192.0.2.10:22"), ACCEPT, "sg-a/net"),
        ("/25, broadcast address", IN, tcp("203.0.113.127:40000", "192.0.2.10:22"), ACCEPT, "sg-a/net"),
        ("/25, just past it", IN, tcp("203.0.113.128:40000", "192.0.2.10:22"), DROP, "default-deny"),
        ("/128, the host", IN, tcp("[2001:db8:ff::7]:40000", "[2001:db8:1::10]:22"), ACCEPT, "sg-a/host6"),
        ("/128, the next host", IN, tcp("[2001:db8:ff::8]:40000", "[2001:db8:1::10]:22"), DROP, "default-deny"),
        ("/0, lowest address", OUT, udp("192.0.2.10:40000", "0.0.0.0:53"), ACCEPT, "sg-a/all4"),
        ("/0, highest address", OUT, udp("192.0.2.10:40000", "255.255.255.255:67"), ACCEPT, "sg-a/all4"),
        ("::/0", OUT, udp("[2001:db8:1::10]:40000", "[2001:db8:ff::1]:53"), ACCEPT, "sg-a/all6"),
        ("::/0, highest address", OUT, udp("[2001:db8:1::10]:40000", "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:53"), ACCEPT, "sg-a/all6"),
        ("0.0.0.0/0 is not IPv6", OUT, tcp("[2001:db8:1::10]:40000", "[2001:db8:ff::1]:80"), DROP, "default-deny"),
    ];
    check(&rs, cases);
}

#[test]
fn direction_selects_rules_and_remote() {
    // §1 and §3 step 5.2: only rules of the packet's direction; the remote
    // is the source of an ingress packet and the destination of an egress
    // packet.
    let rs = doc()
        .group(
            advanced("sg-a")
                .rule(accept_in("from-net").cidr("198.51.100.0/24"))
                .rule(accept_out("to-net").cidr("203.0.113.0/24")),
        )
        .eni("eni-a", ENI_A, &["sg-a"])
        .build();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("ingress from the ingress peer", IN, tcp("198.51.100.1:40000", "192.0.2.10:22"), ACCEPT, "sg-a/from-net"),
        ("egress to the ingress peer", OUT, tcp("192.0.2.10:40000", "198.51.100.1:22"), DROP, "default-deny"),
        ("egress to the egress peer", OUT, tcp("192.0.2.10:40000", "203.0.113.1:22"), ACCEPT, "sg-a/to-net"),
        ("ingress from the egress peer", IN, tcp("203.0.113.1:40000", "192.0.2.10:22"), DROP, "default-deny"),
        ("egress: the peer is the destination", OUT, tcp("203.0.113.1:40000", "198.51.100.1:22"), DROP, "default-deny"),
    ];
    check(&rs, cases);
}

#[test]
fn evaluate_sg_names_group_and_rule() {
    // `evaluate_sg` alone (used to revalidate tracked connections) names the
    // deciding group and rule by index; the trace says the same.
    let rs = doc()
        .group(basic("sg-x"))
        .group(basic("sg-a").rule(accept_in("web").prio(7).tcp(80, 80).cidr("0.0.0.0/0")))
        .eni("eni-a", ENI_A, &["sg-a"])
        .build();
    let pkt = tcp("203.0.113.1:40000", "192.0.2.10:80");
    let web = Reason::Rule {
        id: "sg-a/web".to_owned(),
    };
    assert_eq!(
        evaluate_sg(&rs, 0, IN, &pkt),
        SgOutcome::Matched {
            group: 1,
            rule: 0,
            priority: 7,
            action: Action::Accept,
            decision: Decision {
                verdict: Verdict::Accept,
                reason: web.clone(),
            },
        }
    );
    let ev = eval_at(&rs, "eni-a", IN, &pkt);
    let items: Vec<&TraceItem> = ev.trace.iter().map(|t| &t.item).collect();
    assert_eq!(
        items,
        [&TraceItem::SgRule {
            group: 1,
            rule: 0,
            priority: 7,
            reason: web
        }]
    );
}
