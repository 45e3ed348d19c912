//! Enforcement fixtures (issue 4, "Tests"): the named edge cases of SPEC §3
//! and §3.1, through both real programs with BPF_PROG_TEST_RUN.
//!
//! Table-driven, katran style: a fixture is a name, a rule-set document
//! (JSON, validated as `filterd` does), and a list of steps. A step sends a
//! packet in an ENI direction and states, by hand, what must happen: the
//! verdict, the one `FILTER_STATS` counter that moves (by exactly one,
//! alone), and the reason, checked as the `FILTER_RSTATS` slot that counts
//! the packet (named through `Compiled::slot_reasons`). A step can also
//! apply the next generation. The reference model (`eval::conntrack`) must
//! give the same verdict, counter and reason, so a fixture pins down the
//! SPEC, the model and the kernel at once.
//!
//! Every fixture runs in both attach modes (`tap`: ENI ingress is TC; `nic`:
//! ENI ingress is XDP), each on a fresh unpinned object with the ENI on
//! interface 1 (where test runs arrive). `FILTER_FIXTURE=<name>` runs only
//! the fixtures whose name contains it.
//!
//! Addresses: VPC `192.0.2.0/24` and `2001:db8::/48`, vSwitch
//! `192.0.2.0/26` and `2001:db8:0:1::/64`, the ENI `192.0.2.10` and
//! `2001:db8:0:1::10`;
//! remotes `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8:ff::/64`
//! (RFC 5737, RFC 3849).
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
};

use anyhow::{anyhow, bail, Context as _, Result};
use filter::{
    compile::{compile, Compiled, SlotTable},
    dataplane::{Dataplane, GenerationMaps},
    eval::conntrack::{Datagram, Fragment, Quote, Tracker},
    ruleset::{Direction, Ruleset},
    validate::load,
    verdict::{Packet, Verdict},
};
use filter_common::{
    HOT_RULE_SLOTS, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, RULE_SLOT_FIRST_DYNAMIC,
    STAT_ACCEPT_FRAGMENT, STAT_ACCEPT_NEW, STAT_ACCEPT_RELATED, STAT_ACCEPT_TRACKED, STAT_COUNT,
    STAT_DROP_DEFAULT, STAT_DROP_FRAGMENT, STAT_DROP_FRAG_NO_HEAD, STAT_DROP_NACL,
    STAT_DROP_REVALIDATE, STAT_DROP_SG_RULE, STAT_PASS_ND, STAT_PASS_UNGUARDED,
};
use filter_tests::{
    bpf::{stat_label, Prog, Verdict as ProgVerdict},
    packet::{tcp_flags, Ext, Frame, Icmp, Ipv4, Ipv6, Layer, Pkt, Tcp, Udp},
};
use serde_json::{json, Value};

const IFACE: &str = "t0";
const IFINDEX: u32 = 1;
const LOCAL4: &str = "192.0.2.10";
const LOCAL6: &str = "2001:db8:0:1::10";

const IN: Direction = Direction::Ingress;
const OUT: Direction = Direction::Egress;
const PASS: ProgVerdict = ProgVerdict::Pass;
const DROP: ProgVerdict = ProgVerdict::Drop;

// ---------------------------------------------------------------------------
// Documents
// ---------------------------------------------------------------------------

/// The world with the ENI in `groups` (ids, in order), `acl` (`null`: no
/// ACL on the vSwitch) and `conntrack` (`null`: defaults).
fn world(groups: Value, eni_groups: &[&str], acl: Value, conntrack: Value) -> Value {
    let mut vswitch = json!({"id": "vsw", "vpc_id": "vpc", "cidr": "192.0.2.0/26", "ipv6_cidr": "2001:db8:0:1::/64"});
    let mut doc = json!({
        "vpcs": [{"id": "vpc", "cidr": "192.0.2.0/24", "ipv6_cidr": "2001:db8::/48"}],
        "security_groups": groups,
        "enis": [{"id": "eni-web", "interface": IFACE, "attach_mode": "tap", "vswitch_id": "vsw",
                  "ips": [LOCAL4, LOCAL6], "security_group_ids": eni_groups}],
    });
    if !acl.is_null() {
        vswitch["network_acl_id"] = json!("acl");
        let mut acl = acl;
        acl["id"] = json!("acl");
        doc["network_acls"] = json!([acl]);
    }
    doc["vswitches"] = json!([vswitch]);
    if !conntrack.is_null() {
        doc["conntrack"] = conntrack;
    }
    doc
}

/// One basic group `sg` (inner access off) with `rules`, no ACL.
fn group(rules: Value) -> Value {
    world(
        json!([{"id": "sg", "vpc_id": "vpc", "type": "basic", "inner_access_policy": "drop", "rules": rules}]),
        &["sg"],
        Value::Null,
        Value::Null,
    )
}

/// One basic group `sg` (inner access off) with `rules`, and the ACL `acl`.
fn with_acl(rules: Value, acl: Value) -> Value {
    world(
        json!([{"id": "sg", "vpc_id": "vpc", "type": "basic", "inner_access_policy": "drop", "rules": rules}]),
        &["sg"],
        acl,
        Value::Null,
    )
}

/// An ingress accept rule for TCP `ports` from `cidr`.
fn tcp_in(id: &str, policy: &str, priority: u8, ports: &str, cidr: &str) -> Value {
    let peer = if cidr.contains(':') {
        "ipv6_source_cidr_ip"
    } else {
        "source_cidr_ip"
    };
    json!({"id": id, "direction": "ingress", "policy": policy, "priority": priority, "ip_protocol": "tcp",
           "port_range": ports, peer: cidr})
}

// ---------------------------------------------------------------------------
// Packets: a frame for the kernel and the same packet for the model
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Kind {
    Tcp(u8),
    Udp,
    /// ICMP (v4) or ICMPv6 echo of `type` with `id`.
    Echo(u8, u16),
    /// Any other ICMP/ICMPv6 type, no quote.
    Icmp(u8),
    /// An ICMP error of `type` quoting a packet.
    Error(u8, Box<P>),
}

#[derive(Clone, Debug)]
enum Frag {
    None,
    First(u32),
    Later(u32),
}

/// A fixture packet: `src`/`dst` are `ip:port` (or bare addresses for
/// protocols without ports).
#[derive(Clone, Debug)]
struct P {
    src: SocketAddr,
    dst: SocketAddr,
    kind: Kind,
    frag: Frag,
}

fn sock(text: &str) -> SocketAddr {
    text.parse()
        .or_else(|_| text.parse::<IpAddr>().map(|a| SocketAddr::new(a, 0)))
        .unwrap_or_else(|_| panic!("bad address {text:?} in a fixture"))
}

fn tcp(src: &str, dst: &str, flags: u8) -> P {
    P {
        src: sock(src),
        dst: sock(dst),
        kind: Kind::Tcp(flags),
        frag: Frag::None,
    }
}

fn syn(src: &str, dst: &str) -> P {
    tcp(src, dst, tcp_flags::SYN)
}

fn udp(src: &str, dst: &str) -> P {
    P {
        src: sock(src),
        dst: sock(dst),
        kind: Kind::Udp,
        frag: Frag::None,
    }
}

fn echo(src: &str, dst: &str, icmp_type: u8, id: u16) -> P {
    P {
        src: sock(src),
        dst: sock(dst),
        kind: Kind::Echo(icmp_type, id),
        frag: Frag::None,
    }
}

fn icmp(src: &str, dst: &str, icmp_type: u8) -> P {
    P {
        src: sock(src),
        dst: sock(dst),
        kind: Kind::Icmp(icmp_type),
        frag: Frag::None,
    }
}

fn error(src: &str, dst: &str, icmp_type: u8, quoted: P) -> P {
    P {
        src: sock(src),
        dst: sock(dst),
        kind: Kind::Error(icmp_type, Box::new(quoted)),
        frag: Frag::None,
    }
}

impl P {
    fn first_fragment(mut self, id: u32) -> P {
        self.frag = Frag::First(id);
        self
    }

    fn later_fragment(mut self, id: u32) -> P {
        self.frag = Frag::Later(id);
        self
    }

    fn is_v6(&self) -> bool {
        self.dst.is_ipv6()
    }

    fn proto(&self) -> u8 {
        match self.kind {
            Kind::Tcp(_) => PROTO_TCP,
            Kind::Udp => PROTO_UDP,
            _ if self.is_v6() => PROTO_ICMPV6,
            _ => PROTO_ICMP,
        }
    }

    fn l4(&self) -> Layer {
        let v6 = self.is_v6();
        match &self.kind {
            Kind::Tcp(flags) => Tcp::new(self.src.port(), self.dst.port())
                .flags(*flags)
                .into(),
            Kind::Udp => Udp::new(self.src.port(), self.dst.port()).into(),
            Kind::Echo(icmp_type, id) => {
                let mut m = if v6 {
                    Icmp::v6_echo_request(*id, 1)
                } else {
                    Icmp::echo_request(*id, 1)
                };
                m.icmp_type = *icmp_type;
                m.into()
            }
            Kind::Icmp(icmp_type) if v6 => Icmp::v6(*icmp_type, 0).body(&[0; 20]).into(),
            Kind::Icmp(icmp_type) => Icmp::v4(*icmp_type, 0).body(&[0; 8]).into(),
            Kind::Error(icmp_type, quoted) if v6 => {
                Icmp::v6_error(*icmp_type, 0, quoted.ip_packet()).into()
            }
            Kind::Error(icmp_type, quoted) => Icmp::error(*icmp_type, 0, quoted.ip_packet()).into(),
        }
    }

    /// From the IP header on.
    fn layers(&self) -> Vec<Layer> {
        let (src, dst) = (self.src.ip(), self.dst.ip());
        let mut out: Vec<Layer> = Vec::new();
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut h = Ipv4::new(s.octets(), d.octets());
                match self.frag {
                    Frag::None => {}
                    Frag::First(id) => h = h.fragment(id as u16, 0, true),
                    Frag::Later(id) => h = h.fragment(id as u16, 4, false).proto(self.proto()),
                }
                out.push(h.into());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                out.push(Ipv6::new(s.octets(), d.octets()).into());
                match self.frag {
                    Frag::None => {}
                    Frag::First(id) => out.push(Ext::fragment(0, true, id).into()),
                    Frag::Later(id) => {
                        out.push(Ext::fragment(4, false, id).next_header(self.proto()).into())
                    }
                }
            }
            _ => panic!("mixed families in a fixture packet"),
        }
        match self.frag {
            Frag::Later(_) => out.push(Layer::Raw(vec![0x33; 32])),
            _ => out.push(self.l4()),
        }
        out
    }

    fn ip_packet(&self) -> Frame {
        let mut p = Pkt::new();
        for l in self.layers() {
            p = p.push(l);
        }
        p.build()
    }

    fn frame(&self) -> Frame {
        let mut p = Pkt::eth();
        for l in self.layers() {
            p = p.push(l);
        }
        p.payload(b"fixture").build()
    }

    fn header(&self) -> Packet {
        let mut h = Packet {
            src: self.src.ip(),
            dst: self.dst.ip(),
            proto: self.proto(),
            src_port: 0,
            dst_port: 0,
            icmp_type: 0,
        };
        if let Frag::Later(_) = self.frag {
            return h;
        }
        match &self.kind {
            Kind::Tcp(_) | Kind::Udp => {
                h.src_port = self.src.port();
                h.dst_port = self.dst.port();
            }
            Kind::Echo(t, _) | Kind::Icmp(t) | Kind::Error(t, _) => h.icmp_type = *t,
        }
        h
    }

    fn echo_id(&self) -> u16 {
        match self.kind {
            Kind::Echo(_, id) => id,
            _ => 0,
        }
    }

    fn datagram(&self, frame_len: usize) -> Datagram {
        let mut d = Datagram::new(self.header())
            .echo_id(self.echo_id())
            .bytes((frame_len - 14) as u32);
        match self.frag {
            Frag::None => {}
            Frag::First(id) => {
                d = d.fragment(Fragment::First {
                    id: self.frag_id(id),
                })
            }
            Frag::Later(id) => {
                d = d.fragment(Fragment::Later {
                    id: self.frag_id(id),
                })
            }
        }
        if let (Kind::Tcp(flags), Frag::None | Frag::First(_)) = (&self.kind, &self.frag) {
            d = d.tcp_flags(*flags);
        }
        if let Kind::Error(_, quoted) = &self.kind {
            d = d.quote(Quote {
                header: quoted.header(),
                icmp_id: quoted.echo_id(),
            });
        }
        d
    }

    fn frag_id(&self, id: u32) -> u32 {
        if self.is_v6() {
            id
        } else {
            id & 0xffff
        }
    }
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// What one packet must come to.
#[derive(Clone, Debug)]
struct Expect {
    verdict: ProgVerdict,
    stat: u32,
    /// The reason (SPEC §3 step 6 text); `None` when no rule slot counts
    /// the packet (a later fragment without a first fragment).
    reason: Option<&'static str>,
}

#[derive(Clone, Debug)]
enum Step {
    Send(Direction, P, Expect),
    /// Apply the next generation.
    Apply(Value),
}

struct Fixture {
    name: &'static str,
    doc: Value,
    steps: Vec<Step>,
}

fn send(dir: Direction, p: P, verdict: ProgVerdict, stat: u32, reason: &'static str) -> Step {
    Step::Send(
        dir,
        p,
        Expect {
            verdict,
            stat,
            reason: Some(reason),
        },
    )
}

fn fx(name: &'static str, doc: Value, steps: Vec<Step>) -> Fixture {
    Fixture { name, doc, steps }
}

fn precedence() -> Vec<Fixture> {
    vec![
        fx(
            "priority_1_beats_100",
            group(json!([
                tcp_in("open", "accept", 100, "80/80", "0.0.0.0/0"),
                tcp_in("closed", "drop", 1, "80/80", "198.51.100.0/24"),
                tcp_in("ssh", "accept", 1, "22/22", "0.0.0.0/0"),
                tcp_in("no-ssh", "drop", 100, "22/22", "0.0.0.0/0"),
            ])),
            vec![
                send(
                    IN,
                    syn("198.51.100.1:40000", "192.0.2.10:80"),
                    DROP,
                    STAT_DROP_SG_RULE,
                    "sg/closed",
                ),
                send(
                    IN,
                    syn("203.0.113.1:40000", "192.0.2.10:80"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg/open",
                ),
                send(
                    IN,
                    syn("198.51.100.1:40000", "192.0.2.10:22"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg/ssh",
                ),
            ],
        ),
        fx(
            "tie_across_two_groups_deny_wins",
            world(
                json!([
                    {"id": "sg-a", "vpc_id": "vpc", "type": "basic", "inner_access_policy": "drop",
                     "rules": [tcp_in("web", "accept", 5, "80/80", "0.0.0.0/0"),
                               tcp_in("web6", "accept", 5, "80/80", "::/0")]},
                    {"id": "sg-b", "vpc_id": "vpc", "type": "basic", "inner_access_policy": "drop",
                     "rules": [tcp_in("block", "drop", 5, "1/65535", "198.51.100.0/24"),
                               tcp_in("block6", "drop", 5, "80/80", "2001:db8:ff::1/128")]},
                ]),
                &["sg-a", "sg-b"],
                Value::Null,
                Value::Null,
            ),
            vec![
                send(
                    IN,
                    syn("198.51.100.1:40000", "192.0.2.10:80"),
                    DROP,
                    STAT_DROP_SG_RULE,
                    "sg-b/block",
                ),
                send(
                    IN,
                    syn("203.0.113.1:40000", "192.0.2.10:80"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg-a/web",
                ),
                send(
                    IN,
                    syn("[2001:db8:ff::1]:40000", "[2001:db8:0:1::10]:80"),
                    DROP,
                    STAT_DROP_SG_RULE,
                    "sg-b/block6",
                ),
                send(
                    IN,
                    syn("[2001:db8:ff::2]:40000", "[2001:db8:0:1::10]:80"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg-a/web6",
                ),
            ],
        ),
        fx(
            "slash_0_and_slash_32",
            group(json!([
                tcp_in("any", "accept", 2, "22/22", "0.0.0.0/0"),
                tcp_in("one", "drop", 1, "22/22", "198.51.100.7/32"),
                tcp_in("any6", "accept", 2, "22/22", "::/0"),
                tcp_in("one6", "drop", 1, "22/22", "2001:db8:ff::7/128"),
            ])),
            vec![
                send(
                    IN,
                    syn("198.51.100.7:40000", "192.0.2.10:22"),
                    DROP,
                    STAT_DROP_SG_RULE,
                    "sg/one",
                ),
                send(
                    IN,
                    syn("198.51.100.6:40000", "192.0.2.10:22"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg/any",
                ),
                send(
                    IN,
                    syn("198.51.100.8:40000", "192.0.2.10:22"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg/any",
                ),
                // The ends of the /0: the lowest and the highest address.
                send(
                    IN,
                    syn("0.0.0.1:40000", "192.0.2.10:22"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg/any",
                ),
                send(
                    IN,
                    syn("255.255.255.254:40000", "192.0.2.10:22"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg/any",
                ),
                send(
                    IN,
                    syn("[2001:db8:ff::7]:40000", "[2001:db8:0:1::10]:22"),
                    DROP,
                    STAT_DROP_SG_RULE,
                    "sg/one6",
                ),
                send(
                    IN,
                    syn("[2001:db8:ff::8]:40000", "[2001:db8:0:1::10]:22"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg/any6",
                ),
                // An IPv4 /0 does not cover IPv6, nor `::/0` IPv4: no rule
                // for port 23 in either family.
                send(
                    IN,
                    syn("198.51.100.7:40000", "192.0.2.10:23"),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
            ],
        ),
        fx(
            "port_range_ends",
            group(json!([
                tcp_in("range", "accept", 1, "1000/2000", "0.0.0.0/0"),
                tcp_in("all", "accept", 1, "1/65535", "203.0.113.0/24"),
                {"id": "dns", "direction": "ingress", "policy": "accept", "ip_protocol": "udp",
                 "port_range": "53/53", "source_cidr_ip": "0.0.0.0/0"},
            ])),
            vec![
                send(
                    IN,
                    syn("198.51.100.1:40000", "192.0.2.10:999"),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
                send(
                    IN,
                    syn("198.51.100.1:40000", "192.0.2.10:1000"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg/range",
                ),
                send(
                    IN,
                    syn("198.51.100.1:40001", "192.0.2.10:2000"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg/range",
                ),
                send(
                    IN,
                    syn("198.51.100.1:40002", "192.0.2.10:2001"),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
                send(
                    IN,
                    syn("203.0.113.1:40000", "192.0.2.10:1"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg/all",
                ),
                send(
                    IN,
                    syn("203.0.113.1:40000", "192.0.2.10:65535"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg/all",
                ),
                // Ports are per protocol: UDP 1000 is not TCP 1000.
                send(
                    IN,
                    udp("198.51.100.1:40000", "192.0.2.10:1000"),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
                send(
                    IN,
                    udp("198.51.100.1:40000", "192.0.2.10:53"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg/dns",
                ),
                send(
                    IN,
                    udp("198.51.100.1:40000", "192.0.2.10:54"),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
            ],
        ),
        fx(
            "inner_access_accept_wins_over_rules",
            world(
                json!([{"id": "sg", "vpc_id": "vpc", "type": "basic", "inner_access_policy": "accept",
                        "member_ips": ["198.51.100.9", "2001:db8:ff::9"],
                        "rules": [tcp_in("no-web", "drop", 1, "80/80", "0.0.0.0/0")]}]),
                &["sg"],
                Value::Null,
                Value::Null,
            ),
            vec![
                send(
                    IN,
                    syn("198.51.100.9:40000", "192.0.2.10:80"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "inner-accept:sg",
                ),
                send(
                    IN,
                    udp("198.51.100.9:40000", "192.0.2.10:9"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "inner-accept:sg",
                ),
                send(
                    IN,
                    echo("2001:db8:ff::9", LOCAL6, 128, 3),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "inner-accept:sg",
                ),
                // Not a member: the rules, then the default.
                send(
                    IN,
                    syn("198.51.100.8:40000", "192.0.2.10:80"),
                    DROP,
                    STAT_DROP_SG_RULE,
                    "sg/no-web",
                ),
                send(
                    IN,
                    udp("198.51.100.8:40000", "192.0.2.10:9"),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
            ],
        ),
        fx(
            "advanced_egress_default_drops",
            world(
                json!([{"id": "sg", "vpc_id": "vpc", "type": "advanced",
                        "rules": [{"id": "web", "direction": "egress", "policy": "accept", "ip_protocol": "tcp",
                                   "port_range": "443/443", "dest_cidr_ip": "0.0.0.0/0"}]}]),
                &["sg"],
                Value::Null,
                Value::Null,
            ),
            vec![
                send(
                    OUT,
                    syn("192.0.2.10:40000", "198.51.100.1:80"),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
                send(
                    OUT,
                    udp("192.0.2.10:40000", "198.51.100.1:53"),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
                send(
                    OUT,
                    syn("192.0.2.10:40000", "198.51.100.1:443"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg/web",
                ),
            ],
        ),
        fx(
            "basic_egress_default_accepts",
            group(json!([])),
            vec![
                send(
                    OUT,
                    syn("192.0.2.10:40000", "198.51.100.1:80"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "default-accept",
                ),
                send(
                    OUT,
                    echo(LOCAL6, "2001:db8:ff::1", 128, 1),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "default-accept",
                ),
                // Ingress stays default-deny.
                send(
                    IN,
                    syn("198.51.100.1:40000", "192.0.2.10:80"),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
            ],
        ),
    ]
}

fn conntrack() -> Vec<Fixture> {
    let client = || group(json!([]));
    vec![
        fx(
            "reply_of_an_allowed_flow_is_tracked",
            client(),
            vec![
                send(
                    OUT,
                    syn("192.0.2.10:40000", "198.51.100.1:80"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "default-accept",
                ),
                send(
                    IN,
                    tcp("198.51.100.1:80", "192.0.2.10:40000", 0x12),
                    PASS,
                    STAT_ACCEPT_TRACKED,
                    "tracked",
                ),
                send(
                    OUT,
                    tcp("192.0.2.10:40000", "198.51.100.1:80", 0x10),
                    PASS,
                    STAT_ACCEPT_TRACKED,
                    "tracked",
                ),
                send(
                    IN,
                    tcp("198.51.100.1:80", "192.0.2.10:40000", 0x11),
                    PASS,
                    STAT_ACCEPT_TRACKED,
                    "tracked",
                ),
                send(
                    OUT,
                    udp("192.0.2.10:5353", "198.51.100.1:53"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "default-accept",
                ),
                send(
                    IN,
                    udp("198.51.100.1:53", "192.0.2.10:5353"),
                    PASS,
                    STAT_ACCEPT_TRACKED,
                    "tracked",
                ),
                send(
                    OUT,
                    echo(LOCAL4, "198.51.100.1", 8, 77),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "default-accept",
                ),
                send(
                    IN,
                    echo("198.51.100.1", LOCAL4, 0, 77),
                    PASS,
                    STAT_ACCEPT_TRACKED,
                    "tracked",
                ),
                send(
                    OUT,
                    echo(LOCAL6, "2001:db8:ff::1", 128, 78),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "default-accept",
                ),
                send(
                    IN,
                    echo("2001:db8:ff::1", LOCAL6, 129, 78),
                    PASS,
                    STAT_ACCEPT_TRACKED,
                    "tracked",
                ),
            ],
        ),
        fx(
            "reply_without_a_flow_drops",
            client(),
            vec![
                send(
                    IN,
                    tcp("198.51.100.1:80", "192.0.2.10:40000", 0x12),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
                send(
                    IN,
                    udp("198.51.100.1:53", "192.0.2.10:5353"),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
                // Same hosts, another port or echo id: another flow.
                send(
                    OUT,
                    syn("192.0.2.10:40000", "198.51.100.1:80"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "default-accept",
                ),
                send(
                    IN,
                    tcp("198.51.100.1:80", "192.0.2.10:40001", 0x12),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
                send(
                    OUT,
                    echo(LOCAL4, "198.51.100.1", 8, 1),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "default-accept",
                ),
                send(
                    IN,
                    echo("198.51.100.1", LOCAL4, 0, 2),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
            ],
        ),
        fx(
            "icmp_error_about_a_tracked_flow_is_related",
            client(),
            vec![
                send(
                    OUT,
                    udp("192.0.2.10:5353", "198.51.100.1:53"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "default-accept",
                ),
                send(
                    IN,
                    error(
                        "198.51.100.1",
                        LOCAL4,
                        3,
                        udp("192.0.2.10:5353", "198.51.100.1:53"),
                    ),
                    PASS,
                    STAT_ACCEPT_RELATED,
                    "tracked",
                ),
                // Time exceeded from a router on the way.
                send(
                    IN,
                    error(
                        "203.0.113.1",
                        LOCAL4,
                        11,
                        udp("192.0.2.10:5353", "198.51.100.1:53"),
                    ),
                    PASS,
                    STAT_ACCEPT_RELATED,
                    "tracked",
                ),
                // Quoting a flow that is not tracked.
                send(
                    IN,
                    error(
                        "198.51.100.1",
                        LOCAL4,
                        3,
                        udp("192.0.2.10:5354", "198.51.100.1:53"),
                    ),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
                // IPv6 packet too big for a TCP flow.
                send(
                    OUT,
                    syn("[2001:db8:0:1::10]:40000", "[2001:db8:ff::1]:443"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "default-accept",
                ),
                send(
                    IN,
                    error(
                        "2001:db8:ff::fe",
                        LOCAL6,
                        2,
                        syn("[2001:db8:0:1::10]:40000", "[2001:db8:ff::1]:443"),
                    ),
                    PASS,
                    STAT_ACCEPT_RELATED,
                    "tracked",
                ),
            ],
        ),
        // SPEC §3.1: an echo entry admits replies the other way only; the
        // far side's request reusing the id is a first packet (ingress:
        // default-deny). An echo reply the instance sends opens nothing.
        fx(
            "echo_entries_are_directional",
            client(),
            vec![
                send(
                    OUT,
                    echo(LOCAL4, "198.51.100.1", 8, 90),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "default-accept",
                ),
                send(
                    IN,
                    echo("198.51.100.1", LOCAL4, 8, 90),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
                send(
                    IN,
                    echo("198.51.100.1", LOCAL4, 0, 90),
                    PASS,
                    STAT_ACCEPT_TRACKED,
                    "tracked",
                ),
                send(
                    OUT,
                    echo(LOCAL6, "2001:db8:ff::1", 128, 91),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "default-accept",
                ),
                send(
                    IN,
                    echo("2001:db8:ff::1", LOCAL6, 128, 91),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
                send(
                    OUT,
                    echo(LOCAL4, "198.51.100.2", 0, 92),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "default-accept",
                ),
                send(
                    IN,
                    echo("198.51.100.2", LOCAL4, 8, 92),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
            ],
        ),
        // An ICMP error the instance sends opens no entry by address pair,
        // and an entry by address pair never takes an ICMP error as tracked
        // (only as related, when it quotes a tracked connection).
        fx(
            "icmp_error_from_the_instance_opens_nothing",
            client(),
            vec![
                send(
                    OUT,
                    error(
                        LOCAL4,
                        "198.51.100.1",
                        3,
                        udp("198.51.100.1:53", "192.0.2.10:5353"),
                    ),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "default-accept",
                ),
                send(
                    IN,
                    icmp("198.51.100.1", LOCAL4, 13),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
                send(
                    IN,
                    error(
                        "198.51.100.1",
                        LOCAL4,
                        3,
                        udp("192.0.2.10:5353", "198.51.100.1:53"),
                    ),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
                send(
                    OUT,
                    icmp(LOCAL4, "198.51.100.2", 13),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "default-accept",
                ),
                send(
                    IN,
                    icmp("198.51.100.2", LOCAL4, 14),
                    PASS,
                    STAT_ACCEPT_TRACKED,
                    "tracked",
                ),
                send(
                    IN,
                    error(
                        "198.51.100.2",
                        LOCAL4,
                        3,
                        udp("192.0.2.10:6000", "198.51.100.2:53"),
                    ),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
            ],
        ),
        fx(
            "later_fragment_without_head_drops",
            group(
                json!([{"id": "dns", "direction": "ingress", "policy": "accept", "ip_protocol": "udp",
                          "port_range": "53/53", "source_cidr_ip": "0.0.0.0/0"},
                         {"id": "dns6", "direction": "ingress", "policy": "accept", "ip_protocol": "udp",
                          "port_range": "53/53", "ipv6_source_cidr_ip": "::/0"}]),
            ),
            vec![
                Step::Send(
                    IN,
                    udp("198.51.100.1:4000", "192.0.2.10:53").later_fragment(7),
                    Expect {
                        verdict: DROP,
                        stat: STAT_DROP_FRAG_NO_HEAD,
                        reason: None,
                    },
                ),
                Step::Send(
                    IN,
                    udp("[2001:db8:ff::1]:4000", "[2001:db8:0:1::10]:53").later_fragment(7),
                    Expect {
                        verdict: DROP,
                        stat: STAT_DROP_FRAG_NO_HEAD,
                        reason: None,
                    },
                ),
                // With its head: the head's verdict and reason.
                send(
                    IN,
                    udp("198.51.100.1:4000", "192.0.2.10:53").first_fragment(8),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg/dns",
                ),
                send(
                    IN,
                    udp("198.51.100.1:4000", "192.0.2.10:53").later_fragment(8),
                    PASS,
                    STAT_ACCEPT_FRAGMENT,
                    "sg/dns",
                ),
                send(
                    IN,
                    udp("[2001:db8:ff::1]:4000", "[2001:db8:0:1::10]:53").first_fragment(8),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg/dns6",
                ),
                send(
                    IN,
                    udp("[2001:db8:ff::1]:4000", "[2001:db8:0:1::10]:53").later_fragment(8),
                    PASS,
                    STAT_ACCEPT_FRAGMENT,
                    "sg/dns6",
                ),
                // A dropped head takes its later fragments with it.
                send(
                    IN,
                    udp("198.51.100.1:4000", "192.0.2.10:54").first_fragment(9),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
                send(
                    IN,
                    udp("198.51.100.1:4000", "192.0.2.10:54").later_fragment(9),
                    DROP,
                    STAT_DROP_FRAGMENT,
                    "default-deny",
                ),
            ],
        ),
        fx(
            "neighbour_discovery_passes",
            with_acl(json!([]), json!({"ingress": [], "egress": []})),
            vec![
                send(IN, icmp("fe80::1", LOCAL6, 135), PASS, STAT_PASS_ND, "pass"),
                send(
                    IN,
                    icmp("fe80::1", "ff02::1", 134),
                    PASS,
                    STAT_PASS_ND,
                    "pass",
                ),
                send(
                    OUT,
                    icmp(LOCAL6, "fe80::1", 136),
                    PASS,
                    STAT_PASS_ND,
                    "pass",
                ),
                send(
                    OUT,
                    icmp(LOCAL6, "ff02::2", 133),
                    PASS,
                    STAT_PASS_ND,
                    "pass",
                ),
                send(IN, icmp("fe80::1", LOCAL6, 137), PASS, STAT_PASS_ND, "pass"),
                // Echo is not neighbour discovery: the empty ACL drops it.
                send(
                    IN,
                    echo("2001:db8:ff::1", LOCAL6, 128, 1),
                    DROP,
                    STAT_DROP_NACL,
                    "nacl:acl/default-deny",
                ),
            ],
        ),
    ]
}

fn nacl() -> Vec<Fixture> {
    let web = json!([
        tcp_in("web", "accept", 1, "80/80", "0.0.0.0/0"),
        tcp_in("web6", "accept", 1, "80/80", "::/0"),
        tcp_in("ssh", "accept", 1, "22/22", "0.0.0.0/0")
    ]);
    vec![
        fx(
            "nacl_first_match_decides",
            with_acl(
                web.clone(),
                json!({"ingress": [
                    {"name": "no-ssh", "policy": "drop", "protocol": "tcp", "port": "22/22", "source_cidr_ip": "198.51.100.0/24"},
                    {"name": "ssh", "policy": "accept", "protocol": "tcp", "port": "22/22", "source_cidr_ip": "0.0.0.0/0"},
                    {"name": "all", "policy": "accept", "protocol": "all", "source_cidr_ip": "0.0.0.0/0"}],
                       "egress": [{"name": "all", "policy": "accept", "protocol": "all", "destination_cidr_ip": "0.0.0.0/0"}]}),
            ),
            vec![
                send(
                    IN,
                    syn("198.51.100.1:40000", "192.0.2.10:22"),
                    DROP,
                    STAT_DROP_NACL,
                    "nacl:acl/no-ssh",
                ),
                send(
                    IN,
                    syn("203.0.113.1:40000", "192.0.2.10:22"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg/ssh",
                ),
                // The NACL accepts, then the groups decide and name it.
                send(
                    IN,
                    syn("198.51.100.1:40000", "192.0.2.10:80"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg/web",
                ),
                send(
                    IN,
                    syn("198.51.100.1:40000", "192.0.2.10:81"),
                    DROP,
                    STAT_DROP_DEFAULT,
                    "default-deny",
                ),
            ],
        ),
        fx(
            "nacl_no_match_drops",
            with_acl(
                web.clone(),
                json!({"ingress": [{"name": "c", "policy": "accept", "protocol": "all", "source_cidr_ip": "203.0.113.0/24"}],
                       "egress": [{"name": "c", "policy": "accept", "protocol": "all", "destination_cidr_ip": "203.0.113.0/24"}]}),
            ),
            vec![
                send(
                    IN,
                    syn("198.51.100.1:40000", "192.0.2.10:80"),
                    DROP,
                    STAT_DROP_NACL,
                    "nacl:acl/default-deny",
                ),
                send(
                    IN,
                    syn("203.0.113.1:40000", "192.0.2.10:80"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg/web",
                ),
                // Egress: the groups accept (basic default), the NACL drops
                // last, and nothing is tracked: the answer drops.
                send(
                    OUT,
                    syn("192.0.2.10:40000", "198.51.100.1:80"),
                    DROP,
                    STAT_DROP_NACL,
                    "nacl:acl/default-deny",
                ),
                send(
                    IN,
                    tcp("198.51.100.1:80", "192.0.2.10:40000", 0x12),
                    DROP,
                    STAT_DROP_NACL,
                    "nacl:acl/default-deny",
                ),
                // IPv6: no entry of its family.
                send(
                    IN,
                    syn("[2001:db8:ff::1]:40000", "[2001:db8:0:1::10]:80"),
                    DROP,
                    STAT_DROP_NACL,
                    "nacl:acl/default-deny",
                ),
            ],
        ),
        fx(
            "nacl_skipped_inside_the_vswitch",
            with_acl(web.clone(), json!({"ingress": [], "egress": []})),
            vec![
                send(
                    IN,
                    syn("192.0.2.20:40000", "192.0.2.10:80"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg/web",
                ),
                send(
                    OUT,
                    syn("192.0.2.10:40000", "192.0.2.63:9"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "default-accept",
                ),
                send(
                    IN,
                    syn("[2001:db8:0:1::20]:40000", "[2001:db8:0:1::10]:80"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg/web6",
                ),
                // The VPC outside the vSwitch is not inside.
                send(
                    IN,
                    syn("192.0.2.64:40000", "192.0.2.10:80"),
                    DROP,
                    STAT_DROP_NACL,
                    "nacl:acl/default-deny",
                ),
            ],
        ),
        fx(
            "nacl_sees_tracked_packets",
            with_acl(
                web,
                json!({"ingress": [{"name": "no-b", "policy": "drop", "protocol": "all", "source_cidr_ip": "198.51.100.2/32"},
                                   {"name": "all", "policy": "accept", "protocol": "all", "source_cidr_ip": "0.0.0.0/0"}],
                       "egress": [{"name": "all", "policy": "accept", "protocol": "all", "destination_cidr_ip": "0.0.0.0/0"}]}),
            ),
            vec![
                send(
                    OUT,
                    syn("192.0.2.10:40000", "198.51.100.2:80"),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "default-accept",
                ),
                // Tracked, but the stateless NACL comes first on ingress.
                send(
                    IN,
                    tcp("198.51.100.2:80", "192.0.2.10:40000", 0x12),
                    DROP,
                    STAT_DROP_NACL,
                    "nacl:acl/no-b",
                ),
            ],
        ),
        // Non-echo ICMP is tracked by address pair, so one entry meets
        // packets in both orientations on the same hook. Each way has its
        // own remote endpoint and so its own NACL verdict: the fast path
        // must not carry one way's accept over to another.
        fx(
            "nacl_judges_each_way_of_a_tracked_pair",
            world(
                json!([{"id": "sg", "vpc_id": "vpc", "type": "advanced",
                        "rules": [{"id": "inside", "direction": "egress", "policy": "accept", "priority": 1,
                                   "ip_protocol": "all", "port_range": "-1/-1", "dest_cidr_ip": "192.0.2.0/26"}]}]),
                &["sg"],
                json!({"ingress": [], "egress": []}),
                Value::Null,
            ),
            vec![
                // The remote end is inside the vSwitch: the NACL skips.
                send(
                    OUT,
                    icmp("203.0.113.7", "192.0.2.20", 13),
                    PASS,
                    STAT_ACCEPT_NEW,
                    "sg/inside",
                ),
                send(
                    IN,
                    icmp("192.0.2.20", "203.0.113.7", 14),
                    PASS,
                    STAT_ACCEPT_TRACKED,
                    "tracked",
                ),
                // The same pair, the other way on egress: the remote end is
                // outside now, and the empty ACL denies.
                send(
                    OUT,
                    icmp("192.0.2.20", "203.0.113.7", 13),
                    DROP,
                    STAT_DROP_NACL,
                    "nacl:acl/default-deny",
                ),
            ],
        ),
    ]
}

fn revalidation() -> Vec<Fixture> {
    let gen1 = |on_change: &str| {
        world(
            json!([{"id": "sg", "vpc_id": "vpc", "type": "advanced",
                    "rules": [{"id": "web", "direction": "egress", "policy": "accept", "ip_protocol": "tcp",
                               "port_range": "80/80", "dest_cidr_ip": "198.51.100.0/24"}]}]),
            &["sg"],
            Value::Null,
            json!({"on_change": on_change}),
        )
    };
    let gen2 = |rules: Value, on_change: &str| {
        world(
            json!([{"id": "sg", "vpc_id": "vpc", "type": "advanced", "rules": rules}]),
            &["sg"],
            Value::Null,
            json!({"on_change": on_change}),
        )
    };
    let open = || {
        vec![
            send(
                OUT,
                syn("192.0.2.10:40000", "198.51.100.1:80"),
                PASS,
                STAT_ACCEPT_NEW,
                "sg/web",
            ),
            send(
                IN,
                tcp("198.51.100.1:80", "192.0.2.10:40000", 0x12),
                PASS,
                STAT_ACCEPT_TRACKED,
                "tracked",
            ),
        ]
    };
    let reply = || tcp("198.51.100.1:80", "192.0.2.10:40000", 0x10);
    let mut cut = open();
    cut.extend([
        Step::Apply(gen2(json!([]), "revalidate")),
        // The reply arrives on ingress; the connection is judged as it began
        // (egress to port 80), which the new generation drops by default.
        send(IN, reply(), DROP, STAT_DROP_REVALIDATE, "default-deny"),
        // Cut: now it is a first packet, and inbound is default-deny.
        send(IN, reply(), DROP, STAT_DROP_DEFAULT, "default-deny"),
    ]);
    let mut cut_by_rule = open();
    cut_by_rule.extend([
        Step::Apply(gen2(
            json!([{"id": "no-web", "direction": "egress", "policy": "drop", "ip_protocol": "tcp",
                    "port_range": "80/80", "dest_cidr_ip": "198.51.100.1/32"}]),
            "revalidate",
        )),
        send(
            OUT,
            tcp("192.0.2.10:40000", "198.51.100.1:80", 0x10),
            DROP,
            STAT_DROP_REVALIDATE,
            "sg/no-web",
        ),
    ]);
    let mut still_allowed = open();
    still_allowed.extend([
        Step::Apply(gen2(
            json!([{"id": "all-out", "direction": "egress", "policy": "accept", "ip_protocol": "all",
                    "dest_cidr_ip": "0.0.0.0/0"}]),
            "revalidate",
        )),
        send(IN, reply(), PASS, STAT_ACCEPT_TRACKED, "tracked"),
        send(OUT, tcp("192.0.2.10:40000", "198.51.100.1:80", 0x10), PASS, STAT_ACCEPT_TRACKED, "tracked"),
    ]);
    let mut keep = open();
    keep.extend([
        Step::Apply(gen2(json!([]), "keep")),
        send(IN, reply(), PASS, STAT_ACCEPT_TRACKED, "tracked"),
        // New connections meet the new rules.
        send(
            OUT,
            syn("192.0.2.10:40001", "198.51.100.1:80"),
            DROP,
            STAT_DROP_DEFAULT,
            "default-deny",
        ),
    ]);
    // An established connection on an ENI without a NACL is decided by its
    // conntrack entry alone (the fast path); a generation that adds a NACL,
    // or leaves the ENI out, must still reach its next packet.
    let web = || json!([tcp_in("web", "accept", 1, "80/80", "0.0.0.0/0")]);
    let peer_in = |flags| tcp("198.51.100.1:40000", "192.0.2.10:80", flags);
    let server_out = || tcp("192.0.2.10:80", "198.51.100.1:40000", 0x10);
    let established = || {
        vec![
            send(
                IN,
                syn("198.51.100.1:40000", "192.0.2.10:80"),
                PASS,
                STAT_ACCEPT_NEW,
                "sg/web",
            ),
            send(
                OUT,
                tcp("192.0.2.10:80", "198.51.100.1:40000", 0x12),
                PASS,
                STAT_ACCEPT_TRACKED,
                "tracked",
            ),
            send(IN, peer_in(0x10), PASS, STAT_ACCEPT_TRACKED, "tracked"),
        ]
    };
    let mut nacl_added = established();
    nacl_added.extend([
        Step::Apply(with_acl(
            web(),
            json!({"ingress": [
                {"name": "no-peer", "policy": "drop", "protocol": "all", "source_cidr_ip": "198.51.100.0/24"},
                {"name": "all", "policy": "accept", "protocol": "all", "source_cidr_ip": "0.0.0.0/0"}],
                   "egress": [{"name": "all", "policy": "accept", "protocol": "all", "destination_cidr_ip": "0.0.0.0/0"}]}),
        )),
        // Stateless: the tracked connection meets the new NACL...
        send(IN, peer_in(0x10), DROP, STAT_DROP_NACL, "nacl:acl/no-peer"),
        send(OUT, server_out(), PASS, STAT_ACCEPT_TRACKED, "tracked"),
        // ...and lives on when it goes.
        Step::Apply(group(web())),
        send(IN, peer_in(0x10), PASS, STAT_ACCEPT_TRACKED, "tracked"),
    ]);
    let mut eni_left_out = established();
    let mut unguarded = group(web());
    unguarded["enis"] = json!([]);
    eni_left_out.extend([
        Step::Apply(unguarded),
        send(IN, peer_in(0x10), PASS, STAT_PASS_UNGUARDED, "pass"),
        Step::Apply(group(web())),
        send(IN, peer_in(0x10), PASS, STAT_ACCEPT_TRACKED, "tracked"),
    ]);
    vec![
        fx(
            "a_nacl_added_later_meets_established_connections",
            group(web()),
            nacl_added,
        ),
        fx(
            "an_eni_left_out_of_a_generation_is_not_filtered",
            group(web()),
            eni_left_out,
        ),
        fx(
            "revalidation_cuts_a_connection_the_new_rules_drop",
            gen1("revalidate"),
            cut,
        ),
        fx(
            "revalidation_names_the_dropping_rule",
            gen1("revalidate"),
            cut_by_rule,
        ),
        fx(
            "revalidation_keeps_a_connection_still_allowed",
            gen1("revalidate"),
            still_allowed,
        ),
        fx("on_change_keep_keeps_connections", gen1("keep"), keep),
    ]
}

fn fixtures() -> Vec<Fixture> {
    let mut all = precedence();
    all.extend(conntrack());
    all.extend(nacl());
    all.extend(revalidation());
    all
}

// ---------------------------------------------------------------------------
// Running a fixture
// ---------------------------------------------------------------------------

fn ifindex_of(name: &str) -> Option<u32> {
    (name == IFACE).then_some(IFINDEX)
}

/// Compiles `rs` as `generation` and writes it with the loader.
fn apply(
    dp: &mut Dataplane,
    rs: &Ruleset,
    generation: u32,
    slots: &mut SlotTable,
) -> Result<Compiled> {
    let c = compile(rs, generation, &ifindex_of, slots).map_err(|e| anyhow!("compile: {e}"))?;
    for slot in &c.fresh_slots {
        dp.reset_rule_stats(*slot)?;
    }
    dp.write_generation(&GenerationMaps::from(&c))
        .with_context(|| format!("writing generation {generation}"))?;
    Ok(c)
}

fn ruleset(doc: &Value, mode: &str) -> Result<Ruleset> {
    let mut doc = doc.clone();
    // A document without ENIs (an ENI left out of a generation) has no mode
    // to set.
    if let Some(eni) = doc["enis"].get_mut(0) {
        eni["attach_mode"] = json!(mode);
    }
    load(&doc.to_string()).map_err(|e| anyhow!("the fixture's document does not validate: {e:?}"))
}

fn slot_of(c: &Compiled, reason: &str) -> Option<u32> {
    c.slot_reasons
        .iter()
        .find(|(_, r)| r.to_string() == reason)
        .map(|(slot, _)| *slot)
}

/// A slot table as a daemon has it once the per-CPU rule counters are all
/// handed out: every new rule counts in `FILTER_RSHARED`.
fn slots_past_the_per_cpu_ones() -> Result<SlotTable> {
    let mut table = serde_json::to_value(SlotTable::default())?;
    table["rules"]["next"] = json!(HOT_RULE_SLOTS);
    Ok(serde_json::from_value(table)?)
}

/// Runs one fixture in one attach mode; the list of what went wrong. In
/// `nic` mode the rules count in the shared counters, in `tap` mode per
/// CPU, so each program checks both kinds.
fn run_fixture(f: &Fixture, mode: &str) -> Result<Vec<String>> {
    let mut rs = ruleset(&f.doc, mode)?;
    let mut dp = Dataplane::load(None).context("loading the data plane")?;
    let mut slots = match mode {
        "nic" => slots_past_the_per_cpu_ones()?,
        _ => SlotTable::default(),
    };
    let mut generation = 1;
    let mut compiled = apply(&mut dp, &rs, generation, &mut slots)?;
    let per_cpu = RULE_SLOT_FIRST_DYNAMIC..HOT_RULE_SLOTS;
    if mode == "nic" && compiled.slot_reasons.keys().any(|s| per_cpu.contains(s)) {
        bail!("a rule got a per-CPU counter slot in a run meant for the shared ones");
    }
    // The ENI's mode, kept through a generation that leaves the ENI out.
    let mut attach = rs
        .enis
        .first()
        .map(|e| e.mode)
        .ok_or_else(|| anyhow!("the fixture's first document has no ENI"))?;
    let mut tracker = Tracker::new();
    let mut problems = Vec::new();
    for (i, step) in f.steps.iter().enumerate() {
        let (dir, p, expect) = match step {
            Step::Apply(doc) => {
                rs = ruleset(doc, mode)?;
                generation += 1;
                compiled = apply(&mut dp, &rs, generation, &mut slots)?;
                if let Some(eni) = rs.enis.first() {
                    attach = eni.mode;
                }
                continue;
            }
            Step::Send(dir, p, expect) => (*dir, p, expect),
        };
        let prog = Prog::seeing(attach, dir);
        let frame = p.frame();
        let slot = match expect.reason {
            Some(reason) => Some(slot_of(&compiled, reason).ok_or_else(|| {
                anyhow!("step {i}: the reason {reason:?} has no counter slot in generation {generation}")
            })?),
            None => None,
        };
        let stats_before = dp.stats()?;
        let slot_before = slot.map(|s| dp.rule_stats(s)).transpose()?;
        let verdict = prog.test_run(&mut dp, &frame.bytes)?;
        let stats_after = dp.stats()?;
        let moved: BTreeMap<u32, u64> = (0..STAT_COUNT)
            .filter(|&i| stats_after[i as usize] != stats_before[i as usize])
            .map(|i| (i, stats_after[i as usize] - stats_before[i as usize]))
            .collect();

        let what = format!("step {i}: {dir:?} ({prog}) {p:?}");
        if verdict != expect.verdict {
            problems.push(format!(
                "{what}: kernel {verdict}, expected {}",
                expect.verdict
            ));
        }
        if moved != BTreeMap::from([(expect.stat, 1)]) {
            let moved: Vec<String> = moved
                .iter()
                .map(|(i, n)| format!("{} +{n}", stat_label(*i)))
                .collect();
            problems.push(format!(
                "{what}: counters moved [{}], expected {} +1",
                moved.join(", "),
                stat_label(expect.stat)
            ));
        }
        if let (Some(slot), Some(before)) = (slot, slot_before) {
            let after = dp.rule_stats(slot)?;
            if after.packets != before.packets + 1 {
                problems.push(format!(
                    "{what}: the slot of {:?} counted {} packets, expected 1",
                    expect.reason.unwrap_or_default(),
                    after.packets - before.packets
                ));
            }
        }
        // The model must say the same. It filters ENIs only: a generation
        // without the ENI leaves its packets to the kernel's own check.
        if rs.enis.is_empty() {
            continue;
        }
        let model = tracker.process_detailed(&rs, generation, 0, dir, &p.datagram(frame.len()), 0);
        let model_verdict = if model.decision.verdict == Verdict::Accept {
            PASS
        } else {
            DROP
        };
        let model_reason = match expect.reason {
            Some(_) => Some(model.decision.reason.to_string()),
            None => None,
        };
        if (model_verdict, model.step.stat(), model_reason.as_deref())
            != (expect.verdict, expect.stat, expect.reason)
        {
            problems.push(format!(
                "{what}: the model says {model_verdict} {} ({}), expected {} {} ({:?})",
                stat_label(model.step.stat()),
                model.decision.reason,
                expect.verdict,
                stat_label(expect.stat),
                expect.reason
            ));
        }
    }
    Ok(problems)
}

#[test]
fn enforcement_fixtures() -> Result<()> {
    filter_tests::require_root()?;
    let filter = std::env::var("FILTER_FIXTURE").ok();
    let fixtures: Vec<Fixture> = fixtures()
        .into_iter()
        .filter(|f| filter.as_deref().is_none_or(|name| f.name.contains(name)))
        .collect();
    if fixtures.is_empty() {
        bail!("no fixture matches FILTER_FIXTURE={filter:?}");
    }
    let mut names: Vec<&str> = fixtures.iter().map(|f| f.name).collect();
    names.sort_unstable();
    names.dedup();
    if names.len() != fixtures.len() {
        bail!("two fixtures share a name");
    }
    // Loading the object (the verifier) dominates: run fixtures on a few
    // threads, each with its own objects.
    let jobs: Vec<(&Fixture, &str)> = fixtures
        .iter()
        .flat_map(|f| [(f, "tap"), (f, "nic")])
        .collect();
    let next = Mutex::new(0usize);
    let failures = Mutex::new(Vec::<String>::new());
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let job = {
                    let Ok(mut n) = next.lock() else { return };
                    let job = jobs.get(*n).copied();
                    *n += 1;
                    job
                };
                let Some((f, mode)) = job else { return };
                let result = run_fixture(f, mode);
                let Ok(mut failures) = failures.lock() else {
                    return;
                };
                match result {
                    Ok(problems) => {
                        failures.extend(
                            problems
                                .into_iter()
                                .map(|p| format!("{} [{mode}] {p}", f.name)),
                        );
                    }
                    Err(e) => failures.push(format!("{} [{mode}]: {e:#}", f.name)),
                }
            });
        }
    });
    let failures = failures
        .into_inner()
        .map_err(|_| anyhow!("a fixture thread panicked"))?;
    println!(
        "{} fixtures × 2 attach modes: {} failures",
        fixtures.len(),
        failures.len()
    );
    if !failures.is_empty() {
        bail!(
            "{} fixture steps failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}

/// The fixtures' expectations are independent of the code under test: a
/// fixture that expects the wrong thing fails, on the kernel and on the
/// model, for each thing it gets wrong.
#[test]
fn a_wrong_fixture_fails() -> Result<()> {
    filter_tests::require_root()?;
    let f = fx(
        "wrong",
        group(json!([tcp_in("web", "accept", 1, "80/80", "0.0.0.0/0")])),
        // Really: PASS, accept_new, sg/web.
        vec![send(
            IN,
            syn("198.51.100.1:40000", "192.0.2.10:80"),
            DROP,
            STAT_DROP_SG_RULE,
            "default-deny",
        )],
    );
    let problems = run_fixture(&f, "tap")?;
    let expected = [
        "kernel PASS, expected DROP",
        "counters moved [accept_new +1]",
        "counted 0 packets",
        "the model says PASS",
    ];
    for text in expected {
        if !problems.iter().any(|p| p.contains(text)) {
            bail!("no complaint containing {text:?} among {problems:#?}");
        }
    }
    Ok(())
}

/// A tracked connection's `CtEntry::rule_slot` is a counter-slot number of
/// the generation that admitted it, and an entry under `on_change: keep` is
/// never restamped. `SlotTable` hands out never-used slots before it reuses
/// one, so the slot of a rule that left the rule set does not come to name
/// another rule while connections it admitted live on (flow logs' `rule_id`
/// reads it). Regression test: before that, slot 16 went from `sg/web` to
/// `sg/a` two compiles after `sg/web` was removed.
#[test]
fn tracked_entries_keep_naming_their_admitting_rule_across_applies() -> Result<()> {
    filter_tests::require_root()?;
    let advanced = |rules: Value| {
        world(
            json!([{"id": "sg", "vpc_id": "vpc", "type": "advanced", "rules": rules}]),
            &["sg"],
            Value::Null,
            json!({"on_change": "keep"}),
        )
    };
    let egress = |id: &str, port: u16| {
        json!({"id": id, "direction": "egress", "policy": "accept", "ip_protocol": "tcp",
               "port_range": format!("{port}/{port}"), "dest_cidr_ip": "0.0.0.0/0"})
    };
    let gen1 = ruleset(&advanced(json!([egress("web", 80)])), "tap")?;
    let gen2 = ruleset(&advanced(json!([])), "tap")?;
    let gen3 = ruleset(
        &advanced(json!([egress("a", 1), egress("b", 2), egress("c", 3)])),
        "tap",
    )?;
    let mut dp = Dataplane::load(None)?;
    let mut slots = SlotTable::default();
    let c1 = apply(&mut dp, &gen1, 1, &mut slots)?;
    let open = syn("192.0.2.10:40000", "198.51.100.1:80");
    Prog::Xdp.test_run(&mut dp, &open.frame().bytes)?;
    apply(&mut dp, &gen2, 2, &mut slots)?;
    let c3 = apply(&mut dp, &gen3, 3, &mut slots)?;
    let ack = tcp("198.51.100.1:80", "192.0.2.10:40000", 0x12);
    if Prog::Tc.test_run(&mut dp, &ack.frame().bytes)? != PASS {
        bail!("on_change: keep should keep the connection");
    }
    let entries = dp.conntrack_entries()?;
    let [(_, entry)] = entries.as_slice() else {
        bail!("expected one conntrack entry, found {entries:?}");
    };
    let admitted_by = c1
        .slot_reasons
        .get(&entry.rule_slot)
        .map(ToString::to_string);
    let now_names = c3
        .slot_reasons
        .get(&entry.rule_slot)
        .map(ToString::to_string);
    if admitted_by.as_deref() != Some("sg/web") {
        bail!("the entry was admitted by {admitted_by:?}, not sg/web");
    }
    if now_names.as_deref().is_some_and(|r| r != "sg/web") {
        bail!(
            "FILTER_CT names rule slot {} for a connection sg/web admitted; in the running generation that slot is {:?}",
            entry.rule_slot,
            now_names
        );
    }
    Ok(())
}
