//! Human-readable output: aligned tables and the text of each result.
//! (`--json` prints results as they come from the daemon instead.)
use std::{fmt::Write as _, net::IpAddr};

use crate::{
    api::{
        ApplyResult, ChangeSummary, CountersResult, DetachResult, Endpoint, EniState,
        ExplainResult, FlowRecord, GetResult, GroupStep, MonitorEvent, NaclStep, StatusResult,
        TraceStep, VersionResult,
    },
    ruleset::{Action, AttachMode},
    verdict::{Decision, Verdict},
};

/// Columns aligned on the widest cell, two spaces apart, no trailing
/// spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Unix seconds as `2024-05-01T12:00:00Z`.
pub fn utc(unix: u64) -> String {
    format!("{}Z", civil(unix as i64, 'T'))
}

/// Unix seconds as local time, `2024-05-01 14:00:00` (the time zone of
/// this process: `TZ`, else `/etc/localtime`).
pub fn local(unix: u64) -> String {
    civil((unix as i64).saturating_add(utc_offset(unix)), ' ')
}

/// Seconds east of UTC here at `unix` (0 when the C library cannot say).
fn utc_offset(unix: u64) -> i64 {
    let Ok(t) = libc::time_t::try_from(unix) else {
        return 0;
    };
    // SAFETY: `localtime_r` reads `t` and writes only `tm`, a plain struct
    // we own; it returns null on failure, checked below.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return 0;
        }
        tm.tm_gmtoff
    }
}

/// `2024-05-01<sep>12:00:00` for seconds since the epoch of some zone.
fn civil(unix: i64, sep: char) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}{sep}{:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// How long ago `then` was, from `now` (both Unix seconds): `42s ago`.
pub fn ago(then: u64, now: u64) -> String {
    let d = now.saturating_sub(then);
    match d {
        0..60 => format!("{d}s ago"),
        60..3600 => format!("{}m ago", d / 60),
        3600..86_400 => format!("{}h ago", d / 3600),
        _ => format!("{}d ago", d / 86_400),
    }
}

fn action(a: Action) -> &'static str {
    match a {
        Action::Accept => "accept",
        Action::Drop => "drop",
    }
}

fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Accept => "ACCEPT",
        Verdict::Drop => "DROP",
    }
}

fn mode(m: AttachMode) -> &'static str {
    match m {
        AttachMode::Tap => "tap",
        AttachMode::Nic => "nic",
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

pub fn apply(r: &ApplyResult) -> String {
    let mut out = String::new();
    let previous = r.previous.map_or("none".to_owned(), |p| p.to_string());
    match (r.dry_run, r.rolled_back_to) {
        (true, _) => {
            let _ = writeln!(out, "dry run: the document is valid and would be enforced as generation {} (running: {previous}); nothing changed", r.generation);
        }
        (false, Some(to)) => {
            let _ = writeln!(out, "rolled back to generation {to}'s document: generation {} enforced (was {previous})", r.generation);
        }
        (false, None) => {
            let _ = writeln!(out, "generation {} enforced (was {previous})", r.generation);
        }
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    for n in &r.notices {
        let _ = writeln!(out, "notice: {n}");
    }
    if !r.changes.is_empty() {
        out.push('\n');
    }
    out.push_str(&changes(&r.changes));
    out
}

/// A change summary: `no changes`, or a table of what was added, removed
/// or changed (`apply`, `rollback`, `diff`).
pub fn changes(summary: &ChangeSummary) -> String {
    if summary.is_empty() {
        return "no changes\n".to_owned();
    }
    let mut rows = Vec::new();
    for (section, changes) in summary.sections() {
        for (what, ids) in [
            ("added", &changes.added),
            ("removed", &changes.removed),
            ("changed", &changes.changed),
        ] {
            rows.extend(
                ids.iter()
                    .map(|id| vec![what.to_owned(), section.to_owned(), id.clone()]),
            );
        }
    }
    table(&["CHANGE", "KIND", "ID"], &rows)
}

pub fn get(r: &GetResult) -> String {
    let mut out = r.document.clone();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

pub fn status(r: &StatusResult) -> String {
    let mut out = String::new();
    match (r.generation, r.applied_at) {
        (Some(g), Some(at)) => {
            let _ = writeln!(out, "generation  {g} (applied {})", utc(at));
        }
        (Some(g), None) => {
            let _ = writeln!(out, "generation  {g}");
        }
        _ => match r.kernel_generation {
            Some(k) => {
                let _ = writeln!(
                    out,
                    "generation  none known to filterd; the data plane still enforces generation {k} (pinned)"
                );
            }
            None => out.push_str("generation  none (nothing enforced)\n"),
        },
    }
    if let Some(digest) = &r.digest {
        let _ = writeln!(out, "digest      {digest}");
    }
    if let Some(e) = &r.restore_error {
        let _ = writeln!(out, "restore     FAILED: {e}");
    }
    let _ = writeln!(
        out,
        "daemon      filterd {}, pid {}, since {}",
        r.daemon.version,
        r.daemon.pid,
        utc(r.daemon.started_at)
    );
    let _ = writeln!(out, "state dir   {}", r.daemon.state_dir);
    let _ = writeln!(out, "pin dir     {}", r.daemon.pin_dir);
    for (label, fill) in [
        ("conntrack", r.conntrack),
        ("ranges", r.ranges),
        ("cells", r.cells),
    ] {
        let percent = if fill.size == 0 {
            0.0
        } else {
            fill.used as f64 * 100.0 / fill.size as f64
        };
        let _ = writeln!(
            out,
            "{label:<11} {} / {} ({percent:.1}%)",
            fill.used, fill.size
        );
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = r
        .enis
        .iter()
        .map(|e| {
            let hooks = match e.state {
                EniState::Pending => "PENDING (no interface yet)".to_owned(),
                EniState::Attached => e.hooks.join(","),
            };
            vec![
                e.id.clone(),
                e.interface.clone(),
                mode(e.attach_mode).to_owned(),
                or_dash(&e.vswitch),
                hooks,
            ]
        })
        .collect();
    out.push_str(&table(
        &["ENI", "INTERFACE", "MODE", "VSWITCH", "HOOKS"],
        &rows,
    ));
    out.push('\n');
    let rows: Vec<Vec<String>> = r
        .stats
        .iter()
        .filter(|s| s.drop)
        .map(|s| vec![s.name.clone(), s.packets.to_string()])
        .collect();
    out.push_str(&table(&["DROPS", "PACKETS"], &rows));
    out
}

/// A protocol number by name where it has one.
pub fn proto_name(proto: u8) -> String {
    match proto {
        filter_common::PROTO_TCP => "tcp".to_owned(),
        filter_common::PROTO_UDP => "udp".to_owned(),
        filter_common::PROTO_ICMP => "icmp".to_owned(),
        filter_common::PROTO_ICMPV6 => "icmpv6".to_owned(),
        filter_common::PROTO_GRE => "gre".to_owned(),
        other => format!("proto {other}"),
    }
}

pub fn explain(r: &ExplainResult) -> String {
    let mut out = String::new();
    let p = &r.packet;
    let ep = |addr: std::net::IpAddr, port: u16| crate::api::Endpoint {
        addr,
        port: (port != 0).then_some(port),
    };
    let _ = writeln!(
        out,
        "{} ({}) {} {} {} -> {} (generation {})",
        r.eni,
        r.interface,
        r.direction.as_str(),
        proto_name(p.proto),
        ep(p.src, p.src_port),
        ep(p.dst, p.dst_port),
        r.generation
    );
    // The verdict the packet gets: a tracked connection admits it unless
    // the stateless NACL drops it (SPEC §3 steps 3–4); then what the rules
    // say of it as a first packet.
    let nacl_drops = matches!(
        &r.nacl,
        NaclStep::Matched { decision } | NaclStep::NoMatch { decision }
            if decision.verdict == Verdict::Drop
    );
    match &r.tracked {
        Some(t) if !nacl_drops => {
            let _ = writeln!(
                out,
                "verdict     ACCEPT by tracked (connection admitted by {})",
                t.rule
            );
            let _ = writeln!(
                out,
                "rules       {} by {} (as the first packet of a connection)",
                verdict(r.decision.verdict),
                r.reason
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "verdict     {} by {}",
                verdict(r.decision.verdict),
                r.reason
            );
        }
    }
    let step = |out: &mut String, name: &str, how: &str, d: &Decision| {
        let _ = writeln!(
            out,
            "{name:<11} {how}{} by {}",
            verdict(d.verdict),
            d.reason
        );
    };
    match &r.nacl {
        NaclStep::NotReached => out.push_str("nacl        not reached\n"),
        NaclStep::NoAcl => out.push_str("nacl        none: the vSwitch has no network ACL\n"),
        NaclStep::InsideVswitch { cidr } => {
            let _ = writeln!(
                out,
                "nacl        skipped: the remote address is inside the vSwitch ({cidr})"
            );
        }
        NaclStep::Matched { decision } => step(&mut out, "nacl", "", decision),
        NaclStep::NoMatch { decision } => step(&mut out, "nacl", "no entry matched: ", decision),
    }
    match &r.groups {
        GroupStep::NotReached => out.push_str("groups      not reached\n"),
        GroupStep::NoMatch { decision } => step(&mut out, "groups", "no rule matched: ", decision),
        GroupStep::Matched { decision } => step(&mut out, "groups", "", decision),
    }
    match &r.tracked {
        None => out.push_str("tracked     no tracked connection\n"),
        Some(t) => {
            let _ = writeln!(
                out,
                "tracked     yes: {}, admitted by {} in generation {} ({} packets, {} bytes); its packets skip the security groups",
                t.state, t.rule, t.generation, t.packets, t.bytes
            );
        }
    }
    let _ = writeln!(
        out,
        "admitted by {}",
        r.admitted_by.as_deref().unwrap_or("nothing (dropped)")
    );
    if r.trace.is_empty() {
        out.push_str("\nnothing matched\n");
        return out;
    }
    let rows: Vec<Vec<String>> = r
        .trace
        .iter()
        .map(|t| {
            let (step, rank) = match &t.step {
                TraceStep::Nacl { entry } => ("nacl", format!("#{entry}")),
                TraceStep::InnerAccept => ("inner", "-".to_owned()),
                TraceStep::Rule { priority } => ("rule", priority.to_string()),
            };
            let result = match &t.lost {
                None => "DECIDED".to_owned(),
                Some(lost) => format!("lost to {}: {}", lost.winner, lost.why),
            };
            vec![
                step.to_owned(),
                t.reason.to_string(),
                rank,
                action(t.action).to_owned(),
                result,
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &["STEP", "MATCHED", "PRIORITY", "ACTION", "RESULT"],
        &rows,
    ));
    out
}

pub fn counters(r: &CountersResult, now: u64) -> String {
    let rows: Vec<Vec<String>> = r
        .rules
        .iter()
        .map(|c| {
            let last = c.last_hit.map_or("never".to_owned(), |t| ago(t, now));
            vec![
                c.rule.clone(),
                c.packets.to_string(),
                c.bytes.to_string(),
                last,
            ]
        })
        .collect();
    table(&["RULE", "PACKETS", "BYTES", "LAST HIT"], &rows)
}

pub fn detach(r: &DetachResult) -> String {
    let what = match r.previous {
        Some(g) => format!("generation {g} is no longer enforced"),
        None => "nothing was enforced".to_owned(),
    };
    if r.interfaces.is_empty() {
        format!("detached: {what}; no interface had programs attached; pins removed\n")
    } else {
        format!(
            "detached from {}: {what}; pins removed\n",
            r.interfaces.join(", ")
        )
    }
}

pub fn version(client: &str, r: &VersionResult) -> String {
    format!(
        "filterctl {client}\nfilterd {} (protocol {})\n",
        r.daemon, r.protocol
    )
}

/// A flow record in the space-separated form of SPEC §7.
pub fn flow_text(f: &FlowRecord) -> String {
    crate::flowlog::record::text(f)
}

fn or_dash_opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// An address with its port, if it has one.
fn end(addr: Option<IpAddr>, port: Option<u16>) -> String {
    match (addr, port) {
        (Some(a), Some(p)) => Endpoint {
            addr: a,
            port: Some(p),
        }
        .to_string(),
        (Some(a), None) => a.to_string(),
        _ => "-".to_owned(),
    }
}

/// Flow records as a table, times local (`filterctl flows` in a terminal).
pub fn flow_table(records: &[FlowRecord]) -> String {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let rule = match (r.skip_reason, r.skipped) {
                (Some(reason), Some(n)) => format!("{}={n}", reason.as_str()),
                _ => or_dash_opt(r.rule_id.as_deref()),
            };
            vec![
                local(r.start),
                r.eni_id.clone(),
                or_dash_opt(r.direction.map(|d| d.as_str())),
                or_dash_opt(r.protocol.map(proto_name)),
                end(r.srcaddr, r.srcport),
                end(r.dstaddr, r.dstport),
                or_dash_opt(r.action.map(|a| a.as_str())),
                or_dash_opt(r.packets),
                or_dash_opt(r.bytes),
                r.log_status.as_str().to_owned(),
                rule,
            ]
        })
        .collect();
    table(
        &[
            "START",
            "ENI",
            "DIR",
            "PROTO",
            "SOURCE",
            "DESTINATION",
            "ACTION",
            "PACKETS",
            "BYTES",
            "STATUS",
            "RULE",
        ],
        &rows,
    )
}

/// One `monitor` event as a line: local time to the millisecond, what
/// happened, where, and why.
pub fn monitor_event(e: &MonitorEvent) -> String {
    let secs = e.time_ms / 1000;
    format!(
        "{}.{:03}  {:<8}  {}  {:<7}  {:<6}  {} -> {}  {}  gen {}",
        local(secs),
        e.time_ms % 1000,
        e.event.as_str(),
        e.eni_id,
        e.direction.as_str(),
        proto_name(e.protocol),
        end(Some(e.srcaddr), e.srcport),
        end(Some(e.dstaddr), e.dstport),
        e.rule_id.as_deref().unwrap_or("-"),
        e.generation,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_without_trailing_spaces() {
        let t = table(
            &["A", "LONGER"],
            &[vec!["xx".into(), "1".into()], vec!["y".into(), "".into()]],
        );
        assert_eq!(t, "A   LONGER\nxx  1\ny\n");
    }

    #[test]
    fn times() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
        // TZ is not ours to set in a threaded test: local time is UTC
        // shifted by whole minutes, same seconds.
        assert!(local(1_700_000_000).ends_with(":20"));
        assert_eq!(local(0).len(), "1970-01-01 00:00:00".len());
        assert_eq!(ago(100, 142), "42s ago");
        assert_eq!(ago(0, 7200), "2h ago");
        assert_eq!(ago(50, 10), "0s ago");
    }
}
