//! The `Ruleset` validation builds: names, members, defaults.
use std::net::IpAddr;

use super::*;
use crate::ruleset::{Action, AttachMode, ConntrackConfig, GroupKind, Peer, PortRange};

#[test]
fn rule_names_are_qualified() {
    let ruleset = loaded(&example().to_string());
    let ids: Vec<&str> = ruleset.groups[0]
        .rules
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(ids, ["sg-web/http", "sg-web/ingress/1", "sg-web/egress/2"]);
}

#[test]
fn members_are_local_enis_then_member_ips() {
    let ruleset = loaded(&edit(|d| {
        // A member IP that is also an ENI address is listed once.
        d["security_groups"][0]["member_ips"] = json!(["10.0.1.77", "10.0.1.10", "10.0.1.77"]);
    }));
    let members: Vec<String> = ruleset.groups[0]
        .members
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(members, ["10.0.1.10/32", "fd00:1::10/128", "10.0.1.77/32"]);
    assert!(ruleset.groups[1].members.is_empty());
}

#[test]
fn the_example_in_typed_form() {
    let r = loaded(&example().to_string());
    assert_eq!(r.vpcs[0].cidrs.len(), 1);
    assert_eq!((r.vswitches[0].vpc, r.vswitches[0].acl), (0, Some(0)));
    let web = &r.groups[0];
    assert_eq!(
        (web.kind, web.inner_accept, web.vpc),
        (GroupKind::Basic, true, 0)
    );
    assert_eq!(web.rules[0].dst_ports, PortRange { lo: 80, hi: 80 });
    assert_eq!(web.rules[0].src_ports, PortRange::ANY);
    assert_eq!(
        web.rules[0].remote,
        Peer::Cidr("0.0.0.0/0".parse().unwrap())
    );
    assert_eq!(web.rules[0].local, None);
    assert_eq!(
        (web.rules[2].action, web.rules[2].priority),
        (Action::Drop, 2)
    );
    assert_eq!(web.rules[2].dst_ports, PortRange::ANY);
    let eni = &r.enis[0];
    assert_eq!(
        (eni.mode, eni.vswitch, eni.groups.as_slice()),
        (AttachMode::Tap, 0, &[0][..])
    );
    assert_eq!(
        eni.ips,
        [
            "10.0.1.10".parse::<IpAddr>().unwrap(),
            "fd00:1::10".parse().unwrap()
        ]
    );
    assert_eq!(r.prefix_lists[0].entries.len(), 2);
    assert_eq!(r.eni_acl(0), Some(0));
}

#[test]
fn conntrack_and_flow_log_defaults() {
    let r = loaded(&example().to_string());
    assert_eq!(
        r.conntrack,
        ConntrackConfig {
            tcp_established_s: 910,
            ..ConntrackConfig::default()
        }
    );
    assert_eq!(r.conntrack.max_entries, filter_common::DEFAULT_CT_ENTRIES);
    assert_eq!(r.flow_log.capture_window_s, Some(60));
    let r = loaded(&edit(|d| {
        d["conntrack"] = json!({"on_change": "keep", "tcp_syn_s": 5, "max_entries": 4096});
        d.as_object_mut().unwrap().remove("flow_log");
    }));
    assert_eq!(
        r.conntrack,
        ConntrackConfig {
            revalidate: false,
            tcp_syn_s: 5,
            max_entries: 4096,
            ..ConntrackConfig::default()
        }
    );
    assert_eq!(r.flow_log.capture_window_s, None);
}
