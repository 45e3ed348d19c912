//! Random rule sets and packets for the agreement property.
//!
//! Everything is drawn from a *tape* of numbers that proptest generates and
//! shrinks: a choice reads the next number modulo the number of options, and
//! a tape that has run out reads 0, the simplest option. Shrinking the tape
//! (shorter, smaller numbers) shrinks the rule set.
//!
//! The draws aim at the edges: addresses come from a small pool so prefixes
//! nest and collide, priorities tie often, port ranges share their ends, and
//! packets are built from the first, last and neighbouring addresses of every
//! prefix in the rule set and the ends (±1) of every port range.
use std::net::IpAddr;

use ipnet::IpNet;

use crate::{
    ruleset::{
        AclEntry, Action, AttachMode, ConntrackConfig, Direction, Eni, FlowLogConfig, GroupKind,
        NetworkAcl, Peer, PortRange, PrefixList, Protocol, Ruleset, SecurityGroup, SgRule, VSwitch,
        Vpc,
    },
    verdict::Packet,
};

pub struct Tape<'a> {
    numbers: &'a [u32],
    at: usize,
}

impl<'a> Tape<'a> {
    pub fn new(numbers: &'a [u32]) -> Tape<'a> {
        Tape { numbers, at: 0 }
    }

    /// A number in `0..n` (0 when the tape has run out).
    pub fn pick(&mut self, n: usize) -> usize {
        let value = self.numbers.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        if n == 0 {
            0
        } else {
            value as usize % n
        }
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.pick(one_in) == one_in - 1
    }

    fn choose<T: Copy>(&mut self, options: &[T]) -> T {
        options[self.pick(options.len())]
    }
}

const V4_BASES: [[u8; 4]; 7] = [
    [10, 0, 1, 0],
    [10, 0, 1, 128],
    [10, 0, 2, 0],
    [10, 1, 1, 0],
    [192, 0, 2, 0],
    [198, 51, 100, 0],
    [0, 0, 0, 0],
];
const V4_LENS: [u8; 8] = [32, 24, 32, 25, 16, 8, 0, 28];
const V6_BASES: [[u16; 8]; 5] = [
    [0xfd00, 0, 0, 1, 0, 0, 0, 0],
    [0xfd00, 0, 0, 2, 0, 0, 0, 0],
    [0xfd00, 1, 0, 1, 0, 0, 0, 0],
    [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0, 0],
];
const V6_LENS: [u8; 7] = [128, 64, 128, 48, 120, 0, 32];

fn host_v4(tape: &mut Tape) -> IpAddr {
    let mut a = tape.choose(&V4_BASES);
    a[3] = a[3].wrapping_add(tape.choose(&[1u8, 2, 3, 7, 0, 127, 255]));
    IpAddr::from(a)
}

fn host_v6(tape: &mut Tape) -> IpAddr {
    let mut a = tape.choose(&V6_BASES);
    a[7] = tape.choose(&[1u16, 2, 3, 0x10, 0, 0xffff]);
    IpAddr::from(a)
}

fn host(tape: &mut Tape, v6: bool) -> IpAddr {
    if v6 {
        host_v6(tape)
    } else {
        host_v4(tape)
    }
}

/// A CIDR from the pool, host bits cleared (validation would refuse them).
fn net(tape: &mut Tape, v6: bool) -> IpNet {
    let (addr, len) = if v6 {
        (host_v6(tape), tape.choose(&V6_LENS))
    } else {
        (host_v4(tape), tape.choose(&V4_LENS))
    };
    IpNet::new(addr, len)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| IpNet::from(addr))
}

/// A CIDR of either family, IPv4 twice as often.
fn any_net(tape: &mut Tape) -> IpNet {
    let v6 = tape.chance(3);
    net(tape, v6)
}

const PORT_POINTS: [u16; 9] = [1, 22, 80, 443, 1024, 8080, 8081, 65535, 53];

fn port_range(tape: &mut Tape) -> PortRange {
    match tape.pick(4) {
        0 => PortRange { lo: 1, hi: 65535 },
        _ => {
            let (a, b) = (tape.choose(&PORT_POINTS), tape.choose(&PORT_POINTS));
            PortRange {
                lo: a.min(b),
                hi: a.max(b),
            }
        }
    }
}

const PROTOCOLS: [Protocol; 8] = [
    Protocol::Tcp,
    Protocol::Udp,
    Protocol::All,
    Protocol::Tcp,
    Protocol::Icmp,
    Protocol::Icmpv6,
    Protocol::Gre,
    Protocol::All,
];

/// A valid rule set (as `crate::validate` would produce): two VPCs with two
/// vSwitches each, 4–9 groups, 0–3 prefix lists and ACLs, 1–4 ENIs.
pub fn ruleset(tape: &mut Tape) -> Ruleset {
    let vpcs = vec![
        Vpc {
            id: "vpc-a".into(),
            cidrs: vec![nets("10.0.0.0/16"), nets("fd00::/48")],
        },
        Vpc {
            id: "vpc-b".into(),
            cidrs: vec![nets("10.1.0.0/16"), nets("fd00:1::/48")],
        },
    ];
    let acl_count = tape.pick(4);
    let mut acl_of = || {
        if acl_count == 0 || tape.pick(3) == 0 {
            None
        } else {
            Some(tape.pick(acl_count))
        }
    };
    let vswitches = vec![
        VSwitch {
            id: "vsw-a1".into(),
            vpc: 0,
            cidrs: vec![nets("10.0.1.0/24"), nets("fd00:0:0:1::/64")],
            acl: acl_of(),
        },
        VSwitch {
            id: "vsw-a2".into(),
            vpc: 0,
            cidrs: vec![nets("10.0.2.0/24")],
            acl: acl_of(),
        },
        VSwitch {
            id: "vsw-b1".into(),
            vpc: 1,
            cidrs: vec![nets("10.1.1.0/24"), nets("fd00:1:0:1::/64")],
            acl: acl_of(),
        },
        VSwitch {
            id: "vsw-b2".into(),
            vpc: 1,
            cidrs: vec![nets("10.1.2.0/24")],
            acl: acl_of(),
        },
    ];
    let acls = (0..acl_count)
        .map(|a| NetworkAcl {
            id: format!("acl-{a}"),
            ingress: acl_entries(tape, "in"),
            egress: acl_entries(tape, "out"),
        })
        .collect();
    let prefix_lists: Vec<PrefixList> = (0..tape.pick(4))
        .map(|p| {
            let v6 = tape.chance(3);
            PrefixList {
                id: format!("pl-{p}"),
                entries: (0..1 + tape.pick(4)).map(|_| net(tape, v6)).collect(),
            }
        })
        .collect();

    // Groups 0–3 cover every (VPC, kind), so every ENI finds one.
    let group_count = 4 + tape.pick(6);
    let mut groups: Vec<SecurityGroup> = (0..group_count)
        .map(|g| {
            let (vpc, kind) = if g < 4 {
                (
                    g / 2,
                    if g % 2 == 0 {
                        GroupKind::Basic
                    } else {
                        GroupKind::Advanced
                    },
                )
            } else {
                (
                    tape.pick(2),
                    if tape.chance(3) {
                        GroupKind::Advanced
                    } else {
                        GroupKind::Basic
                    },
                )
            };
            let inner_accept = kind == GroupKind::Basic && tape.pick(3) != 0;
            let member_ips = (0..tape.pick(3))
                .map(|_| {
                    let v6 = tape.chance(3);
                    IpNet::from(host(tape, v6))
                })
                .collect();
            SecurityGroup {
                id: format!("sg-{g}"),
                vpc,
                kind,
                inner_accept,
                members: member_ips,
                rules: Vec::new(),
            }
        })
        .collect();
    for g in 0..group_count {
        let rule_count = tape.pick(9);
        let rules = (0..rule_count)
            .map(|i| rule(tape, &groups, g, i, prefix_lists.len()))
            .collect();
        groups[g].rules = rules;
    }

    let mut enis = Vec::new();
    for e in 0..1 + tape.pick(4) {
        let vswitch = tape.pick(vswitches.len());
        let vpc = vswitches[vswitch].vpc;
        let kind = if tape.chance(3) {
            GroupKind::Advanced
        } else {
            GroupKind::Basic
        };
        let mut candidates: Vec<usize> = (0..group_count)
            .filter(|&g| groups[g].vpc == vpc && groups[g].kind == kind)
            .collect();
        let mut chosen = Vec::new();
        for _ in 0..1 + tape.pick(candidates.len().min(10)) {
            chosen.push(candidates.remove(tape.pick(candidates.len())));
        }
        let v4_net = vswitches[vswitch].cidrs[0];
        let mut ips = vec![offset(
            v4_net.network(),
            10 + e as u128 + tape.pick(3) as u128,
        )];
        if let Some(v6_net) = vswitches[vswitch].cidrs.get(1) {
            if tape.pick(3) != 0 {
                ips.push(offset(v6_net.network(), 10 + e as u128));
            }
        }
        enis.push(Eni {
            id: format!("eni-{e}"),
            interface: format!("if{e}"),
            mode: if tape.chance(2) {
                AttachMode::Nic
            } else {
                AttachMode::Tap
            },
            hook: Default::default(),
            vswitch,
            ips,
            groups: chosen,
        });
    }
    // Membership = the IPs of local ENIs that list the group, then
    // `member_ips`, without duplicates (SecurityGroup::members).
    for (index, group) in groups.iter_mut().enumerate() {
        let mut members: Vec<IpNet> = enis
            .iter()
            .filter(|e| e.groups.contains(&index))
            .flat_map(|e| e.ips.iter().map(|ip| IpNet::from(*ip)))
            .collect();
        members.append(&mut group.members);
        let mut unique = Vec::new();
        for m in members {
            if !unique.contains(&m) {
                unique.push(m);
            }
        }
        group.members = unique;
    }
    Ruleset {
        vpcs,
        vswitches,
        prefix_lists,
        groups,
        acls,
        enis,
        conntrack: ConntrackConfig::default(),
        flow_log: FlowLogConfig {
            capture_window_s: None,
        },
    }
}

fn nets(s: &str) -> IpNet {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn offset(ip: IpAddr, by: u128) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::from(std::net::Ipv4Addr::from(
            (u128::from(u32::from(v4)) + by) as u32,
        )),
        IpAddr::V6(v6) => IpAddr::from(std::net::Ipv6Addr::from(u128::from(v6) + by)),
    }
}

fn rule(
    tape: &mut Tape,
    groups: &[SecurityGroup],
    g: usize,
    i: usize,
    prefix_lists: usize,
) -> SgRule {
    let direction = if tape.chance(2) {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    let protocol = tape.choose(&PROTOCOLS);
    let dst_ports = if protocol.has_ports() {
        port_range(tape)
    } else {
        PortRange::ANY
    };
    let src_ports = if protocol.has_ports() && tape.chance(4) {
        port_range(tape)
    } else {
        PortRange::ANY
    };
    let basic = groups[g].kind == GroupKind::Basic;
    // Group peers: basic groups only, a group of the same VPC.
    let peers: Vec<usize> = (0..groups.len())
        .filter(|&p| groups[p].vpc == groups[g].vpc)
        .collect();
    let remote = match tape.pick(6) {
        4 if basic => Peer::Group(peers[tape.pick(peers.len())]),
        5 if prefix_lists > 0 => Peer::PrefixList(tape.pick(prefix_lists)),
        _ => Peer::Cidr(any_net(tape)),
    };
    let local = if tape.chance(5) {
        Some(any_net(tape))
    } else {
        None
    };
    SgRule {
        id: format!("{}/{}/{i}", groups[g].id, direction.as_str()),
        direction,
        action: if tape.chance(3) {
            Action::Drop
        } else {
            Action::Accept
        },
        priority: tape.choose(&[1, 1, 2, 1, 2, 3, 100, 50]),
        protocol,
        dst_ports,
        src_ports,
        remote,
        local,
        description: String::new(),
    }
}

fn acl_entries(tape: &mut Tape, prefix: &str) -> Vec<AclEntry> {
    let mut entries: Vec<AclEntry> = (0..tape.pick(6))
        .map(|i| {
            let protocol = tape.choose(&PROTOCOLS);
            AclEntry {
                name: format!("{prefix}{i}"),
                action: if tape.chance(3) {
                    Action::Drop
                } else {
                    Action::Accept
                },
                protocol,
                dst_ports: if protocol.has_ports() {
                    port_range(tape)
                } else {
                    PortRange::ANY
                },
                remote: any_net(tape),
            }
        })
        .collect();
    // Often a broad accept at the end, so that packets reach the groups.
    if tape.pick(3) != 0 {
        for (i, all) in ["0.0.0.0/0", "::/0"].iter().enumerate() {
            entries.push(AclEntry {
                name: format!("{prefix}-all{i}"),
                action: Action::Accept,
                protocol: Protocol::All,
                dst_ports: PortRange::ANY,
                remote: nets(all),
            });
        }
    }
    entries
}

/// Addresses and ports at the edges of everything in `rs`.
pub struct Edges {
    pub v4: Vec<IpAddr>,
    pub v6: Vec<IpAddr>,
    pub ports: Vec<u16>,
}

pub fn edges(rs: &Ruleset) -> Edges {
    let mut nets: Vec<IpNet> = Vec::new();
    let mut ranges: Vec<PortRange> = Vec::new();
    for g in &rs.groups {
        nets.extend(&g.members);
        for r in &g.rules {
            nets.extend(rs.peer_nets(&r.remote));
            nets.extend(r.local);
            ranges.extend([r.dst_ports, r.src_ports]);
        }
    }
    for acl in &rs.acls {
        for e in acl.ingress.iter().chain(&acl.egress) {
            nets.push(e.remote);
            ranges.push(e.dst_ports);
        }
    }
    for v in &rs.vswitches {
        nets.extend(&v.cidrs);
    }
    let mut addrs: Vec<IpAddr> = rs.enis.iter().flat_map(|e| e.ips.iter().copied()).collect();
    for n in &nets {
        let (first, last) = (n.network(), n.broadcast());
        addrs.extend([first, last]);
        if n.prefix_len() > 0 {
            addrs.extend([step(first, -1), step(last, 1)]);
        }
    }
    addrs.sort_unstable();
    addrs.dedup();
    let mut ports: Vec<u16> = vec![0, 1, 53, 80, 65535];
    for r in ranges {
        ports.extend([r.lo, r.hi, r.lo.saturating_sub(1), r.hi.saturating_add(1)]);
    }
    ports.sort_unstable();
    ports.dedup();
    Edges {
        v4: addrs.iter().copied().filter(IpAddr::is_ipv4).collect(),
        v6: addrs.iter().copied().filter(IpAddr::is_ipv6).collect(),
        ports,
    }
}

fn step(ip: IpAddr, by: i8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::from(std::net::Ipv4Addr::from(
            u32::from(v4).wrapping_add_signed(i32::from(by)),
        )),
        IpAddr::V6(v6) => IpAddr::from(std::net::Ipv6Addr::from(
            u128::from(v6).wrapping_add_signed(i128::from(by)),
        )),
    }
}

/// A packet at ENI `eni` in `direction`: mostly aimed at one rule of the
/// ENI's groups (see [`aimed_packet`]), otherwise built from the edges of
/// the whole rule set.
pub fn packet(
    tape: &mut Tape,
    rs: &Ruleset,
    edges: &Edges,
    eni: usize,
    direction: Direction,
) -> Packet {
    let rules: Vec<&SgRule> = rs.enis[eni]
        .groups
        .iter()
        .flat_map(|&g| {
            rs.groups[g]
                .rules
                .iter()
                .filter(|r| r.direction == direction)
        })
        .collect();
    if !rules.is_empty() && tape.pick(3) != 0 {
        let rule = rules[tape.pick(rules.len())];
        if let Some(pkt) = aimed_packet(tape, rs, rule, eni, direction) {
            return pkt;
        }
    }
    edge_packet(tape, rs, edges, eni, direction)
}

/// A packet at or just past the edges of `rule`: the first, last or a
/// neighbouring address of one of its remote prefixes, the ends (±1) of its
/// port ranges, its protocol (any protocol for `all`).
fn aimed_packet(
    tape: &mut Tape,
    rs: &Ruleset,
    rule: &SgRule,
    eni: usize,
    direction: Direction,
) -> Option<Packet> {
    let nets = rs.peer_nets(&rule.remote);
    if nets.is_empty() {
        return None;
    }
    let net = nets[tape.pick(nets.len())];
    let remote = near(tape, &net);
    let v6 = remote.is_ipv6();
    let local = match rule.local {
        Some(l) if l.addr().is_ipv6() == v6 && tape.pick(2) == 0 => near(tape, &l),
        _ => {
            let own: Vec<IpAddr> = rs.enis[eni]
                .ips
                .iter()
                .copied()
                .filter(|ip| ip.is_ipv6() == v6)
                .collect();
            if own.is_empty() {
                remote
            } else {
                own[tape.pick(own.len())]
            }
        }
    };
    let proto = match rule.protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Icmp => 1,
        Protocol::Icmpv6 => 58,
        Protocol::Gre => 47,
        Protocol::All => tape.choose(&[6u8, 17, 1, 58, 47, 132]),
    };
    let end = |tape: &mut Tape, r: PortRange| {
        let p = tape.choose(&[
            r.lo,
            r.hi,
            r.lo.saturating_sub(1),
            r.hi.saturating_add(1),
            r.lo,
        ]);
        if tape.chance(8) {
            0
        } else {
            p
        }
    };
    let (mut src_port, mut dst_port, mut icmp_type) = (0, 0, 0);
    match proto {
        6 | 17 => {
            dst_port = end(tape, rule.dst_ports);
            src_port = if rule.src_ports.is_any() {
                tape.choose(&[40000, 53, 1024])
            } else {
                end(tape, rule.src_ports)
            };
        }
        1 | 58 => icmp_type = tape.choose(&[8u8, 0, 128, 135]),
        _ => {}
    }
    let (src, dst) = match direction {
        Direction::Ingress => (remote, local),
        Direction::Egress => (local, remote),
    };
    Some(Packet {
        src,
        dst,
        proto,
        src_port,
        dst_port,
        icmp_type,
    })
}

/// The first or last address of `net`, or one just outside it.
fn near(tape: &mut Tape, net: &IpNet) -> IpAddr {
    match tape.pick(5) {
        0 | 1 => net.network(),
        2 => net.broadcast(),
        3 if net.prefix_len() > 0 => step(net.network(), -1),
        _ if net.prefix_len() > 0 => step(net.broadcast(), 1),
        _ => net.network(),
    }
}

fn edge_packet(
    tape: &mut Tape,
    rs: &Ruleset,
    edges: &Edges,
    eni: usize,
    direction: Direction,
) -> Packet {
    let v6 = tape.chance(3);
    let pool = if v6 { &edges.v6 } else { &edges.v4 };
    let fallback = if v6 {
        IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 9])
    } else {
        IpAddr::from([203, 0, 113, 9])
    };
    let from_pool = |tape: &mut Tape| {
        if pool.is_empty() {
            fallback
        } else {
            pool[tape.pick(pool.len())]
        }
    };
    let remote = from_pool(tape);
    let own: Vec<IpAddr> = rs.enis[eni]
        .ips
        .iter()
        .copied()
        .filter(|ip| ip.is_ipv6() == v6)
        .collect();
    let local = if !own.is_empty() && tape.pick(4) != 0 {
        own[tape.pick(own.len())]
    } else {
        from_pool(tape)
    };
    let proto = tape.choose(&[6u8, 17, 1, 58, 47, 132, 6, 17, 0]);
    let (mut src_port, mut dst_port, mut icmp_type) = (0, 0, 0);
    match proto {
        6 | 17 => {
            src_port = edges.ports[tape.pick(edges.ports.len())];
            dst_port = edges.ports[tape.pick(edges.ports.len())];
        }
        // Echo request, echo reply, and now and then neighbour discovery.
        1 | 58 => icmp_type = tape.choose(&[8u8, 0, 128, 129, 135, 133, 137, 3]),
        _ => {}
    }
    let (src, dst) = match direction {
        Direction::Ingress => (remote, local),
        Direction::Egress => (local, remote),
    };
    Packet {
        src,
        dst,
        proto,
        src_port,
        dst_port,
        icmp_type,
    }
}
