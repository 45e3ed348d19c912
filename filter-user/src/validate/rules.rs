//! One security-group rule (SPEC §2.2): its keywords and ports here, its
//! peer and local fields in `peers.rs`.
use super::{
    errors::{Errors, JsonPath},
    groups::GroupFacts,
    limits,
    network::PrefixListFacts,
    peers, ports,
    refs::Indexes,
    values,
};
use crate::{
    model::{Document, SecurityGroupRule},
    ruleset::SgRule,
};

/// What a rule is checked against: the document's ids and the facts of its
/// own group, of every group, and of every prefix list.
pub(crate) struct RuleContext<'a> {
    pub doc: &'a Document,
    pub ix: &'a Indexes<'a>,
    pub group: &'a GroupFacts,
    pub groups: &'a [GroupFacts],
    pub prefix_lists: &'a [PrefixListFacts],
}

/// The id is assigned later, once every rule of the group is known
/// (`groups::assign_ids`).
pub(crate) fn check(
    cx: &RuleContext,
    rule: &SecurityGroupRule,
    path: &JsonPath,
    errs: &mut Errors,
) -> Option<SgRule> {
    if let Some(id) = &rule.id {
        values::id(errs, &path.field("id"), id);
    }
    let direction = values::keyword(
        errs,
        &path.field("direction"),
        &rule.direction,
        values::DIRECTIONS,
    );
    let action = values::keyword(errs, &path.field("policy"), &rule.policy, values::POLICIES);
    let priority = priority(errs, &path.field("priority"), rule.priority);
    let protocol = values::keyword(
        errs,
        &path.field("ip_protocol"),
        &rule.ip_protocol,
        values::PROTOCOLS,
    );
    let dst_ports = ports::destination_ports(
        errs,
        &path.field("port_range"),
        rule.port_range.as_deref(),
        protocol,
    );
    let src_ports = ports::source_ports(
        errs,
        &path.field("source_port_range"),
        rule.source_port_range.as_deref(),
        protocol,
    );
    let endpoints = peers::endpoints(cx, rule, path, direction, protocol, errs);
    if let Some(description) = &rule.description {
        values::description(errs, &path.field("description"), description);
    }
    let (remote, local) = endpoints?;
    Some(SgRule {
        id: String::new(),
        direction: direction?,
        action: action?,
        priority: priority?,
        protocol: protocol?,
        dst_ports: dst_ports?,
        src_ports: src_ports?,
        remote,
        local,
        description: rule.description.clone().unwrap_or_default(),
    })
}

fn priority(errs: &mut Errors, path: &JsonPath, value: i64) -> Option<u8> {
    if !limits::PRIORITY.contains(&value) {
        let range = limits::describe(&limits::PRIORITY);
        errs.at(
            path,
            value.to_string(),
            format!("is outside {range} (1 is the strongest)"),
        );
        return None;
    }
    u8::try_from(value).ok()
}
