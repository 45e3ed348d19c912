//! The same rule sets for nftables and iptables, guarding the same
//! interface as the data plane does in `nic` mode (the server's own NIC:
//! the `input` hook for ENI ingress, `output` for ENI egress), each with
//! connection tracking in front as security groups are stateful.
//!
//! - **nftables, as an expert would write it**: no rule per security-group
//!   rule, but the decision structure the compiler builds, in nft's own
//!   terms. One concatenated interval map `l4proto . dport` sends a packet
//!   to the chain of its port class; that chain has one interval verdict
//!   map on the remote address, holding the strongest rule's verdict for
//!   every address range (the compiler's resolved prefixes, flattened into
//!   disjoint ranges); a miss falls through to the table's default. A first
//!   packet costs two set lookups whatever the rule count. It is generated
//!   from the compiled generation (`Compiled`), so it enforces exactly what
//!   the data plane enforces.
//! - **iptables, the naive linear chain**: one rule per (security-group
//!   rule, peer prefix) in strength order (priority, then drop before
//!   accept), a prefix list expanded into one rule per entry, the default
//!   last; IPv6 rules in ip6tables. First match wins, which is the security
//!   group semantics. Loaded with `iptables-restore` (the nf_tables
//!   backend Debian ships as `iptables`) and, when present,
//!   `iptables-legacy-restore` (x_tables).
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{bail, Result};
use filter::{
    compile::Compiled,
    ruleset::{Action, Direction, GroupKind, Peer, Protocol, Ruleset, SgRule},
};
use filter_common::{
    ACTION_ACCEPT, ACTION_DROP, ADDR_KEY_FIXED_BITS, DIR_EGRESS, DIR_INGRESS, FAMILY_V4,
    PORT_KEY_FIXED_BITS, PROTO_GRE, PROTO_ICMP, PROTO_ICMPV6, PROTO_OTHER, PROTO_TCP, PROTO_UDP,
    TABLE_HAS_LOCAL, TABLE_HAS_SPORT,
};
use ipnet::IpNet;

/// An nft ruleset and its size.
pub struct Nft {
    pub text: String,
    /// Map elements (port classes and address ranges).
    pub elements: usize,
    pub chains: usize,
}

/// The nft translation of `plan` for its one ENI on `iface`.
pub fn nft(plan: &Compiled, iface: &str) -> Result<Nft> {
    let [(_, eni)] = plan.enis.as_slice() else {
        bail!(
            "the benchmark's generation has {} ENIs, not one",
            plan.enis.len()
        );
    };
    let mut out = String::from("table inet fbench {\n");
    let mut elements = 0;
    let mut chains = 0;
    let mut bodies = String::new();
    for (dir, hook, if_key, addr_key, name) in [
        (DIR_INGRESS, "input", "iifname", "saddr", "in"),
        (DIR_EGRESS, "output", "oifname", "daddr", "out"),
    ] {
        let table = eni.sg_table[usize::from(dir)];
        let Some((_, meta)) = plan.tables.iter().find(|(id, _)| *id == table) else {
            bail!("table {table:#x} is missing");
        };
        if meta.flags & (TABLE_HAS_SPORT | TABLE_HAS_LOCAL) != 0 {
            bail!("the nft translation handles destination ports and remote addresses only");
        }
        let default = verdict(meta.default_action)?;

        // Port classes: (protocol class, port range) → rule set.
        let mut ports: BTreeMap<u8, Vec<(u16, u16, u32)>> = BTreeMap::new();
        for e in plan.dport.iter().filter(|e| e.key.table == table) {
            let bits = e.prefix_len - PORT_KEY_FIXED_BITS;
            let port = u16::from_be_bytes(e.key.port);
            let span = if bits == 0 {
                u16::MAX
            } else {
                (1u32 << (16 - bits)).wrapping_sub(1) as u16
            };
            let lo = port & !span;
            ports
                .entry(e.key.proto)
                .or_default()
                .push((lo, lo | span, e.value));
        }
        let mut used: BTreeSet<u32> = BTreeSet::new();
        let mut port_map = Vec::new();
        let mut proto_map = Vec::new();
        let mut other = None;
        for (proto, mut ranges) in ports {
            ranges.sort_unstable();
            if proto == PROTO_TCP || proto == PROTO_UDP {
                let name = if proto == PROTO_TCP { "tcp" } else { "udp" };
                for (lo, hi, rs) in merge(&ranges) {
                    used.insert(rs);
                    port_map.push(format!("{name} . {lo}-{hi} : jump rs_{rs:x}"));
                }
            } else if let Some(&(_, _, rs)) = ranges.first() {
                used.insert(rs);
                match proto {
                    PROTO_ICMP => proto_map.push(format!("icmp : jump rs_{rs:x}")),
                    PROTO_ICMPV6 => proto_map.push(format!("ipv6-icmp : jump rs_{rs:x}")),
                    PROTO_GRE => proto_map.push(format!("gre : jump rs_{rs:x}")),
                    PROTO_OTHER => other = Some(rs),
                    _ => bail!("unknown protocol class {proto}"),
                }
            }
        }
        elements += port_map.len() + proto_map.len();

        // One chain per rule set: the remote address → verdict.
        for rs in &used {
            let mut v4 = Vec::new();
            let mut v6 = Vec::new();
            for e in plan.rules.iter().filter(|e| e.key.id == *rs) {
                let len = e.prefix_len - ADDR_KEY_FIXED_BITS;
                let (list, bits, addr) = if e.key.family == FAMILY_V4 {
                    let a = u32::from_be_bytes([
                        e.key.addr[0],
                        e.key.addr[1],
                        e.key.addr[2],
                        e.key.addr[3],
                    ]);
                    (&mut v4, 32, u128::from(a))
                } else {
                    (&mut v6, 128, u128::from_be_bytes(e.key.addr))
                };
                let span = if len == 0 {
                    u128::MAX >> (128 - bits)
                } else {
                    (1u128 << (bits - len)).wrapping_sub(1)
                };
                list.push((addr & !span, addr | span, len, e.value.action));
            }
            let _ = writeln!(bodies, "  chain rs_{rs:x} {{");
            for (list, family) in [(v4, "ip"), (v6, "ip6")] {
                let ranges = flatten(list);
                if ranges.is_empty() {
                    continue;
                }
                elements += ranges.len();
                let items: Vec<String> = ranges
                    .iter()
                    .map(|(lo, hi, action)| {
                        Ok(format!(
                            "{} : {}",
                            range(*lo, *hi, family == "ip6"),
                            verdict(*action)?
                        ))
                    })
                    .collect::<Result<_>>()?;
                let _ = writeln!(
                    bodies,
                    "    {family} {addr_key} vmap {{ {} }}",
                    items.join(", ")
                );
            }
            let _ = writeln!(bodies, "    {default}\n  }}");
            chains += 1;
        }

        // Inner access: the members of the ENI's accepting groups.
        let mut inner = [Vec::new(), Vec::new()];
        for e in plan.inner.iter().filter(|e| e.key.id == table) {
            let len = e.prefix_len - ADDR_KEY_FIXED_BITS;
            if e.key.family == FAMILY_V4 {
                let a =
                    Ipv4Addr::from([e.key.addr[0], e.key.addr[1], e.key.addr[2], e.key.addr[3]]);
                inner[0].push(format!("{a}/{len}"));
            } else {
                inner[1].push(format!("{}/{len}", Ipv6Addr::from(e.key.addr)));
            }
        }
        elements += inner[0].len() + inner[1].len();

        let _ = writeln!(
            out,
            "  chain {hook} {{\n    type filter hook {hook} priority filter; policy accept;\n    \
             {if_key} != \"{iface}\" accept\n    ct state established,related accept"
        );
        for (members, family) in inner.iter().zip(["ip", "ip6"]) {
            if !members.is_empty() {
                let _ = writeln!(
                    out,
                    "    {family} {addr_key} {{ {} }} accept",
                    members.join(", ")
                );
            }
        }
        if !port_map.is_empty() {
            let _ = writeln!(
                out,
                "    meta l4proto . th dport vmap {{ {} }}",
                port_map.join(", ")
            );
        }
        if !proto_map.is_empty() {
            let _ = writeln!(out, "    meta l4proto vmap {{ {} }}", proto_map.join(", "));
        }
        if let Some(rs) = other {
            let _ = writeln!(
                out,
                "    meta l4proto != {{ tcp, udp, icmp, ipv6-icmp, gre }} jump rs_{rs:x}"
            );
        }
        let _ = writeln!(out, "    {default}\n  }}");
        let _ = name;
    }
    out.push_str(&bodies);
    out.push_str("}\n");
    Ok(Nft {
        text: out,
        elements,
        chains,
    })
}

fn verdict(action: u32) -> Result<&'static str> {
    match u8::try_from(action).unwrap_or(0) {
        ACTION_ACCEPT => Ok("accept"),
        ACTION_DROP => Ok("drop"),
        other => bail!("action {other} in a security-group table"),
    }
}

/// Adjacent port ranges with the same rule set, joined.
fn merge(sorted: &[(u16, u16, u32)]) -> Vec<(u16, u16, u32)> {
    let mut out: Vec<(u16, u16, u32)> = Vec::new();
    for &(lo, hi, rs) in sorted {
        match out.last_mut() {
            Some(last) if last.2 == rs && u32::from(last.1) + 1 == u32::from(lo) => last.1 = hi,
            _ => out.push((lo, hi, rs)),
        }
    }
    out
}

/// Longest-prefix-match entries `(first, last, prefix length, action)` as
/// disjoint ranges, each with the action of the longest prefix covering it
/// (what the trie answers for every address in it); addresses no prefix
/// covers are left out. Adjacent ranges with one action are joined.
fn flatten(mut entries: Vec<(u128, u128, u32, u32)>) -> Vec<(u128, u128, u32)> {
    // Pre-order: an enclosing prefix before the prefixes inside it.
    entries.sort_unstable_by_key(|&(lo, _, len, _)| (lo, len));
    let mut out: Vec<(u128, u128, u32)> = Vec::new();
    let mut push = |lo: u128, hi: u128, action: u32| match out.last_mut() {
        Some(last) if last.2 == action && last.1.checked_add(1) == Some(lo) => last.1 = hi,
        _ => out.push((lo, hi, action)),
    };
    // Enclosing prefixes (last address, action), innermost on top, and the
    // first address not yet emitted (`None`: past the end of the space).
    let mut stack: Vec<(u128, u32)> = Vec::new();
    let mut cursor: Option<u128> = Some(0);
    for (lo, hi, _, action) in entries {
        while let Some(&(end, act)) = stack.last() {
            if end >= lo {
                break;
            }
            if let Some(c) = cursor.filter(|c| *c <= end) {
                push(c, end, act);
            }
            cursor = end.checked_add(1);
            stack.pop();
        }
        if let (Some(&(_, act)), Some(c)) = (stack.last(), cursor) {
            if c < lo {
                push(c, lo - 1, act);
            }
        }
        cursor = Some(lo);
        stack.push((hi, action));
    }
    while let Some((end, act)) = stack.pop() {
        if let Some(c) = cursor.filter(|c| *c <= end) {
            push(c, end, act);
            cursor = end.checked_add(1);
        }
    }
    out
}

fn range(lo: u128, hi: u128, v6: bool) -> String {
    let addr = |a: u128| -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::from(a))
        } else {
            IpAddr::V4(Ipv4Addr::from(a as u32))
        }
    };
    if lo == hi {
        addr(lo).to_string()
    } else {
        format!("{}-{}", addr(lo), addr(hi))
    }
}

/// `iptables-restore` input for IPv4 and `ip6tables-restore` input for
/// IPv6, and how many rules each has.
pub struct Iptables {
    pub v4: String,
    pub v6: String,
    pub rules: [usize; 2],
}

/// The naive linear translation of the one ENI of `rs` on `iface`.
pub fn iptables(rs: &Ruleset, iface: &str) -> Result<Iptables> {
    linear(rs, iface, false)
}

/// The same chain for ENI ingress alone in the raw table's `PREROUTING`,
/// in front of conntrack, so stateless (`stateless.rs`).
pub fn iptables_raw(rs: &Ruleset, iface: &str) -> Result<Iptables> {
    linear(rs, iface, true)
}

fn linear(rs: &Ruleset, iface: &str, raw: bool) -> Result<Iptables> {
    let [eni] = rs.enis.as_slice() else {
        bail!(
            "the benchmark's rule set has {} ENIs, not one",
            rs.enis.len()
        );
    };
    let advanced = eni
        .groups
        .iter()
        .any(|g| rs.groups[*g].kind == GroupKind::Advanced);
    let mut texts = [String::new(), String::new()];
    let mut counts = [0usize; 2];
    for text in texts.iter_mut() {
        if raw {
            let _ = writeln!(
                text,
                "*raw\n:PREROUTING ACCEPT [0:0]\n:fb-in - [0:0]\n-A PREROUTING -i {iface} -j fb-in"
            );
        } else {
            let _ = writeln!(
                text,
                "*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:fb-in - [0:0]\n:fb-out - [0:0]"
            );
            let _ = writeln!(
                text,
                "-A INPUT -i {iface} -j fb-in\n-A OUTPUT -o {iface} -j fb-out"
            );
        }
    }
    let directions: &[_] = if raw {
        &[(Direction::Ingress, "fb-in", "-s", "-d")]
    } else {
        &[
            (Direction::Ingress, "fb-in", "-s", "-d"),
            (Direction::Egress, "fb-out", "-d", "-s"),
        ]
    };
    for &(dir, chain, peer_flag, local_flag) in directions {
        let mut lines: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        for l in lines.iter_mut().filter(|_| !raw) {
            l.push(format!(
                "-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
            ));
        }
        // Inner access first: it wins over every rule (SPEC §3 step 5.1).
        for g in &eni.groups {
            let group = &rs.groups[*g];
            if group.inner_accept {
                for member in &group.members {
                    let f = usize::from(matches!(member, IpNet::V6(_)));
                    lines[f].push(format!("-A {chain} {peer_flag} {member} -j ACCEPT"));
                }
            }
        }
        // Every rule of the ENI's groups in this direction, strongest first.
        let mut rules: Vec<&SgRule> = eni
            .groups
            .iter()
            .flat_map(|g| rs.groups[*g].rules.iter())
            .filter(|r| r.direction == dir)
            .collect();
        rules.sort_by_key(|r| (r.priority, r.action != Action::Drop));
        for r in rules {
            let peers: Vec<IpNet> = match &r.remote {
                Peer::Cidr(net) => vec![*net],
                Peer::PrefixList(p) => rs.prefix_lists[*p].entries.clone(),
                Peer::Group(g) => rs.groups[*g].members.clone(),
            };
            for peer in peers {
                let v6 = matches!(peer, IpNet::V6(_));
                let proto = match (r.protocol, v6) {
                    (Protocol::All, _) => "",
                    (Protocol::Tcp, _) => "-p tcp ",
                    (Protocol::Udp, _) => "-p udp ",
                    (Protocol::Gre, _) => "-p gre ",
                    (Protocol::Icmp, false) => "-p icmp ",
                    (Protocol::Icmpv6, true) => "-p ipv6-icmp ",
                    // icmp names IPv4 only, icmpv6 IPv6 only (SPEC §2.2).
                    (Protocol::Icmp, true) | (Protocol::Icmpv6, false) => continue,
                };
                let mut line = format!("-A {chain} {proto}{peer_flag} {peer}");
                if let Some(local) = r.local {
                    if matches!(local, IpNet::V6(_)) != v6 {
                        continue;
                    }
                    let _ = write!(line, " {local_flag} {local}");
                }
                if r.protocol.has_ports() {
                    let m = if r.protocol == Protocol::Tcp {
                        "tcp"
                    } else {
                        "udp"
                    };
                    let _ = write!(line, " -m {m}");
                    if !r.dst_ports.is_any() {
                        let _ = write!(line, " --dport {}:{}", r.dst_ports.lo, r.dst_ports.hi);
                    }
                    if !r.src_ports.is_any() {
                        let _ = write!(line, " --sport {}:{}", r.src_ports.lo, r.src_ports.hi);
                    }
                }
                let target = if r.action == Action::Drop {
                    "DROP"
                } else {
                    "ACCEPT"
                };
                let _ = write!(line, " -j {target}");
                lines[usize::from(v6)].push(line);
            }
        }
        let default = if dir == Direction::Egress && !advanced {
            "ACCEPT"
        } else {
            "DROP"
        };
        for (f, l) in lines.iter_mut().enumerate() {
            l.push(format!("-A {chain} -j {default}"));
            counts[f] += l.len();
            for line in l.iter() {
                texts[f].push_str(line);
                texts[f].push('\n');
            }
        }
    }
    for text in texts.iter_mut() {
        text.push_str("COMMIT\n");
    }
    let [v4, v6] = texts;
    Ok(Iptables {
        v4,
        v6,
        rules: counts,
    })
}

/// Checks [`flatten`] against a plain longest-prefix match on random
/// prefix sets (the nft translation is only as right as this).
pub fn check_flatten() -> Result<()> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..200 {
        // Prefixes of a 12-bit space, to make overlaps common.
        let mut entries = Vec::new();
        let mut seen = BTreeSet::new();
        for _ in 0..(next() % 12) {
            let len = (next() % 13) as u32;
            let span = (1u128 << (12 - len)) - 1;
            let lo = u128::from(next() % 4096) & !span;
            if seen.insert((lo, len)) {
                entries.push((lo, lo | span, len, 1 + (next() % 2) as u32));
            }
        }
        let ranges = flatten(entries.clone());
        for a in 0..4096u128 {
            let lpm = entries
                .iter()
                .filter(|(lo, hi, _, _)| *lo <= a && a <= *hi)
                .max_by_key(|(_, _, len, _)| *len)
                .map(|e| e.3);
            let flat = ranges
                .iter()
                .find(|(lo, hi, _)| *lo <= a && a <= *hi)
                .map(|r| r.2);
            if lpm != flat {
                bail!("flatten: address {a} of {entries:?}: trie {lpm:?}, ranges {flat:?}");
            }
        }
    }
    Ok(())
}
