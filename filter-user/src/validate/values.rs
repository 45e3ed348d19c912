//! Leaf values that are words: ids, keywords, descriptions, interface
//! names. Each check reports its own error (with a hint where one helps)
//! and returns the typed value, or `None` / `false` after reporting.
use super::{
    errors::{Errors, JsonPath},
    hints, limits,
};
use crate::ruleset::{Action, Direction, Protocol};

/// An id, rule id or NACL entry name. Verdicts and text flow logs print it
/// between spaces, so it may not contain whitespace (SPEC §3 step 6, §7).
pub(crate) fn id(errs: &mut Errors, path: &JsonPath, value: &str) -> bool {
    if value.is_empty() {
        errs.bad(path, value, "is empty");
        return false;
    }
    if value.chars().count() > limits::MAX_ID_LEN {
        errs.bad(
            path,
            value,
            format!("is longer than {} characters", limits::MAX_ID_LEN),
        );
        return false;
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        let dashed = value.split_whitespace().collect::<Vec<_>>().join("-");
        errs.bad(
            path,
            value,
            "contains whitespace or control characters, which flow logs cannot print",
        )
        .hint(hints::did_you_mean(dashed));
        return false;
    }
    true
}

pub(crate) fn description(errs: &mut Errors, path: &JsonPath, value: &str) {
    if value.chars().count() > limits::MAX_DESCRIPTION_LEN {
        errs.at(
            path,
            "",
            format!("is longer than {} characters", limits::MAX_DESCRIPTION_LEN),
        );
    }
}

/// One of a fixed set of lowercase keywords.
pub(crate) fn keyword<T: Copy>(
    errs: &mut Errors,
    path: &JsonPath,
    value: &str,
    choices: &[(&str, T)],
) -> Option<T> {
    if let Some((_, t)) = choices.iter().find(|(name, _)| *name == value) {
        return Some(*t);
    }
    let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
    let err = errs.bad(path, value, format!("is not one of {}", names.join(", ")));
    if let Some(meant) = hints::keyword(value, &names) {
        err.hint(hints::did_you_mean(meant));
    }
    None
}

pub(crate) const DIRECTIONS: &[(&str, Direction)] = &[
    ("ingress", Direction::Ingress),
    ("egress", Direction::Egress),
];
pub(crate) const POLICIES: &[(&str, Action)] =
    &[("accept", Action::Accept), ("drop", Action::Drop)];
pub(crate) const PROTOCOLS: &[(&str, Protocol)] = &[
    ("tcp", Protocol::Tcp),
    ("udp", Protocol::Udp),
    ("icmp", Protocol::Icmp),
    ("icmpv6", Protocol::Icmpv6),
    ("gre", Protocol::Gre),
    ("all", Protocol::All),
];

pub(crate) fn protocol_name(p: Protocol) -> &'static str {
    PROTOCOLS
        .iter()
        .find(|(_, q)| *q == p)
        .map_or("?", |(name, _)| name)
}

/// A Linux interface name, as the kernel's `dev_valid_name` accepts it.
pub(crate) fn interface_name(errs: &mut Errors, path: &JsonPath, value: &str) -> bool {
    let message = if value.is_empty() {
        "is empty".to_owned()
    } else if value.len() > limits::MAX_INTERFACE_NAME_LEN {
        format!(
            "is longer than {} bytes, the most Linux allows",
            limits::MAX_INTERFACE_NAME_LEN
        )
    } else if value == "."
        || value == ".."
        || value.contains(['/', ':'])
        || value.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        "is not a valid Linux interface name (no \"/\", \":\", whitespace or control \
         characters)"
            .to_owned()
    } else {
        return true;
    };
    errs.bad(path, value, message);
    false
}
