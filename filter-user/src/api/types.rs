//! The `params` and `result` of every method, as they travel.
//!
//! Field names are part of the protocol: add fields, never rename them.
//! `filterctl --json` prints these results as they are.
use std::{fmt, net::IpAddr, str::FromStr};

use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::{
    ruleset::{AttachMode, Direction},
    verdict::Packet,
};

/// `apply`: validate, compile and enforce a document (or, with `dry_run`,
/// everything but enforce).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyParams {
    /// The rule-set document (SPEC §2) as text, exactly as in the file, so
    /// that errors point at its own lines and columns.
    pub document: String,
    #[serde(default)]
    pub dry_run: bool,
    /// Refused (`generation_mismatch`) unless this generation is the one
    /// enforced (SPEC §11), so two automations cannot overwrite each
    /// other unseen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_generation: Option<u32>,
}

/// `rollback`: re-apply a saved generation as a new generation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackParams {
    /// The saved generation to go back to; by default the newest saved one
    /// older than the running generation.
    #[serde(default)]
    pub to: Option<u32>,
}

/// Methods without parameters (`get`, `status`, `detach`, `version`):
/// `{}`, `null` or no `params` at all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// `explain`: what the running generation decides about one packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainParams {
    /// ENI id (`eni-web1`).
    pub eni: String,
    pub direction: Direction,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `gre`, or an IANA protocol number.
    pub proto: String,
    /// `IP`, `IP:PORT`, `[IPv6]:PORT`. Ports are required for tcp and udp.
    pub src: String,
    pub dst: String,
    /// ICMP / ICMPv6 type; default echo request (8, or 128 for ICMPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
}

impl ExplainParams {
    /// The packet these parameters describe, or why they describe none.
    pub fn packet(&self) -> Result<Packet, ApiError> {
        let proto = parse_proto(&self.proto)?;
        let src: Endpoint = self
            .src
            .parse()
            .map_err(|e| ApiError::invalid_params(format!("src: {e}")))?;
        let dst: Endpoint = self
            .dst
            .parse()
            .map_err(|e| ApiError::invalid_params(format!("dst: {e}")))?;
        if src.addr.is_ipv6() != dst.addr.is_ipv6() {
            return Err(ApiError::invalid_params(format!(
                "src {} and dst {} are not of one address family",
                src.addr, dst.addr
            )));
        }
        let has_ports = filter_common::proto_has_ports(filter_common::proto_class(proto));
        let (src_port, dst_port) = if has_ports {
            let need = |e: &Endpoint, which: &str| {
                e.port.ok_or_else(|| {
                    ApiError::invalid_params(format!(
                        "{which}: {} needs a port for {} (e.g. {})",
                        e.addr,
                        self.proto,
                        Endpoint {
                            addr: e.addr,
                            port: Some(443)
                        }
                    ))
                })
            };
            (need(&src, "src")?, need(&dst, "dst")?)
        } else {
            if let Some(e) = [&src, &dst].into_iter().find(|e| e.port.is_some()) {
                return Err(ApiError::invalid_params(format!(
                    "{e}: {} has no ports",
                    self.proto
                )));
            }
            (0, 0)
        };
        let icmp_type = match proto {
            filter_common::PROTO_ICMP => self.icmp_type.unwrap_or(8),
            filter_common::PROTO_ICMPV6 => self.icmp_type.unwrap_or(128),
            _ if self.icmp_type.is_some() => {
                return Err(ApiError::invalid_params(format!(
                    "an ICMP type applies to icmp and icmpv6 only, not {}",
                    self.proto
                )))
            }
            _ => 0,
        };
        Ok(Packet {
            src: src.addr,
            dst: dst.addr,
            proto,
            src_port,
            dst_port,
            icmp_type,
        })
    }
}

/// A protocol by name (`tcp`, `udp`, `icmp`, `icmpv6`, `gre`) or number.
pub fn parse_proto(text: &str) -> Result<u8, ApiError> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Ok(filter_common::PROTO_TCP),
        "udp" => Ok(filter_common::PROTO_UDP),
        "icmp" => Ok(filter_common::PROTO_ICMP),
        "icmpv6" => Ok(filter_common::PROTO_ICMPV6),
        "gre" => Ok(filter_common::PROTO_GRE),
        other => other.parse::<u8>().map_err(|_| {
            ApiError::invalid_params(format!(
                "proto: {text:?} is not tcp, udp, icmp, icmpv6, gre or a protocol number (0-255)"
            ))
        }),
    }
}

/// An address with an optional port: `10.0.1.10`, `10.0.1.10:80`,
/// `fd00::1`, `[fd00::1]:443`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: Option<u16>,
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{text:?} is not IP, IP:PORT or [IPv6]:PORT");
        if let Ok(addr) = text.parse::<IpAddr>() {
            return Ok(Endpoint { addr, port: None });
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            if after.is_empty() {
                (host, None)
            } else {
                (host, Some(after.strip_prefix(':').ok_or_else(bad)?))
            }
        } else {
            let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
            if host.contains(':') {
                // An IPv6 address with a port must be bracketed.
                return Err(bad());
            }
            (host, Some(port))
        };
        let addr = host.parse::<IpAddr>().map_err(|_| bad())?;
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{text:?}: port {p:?} is not 1-65535"))?,
            ),
        };
        Ok(Endpoint { addr, port })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.addr, self.port) {
            (addr, None) => write!(f, "{addr}"),
            (IpAddr::V4(a), Some(p)) => write!(f, "{a}:{p}"),
            (IpAddr::V6(a), Some(p)) => write!(f, "[{a}]:{p}"),
        }
    }
}

/// `counters`: per-rule counters, all of them or those that can decide for
/// one ENI.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountersParams {
    #[serde(default)]
    pub eni: Option<String>,
}

/// `flows` (SPEC §7): flow-log records from the file (its rotated
/// history included), and with `follow` a stream of new ones
/// (`docs/FLOWLOGS.md`). Every filter given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowsParams {
    /// Keep the connection open and stream each capture window's records.
    #[serde(default)]
    pub follow: bool,
    #[serde(default)]
    pub eni: Option<String>,
    /// `ACCEPT` or `REJECT`.
    #[serde(default)]
    pub action: Option<String>,
    /// Source or destination address.
    #[serde(default)]
    pub addr: Option<IpAddr>,
    /// Source or destination port.
    #[serde(default)]
    pub port: Option<u16>,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `gre` or a protocol number.
    #[serde(default)]
    pub proto: Option<String>,
    #[serde(default)]
    pub direction: Option<Direction>,
    /// Only records whose window ended at or after this Unix second.
    #[serde(default)]
    pub since: Option<u64>,
    /// How many of the newest matching records from the file to return
    /// (0: none; absent: [`DEFAULT_FLOWS_LIMIT`] without `follow`, none
    /// with it).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// How many records `flows` returns from the file when `limit` is absent.
pub const DEFAULT_FLOWS_LIMIT: usize = 1000;

/// What changed between the running document and a new one, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The change summary of an apply or rollback.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeSummary {
    pub vpcs: Changes,
    pub vswitches: Changes,
    pub prefix_lists: Changes,
    /// Security groups by id; `changed` when anything in the group differs
    /// (kind, inner access, members or rules).
    pub groups: Changes,
    /// Security-group rules by qualified id (`sg-web/http`).
    pub rules: Changes,
    /// Network ACLs by id.
    pub network_acls: Changes,
    /// ENIs by id; `changed` when its interface, mode, vSwitch, addresses or
    /// groups differ.
    pub enis: Changes,
}

impl ChangeSummary {
    pub fn is_empty(&self) -> bool {
        self.sections().iter().all(|(_, c)| c.is_empty())
    }

    /// Every section with its name, in document order.
    pub fn sections(&self) -> [(&'static str, &Changes); 7] {
        [
            ("vpcs", &self.vpcs),
            ("vswitches", &self.vswitches),
            ("prefix_lists", &self.prefix_lists),
            ("groups", &self.groups),
            ("rules", &self.rules),
            ("network_acls", &self.network_acls),
            ("enis", &self.enis),
        ]
    }
}

/// The result of `apply` and `rollback`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult {
    /// The new generation (with `dry_run`, the number it would get).
    pub generation: u32,
    /// The generation that was running before, if any.
    pub previous: Option<u32>,
    pub dry_run: bool,
    /// For `rollback`: the saved generation whose document was re-applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_to: Option<u32>,
    /// Shadow analysis: rules that can never decide, and the like.
    pub warnings: Vec<String>,
    /// Things that did not stop the apply but need a look (an interface
    /// that left the document and could not be detached).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
    pub changes: ChangeSummary,
}

/// The result of `get`: the running generation's document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetResult {
    pub generation: u32,
    /// Unix seconds.
    pub applied_at: u64,
    /// The document as it was applied, byte for byte.
    pub document: String,
}

/// An ENI of the running generation, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EniStatus {
    pub id: String,
    pub interface: String,
    pub attach_mode: AttachMode,
    pub vswitch: String,
    /// Where the programs are attached on the interface (`xdp`, `tc`).
    pub hooks: Vec<String>,
    /// `pending`: the interface does not exist (yet), or is not guarded
    /// under its index now; it is guarded as soon as it appears (SPEC §2.4).
    #[serde(default)]
    pub state: EniState,
}

/// Whether an ENI's interface is guarded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EniState {
    #[default]
    Attached,
    Pending,
}

/// How full a map is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapFill {
    pub used: u64,
    pub size: u64,
}

/// One data-plane verdict counter (`FILTER_STATS`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatCounter {
    pub name: String,
    pub packets: u64,
    /// Whether the counter counts drops.
    pub drop: bool,
}

/// The daemon itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub version: String,
    pub pid: u32,
    /// Unix seconds.
    pub started_at: u64,
    pub state_dir: String,
    pub pin_dir: String,
}

/// The result of `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResult {
    /// The running generation; `None` before the first apply or after
    /// `detach`.
    pub generation: Option<u32>,
    pub applied_at: Option<u64>,
    /// SHA-256 of the enforced document's canonical JSON (SPEC §11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub enis: Vec<EniStatus>,
    pub conntrack: MapFill,
    /// `FILTER_BOUNDS`: the running generation's sorted ranges, of the
    /// array's size (it grows to the need; ARCHITECTURE.md, "Growing the
    /// maps").
    #[serde(default)]
    pub ranges: MapFill,
    /// `FILTER_CELLS`: the running generation's cells, of the map's size.
    #[serde(default)]
    pub cells: MapFill,
    /// Every verdict counter of the data plane (drops and passes).
    pub stats: Vec<StatCounter>,
    pub daemon: DaemonInfo,
    /// Why the saved generation could not be restored at start, if it could
    /// not (the pinned data plane keeps enforcing what it had).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_error: Option<String>,
    /// The generation the data plane enforces when it is not `generation`:
    /// after a failed restore the pinned programs and maps go on enforcing
    /// what the previous daemon wrote (SPEC §4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_generation: Option<u32>,
    /// A pending ENI or a failed restore (`filterctl status` exits 3).
    #[serde(default)]
    pub degraded: bool,
}

/// A tracked connection in the data plane's conntrack table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackedConnection {
    /// `tcp_syn`, `tcp_established`, `tcp_closing`, `udp`, `udp_stream`,
    /// `icmp`, `other`.
    pub state: String,
    /// The rule that admitted the connection (or last revalidated it).
    pub rule: String,
    /// The generation that admitted (or last revalidated) it.
    pub generation: u32,
    /// Both directions together.
    pub packets: u64,
    pub bytes: u64,
}

/// Per-rule counters of one counter slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCounter {
    /// The rule as verdicts name it: a rule id, `nacl:<acl>/<entry>`,
    /// `inner-accept:<sg>`, `default-deny`, `default-accept`, `tracked`.
    pub rule: String,
    pub packets: u64,
    pub bytes: u64,
    /// Unix seconds of the last hit; `None` if never hit.
    pub last_hit: Option<u64>,
}

/// The result of `counters`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersResult {
    pub generation: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eni: Option<String>,
    pub rules: Vec<RuleCounter>,
}

/// The flow-log record format version (`version`).
pub const FLOW_RECORD_VERSION: u32 = 1;

/// One flow-log record (SPEC §7), one JSON line in the flow-log file: the
/// keys of SPEC §7 in its order, `null` where the text form prints `-`.
/// `SKIPDATA` records add `skipped` (how many) and `skip_reason` (what).
/// `crate::flowlog::record` writes and filters them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    pub version: u32,
    pub eni_id: String,
    pub vswitch_id: Option<String>,
    pub vpc_id: Option<String>,
    pub direction: Option<Direction>,
    pub srcaddr: Option<IpAddr>,
    pub srcport: Option<u16>,
    pub dstaddr: Option<IpAddr>,
    pub dstport: Option<u16>,
    /// IANA protocol number.
    pub protocol: Option<u8>,
    pub packets: Option<u64>,
    /// IP-layer bytes.
    pub bytes: Option<u64>,
    /// Unix seconds.
    pub start: u64,
    pub end: u64,
    pub action: Option<FlowAction>,
    pub log_status: LogStatus,
    /// OR of the TCP flags seen (FIN 1, SYN 2, RST 4, PSH 8, ACK 16,
    /// URG 32); TCP only.
    pub tcp_flags: Option<u8>,
    /// What decided: a rule id, `default-deny`, `default-accept`,
    /// `nacl:<acl>/<entry>`, `inner-accept:<sg>`, `tracked`.
    pub rule_id: Option<String>,
    /// The generation whose rules decided.
    pub generation: Option<u32>,
    /// `SKIPDATA`: how many records (or events, packets, flows: see
    /// `skip_reason`) were lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<SkipReason>,
}

/// `action` of a flow record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum FlowAction {
    Accept,
    Reject,
}

impl FlowAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowAction::Accept => "ACCEPT",
            FlowAction::Reject => "REJECT",
        }
    }
}

impl FromStr for FlowAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "ACCEPT" => Ok(FlowAction::Accept),
            "REJECT" => Ok(FlowAction::Reject),
            _ => Err(format!("{s:?} is not ACCEPT or REJECT")),
        }
    }
}

/// `log_status` of a flow record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogStatus {
    /// A flow's packets in the window.
    Ok,
    /// The ENI had no traffic in the window.
    Nodata,
    /// Records were lost (`skipped`, `skip_reason`).
    Skipdata,
}

impl LogStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStatus::Ok => "OK",
            LogStatus::Nodata => "NODATA",
            LogStatus::Skipdata => "SKIPDATA",
        }
    }
}

/// Why a `SKIPDATA` record was written, and what its `skipped` counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The event ring buffer was full: `skipped` events (new flows, final
    /// counts) were lost; records may be missing or short.
    EventsLost,
    /// `skipped` packets are in no record: the flow tables refused a new
    /// entry, or a reject flow left its full table (LRU eviction) after
    /// its last counts were read.
    PacketsLost,
    /// `skipped` connections left a full table (LRU eviction), or ended
    /// while no daemon ran, before their last counts were read; their
    /// records may be short.
    Evicted,
    /// This `--follow` client fell behind: `skipped` records were not sent
    /// to it (they are in the file).
    SlowReader,
    /// Writing the flow-log file failed: `skipped` records of an earlier
    /// window are not in the file (`--follow` clients got them).
    WriteFailed,
    /// `skipped` scans of the data plane's maps failed: records may be
    /// short or missing.
    ScanFailed,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::EventsLost => "events_lost",
            SkipReason::PacketsLost => "packets_lost",
            SkipReason::Evicted => "evicted",
            SkipReason::SlowReader => "slow_reader",
            SkipReason::WriteFailed => "write_failed",
            SkipReason::ScanFailed => "scan_failed",
        }
    }
}

/// The result of `flows`, and each line of a `follow` stream (the first
/// one: the requested history, possibly empty; then one per capture window
/// with matching records).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowsResult {
    pub records: Vec<FlowRecord>,
}

/// The result of `detach`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachResult {
    /// The generation that was running, if any.
    pub previous: Option<u32>,
    /// The interfaces the programs were removed from.
    pub interfaces: Vec<String>,
}

/// The result of `version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionResult {
    pub daemon: String,
    pub protocol: u32,
    pub methods: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Result<Endpoint, String> {
        s.parse()
    }

    #[test]
    fn endpoints() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let v6: IpAddr = "2001:db8::1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert_eq!(
            ep("192.0.2.1"),
            Ok(Endpoint {
                addr: v4,
                port: None
            })
        );
        assert_eq!(
            ep("192.0.2.1:80"),
            Ok(Endpoint {
                addr: v4,
                port: Some(80)
            })
        );
        assert_eq!(
            ep("2001:db8::1"),
            Ok(Endpoint {
                addr: v6,
                port: None
            })
        );
        assert_eq!(
            ep("[2001:db8::1]:443"),
            Ok(Endpoint {
                addr: v6,
                port: Some(443)
            })
        );
        assert_eq!(
            ep("[2001:db8::1]"),
            Ok(Endpoint {
                addr: v6,
                port: None
            })
        );
        for bad in [
            "",
            "192.0.2.1:",
            "192.0.2.1:0",
            "192.0.2.1:70000",
            "[2001:db8::1]443",
            "host:80",
            "[192.0.2.1:80",
        ] {
            assert!(ep(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Endpoint {
                addr: v6,
                port: Some(443)
            }
            .to_string(),
            "[2001:db8::1]:443"
        );
    }

    fn explain(proto: &str, src: &str, dst: &str) -> ExplainParams {
        ExplainParams {
            eni: "eni-a".into(),
            direction: Direction::Ingress,
            proto: proto.into(),
            src: src.into(),
            dst: dst.into(),
            icmp_type: None,
        }
    }

    #[test]
    fn explain_packets() {
        let p = explain("tcp", "198.51.100.7:40000", "192.0.2.10:80").packet();
        assert!(matches!(
            p,
            Ok(Packet {
                proto: 6,
                src_port: 40000,
                dst_port: 80,
                ..
            })
        ));
        let p = explain("icmp", "198.51.100.7", "192.0.2.10").packet();
        assert!(matches!(
            p,
            Ok(Packet {
                proto: 1,
                icmp_type: 8,
                ..
            })
        ));
        let p = explain("icmpv6", "2001:db8::1", "2001:db8::2").packet();
        assert!(matches!(
            p,
            Ok(Packet {
                proto: 58,
                icmp_type: 128,
                ..
            })
        ));
        assert!(explain("tcp", "198.51.100.7", "192.0.2.10:80")
            .packet()
            .is_err());
        assert!(explain("icmp", "198.51.100.7:1", "192.0.2.10")
            .packet()
            .is_err());
        assert!(explain("tcp", "198.51.100.7:1", "[2001:db8::2]:80")
            .packet()
            .is_err());
        assert!(explain("sctp", "198.51.100.7", "192.0.2.10")
            .packet()
            .is_err());
        assert!(matches!(
            explain("132", "198.51.100.7", "192.0.2.10").packet(),
            Ok(Packet { proto: 132, .. })
        ));
    }
}
