//! Made-up rule-set documents of a given size, for the compile benchmark
//! and the scale tests (docs/BENCHMARKS.md, "Rule-set generators"). Both
//! are SPEC §2 documents, so what is measured goes through the parser and
//! the validator as an `apply` does. Deterministic: the same size gives
//! the same document.
//!
//! - [`Generator::Services`]: ten groups over a few dozen services, many
//!   CIDRs and some prefix-list peers, both directions: few port classes,
//!   whatever the rule count.
//! - [`Generator::Diverse`]: ten groups, half the rules UDP 5001 from
//!   random /32, /28 and /24 sources in 172.16.0.0/12, half on random ports
//!   1000–60000 (single ports and ranges of 10): as many port classes as
//!   the port space allows (issue 18).
use std::{fmt, net::Ipv4Addr};

use serde_json::{json, Value};

/// Which kind of rule set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generator {
    Services,
    Diverse,
}

impl Generator {
    pub const ALL: [Generator; 2] = [Generator::Services, Generator::Diverse];

    /// A document of `rules` rules over ten groups, all on one ENI on
    /// `interface` whose address is [`ENI_ADDR`].
    pub fn document(self, rules: usize, interface: &str) -> Value {
        let mut rng = Rng(SEED ^ rules as u64 ^ self as u64);
        let (groups, prefix_lists) = match self {
            Generator::Services => services(rules, &mut rng),
            Generator::Diverse => (diverse(rules, &mut rng), Vec::new()),
        };
        json!({
            "vpcs": [{"id": "vpc-bench", "cidr": "10.0.0.0/8"}],
            "vswitches": [{"id": "vsw-bench", "vpc_id": "vpc-bench", "cidr": "10.0.1.0/24"}],
            "prefix_lists": prefix_lists,
            "security_groups": groups,
            "enis": [{
                "id": "eni-bench", "interface": interface, "vswitch_id": "vsw-bench",
                "ips": [ENI_ADDR],
                "security_group_ids": (0..GROUPS).map(group_id).collect::<Vec<_>>(),
            }],
        })
    }
}

impl fmt::Display for Generator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Generator::Services => "services",
            Generator::Diverse => "diverse",
        })
    }
}

/// The address of the one ENI of every generated document.
pub const ENI_ADDR: &str = "10.0.1.10";
/// The port half of the diverse rules open.
pub const DIVERSE_UDP_PORT: u16 = 5001;

const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
const GROUPS: usize = 10;
const PREFIX_LISTS: usize = 8;
const PREFIX_LIST_ENTRIES: usize = 20;

/// (protocol, first port, last port) of the services the rules open; no
/// ports for the protocols without them.
const SERVICES: &[(&str, Option<(u16, u16)>)] = &[
    ("tcp", Some((22, 22))),
    ("tcp", Some((80, 80))),
    ("tcp", Some((443, 443))),
    ("tcp", Some((3306, 3306))),
    ("tcp", Some((5432, 5432))),
    ("tcp", Some((6379, 6379))),
    ("tcp", Some((8080, 8089))),
    ("tcp", Some((9000, 9100))),
    ("tcp", Some((9200, 9300))),
    ("tcp", Some((11211, 11211))),
    ("tcp", Some((27017, 27019))),
    ("tcp", Some((2379, 2380))),
    ("tcp", Some((10250, 10255))),
    ("tcp", Some((30000, 32767))),
    ("tcp", Some((1024, 65535))),
    ("tcp", Some((25, 25))),
    ("tcp", Some((389, 389))),
    ("tcp", Some((636, 636))),
    ("tcp", Some((5000, 5010))),
    ("tcp", Some((8443, 8443))),
    ("udp", Some((53, 53))),
    ("udp", Some((123, 123))),
    ("udp", Some((161, 162))),
    ("udp", Some((500, 500))),
    ("udp", Some((4500, 4500))),
    ("udp", Some((30000, 32767))),
    ("udp", Some((1024, 65535))),
    ("icmp", None),
    ("icmpv6", None),
    ("gre", None),
];

/// xorshift64*: deterministic, no dependency (the benchmarks' generators
/// share it).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A random prefix of one of `lens` inside `base/base_len` (IPv4).
    fn v4_in(&mut self, base: u32, base_len: u32, lens: &[u32]) -> String {
        let len = lens[self.below(lens.len())];
        let host = (self.next_u64() as u32) & (u32::MAX >> base_len);
        let addr = (base | host) & (u32::MAX << (32 - len));
        format!("{}/{len}", Ipv4Addr::from(addr))
    }

    fn v6(&mut self) -> String {
        let len = [128u32, 64, 56, 48][self.below(4)];
        let addr = (0xfd00u128 << 112) | (u128::from(self.next_u64()) << 32);
        let addr = addr & (u128::MAX << (128 - len));
        format!("{}/{len}", std::net::Ipv6Addr::from(addr))
    }

    fn priority(&mut self) -> usize {
        1 + self.below(100)
    }

    /// A tenth of the rules drop.
    fn policy(&mut self) -> &'static str {
        if self.below(10) == 0 {
            "drop"
        } else {
            "accept"
        }
    }
}

fn group_id(g: usize) -> String {
    format!("sg-{g}")
}

fn group(g: usize, rules: Vec<Value>, members: &[&str]) -> Value {
    json!({"id": group_id(g), "vpc_id": "vpc-bench", "type": "basic",
           "member_ips": members, "rules": rules})
}

/// The diverse-port table (issue 18): ingress rules over ten groups.
fn diverse(rules: usize, rng: &mut Rng) -> Vec<Value> {
    let mut per_group: Vec<Vec<Value>> = vec![Vec::new(); GROUPS];
    for i in 0..rules {
        let source = rng.v4_in(0xac10_0000, 12, &[32, 28, 24]);
        let (protocol, lo, hi) = if i % 2 == 0 {
            ("udp", DIVERSE_UDP_PORT, DIVERSE_UDP_PORT)
        } else {
            let protocol = ["tcp", "udp"][rng.below(2)];
            let lo = 1000 + rng.below(59_991) as u16;
            let hi = if rng.below(2) == 0 { lo } else { lo + 9 };
            (protocol, lo, hi)
        };
        per_group[i % GROUPS].push(json!({
            "id": format!("d{i}"), "direction": "ingress", "policy": rng.policy(),
            "priority": rng.priority(), "ip_protocol": protocol,
            "port_range": format!("{lo}/{hi}"), "source_cidr_ip": source,
            "description": format!("tenant {} flow {i}", i % 97),
        }));
    }
    per_group
        .into_iter()
        .enumerate()
        .map(|(g, rules)| group(g, rules, &[]))
        .collect()
}

/// The services table: what the compile benchmark measured before issue 18.
fn services(rules: usize, rng: &mut Rng) -> (Vec<Value>, Vec<Value>) {
    let v4 = |rng: &mut Rng| rng.v4_in(0x0a00_0000, 8, &[32, 32, 32, 24, 24, 28, 16]);
    let prefix_lists: Vec<Value> = (0..PREFIX_LISTS)
        .map(|p| {
            let entries: Vec<String> = (0..PREFIX_LIST_ENTRIES).map(|_| v4(rng)).collect();
            json!({"id": format!("pl-{p}"), "address_family": "ipv4", "entries": entries})
        })
        .collect();
    let mut per_group: Vec<Vec<Value>> = vec![Vec::new(); GROUPS];
    for i in 0..rules {
        let (protocol, ports) = if rng.below(50) == 0 {
            ("all", None)
        } else {
            SERVICES[rng.below(SERVICES.len())]
        };
        let ingress = rng.below(10) < 7;
        let (peer_field, peer) = match rng.below(20) {
            // The prefix lists are IPv4: not for icmpv6.
            0 if protocol != "icmpv6" => {
                ("prefix_list_id", format!("pl-{}", rng.below(PREFIX_LISTS)))
            }
            1 | 2 if protocol != "icmp" => ("ipv6_cidr_ip", rng.v6()),
            _ if protocol == "icmpv6" => ("ipv6_cidr_ip", rng.v6()),
            _ => ("cidr_ip", v4(rng)),
        };
        let peer_field = match (ingress, peer_field) {
            (true, "ipv6_cidr_ip") => "ipv6_source_cidr_ip".to_owned(),
            (false, "ipv6_cidr_ip") => "ipv6_dest_cidr_ip".to_owned(),
            (true, field) => format!("source_{field}"),
            (false, field) => format!("dest_{field}"),
        };
        let port_range = ports.map_or("-1/-1".to_owned(), |(lo, hi)| format!("{lo}/{hi}"));
        let mut rule = json!({
            "id": format!("r{i}"), "direction": if ingress { "ingress" } else { "egress" },
            "policy": rng.policy(), "priority": rng.priority(), "ip_protocol": protocol,
            "port_range": port_range,
        });
        rule[peer_field] = Value::from(peer);
        per_group[i % GROUPS].push(rule);
    }
    let groups = per_group
        .into_iter()
        .enumerate()
        .map(|(g, rules)| {
            // The first group lets its members (the ENI) in: inner access.
            let members: &[&str] = if g == 0 { &[ENI_ADDR] } else { &[] };
            let mut group = group(g, rules, members);
            if g != 0 {
                group["inner_access_policy"] = Value::from("drop");
            }
            group
        })
        .collect();
    (groups, prefix_lists)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::load;

    #[test]
    fn both_generators_make_valid_documents_of_the_size_asked() {
        for generator in Generator::ALL {
            let doc = generator.document(500, "bench0");
            let rs = load(&doc.to_string()).unwrap_or_else(|e| panic!("{generator}: {e:?}"));
            let rules: usize = rs.groups.iter().map(|g| g.rules.len()).sum();
            assert_eq!(rules, 500, "{generator}");
            assert_eq!(doc, generator.document(500, "bench0"), "deterministic");
        }
    }
}
