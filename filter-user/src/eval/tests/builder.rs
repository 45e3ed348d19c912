//! A small builder for test rule sets, written against the typed
//! [`Ruleset`] directly (not through `crate::validate`), and helpers for
//! packets and verdict tables.
//!
//! The world is always one VPC (`192.0.2.0/24`, `2001:db8::/32`) with one
//! vSwitch (`192.0.2.0/25`, `2001:db8:1::/64`); tests add an optional ACL,
//! prefix lists, groups and ENIs. Addresses are RFC 5737 / RFC 3849
//! documentation addresses: remotes outside the vSwitch come from
//! `198.51.100.0/24`, `203.0.113.0/24` and `2001:db8:ff::/64`.
//!
//! Defaults differ from the document's on purpose, so every test says what
//! it relies on: groups start with inner access *off*, rules and entries
//! start as protocol `all`, any port, priority 1, and must be given a peer.
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::{
    eval::{evaluate, Evaluation, LossReason, TraceStatus},
    ruleset::{
        AclEntry, Action, AttachMode, ConntrackConfig, Direction, Eni, FlowLogConfig, GroupKind,
        NetworkAcl, Peer, PortRange, PrefixList, Protocol, Ruleset, SecurityGroup, SgRule, VSwitch,
        Vpc,
    },
    verdict::{Packet, Verdict},
};

pub const IN: Direction = Direction::Ingress;
pub const OUT: Direction = Direction::Egress;
pub const ACCEPT: Verdict = Verdict::Accept;
pub const DROP: Verdict = Verdict::Drop;

pub fn net(text: &str) -> IpNet {
    text.parse()
        .unwrap_or_else(|e| panic!("bad CIDR {text:?} in a test: {e}"))
}

pub fn addr(text: &str) -> IpAddr {
    text.parse()
        .unwrap_or_else(|e| panic!("bad address {text:?} in a test: {e}"))
}

fn sock(text: &str) -> SocketAddr {
    text.parse()
        .unwrap_or_else(|e| panic!("bad ip:port {text:?} in a test: {e}"))
}

// ---------------------------------------------------------------- packets

fn ported(proto: u8, src: &str, dst: &str) -> Packet {
    let (src, dst) = (sock(src), sock(dst));
    Packet {
        src: src.ip(),
        dst: dst.ip(),
        proto,
        src_port: src.port(),
        dst_port: dst.port(),
        icmp_type: 0,
    }
}

/// A TCP packet: `tcp("198.51.100.1:40000", "192.0.2.10:80")`, or with
/// `[2001:db8::1]:80` for IPv6.
pub fn tcp(src: &str, dst: &str) -> Packet {
    ported(filter_common::PROTO_TCP, src, dst)
}

pub fn udp(src: &str, dst: &str) -> Packet {
    ported(filter_common::PROTO_UDP, src, dst)
}

/// A packet of a protocol without ports (ports 0).
pub fn ip(proto: u8, src: &str, dst: &str) -> Packet {
    Packet {
        src: addr(src),
        dst: addr(dst),
        proto,
        src_port: 0,
        dst_port: 0,
        icmp_type: 0,
    }
}

pub fn icmp(src: &str, dst: &str, icmp_type: u8) -> Packet {
    Packet {
        icmp_type,
        ..ip(filter_common::PROTO_ICMP, src, dst)
    }
}

pub fn icmpv6(src: &str, dst: &str, icmp_type: u8) -> Packet {
    Packet {
        icmp_type,
        ..ip(filter_common::PROTO_ICMPV6, src, dst)
    }
}

// ------------------------------------------------------------ verdict tables

/// One row: name, direction, packet, expected verdict, expected reason text
/// (as `Reason`'s `Display` prints it).
pub type Case = (&'static str, Direction, Packet, Verdict, &'static str);

/// Evaluates every row at ENI `eni-a` and fails with all mismatching rows.
pub fn check(rs: &Ruleset, cases: &[Case]) {
    check_at(rs, "eni-a", cases);
}

/// Evaluates every row at ENI `eni` and fails with all mismatching rows.
pub fn check_at(rs: &Ruleset, eni: &str, cases: &[Case]) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(name, direction, pkt, verdict, reason)| {
            let got = eval_at(rs, eni, *direction, pkt).decision;
            let got_reason = got.reason.to_string();
            (got.verdict != *verdict || got_reason != *reason).then(|| {
                format!(
                    "{name}: want {verdict:?} {reason}, got {:?} {got_reason}",
                    got.verdict
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

pub fn eval_at(rs: &Ruleset, eni: &str, direction: Direction, pkt: &Packet) -> Evaluation {
    let eni = rs
        .eni_by_id(eni)
        .unwrap_or_else(|| panic!("no ENI {eni:?} in the test rule set"));
    evaluate(rs, eni, direction, pkt)
}

// ------------------------------------------------------------------ traces

/// A trace entry in short: the reason text of what matched, and `None` when
/// it decided or `Some(why)` when it lost.
pub type Status = (String, Option<LossReason>);

pub fn statuses(ev: &Evaluation) -> Vec<Status> {
    ev.trace
        .iter()
        .map(|t| {
            let lost = match &t.status {
                TraceStatus::Decided => None,
                TraceStatus::Lost { why, .. } => Some(*why),
            };
            (t.item.reason().to_string(), lost)
        })
        .collect()
}

pub fn decided(reason: &str) -> Status {
    (reason.to_owned(), None)
}

pub fn lost(reason: &str, why: LossReason) -> Status {
    (reason.to_owned(), Some(why))
}

/// The winners that the losing trace entries name, in order.
pub fn winners(ev: &Evaluation) -> Vec<String> {
    ev.trace
        .iter()
        .filter_map(|t| match &t.status {
            TraceStatus::Decided => None,
            TraceStatus::Lost { winner, .. } => Some(winner.to_string()),
        })
        .collect()
}

// ------------------------------------------------------------------- rules

enum PeerSpec {
    Cidr(IpNet),
    Group(String),
    PrefixList(String),
}

pub struct RuleB {
    id: String,
    direction: Direction,
    action: Action,
    priority: u8,
    protocol: Protocol,
    dst_ports: PortRange,
    src_ports: PortRange,
    peer: Option<PeerSpec>,
    local: Option<IpNet>,
}

/// A rule with id `<sg-id>/<id>` once added to a group: protocol `all`, any
/// port, priority 1, no peer yet.
pub fn rule(id: &str, direction: Direction, action: Action) -> RuleB {
    RuleB {
        id: id.to_owned(),
        direction,
        action,
        priority: 1,
        protocol: Protocol::All,
        dst_ports: PortRange::ANY,
        src_ports: PortRange::ANY,
        peer: None,
        local: None,
    }
}

pub fn accept_in(id: &str) -> RuleB {
    rule(id, IN, Action::Accept)
}
pub fn drop_in(id: &str) -> RuleB {
    rule(id, IN, Action::Drop)
}
pub fn accept_out(id: &str) -> RuleB {
    rule(id, OUT, Action::Accept)
}
pub fn drop_out(id: &str) -> RuleB {
    rule(id, OUT, Action::Drop)
}

impl RuleB {
    pub fn prio(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }
    /// TCP, destination ports `lo..=hi`.
    pub fn tcp(mut self, lo: u16, hi: u16) -> Self {
        self.protocol = Protocol::Tcp;
        self.dst_ports = PortRange { lo, hi };
        self
    }
    /// UDP, destination ports `lo..=hi`.
    pub fn udp(mut self, lo: u16, hi: u16) -> Self {
        self.protocol = Protocol::Udp;
        self.dst_ports = PortRange { lo, hi };
        self
    }
    /// A protocol without ports (`-1/-1`).
    pub fn proto(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self.dst_ports = PortRange::ANY;
        self
    }
    /// `source_port_range`: a quintuple rule.
    pub fn sports(mut self, lo: u16, hi: u16) -> Self {
        self.src_ports = PortRange { lo, hi };
        self
    }
    pub fn cidr(mut self, cidr: &str) -> Self {
        self.peer = Some(PeerSpec::Cidr(net(cidr)));
        self
    }
    /// `source_group_id` / `dest_group_id`.
    pub fn group(mut self, id: &str) -> Self {
        self.peer = Some(PeerSpec::Group(id.to_owned()));
        self
    }
    /// `source_prefix_list_id` / `dest_prefix_list_id`.
    pub fn plist(mut self, id: &str) -> Self {
        self.peer = Some(PeerSpec::PrefixList(id.to_owned()));
        self
    }
    /// The optional local address.
    pub fn local(mut self, cidr: &str) -> Self {
        self.local = Some(net(cidr));
        self
    }
}

// ------------------------------------------------------------------ groups

pub struct GroupB {
    id: String,
    kind: GroupKind,
    inner_accept: bool,
    member_ips: Vec<IpAddr>,
    rules: Vec<RuleB>,
}

/// A basic group with inner access *off* (call [`GroupB::inner_accept`]).
pub fn basic(id: &str) -> GroupB {
    GroupB {
        id: id.to_owned(),
        kind: GroupKind::Basic,
        inner_accept: false,
        member_ips: Vec::new(),
        rules: Vec::new(),
    }
}

pub fn advanced(id: &str) -> GroupB {
    GroupB {
        kind: GroupKind::Advanced,
        ..basic(id)
    }
}

impl GroupB {
    /// `inner_access_policy: accept`.
    pub fn inner_accept(mut self) -> Self {
        self.inner_accept = true;
        self
    }
    /// `member_ips`.
    pub fn members(mut self, ips: &[&str]) -> Self {
        self.member_ips.extend(ips.iter().map(|ip| addr(ip)));
        self
    }
    pub fn rule(mut self, rule: RuleB) -> Self {
        self.rules.push(rule);
        self
    }
}

// --------------------------------------------------------------------- ACLs

pub struct EntryB {
    name: String,
    action: Action,
    protocol: Protocol,
    dst_ports: PortRange,
    remote: Option<IpNet>,
}

/// An ACL entry: protocol `all`, any port, no peer yet.
pub fn entry(name: &str, action: Action) -> EntryB {
    EntryB {
        name: name.to_owned(),
        action,
        protocol: Protocol::All,
        dst_ports: PortRange::ANY,
        remote: None,
    }
}

impl EntryB {
    pub fn tcp(mut self, lo: u16, hi: u16) -> Self {
        self.protocol = Protocol::Tcp;
        self.dst_ports = PortRange { lo, hi };
        self
    }
    pub fn udp(mut self, lo: u16, hi: u16) -> Self {
        self.protocol = Protocol::Udp;
        self.dst_ports = PortRange { lo, hi };
        self
    }
    pub fn proto(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self.dst_ports = PortRange::ANY;
        self
    }
    /// `source_cidr_ip` (ingress) / `destination_cidr_ip` (egress).
    pub fn cidr(mut self, cidr: &str) -> Self {
        self.remote = Some(net(cidr));
        self
    }
    fn build(self) -> AclEntry {
        let remote = self
            .remote
            .unwrap_or_else(|| panic!("ACL entry {:?} has no CIDR", self.name));
        AclEntry {
            name: self.name,
            action: self.action,
            protocol: self.protocol,
            dst_ports: self.dst_ports,
            remote,
        }
    }
}

pub struct AclB {
    id: String,
    ingress: Vec<EntryB>,
    egress: Vec<EntryB>,
}

/// A network ACL with empty lists (which drop everything, SPEC §3 step 3).
pub fn acl(id: &str) -> AclB {
    AclB {
        id: id.to_owned(),
        ingress: Vec::new(),
        egress: Vec::new(),
    }
}

impl AclB {
    pub fn ingress(mut self, entry: EntryB) -> Self {
        self.ingress.push(entry);
        self
    }
    pub fn egress(mut self, entry: EntryB) -> Self {
        self.egress.push(entry);
        self
    }
}

// ---------------------------------------------------------------- documents

struct EniSpec {
    id: String,
    ips: Vec<IpAddr>,
    groups: Vec<String>,
}

/// The vSwitch's CIDRs (inside them the NACL is skipped).
pub const VSWITCH_V4: &str = "192.0.2.0/25";
pub const VSWITCH_V6: &str = "2001:db8:1::/64";

pub struct Doc {
    acl: Option<AclB>,
    prefix_lists: Vec<PrefixList>,
    groups: Vec<GroupB>,
    enis: Vec<EniSpec>,
}

pub fn doc() -> Doc {
    Doc {
        acl: None,
        prefix_lists: Vec::new(),
        groups: Vec::new(),
        enis: Vec::new(),
    }
}

impl Doc {
    /// Binds `acl` to the vSwitch.
    pub fn acl(mut self, acl: AclB) -> Self {
        self.acl = Some(acl);
        self
    }
    pub fn prefix_list(mut self, id: &str, entries: &[&str]) -> Self {
        self.prefix_lists.push(PrefixList {
            id: id.to_owned(),
            entries: entries.iter().map(|e| net(e)).collect(),
        });
        self
    }
    pub fn group(mut self, group: GroupB) -> Self {
        self.groups.push(group);
        self
    }
    /// An ENI in the vSwitch with `ips`, joining `groups` in that order.
    pub fn eni(mut self, id: &str, ips: &[&str], groups: &[&str]) -> Self {
        self.enis.push(EniSpec {
            id: id.to_owned(),
            ips: ips.iter().map(|ip| addr(ip)).collect(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        });
        self
    }

    /// The typed rule set, resolved the way validation resolves it: rule
    /// ids qualified as `<sg-id>/<id>`, members = the IPs of the ENIs that
    /// list the group, then `member_ips`, as host prefixes, without
    /// duplicates.
    pub fn build(self) -> Ruleset {
        let group_ids: Vec<String> = self.groups.iter().map(|g| g.id.clone()).collect();
        let group_idx = |id: &str| {
            group_ids
                .iter()
                .position(|g| g == id)
                .unwrap_or_else(|| panic!("no group {id:?} in the test rule set"))
        };
        let plist_idx = |id: &str| {
            self.prefix_lists
                .iter()
                .position(|p| p.id == id)
                .unwrap_or_else(|| panic!("no prefix list {id:?} in the test rule set"))
        };

        let groups = self
            .groups
            .iter()
            .map(|g| {
                let local_members = self
                    .enis
                    .iter()
                    .filter(|eni| eni.groups.contains(&g.id))
                    .flat_map(|eni| eni.ips.iter().copied());
                let mut members: Vec<IpNet> = Vec::new();
                for ip in local_members.chain(g.member_ips.iter().copied()) {
                    let host = IpNet::from(ip);
                    if !members.contains(&host) {
                        members.push(host);
                    }
                }
                let rules = g
                    .rules
                    .iter()
                    .map(|r| SgRule {
                        id: format!("{}/{}", g.id, r.id),
                        direction: r.direction,
                        action: r.action,
                        priority: r.priority,
                        protocol: r.protocol,
                        dst_ports: r.dst_ports,
                        src_ports: r.src_ports,
                        remote: match &r.peer {
                            Some(PeerSpec::Cidr(n)) => Peer::Cidr(*n),
                            Some(PeerSpec::Group(id)) => Peer::Group(group_idx(id)),
                            Some(PeerSpec::PrefixList(id)) => Peer::PrefixList(plist_idx(id)),
                            None => panic!("rule {}/{} has no peer", g.id, r.id),
                        },
                        local: r.local,
                        description: String::new(),
                    })
                    .collect();
                SecurityGroup {
                    id: g.id.clone(),
                    vpc: 0,
                    kind: g.kind,
                    inner_accept: g.inner_accept,
                    members,
                    rules,
                }
            })
            .collect();

        let enis = self
            .enis
            .iter()
            .map(|e| Eni {
                id: e.id.clone(),
                interface: format!("tap-{}", e.id),
                mode: AttachMode::Tap,
                hook: Default::default(),
                vswitch: 0,
                ips: e.ips.clone(),
                groups: e.groups.iter().map(|g| group_idx(g)).collect(),
            })
            .collect();

        let acls: Vec<NetworkAcl> = self
            .acl
            .into_iter()
            .map(|a| NetworkAcl {
                id: a.id,
                ingress: a.ingress.into_iter().map(EntryB::build).collect(),
                egress: a.egress.into_iter().map(EntryB::build).collect(),
            })
            .collect();

        Ruleset {
            vpcs: vec![Vpc {
                id: "vpc-test".to_owned(),
                cidrs: vec![net("192.0.2.0/24"), net("2001:db8::/32")],
            }],
            vswitches: vec![VSwitch {
                id: "vsw-test".to_owned(),
                vpc: 0,
                cidrs: vec![net(VSWITCH_V4), net(VSWITCH_V6)],
                acl: (!acls.is_empty()).then_some(0),
            }],
            prefix_lists: self.prefix_lists,
            groups,
            acls,
            enis,
            conntrack: ConntrackConfig::default(),
            flow_log: FlowLogConfig {
                capture_window_s: None,
            },
        }
    }
}
