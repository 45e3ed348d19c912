//! Unit tests of validation: one or more per clause of SPEC §2.2–§2.5.
//!
//! Most tests take SPEC §2's example, change one thing, and check the one
//! error that results: its path, its value, and its message or hint.
#![expect(
    clippy::unwrap_used,
    reason = "tests build their fixtures from literals"
)]

use serde_json::{json, Value};

use super::{load, ValidationError};
use crate::ruleset::Ruleset;

mod build;
mod enis;
mod example;
mod format;
mod groups;
mod limits;
mod many;
mod nacl;
mod network;
mod parse;
mod rules;

/// SPEC §2's example, verbatim.
const SPEC_EXAMPLE: &str = r#"{
  "vpcs":        [{"id": "vpc-prod", "cidr": "10.0.0.0/16"}],
  "vswitches":   [{"id": "vsw-web", "vpc_id": "vpc-prod", "cidr": "10.0.1.0/24",
                   "network_acl_id": "acl-web"}],
  "prefix_lists":[{"id": "pl-office", "address_family": "ipv4",
                   "entries": ["203.0.113.0/24", "198.51.100.7/32"]}],
  "security_groups": [{
     "id": "sg-web", "vpc_id": "vpc-prod", "type": "basic",
     "inner_access_policy": "accept",
     "member_ips": ["10.0.1.77"],
     "rules": [
       {"id": "http", "direction": "ingress", "policy": "accept", "priority": 1,
        "ip_protocol": "tcp", "port_range": "80/80", "source_cidr_ip": "0.0.0.0/0"},
       {"direction": "ingress", "policy": "accept", "priority": 1,
        "ip_protocol": "tcp", "port_range": "3306/3306", "source_group_id": "sg-app"},
       {"direction": "egress", "policy": "drop", "priority": 2,
        "ip_protocol": "all", "port_range": "-1/-1", "dest_cidr_ip": "0.0.0.0/0"}
     ]}],
  "network_acls": [{
     "id": "acl-web",
     "ingress": [{"name": "web", "policy": "accept", "protocol": "tcp",
                  "source_cidr_ip": "0.0.0.0/0", "port": "80/80"}],
     "egress":  [{"name": "replies", "policy": "accept", "protocol": "tcp",
                  "destination_cidr_ip": "0.0.0.0/0", "port": "1024/65535"}]}],
  "enis": [{"id": "eni-web1", "interface": "tap-web1", "attach_mode": "tap",
            "vswitch_id": "vsw-web", "ips": ["10.0.1.10", "fd00:1::10"],
            "security_group_ids": ["sg-web"]}],
  "conntrack": {"tcp_established_s": 910},
  "flow_log":  {"capture_window_s": 60}
}"#;

/// SPEC §2's example made whole: its second rule names `sg-app`, which the
/// example leaves out, so the group is added.
fn example() -> Value {
    let mut doc: Value = serde_json::from_str(SPEC_EXAMPLE).unwrap();
    doc["security_groups"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "sg-app", "vpc_id": "vpc-prod", "type": "basic"}));
    doc
}

/// The example with one change, as text.
fn edit(change: impl FnOnce(&mut Value)) -> String {
    let mut doc = example();
    change(&mut doc);
    doc.to_string()
}

/// A rule of the example (`security_groups[0].rules[i]`) with one change.
fn edit_rule(i: usize, change: impl FnOnce(&mut Value)) -> String {
    edit(|d| change(&mut d["security_groups"][0]["rules"][i]))
}

fn loaded(text: &str) -> Ruleset {
    match load(text) {
        Ok(ruleset) => ruleset,
        Err(errors) => panic!("expected the document to validate:\n{errors}"),
    }
}

fn errors(text: &str) -> Vec<ValidationError> {
    match load(text) {
        Ok(_) => panic!("expected errors, the document validated"),
        Err(errors) => errors.0,
    }
}

/// The one error of a document.
fn error(text: &str) -> ValidationError {
    let errors = errors(text);
    assert_eq!(
        errors.len(),
        1,
        "expected one error, got:\n{}",
        lines(&errors)
    );
    errors.into_iter().next().unwrap()
}

fn lines(errors: &[ValidationError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts the error's path, and that its Display contains `text`.
#[track_caller]
fn assert_error(e: &ValidationError, path: &str, text: &str) {
    assert_eq!(e.path, path, "wrong path in: {e}");
    assert!(e.to_string().contains(text), "expected {text:?} in: {e}");
}
