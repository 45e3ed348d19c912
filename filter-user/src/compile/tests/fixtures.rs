//! Small builders for rule sets written directly in Rust.
use std::net::IpAddr;

use ipnet::IpNet;

use crate::ruleset::{
    AclEntry, Action, AttachMode, ConntrackConfig, Direction, Eni, FlowLogConfig, GroupKind,
    NetworkAcl, Peer, PortRange, PrefixList, Protocol, Ruleset, SecurityGroup, SgRule, VSwitch,
    Vpc,
};

pub fn net(s: &str) -> IpNet {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

pub fn ports(lo: u16, hi: u16) -> PortRange {
    PortRange { lo, hi }
}

/// One VPC `vpc-a` (10.0.0.0/16, fd00::/48), one vSwitch `vsw-a`
/// (10.0.1.0/24, fd00:0:0:1::/64), no groups, ACLs or ENIs yet.
pub fn base() -> Ruleset {
    Ruleset {
        vpcs: vec![Vpc {
            id: "vpc-a".into(),
            cidrs: vec![net("10.0.0.0/16"), net("fd00::/48")],
        }],
        vswitches: vec![VSwitch {
            id: "vsw-a".into(),
            vpc: 0,
            cidrs: vec![net("10.0.1.0/24"), net("fd00:0:0:1::/64")],
            acl: None,
        }],
        prefix_lists: Vec::new(),
        groups: Vec::new(),
        acls: Vec::new(),
        enis: Vec::new(),
        conntrack: ConntrackConfig::default(),
        flow_log: FlowLogConfig {
            capture_window_s: None,
        },
    }
}

pub fn group(rs: &mut Ruleset, id: &str, kind: GroupKind, inner_accept: bool) -> usize {
    rs.groups.push(SecurityGroup {
        id: id.into(),
        vpc: 0,
        kind,
        inner_accept,
        members: Vec::new(),
        rules: Vec::new(),
    });
    rs.groups.len() - 1
}

pub fn prefix_list(rs: &mut Ruleset, id: &str, entries: &[&str]) -> usize {
    rs.prefix_lists.push(PrefixList {
        id: id.into(),
        entries: entries.iter().map(|e| net(e)).collect(),
    });
    rs.prefix_lists.len() - 1
}

/// Adds an ENI on `vsw-a`; its IPs become members of its groups (as
/// validation does).
pub fn eni(rs: &mut Ruleset, id: &str, mode: AttachMode, ips: &[&str], groups: &[usize]) -> usize {
    let ips: Vec<IpAddr> = ips.iter().map(|s| ip(s)).collect();
    for &g in groups {
        for a in &ips {
            let host = IpNet::from(*a);
            if !rs.groups[g].members.contains(&host) {
                rs.groups[g].members.push(host);
            }
        }
    }
    rs.enis.push(Eni {
        id: id.into(),
        interface: format!("if-{id}"),
        mode,
        hook: Default::default(),
        vswitch: 0,
        ips,
        groups: groups.to_vec(),
    });
    rs.enis.len() - 1
}

/// A rule builder with defaults: tcp, any port, priority 1, no local.
pub struct Rule(pub SgRule);

impl Rule {
    pub fn new(id: &str, direction: Direction, action: Action, remote: Peer) -> Rule {
        Rule(SgRule {
            id: id.into(),
            direction,
            action,
            priority: 1,
            protocol: Protocol::Tcp,
            dst_ports: PortRange { lo: 1, hi: 65535 },
            src_ports: PortRange::ANY,
            remote,
            local: None,
            description: String::new(),
        })
    }
    pub fn cidr(id: &str, direction: Direction, action: Action, cidr: &str) -> Rule {
        Rule::new(id, direction, action, Peer::Cidr(net(cidr)))
    }
    pub fn priority(mut self, p: u8) -> Rule {
        self.0.priority = p;
        self
    }
    pub fn proto(mut self, p: Protocol) -> Rule {
        self.0.protocol = p;
        if !p.has_ports() {
            self.0.dst_ports = PortRange::ANY;
        }
        self
    }
    pub fn dst(mut self, lo: u16, hi: u16) -> Rule {
        self.0.dst_ports = ports(lo, hi);
        self
    }
    pub fn src(mut self, lo: u16, hi: u16) -> Rule {
        self.0.src_ports = ports(lo, hi);
        self
    }
    pub fn local(mut self, cidr: &str) -> Rule {
        self.0.local = Some(net(cidr));
        self
    }
    pub fn add(self, rs: &mut Ruleset, group: usize) {
        rs.groups[group].rules.push(self.0);
    }
}

pub fn acl(rs: &mut Ruleset, id: &str, ingress: Vec<AclEntry>, egress: Vec<AclEntry>) -> usize {
    rs.acls.push(NetworkAcl {
        id: id.into(),
        ingress,
        egress,
    });
    rs.acls.len() - 1
}

pub fn acl_entry(
    name: &str,
    action: Action,
    protocol: Protocol,
    dst: PortRange,
    remote: &str,
) -> AclEntry {
    AclEntry {
        name: name.into(),
        action,
        protocol,
        dst_ports: dst,
        remote: net(remote),
    }
}

/// `ifindex_of` for fixtures: interface `if-<eni>` of the n-th ENI is n + 10.
pub fn ifindex_of(rs: &Ruleset) -> impl Fn(&str) -> Option<u32> + '_ {
    move |name| {
        rs.enis
            .iter()
            .position(|e| e.interface == name)
            .map(|i| i as u32 + 10)
    }
}

pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16) -> crate::verdict::Packet {
    crate::verdict::Packet {
        src: ip(src),
        dst: ip(dst),
        proto: 6,
        src_port: sport,
        dst_port: dport,
        icmp_type: 0,
    }
}
