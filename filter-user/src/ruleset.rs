//! The validated rule set: the document of SPEC §2 after every check has
//! passed, with ids resolved to indices and text parsed into types.
//!
//! Validation (`crate::validate`) is the only way to build one from a
//! document, so the reference evaluator (`crate::eval`) and the compiler
//! (`crate::compile`) never see a dangling reference, a bad CIDR or a
//! reversed port range.
use std::net::IpAddr;

use filter_common::{
    GenConfig, CT_ICMP, CT_OTHER, CT_TCP_CLOSING, CT_TCP_ESTABLISHED, CT_TCP_SYN, CT_UDP,
    CT_UDP_STREAM, NS_PER_S, ON_CHANGE_KEEP, ON_CHANGE_REVALIDATE,
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Index into [`Ruleset::groups`].
pub type GroupIdx = usize;
/// Index into [`Ruleset::prefix_lists`].
pub type PrefixListIdx = usize;
/// Index into [`Ruleset::acls`].
pub type AclIdx = usize;
/// Index into [`Ruleset::vswitches`].
pub type VSwitchIdx = usize;
/// Index into [`Ruleset::vpcs`].
pub type VpcIdx = usize;
/// Index into [`Ruleset::enis`].
pub type EniIdx = usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    /// The `DIR_*` constant the data plane uses.
    pub fn as_u8(self) -> u8 {
        match self {
            Direction::Ingress => filter_common::DIR_INGRESS,
            Direction::Egress => filter_common::DIR_EGRESS,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Accept,
    Drop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    Basic,
    Advanced,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    Tap,
    Nic,
}

/// Which program filters an interface's ingress (SPEC §2.4 `hook`); its
/// egress is always tcx egress. `Auto` is tcx ingress on virtual devices,
/// XDP on NICs with native XDP (`dataplane::hooks` decides).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookChoice {
    #[default]
    Auto,
    Xdp,
    Tc,
}

/// The protocols a rule or ACL entry can name (SPEC §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    Gre,
    All,
}

impl Protocol {
    /// Whether a packet with IANA protocol number `ip_proto` and address
    /// family `is_v6` is one this protocol names. `icmp` is IPv4 only and
    /// `icmpv6` IPv6 only (SPEC §2.2).
    pub fn matches(self, ip_proto: u8, is_v6: bool) -> bool {
        match self {
            Protocol::All => true,
            Protocol::Tcp => ip_proto == filter_common::PROTO_TCP,
            Protocol::Udp => ip_proto == filter_common::PROTO_UDP,
            Protocol::Gre => ip_proto == filter_common::PROTO_GRE,
            Protocol::Icmp => ip_proto == filter_common::PROTO_ICMP && !is_v6,
            Protocol::Icmpv6 => ip_proto == filter_common::PROTO_ICMPV6 && is_v6,
        }
    }

    /// Whether the protocol has ports a rule can restrict.
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }
}

/// An inclusive port range. Rules on protocols without ports (and `-1/-1`)
/// carry [`PortRange::ANY`], which also covers port 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub const ANY: PortRange = PortRange {
        lo: 0,
        hi: u16::MAX,
    };

    pub fn contains(self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }

    pub fn is_any(self) -> bool {
        self == PortRange::ANY
    }
}

/// Who a rule is about, on the far side of the ENI (SPEC §2.2 "peer").
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Peer {
    Cidr(IpNet),
    Group(GroupIdx),
    PrefixList(PrefixListIdx),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SgRule {
    /// The name verdicts use: `<sg-id>/<id>` when the document gives an id,
    /// otherwise the default `<sg-id>/<direction>/<index>` (SPEC §2.2).
    pub id: String,
    pub direction: Direction,
    pub action: Action,
    /// 1–100, smaller is stronger.
    pub priority: u8,
    pub protocol: Protocol,
    /// Destination ports; [`PortRange::ANY`] for protocols without ports.
    pub dst_ports: PortRange,
    /// Source ports (a quintuple rule); [`PortRange::ANY`] when not given.
    pub src_ports: PortRange,
    /// The remote endpoint: source for ingress, destination for egress.
    pub remote: Peer,
    /// The optional local endpoint: destination for ingress, source for
    /// egress.
    pub local: Option<IpNet>,
    pub description: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub id: String,
    pub vpc: VpcIdx,
    pub kind: GroupKind,
    /// `inner_access_policy: accept`; always false for advanced groups.
    pub inner_accept: bool,
    /// Every member address as a host prefix (/32 or /128): the IPs of local
    /// ENIs that list the group, then `member_ips`, without duplicates.
    pub members: Vec<IpNet>,
    pub rules: Vec<SgRule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixList {
    pub id: String,
    pub entries: Vec<IpNet>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclEntry {
    /// The entry's `name`; verdicts say `nacl:<acl>/<name>`.
    pub name: String,
    pub action: Action,
    pub protocol: Protocol,
    /// Destination ports; [`PortRange::ANY`] for protocols without ports.
    pub dst_ports: PortRange,
    /// Source CIDR for ingress entries, destination CIDR for egress entries.
    pub remote: IpNet,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAcl {
    pub id: String,
    /// In order: the first matching entry decides (SPEC §2.3).
    pub ingress: Vec<AclEntry>,
    pub egress: Vec<AclEntry>,
}

impl NetworkAcl {
    pub fn entries(&self, direction: Direction) -> &[AclEntry] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vpc {
    pub id: String,
    /// The VPC's CIDRs (IPv4, and IPv6 when given).
    pub cidrs: Vec<IpNet>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VSwitch {
    pub id: String,
    pub vpc: VpcIdx,
    /// The vSwitch's CIDRs (IPv4, and IPv6 when given). Traffic whose remote
    /// address lies inside one of them skips the NACL (SPEC §3 step 3).
    pub cidrs: Vec<IpNet>,
    pub acl: Option<AclIdx>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eni {
    pub id: String,
    pub interface: String,
    pub mode: AttachMode,
    /// The ingress hook asked for.
    #[serde(default)]
    pub hook: HookChoice,
    pub vswitch: VSwitchIdx,
    pub ips: Vec<IpAddr>,
    /// 1–10 groups, all of one kind, all in the ENI's VPC.
    pub groups: Vec<GroupIdx>,
}

/// `conntrack` section (SPEC §3.1), timeouts in seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackConfig {
    pub tcp_syn_s: u32,
    pub tcp_established_s: u32,
    pub tcp_closing_s: u32,
    pub udp_s: u32,
    pub udp_stream_s: u32,
    pub icmp_s: u32,
    pub other_s: u32,
    /// `on_change: revalidate` (true, the default) or `keep`.
    pub revalidate: bool,
    /// `max_entries`: the size of the connection table (SPEC §3.1).
    #[serde(default = "default_ct_max_entries")]
    pub max_entries: u32,
}

fn default_ct_max_entries() -> u32 {
    filter_common::DEFAULT_CT_ENTRIES
}

impl Default for ConntrackConfig {
    /// The SPEC §3.1 defaults, from the one state table
    /// ([`GenConfig::timeout_ns`]).
    fn default() -> Self {
        let s = |state: u8| {
            let ns = GenConfig::timeout_ns(None, state) / NS_PER_S;
            u32::try_from(ns).unwrap_or(u32::MAX)
        };
        ConntrackConfig {
            tcp_syn_s: s(CT_TCP_SYN),
            tcp_established_s: s(CT_TCP_ESTABLISHED),
            tcp_closing_s: s(CT_TCP_CLOSING),
            udp_s: s(CT_UDP),
            udp_stream_s: s(CT_UDP_STREAM),
            icmp_s: s(CT_ICMP),
            other_s: s(CT_OTHER),
            revalidate: true,
            max_entries: default_ct_max_entries(),
        }
    }
}

impl ConntrackConfig {
    /// The settings as the data plane holds them (`FILTER_CONFIG`).
    pub fn gen_config(&self) -> GenConfig {
        let ns = |s: u32| u64::from(s) * NS_PER_S;
        GenConfig {
            tcp_syn_ns: ns(self.tcp_syn_s),
            tcp_established_ns: ns(self.tcp_established_s),
            tcp_closing_ns: ns(self.tcp_closing_s),
            udp_ns: ns(self.udp_s),
            udp_stream_ns: ns(self.udp_stream_s),
            icmp_ns: ns(self.icmp_s),
            other_ns: ns(self.other_s),
            on_change: if self.revalidate {
                ON_CHANGE_REVALIDATE
            } else {
                ON_CHANGE_KEEP
            },
            ..GenConfig::default()
        }
    }
}

/// `flow_log` section (SPEC §7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowLogConfig {
    /// 1 s to 600 s; `None` leaves the daemon's `--capture-window`.
    pub capture_window_s: Option<u32>,
}

/// A whole validated document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ruleset {
    pub vpcs: Vec<Vpc>,
    pub vswitches: Vec<VSwitch>,
    pub prefix_lists: Vec<PrefixList>,
    pub groups: Vec<SecurityGroup>,
    pub acls: Vec<NetworkAcl>,
    pub enis: Vec<Eni>,
    pub conntrack: ConntrackConfig,
    pub flow_log: FlowLogConfig,
}

impl Ruleset {
    /// The addresses a peer stands for: one CIDR, a group's members or a
    /// prefix list's entries. Each matches only packets of its own family.
    pub fn peer_nets<'a>(&'a self, peer: &'a Peer) -> &'a [IpNet] {
        match peer {
            Peer::Cidr(net) => std::slice::from_ref(net),
            Peer::Group(g) => &self.groups[*g].members,
            Peer::PrefixList(p) => &self.prefix_lists[*p].entries,
        }
    }

    /// How a peer is named in explanations (`sg-app`, `pl-office`, a CIDR).
    pub fn peer_label(&self, peer: &Peer) -> String {
        match peer {
            Peer::Cidr(net) => net.to_string(),
            Peer::Group(g) => self.groups[*g].id.clone(),
            Peer::PrefixList(p) => self.prefix_lists[*p].id.clone(),
        }
    }

    pub fn eni_by_id(&self, id: &str) -> Option<EniIdx> {
        self.enis.iter().position(|e| e.id == id)
    }

    /// The NACL that guards an ENI, if its vSwitch has one.
    pub fn eni_acl(&self, eni: EniIdx) -> Option<AclIdx> {
        self.vswitches[self.enis[eni].vswitch].acl
    }
}
