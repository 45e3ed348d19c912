//! VPCs, vSwitches and prefix lists: ids, CIDR blocks, references (§2.5).
use super::*;

#[test]
fn duplicate_vpc_id() {
    let e = error(&edit(|d| {
        d["vpcs"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": "vpc-prod", "cidr": "10.1.0.0/16"}))
    }));
    assert_eq!(
        e.to_string(),
        r#"vpcs[1].id: "vpc-prod" is already the id of vpcs[0]"#
    );
}

#[test]
fn vpc_cidr_must_be_an_ipv4_block() {
    let e = error(&edit(|d| d["vpcs"][0]["cidr"] = json!("10.0.0.0/33")));
    assert_error(
        &e,
        "vpcs[0].cidr",
        "has prefix length /33, longer than IPv4 allows (/32)",
    );
    let e = error(&edit(|d| d["vpcs"][0]["cidr"] = json!("10.0.0.0")));
    assert_error(
        &e,
        "vpcs[0].cidr",
        "is an address, not a CIDR block (did you mean 10.0.0.0/32?)",
    );
    let e = error(&edit(|d| d["vpcs"][0]["cidr"] = json!("ten/8")));
    assert_error(&e, "vpcs[0].cidr", "is not a CIDR block");
    let e = error(&edit(|d| d["vpcs"][0]["cidr"] = json!(" 10.0.0.0/16")));
    assert_error(
        &e,
        "vpcs[0].cidr",
        "has spaces around it (did you mean 10.0.0.0/16?)",
    );
}

#[test]
fn vpc_ipv6_cidr_is_ipv6() {
    let e = error(&edit(|d| d["vpcs"][0]["ipv6_cidr"] = json!("10.0.0.0/8")));
    assert_error(
        &e,
        "vpcs[0].ipv6_cidr",
        "is an IPv4 CIDR block, but this field takes IPv6",
    );
}

#[test]
fn vswitch_inside_its_vpc() {
    // The ENI address is now outside the vSwitch too: a second error.
    let e = errors(&edit(|d| d["vswitches"][0]["cidr"] = json!("10.1.1.0/24"))).remove(0);
    assert_error(
        &e,
        "vswitches[0].cidr",
        "is outside vpc-prod's block 10.0.0.0/16",
    );
}

#[test]
fn vswitch_ipv6_needs_and_fits_the_vpc_ipv6() {
    let e = error(&edit(|d| {
        d["vswitches"][0]["ipv6_cidr"] = json!("fd00:1::/64")
    }));
    assert_error(
        &e,
        "vswitches[0].ipv6_cidr",
        "but vpc-prod has no ipv6_cidr",
    );
    let e = error(&edit(|d| {
        d["vpcs"][0]["ipv6_cidr"] = json!("fd00::/56");
        d["vswitches"][0]["ipv6_cidr"] = json!("fd00:1::/64");
    }));
    assert_error(
        &e,
        "vswitches[0].ipv6_cidr",
        "is outside vpc-prod's block fd00::/56",
    );
    let ruleset = loaded(&edit(|d| {
        d["vpcs"][0]["ipv6_cidr"] = json!("fd00:1::/56");
        d["vswitches"][0]["ipv6_cidr"] = json!("fd00:1::/64");
    }));
    assert_eq!(ruleset.vswitches[0].cidrs.len(), 2);
    assert_eq!(ruleset.vpcs[0].cidrs[1].to_string(), "fd00:1::/56");
}

#[test]
fn vswitches_of_one_vpc_do_not_overlap() {
    let e = error(&edit(|d| {
        d["vswitches"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": "vsw-2", "vpc_id": "vpc-prod", "cidr": "10.0.0.0/23"}))
    }));
    assert_eq!(
        e.to_string(),
        r#"vswitches[1].cidr: "10.0.0.0/23" overlaps vsw-web (10.0.1.0/24) in the same VPC"#
    );
}

#[test]
fn vswitches_of_different_vpcs_may_overlap() {
    loaded(&edit(|d| {
        d["vpcs"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": "vpc-dev", "cidr": "10.0.0.0/16"}));
        d["vswitches"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": "vsw-dev", "vpc_id": "vpc-dev", "cidr": "10.0.1.0/24"}));
    }));
}

#[test]
fn dangling_vpc_reference_suggests_the_nearest() {
    let e = error(&edit(|d| d["vswitches"][0]["vpc_id"] = json!("vpc-prd")));
    assert_eq!(
        e.to_string(),
        r#"vswitches[0].vpc_id: "vpc-prd" is not a VPC in this document (did you mean vpc-prod?)"#
    );
}

#[test]
fn reference_to_the_wrong_kind_says_so() {
    let e = error(&edit(|d| {
        d["security_groups"][0]["vpc_id"] = json!("vsw-web")
    }));
    assert_error(
        &e,
        "security_groups[0].vpc_id",
        r#"is not a VPC in this document ("vsw-web" is a vSwitch)"#,
    );
}

#[test]
fn dangling_acl_reference() {
    let e = error(&edit(|d| {
        d["vswitches"][0]["network_acl_id"] = json!("acl-wbe")
    }));
    assert_error(
        &e,
        "vswitches[0].network_acl_id",
        "is not a network ACL in this document (did you mean acl-web?)",
    );
}

#[test]
fn prefix_list_family_and_entries_agree() {
    let e = error(&edit(|d| {
        d["prefix_lists"][0]["entries"][1] = json!("2001:db8::/32")
    }));
    assert_error(
        &e,
        "prefix_lists[0].entries[1]",
        "is IPv6, but the list's address_family is ipv4",
    );
    let e = error(&edit(|d| {
        d["prefix_lists"][0]["address_family"] = json!("inet6")
    }));
    assert_error(
        &e,
        "prefix_lists[0].address_family",
        "is not one of ipv4, ipv6 (did you mean ipv6?)",
    );
}

#[test]
fn prefix_list_entries_are_blocks_listed_once() {
    let e = error(&edit(|d| {
        d["prefix_lists"][0]["entries"][1] = json!("203.0.113.0/24")
    }));
    assert_error(
        &e,
        "prefix_lists[0].entries[1]",
        "is already listed as entries[0]",
    );
    let e = error(&edit(|d| {
        d["prefix_lists"][0]["entries"][0] = json!("203.0.113.9/24")
    }));
    assert_error(
        &e,
        "prefix_lists[0].entries[0]",
        "has host bits set (did you mean 203.0.113.0/24?)",
    );
    // A bare address is a host prefix.
    let ruleset = loaded(&edit(|d| {
        d["prefix_lists"][0]["entries"][1] = json!("198.51.100.7")
    }));
    assert_eq!(
        ruleset.prefix_lists[0].entries[1].to_string(),
        "198.51.100.7/32"
    );
}

#[test]
fn prefix_list_in_another_vpc() {
    let text = edit(|d| {
        d["vpcs"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": "vpc-dev", "cidr": "10.1.0.0/16"}));
        d["prefix_lists"][0]["vpc_id"] = json!("vpc-dev");
        d["security_groups"][0]["rules"][0]["source_prefix_list_id"] = json!("pl-office");
        d["security_groups"][0]["rules"][0]
            .as_object_mut()
            .unwrap()
            .remove("source_cidr_ip");
    });
    let e = error(&text);
    assert_error(
        &e,
        "security_groups[0].rules[0].source_prefix_list_id",
        "is limited to VPC vpc-dev (its vpc_id), not this group's VPC vpc-prod",
    );
}

#[test]
fn prefix_list_of_the_group_vpc_is_fine() {
    let ruleset = loaded(&edit(|d| {
        d["prefix_lists"][0]["vpc_id"] = json!("vpc-prod");
        d["security_groups"][0]["rules"][0]["source_prefix_list_id"] = json!("pl-office");
        d["security_groups"][0]["rules"][0]
            .as_object_mut()
            .unwrap()
            .remove("source_cidr_ip");
    }));
    assert_eq!(
        ruleset.groups[0].rules[0].remote,
        crate::ruleset::Peer::PrefixList(0)
    );
}
