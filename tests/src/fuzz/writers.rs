//! Target `writers`: flow records and status snapshots built from the
//! bytes, with any ids the validator lets through, rendered by the two
//! text writers. The SPEC §7 text form has its 19 columns (21 for
//! `SKIPDATA`), the JSON line reads back to the record, and the metrics
//! exposition parses as Prometheus text format 0.0.4.
use std::{net::IpAddr, sync::Arc};

use arbitrary::{Result, Unstructured};
use filter::{
    api::{
        DaemonInfo, EniState, EniStatus, FlowAction, FlowRecord, LogStatus, MapFill, SkipReason,
        StatCounter, StatusResult,
    },
    flowlog::record::{json, text},
    metrics::Metrics,
    ruleset::{AttachMode, Direction},
    validate::limits::{MAX_ID_LEN, MAX_INTERFACE_NAME_LEN},
};

use super::gen;

pub fn writers(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok((records, status, lost)) = inputs(&mut u) else {
        return;
    };
    for r in &records {
        let line = text(r);
        let fields: Vec<&str> = line.split(' ').collect();
        let want = if r.skip_reason.is_some() && r.skipped.is_some() {
            21
        } else {
            19
        };
        assert_eq!(fields.len(), want, "columns of {line:?}");
        assert_eq!(fields[1], r.eni_id, "the ENI column of {line:?}");
        let back: FlowRecord = match serde_json::from_str(&json(r)) {
            Ok(back) => back,
            Err(e) => panic!("a JSON record does not read back: {e}: {}", json(r)),
        };
        assert_eq!(&back, r, "a JSON record reads back as another");
    }
    let metrics = Metrics::new(2);
    let shared: Vec<Arc<FlowRecord>> = records.into_iter().map(Arc::new).collect();
    metrics.add_window(&shared, lost);
    metrics.set_status(&status);
    match metrics.encode() {
        Ok(exposition) => check_exposition(&exposition),
        Err(e) => panic!("encoding the metrics failed: {e}"),
    }
}

type Inputs = (Vec<FlowRecord>, StatusResult, u64);

fn inputs(u: &mut Unstructured<'_>) -> Result<Inputs> {
    let ids: Vec<String> = (0..u.int_in_range(1..=3)?)
        .map(|_| id(u))
        .collect::<Result<_>>()?;
    let records = (0..u.int_in_range(0..=6)?)
        .map(|_| record(u, &ids))
        .collect::<Result<_>>()?;
    let enis = ids
        .iter()
        .map(|id| {
            Ok(EniStatus {
                id: id.clone(),
                interface: interface(u)?,
                attach_mode: AttachMode::Tap,
                vswitch: "vsw".into(),
                hooks: vec!["xdp".into(), "tc".into()],
                state: if u.arbitrary()? {
                    EniState::Attached
                } else {
                    EniState::Pending
                },
            })
        })
        .collect::<Result<_>>()?;
    let status = StatusResult {
        generation: u.arbitrary()?,
        applied_at: u.arbitrary()?,
        digest: None,
        enis,
        conntrack: MapFill {
            used: u.arbitrary()?,
            size: u.arbitrary()?,
        },
        ranges: MapFill {
            used: u.arbitrary()?,
            size: u.arbitrary()?,
        },
        cells: MapFill::default(),
        stats: filter_common::STAT_LABELS
            .iter()
            .map(|(index, name)| {
                Ok(StatCounter {
                    name: (*name).to_owned(),
                    packets: u.arbitrary()?,
                    drop: filter_common::stat_is_drop(*index),
                })
            })
            .collect::<Result<_>>()?,
        daemon: DaemonInfo {
            version: "0".into(),
            pid: 1,
            started_at: 0,
            state_dir: "/".into(),
            pin_dir: "/".into(),
        },
        restore_error: None,
        kernel_generation: None,
        degraded: false,
    };
    Ok((records, status, u.arbitrary()?))
}

/// An id as the validator allows it: no whitespace or control characters.
fn id(u: &mut Unstructured<'_>) -> Result<String> {
    let text: String = u.arbitrary()?;
    let ok = !text.is_empty()
        && text.chars().count() <= MAX_ID_LEN
        && !text.chars().any(|c| c.is_whitespace() || c.is_control());
    Ok(if ok {
        text
    } else {
        format!("id-{}", u.arbitrary::<u8>()?)
    })
}

/// An interface name as the validator allows it.
fn interface(u: &mut Unstructured<'_>) -> Result<String> {
    let text: String = u.arbitrary()?;
    let ok = !text.is_empty()
        && text.len() <= MAX_INTERFACE_NAME_LEN
        && text != "."
        && text != ".."
        && !text.contains(['/', ':'])
        && !text.chars().any(char::is_whitespace);
    Ok(if ok { text } else { "eth0".into() })
}

fn record(u: &mut Unstructured<'_>, ids: &[String]) -> Result<FlowRecord> {
    let addr = |u: &mut Unstructured<'_>| -> Result<Option<IpAddr>> {
        Ok(if u.arbitrary()? {
            gen::address(u)?.parse().ok()
        } else {
            None
        })
    };
    let skip: bool = u.arbitrary()?;
    Ok(FlowRecord {
        version: 2,
        eni_id: gen::pick(u, ids)?.clone(),
        vswitch_id: Some("vsw".into()),
        vpc_id: Some("vpc".into()),
        direction: *gen::pick(
            u,
            &[None, Some(Direction::Ingress), Some(Direction::Egress)],
        )?,
        srcaddr: addr(u)?,
        srcport: u.arbitrary()?,
        dstaddr: addr(u)?,
        dstport: u.arbitrary()?,
        protocol: u.arbitrary()?,
        packets: u.arbitrary()?,
        bytes: u.arbitrary()?,
        start: u.arbitrary()?,
        end: u.arbitrary()?,
        action: *gen::pick(
            u,
            &[None, Some(FlowAction::Accept), Some(FlowAction::Reject)],
        )?,
        log_status: if skip {
            LogStatus::Skipdata
        } else {
            *gen::pick(u, &[LogStatus::Ok, LogStatus::Nodata])?
        },
        tcp_flags: u.arbitrary()?,
        rule_id: if u.arbitrary()? { Some(id(u)?) } else { None },
        generation: u.arbitrary()?,
        skipped: if skip { Some(u.arbitrary()?) } else { None },
        skip_reason: if skip {
            Some(*gen::pick(
                u,
                &[
                    SkipReason::EventsLost,
                    SkipReason::Evicted,
                    SkipReason::SlowReader,
                ],
            )?)
        } else {
            None
        },
    })
}

/// Checks text format 0.0.4: `# HELP`/`# TYPE` lines, and samples
/// `name{label="value",...} number` with `\\`, `\"` and `\n` the only
/// escapes in a label value.
fn check_exposition(text: &str) {
    for line in text.lines() {
        if line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        if let Err(why) = sample(line) {
            panic!("not a Prometheus sample ({why}): {line:?}");
        }
    }
}

fn sample(line: &str) -> std::result::Result<(), &'static str> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    let name_ok = name.chars().enumerate().all(|(i, c)| {
        c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
    });
    if name.is_empty() || !name_ok {
        return Err("metric name");
    }
    let mut rest = &line[name_end..];
    if let Some(labels) = rest.strip_prefix('{') {
        rest = label_set(labels)?;
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let value = value.split(' ').next().unwrap_or_default();
    match value {
        "+Inf" | "-Inf" | "NaN" => Ok(()),
        v => v.parse::<f64>().map(drop).map_err(|_| "value"),
    }
}

/// Reads `label="value",...}`; what follows the `}`.
fn label_set(mut s: &str) -> std::result::Result<&str, &'static str> {
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = s.find('=').ok_or("label without =")?;
        let key = &s[..eq];
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err("label name");
        }
        let mut chars = s[eq + 1..]
            .strip_prefix('"')
            .ok_or("unquoted label value")?
            .char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (_, '\\') => match chars.next() {
                    Some((_, '\\' | '"' | 'n')) => {}
                    _ => return Err("bad escape in a label value"),
                },
                (i, '"') => break i,
                (_, '\n') => return Err("newline in a label value"),
                _ => {}
            }
        };
        s = &s[eq + 1..][1 + end + 1..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
}
