//! SPEC §2.1: security groups, and rule ids within a group.
use super::*;

#[test]
fn duplicate_group_id() {
    let e = error(&edit(|d| {
        d["security_groups"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": "sg-web", "vpc_id": "vpc-prod", "type": "basic"}));
    }));
    assert_eq!(
        e.to_string(),
        r#"security_groups[2].id: "sg-web" is already the id of security_groups[0]"#
    );
}

#[test]
fn group_type_is_basic_or_advanced() {
    let e = error(&edit(|d| {
        d["security_groups"][1]["type"] = json!("enterprise")
    }));
    assert_error(
        &e,
        "security_groups[1].type",
        "is not one of basic, advanced (did you mean advanced?)",
    );
}

#[test]
fn advanced_groups_are_always_isolated() {
    let e = error(&edit(|d| {
        d["security_groups"][1]["type"] = json!("advanced");
        d["security_groups"][1]["inner_access_policy"] = json!("accept");
    }));
    assert_error(
        &e,
        "security_groups[1].inner_access_policy",
        "is not allowed: advanced groups are always isolated",
    );
}

#[test]
fn inner_access_policy_defaults_by_type() {
    let ruleset = loaded(&edit(|d| {
        d["security_groups"][0]
            .as_object_mut()
            .unwrap()
            .remove("inner_access_policy");
        d["security_groups"][1]["type"] = json!("advanced");
    }));
    assert!(
        ruleset.groups[0].inner_accept,
        "basic groups accept their members by default"
    );
    assert!(!ruleset.groups[1].inner_accept, "advanced groups never do");
    let ruleset = loaded(&edit(|d| {
        d["security_groups"][0]["inner_access_policy"] = json!("drop")
    }));
    assert!(!ruleset.groups[0].inner_accept);
}

#[test]
fn member_ips_are_addresses() {
    let e = error(&edit(|d| {
        d["security_groups"][0]["member_ips"][0] = json!("10.0.1.77/32")
    }));
    assert_eq!(
        e.to_string(),
        r#"security_groups[0].member_ips[0]: "10.0.1.77/32" is not an IP address (did you mean 10.0.1.77?)"#
    );
}

#[test]
fn rule_ids_are_unique_within_a_group() {
    let e = error(&edit_rule(2, |r| r["id"] = json!("http")));
    assert_eq!(
        e.to_string(),
        r#"security_groups[0].rules[2].id: "http" is already the id of security_groups[0].rules[0]"#
    );
    // The same id in two groups is fine: rule names are qualified.
    let ruleset = loaded(&edit(|d| {
        d["security_groups"][1]["rules"] = json!([{"id": "http", "direction": "ingress", "policy": "accept",
            "ip_protocol": "tcp", "port_range": "80/80", "source_cidr_ip": "0.0.0.0/0"}]);
    }));
    assert_eq!(ruleset.groups[1].rules[0].id, "sg-app/http");
}

#[test]
fn rule_id_may_not_take_a_default_name() {
    // rules[1] has no id, so its name is sg-web/ingress/1.
    let e = error(&edit_rule(0, |r| r["id"] = json!("ingress/1")));
    assert_eq!(
        e.to_string(),
        r#"security_groups[0].rules[0].id: "ingress/1" makes the rule name sg-web/ingress/1, the default name of security_groups[0].rules[1] (pick another id)"#
    );
}

#[test]
fn ids_have_no_whitespace() {
    let e = error(&edit_rule(0, |r| r["id"] = json!("allow web")));
    assert_error(&e, "security_groups[0].rules[0].id", "contains whitespace or control characters, which flow logs cannot print (did you mean allow-web?)");
    let e = error(&edit(|d| {
        d["prefix_lists"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": "", "address_family": "ipv6"}));
    }));
    assert_error(&e, "prefix_lists[1].id", "\"\" is empty");
}
