//! The rule-set document of SPEC §2, exactly as users write it (serde).
//!
//! Text stays text here: CIDRs, addresses, port ranges and keywords are
//! `String`s and numbers are `i64`, so that [`crate::validate`] can report a
//! bad value with its JSON path and a hint, instead of serde stopping at the
//! first value it cannot convert. Every struct denies unknown fields, so a
//! typo is an error rather than a silently ignored rule. `docs/RULESET.md`
//! is the user-facing description of these fields.
use serde::{Deserialize, Serialize};

use crate::ruleset::ConntrackConfig;

/// The top-level keys of a document, in the order SPEC §2 lists them (and
/// the order errors are reported in).
pub const SECTIONS: [&str; 8] = [
    "vpcs",
    "vswitches",
    "prefix_lists",
    "security_groups",
    "network_acls",
    "enis",
    "conntrack",
    "flow_log",
];

/// A whole rule-set document. Every section may be left out: a host with no
/// network ACLs need not write `"network_acls": []`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    #[serde(default)]
    pub vpcs: Vec<Vpc>,
    #[serde(default)]
    pub vswitches: Vec<VSwitch>,
    #[serde(default)]
    pub prefix_lists: Vec<PrefixList>,
    #[serde(default)]
    pub security_groups: Vec<SecurityGroup>,
    #[serde(default)]
    pub network_acls: Vec<NetworkAcl>,
    #[serde(default)]
    pub enis: Vec<Eni>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conntrack: Option<Conntrack>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_log: Option<FlowLog>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vpc {
    pub id: String,
    /// IPv4 CIDR block.
    pub cidr: String,
    /// IPv6 CIDR block (an addition to SPEC §2, as Alibaba VPCs have one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_cidr: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VSwitch {
    pub id: String,
    pub vpc_id: String,
    /// IPv4 CIDR block, inside the VPC's.
    pub cidr: String,
    /// IPv6 CIDR block, inside the VPC's `ipv6_cidr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_cidr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_acl_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixList {
    pub id: String,
    /// `ipv4` | `ipv6`.
    pub address_family: String,
    #[serde(default)]
    pub entries: Vec<String>,
    /// When given, only groups of this VPC may use the list (SPEC §2.5 "a
    /// prefix list in another VPC"); otherwise every VPC may, as with
    /// Alibaba's regional prefix lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroup {
    pub id: String,
    pub vpc_id: String,
    /// `basic` | `advanced`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `accept` | `drop`; absent means `accept` for basic groups and `drop`
    /// for advanced ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inner_access_policy: Option<String>,
    /// Addresses of members that are not ENIs on this host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_ips: Vec<String>,
    #[serde(default)]
    pub rules: Vec<SecurityGroupRule>,
}

/// SPEC §2.2. The peer and local fields that are allowed depend on
/// `direction`; validation checks which are given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `ingress` | `egress`.
    pub direction: String,
    /// `accept` | `drop`.
    pub policy: String,
    #[serde(default = "default_priority")]
    pub priority: i64,
    /// `tcp` | `udp` | `icmp` | `icmpv6` | `gre` | `all`.
    pub ip_protocol: String,
    /// `"a/b"`; required for tcp and udp, `"-1/-1"` (or absent) otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port_range: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_cidr_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_source_cidr_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_prefix_list_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_cidr_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_dest_cidr_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_prefix_list_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn default_priority() -> i64 {
    1
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkAcl {
    pub id: String,
    /// First entry strongest (SPEC §2.3).
    #[serde(default)]
    pub ingress: Vec<NetworkAclEntry>,
    #[serde(default)]
    pub egress: Vec<NetworkAclEntry>,
}

/// SPEC §2.3. `source_cidr_ip` is the peer of ingress entries and
/// `destination_cidr_ip` that of egress entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkAclEntry {
    pub name: String,
    /// `accept` | `drop`.
    pub policy: String,
    /// `tcp` | `udp` | `icmp` | `icmpv6` | `gre` | `all`.
    pub protocol: String,
    /// `"a/b"`; required for tcp and udp, `"-1/-1"` (or absent) otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_cidr_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_cidr_ip: Option<String>,
    /// Free text (an addition to SPEC §2.3, as Alibaba entries have one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Eni {
    pub id: String,
    /// The Linux interface name.
    pub interface: String,
    /// `tap` (default) | `nic`.
    #[serde(default = "default_attach_mode")]
    pub attach_mode: String,
    /// `auto` (default) | `xdp` | `tc`: which program filters the
    /// interface's ingress (SPEC §2.4).
    #[serde(default = "default_hook")]
    pub hook: String,
    pub vswitch_id: String,
    /// IPv4 and IPv6 addresses.
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub security_group_ids: Vec<String>,
}

fn default_attach_mode() -> String {
    "tap".to_owned()
}

fn default_hook() -> String {
    "auto".to_owned()
}

/// `conntrack` (SPEC §3.1): every field may be left out and takes the
/// default of [`ConntrackConfig`], the one place those defaults live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Conntrack {
    pub tcp_syn_s: i64,
    pub tcp_established_s: i64,
    pub tcp_closing_s: i64,
    pub udp_s: i64,
    pub udp_stream_s: i64,
    pub icmp_s: i64,
    pub other_s: i64,
    /// `revalidate` (default) | `keep`.
    pub on_change: String,
    /// Size of the connection table.
    pub max_entries: i64,
}

impl Default for Conntrack {
    fn default() -> Self {
        let d = ConntrackConfig::default();
        Conntrack {
            tcp_syn_s: d.tcp_syn_s.into(),
            tcp_established_s: d.tcp_established_s.into(),
            tcp_closing_s: d.tcp_closing_s.into(),
            udp_s: d.udp_s.into(),
            udp_stream_s: d.udp_stream_s.into(),
            icmp_s: d.icmp_s.into(),
            other_s: d.other_s.into(),
            on_change: if d.revalidate { "revalidate" } else { "keep" }.to_owned(),
            max_entries: d.max_entries.into(),
        }
    }
}

/// `flow_log` (SPEC §7).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowLog {
    /// 1–600 s; absent leaves the daemon's `--capture-window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_window_s: Option<i64>,
}
