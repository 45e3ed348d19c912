//! Every limit in `limits.rs` is enforced, with a message naming it.
use super::*;
use crate::{
    model::{Document, SecurityGroupRule},
    validate::{limits as l, parse_document, validate},
};

fn example_doc() -> Document {
    parse_document(&example().to_string()).unwrap()
}

fn validation_errors(doc: &Document) -> Vec<ValidationError> {
    validate(doc).unwrap_err().0
}

#[test]
fn more_than_ten_groups_on_an_eni() {
    let text = edit(|d| {
        let groups = d["security_groups"].as_array_mut().unwrap();
        for i in 0..10 {
            groups.push(json!({"id": format!("sg-{i}"), "vpc_id": "vpc-prod", "type": "basic"}));
        }
        d["enis"][0]["security_group_ids"] = json!((0..10)
            .map(|i| format!("sg-{i}"))
            .chain(["sg-web".into()])
            .collect::<Vec<_>>());
    });
    let e = error(&text);
    assert_eq!(
        e.to_string(),
        "enis[0].security_group_ids: has 11 security groups; an ENI joins 1–10"
    );
    assert_eq!(*l::GROUPS_PER_ENI.end(), 10);
}

#[test]
fn rules_per_eni() {
    // Two groups that are fine alone but too many together.
    let mut doc = example_doc();
    let rule: SecurityGroupRule = doc.security_groups[0].rules[0].clone();
    let half = l::MAX_RULES_PER_ENI / 2 + 1;
    for g in 0..2 {
        doc.security_groups[g].rules = (0..half)
            .map(|_| SecurityGroupRule {
                id: None,
                ..rule.clone()
            })
            .collect();
    }
    doc.security_groups[0].rules[0].id = Some("http".into());
    doc.enis[0].security_group_ids.push("sg-app".into());
    let errors = validation_errors(&doc);
    assert_eq!(errors.len(), 1, "{}", lines(&errors));
    assert_eq!(
        errors[0].to_string(),
        format!(
            "enis[0].security_group_ids: have {} rules together; an ENI has at most {}",
            2 * half,
            l::MAX_RULES_PER_ENI
        )
    );
}

#[test]
fn prefix_list_entries() {
    let mut doc = example_doc();
    doc.prefix_lists[0].entries = (0..=l::MAX_PREFIX_LIST_ENTRIES)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    let errors = validation_errors(&doc);
    assert_eq!(errors.len(), 1, "{}", lines(&errors));
    assert_eq!(
        errors[0].to_string(),
        "prefix_lists[0].entries: has 201 entries; a prefix list holds at most 200"
    );
}

#[test]
fn nacl_entries_per_direction() {
    let mut doc = example_doc();
    let entry = doc.network_acls[0].ingress[0].clone();
    doc.network_acls[0].ingress = (0..=l::MAX_NACL_ENTRIES)
        .map(|i| crate::model::NetworkAclEntry {
            name: format!("e{i}"),
            ..entry.clone()
        })
        .collect();
    let errors = validation_errors(&doc);
    assert_eq!(errors.len(), 1, "{}", lines(&errors));
    assert_eq!(
        errors[0].to_string(),
        "network_acls[0].ingress: has 1001 entries; a network ACL holds at most 1000 per direction"
    );
}

#[test]
fn enis_per_host() {
    let mut doc = example_doc();
    let eni = doc.enis[0].clone();
    doc.vswitches[0].cidr = "10.0.0.0/16".into();
    doc.enis = (0..=l::MAX_ENIS)
        .map(|i| crate::model::Eni {
            id: format!("eni-{i}"),
            interface: format!("tap{i}"),
            ips: vec![format!("10.0.{}.{}", 2 + i / 200, 1 + i % 200)],
            ..eni.clone()
        })
        .collect();
    let errors = validation_errors(&doc);
    assert_eq!(errors.len(), 1, "{}", lines(&errors));
    assert_eq!(
        errors[0].to_string(),
        format!(
            "enis: has {} ENIs; a host guards at most {}",
            l::MAX_ENIS + 1,
            l::MAX_ENIS
        )
    );
    assert_eq!(l::MAX_ENIS * 2, filter_common::MAX_ENIS as usize);
}

#[test]
fn capture_window_is_1_to_600() {
    for bad in [0, 601] {
        let e = error(&edit(|d| d["flow_log"]["capture_window_s"] = json!(bad)));
        assert_eq!(
            e.to_string(),
            format!("flow_log.capture_window_s: {bad} is outside 1–600 seconds")
        );
    }
    assert_eq!(
        loaded(&edit(|d| d["flow_log"]["capture_window_s"] = json!(1)))
            .flow_log
            .capture_window_s,
        Some(1)
    );
}

#[test]
fn conntrack_settings() {
    let e = error(&edit(|d| d["conntrack"]["udp_s"] = json!(0)));
    assert_eq!(
        e.to_string(),
        "conntrack.udp_s: 0 is outside 1–604800 seconds"
    );
    let e = error(&edit(|d| d["conntrack"]["on_change"] = json!("kep")));
    assert_error(
        &e,
        "conntrack.on_change",
        "is not one of revalidate, keep (did you mean keep?)",
    );
    let e = error(&edit(|d| d["conntrack"]["max_entries"] = json!(10)));
    assert_error(
        &e,
        "conntrack.max_entries",
        "10 is outside 1024–16777216 entries",
    );
}

#[test]
fn id_length() {
    let e = error(&edit(|d| {
        d["network_acls"][0]["ingress"][0]["name"] = json!("n".repeat(l::MAX_ID_LEN + 1))
    }));
    assert_error(
        &e,
        "network_acls[0].ingress[0].name",
        "is longer than 128 characters",
    );
}
