//! `monitor` (SPEC §9): verdict events as they happen, a stream like
//! `flows` with `follow`.
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{FlowAction, FlowsParams};
use crate::ruleset::Direction;

/// The filters of `monitor`: those of `flows`, and `src`, `dst`, `rule`.
/// Every filter given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorParams {
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
    /// The source address lies in this prefix.
    #[serde(default)]
    pub src: Option<IpNet>,
    /// The destination address lies in this prefix.
    #[serde(default)]
    pub dst: Option<IpNet>,
    /// The reason (`rule_id`) is exactly this.
    #[serde(default)]
    pub rule: Option<String>,
}

impl MonitorParams {
    /// The filters of `flows` (`follow`, `since` and `limit` aside), and
    /// `monitor`'s own.
    pub fn new(
        flows: FlowsParams,
        src: Option<IpNet>,
        dst: Option<IpNet>,
        rule: Option<String>,
    ) -> Self {
        MonitorParams {
            eni: flows.eni,
            action: flows.action,
            addr: flows.addr,
            port: flows.port,
            proto: flows.proto,
            direction: flows.direction,
            src,
            dst,
            rule,
        }
    }

    /// The filters `flows` has too.
    pub fn flow_filters(&self) -> FlowsParams {
        FlowsParams {
            eni: self.eni.clone(),
            action: self.action.clone(),
            addr: self.addr,
            port: self.port,
            proto: self.proto.clone(),
            direction: self.direction,
            ..FlowsParams::default()
        }
    }
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorKind {
    /// A connection (or an untracked flow) was admitted, by `rule_id`.
    Admitted,
    /// The first packet of a flow was rejected, for `rule_id`.
    Rejected,
    /// Revalidation cut a tracked connection after an apply; `rule_id` is
    /// the rule that had admitted it.
    Cut,
}

impl MonitorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MonitorKind::Admitted => "admitted",
            MonitorKind::Rejected => "rejected",
            MonitorKind::Cut => "cut",
        }
    }
}

/// One event: a flow's first packet (or a cut connection's last), with the
/// keys of a flow record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorEvent {
    /// Unix milliseconds of the packet.
    pub time_ms: u64,
    pub event: MonitorKind,
    pub eni_id: String,
    pub direction: Direction,
    pub srcaddr: IpAddr,
    pub srcport: Option<u16>,
    pub dstaddr: IpAddr,
    pub dstport: Option<u16>,
    /// IANA protocol number.
    pub protocol: u8,
    pub action: FlowAction,
    /// What decided, as verdicts name it (`None`: no rule slot).
    pub rule_id: Option<String>,
    pub generation: u32,
}

/// Each line of a `monitor` stream: the events since the last line, and
/// how many events this client missed because it read too slowly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorResult {
    pub events: Vec<MonitorEvent>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
