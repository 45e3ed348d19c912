//! Addresses and CIDR blocks, and the address family rules of SPEC §2.2
//! (an IPv4 CIDR matches only IPv4 packets, `icmp` only IPv4, `icmpv6`
//! only IPv6).
use std::net::IpAddr;

use ipnet::IpNet;

use super::{
    errors::{Errors, JsonPath},
    hints,
    values::protocol_name,
};
use crate::ruleset::Protocol;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// What a CIDR field accepts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CidrField {
    /// The family the field takes, or `None` for either.
    pub family: Option<Family>,
    /// Whether a bare address means a host prefix (/32, /128). Alibaba
    /// accepts that in rule and entry fields; for a VPC or vSwitch block it
    /// is a mistake.
    pub bare_address: bool,
    /// The field to use instead for the other family, for the hint.
    pub other_family_field: Option<&'static str>,
}

impl CidrField {
    pub(crate) const fn block(family: Family) -> Self {
        CidrField {
            family: Some(family),
            bare_address: false,
            other_family_field: None,
        }
    }

    pub(crate) const fn peer(
        family: Option<Family>,
        other_family_field: Option<&'static str>,
    ) -> Self {
        CidrField {
            family,
            bare_address: true,
            other_family_field,
        }
    }
}

pub(crate) fn cidr(
    errs: &mut Errors,
    path: &JsonPath,
    value: &str,
    field: CidrField,
) -> Option<IpNet> {
    let net = match value.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match value.parse::<IpAddr>() {
            Ok(addr) if field.bare_address => IpNet::from(addr),
            Ok(addr) => {
                let host = IpNet::from(addr);
                errs.bad(path, value, "is an address, not a CIDR block")
                    .hint(hints::did_you_mean(host));
                return None;
            }
            Err(_) => {
                bad_cidr(errs, path, value);
                return None;
            }
        },
    };
    if let Some(want) = field.family.filter(|want| *want != Family::of(&net)) {
        let err = errs.bad(
            path,
            value,
            format!(
                "is an {} CIDR block, but this field takes {}",
                Family::of(&net).name(),
                want.name()
            ),
        );
        if let Some(other) = field.other_family_field {
            err.hint(format!("put it in {other}"));
        }
        return None;
    }
    if net.addr() != net.network() {
        errs.bad(path, value, "has host bits set")
            .hint(hints::did_you_mean(net.trunc()));
        return None;
    }
    Some(net)
}

/// Explains why a string is not a CIDR block, as precisely as it can.
fn bad_cidr(errs: &mut Errors, path: &JsonPath, value: &str) {
    let trimmed = value.trim();
    if trimmed != value && trimmed.parse::<IpNet>().is_ok() {
        errs.bad(path, value, "has spaces around it")
            .hint(hints::did_you_mean(trimmed));
        return;
    }
    if let Some((addr, len)) = value.split_once('/') {
        if let (Ok(addr), Ok(len)) = (addr.parse::<IpAddr>(), len.parse::<u32>()) {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if len > max {
                let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
                errs.bad(
                    path,
                    value,
                    format!("has prefix length /{len}, longer than {family} allows (/{max})"),
                );
                return;
            }
        }
    }
    errs.bad(
        path,
        value,
        "is not a CIDR block (like 10.0.0.0/16 or fd00::/64)",
    );
}

pub(crate) fn address(errs: &mut Errors, path: &JsonPath, value: &str) -> Option<IpAddr> {
    if let Ok(addr) = value.parse::<IpAddr>() {
        return Some(addr);
    }
    let err = errs.bad(path, value, "is not an IP address");
    match value.parse::<IpNet>() {
        Ok(net) if net.prefix_len() == net.max_prefix_len() => {
            err.hint(hints::did_you_mean(net.addr()))
        }
        Ok(_) => err.hint("a single address is expected here, not a CIDR block"),
        Err(_) => {}
    }
    None
}

/// The family a protocol is limited to: `icmp` is IPv4 only and `icmpv6`
/// IPv6 only (SPEC §2.2).
pub(crate) fn protocol_family(p: Protocol) -> Option<Family> {
    match p {
        Protocol::Icmp => Some(Family::V4),
        Protocol::Icmpv6 => Some(Family::V6),
        _ => None,
    }
}

/// Reports a CIDR (or prefix list) whose family the protocol can never
/// match: such a rule would silently match nothing. False when reported.
pub(crate) fn protocol_matches_family(
    errs: &mut Errors,
    path: &JsonPath,
    value: &str,
    protocol: Option<Protocol>,
    family: Family,
) -> bool {
    let Some(p) = protocol else { return true };
    let Some(only) = protocol_family(p).filter(|only| *only != family) else {
        return true;
    };
    let other = if p == Protocol::Icmp {
        "icmpv6"
    } else {
        "icmp"
    };
    errs.bad(
        path,
        value,
        format!(
            "is {}, but {} matches only {}: the rule could never match",
            family.name(),
            protocol_name(p),
            only.name()
        ),
    )
    .hint(format!("use {other} for {}", family.name()));
    false
}
