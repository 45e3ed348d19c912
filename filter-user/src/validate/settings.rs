//! The `conntrack` (SPEC §3.1) and `flow_log` (SPEC §7) sections.
use std::ops::RangeInclusive;

use super::{
    errors::{Errors, JsonPath},
    limits, values,
};
use crate::{
    model::{Conntrack, Document},
    ruleset::{ConntrackConfig, FlowLogConfig},
};

const ON_CHANGE: &[(&str, bool)] = &[("revalidate", true), ("keep", false)];

pub(crate) fn conntrack(doc: &Document, errs: &mut Errors) -> ConntrackConfig {
    let Some(ct) = &doc.conntrack else {
        return ConntrackConfig::default();
    };
    let path = JsonPath::root().field("conntrack");
    let timeout = |errs: &mut Errors, name: &str, value: i64| {
        in_range(
            errs,
            &path.field(name),
            value,
            &limits::CT_TIMEOUT_S,
            " seconds",
        )
    };
    let Conntrack {
        tcp_syn_s,
        tcp_established_s,
        tcp_closing_s,
        udp_s,
        udp_stream_s,
        icmp_s,
        other_s,
        on_change,
        max_entries,
    } = ct;
    ConntrackConfig {
        tcp_syn_s: timeout(errs, "tcp_syn_s", *tcp_syn_s),
        tcp_established_s: timeout(errs, "tcp_established_s", *tcp_established_s),
        tcp_closing_s: timeout(errs, "tcp_closing_s", *tcp_closing_s),
        udp_s: timeout(errs, "udp_s", *udp_s),
        udp_stream_s: timeout(errs, "udp_stream_s", *udp_stream_s),
        icmp_s: timeout(errs, "icmp_s", *icmp_s),
        other_s: timeout(errs, "other_s", *other_s),
        revalidate: values::keyword(errs, &path.field("on_change"), on_change, ON_CHANGE)
            .unwrap_or(true),
        max_entries: in_range(
            errs,
            &path.field("max_entries"),
            *max_entries,
            &limits::CT_MAX_ENTRIES,
            " entries",
        ),
    }
}

pub(crate) fn flow_log(doc: &Document, errs: &mut Errors) -> FlowLogConfig {
    let window = doc.flow_log.as_ref().and_then(|f| f.capture_window_s);
    let section = JsonPath::root().field("flow_log");
    let path = section.field("capture_window_s");
    FlowLogConfig {
        capture_window_s: window
            .map(|w| in_range(errs, &path, w, &limits::CAPTURE_WINDOW_S, " seconds")),
    }
}

/// The value as a `u32` when it lies in `range` (whose bounds all fit a
/// `u32`); otherwise an error, and 0 (the caller's result is discarded).
fn in_range(
    errs: &mut Errors,
    path: &JsonPath,
    value: i64,
    range: &RangeInclusive<i64>,
    unit: &str,
) -> u32 {
    match u32::try_from(value) {
        Ok(v) if range.contains(&value) => v,
        _ => {
            errs.at(
                path,
                value.to_string(),
                format!("is outside {}{unit}", limits::describe(range)),
            );
            0
        }
    }
}
