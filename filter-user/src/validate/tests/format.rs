//! How errors read: path, value, message, hint; one per line; in document
//! order.
use super::*;
use crate::validate::ValidationErrors;

#[test]
fn spec_host_bits_message_exactly() {
    let text = edit_rule(0, |r| r["source_cidr_ip"] = json!("10.0.0.1/24"));
    assert_eq!(
        error(&text).to_string(),
        r#"security_groups[0].rules[0].source_cidr_ip: "10.0.0.1/24" has host bits set (did you mean 10.0.0.0/24?)"#
    );
}

#[test]
fn fields_of_an_error() {
    let e = error(&edit_rule(0, |r| {
        r["source_cidr_ip"] = json!("10.0.0.1/24")
    }));
    assert_eq!(e.path, "security_groups[0].rules[0].source_cidr_ip");
    assert_eq!(e.value, "\"10.0.0.1/24\"");
    assert_eq!(e.message, "has host bits set");
    assert_eq!(e.hint.as_deref(), Some("did you mean 10.0.0.0/24?"));
}

#[test]
fn empty_parts_are_left_out() {
    assert_eq!(
        ValidationError::new("a.b", "", "is missing").to_string(),
        "a.b: is missing"
    );
    assert_eq!(
        ValidationError::new("", "", "malformed JSON").to_string(),
        "malformed JSON"
    );
    assert_eq!(
        ValidationError::new("p", "7", "is odd")
            .with_hint("try 8")
            .to_string(),
        "p: 7 is odd (try 8)"
    );
}

#[test]
fn errors_print_one_per_line_and_are_std_errors() {
    let errors = ValidationErrors(vec![
        ValidationError::new("a", "", "x"),
        ValidationError::new("b", "", "y"),
    ]);
    assert_eq!(errors.to_string(), "a: x\nb: y");
    let boxed: Box<dyn std::error::Error> = Box::new(errors);
    assert_eq!(boxed.to_string().lines().count(), 2);
}

#[test]
fn errors_serialize_for_the_socket_api() {
    let e = ValidationError::new("enis[0].id", "\"x y\"", "contains whitespace")
        .with_hint("did you mean x-y?");
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["path"], "enis[0].id");
    assert_eq!(json["hint"], "did you mean x-y?");
}

#[test]
fn errors_come_in_document_order() {
    // Checks run by topic; the report follows the document, with indices
    // compared as numbers (enis[10] after enis[2]).
    let text = edit(|d| {
        let mut enis = vec![];
        for i in 0..11 {
            enis.push(json!({"id": format!("eni-{i}"), "interface": format!("tap{i}"), "vswitch_id": "vsw-web",
                             "ips": [format!("10.0.1.{}", 100 + i)], "security_group_ids": ["sg-web"]}));
        }
        enis[10]["attach_mode"] = json!("bridge");
        enis[2]["attach_mode"] = json!("bridge");
        d["enis"] = json!(enis);
        d["vpcs"][0]["cidr"] = json!("10.0.0.0/33");
        d["flow_log"]["capture_window_s"] = json!(0);
    });
    let paths: Vec<String> = errors(&text).into_iter().map(|e| e.path).collect();
    assert_eq!(
        paths,
        [
            "vpcs[0].cidr",
            "enis[2].attach_mode",
            "enis[10].attach_mode",
            "flow_log.capture_window_s"
        ]
    );
}

#[test]
fn odd_keys_are_quoted_in_paths() {
    let e = error(&edit(|d| d["enis"][0]["ip s"] = json!([])));
    assert_eq!(e.path, r#"enis[0]["ip s"]"#);
}
