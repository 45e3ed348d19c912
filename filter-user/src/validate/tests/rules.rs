//! SPEC §2.2: security-group rules.
use super::*;
use crate::ruleset::{Direction, Peer, PortRange, Protocol};

#[test]
fn direction_policy_and_protocol_are_keywords() {
    let e = error(&edit_rule(0, |r| r["direction"] = json!("inbound")));
    assert_eq!(
        e.to_string(),
        r#"security_groups[0].rules[0].direction: "inbound" is not one of ingress, egress (did you mean ingress?)"#
    );
    let e = error(&edit_rule(0, |r| r["policy"] = json!("allow")));
    assert_error(
        &e,
        "security_groups[0].rules[0].policy",
        "(did you mean accept?)",
    );
    let e = error(&edit_rule(0, |r| r["ip_protocol"] = json!("TCP")));
    assert_error(
        &e,
        "security_groups[0].rules[0].ip_protocol",
        "(did you mean tcp?)",
    );
}

#[test]
fn priority_is_1_to_100() {
    for bad in [0, 101, -3] {
        let e = error(&edit_rule(0, |r| r["priority"] = json!(bad)));
        assert_eq!(
            e.to_string(),
            format!(
                "security_groups[0].rules[0].priority: {bad} is outside 1–100 (1 is the strongest)"
            )
        );
    }
    let ruleset = loaded(&edit_rule(0, |r| r["priority"] = json!(100)));
    assert_eq!(ruleset.groups[0].rules[0].priority, 100);
}

#[test]
fn priority_defaults_to_1() {
    let ruleset = loaded(&edit_rule(2, |r| {
        r.as_object_mut().unwrap().remove("priority");
    }));
    assert_eq!(ruleset.groups[0].rules[2].priority, 1);
}

#[test]
fn reversed_port_range_hints_the_right_order() {
    let e = error(&edit_rule(0, |r| r["port_range"] = json!("8080/80")));
    assert_eq!(
        e.to_string(),
        r#"security_groups[0].rules[0].port_range: "8080/80" is reversed (did you mean 80/8080?)"#
    );
}

#[test]
fn port_range_format() {
    let e = error(&edit_rule(0, |r| r["port_range"] = json!("80")));
    assert_error(
        &e,
        "security_groups[0].rules[0].port_range",
        "(did you mean 80/80?)",
    );
    let e = error(&edit_rule(0, |r| r["port_range"] = json!("80-90")));
    assert_error(
        &e,
        "security_groups[0].rules[0].port_range",
        "the separator is \"/\" (did you mean 80/90?)",
    );
    let e = error(&edit_rule(0, |r| r["port_range"] = json!("http")));
    assert_error(
        &e,
        "security_groups[0].rules[0].port_range",
        "is not a port range",
    );
}

#[test]
fn ports_are_1_to_65535() {
    let e = error(&edit_rule(0, |r| r["port_range"] = json!("0/80")));
    assert_error(
        &e,
        "security_groups[0].rules[0].port_range",
        "has port 0, outside 1–65535",
    );
    let e = error(&edit_rule(0, |r| r["port_range"] = json!("1/65536")));
    assert_error(
        &e,
        "security_groups[0].rules[0].port_range",
        "has port 65536, outside 1–65535",
    );
    let ruleset = loaded(&edit_rule(0, |r| r["port_range"] = json!("1/65535")));
    assert_eq!(
        ruleset.groups[0].rules[0].dst_ports,
        PortRange { lo: 1, hi: 65535 }
    );
}

#[test]
fn tcp_and_udp_need_a_port_range() {
    let e = error(&edit_rule(0, |r| r["port_range"] = json!("-1/-1")));
    assert_error(
        &e,
        "security_groups[0].rules[0].port_range",
        "means no ports, but tcp has ports (did you mean 1/65535?)",
    );
    let e = error(&edit_rule(0, |r| {
        r.as_object_mut().unwrap().remove("port_range");
    }));
    assert_error(
        &e,
        "security_groups[0].rules[0].port_range",
        "is missing; tcp needs a port range",
    );
}

#[test]
fn portless_protocols_take_minus_one() {
    for protocol in ["icmp", "gre", "all"] {
        let e = error(&edit_rule(0, |r| r["ip_protocol"] = json!(protocol)));
        assert_error(
            &e,
            "security_groups[0].rules[0].port_range",
            &format!("must be \"-1/-1\": {protocol} has no ports"),
        );
    }
    let ruleset = loaded(&edit_rule(0, |r| {
        r["ip_protocol"] = json!("icmp");
        r.as_object_mut().unwrap().remove("port_range");
    }));
    assert_eq!(ruleset.groups[0].rules[0].dst_ports, PortRange::ANY);
}

#[test]
fn source_port_range_is_for_tcp_and_udp() {
    let ruleset = loaded(&edit_rule(0, |r| {
        r["source_port_range"] = json!("1024/65535")
    }));
    assert_eq!(
        ruleset.groups[0].rules[0].src_ports,
        PortRange {
            lo: 1024,
            hi: 65535
        }
    );
    let e = error(&edit_rule(2, |r| {
        r["source_port_range"] = json!("1024/65535")
    }));
    assert_error(
        &e,
        "security_groups[0].rules[2].source_port_range",
        "applies only to tcp and udp, not all",
    );
    // "-1/-1" means any source port, for any protocol (as in Alibaba).
    let ruleset = loaded(&edit_rule(2, |r| r["source_port_range"] = json!("-1/-1")));
    assert_eq!(ruleset.groups[0].rules[2].src_ports, PortRange::ANY);
    let e = error(&edit_rule(0, |r| {
        r["source_port_range"] = json!("2000/1024")
    }));
    assert_error(
        &e,
        "security_groups[0].rules[0].source_port_range",
        "is reversed (did you mean 1024/2000?)",
    );
}

#[test]
fn exactly_one_peer() {
    let e = error(&edit_rule(0, |r| {
        r.as_object_mut().unwrap().remove("source_cidr_ip");
    }));
    assert_error(
        &e,
        "security_groups[0].rules[0]",
        "has no peer: an ingress rule needs one of source_cidr_ip",
    );
    let e = error(&edit_rule(0, |r| {
        r["source_prefix_list_id"] = json!("pl-office")
    }));
    assert_eq!(
        e.to_string(),
        "security_groups[0].rules[0].source_prefix_list_id: is a second peer: a rule has exactly one, and source_cidr_ip is given"
    );
}

#[test]
fn peer_fields_follow_the_direction() {
    let e = error(&edit_rule(2, |r| {
        r.as_object_mut().unwrap().remove("dest_cidr_ip");
        r["source_group_id"] = json!("sg-app");
    }));
    assert_error(
        &e,
        "security_groups[0].rules[2].source_group_id",
        "is not allowed in an egress rule, whose peer is the destination (dest_*) (did you mean dest_group_id?)",
    );
    // In an ingress rule dest_cidr_ip is the local address, not the peer.
    let e = error(&edit_rule(0, |r| {
        let cidr = r.as_object_mut().unwrap().remove("source_cidr_ip").unwrap();
        r["dest_cidr_ip"] = cidr;
    }));
    assert_error(
        &e,
        "security_groups[0].rules[0]",
        "(dest_cidr_ip is the local address in an ingress rule; did you mean source_cidr_ip?)",
    );
}

#[test]
fn local_address_per_direction() {
    let ruleset = loaded(&edit(|d| {
        d["security_groups"][0]["rules"][0]["dest_cidr_ip"] = json!("10.0.1.10");
        d["security_groups"][0]["rules"][2]["source_cidr_ip"] = json!("10.0.1.0/24");
    }));
    let rules = &ruleset.groups[0].rules;
    assert_eq!(rules[0].local.unwrap().to_string(), "10.0.1.10/32");
    assert_eq!(rules[2].local.unwrap().to_string(), "10.0.1.0/24");
    let e = error(&edit_rule(0, |r| {
        r["dest_cidr_ip"] = json!("10.0.1.10");
        r["ipv6_dest_cidr_ip"] = json!("fd00:1::10");
    }));
    assert_error(
        &e,
        "security_groups[0].rules[0].ipv6_dest_cidr_ip",
        "is a second local address",
    );
}

#[test]
fn cidr_fields_have_a_family() {
    let e = error(&edit_rule(0, |r| r["source_cidr_ip"] = json!("::/0")));
    assert_eq!(
        e.to_string(),
        r#"security_groups[0].rules[0].source_cidr_ip: "::/0" is an IPv6 CIDR block, but this field takes IPv4 (put it in ipv6_source_cidr_ip)"#
    );
    let e = error(&edit_rule(0, |r| {
        r.as_object_mut().unwrap().remove("source_cidr_ip");
        r["ipv6_source_cidr_ip"] = json!("0.0.0.0/0");
    }));
    assert_error(
        &e,
        "security_groups[0].rules[0].ipv6_source_cidr_ip",
        "(put it in source_cidr_ip)",
    );
    let ruleset = loaded(&edit_rule(0, |r| {
        r.as_object_mut().unwrap().remove("source_cidr_ip");
        r["ipv6_source_cidr_ip"] = json!("2001:db8::/32");
    }));
    assert_eq!(
        ruleset.groups[0].rules[0].remote,
        Peer::Cidr("2001:db8::/32".parse().unwrap())
    );
}

#[test]
fn a_bare_address_is_a_host_prefix() {
    let ruleset = loaded(&edit_rule(0, |r| r["source_cidr_ip"] = json!("192.0.2.7")));
    assert_eq!(
        ruleset.groups[0].rules[0].remote,
        Peer::Cidr("192.0.2.7/32".parse().unwrap())
    );
}

#[test]
fn icmp_families_must_match_the_peer() {
    let e = error(&edit_rule(0, |r| {
        r["ip_protocol"] = json!("icmp");
        r["port_range"] = json!("-1/-1");
        r.as_object_mut().unwrap().remove("source_cidr_ip");
        r["ipv6_source_cidr_ip"] = json!("::/0");
    }));
    assert_error(
        &e,
        "security_groups[0].rules[0].ipv6_source_cidr_ip",
        "is IPv6, but icmp matches only IPv4: the rule could never match (use icmpv6 for IPv6)",
    );
    let e = error(&edit_rule(0, |r| {
        r["ip_protocol"] = json!("icmpv6");
        r["port_range"] = json!("-1/-1");
        r.as_object_mut().unwrap().remove("source_cidr_ip");
        r["source_prefix_list_id"] = json!("pl-office");
    }));
    assert_error(
        &e,
        "security_groups[0].rules[0].source_prefix_list_id",
        "is IPv4, but icmpv6 matches only IPv6",
    );
}

#[test]
fn local_and_peer_families_must_agree() {
    let e = error(&edit_rule(0, |r| {
        r["ipv6_dest_cidr_ip"] = json!("fd00:1::10")
    }));
    assert_error(
        &e,
        "security_groups[0].rules[0].ipv6_dest_cidr_ip",
        "is IPv6, but the peer (source_cidr_ip) is IPv4: the rule could never match",
    );
}

#[test]
fn group_peer_resolves_to_its_index() {
    let ruleset = loaded(&example().to_string());
    let rule = &ruleset.groups[0].rules[1];
    assert_eq!(rule.remote, Peer::Group(1));
    assert_eq!(
        (rule.direction, rule.protocol),
        (Direction::Ingress, Protocol::Tcp)
    );
}

#[test]
fn dangling_group_peer_suggests_the_nearest() {
    let e = error(&edit_rule(1, |r| r["source_group_id"] = json!("sg-ap")));
    assert_eq!(
        e.to_string(),
        r#"security_groups[0].rules[1].source_group_id: "sg-ap" is not a security group in this document (did you mean sg-app?)"#
    );
    let e = error(&edit_rule(1, |r| {
        r.as_object_mut().unwrap().remove("source_group_id");
        r["source_prefix_list_id"] = json!("pl-ofice");
    }));
    assert_error(
        &e,
        "security_groups[0].rules[1].source_prefix_list_id",
        "(did you mean pl-office?)",
    );
}

#[test]
fn group_peer_in_another_vpc() {
    let e = error(&edit(|d| {
        d["vpcs"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": "vpc-dev", "cidr": "10.1.0.0/16"}));
        d["security_groups"][1]["vpc_id"] = json!("vpc-dev");
    }));
    assert_error(
        &e,
        "security_groups[0].rules[1].source_group_id",
        "is in VPC vpc-dev, not in this group's VPC vpc-prod",
    );
}

#[test]
fn advanced_groups_cannot_name_a_group() {
    let e = error(&edit(|d| {
        d["security_groups"][0]["type"] = json!("advanced");
        d["security_groups"][0]
            .as_object_mut()
            .unwrap()
            .remove("inner_access_policy");
    }));
    assert_error(
        &e,
        "security_groups[0].rules[1].source_group_id",
        "advanced groups cannot name a group as peer",
    );
}

#[test]
fn description_is_kept_and_bounded() {
    let ruleset = loaded(&edit_rule(0, |r| {
        r["description"] = json!("web from anywhere")
    }));
    assert_eq!(ruleset.groups[0].rules[0].description, "web from anywhere");
    let e = error(&edit_rule(0, |r| r["description"] = json!("x".repeat(513))));
    assert_error(
        &e,
        "security_groups[0].rules[0].description",
        "is longer than 512 characters",
    );
}
