//! SPEC §2.4: ENIs, their addresses, groups and interfaces.
use super::*;
use crate::{
    ruleset::AttachMode,
    validate::{pending_notices, Environment, HostInterfaces},
};

/// A host with exactly these interfaces.
struct Host(&'static [&'static str]);

impl Environment for Host {
    fn interface_exists(&self, name: &str) -> bool {
        self.0.contains(&name)
    }
}

/// A second ENI in the example's vSwitch.
fn second_eni() -> Value {
    json!({"id": "eni-web2", "interface": "tap-web2", "vswitch_id": "vsw-web",
           "ips": ["10.0.1.11"], "security_group_ids": ["sg-web"]})
}

fn with_second_eni(change: impl FnOnce(&mut Value)) -> String {
    edit(|d| {
        let mut eni = second_eni();
        change(&mut eni);
        d["enis"].as_array_mut().unwrap().push(eni);
    })
}

#[test]
fn attach_mode_defaults_to_tap() {
    let ruleset = loaded(&with_second_eni(|_| {}));
    assert_eq!(ruleset.enis[1].mode, AttachMode::Tap);
    let ruleset = loaded(&with_second_eni(|e| e["attach_mode"] = json!("nic")));
    assert_eq!(ruleset.enis[1].mode, AttachMode::Nic);
    let e = error(&with_second_eni(|e| e["attach_mode"] = json!("nci")));
    assert_error(
        &e,
        "enis[1].attach_mode",
        "is not one of tap, nic (did you mean nic?)",
    );
}

#[test]
fn duplicate_eni_id_and_interface() {
    let errors = errors(&with_second_eni(|e| {
        e["id"] = json!("eni-web1");
        e["interface"] = json!("tap-web1");
    }));
    assert_eq!(errors.len(), 2, "{}", lines(&errors));
    assert_error(&errors[0], "enis[1].id", "is already the id of enis[0]");
    assert_error(
        &errors[1],
        "enis[1].interface",
        "is already the interface of enis[0]",
    );
}

#[test]
fn a_missing_interface_is_a_notice_not_an_error() {
    // SPEC §2.4/§2.5: the ENI is pending, the document valid.
    let ruleset = loaded(&with_second_eni(|_| {}));
    let notices = pending_notices(&ruleset, &Host(&["tap-web1"]));
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].starts_with("eni-web2: interface tap-web2 does not exist yet"),
        "{notices:?}"
    );
    assert!(pending_notices(&ruleset, &Host(&["tap-web1", "tap-web2"])).is_empty());
}

#[test]
fn interface_names_are_linux_names() {
    let e = error(&with_second_eni(|e| e["interface"] = json!("../../etc")));
    assert_error(
        &e,
        "enis[1].interface",
        "is not a valid Linux interface name",
    );
    for name in ["..", ".", "/etc", "tap\u{0}x", "tap\u{7f}", "a b"] {
        let e = error(&with_second_eni(|e| e["interface"] = json!(name)));
        assert_error(
            &e,
            "enis[1].interface",
            "is not a valid Linux interface name",
        );
    }
    let e = error(&with_second_eni(|e| {
        e["interface"] = json!("a-very-long-interface")
    }));
    assert_error(&e, "enis[1].interface", "is longer than 15 bytes");
}

#[test]
fn host_interfaces_are_looked_up_by_name_in_the_kernel() {
    assert!(!HostInterfaces.interface_exists("no-such-if0"));
    assert!(!HostInterfaces.interface_exists(".."));
    assert!(!HostInterfaces.interface_exists(""));
    if std::path::Path::new("/sys/class/net/lo").exists() {
        assert!(HostInterfaces.interface_exists("lo"));
    }
}

#[test]
fn ips_are_inside_the_vswitch() {
    let e = error(&with_second_eni(|e| e["ips"] = json!(["10.0.2.11"])));
    assert_eq!(
        e.to_string(),
        r#"enis[1].ips[0]: "10.0.2.11" is outside the vSwitch vsw-web (10.0.1.0/24)"#
    );
}

#[test]
fn ipv6_ips_are_checked_when_the_vswitch_has_an_ipv6_block() {
    // SPEC §2's example: an IPv6 address on a vSwitch with no IPv6 block.
    loaded(&example().to_string());
    let e = error(&edit(|d| {
        d["vpcs"][0]["ipv6_cidr"] = json!("fd00::/56");
        d["vswitches"][0]["ipv6_cidr"] = json!("fd00:0:0:2::/64");
    }));
    assert_error(
        &e,
        "enis[0].ips[1]",
        "is outside the vSwitch vsw-web (fd00:0:0:2::/64)",
    );
}

#[test]
fn ips_are_unique_across_enis() {
    let e = error(&with_second_eni(|e| e["ips"] = json!(["10.0.1.10"])));
    assert_eq!(
        e.to_string(),
        r#"enis[1].ips[0]: "10.0.1.10" is already an address of enis[0].ips[0]"#
    );
    let e = error(&with_second_eni(|e| {
        e["ips"] = json!(["10.0.1.11", "10.0.1.11"])
    }));
    assert_error(
        &e,
        "enis[1].ips[1]",
        "is already an address of enis[1].ips[0]",
    );
}

#[test]
fn ips_are_addresses_and_at_least_one() {
    let e = error(&with_second_eni(|e| e["ips"] = json!(["10.0.1.300"])));
    assert_error(&e, "enis[1].ips[0]", "is not an IP address");
    let e = error(&with_second_eni(|e| e["ips"] = json!([])));
    assert_error(
        &e,
        "enis[1].ips",
        "is empty: an ENI has at least one address",
    );
}

#[test]
fn one_to_ten_groups() {
    let e = error(&with_second_eni(|e| e["security_group_ids"] = json!([])));
    assert_eq!(
        e.to_string(),
        "enis[1].security_group_ids: has 0 security groups; an ENI joins 1–10"
    );
    let e = error(&with_second_eni(|e| {
        e["security_group_ids"] = json!(["sg-web", "sg-web"])
    }));
    assert_error(&e, "enis[1].security_group_ids[1]", "is listed twice");
}

#[test]
fn groups_are_all_of_one_type() {
    let e = error(&edit(|d| {
        d["security_groups"][1]["type"] = json!("advanced");
        d["enis"][0]["security_group_ids"] = json!(["sg-web", "sg-app"]);
    }));
    assert_eq!(
        e.to_string(),
        "enis[0].security_group_ids: mixes basic (sg-web) and advanced (sg-app) groups; an ENI's groups are all of one type"
    );
}

#[test]
fn groups_are_in_the_eni_vpc() {
    let e = error(&edit(|d| {
        d["vpcs"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": "vpc-dev", "cidr": "10.1.0.0/16"}));
        d["security_groups"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": "sg-dev", "vpc_id": "vpc-dev", "type": "basic"}));
        d["enis"][0]["security_group_ids"] = json!(["sg-web", "sg-dev"]);
    }));
    assert_eq!(
        e.to_string(),
        r#"enis[0].security_group_ids[1]: "sg-dev" is in VPC vpc-dev, but this ENI's vSwitch is in vpc-prod"#
    );
}

#[test]
fn dangling_eni_references() {
    let errors = errors(&with_second_eni(|e| {
        e["vswitch_id"] = json!("vsw-wb");
        e["security_group_ids"] = json!(["sg-wb"]);
    }));
    assert_eq!(errors.len(), 2, "{}", lines(&errors));
    assert_error(&errors[0], "enis[1].vswitch_id", "(did you mean vsw-web?)");
    assert_error(
        &errors[1],
        "enis[1].security_group_ids[0]",
        "(did you mean sg-web?)",
    );
}
