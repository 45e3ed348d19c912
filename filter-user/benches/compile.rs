//! Compile-time benchmark (`cargo xtask bench`, or `cargo bench -p
//! filter-user --bench compile`): 10, 1k, 10k and 100k rules on one ENI.
//!
//! The rule sets look like real ones: ten groups, a few dozen services (single
//! ports and ranges, TCP and UDP), many CIDRs and some prefix-list peers
//! (20 entries each), about 2% `all` rules, priorities spread over 1–100 with
//! ties, a tenth of the rules drops, both directions. Prints the compile time
//! (best and median of several runs), the entry counts of the prefix tables
//! and the sorted-range bounds they become, and the memory per rule: bytes
//! of keys and values, and the kernel's (array entries and hash elements,
//! estimated).
//!
//! Goal (issue #3): 10k rules under 100 ms, 100k under 1 s.
use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use filter::{
    compile::{compile, SlotTable},
    ruleset::{
        Action, AttachMode, ConntrackConfig, Direction, Eni, FlowLogConfig, GroupKind, Peer,
        PortRange, PrefixList, Protocol, Ruleset, SecurityGroup, SgRule, VSwitch, Vpc,
    },
};
use ipnet::IpNet;

/// (protocol, first port, last port) of the services the rules open.
const SERVICES: &[(Protocol, u16, u16)] = &[
    (Protocol::Tcp, 22, 22),
    (Protocol::Tcp, 80, 80),
    (Protocol::Tcp, 443, 443),
    (Protocol::Tcp, 3306, 3306),
    (Protocol::Tcp, 5432, 5432),
    (Protocol::Tcp, 6379, 6379),
    (Protocol::Tcp, 8080, 8089),
    (Protocol::Tcp, 9000, 9100),
    (Protocol::Tcp, 9200, 9300),
    (Protocol::Tcp, 11211, 11211),
    (Protocol::Tcp, 27017, 27019),
    (Protocol::Tcp, 2379, 2380),
    (Protocol::Tcp, 10250, 10255),
    (Protocol::Tcp, 30000, 32767),
    (Protocol::Tcp, 1024, 65535),
    (Protocol::Tcp, 25, 25),
    (Protocol::Tcp, 389, 389),
    (Protocol::Tcp, 636, 636),
    (Protocol::Tcp, 5000, 5010),
    (Protocol::Tcp, 8443, 8443),
    (Protocol::Udp, 53, 53),
    (Protocol::Udp, 123, 123),
    (Protocol::Udp, 161, 162),
    (Protocol::Udp, 500, 500),
    (Protocol::Udp, 4500, 4500),
    (Protocol::Udp, 30000, 32767),
    (Protocol::Udp, 1024, 65535),
    (Protocol::Icmp, 0, 65535),
    (Protocol::Icmpv6, 0, 65535),
    (Protocol::Gre, 0, 65535),
];

const GROUPS: usize = 10;
const PREFIX_LISTS: usize = 8;
const PREFIX_LIST_ENTRIES: usize = 20;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn v4(rng: &mut Rng) -> IpNet {
    let len = [32u8, 32, 32, 24, 24, 28, 16][rng.below(7)];
    let addr = Ipv4Addr::from(0x0a00_0000 | (rng.next() as u32 & 0x00ff_ffff));
    IpNet::new(IpAddr::V4(addr), len)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| IpNet::from(IpAddr::V4(addr)))
}

fn v6(rng: &mut Rng) -> IpNet {
    let len = [128u8, 64, 56, 48][rng.below(4)];
    let addr = Ipv6Addr::from((0xfd00u128 << 112) | u128::from(rng.next()) << 32);
    IpNet::new(IpAddr::V6(addr), len)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| IpNet::from(IpAddr::V6(addr)))
}

fn ruleset(rules: usize) -> Ruleset {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ rules as u64);
    let prefix_lists = (0..PREFIX_LISTS)
        .map(|p| PrefixList {
            id: format!("pl-{p}"),
            entries: (0..PREFIX_LIST_ENTRIES).map(|_| v4(&mut rng)).collect(),
        })
        .collect();
    let mut groups: Vec<SecurityGroup> = (0..GROUPS)
        .map(|g| SecurityGroup {
            id: format!("sg-{g}"),
            vpc: 0,
            kind: GroupKind::Basic,
            inner_accept: g == 0,
            members: vec![IpNet::from(IpAddr::from([10, 0, 1, 10]))],
            rules: Vec::new(),
        })
        .collect();
    for i in 0..rules {
        let g = i % GROUPS;
        let all = rng.below(50) == 0;
        let (protocol, lo, hi) = if all {
            (Protocol::All, 0, 65535)
        } else {
            SERVICES[rng.below(SERVICES.len())]
        };
        let remote = match rng.below(20) {
            0 => Peer::PrefixList(rng.below(PREFIX_LISTS)),
            1 | 2 if protocol != Protocol::Icmp => Peer::Cidr(v6(&mut rng)),
            _ if protocol == Protocol::Icmpv6 => Peer::Cidr(v6(&mut rng)),
            _ => Peer::Cidr(v4(&mut rng)),
        };
        let direction = if rng.below(10) < 7 {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        groups[g].rules.push(SgRule {
            id: format!("sg-{g}/r{i}"),
            direction,
            action: if rng.below(10) == 0 {
                Action::Drop
            } else {
                Action::Accept
            },
            priority: 1 + rng.below(100) as u8,
            protocol,
            dst_ports: PortRange { lo, hi },
            src_ports: PortRange::ANY,
            remote,
            local: None,
            description: String::new(),
        });
    }
    Ruleset {
        vpcs: vec![Vpc {
            id: "vpc".into(),
            cidrs: vec![IpNet::from(IpAddr::from([10, 0, 0, 0]))],
        }],
        vswitches: vec![VSwitch {
            id: "vsw".into(),
            vpc: 0,
            cidrs: Vec::new(),
            acl: None,
        }],
        prefix_lists,
        groups,
        acls: Vec::new(),
        enis: vec![Eni {
            id: "eni-bench".into(),
            interface: "bench0".into(),
            mode: AttachMode::Tap,
            vswitch: 0,
            ips: vec![IpAddr::from([10, 0, 1, 10])],
            groups: (0..GROUPS).collect(),
        }],
        conntrack: ConntrackConfig::default(),
        flow_log: FlowLogConfig {
            capture_window_s: None,
        },
    }
}

fn main() {
    let ifindex_of = |_: &str| Some(2);
    println!(
        "{:>7} {:>10} {:>10} {:>8} {:>6} {:>8} {:>9} {:>8} {:>9} {:>10} {:>10}",
        "rules",
        "best",
        "median",
        "rule-sets",
        "dport",
        "rules",
        "inner",
        "bounds",
        "kv B/rule",
        "kern B/rule",
        "goal"
    );
    for rules in [10, 1_000, 10_000, 100_000] {
        let rs = ruleset(rules);
        let runs = if rules >= 100_000 { 5 } else { 11 };
        let mut times: Vec<Duration> = Vec::with_capacity(runs);
        let mut last = None;
        for _ in 0..runs {
            let mut slots = SlotTable::new();
            let start = Instant::now();
            let compiled = compile(black_box(&rs), 1, &ifindex_of, &mut slots);
            times.push(start.elapsed());
            last = Some(compiled);
        }
        times.sort_unstable();
        let compiled = match last {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                println!("{rules:>7} compile failed: {e}");
                continue;
            }
            None => continue,
        };
        let stats = compiled.stats();
        let goal = match rules {
            10_000 => Some(Duration::from_millis(100)),
            100_000 => Some(Duration::from_secs(1)),
            _ => None,
        };
        let verdict = goal.map_or("-".to_string(), |g| {
            format!(
                "{} {:?}",
                if times[runs / 2] < g {
                    "ok <"
                } else {
                    "MISSED <"
                },
                g
            )
        });
        println!(
            "{:>7} {:>10.2?} {:>10.2?} {:>8} {:>6} {:>8} {:>9} {:>8} {:>9} {:>10} {:>10}",
            rules,
            times[0],
            times[runs / 2],
            stats.rule_sets,
            stats.dport,
            stats.rules,
            stats.inner,
            stats.bounds,
            stats.key_value_bytes / rules,
            stats.kernel_bytes / rules,
            verdict
        );
    }
}
