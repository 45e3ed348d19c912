//! SPEC §2's example, and documents surviving a round trip.
use super::*;
use crate::{
    model::Document,
    ruleset::ConntrackConfig,
    validate::{parse_document, validate},
};

#[test]
fn spec_example_validates() {
    let ruleset = loaded(&example().to_string());
    assert_eq!(ruleset.groups.len(), 2);
    assert_eq!(ruleset.enis[0].interface, "tap-web1");
}

#[test]
fn spec_example_verbatim_lacks_only_sg_app() {
    let e = error(SPEC_EXAMPLE);
    assert_error(
        &e,
        "security_groups[0].rules[1].source_group_id",
        "\"sg-app\" is not a security group in this document",
    );
}

#[test]
fn parse_then_validate_equals_load() {
    let text = example().to_string();
    let doc = parse_document(&text).unwrap();
    assert_eq!(validate(&doc).unwrap(), loaded(&text));
}

#[test]
fn document_round_trips_through_json() {
    let doc = parse_document(&example().to_string()).unwrap();
    let again = parse_document(&serde_json::to_string(&doc).unwrap()).unwrap();
    assert_eq!(doc, again);
}

#[test]
fn defaults_survive_a_round_trip() {
    // Priority, attach_mode and the conntrack fields take defaults.
    let text = edit(|d| {
        d["security_groups"][0]["rules"][0]
            .as_object_mut()
            .unwrap()
            .remove("priority");
        d["enis"][0].as_object_mut().unwrap().remove("attach_mode");
    });
    let doc = parse_document(&text).unwrap();
    assert_eq!(doc.security_groups[0].rules[0].priority, 1);
    assert_eq!(doc.enis[0].attach_mode, "tap");
    let ct = doc.conntrack.as_ref().unwrap();
    assert_eq!(
        (ct.tcp_established_s, ct.tcp_syn_s, ct.on_change.as_str()),
        (910, 120, "revalidate")
    );
    let again = parse_document(&serde_json::to_string(&doc).unwrap()).unwrap();
    assert_eq!(doc, again);
}

#[test]
fn ruleset_round_trips_through_json() {
    let ruleset = loaded(&example().to_string());
    let json = serde_json::to_string(&ruleset).unwrap();
    assert_eq!(serde_json::from_str::<Ruleset>(&json).unwrap(), ruleset);
}

#[test]
fn empty_document_is_valid() {
    let ruleset = loaded("{}");
    assert!(ruleset.enis.is_empty());
    assert_eq!(ruleset.conntrack, ConntrackConfig::default());
}

#[test]
fn model_denies_unknown_fields_with_plain_serde_too() {
    // Code that reads a document without `validate` still cannot lose a typo.
    let text = edit(|d| d["enis"][0]["interfce"] = json!("x"));
    assert!(serde_json::from_str::<Document>(&text).is_err());
}
