//! SPEC §2.3: network ACL entries.
use super::*;
use crate::ruleset::{Action, PortRange, Protocol};

#[test]
fn entries_keep_their_order() {
    let ruleset = loaded(&edit(|d| {
        d["network_acls"][0]["ingress"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "no-ssh", "policy": "drop", "protocol": "all", "source_cidr_ip": "::/0"}));
    }));
    let acl = &ruleset.acls[0];
    assert_eq!(
        acl.ingress
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        ["web", "no-ssh"]
    );
    assert_eq!(
        (acl.ingress[1].action, acl.ingress[1].protocol),
        (Action::Drop, Protocol::All)
    );
    assert_eq!(acl.ingress[1].dst_ports, PortRange::ANY);
    assert_eq!(
        acl.egress[0].dst_ports,
        PortRange {
            lo: 1024,
            hi: 65535
        }
    );
    assert_eq!(ruleset.vswitches[0].acl, Some(0));
}

#[test]
fn entry_names_are_unique_within_a_list() {
    let e = error(&edit(|d| {
        d["network_acls"][0]["ingress"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "web", "policy": "drop", "protocol": "all", "source_cidr_ip": "0.0.0.0/0"}));
    }));
    assert_eq!(
        e.to_string(),
        r#"network_acls[0].ingress[1].name: "web" is already the name of network_acls[0].ingress[0]"#
    );
    // One name in both directions is fine.
    loaded(&edit(|d| {
        d["network_acls"][0]["egress"][0]["name"] = json!("web")
    }));
}

#[test]
fn peer_field_follows_the_direction() {
    let e = error(&edit(|d| {
        let entry = d["network_acls"][0]["egress"][0].as_object_mut().unwrap();
        let cidr = entry.remove("destination_cidr_ip").unwrap();
        entry.insert("source_cidr_ip".into(), cidr);
    }));
    assert_error(
        &e,
        "network_acls[0].egress[0].source_cidr_ip",
        "is not allowed in egress entries, whose peer is destination_cidr_ip (did you mean destination_cidr_ip?)",
    );
    let e = error(&edit(|d| {
        d["network_acls"][0]["ingress"][0]
            .as_object_mut()
            .unwrap()
            .remove("source_cidr_ip");
    }));
    assert_error(&e, "network_acls[0].ingress[0]", "has no source_cidr_ip");
}

#[test]
fn ports_follow_the_protocol() {
    let e = error(&edit(|d| {
        d["network_acls"][0]["ingress"][0]["port"] = json!("90/80")
    }));
    assert_error(
        &e,
        "network_acls[0].ingress[0].port",
        "is reversed (did you mean 80/90?)",
    );
    let e = error(&edit(|d| {
        d["network_acls"][0]["ingress"][0]["protocol"] = json!("icmp")
    }));
    assert_error(
        &e,
        "network_acls[0].ingress[0].port",
        "must be \"-1/-1\": icmp has no ports",
    );
}

#[test]
fn icmp_family_must_match_the_cidr() {
    let e = error(&edit(|d| {
        d["network_acls"][0]["ingress"][0]["protocol"] = json!("icmpv6");
        d["network_acls"][0]["ingress"][0]["port"] = json!("-1/-1");
    }));
    assert_error(
        &e,
        "network_acls[0].ingress[0].source_cidr_ip",
        "is IPv4, but icmpv6 matches only IPv6",
    );
}

#[test]
fn entry_fields_are_checked() {
    let e = error(&edit(|d| {
        d["network_acls"][0]["egress"][0]["policy"] = json!("deny")
    }));
    assert_error(
        &e,
        "network_acls[0].egress[0].policy",
        "(did you mean drop?)",
    );
    let e = error(&edit(|d| {
        d["network_acls"][0]["egress"][0]["destination_cidr_ip"] = json!("0.0.0.1/0")
    }));
    assert_error(
        &e,
        "network_acls[0].egress[0].destination_cidr_ip",
        "has host bits set (did you mean 0.0.0.0/0?)",
    );
    let e = error(&edit(|d| {
        d["network_acls"][0]["egress"][0]["name"] = json!("the replies")
    }));
    assert_error(
        &e,
        "network_acls[0].egress[0].name",
        "(did you mean the-replies?)",
    );
}

#[test]
fn entries_may_carry_a_description() {
    loaded(&edit(|d| {
        d["network_acls"][0]["egress"][0]["description"] = json!("return traffic")
    }));
}

#[test]
fn duplicate_acl_id() {
    let e = error(&edit(|d| {
        d["network_acls"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": "acl-web"}))
    }));
    assert_error(
        &e,
        "network_acls[1].id",
        "is already the id of network_acls[0]",
    );
}
