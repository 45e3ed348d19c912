//! Port ranges: `"a/b"` with 1 ≤ a ≤ b ≤ 65535, or `"-1/-1"` for
//! protocols without ports (SPEC §2.2, §2.3).
use super::{
    errors::{Errors, JsonPath},
    hints, limits,
    values::protocol_name,
};
use crate::ruleset::{PortRange, Protocol};

/// A port range as written: `-1/-1` or `a/b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ports {
    /// `-1/-1`: no ports (or every port).
    None,
    Range(u16, u16),
}

/// Parses `"a/b"` with 1 ≤ a ≤ b ≤ 65535, or `"-1/-1"`.
pub(crate) fn ports(errs: &mut Errors, path: &JsonPath, value: &str) -> Option<Ports> {
    if value == "-1/-1" {
        return Some(Ports::None);
    }
    let Some((lo, hi)) = split_range(value) else {
        let err = errs.bad(
            path,
            value,
            "is not a port range; write \"a/b\" with 1 ≤ a ≤ b ≤ 65535",
        );
        match value.trim().parse::<i64>() {
            Ok(-1) => err.hint(hints::did_you_mean("-1/-1")),
            Ok(p) if limits::PORT.contains(&p) => err.hint(hints::did_you_mean(format!("{p}/{p}"))),
            _ => {}
        }
        return None;
    };
    if value.contains('/') {
        let mut ok = true;
        for port in [lo, hi] {
            if !limits::PORT.contains(&port) {
                errs.bad(
                    path,
                    value,
                    format!(
                        "has port {port}, outside {}",
                        limits::describe(&limits::PORT)
                    ),
                );
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        if lo > hi {
            errs.bad(path, value, "is reversed")
                .hint(hints::did_you_mean(format!("{hi}/{lo}")));
            return None;
        }
        // Both are within 1..=65535, so they fit.
        return Some(Ports::Range(
            u16::try_from(lo).ok()?,
            u16::try_from(hi).ok()?,
        ));
    }
    // "80-90" or "80:90": the right numbers with the wrong separator.
    let (lo, hi) = (lo.min(hi), lo.max(hi));
    let err = errs.bad(path, value, "is not a port range; the separator is \"/\"");
    if limits::PORT.contains(&lo) && limits::PORT.contains(&hi) {
        err.hint(hints::did_you_mean(format!("{lo}/{hi}")));
    }
    None
}

/// The two numbers of `a/b` (or `a-b`, `a:b`, which [`ports`] reports).
fn split_range(value: &str) -> Option<(i64, i64)> {
    let (lo, hi) = value
        .split_once('/')
        .or_else(|| value.split_once(':'))
        .or_else(|| {
            // A `-` separator, not the sign of a first negative number.
            let cut = value.get(1..)?.find('-')? + 1;
            Some((&value[..cut], &value[cut + 1..]))
        })?;
    Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?))
}

/// The destination ports of a rule or entry for its protocol (SPEC §2.2,
/// §2.3): tcp and udp need `a/b`; the others take `-1/-1` or nothing.
/// `protocol` is `None` when it was invalid; the syntax is still checked.
pub(crate) fn destination_ports(
    errs: &mut Errors,
    path: &JsonPath,
    value: Option<&str>,
    protocol: Option<Protocol>,
) -> Option<PortRange> {
    let ports_of = |errs: &mut Errors, value: &str| ports(errs, path, value);
    match (protocol, value) {
        (Some(p), None) if p.has_ports() => {
            errs.at(
                path,
                "",
                format!(
                    "is missing; {} needs a port range \"a/b\"",
                    protocol_name(p)
                ),
            )
            .hint(hints::did_you_mean("1/65535"));
            None
        }
        (Some(p), Some(v)) if p.has_ports() => match ports_of(errs, v)? {
            Ports::Range(lo, hi) => Some(PortRange { lo, hi }),
            Ports::None => {
                errs.bad(
                    path,
                    v,
                    format!("means no ports, but {} has ports", protocol_name(p)),
                )
                .hint(hints::did_you_mean("1/65535"));
                None
            }
        },
        (Some(p), Some(v)) => match ports_of(errs, v)? {
            Ports::None => Some(PortRange::ANY),
            Ports::Range(..) => {
                errs.bad(
                    path,
                    v,
                    format!("must be \"-1/-1\": {} has no ports", protocol_name(p)),
                )
                .hint(hints::did_you_mean("-1/-1"));
                None
            }
        },
        (Some(_), None) => Some(PortRange::ANY),
        (None, Some(v)) => {
            ports_of(errs, v);
            None
        }
        (None, None) => None,
    }
}

/// The source ports of a quintuple rule: `a/b` for tcp and udp; `-1/-1`
/// (or nothing) means any, for every protocol, as in Alibaba.
pub(crate) fn source_ports(
    errs: &mut Errors,
    path: &JsonPath,
    value: Option<&str>,
    protocol: Option<Protocol>,
) -> Option<PortRange> {
    let Some(value) = value else {
        return Some(PortRange::ANY);
    };
    match (ports(errs, path, value)?, protocol) {
        (Ports::None, _) => Some(PortRange::ANY),
        (Ports::Range(lo, hi), Some(p)) if p.has_ports() => Some(PortRange { lo, hi }),
        (Ports::Range(..), Some(p)) => {
            errs.bad(
                path,
                value,
                format!("applies only to tcp and udp, not {}", protocol_name(p)),
            )
            .hint("remove it, or write \"-1/-1\"");
            None
        }
        (Ports::Range(..), None) => None,
    }
}
