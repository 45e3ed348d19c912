//! Rule-set documents built from fuzz bytes: every choice is read from an
//! [`Unstructured`], so the fuzzer steers the document and a mutation of the
//! bytes is a small change to it. The pools are small on purpose: rules and
//! packets share addresses and ports, so rules do match
//! ([`super::packet`] draws its packets from the same pools).
use arbitrary::{Result, Unstructured};
use filter::{ruleset::Ruleset, validate::load};
use ipnet::IpNet;
use serde_json::{json, Value};

/// The interfaces ENIs may name, and their ifindexes: test runs arrive on
/// ifindex 1, so the first ENI sits on `t0`.
pub const INTERFACES: [(&str, u32); 3] = [("t0", 1), ("t1", 2), ("t2", 3)];
/// The addresses of the ENI on `t0`.
pub const ENI_IPS: [&str; 3] = ["192.0.2.10", "192.0.2.11", "2001:db8:0:1::10"];
/// Addresses of the other ENIs and of remote peers.
pub const OTHER_IPS: [&str; 9] = [
    "192.0.2.20",
    "2001:db8:0:1::20",
    "198.51.100.1",
    "198.51.100.200",
    "203.0.113.7",
    "192.0.2.100",
    "2001:db8:ff::1",
    "2001:db8:0:2::1",
    "0.0.0.0",
];
/// Ports of rules and packets.
pub const PORTS: [u16; 10] = [0, 1, 22, 53, 80, 443, 1023, 1024, 40000, 65535];
const PROTOCOLS: [&str; 8] = ["tcp", "udp", "icmp", "icmpv6", "gre", "all", "47", "132"];

/// The ifindex of an ENI interface.
pub fn ifindex_of(name: &str) -> Option<u32> {
    INTERFACES.iter().find(|(n, _)| *n == name).map(|(_, i)| *i)
}

/// One of `items`.
pub fn pick<'a, T>(u: &mut Unstructured<'_>, items: &'a [T]) -> Result<&'a T> {
    u.choose(items)
}

/// An address from the pools (the ENI's own more often).
pub fn address(u: &mut Unstructured<'_>) -> Result<&'static str> {
    if u.ratio(1, 3)? {
        pick(u, &ENI_IPS).copied()
    } else {
        pick(u, &OTHER_IPS).copied()
    }
}

/// A port from the pool, or any.
pub fn port(u: &mut Unstructured<'_>) -> Result<u16> {
    if u.ratio(4, 5)? {
        pick(u, &PORTS).copied()
    } else {
        u.arbitrary()
    }
}

/// A prefix around a pool address, host bits cleared, of the given family
/// when one is asked for.
fn cidr(u: &mut Unstructured<'_>, v6: Option<bool>) -> Result<String> {
    let mut addr: std::net::IpAddr = address(u)?
        .parse()
        .map_err(|_| arbitrary::Error::IncorrectFormat)?;
    if let Some(v6) = v6 {
        if addr.is_ipv6() != v6 {
            addr = if v6 { ENI_IPS[2] } else { ENI_IPS[0] }
                .parse()
                .map_err(|_| arbitrary::Error::IncorrectFormat)?;
        }
    }
    let max = if addr.is_ipv6() { 128 } else { 32 };
    let len = u.int_in_range(0..=max)?;
    let net = IpNet::new(addr, len).map_err(|_| arbitrary::Error::IncorrectFormat)?;
    Ok(net.trunc().to_string())
}

fn port_range(u: &mut Unstructured<'_>) -> Result<String> {
    let (a, b) = (port(u)?, port(u)?);
    Ok(format!("{}/{}", a.min(b), a.max(b)))
}

fn policy(u: &mut Unstructured<'_>) -> Result<&'static str> {
    Ok(if u.ratio(2, 3)? { "accept" } else { "drop" })
}

fn rule(
    u: &mut Unstructured<'_>,
    index: usize,
    groups: &[String],
    lists: &[(String, bool)],
) -> Result<Value> {
    let ingress: bool = u.arbitrary()?;
    let protocol = *pick(u, &PROTOCOLS)?;
    let mut r = json!({
        "direction": if ingress { "ingress" } else { "egress" },
        "policy": policy(u)?,
        "priority": u.int_in_range(1..=100)?,
        "ip_protocol": protocol,
    });
    if u.arbitrary()? {
        r["id"] = json!(format!("r{index}"));
    }
    if matches!(protocol, "tcp" | "udp") {
        r["port_range"] = json!(port_range(u)?);
        if u.ratio(1, 6)? {
            r["source_port_range"] = json!(port_range(u)?);
        }
    }
    let v6 = match protocol {
        "icmp" => false,
        "icmpv6" => true,
        _ => u.arbitrary()?,
    };
    let (peer, local) = if ingress {
        ("source", "dest")
    } else {
        ("dest", "source")
    };
    let family = |field: &str, v6: bool| {
        if v6 {
            format!("ipv6_{field}_cidr_ip")
        } else {
            format!("{field}_cidr_ip")
        }
    };
    match u.int_in_range(0..=5)? {
        0 if !groups.is_empty() => r[format!("{peer}_group_id")] = json!(pick(u, groups)?),
        1 if lists.iter().any(|(_, f)| *f == v6) => {
            let list: Vec<&String> = lists
                .iter()
                .filter(|(_, f)| *f == v6)
                .map(|(id, _)| id)
                .collect();
            r[format!("{peer}_prefix_list_id")] = json!(pick(u, &list)?);
        }
        _ => r[family(peer, v6)] = json!(cidr(u, Some(v6))?),
    }
    if u.ratio(1, 6)? {
        r[family(local, v6)] = json!(cidr(u, Some(v6))?);
    }
    Ok(r)
}

fn acl_entry(u: &mut Unstructured<'_>, name: String, ingress: bool) -> Result<Value> {
    let protocol = *pick(u, &PROTOCOLS)?;
    let v6 = match protocol {
        "icmp" => false,
        "icmpv6" => true,
        _ => u.arbitrary()?,
    };
    let mut e = json!({"name": name, "policy": policy(u)?, "protocol": protocol});
    if matches!(protocol, "tcp" | "udp") {
        e["port"] = json!(port_range(u)?);
    }
    let field = if ingress {
        "source_cidr_ip"
    } else {
        "destination_cidr_ip"
    };
    e[field] = json!(cidr(u, Some(v6))?);
    Ok(e)
}

/// A document from the bytes and its rule set, when it validates (as
/// `filterd` loads it, from text).
pub fn ruleset(u: &mut Unstructured<'_>) -> Option<(Value, Ruleset)> {
    let doc = document(u).ok()?;
    let rs = load(&doc.to_string()).ok()?;
    Some((doc, rs))
}

/// A rule-set document; mostly valid, sometimes not (a duplicate address,
/// a rule the validator refuses), which exercises the validator too.
pub fn document(u: &mut Unstructured<'_>) -> Result<Value> {
    let advanced = u.ratio(1, 4)?;
    let lists: Vec<(String, bool)> = (0..u.int_in_range(0..=2)?)
        .map(|i| Ok((format!("pl-{i}"), u.arbitrary()?)))
        .collect::<Result<_>>()?;
    let group_ids: Vec<String> = (0..u.int_in_range(1..=3)?)
        .map(|i| format!("sg-{i}"))
        .collect();
    let peer_groups: &[String] = if advanced { &[] } else { &group_ids };
    let mut rule_index = 0;
    let mut groups = Vec::new();
    for id in &group_ids {
        let mut rules = Vec::new();
        for _ in 0..u.int_in_range(0..=8)? {
            rule_index += 1;
            rules.push(rule(u, rule_index, peer_groups, &lists)?);
        }
        let mut g = json!({
            "id": id, "vpc_id": "vpc",
            "type": if advanced { "advanced" } else { "basic" },
            "rules": rules,
        });
        if !advanced && u.arbitrary()? {
            g["inner_access_policy"] = json!(policy(u)?);
        }
        if u.ratio(1, 4)? {
            g["member_ips"] = json!([pick(u, &OTHER_IPS[2..8])?]);
        }
        groups.push(g);
    }
    let prefix_lists: Vec<Value> = lists
        .iter()
        .map(|(id, v6)| {
            Ok(json!({
                "id": id,
                "address_family": if *v6 { "ipv6" } else { "ipv4" },
                "entries": [cidr(u, Some(*v6))?],
            }))
        })
        .collect::<Result<_>>()?;
    let has_acl = u.arbitrary()?;
    let mut acls = Vec::new();
    if has_acl {
        let mut sides = [Vec::new(), Vec::new()];
        for (side, (ingress, prefix)) in sides.iter_mut().zip([(true, "in"), (false, "out")]) {
            for i in 0..u.int_in_range(0..=4)? {
                side.push(acl_entry(u, format!("{prefix}-{i}"), ingress)?);
            }
            if u.ratio(2, 3)? {
                let field = if ingress {
                    "source_cidr_ip"
                } else {
                    "destination_cidr_ip"
                };
                for (fam, net) in [("4", "0.0.0.0/0"), ("6", "::/0")] {
                    side.push(json!({"name": format!("{prefix}-all{fam}"), "policy": "accept", "protocol": "all", field: net}));
                }
            }
        }
        let [ingress, egress] = sides;
        acls.push(json!({"id": "acl", "ingress": ingress, "egress": egress}));
    }
    let mut enis = Vec::new();
    let other_enis = u.int_in_range(0..=2)?;
    for (n, (interface, _)) in INTERFACES.iter().enumerate().take(1 + other_enis) {
        let mut chosen: Vec<&String> = Vec::new();
        for g in &group_ids {
            if u.arbitrary()? {
                chosen.push(g);
            }
        }
        if chosen.is_empty() {
            chosen.push(pick(u, &group_ids)?);
        }
        let ips: Vec<&str> = match n {
            0 => ENI_IPS.to_vec(),
            _ => vec![OTHER_IPS[n - 1]],
        };
        enis.push(json!({
            "id": format!("eni-{n}"), "interface": interface,
            "attach_mode": if u.arbitrary()? { "tap" } else { "nic" },
            "vswitch_id": "vsw", "ips": ips, "security_group_ids": chosen,
        }));
    }
    let mut vswitch = json!({"id": "vsw", "vpc_id": "vpc", "cidr": "192.0.2.0/24", "ipv6_cidr": "2001:db8:0:1::/64"});
    if has_acl {
        vswitch["network_acl_id"] = json!("acl");
    }
    Ok(json!({
        "vpcs": [{"id": "vpc", "cidr": "192.0.2.0/24", "ipv6_cidr": "2001:db8::/48"}],
        "vswitches": [vswitch],
        "prefix_lists": prefix_lists,
        "security_groups": groups,
        "network_acls": acls,
        "enis": enis,
        "conntrack": {"on_change": if u.arbitrary()? { "revalidate" } else { "keep" }},
    }))
}
