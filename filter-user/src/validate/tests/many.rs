//! SPEC §2.5: every error is reported, not only the first.
use super::*;

#[test]
fn ten_mistakes_ten_messages() {
    let text = edit(|d| {
        d["vpcs"][0]["cidr"] = json!("10.0.0.1/16"); // 1 host bits
        d["vswitches"][0]["network_acl_id"] = json!("acl-wbe"); // 2 dangling
        d["prefix_lists"][0]["entries"][0] = json!("2001:db8::/32"); // 3 family
        let rules = &mut d["security_groups"][0]["rules"];
        rules[0]["priority"] = json!(0); // 4 priority
        rules[0]["port_range"] = json!("443/80"); // 5 reversed
        rules[1]["source_group_id"] = json!("sg-ap"); // 6 dangling, with a hint
        rules[2]["direction"] = json!("outbound"); // 7 keyword
        d["network_acls"][0]["egress"][0]["port"] = json!("1024"); // 8 format
        d["enis"][0]["ips"][0] = json!("10.0.9.10"); // 9 outside the vSwitch
        d["flow_log"]["capture_window_s"] = json!(3600); // 10 out of range
    });
    let errors = errors(&text);
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "vpcs[0].cidr",
            "vswitches[0].network_acl_id",
            "prefix_lists[0].entries[0]",
            "security_groups[0].rules[0].priority",
            "security_groups[0].rules[0].port_range",
            "security_groups[0].rules[1].source_group_id",
            "security_groups[0].rules[2].direction",
            "network_acls[0].egress[0].port",
            "enis[0].ips[0]",
            "flow_log.capture_window_s",
        ],
        "\n{}",
        lines(&errors)
    );
    assert!(errors.iter().all(|e| !e.message.is_empty()));
}

#[test]
fn structural_and_semantic_mistakes_together() {
    let text = edit(|d| {
        d["enis"][0]["securty_group_ids"] = json!([]); // unknown field
        d["security_groups"][0]["rules"][0]["ip_protocol"] = json!("tcpp"); // semantic
    });
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{}", lines(&errors));
    assert_error(
        &errors[0],
        "security_groups[0].rules[0].ip_protocol",
        "(did you mean tcp?)",
    );
    assert_error(
        &errors[1],
        "enis[0].securty_group_ids",
        "(did you mean security_group_ids?)",
    );
}
