//! The rule sets the data-plane benchmarks run against.
//!
//! The generator follows `benches/compile.rs` (ten basic groups on one ENI,
//! 30 services, about 2% `all` rules, 5% prefix-list peers of 20 entries,
//! priorities spread over 1–100 with ties, a tenth of the rules drop, 70%
//! ingress), and writes a JSON document that `validate::load` turns into the
//! `Ruleset` `filterd` would compile. Remote prefixes are drawn from the
//! RFC 2544 benchmarking range `198.18.0.0/15` and from `fd00::/8`; no
//! traffic ever uses them.
//!
//! Four of the `n` rules are fixed, in group `sg-0`:
//!
//! | id | what | for |
//! |---|---|---|
//! | `probe-accept` | ingress tcp 443 from one /32 of `198.18.0.0/15`, accept, priority 1 | the accepted first packet (BPF_PROG_TEST_RUN) |
//! | `probe-drop` | the same from another /32, drop | the dropped first packet |
//! | `bench-tcp`, `bench-udp` | ingress tcp / udp 5201 from `192.0.2.0/24`, accept, priority 100 | the veth traffic |
//!
//! The probes sit in a dense part of the address space, so their searches
//! run as long as any real packet's; the bench rules are the
//! weakest, so a linear rule list (iptables) reads every rule before it
//! reaches them.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{anyhow, Result};
use filter::{compile::synthetic::Rng, ruleset::Ruleset, validate::load};
use ipnet::IpNet;
use serde_json::{json, Value};

/// The guarded address (the ENI) and the veth client.
pub const ENI_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The port the veth traffic uses (`bench-tcp`, `bench-udp`).
pub const BENCH_PORT: u16 = 5201;
/// The port the probes name.
pub const PROBE_PORT: u16 = 443;
/// The fixed rules' ids, as verdicts name them.
pub const PROBE_ACCEPT: &str = "sg-0/probe-accept";
pub const PROBE_DROP: &str = "sg-0/probe-drop";
const FIXED_RULES: usize = 4;

/// (protocol, first port, last port) of the services the rules open.
const SERVICES: &[(&str, u16, u16)] = &[
    ("tcp", 22, 22),
    ("tcp", 80, 80),
    ("tcp", 443, 443),
    ("tcp", 3306, 3306),
    ("tcp", 5432, 5432),
    ("tcp", 6379, 6379),
    ("tcp", 8080, 8089),
    ("tcp", 9000, 9100),
    ("tcp", 9200, 9300),
    ("tcp", 11211, 11211),
    ("tcp", 27017, 27019),
    ("tcp", 2379, 2380),
    ("tcp", 10250, 10255),
    ("tcp", 30000, 32767),
    ("tcp", 1024, 65535),
    ("tcp", 25, 25),
    ("tcp", 389, 389),
    ("tcp", 636, 636),
    ("tcp", 5000, 5010),
    ("tcp", 8443, 8443),
    ("udp", 53, 53),
    ("udp", 123, 123),
    ("udp", 161, 162),
    ("udp", 500, 500),
    ("udp", 4500, 4500),
    ("udp", 30000, 32767),
    ("udp", 1024, 65535),
    ("icmp", 0, 0),
    ("icmpv6", 0, 0),
    ("gre", 0, 0),
];

const GROUPS: usize = 10;
const PREFIX_LISTS: usize = 8;
const PREFIX_LIST_ENTRIES: usize = 20;

/// An address of `198.18.0.0/15`.
fn bench_v4(rng: &mut Rng) -> Ipv4Addr {
    Ipv4Addr::from(0xc612_0000 | (rng.next_u64() as u32 & 0x0001_ffff))
}

/// A prefix of `198.18.0.0/15`: hosts, /24 and /28 subnets and a few
/// wider ones (`compile.rs` draws /16s from `10.0.0.0/8`; a /15 holds two).
fn v4(rng: &mut Rng) -> IpNet {
    let len = [32u8, 32, 32, 24, 24, 28, 20][rng.below(7)];
    let addr = IpAddr::V4(bench_v4(rng));
    IpNet::new(addr, len)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| IpNet::from(addr))
}

fn v6(rng: &mut Rng) -> IpNet {
    let len = [128u8, 64, 56, 48][rng.below(4)];
    let addr = IpAddr::V6(Ipv6Addr::from(
        (0xfd00u128 << 112) | u128::from(rng.next_u64()) << 32,
    ));
    IpNet::new(addr, len)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| IpNet::from(addr))
}

/// A generated rule set and what the benchmarks need to know about it.
pub struct Bench {
    pub rules: usize,
    pub ruleset: Ruleset,
    /// Source addresses of the two probes.
    pub probe_accept: Ipv4Addr,
    pub probe_drop: Ipv4Addr,
    /// The same rule set with a NACL on the ENI's vSwitch
    /// ([`with_nacl`]), for the established packet it must not slow down.
    pub with_nacl: Ruleset,
}

/// `doc` with a NACL on its vSwitch: a few denied ranges of TEST-NET-3
/// (`203.0.113.0/24`, which no benchmark traffic uses), then accept all,
/// each way. Stateless, so the full pipeline classifies every packet
/// against it; the established fast path remembers its verdict instead.
fn with_nacl(doc: &Value) -> Value {
    let deny = |i: usize, key: &str| {
        let mut e = json!({"name": format!("deny-{i}"), "policy": "drop", "protocol": "all"});
        e[key] = json!(format!("203.0.113.{}/28", i * 16));
        e
    };
    let accept_all = |key: &str| {
        let mut e = json!({"name": "all", "policy": "accept", "protocol": "all"});
        e[key] = json!("0.0.0.0/0");
        e
    };
    let side = |key: &str| {
        let mut entries: Vec<Value> = (0..8).map(|i| deny(i, key)).collect();
        entries.push(accept_all(key));
        entries
    };
    let mut doc = doc.clone();
    doc["network_acls"] = json!([{"id": "acl", "ingress": side("source_cidr_ip"),
                                  "egress": side("destination_cidr_ip")}]);
    doc["vswitches"][0]["network_acl_id"] = json!("acl");
    doc
}

/// `rules` rules (at least the four fixed ones) on the ENI `eni-bench`,
/// interface `iface`, attached as `mode` (`"tap"` or `"nic"`).
pub fn generate(rules: usize, iface: &str, mode: &str) -> Result<Bench> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ rules as u64);
    let prefix_lists: Vec<Value> = (0..PREFIX_LISTS)
        .map(|p| {
            let mut entries: Vec<String> = (0..PREFIX_LIST_ENTRIES)
                .map(|_| v4(&mut rng).to_string())
                .collect();
            entries.sort_unstable();
            entries.dedup();
            json!({"id": format!("pl-{p}"), "address_family": "ipv4", "entries": entries})
        })
        .collect();
    let mut group_rules: Vec<Vec<Value>> = vec![Vec::new(); GROUPS];
    for i in 0..rules.saturating_sub(FIXED_RULES) {
        let all = rng.below(50) == 0;
        let (protocol, lo, hi) = if all {
            ("all", 0, 0)
        } else {
            SERVICES[rng.below(SERVICES.len())]
        };
        let ingress = rng.below(10) < 7;
        let (cidr4, cidr6, list) = if ingress {
            (
                "source_cidr_ip",
                "ipv6_source_cidr_ip",
                "source_prefix_list_id",
            )
        } else {
            ("dest_cidr_ip", "ipv6_dest_cidr_ip", "dest_prefix_list_id")
        };
        let (key, peer) = match rng.below(20) {
            0 if protocol != "icmpv6" => (list, format!("pl-{}", rng.below(PREFIX_LISTS))),
            1 | 2 if protocol != "icmp" => (cidr6, v6(&mut rng).to_string()),
            _ if protocol == "icmpv6" => (cidr6, v6(&mut rng).to_string()),
            _ => (cidr4, v4(&mut rng).to_string()),
        };
        let ports = if matches!(protocol, "tcp" | "udp") {
            format!("{lo}/{hi}")
        } else {
            "-1/-1".to_owned()
        };
        let mut rule = json!({
            "id": format!("r{i}"),
            "direction": if ingress { "ingress" } else { "egress" },
            "policy": if rng.below(10) == 0 { "drop" } else { "accept" },
            "priority": 1 + rng.below(100),
            "ip_protocol": protocol,
            "port_range": ports,
        });
        rule[key] = json!(peer);
        group_rules[i % GROUPS].push(rule);
    }

    // The probes: two /32s of the benchmarking range.
    let probe_accept = bench_v4(&mut rng);
    let mut probe_drop = bench_v4(&mut rng);
    while probe_drop == probe_accept {
        probe_drop = bench_v4(&mut rng);
    }
    let fixed = [
        json!({"id": "probe-accept", "direction": "ingress", "policy": "accept", "priority": 1,
               "ip_protocol": "tcp", "port_range": format!("{PROBE_PORT}/{PROBE_PORT}"),
               "source_cidr_ip": format!("{probe_accept}/32")}),
        json!({"id": "probe-drop", "direction": "ingress", "policy": "drop", "priority": 1,
               "ip_protocol": "tcp", "port_range": format!("{PROBE_PORT}/{PROBE_PORT}"),
               "source_cidr_ip": format!("{probe_drop}/32")}),
        json!({"id": "bench-tcp", "direction": "ingress", "policy": "accept", "priority": 100,
               "ip_protocol": "tcp", "port_range": format!("{BENCH_PORT}/{BENCH_PORT}"),
               "source_cidr_ip": "192.0.2.0/24"}),
        json!({"id": "bench-udp", "direction": "ingress", "policy": "accept", "priority": 100,
               "ip_protocol": "udp", "port_range": format!("{BENCH_PORT}/{BENCH_PORT}"),
               "source_cidr_ip": "192.0.2.0/24"}),
    ];
    group_rules[0].extend(fixed);

    let groups: Vec<Value> = group_rules
        .into_iter()
        .enumerate()
        .map(|(g, rules)| {
            json!({"id": format!("sg-{g}"), "vpc_id": "vpc", "type": "basic",
                   "inner_access_policy": if g == 0 { "accept" } else { "drop" },
                   "rules": rules})
        })
        .collect();
    let group_ids: Vec<String> = (0..GROUPS).map(|g| format!("sg-{g}")).collect();
    let doc = json!({
        "vpcs": [{"id": "vpc", "cidr": "192.0.2.0/24"}],
        "vswitches": [{"id": "vsw", "vpc_id": "vpc", "cidr": "192.0.2.0/24"}],
        "prefix_lists": prefix_lists,
        "security_groups": groups,
        "enis": [{"id": "eni-bench", "interface": iface, "attach_mode": mode,
                  "vswitch_id": "vsw", "ips": [ENI_V4.to_string()],
                  "security_group_ids": group_ids}],
    });
    let validate = |doc: &Value| {
        load(&doc.to_string())
            .map_err(|e| anyhow!("the generated document does not validate: {e:?}"))
    };
    Ok(Bench {
        rules: rules.max(FIXED_RULES),
        ruleset: validate(&doc)?,
        probe_accept,
        probe_drop,
        with_nacl: validate(&with_nacl(&doc))?,
    })
}
