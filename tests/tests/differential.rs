//! Differential test of the data plane (issue 4, "Tests"): the real XDP and
//! TC programs, run with BPF_PROG_TEST_RUN on random packet sequences under
//! random rule sets, must agree with the reference model
//! (`filter::eval::conntrack`, on top of `filter::eval`) on every packet:
//!
//! - the verdict (`XDP_PASS`/`XDP_DROP`, `TC_ACT_OK`/`TC_ACT_SHOT`);
//! - the one `FILTER_STATS` counter that moves (the path: new, tracked,
//!   related, fragment, NACL, rule, default, revalidated, no head...);
//! - the `FILTER_RSTATS` slot that counts it, which names the reason (via
//!   `Compiled::slot_reasons`), by one packet and the packet's IP bytes;
//!
//! and after each sequence (and at every generation swap) `FILTER_CT` must
//! hold exactly the model's connections, with the same state, original
//! direction and orientation, admitting rule, generation, per-direction
//! packet and byte counts, and TCP flags.
//!
//! Documents are random (`model::Document`, validated as `filterd` does),
//! with the ENI under test on interface 1, which is where both programs see
//! a test run arrive; a second ENI (another interface) sometimes lends its
//! addresses to group memberships. Each sequence compiles two documents,
//! writes the first with the loader into a fresh, unpinned object, and now
//! and then swaps to the other (generations 1, 2, 3...: revalidation). The
//! packets: both families, TCP, UDP, ICMP echo and other ICMP, ICMPv6
//! (neighbour discovery included), GRE, other protocols (ICMP's numbers in
//! the wrong family too), first and later fragments (IPv6 with extension
//! headers around the fragment header), ICMP errors quoting earlier flows,
//! both hooks in both attach modes, replies and repeats of earlier flows.
//!
//! Timeouts are an hour, so nothing expires while a sequence runs (the
//! kernel's clock is real); `expiry_matches_the_model` covers expiry with
//! one-second timeouts and real sleeps.
//!
//! The seed is printed; `FILTER_DIFF_SEED=<n>` replays it,
//! `FILTER_DIFF_PACKETS=<n>` changes the number of packets (default
//! 12,000). A failure shrinks the sequence (and then the documents) while
//! the mismatch persists and prints the minimal reproducer: the documents
//! as JSON and the packet list.
use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use filter::{
    compile::{compile, Compiled, SlotTable},
    dataplane::{
        conntrack::{conn_key, kernel_key},
        Dataplane, GenerationMaps,
    },
    eval::conntrack::{Conn, Datagram, Fragment, Outcome, Quote, Step, Tracker},
    model::{
        Conntrack, Document, Eni, NetworkAcl, NetworkAclEntry, PrefixList, SecurityGroup,
        SecurityGroupRule, VSwitch, Vpc,
    },
    ruleset::{AttachMode, Direction, Ruleset},
    validate::validate,
    verdict::{Packet, Reason, Verdict},
};
use filter_common::{
    CtEntry, CtKey, PROTO_GRE, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, STAT_COUNT,
};
use filter_tests::{
    bpf::{stat_label, Prog, Verdict as ProgVerdict},
    packet::{proto, Ext, Frame, Gre, Icmp, Ipv4, Ipv6, Layer, Pkt, Tcp, Udp},
};

// ---------------------------------------------------------------------------
// The world: addresses and ports the random documents and packets draw from
// ---------------------------------------------------------------------------

/// The interface of the ENI under test: test runs arrive on ifindex 1.
const IFACE: &str = "t0";
const IFINDEX: u32 = 1;
/// A second ENI's interface, never run through: it lends its addresses to
/// the groups it joins.
const IFACE_OTHER: &str = "t1";

const VPC_V4: &str = "192.0.2.0/24";
const VPC_V6: &str = "2001:db8::/48";
const VSW_V4: &str = "192.0.2.0/26";
const VSW_V6: &str = "2001:db8:0:1::/64";
const ENI_IPS: [&str; 3] = ["192.0.2.10", "192.0.2.11", "2001:db8:0:1::10"];
const OTHER_ENI_IPS: [&str; 2] = ["192.0.2.20", "2001:db8:0:1::20"];

/// Local ends of packets: mostly the ENI's own addresses.
const LOCAL_V4: [&str; 3] = ["192.0.2.10", "192.0.2.11", "192.0.2.10"];
const LOCAL_V6: [&str; 2] = ["2001:db8:0:1::10", "2001:db8:0:1::10"];
/// Remote ends: outside the VPC, inside the vSwitch (the other ENI), inside
/// the VPC but outside the vSwitch.
const REMOTE_V4: [&str; 7] = [
    "198.51.100.1",
    "198.51.100.2",
    "198.51.100.200",
    "203.0.113.7",
    "192.0.2.20",
    "192.0.2.100",
    "203.0.113.255",
];
const REMOTE_V6: [&str; 5] = [
    "2001:db8:ff::1",
    "2001:db8:ff::2",
    "2001:db8:ff:1::5",
    "2001:db8:0:1::20",
    "2001:db8:0:2::1",
];

const CIDR_V4: [&str; 11] = [
    "0.0.0.0/0",
    "198.51.100.0/24",
    "198.51.100.0/25",
    "198.51.100.128/25",
    "198.51.100.1/32",
    "203.0.113.0/24",
    "192.0.2.0/24",
    "192.0.2.0/26",
    "192.0.2.20/32",
    "128.0.0.0/1",
    "203.0.113.255/32",
];
const CIDR_V6: [&str; 7] = [
    "::/0",
    "2001:db8::/32",
    "2001:db8:ff::/48",
    "2001:db8:ff::/64",
    "2001:db8:ff::1/128",
    "2001:db8:0:1::/64",
    "2001:db8:0:1::20/128",
];
const LOCAL_CIDR_V4: [&str; 3] = ["192.0.2.10/32", "192.0.2.11/32", "192.0.2.0/24"];
const LOCAL_CIDR_V6: [&str; 2] = ["2001:db8:0:1::10/128", "2001:db8::/48"];

/// Ports of packets, and the ends of rule port ranges.
const PORTS: [u16; 16] = [
    1, 22, 53, 79, 80, 81, 443, 1023, 1024, 1999, 2000, 2001, 8080, 40000, 40001, 65535,
];

const ALL_TCP_FLAGS: [u8; 8] = [0x02, 0x12, 0x10, 0x18, 0x11, 0x04, 0x14, 0x00];

/// Timeouts long enough that nothing expires during a sequence.
const LONG_TIMEOUT_S: i64 = 3600;

// ---------------------------------------------------------------------------
// A small deterministic RNG (xorshift64*)
// ---------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so nearby seeds diverge at once; never 0.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn pick_ref<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn port(&mut self) -> u16 {
        if self.chance(85) {
            self.pick(&PORTS)
        } else {
            self.range(1, 65535) as u16
        }
    }
}

fn seed_from_env() -> u64 {
    match std::env::var("FILTER_DIFF_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("FILTER_DIFF_SEED={text:?} is not a number"))
        }
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}

// ---------------------------------------------------------------------------
// Random documents
// ---------------------------------------------------------------------------

fn s(text: impl AsRef<str>) -> String {
    text.as_ref().to_owned()
}

/// A port range `"a/b"` with ends from [`PORTS`] (or anything).
fn port_range(rng: &mut Rng) -> String {
    if rng.chance(15) {
        return s("1/65535");
    }
    let (a, b) = (rng.port(), rng.port());
    format!("{}/{}", a.min(b), a.max(b))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fam {
    V4,
    V6,
}

fn cidr(rng: &mut Rng, fam: Fam) -> String {
    match fam {
        Fam::V4 => s(rng.pick(&CIDR_V4)),
        Fam::V6 => s(rng.pick(&CIDR_V6)),
    }
}

/// A protocol keyword (`icmp` and `icmpv6` force the family).
fn protocol(rng: &mut Rng) -> &'static str {
    const PROTOCOLS: [&str; 9] = [
        "tcp", "tcp", "udp", "udp", "icmp", "icmpv6", "gre", "all", "all",
    ];
    rng.pick(&PROTOCOLS)
}

fn family_of(protocol: &str, rng: &mut Rng) -> Fam {
    match protocol {
        "icmp" => Fam::V4,
        "icmpv6" => Fam::V6,
        _ if rng.chance(55) => Fam::V4,
        _ => Fam::V6,
    }
}

fn empty_rule(direction: &str, policy: &str, protocol: &str) -> SecurityGroupRule {
    SecurityGroupRule {
        id: None,
        direction: s(direction),
        policy: s(policy),
        priority: 1,
        ip_protocol: s(protocol),
        port_range: None,
        source_port_range: None,
        source_cidr_ip: None,
        ipv6_source_cidr_ip: None,
        source_group_id: None,
        source_prefix_list_id: None,
        dest_cidr_ip: None,
        ipv6_dest_cidr_ip: None,
        dest_group_id: None,
        dest_prefix_list_id: None,
        description: None,
    }
}

fn random_rule(
    rng: &mut Rng,
    index: usize,
    advanced: bool,
    groups: &[String],
    lists: &[(String, Fam)],
) -> SecurityGroupRule {
    let ingress = rng.chance(55);
    let protocol = protocol(rng);
    let policy = if rng.chance(60) { "accept" } else { "drop" };
    let mut r = empty_rule(if ingress { "ingress" } else { "egress" }, policy, protocol);
    if rng.chance(50) {
        r.id = Some(format!("r{index}"));
    }
    r.priority = rng.pick(&[1, 1, 2, 50, 100]);
    if matches!(protocol, "tcp" | "udp") {
        r.port_range = Some(port_range(rng));
        if rng.chance(15) {
            r.source_port_range = Some(port_range(rng));
        }
    } else if rng.chance(50) {
        r.port_range = Some(s("-1/-1"));
    }
    let fam = family_of(protocol, rng);
    let lists: Vec<&String> = lists
        .iter()
        .filter(|(_, f)| *f == fam)
        .map(|(id, _)| id)
        .collect();
    let roll = rng.below(100);
    let mut family_bound = true;
    match roll {
        // A group peer (basic groups only): any family.
        0..=14 if !advanced && !groups.is_empty() => {
            let g = rng.pick_ref(groups).clone();
            family_bound = false;
            if ingress {
                r.source_group_id = Some(g);
            } else {
                r.dest_group_id = Some(g);
            }
        }
        15..=29 if !lists.is_empty() => {
            let pl = rng.pick(&lists).clone();
            if ingress {
                r.source_prefix_list_id = Some(pl);
            } else {
                r.dest_prefix_list_id = Some(pl);
            }
        }
        _ => {
            let net = cidr(rng, fam);
            match (ingress, fam) {
                (true, Fam::V4) => r.source_cidr_ip = Some(net),
                (true, Fam::V6) => r.ipv6_source_cidr_ip = Some(net),
                (false, Fam::V4) => r.dest_cidr_ip = Some(net),
                (false, Fam::V6) => r.ipv6_dest_cidr_ip = Some(net),
            }
        }
    }
    // The optional local address, of the peer's family.
    if rng.chance(15) {
        let local_fam = if family_bound {
            fam
        } else {
            family_of(protocol, rng)
        };
        let net = match local_fam {
            Fam::V4 => s(rng.pick(&LOCAL_CIDR_V4)),
            Fam::V6 => s(rng.pick(&LOCAL_CIDR_V6)),
        };
        match (ingress, local_fam) {
            (true, Fam::V4) => r.dest_cidr_ip = Some(net),
            (true, Fam::V6) => r.ipv6_dest_cidr_ip = Some(net),
            (false, Fam::V4) => r.source_cidr_ip = Some(net),
            (false, Fam::V6) => r.ipv6_source_cidr_ip = Some(net),
        }
    }
    r
}

fn random_acl_entry(rng: &mut Rng, name: String, ingress: bool) -> NetworkAclEntry {
    let protocol = protocol(rng);
    let fam = family_of(protocol, rng);
    let port = if matches!(protocol, "tcp" | "udp") {
        Some(port_range(rng))
    } else {
        None
    };
    let net = cidr(rng, fam);
    NetworkAclEntry {
        name,
        policy: s(if rng.chance(65) { "accept" } else { "drop" }),
        protocol: s(protocol),
        port,
        source_cidr_ip: ingress.then(|| net.clone()),
        destination_cidr_ip: (!ingress).then_some(net),
        description: None,
    }
}

fn random_document(rng: &mut Rng) -> Document {
    let advanced = rng.chance(25);
    let lists: Vec<(String, Fam)> = (0..rng.below(3))
        .map(|i| {
            (
                format!("pl-{i}"),
                if rng.chance(50) { Fam::V4 } else { Fam::V6 },
            )
        })
        .collect();
    let group_ids: Vec<String> = (0..rng.range(1, 3)).map(|i| format!("sg-{i}")).collect();
    let remote_pool: Vec<&str> = REMOTE_V4.iter().chain(REMOTE_V6.iter()).copied().collect();
    let mut rule_index = 0;
    let security_groups = group_ids
        .iter()
        .map(|id| {
            let rules = (0..rng.below(7))
                .map(|_| {
                    rule_index += 1;
                    random_rule(rng, rule_index, advanced, &group_ids, &lists)
                })
                .collect();
            let inner_access_policy = if advanced {
                None
            } else {
                rng.pick_ref(&[None, Some(s("accept")), Some(s("drop")), Some(s("drop"))])
                    .clone()
            };
            let mut member_ips: Vec<String> = Vec::new();
            for _ in 0..rng.below(3) {
                let ip = s(rng.pick(&remote_pool));
                // Other ENIs' addresses are members already, and duplicates
                // are not what this test is about.
                if !member_ips.contains(&ip) && !OTHER_ENI_IPS.contains(&ip.as_str()) {
                    member_ips.push(ip);
                }
            }
            SecurityGroup {
                id: id.clone(),
                vpc_id: s("vpc"),
                kind: s(if advanced { "advanced" } else { "basic" }),
                inner_access_policy,
                member_ips,
                rules,
            }
        })
        .collect();
    let prefix_lists = lists
        .iter()
        .map(|(id, fam)| {
            let mut entries: Vec<String> = Vec::new();
            for _ in 0..rng.range(1, 3) {
                let net = cidr(rng, *fam);
                if !entries.contains(&net) {
                    entries.push(net);
                }
            }
            PrefixList {
                id: id.clone(),
                address_family: s(if *fam == Fam::V4 { "ipv4" } else { "ipv6" }),
                entries,
                vpc_id: None,
            }
        })
        .collect();
    let has_acl = rng.chance(60);
    let network_acls = if has_acl {
        let mut ingress: Vec<NetworkAclEntry> = (0..rng.below(5))
            .map(|i| random_acl_entry(rng, format!("in-{i}"), true))
            .collect();
        let mut egress: Vec<NetworkAclEntry> = (0..rng.below(5))
            .map(|i| random_acl_entry(rng, format!("out-{i}"), false))
            .collect();
        // Often a catch-all accept last, as real ACLs have, so that the
        // security groups get to see packets too.
        for (list, ingress, name) in [
            (&mut ingress, true, "in-all"),
            (&mut egress, false, "out-all"),
        ] {
            if rng.chance(60) {
                for (fam, net) in [("4", "0.0.0.0/0"), ("6", "::/0")] {
                    list.push(NetworkAclEntry {
                        name: format!("{name}{fam}"),
                        policy: s("accept"),
                        protocol: s("all"),
                        port: None,
                        source_cidr_ip: ingress.then(|| s(net)),
                        destination_cidr_ip: (!ingress).then(|| s(net)),
                        description: None,
                    });
                }
            }
        }
        vec![NetworkAcl {
            id: s("acl"),
            ingress,
            egress,
        }]
    } else {
        Vec::new()
    };
    let pick_groups = |rng: &mut Rng| -> Vec<String> {
        let mut chosen: Vec<String> = group_ids
            .iter()
            .filter(|_| rng.chance(60))
            .cloned()
            .collect();
        if chosen.is_empty() {
            chosen.push(rng.pick_ref(&group_ids).clone());
        }
        // Order matters for naming among equals: shuffle a little.
        if chosen.len() > 1 && rng.chance(50) {
            chosen.reverse();
        }
        chosen
    };
    let mut enis = vec![Eni {
        id: s("eni-test"),
        interface: s(IFACE),
        attach_mode: s(if rng.chance(50) { "tap" } else { "nic" }),
        hook: s("auto"),
        vswitch_id: s("vsw"),
        ips: ENI_IPS.iter().map(s).collect(),
        security_group_ids: pick_groups(rng),
    }];
    if rng.chance(50) {
        enis.push(Eni {
            id: s("eni-other"),
            interface: s(IFACE_OTHER),
            attach_mode: s("tap"),
            hook: s("auto"),
            vswitch_id: s("vsw"),
            ips: OTHER_ENI_IPS.iter().map(s).collect(),
            security_group_ids: pick_groups(rng),
        });
    }
    Document {
        vpcs: vec![Vpc {
            id: s("vpc"),
            cidr: s(VPC_V4),
            ipv6_cidr: Some(s(VPC_V6)),
        }],
        vswitches: vec![VSwitch {
            id: s("vsw"),
            vpc_id: s("vpc"),
            cidr: s(VSW_V4),
            ipv6_cidr: Some(s(VSW_V6)),
            network_acl_id: has_acl.then(|| s("acl")),
        }],
        prefix_lists,
        security_groups,
        network_acls,
        enis,
        conntrack: Some(Conntrack {
            tcp_syn_s: LONG_TIMEOUT_S,
            tcp_established_s: LONG_TIMEOUT_S,
            tcp_closing_s: LONG_TIMEOUT_S,
            udp_s: LONG_TIMEOUT_S,
            udp_stream_s: LONG_TIMEOUT_S,
            icmp_s: LONG_TIMEOUT_S,
            other_s: LONG_TIMEOUT_S,
            on_change: s(if rng.chance(70) { "revalidate" } else { "keep" }),
            ..Conntrack::default()
        }),
        flow_log: None,
    }
}

fn check_document(doc: &Document) -> Result<Ruleset> {
    validate(doc).map_err(|e| {
        anyhow!(
            "the generated document does not validate (a bug in this test): {e:?}\n{}",
            serde_json::to_string_pretty(doc).unwrap_or_default()
        )
    })
}

// ---------------------------------------------------------------------------
// Packets
// ---------------------------------------------------------------------------

/// The transport part of a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP echo request or reply (v4 8/0, v6 128/129).
    Echo {
        icmp_type: u8,
        id: u16,
    },
    /// Any other ICMP or ICMPv6 message with an 8-byte body (neighbour
    /// discovery, and error types with nothing quoted, included).
    Icmp {
        icmp_type: u8,
        code: u8,
    },
    /// An ICMP error quoting `quote`, cut to `quote_len` bytes after its IP
    /// header (`None`: whole).
    Error {
        icmp_type: u8,
        code: u8,
        quote: Box<Spec>,
        quote_len: Option<usize>,
    },
    Gre,
    /// A protocol the parser does not read, by number.
    Other(u8),
}

/// Where the packet sits among fragments, and IPv6 extension headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frag {
    None,
    First {
        id: u32,
    },
    /// A later fragment; `proto` is the protocol (IPv4) or the fragment
    /// header's next header (IPv6).
    Later {
        id: u32,
        proto: u8,
        offset: u16,
        more: bool,
    },
}

/// One packet of a sequence, self-contained (the reproducer prints these).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Spec {
    hook: Prog,
    src: IpAddr,
    dst: IpAddr,
    l4: L4,
    frag: Frag,
    /// IPv6: a hop-by-hop header first, and destination options after the
    /// fragment header (first fragments) or as the fragment header's next
    /// header (later fragments: `proto` 60).
    hop_by_hop: bool,
    dest_opts: bool,
    payload: u8,
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn v4(a: IpAddr) -> [u8; 4] {
    match a {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => [0; 4],
    }
}

fn v6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

impl L4 {
    fn proto(&self, is_v6: bool) -> u8 {
        match self {
            L4::Tcp { .. } => PROTO_TCP,
            L4::Udp { .. } => PROTO_UDP,
            L4::Echo { .. } | L4::Icmp { .. } | L4::Error { .. } if is_v6 => PROTO_ICMPV6,
            L4::Echo { .. } | L4::Icmp { .. } | L4::Error { .. } => PROTO_ICMP,
            L4::Gre => PROTO_GRE,
            L4::Other(p) => *p,
        }
    }

    fn layer(&self, is_v6: bool) -> Layer {
        match self {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => Tcp::new(*sport, *dport).flags(*flags).into(),
            L4::Udp { sport, dport } => Udp::new(*sport, *dport).into(),
            L4::Echo { icmp_type, id } => {
                let mut m = if is_v6 {
                    Icmp::v6_echo_request(*id, 1)
                } else {
                    Icmp::echo_request(*id, 1)
                };
                m.icmp_type = *icmp_type;
                m.into()
            }
            L4::Icmp { icmp_type, code } => {
                let m = if is_v6 {
                    Icmp::v6(*icmp_type, *code)
                } else {
                    Icmp::v4(*icmp_type, *code)
                };
                m.body(&[0x5a; 8]).into()
            }
            L4::Error {
                icmp_type,
                code,
                quote,
                quote_len,
            } => {
                let inner = quote.quoted_frame(*quote_len);
                if is_v6 {
                    Icmp::v6_error(*icmp_type, *code, inner).into()
                } else {
                    Icmp::error(*icmp_type, *code, inner).into()
                }
            }
            L4::Gre => Gre::default().into(),
            L4::Other(_) => Layer::Raw(vec![0xa5; 8]),
        }
    }
}

impl Spec {
    fn is_v6(&self) -> bool {
        self.dst.is_ipv6()
    }

    /// The IP header (no Ethernet), with the protocol set when the next
    /// layer cannot say it.
    fn ip_layer(&self, proto: Option<u8>) -> Layer {
        if self.is_v6() {
            let mut h = Ipv6::new(v6(self.src), v6(self.dst));
            h.next_header = proto;
            h.into()
        } else {
            let mut h = Ipv4::new(v4(self.src), v4(self.dst));
            h.proto = proto;
            match self.frag {
                Frag::None => {}
                Frag::First { id } => h = h.fragment(id as u16, 0, true),
                Frag::Later {
                    id, offset, more, ..
                } => h = h.fragment(id as u16, offset, more),
            }
            h.into()
        }
    }

    fn payload(&self) -> Vec<u8> {
        vec![0x42; usize::from(self.payload)]
    }

    /// The layers from the IP header inward.
    fn layers(&self) -> Vec<Layer> {
        let v6 = self.is_v6();
        let mut layers = Vec::new();
        let l4_proto = self.l4.proto(v6);
        let raw_l4 = matches!(self.l4, L4::Other(_));
        match (self.frag, v6) {
            (Frag::Later { proto, .. }, false) => {
                layers.push(self.ip_layer(Some(proto)));
                layers.push(Layer::Raw(vec![0x33; 16]));
                return layers;
            }
            (
                Frag::Later {
                    id,
                    proto,
                    offset,
                    more,
                },
                true,
            ) => {
                layers.push(self.ip_layer(None));
                if self.hop_by_hop {
                    layers.push(Ext::hop_by_hop().into());
                }
                layers.push(Ext::fragment(offset, more, id).next_header(proto).into());
                layers.push(Layer::Raw(vec![0x33; 16]));
                return layers;
            }
            (_, false) => layers.push(self.ip_layer(raw_l4.then_some(l4_proto))),
            (frag, true) => {
                // Extension headers in order; each names the next, and the
                // last names a raw protocol explicitly (the builder can only
                // infer the numbers of layers it knows).
                let mut exts: Vec<Ext> = Vec::new();
                if self.hop_by_hop {
                    exts.push(Ext::hop_by_hop());
                }
                if let Frag::First { id } = frag {
                    exts.push(Ext::fragment(0, true, id));
                }
                if self.dest_opts {
                    exts.push(Ext::dest_opts(1));
                }
                layers.push(self.ip_layer((raw_l4 && exts.is_empty()).then_some(l4_proto)));
                let n = exts.len();
                for (i, mut e) in exts.into_iter().enumerate() {
                    if raw_l4 && i + 1 == n {
                        e = e.next_header(l4_proto);
                    }
                    layers.push(e.into());
                }
            }
        }
        layers.push(self.l4.layer(v6));
        layers
    }

    fn frame(&self) -> Frame {
        let mut p = Pkt::eth();
        for layer in self.layers() {
            p = p.push(layer);
        }
        p.payload(&self.payload()).build()
    }

    /// This packet as quoted by an ICMP error: from the IP header, cut to
    /// `len` bytes after it.
    fn quoted_frame(&self, len: Option<usize>) -> Frame {
        let mut p = Pkt::new();
        for layer in self.layers() {
            p = p.push(layer);
        }
        let frame = p.payload(&self.payload()).build();
        let ip_header = if self.is_v6() { 40 } else { 20 };
        match len {
            Some(n) => frame.truncate(ip_header + n),
            None => frame,
        }
    }

    /// The protocol numbers the kernel files the datagram under: the
    /// transport protocol, and the fragment protocol.
    fn protos(&self) -> (u8, u8) {
        let l4 = self.l4.proto(self.is_v6());
        match self.frag {
            Frag::Later { proto, .. } => (proto, proto),
            Frag::First { .. } if self.is_v6() && self.dest_opts => (l4, proto::DEST_OPTS),
            _ => (l4, l4),
        }
    }

    /// What the rules look at.
    fn header(&self) -> Packet {
        let (proto, _) = self.protos();
        let mut p = Packet {
            src: self.src,
            dst: self.dst,
            proto,
            src_port: 0,
            dst_port: 0,
            icmp_type: 0,
        };
        if matches!(self.frag, Frag::Later { .. }) {
            return p;
        }
        match &self.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => {
                p.src_port = *sport;
                p.dst_port = *dport;
            }
            L4::Echo { icmp_type, .. }
            | L4::Icmp { icmp_type, .. }
            | L4::Error { icmp_type, .. } => {
                p.icmp_type = *icmp_type;
            }
            L4::Gre | L4::Other(_) => {}
        }
        p
    }

    fn echo_id(&self) -> u16 {
        match self.l4 {
            L4::Echo { id, .. } => id,
            _ => 0,
        }
    }

    /// The model's view of the packet.
    fn datagram(&self, frame_len: usize) -> Datagram {
        let (_, fragment_proto) = self.protos();
        let mut d = Datagram::new(self.header())
            .echo_id(self.echo_id())
            .fragment_proto(fragment_proto)
            .bytes((frame_len - 14) as u32);
        d = d.fragment(match self.frag {
            Frag::None => Fragment::None,
            Frag::First { id } => Fragment::First {
                id: self.frag_id(id),
            },
            Frag::Later { id, .. } => Fragment::Later {
                id: self.frag_id(id),
            },
        });
        if let (L4::Tcp { flags, .. }, false) = (&self.l4, matches!(self.frag, Frag::Later { .. }))
        {
            d = d.tcp_flags(flags & 0x3f);
        }
        if let L4::Error {
            quote, quote_len, ..
        } = &self.l4
        {
            if quote.quote_readable(*quote_len) {
                d = d.quote(Quote {
                    header: quote.header(),
                    icmp_id: quote.echo_id(),
                });
            }
        }
        d
    }

    /// IPv4 identifications are 16 bits.
    fn frag_id(&self, id: u32) -> u32 {
        if self.is_v6() {
            id
        } else {
            id & 0xffff
        }
    }

    /// Whether the kernel can read this packet's conntrack fields when it is
    /// quoted with `len` bytes after its IP header.
    fn quote_readable(&self, len: Option<usize>) -> bool {
        // IPv6 extension headers come first, and the kernel walks them
        // whole or reads nothing.
        let ext = if self.is_v6() {
            8 * (usize::from(self.hop_by_hop)
                + usize::from(self.dest_opts)
                + usize::from(self.frag != Frag::None))
        } else {
            0
        };
        let Some(avail) = len.unwrap_or(usize::MAX).checked_sub(ext) else {
            return false;
        };
        match self.l4 {
            L4::Tcp { .. } | L4::Udp { .. } => avail >= 4,
            L4::Echo { .. } | L4::Icmp { .. } | L4::Error { .. } => avail >= 8,
            L4::Gre | L4::Other(_) => true,
        }
    }
}

fn flags_text(flags: u8) -> String {
    let names = [
        (0x02, 'S'),
        (0x10, '.'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x20, 'U'),
    ];
    let text: String = names
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, c)| *c)
        .collect();
    if text.is_empty() {
        s("none")
    } else {
        text
    }
}

fn endpoint(addr: IpAddr, port: Option<u16>) -> String {
    match (addr, port) {
        (IpAddr::V4(a), Some(p)) => format!("{a}:{p}"),
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, None) => a.to_string(),
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports = match &self.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => Some((*sport, *dport)),
            _ => None,
        };
        write!(
            f,
            "{} > {} ",
            endpoint(self.src, ports.map(|p| p.0)),
            endpoint(self.dst, ports.map(|p| p.1))
        )?;
        match &self.l4 {
            L4::Tcp { flags, .. } => write!(f, "tcp [{}]", flags_text(*flags))?,
            L4::Udp { .. } => f.write_str("udp")?,
            L4::Echo { icmp_type, id } => write!(f, "icmp echo type {icmp_type} id {id}")?,
            L4::Icmp { icmp_type, code } => write!(f, "icmp type {icmp_type} code {code}")?,
            L4::Error {
                icmp_type,
                code,
                quote,
                quote_len,
            } => {
                write!(
                    f,
                    "icmp error type {icmp_type} code {code} quoting {{{quote}}}"
                )?;
                if let Some(n) = quote_len {
                    write!(f, " cut to {n} bytes")?;
                }
            }
            L4::Gre => f.write_str("gre")?,
            L4::Other(p) => write!(f, "proto {p}")?,
        }
        match self.frag {
            Frag::None => {}
            Frag::First { id } => write!(f, ", first fragment id {id}")?,
            Frag::Later {
                id,
                proto,
                offset,
                more,
            } => write!(
                f,
                ", later fragment id {id} proto {proto} offset {offset}{}",
                if more { " +MF" } else { "" }
            )?,
        }
        if self.hop_by_hop {
            f.write_str(", hop-by-hop")?;
        }
        if self.dest_opts {
            f.write_str(", dest-opts")?;
        }
        Ok(())
    }
}

/// One step of a sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Packet(Spec),
    /// Apply the other document as the next generation.
    Swap,
}

fn other_hook(hook: Prog) -> Prog {
    match hook {
        Prog::Xdp => Prog::Tc,
        Prog::Tc => Prog::Xdp,
    }
}

fn random_addr(rng: &mut Rng, fam: Fam, local: bool) -> IpAddr {
    let pool: &[&str] = match (fam, local) {
        (Fam::V4, true) => &LOCAL_V4,
        (Fam::V6, true) => &LOCAL_V6,
        (Fam::V4, false) => &REMOTE_V4,
        (Fam::V6, false) => &REMOTE_V6,
    };
    ip(rng.pick(pool))
}

fn random_l4(rng: &mut Rng, fam: Fam) -> L4 {
    let v6 = fam == Fam::V6;
    match rng.below(100) {
        0..=29 => L4::Tcp {
            sport: rng.port(),
            dport: rng.port(),
            flags: rng.pick(&ALL_TCP_FLAGS),
        },
        30..=54 => L4::Udp {
            sport: rng.port(),
            dport: rng.port(),
        },
        55..=69 => L4::Echo {
            icmp_type: if v6 {
                rng.pick(&[128, 129])
            } else {
                rng.pick(&[8, 0])
            },
            id: rng.pick(&[1, 2, 7, 0x1234]),
        },
        70..=79 => {
            let icmp_type = if v6 {
                rng.pick(&[1, 2, 3, 4, 133, 134, 135, 136, 137, 138, 130])
            } else {
                rng.pick(&[3, 5, 11, 12, 13, 14, 9])
            };
            L4::Icmp { icmp_type, code: 0 }
        }
        80..=89 => L4::Gre,
        // ICMP's numbers in the wrong family, and protocols nobody names.
        // (ICMP's own number in its family is ICMP, not "other".)
        _ if v6 => L4::Other(rng.pick(&[PROTO_ICMP, 132, 253, 50])),
        _ => L4::Other(rng.pick(&[PROTO_ICMPV6, 132, 253, 50])),
    }
}

/// The state a sequence generator keeps: what was sent, to answer it.
struct Gen<'a> {
    rng: &'a mut Rng,
    /// The attach mode of the generation running now, per document.
    modes: [AttachMode; 2],
    doc: usize,
    flows: Vec<Spec>,
    heads: Vec<Spec>,
    next_frag_id: u32,
}

impl Gen<'_> {
    fn hook_for(&mut self, dir: Direction) -> Prog {
        Prog::seeing(self.modes[self.doc], dir)
    }

    fn new_packet(&mut self) -> Spec {
        let fam = if self.rng.chance(55) {
            Fam::V4
        } else {
            Fam::V6
        };
        let dir = if self.rng.chance(50) {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        let (local, remote) = (
            random_addr(self.rng, fam, true),
            random_addr(self.rng, fam, false),
        );
        let (src, dst) = match dir {
            Direction::Ingress => (remote, local),
            Direction::Egress => (local, remote),
        };
        // Now and then neither end is the ENI's (spoofed or forwarded).
        let (src, dst) = if self.rng.chance(4) {
            (
                random_addr(self.rng, fam, false),
                random_addr(self.rng, fam, false),
            )
        } else {
            (src, dst)
        };
        let hook = self.hook_for(dir);
        Spec {
            hook,
            src,
            dst,
            l4: random_l4(self.rng, fam),
            frag: Frag::None,
            hop_by_hop: fam == Fam::V6 && self.rng.chance(10),
            dest_opts: fam == Fam::V6 && self.rng.chance(5),
            payload: self.rng.below(40) as u8,
        }
    }

    fn earlier_flow(&mut self) -> Option<Spec> {
        if self.flows.is_empty() {
            return None;
        }
        // Recent flows more often.
        let n = self.flows.len();
        let i = if self.rng.chance(60) {
            n - 1 - self.rng.below(n.min(8))
        } else {
            self.rng.below(n)
        };
        Some(self.flows[i].clone())
    }

    fn reply(&mut self, f: &Spec) -> Spec {
        let l4 = match &f.l4 {
            L4::Tcp { sport, dport, .. } => L4::Tcp {
                sport: *dport,
                dport: *sport,
                flags: self.rng.pick(&[0x12, 0x12, 0x10, 0x18, 0x11, 0x04, 0x14]),
            },
            L4::Udp { sport, dport } => L4::Udp {
                sport: *dport,
                dport: *sport,
            },
            L4::Echo { icmp_type, id } => L4::Echo {
                icmp_type: match icmp_type {
                    8 => 0,
                    0 => 8,
                    128 => 129,
                    _ => 128,
                },
                id: *id,
            },
            other => other.clone(),
        };
        Spec {
            hook: other_hook(f.hook),
            src: f.dst,
            dst: f.src,
            l4,
            frag: Frag::None,
            hop_by_hop: f.hop_by_hop && self.rng.chance(50),
            dest_opts: f.dest_opts && self.rng.chance(50),
            payload: self.rng.below(40) as u8,
        }
    }

    fn repeat(&mut self, f: &Spec) -> Spec {
        let mut p = f.clone();
        p.frag = Frag::None;
        if let L4::Tcp { flags, .. } = &mut p.l4 {
            *flags = self.rng.pick(&[0x10, 0x18, 0x11, 0x04, 0x02, 0x10]);
        }
        p.payload = self.rng.below(40) as u8;
        p
    }

    /// An ICMP error about `f` (or its reply), travelling back to its
    /// source; sometimes from a router, sometimes to the wrong host.
    fn error(&mut self, f: &Spec) -> Spec {
        let quoted = if self.rng.chance(25) {
            self.reply(f)
        } else {
            self.repeat(f)
        };
        let fam = if quoted.is_v6() { Fam::V6 } else { Fam::V4 };
        let src = if self.rng.chance(50) {
            quoted.dst
        } else {
            random_addr(self.rng, fam, false)
        };
        let dst = if self.rng.chance(90) {
            quoted.src
        } else {
            random_addr(self.rng, fam, true)
        };
        let icmp_type = if quoted.is_v6() {
            self.rng.pick(&[1, 2, 3, 4])
        } else {
            self.rng.pick(&[3, 11, 12])
        };
        let quote_len = self
            .rng
            .pick(&[None, None, Some(8), Some(8), Some(4), Some(2)]);
        Spec {
            hook: other_hook(quoted.hook),
            src,
            dst,
            l4: L4::Error {
                icmp_type,
                code: self.rng.pick(&[0, 1, 3]),
                quote: Box::new(quoted),
                quote_len,
            },
            frag: Frag::None,
            hop_by_hop: false,
            dest_opts: false,
            payload: 0,
        }
    }

    fn first_fragment(&mut self) -> Spec {
        let mut p = match self.earlier_flow() {
            Some(f) if self.rng.chance(40) => {
                if self.rng.chance(50) {
                    self.reply(&f)
                } else {
                    self.repeat(&f)
                }
            }
            _ => self.new_packet(),
        };
        if matches!(p.l4, L4::Error { .. }) {
            p.l4 = L4::Udp {
                sport: self.rng.port(),
                dport: self.rng.port(),
            };
        }
        self.next_frag_id += 1 + self.rng.below(3) as u32;
        p.frag = Frag::First {
            id: self.next_frag_id,
        };
        p
    }

    fn later_fragment(&mut self) -> Spec {
        let head = if !self.heads.is_empty() && self.rng.chance(85) {
            let n = self.heads.len();
            self.heads[n - 1 - self.rng.below(n.min(6))].clone()
        } else {
            self.first_fragment()
        };
        let Frag::First { id } = head.frag else {
            return head;
        };
        let (_, frag_proto) = head.protos();
        let mut p = head.clone();
        p.frag = Frag::Later {
            id: if self.rng.chance(90) { id } else { id + 1000 },
            proto: if self.rng.chance(92) {
                frag_proto
            } else {
                self.rng.pick(&[PROTO_UDP, PROTO_TCP, 58])
            },
            offset: self.rng.range(1, 180) as u16,
            more: self.rng.chance(50),
        };
        p
    }

    fn event(&mut self, swaps_left: &mut usize) -> Event {
        if *swaps_left > 0 && self.rng.chance(2) {
            *swaps_left -= 1;
            self.doc ^= 1;
            return Event::Swap;
        }
        let roll = self.rng.below(100);
        let flow = self.earlier_flow();
        let p = match (roll, flow) {
            (0..=24, Some(f)) => self.reply(&f),
            (25..=36, Some(f)) => self.repeat(&f),
            (37..=46, Some(f)) => self.error(&f),
            (47..=54, _) => self.first_fragment(),
            (55..=62, _) => self.later_fragment(),
            _ => self.new_packet(),
        };
        match p.frag {
            Frag::First { .. } => self.heads.push(p.clone()),
            Frag::None if !matches!(p.l4, L4::Error { .. }) => self.flows.push(p.clone()),
            _ => {}
        }
        if let Frag::First { .. } = p.frag {
            self.flows.push(Spec {
                frag: Frag::None,
                ..p.clone()
            });
        }
        Event::Packet(p)
    }
}

fn random_events(
    rng: &mut Rng,
    modes: [AttachMode; 2],
    packets: usize,
    swaps: usize,
) -> Vec<Event> {
    let mut gen = Gen {
        rng,
        modes,
        doc: 0,
        flows: Vec::new(),
        heads: Vec::new(),
        next_frag_id: 100,
    };
    let mut swaps_left = swaps;
    let mut events = Vec::with_capacity(packets + swaps);
    let mut sent = 0;
    while sent < packets {
        let e = gen.event(&mut swaps_left);
        if matches!(e, Event::Packet(_)) {
            sent += 1;
        }
        events.push(e);
    }
    events
}

// ---------------------------------------------------------------------------
// The kernel side: compile, write, run
// ---------------------------------------------------------------------------

fn ifindex_of(name: &str) -> Option<u32> {
    match name {
        IFACE => Some(IFINDEX),
        IFACE_OTHER => Some(IFINDEX + 1),
        _ => None,
    }
}

/// Writes a compiled generation with the loader and switches to it.
fn write(dp: &mut Dataplane, c: &Compiled) -> Result<()> {
    for slot in &c.fresh_slots {
        dp.reset_rule_stats(*slot)
            .context("zeroing a fresh rule slot")?;
    }
    let summary = dp
        .write_generation(&GenerationMaps::from(c))
        .with_context(|| format!("writing generation {}", c.generation))?;
    if let Some(e) = summary.cleanup_error {
        bail!("generation {}: cleanup failed: {e}", c.generation);
    }
    Ok(())
}

fn slot_of(c: &Compiled, reason: &Reason) -> Option<u32> {
    c.slot_reasons
        .iter()
        .find(|(_, r)| *r == reason)
        .map(|(slot, _)| *slot)
}

/// The fields of a conntrack entry this test compares, kernel or model.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CtView {
    state: u8,
    orig_dir: u8,
    orig_src_is_a: bool,
    generation: u32,
    reason: String,
    packets: [u64; 2],
    bytes: [u64; 2],
    tcp_flags: u8,
    dir_tcp_flags: [u8; 2],
    ct_flags: u8,
}

fn model_view(c: &Conn) -> CtView {
    CtView {
        state: c.state.ct_state(),
        orig_dir: c.orig_direction.as_u8(),
        orig_src_is_a: c.orig_src_is_a,
        generation: c.generation,
        reason: c.reason.to_string(),
        packets: c.packets,
        bytes: c.bytes,
        tcp_flags: c.tcp_flags,
        dir_tcp_flags: c.dir_tcp_flags,
        ct_flags: c.ct_flags,
    }
}

/// The kernel entry's view; the reason through the slot table of the
/// generation that set the rule slot (`reason_generation` of the model's
/// entry: under `keep` that is older than the entry's generation).
fn kernel_view(e: &CtEntry, compiled: &BTreeMap<u32, Compiled>, reason_generation: u32) -> CtView {
    let reason = compiled
        .get(&reason_generation)
        .and_then(|c| c.slot_reasons.get(&e.rule_slot))
        .map_or_else(
            || format!("slot {} (unknown)", e.rule_slot),
            Reason::to_string,
        );
    CtView {
        state: e.state,
        orig_dir: e.orig_dir,
        orig_src_is_a: e.orig_src_is_a != 0,
        generation: e.generation,
        reason,
        packets: e.packets,
        bytes: e.bytes,
        tcp_flags: e.tcp_flags,
        dir_tcp_flags: e.dir_tcp_flags,
        ct_flags: e.ct_flags,
    }
}

// ---------------------------------------------------------------------------
// Replaying a sequence against both
// ---------------------------------------------------------------------------

/// Where kernel and model first disagreed.
#[derive(Clone, Debug)]
struct Mismatch {
    /// Index into the events; `events.len()` for the final table check.
    at: usize,
    what: String,
}

/// Everything one replay needs.
struct Case {
    /// What the kernel runs: generations 1, 3, 5... run `docs[0]`, the
    /// even ones `docs[1]`.
    docs: [Document; 2],
    /// What the model runs instead, when not the same (the self-test of
    /// the comparison).
    model_docs: Option<[Document; 2]>,
    events: Vec<Event>,
}

/// Packets per `FILTER_STATS` counter, as the model counted them.
type Paths = [usize; STAT_COUNT as usize];

/// What happened to one packet, for the reproducer's listing.
struct Line {
    generation: u32,
    direction: Direction,
    model: Outcome,
    kernel: Option<(ProgVerdict, String)>,
}

/// Compares `FILTER_CT` with the model's table.
fn compare_conntrack(
    dp: &Dataplane,
    tracker: &Tracker,
    compiled: &BTreeMap<u32, Compiled>,
) -> Result<Option<String>> {
    let kernel: HashMap<CtKey, CtEntry> = dp.conntrack_entries()?.into_iter().collect();
    let mut problems = Vec::new();
    let mut expected_keys = Vec::new();
    for (key, conn) in tracker.connections() {
        let k = kernel_key(IFINDEX, key);
        expected_keys.push(k);
        match kernel.get(&k) {
            None => problems.push(format!(
                "  missing in FILTER_CT: {key} {:?}",
                model_view(conn)
            )),
            Some(e) => {
                let (want, got) = (
                    model_view(conn),
                    kernel_view(e, compiled, conn.reason_generation),
                );
                if want != got {
                    problems.push(format!("  {key}:\n    model  {want:?}\n    kernel {got:?}"));
                }
            }
        }
    }
    for (k, e) in &kernel {
        if !expected_keys.contains(k) {
            problems.push(format!(
                "  only in FILTER_CT: ifindex {} {} state {} generation {}",
                k.ifindex,
                conn_key("-", k),
                e.state,
                e.generation
            ));
        }
    }
    Ok((!problems.is_empty())
        .then(|| format!("FILTER_CT differs from the model:\n{}", problems.join("\n"))))
}

/// Replays `case` on a fresh object: `Ok(None)` when kernel and model agree
/// throughout.
fn replay(
    case: &Case,
    mut log: Option<&mut Vec<Option<Line>>>,
    mut paths: Option<&mut Paths>,
) -> Result<Option<Mismatch>> {
    let rulesets = [
        check_document(&case.docs[0])?,
        check_document(&case.docs[1])?,
    ];
    let model_rulesets = match &case.model_docs {
        Some(docs) => [check_document(&docs[0])?, check_document(&docs[1])?],
        None => rulesets.clone(),
    };
    let mut dp = Dataplane::load(None).context("loading the data plane")?;
    let mut slots = SlotTable::default();
    let mut compiled: BTreeMap<u32, Compiled> = BTreeMap::new();
    let mut generation = 0u32;
    let mut apply = |dp: &mut Dataplane,
                     generation: u32,
                     compiled: &mut BTreeMap<u32, Compiled>|
     -> Result<()> {
        let rs = &rulesets[(generation as usize - 1) % 2];
        let c = compile(rs, generation, &ifindex_of, &mut slots)
            .map_err(|e| anyhow!("compile: {e}"))?;
        write(dp, &c)?;
        compiled.insert(generation, c);
        Ok(())
    };
    generation += 1;
    apply(&mut dp, generation, &mut compiled)?;

    let mut tracker = Tracker::new();
    // The slot each remembered first fragment counted into, for its later
    // fragments (the kernel keeps the number, of the head's generation).
    let mut head_slots: HashMap<(IpAddr, IpAddr, u8, u32), Option<u32>> = HashMap::new();
    let start = Instant::now();
    for (i, event) in case.events.iter().enumerate() {
        let spec = match event {
            Event::Swap => {
                if let Some(what) = compare_conntrack(&dp, &tracker, &compiled)? {
                    return Ok(Some(Mismatch {
                        at: i,
                        what: format!("before the swap: {what}"),
                    }));
                }
                generation += 1;
                apply(&mut dp, generation, &mut compiled)?;
                if let Some(log) = log.as_deref_mut() {
                    log.push(None);
                }
                continue;
            }
            Event::Packet(spec) => spec,
        };
        let rs = &model_rulesets[(generation as usize - 1) % 2];
        let c = &compiled[&generation];
        let dir = spec
            .hook
            .direction(rulesets[(generation as usize - 1) % 2].enis[0].mode);
        let frame = spec.frame();
        let d = spec.datagram(frame.len());
        let now = start.elapsed().as_nanos() as u64;
        let want = tracker.process_detailed(rs, generation, 0, dir, &d, now);
        if let Some(paths) = paths.as_deref_mut() {
            paths[want.step.stat() as usize] += 1;
        }

        // The slot the packet must count into.
        let frag_key = (
            spec.src,
            spec.dst,
            d.fragment_proto,
            match d.fragment {
                Fragment::First { id } | Fragment::Later { id } => id,
                Fragment::None => 0,
            },
        );
        let want_slot = match want.step {
            Step::DropFragmentWithoutHead => None,
            Step::AcceptFragment | Step::DropFragment => {
                head_slots.get(&frag_key).copied().flatten()
            }
            _ => Some(slot_of(c, &want.decision.reason).unwrap_or(u32::MAX)),
        };
        if matches!(d.fragment, Fragment::First { .. }) && want.step != Step::PassNeighbourDiscovery
        {
            head_slots.insert(frag_key, want_slot);
        }

        let stats_before = dp.stats()?;
        let slot_before = match want_slot {
            Some(slot) if slot != u32::MAX => Some(dp.rule_stats(slot)?),
            _ => None,
        };
        let got = spec.hook.test_run(&mut dp, &frame.bytes)?;
        let stats_after = dp.stats()?;
        let moved: Vec<u32> = (0..STAT_COUNT)
            .filter(|&i| stats_after[i as usize] != stats_before[i as usize])
            .collect();
        let moved_text = moved
            .iter()
            .map(|&i| stat_label(i))
            .collect::<Vec<_>>()
            .join(", ");

        if let Some(log) = log.as_deref_mut() {
            log.push(Some(Line {
                generation,
                direction: dir,
                model: want.clone(),
                kernel: Some((got, moved_text.clone())),
            }));
        }

        let want_verdict = match want.decision.verdict {
            Verdict::Accept => ProgVerdict::Pass,
            Verdict::Drop => ProgVerdict::Drop,
        };
        let mut problems = Vec::new();
        if got != want_verdict {
            problems.push(format!("verdict: kernel {got}, model {want_verdict}"));
        }
        let want_stat = want.step.stat();
        if moved != [want_stat]
            || stats_after[want_stat as usize] != stats_before[want_stat as usize] + 1
        {
            problems.push(format!(
                "counter: kernel moved [{moved_text}], model expects {} +1",
                stat_label(want_stat)
            ));
        }
        if let (Some(slot), Some(before)) = (want_slot, slot_before) {
            let after = dp.rule_stats(slot)?;
            let len = u64::from(d.len);
            if (after.packets - before.packets, after.bytes - before.bytes) != (1, len) {
                problems.push(format!(
                    "rule counter: slot {slot} ({}) moved by {} packets / {} bytes, expected 1 / {len}",
                    want.decision.reason,
                    after.packets - before.packets,
                    after.bytes - before.bytes
                ));
            }
        } else if want_slot == Some(u32::MAX) {
            problems.push(format!(
                "the model's reason {} has no slot in generation {generation}",
                want.decision.reason
            ));
        }
        if !problems.is_empty() {
            return Ok(Some(Mismatch {
                at: i,
                what: format!(
                    "packet {i} ({} {dir:?}, generation {generation}): {spec}\n  model: {:?} {} ({})\n  {}",
                    spec.hook,
                    want.decision.verdict,
                    want.decision.reason,
                    stat_label(want_stat),
                    problems.join("\n  ")
                ),
            }));
        }
        if start.elapsed() > Duration::from_secs(50) {
            bail!("a sequence ran for more than 50 s: fragment memory (60 s) could expire; shorten it");
        }
    }
    if let Some(what) = compare_conntrack(&dp, &tracker, &compiled)? {
        return Ok(Some(Mismatch {
            at: case.events.len(),
            what,
        }));
    }
    Ok(None)
}

// ---------------------------------------------------------------------------
// Shrinking and the reproducer
// ---------------------------------------------------------------------------

/// How many replays shrinking may spend.
const SHRINK_BUDGET: usize = 400;

fn fails(case: &Case, budget: &mut usize) -> bool {
    if *budget == 0 {
        return false;
    }
    *budget -= 1;
    // A document a removal made invalid does not count as a failure.
    matches!(replay(case, None, None), Ok(Some(_)))
}

/// Removes events (chunks, then single ones) while the mismatch persists.
fn shrink_events(case: &mut Case, budget: &mut usize) {
    let mut chunk = case.events.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        let mut removed_any = false;
        while i < case.events.len() {
            let end = (i + chunk).min(case.events.len());
            let removed: Vec<Event> = case.events.drain(i..end).collect();
            if !case.events.is_empty() && fails(case, budget) {
                removed_any = true;
            } else {
                case.events.splice(i..i, removed);
                i += chunk;
            }
        }
        if chunk == 1 && !removed_any {
            break;
        }
        if !removed_any || chunk > 1 {
            chunk = (chunk / 2).max(1);
        }
        if *budget == 0 {
            break;
        }
    }
}

/// Removes rules, ACL entries, prefix-list entries, members and groups of
/// the ENI while the mismatch persists.
fn shrink_documents(case: &mut Case, budget: &mut usize) {
    type Edit = fn(&mut Document, usize) -> bool;
    fn nth_rule(doc: &mut Document, n: usize) -> bool {
        let mut k = n;
        for g in &mut doc.security_groups {
            if k < g.rules.len() {
                g.rules.remove(k);
                return true;
            }
            k -= g.rules.len();
        }
        false
    }
    fn nth_acl_entry(doc: &mut Document, n: usize) -> bool {
        let mut k = n;
        for acl in &mut doc.network_acls {
            for list in [&mut acl.ingress, &mut acl.egress] {
                if k < list.len() {
                    list.remove(k);
                    return true;
                }
                k -= list.len();
            }
        }
        false
    }
    fn nth_member(doc: &mut Document, n: usize) -> bool {
        let mut k = n;
        for g in &mut doc.security_groups {
            if k < g.member_ips.len() {
                g.member_ips.remove(k);
                return true;
            }
            k -= g.member_ips.len();
        }
        false
    }
    fn nth_list_entry(doc: &mut Document, n: usize) -> bool {
        let mut k = n;
        for pl in &mut doc.prefix_lists {
            if k < pl.entries.len() {
                pl.entries.remove(k);
                return true;
            }
            k -= pl.entries.len();
        }
        false
    }
    fn other_eni(doc: &mut Document, n: usize) -> bool {
        n == 0 && doc.enis.len() > 1 && {
            doc.enis.truncate(1);
            true
        }
    }
    fn eni_group(doc: &mut Document, n: usize) -> bool {
        let groups = &mut doc.enis[0].security_group_ids;
        groups.len() > 1 && n < groups.len() && {
            groups.remove(n);
            true
        }
    }
    fn acl(doc: &mut Document, n: usize) -> bool {
        n == 0 && !doc.network_acls.is_empty() && {
            doc.network_acls.clear();
            doc.vswitches[0].network_acl_id = None;
            true
        }
    }
    let edits: [Edit; 7] = [
        other_eni,
        acl,
        eni_group,
        nth_rule,
        nth_acl_entry,
        nth_member,
        nth_list_entry,
    ];
    for which in 0..2 {
        for edit in edits {
            let mut n = 0;
            loop {
                let mut doc = case.docs[which].clone();
                if !edit(&mut doc, n) {
                    break;
                }
                let old = std::mem::replace(&mut case.docs[which], doc);
                if !fails(case, budget) {
                    case.docs[which] = old;
                    n += 1;
                }
                if *budget == 0 {
                    return;
                }
            }
        }
    }
}

fn reproducer(case: &Case) -> String {
    let mut out = String::new();
    let swaps = case
        .events
        .iter()
        .filter(|e| matches!(e, Event::Swap))
        .count();
    for (i, doc) in case.docs.iter().enumerate() {
        if i == 1 && swaps == 0 {
            break;
        }
        let gens = if i == 0 {
            "generations 1, 3, ..."
        } else {
            "generations 2, 4, ..."
        };
        out.push_str(&format!(
            "document {} ({gens}, ENI {IFACE} = ifindex {IFINDEX}):\n{}\n",
            ["A", "B"][i],
            serde_json::to_string_pretty(doc).unwrap_or_default()
        ));
    }
    let mut log = Vec::new();
    let result = replay(case, Some(&mut log), None);
    out.push_str("packets (hook, ENI direction, generation; model vs kernel):\n");
    let mut lines = log.into_iter();
    for (i, event) in case.events.iter().enumerate() {
        match event {
            Event::Swap => {
                let _ = lines.next();
                out.push_str(&format!("  {i:>3}  -- swap to the other document --\n"));
            }
            Event::Packet(spec) => {
                let line = lines.next().flatten();
                let (gen, dir, model, kernel) = match &line {
                    Some(l) => (
                        l.generation,
                        format!("{:?}", l.direction).to_lowercase(),
                        format!(
                            "{:?} {} [{}]",
                            l.model.decision.verdict,
                            l.model.decision.reason,
                            stat_label(l.model.step.stat())
                        ),
                        l.kernel
                            .as_ref()
                            .map_or_else(String::new, |(v, moved)| format!("{v} [{moved}]")),
                    ),
                    None => (0, s("?"), s("not run"), s("not run")),
                };
                out.push_str(&format!("  {i:>3}  {:<3} {dir:<7} gen {gen}  {spec}\n       model {model}  kernel {kernel}\n", spec.hook));
            }
        }
    }
    match result {
        Ok(Some(m)) => out.push_str(&format!("mismatch: {}\n", m.what)),
        Ok(None) => out.push_str("(the shrunk case no longer fails on replay: flaky?)\n"),
        Err(e) => out.push_str(&format!("replay error: {e:#}\n")),
    }
    out
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

/// One sequence: two documents and its events.
fn random_case(seed: u64, packets: usize) -> Result<Case> {
    let mut rng = Rng::new(seed);
    let docs = [random_document(&mut rng), random_document(&mut rng)];
    let rulesets = [check_document(&docs[0])?, check_document(&docs[1])?];
    let modes = [rulesets[0].enis[0].mode, rulesets[1].enis[0].mode];
    let swaps = rng.below(9);
    let events = random_events(&mut rng, modes, packets, swaps);
    Ok(Case {
        docs,
        model_docs: None,
        events,
    })
}

fn packets_from_env() -> usize {
    std::env::var("FILTER_DIFF_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12_000)
}

#[test]
fn kernel_agrees_with_the_model_on_random_sequences() -> Result<()> {
    filter_tests::require_root()?;
    let seed = seed_from_env();
    let total = packets_from_env();
    // Loading the object (the verifier) takes most of a second: long
    // sequences keep the run short.
    let per_sequence = 1000;
    let sequences = total.div_ceil(per_sequence);
    println!("differential: seed {seed:#x} (FILTER_DIFF_SEED={seed:#x} replays it), {sequences} sequences");
    let started = Instant::now();
    let mut packets = 0;
    let mut stats: Paths = [0; STAT_COUNT as usize];
    for n in 0..sequences {
        let case_seed = seed.wrapping_add(n as u64);
        let mut case = random_case(case_seed, per_sequence)?;
        let mismatch = replay(&case, None, Some(&mut stats))?;
        packets += case
            .events
            .iter()
            .filter(|e| matches!(e, Event::Packet(_)))
            .count();
        let Some(mismatch) = mismatch else {
            continue;
        };
        eprintln!(
            "differential: sequence {n} (seed {case_seed:#x}) fails: {}\nshrinking...",
            mismatch.what
        );
        case.events
            .truncate((mismatch.at + 1).min(case.events.len()));
        let mut budget = SHRINK_BUDGET;
        shrink_events(&mut case, &mut budget);
        shrink_documents(&mut case, &mut budget);
        shrink_events(&mut case, &mut budget);
        bail!(
            "kernel and model disagree (seed {seed:#x}, sequence {n}; FILTER_DIFF_SEED={case_seed:#x} \
             FILTER_DIFF_PACKETS={per_sequence} replays this sequence alone)\n{}",
            reproducer(&case)
        );
    }
    let paths: Vec<String> = stats
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| format!("{} {n}", stat_label(i as u32)))
        .collect();
    println!(
        "differential: {packets} packets agreed in {:.1?}; paths: {}",
        started.elapsed(),
        paths.join(", ")
    );
    // The test must reach every path it claims to check.
    for step in [
        Step::AcceptNew,
        Step::AcceptTracked,
        Step::AcceptRelated,
        Step::AcceptFragment,
        Step::DropNacl,
        Step::DropSgRule,
        Step::DropDefault,
        Step::DropFragment,
        Step::DropFragmentWithoutHead,
        Step::PassNeighbourDiscovery,
    ] {
        if packets >= 10_000 && stats[step.stat() as usize] == 0 {
            bail!(
                "no packet took the path {}: the generator no longer covers it",
                stat_label(step.stat())
            );
        }
    }
    if packets >= 10_000 && stats[Step::DropRevalidated.stat() as usize] == 0 {
        println!("differential: note: no revalidation drop in this run");
    }
    Ok(())
}

/// A document with the ENI alone in one basic group `sg` with `rules`, no
/// ACL, and `conntrack` (long timeouts when `None`).
fn small_document(
    mode: &str,
    rules: Vec<SecurityGroupRule>,
    conntrack: Option<Conntrack>,
) -> Document {
    let mut rng = Rng::new(1);
    let mut doc = random_document(&mut rng);
    doc.prefix_lists.clear();
    doc.network_acls.clear();
    doc.vswitches[0].network_acl_id = None;
    doc.enis.truncate(1);
    doc.enis[0].attach_mode = s(mode);
    doc.enis[0].security_group_ids = vec![s("sg")];
    doc.security_groups = vec![SecurityGroup {
        id: s("sg"),
        vpc_id: s("vpc"),
        kind: s("basic"),
        inner_access_policy: Some(s("drop")),
        member_ips: Vec::new(),
        rules,
    }];
    if conntrack.is_some() {
        doc.conntrack = conntrack;
    }
    doc
}

fn spec(hook: Prog, src: &str, dst: &str, l4: L4) -> Spec {
    Spec {
        hook,
        src: ip(src),
        dst: ip(dst),
        l4,
        frag: Frag::None,
        hop_by_hop: false,
        dest_opts: false,
        payload: 0,
    }
}

/// The comparison must be able to fail: a model that runs another rule set
/// than the kernel is caught at the first packet they disagree on, and the
/// shrinker brings the sequence down to that packet.
#[test]
fn a_disagreement_is_caught_and_shrunk() -> Result<()> {
    filter_tests::require_root()?;
    let web = SecurityGroupRule {
        port_range: Some(s("80/80")),
        source_cidr_ip: Some(s("0.0.0.0/0")),
        ..empty_rule("ingress", "accept", "tcp")
    };
    let kernel_doc = small_document("tap", vec![web.clone()], None);
    let model_doc = small_document(
        "tap",
        vec![SecurityGroupRule {
            policy: s("drop"),
            ..web
        }],
        None,
    );
    // Ingress on a tap is TC.
    let syn = spec(
        Prog::Tc,
        "198.51.100.1",
        "192.0.2.10",
        L4::Tcp {
            sport: 40000,
            dport: 80,
            flags: 0x02,
        },
    );
    let noise = |n: u16| {
        Event::Packet(spec(
            Prog::Tc,
            "198.51.100.1",
            "192.0.2.10",
            L4::Udp {
                sport: 1000 + n,
                dport: 53,
            },
        ))
    };
    let mut events: Vec<Event> = (0..6).map(noise).collect();
    events.push(Event::Packet(syn.clone()));
    events.extend((6..12).map(noise));

    let honest = Case {
        docs: [kernel_doc.clone(), kernel_doc.clone()],
        model_docs: None,
        events: events.clone(),
    };
    if let Some(m) = replay(&honest, None, None)? {
        bail!("the same rule set on both sides disagrees: {}", m.what);
    }
    let mut case = Case {
        docs: [kernel_doc.clone(), kernel_doc],
        model_docs: Some([model_doc.clone(), model_doc]),
        events,
    };
    let Some(m) = replay(&case, None, None)? else {
        bail!("a model running another rule set was not caught");
    };
    if m.at != 6 || !m.what.contains("verdict: kernel PASS, model DROP") {
        bail!("caught at the wrong place or for the wrong reason: {m:?}");
    }
    case.events.truncate(m.at + 1);
    let mut budget = 100;
    shrink_events(&mut case, &mut budget);
    if case.events != [Event::Packet(syn)] {
        bail!("shrinking left {:?}", case.events);
    }
    let text = reproducer(&case);
    if !text.contains("\"80/80\"")
        || !text.contains("198.51.100.1:40000 > 192.0.2.10:80 tcp [S]")
        || !text.contains("mismatch:")
    {
        bail!("the reproducer lacks the document, the packet or the mismatch:\n{text}");
    }
    Ok(())
}

/// Expiry (SPEC §3.1 "idle entries expire") against the kernel's real
/// clock: one-second timeouts (three for established TCP and UDP streams),
/// and checks well clear of the boundaries. The model's clock is the
/// planned time; kernel and model must both give the expected verdict.
#[test]
fn expiry_matches_the_model() -> Result<()> {
    filter_tests::require_root()?;
    let doc = small_document(
        "tap",
        Vec::new(),
        Some(Conntrack {
            tcp_syn_s: 1,
            tcp_established_s: 3,
            tcp_closing_s: 1,
            udp_s: 1,
            udp_stream_s: 3,
            icmp_s: 1,
            other_s: 1,
            ..Conntrack::default()
        }),
    );
    let rs = check_document(&doc)?;
    let mut dp = Dataplane::load(None)?;
    let mut slots = SlotTable::default();
    let c = compile(&rs, 1, &ifindex_of, &mut slots).map_err(|e| anyhow!("{e}"))?;
    write(&mut dp, &c)?;

    // Egress (tap: XDP) opens; ingress (TC) answers, which only conntrack
    // lets in: the group has no ingress rule. Flows `a` are answered early
    // and live on; flows `b` are answered late and have expired.
    let (me, them) = ("192.0.2.10", "198.51.100.1");
    let out = |l4| spec(Prog::Xdp, me, them, l4);
    let back = |l4| spec(Prog::Tc, them, me, l4);
    let tcp = |sport, dport, flags| L4::Tcp {
        sport,
        dport,
        flags,
    };
    let udp = |sport, dport| L4::Udp { sport, dport };
    let echo = |icmp_type, id| L4::Echo { icmp_type, id };
    use ProgVerdict::{Drop, Pass};
    let plan: Vec<(u64, Spec, ProgVerdict)> = vec![
        (0, out(udp(5000, 53)), Pass),
        (0, out(udp(5001, 53)), Pass),
        (0, out(echo(8, 1)), Pass),
        (0, out(echo(8, 2)), Pass),
        (0, out(tcp(40000, 80, 0x02)), Pass),
        (0, out(tcp(40001, 80, 0x02)), Pass),
        (0, out(L4::Gre), Pass),
        (0, out(tcp(40002, 80, 0x02)), Pass),
        (0, out(tcp(40003, 80, 0x02)), Pass),
        // 0.3 s: everything is alive; the UDP answer makes a stream (3 s),
        // the SYN-ACK an established connection (3 s).
        (300, back(udp(53, 5000)), Pass),
        (300, back(echo(0, 1)), Pass),
        (300, back(tcp(80, 40000, 0x12)), Pass),
        // SPEC §3.1 half-close: 40002 is closed one way only and keeps the
        // established timeout (3 s); 40003 both ways, so closing (1 s).
        (300, back(tcp(80, 40002, 0x12)), Pass),
        (300, out(tcp(40002, 80, 0x11)), Pass),
        (300, back(tcp(80, 40003, 0x12)), Pass),
        (300, out(tcp(40003, 80, 0x11)), Pass),
        (300, back(tcp(80, 40003, 0x11)), Pass),
        // 2 s: the one-second entries have expired...
        (2000, back(udp(53, 5001)), Drop),
        (2000, back(echo(0, 2)), Drop),
        (2000, back(tcp(80, 40001, 0x12)), Drop),
        (2000, back(L4::Gre), Drop),
        // ...the three-second ones have not.
        (2000, back(udp(53, 5000)), Pass),
        (2000, back(tcp(80, 40000, 0x10)), Pass),
        (2000, back(tcp(80, 40002, 0x10)), Pass),
        (2000, back(tcp(80, 40003, 0x10)), Drop),
    ];
    let mut tracker = Tracker::new();
    let start = Instant::now();
    let mut failures = Vec::new();
    for (ms, p, expected) in &plan {
        let at = Duration::from_millis(*ms);
        if let Some(wait) = at.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let frame = p.frame();
        let d = p.datagram(frame.len());
        let want = tracker.process_detailed(
            &rs,
            1,
            0,
            p.hook.direction(AttachMode::Tap),
            &d,
            at.as_nanos() as u64,
        );
        let model = if want.decision.verdict == Verdict::Accept {
            Pass
        } else {
            Drop
        };
        let kernel = p.hook.test_run(&mut dp, &frame.bytes)?;
        if (model, kernel) != (*expected, *expected) {
            failures.push(format!(
                "at {ms} ms {p}: expected {expected}, model {model} ({}), kernel {kernel}",
                want.decision.reason
            ));
        }
    }
    let elapsed = start.elapsed();
    if elapsed > Duration::from_millis(2800) {
        bail!("the plan took {elapsed:?}: too slow to tell expired from live entries");
    }
    if !failures.is_empty() {
        bail!("expiry differs:\n{}", failures.join("\n"));
    }
    Ok(())
}

/// Not privileged: the generator's frames must carry what `Spec::datagram`
/// tells the model (lengths, protocol numbers, fragment fields), or every
/// comparison above would compare different packets.
#[test]
fn generated_frames_carry_what_the_model_reads() {
    let mut rng = Rng::new(3);
    let events = random_events(&mut rng, [AttachMode::Tap, AttachMode::Nic], 3000, 0);
    let mut kinds = std::collections::BTreeSet::new();
    for e in &events {
        let Event::Packet(spec) = e else { continue };
        let frame = spec.frame();
        let b = &frame.bytes;
        let d = spec.datagram(frame.len());
        if spec.is_v6() {
            assert_eq!(&b[12..14], &[0x86, 0xdd], "{spec}");
            assert_eq!(
                usize::from(u16::from_be_bytes([b[18], b[19]])) + 40,
                d.len as usize,
                "{spec}"
            );
        } else {
            assert_eq!(&b[12..14], &[0x08, 0x00], "{spec}");
            assert_eq!(
                usize::from(u16::from_be_bytes([b[16], b[17]])),
                d.len as usize,
                "{spec}"
            );
            assert_eq!(b[23], d.fragment_proto, "{spec}");
            let frag = u16::from_be_bytes([b[20], b[21]]);
            match spec.frag {
                Frag::None => assert_eq!(frag & 0x3fff, 0, "{spec}"),
                Frag::First { .. } => assert_eq!(frag & 0x3fff, 0x2000, "{spec}"),
                Frag::Later { offset, .. } => assert_eq!(frag & 0x1fff, offset, "{spec}"),
            }
        }
        kinds.insert(format!("{:?}", std::mem::discriminant(&spec.l4)));
    }
    assert_eq!(
        kinds.len(),
        7,
        "the generator covers few packet kinds: {kinds:?}"
    );
}
