//! Flow records as they leave `filterd`: the SPEC §7 text form, JSON lines,
//! and the filters of `filterctl flows`.
use std::net::IpAddr;

use crate::{
    api::{parse_proto, ApiError, FlowAction, FlowRecord, FlowsParams, LogStatus},
    ruleset::Direction,
};

/// The record in the space-separated form of SPEC §7, `-` where a field
/// does not apply. A `SKIPDATA` record says what and how many in two
/// columns of its own after the 19 of SPEC §7, `skip_reason skipped`
/// (docs/FLOWLOGS.md): no SPEC column changes its meaning.
pub fn text(r: &FlowRecord) -> String {
    fn opt<T: ToString>(v: Option<T>) -> String {
        v.map_or_else(|| "-".to_owned(), |v| v.to_string())
    }
    let mut fields = vec![
        r.version.to_string(),
        r.eni_id.clone(),
        opt(r.vswitch_id.as_deref()),
        opt(r.vpc_id.as_deref()),
        opt(r.direction.map(Direction::as_str)),
        opt(r.srcaddr),
        opt(r.srcport),
        opt(r.dstaddr),
        opt(r.dstport),
        opt(r.protocol),
        opt(r.packets),
        opt(r.bytes),
        r.start.to_string(),
        r.end.to_string(),
        opt(r.action.map(FlowAction::as_str)),
        r.log_status.as_str().to_owned(),
        opt(r.tcp_flags),
        opt(r.rule_id.as_deref()),
        opt(r.generation),
    ];
    if let (Some(reason), Some(n)) = (r.skip_reason, r.skipped) {
        fields.extend([reason.as_str().to_owned(), n.to_string()]);
    }
    fields.join(" ")
}

/// The record as one JSON line (without the newline).
pub fn json(r: &FlowRecord) -> String {
    // A record is plain data: serializing it cannot fail.
    serde_json::to_string(r).unwrap_or_default()
}

/// The filters of a `flows` request, parsed once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    pub eni: Option<String>,
    pub action: Option<FlowAction>,
    pub addr: Option<IpAddr>,
    pub port: Option<u16>,
    pub proto: Option<u8>,
    pub direction: Option<Direction>,
    /// Unix second: records that ended before are out.
    pub since: Option<u64>,
}

impl FlowFilter {
    /// The filters of `params`; a bad `action` or `proto` is an
    /// `invalid_params` error.
    pub fn new(params: &FlowsParams) -> Result<FlowFilter, ApiError> {
        let action = params
            .action
            .as_deref()
            .map(|a| {
                a.parse::<FlowAction>()
                    .map_err(|e| ApiError::invalid_params(format!("action: {e}")))
            })
            .transpose()?;
        let proto = params.proto.as_deref().map(parse_proto).transpose()?;
        Ok(FlowFilter {
            eni: params.eni.clone(),
            action,
            addr: params.addr,
            port: params.port,
            proto,
            direction: params.direction,
            since: params.since,
        })
    }

    /// Whether `r` passes every filter given.
    ///
    /// A `SKIPDATA` record concerns everything on its ENI, so only `eni`
    /// applies to it: a client following `--action REJECT` must still hear
    /// that records were lost. A `NODATA` record has no flow, so any flow
    /// filter excludes it.
    pub fn matches(&self, r: &FlowRecord) -> bool {
        if self.since.is_some_and(|t| r.end < t) {
            return false;
        }
        if r.log_status == LogStatus::Skipdata {
            return self.eni.as_ref().is_none_or(|e| *e == r.eni_id);
        }
        self.matches_flow(&Flow {
            eni: &r.eni_id,
            action: r.action,
            direction: r.direction,
            proto: r.protocol,
            src: (r.srcaddr, r.srcport),
            dst: (r.dstaddr, r.dstport),
        })
    }

    /// Whether a flow (of a record, or a `monitor` event) passes.
    pub fn matches_flow(&self, f: &Flow<'_>) -> bool {
        if self.eni.as_deref().is_some_and(|e| e != f.eni) {
            return false;
        }
        if self.action.is_some() && f.action != self.action {
            return false;
        }
        if self.direction.is_some() && f.direction != self.direction {
            return false;
        }
        if self.proto.is_some() && f.proto != self.proto {
            return false;
        }
        if let Some(addr) = self.addr {
            if f.src.0 != Some(addr) && f.dst.0 != Some(addr) {
                return false;
            }
        }
        if let Some(port) = self.port {
            if f.src.1 != Some(port) && f.dst.1 != Some(port) {
                return false;
            }
        }
        true
    }
}

/// What [`FlowFilter`] looks at; `None` where a record has no such field
/// (a `NODATA` record has no flow, so any flow filter excludes it).
#[derive(Clone, Copy, Debug)]
pub struct Flow<'a> {
    pub eni: &'a str,
    pub action: Option<FlowAction>,
    pub direction: Option<Direction>,
    pub proto: Option<u8>,
    /// (address, port).
    pub src: (Option<IpAddr>, Option<u16>),
    pub dst: (Option<IpAddr>, Option<u16>),
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "test code")]
pub(crate) mod tests {
    use super::*;
    use crate::api::{SkipReason, FLOW_RECORD_VERSION};

    /// A TCP record for tests.
    pub(crate) fn tcp_record() -> FlowRecord {
        FlowRecord {
            version: FLOW_RECORD_VERSION,
            eni_id: "eni-web1".into(),
            vswitch_id: Some("vsw-web".into()),
            vpc_id: Some("vpc-prod".into()),
            direction: Some(Direction::Ingress),
            srcaddr: Some("198.51.100.7".parse().unwrap()),
            srcport: Some(40000),
            dstaddr: Some("192.0.2.10".parse().unwrap()),
            dstport: Some(80),
            protocol: Some(6),
            packets: Some(5),
            bytes: Some(420),
            start: 1_700_000_000,
            end: 1_700_000_060,
            action: Some(FlowAction::Accept),
            log_status: LogStatus::Ok,
            tcp_flags: Some(27),
            rule_id: Some("http".into()),
            generation: Some(3),
            skipped: None,
            skip_reason: None,
        }
    }

    fn skipdata() -> FlowRecord {
        FlowRecord {
            direction: None,
            srcaddr: None,
            srcport: None,
            dstaddr: None,
            dstport: None,
            protocol: None,
            packets: None,
            bytes: None,
            action: None,
            log_status: LogStatus::Skipdata,
            tcp_flags: None,
            rule_id: None,
            generation: None,
            skipped: Some(12),
            skip_reason: Some(SkipReason::SlowReader),
            ..tcp_record()
        }
    }

    #[test]
    fn text_is_the_spec_order_with_dashes() {
        assert_eq!(
            text(&tcp_record()),
            "1 eni-web1 vsw-web vpc-prod ingress 198.51.100.7 40000 192.0.2.10 80 6 5 420 \
             1700000000 1700000060 ACCEPT OK 27 http 3"
        );
        let icmp = FlowRecord {
            srcport: None,
            dstport: None,
            protocol: Some(1),
            tcp_flags: None,
            action: Some(FlowAction::Reject),
            rule_id: Some("default-deny".into()),
            vswitch_id: None,
            ..tcp_record()
        };
        assert_eq!(
            text(&icmp),
            "1 eni-web1 - vpc-prod ingress 198.51.100.7 - 192.0.2.10 - 1 5 420 1700000000 \
             1700000060 REJECT OK - default-deny 3"
        );
        assert_eq!(
            text(&skipdata()),
            "1 eni-web1 vsw-web vpc-prod - - - - - - - - 1700000000 1700000060 - SKIPDATA - \
             - - slow_reader 12"
        );
        // The 19 fields of SPEC §7, and a SKIPDATA's two after them.
        for (r, n) in [(tcp_record(), 19), (icmp, 19), (skipdata(), 21)] {
            assert_eq!(text(&r).split(' ').count(), n);
        }
    }

    #[test]
    fn json_has_every_spec_key_in_order_and_reads_back() {
        let line = json(&tcp_record());
        let keys = [
            "version",
            "eni_id",
            "vswitch_id",
            "vpc_id",
            "direction",
            "srcaddr",
            "srcport",
            "dstaddr",
            "dstport",
            "protocol",
            "packets",
            "bytes",
            "start",
            "end",
            "action",
            "log_status",
            "tcp_flags",
            "rule_id",
            "generation",
        ];
        let mut at = 0;
        for key in keys {
            let found = line[at..]
                .find(&format!("\"{key}\":"))
                .unwrap_or_else(|| panic!("{key} missing or out of order in {line}"));
            at += found;
        }
        assert!(!line.contains("skipped"), "{line}");
        assert!(
            line.contains(r#""action":"ACCEPT","log_status":"OK""#),
            "{line}"
        );
        assert!(line.contains(r#""direction":"ingress""#), "{line}");
        let back: FlowRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, tcp_record());

        let line = json(&skipdata());
        assert!(
            line.contains(r#""skipped":12,"skip_reason":"slow_reader""#),
            "{line}"
        );
        assert!(line.contains(r#""srcaddr":null"#), "{line}");
        assert_eq!(
            serde_json::from_str::<FlowRecord>(&line).unwrap(),
            skipdata()
        );
    }

    fn filter(params: FlowsParams) -> FlowFilter {
        FlowFilter::new(&params).unwrap()
    }

    #[test]
    fn filters_each_field() {
        let r = tcp_record();
        let all = FlowsParams::default();
        assert!(filter(all.clone()).matches(&r));
        let cases: Vec<(FlowsParams, bool)> = vec![
            (
                FlowsParams {
                    eni: Some("eni-web1".into()),
                    ..all.clone()
                },
                true,
            ),
            (
                FlowsParams {
                    eni: Some("eni-other".into()),
                    ..all.clone()
                },
                false,
            ),
            (
                FlowsParams {
                    action: Some("accept".into()),
                    ..all.clone()
                },
                true,
            ),
            (
                FlowsParams {
                    action: Some("REJECT".into()),
                    ..all.clone()
                },
                false,
            ),
            (
                FlowsParams {
                    addr: Some("198.51.100.7".parse().unwrap()),
                    ..all.clone()
                },
                true,
            ),
            (
                FlowsParams {
                    addr: Some("192.0.2.10".parse().unwrap()),
                    ..all.clone()
                },
                true,
            ),
            (
                FlowsParams {
                    addr: Some("192.0.2.11".parse().unwrap()),
                    ..all.clone()
                },
                false,
            ),
            (
                FlowsParams {
                    port: Some(80),
                    ..all.clone()
                },
                true,
            ),
            (
                FlowsParams {
                    port: Some(40000),
                    ..all.clone()
                },
                true,
            ),
            (
                FlowsParams {
                    port: Some(81),
                    ..all.clone()
                },
                false,
            ),
            (
                FlowsParams {
                    proto: Some("tcp".into()),
                    ..all.clone()
                },
                true,
            ),
            (
                FlowsParams {
                    proto: Some("6".into()),
                    ..all.clone()
                },
                true,
            ),
            (
                FlowsParams {
                    proto: Some("udp".into()),
                    ..all.clone()
                },
                false,
            ),
            (
                FlowsParams {
                    direction: Some(Direction::Ingress),
                    ..all.clone()
                },
                true,
            ),
            (
                FlowsParams {
                    direction: Some(Direction::Egress),
                    ..all.clone()
                },
                false,
            ),
            (
                FlowsParams {
                    eni: Some("eni-web1".into()),
                    action: Some("ACCEPT".into()),
                    port: Some(80),
                    proto: Some("tcp".into()),
                    direction: Some(Direction::Ingress),
                    addr: Some("192.0.2.10".parse().unwrap()),
                    ..all.clone()
                },
                true,
            ),
        ];
        for (params, expected) in cases {
            assert_eq!(filter(params.clone()).matches(&r), expected, "{params:?}");
        }
    }

    #[test]
    fn skipdata_passes_every_filter_but_the_eni_and_nodata_none() {
        let skip = skipdata();
        let narrow = FlowsParams {
            action: Some("REJECT".into()),
            port: Some(9),
            proto: Some("udp".into()),
            direction: Some(Direction::Egress),
            addr: Some("203.0.113.1".parse().unwrap()),
            ..FlowsParams::default()
        };
        assert!(filter(narrow.clone()).matches(&skip));
        let other_eni = FlowsParams {
            eni: Some("eni-other".into()),
            ..FlowsParams::default()
        };
        assert!(!filter(other_eni).matches(&skip));
        let nodata = FlowRecord {
            log_status: LogStatus::Nodata,
            skipped: None,
            skip_reason: None,
            ..skip
        };
        assert!(!filter(narrow).matches(&nodata));
        let eni = FlowsParams {
            eni: Some("eni-web1".into()),
            ..FlowsParams::default()
        };
        assert!(filter(eni).matches(&nodata));
    }

    #[test]
    fn bad_filters_are_invalid_params() {
        for params in [
            FlowsParams {
                action: Some("DROP".into()),
                ..FlowsParams::default()
            },
            FlowsParams {
                proto: Some("sctp?".into()),
                ..FlowsParams::default()
            },
        ] {
            let e = FlowFilter::new(&params).unwrap_err();
            assert_eq!(e.code, crate::api::ErrorCode::InvalidParams, "{e}");
        }
    }
}
