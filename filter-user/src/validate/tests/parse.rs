//! SPEC §2.5 structural errors: malformed JSON, unknown fields, wrong types.
use super::*;
use crate::validate::parse_document;

#[test]
fn malformed_json_gives_line_and_column() {
    let e = error("{\n  \"vpcs\": [\n    {\"id\": \"vpc-a\",,}\n  ]\n}");
    assert_eq!(e.path, "");
    assert!(e.message.starts_with("malformed JSON: "), "{e}");
    assert!(e.message.contains("line 3 column"), "{e}");
}

#[test]
fn empty_text_is_malformed() {
    assert!(error("").message.contains("malformed JSON"));
}

#[test]
fn document_must_be_an_object() {
    let e = error("[1, 2]");
    assert_eq!(
        e.to_string(),
        "[1,2] is not a JSON object; a rule-set document is one"
    );
}

#[test]
fn unknown_section_is_named_with_a_hint() {
    let e = error(&edit(|d| d["vswitch"] = json!([])));
    assert_eq!(
        e.to_string(),
        "vswitch: unknown field (did you mean vswitches?)"
    );
}

#[test]
fn unknown_nested_field_has_its_path() {
    let e = error(&edit_rule(2, |r| r["des_cidr_ip"] = json!("10.9.0.0/16")));
    assert_eq!(
        e.to_string(),
        "security_groups[0].rules[2].des_cidr_ip: unknown field (did you mean dest_cidr_ip?)"
    );
}

#[test]
fn unknown_field_far_from_any_lists_the_known_ones() {
    let e = error(&edit(|d| d["vpcs"][0]["colour"] = json!("blue")));
    assert_error(&e, "vpcs[0].colour", "known fields: id, cidr, ipv6_cidr");
}

#[test]
fn unknown_fields_do_not_hide_other_mistakes() {
    let text = edit(|d| {
        d["enis"][0]["sg_ids"] = json!(["sg-web"]);
        d["security_groups"][0]["rules"][1]["priority"] = json!(0);
    });
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{}", lines(&errors));
    assert_error(
        &errors[0],
        "security_groups[0].rules[1].priority",
        "0 is outside 1–100",
    );
    assert_error(&errors[1], "enis[0].sg_ids", "unknown field");
}

#[test]
fn repeated_key_is_an_error() {
    let text = r#"{"vpcs": [{"id": "vpc-a", "cidr": "10.0.0.0/16", "id": "vpc-b"}]}"#;
    let e = error(text);
    assert_eq!(
        e.to_string(),
        r#"vpcs[0].id: "vpc-b" repeats a key already given in this object"#
    );
}

#[test]
fn wrong_type_names_path_and_value() {
    let e = error(&edit_rule(0, |r| r["priority"] = json!("1")));
    assert_eq!(
        e.to_string(),
        r#"security_groups[0].rules[0].priority: "1" is not an integer"#
    );
    let e = error(&edit(|d| d["security_groups"][0]["rules"] = json!({})));
    assert_eq!(
        e.to_string(),
        "security_groups[0].rules: {} is not an array"
    );
    let e = error(&edit(|d| d["vpcs"] = json!({"id": "vpc-prod"})));
    assert_error(&e, "vpcs", "is not an array");
}

#[test]
fn numbers_too_large_or_fractional() {
    let e = error(&edit_rule(0, |r| r["priority"] = json!(1.5)));
    assert_error(
        &e,
        "security_groups[0].rules[0].priority",
        "1.5 is not an integer",
    );
    let e = error(&edit_rule(0, |r| r["priority"] = json!(u64::MAX)));
    assert_error(&e, "security_groups[0].rules[0].priority", "is too large");
}

#[test]
fn missing_required_field_is_at_its_path() {
    let e = error(&edit_rule(1, |r| {
        r.as_object_mut().unwrap().remove("direction");
    }));
    assert_eq!(
        e.to_string(),
        "security_groups[0].rules[1].direction: is missing (a required field)"
    );
}

#[test]
fn an_array_is_not_an_object() {
    let e = error(r#"{"vpcs": [["vpc-a", "10.0.0.0/16"]]}"#);
    assert_error(&e, "vpcs[0]", "is not an object");
}

#[test]
fn hard_errors_in_several_elements_are_all_reported() {
    let text = edit(|d| {
        d["vpcs"][0].as_object_mut().unwrap().remove("cidr");
        d["enis"][0]["ips"] = json!(5);
        d["conntrack"]["udp_s"] = json!("30");
    });
    let paths: Vec<String> = errors(&text).into_iter().map(|e| e.path).collect();
    assert_eq!(paths, ["vpcs[0].cidr", "enis[0].ips", "conntrack.udp_s"]);
}

#[test]
fn null_sections_are_absent() {
    let ruleset = loaded(&edit(|d| {
        d["conntrack"] = Value::Null;
        d["flow_log"] = Value::Null;
    }));
    assert_eq!(ruleset.flow_log.capture_window_s, None);
}

#[test]
fn parse_document_reports_structure_only() {
    assert!(parse_document(&example().to_string()).is_ok());
    // A semantic mistake parses fine; validate() reports it.
    assert!(parse_document(&edit_rule(0, |r| r["priority"] = json!(0))).is_ok());
    let errors = parse_document(&edit(|d| d["enis"][0]["mode"] = json!("tap"))).unwrap_err();
    assert_eq!(errors.0[0].path, "enis[0].mode");
}

#[test]
fn optional_field_of_the_wrong_type() {
    let e = error(&edit_rule(0, |r| r["port_range"] = json!(80)));
    assert_eq!(
        e.to_string(),
        "security_groups[0].rules[0].port_range: 80 is not a string"
    );
}

#[test]
fn sections_match_the_model() {
    // `model::SECTIONS` drives the parser and the error order; it must name
    // exactly the fields of `Document`.
    let doc = crate::model::Document {
        conntrack: Some(Default::default()),
        flow_log: Some(Default::default()),
        ..Default::default()
    };
    let json = serde_json::to_value(&doc).unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sections = crate::model::SECTIONS.to_vec();
    keys.sort_unstable();
    sections.sort_unstable();
    assert_eq!(keys, sections);
}
