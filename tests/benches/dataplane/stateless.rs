//! The ENI-ingress half of a rule set for the netfilter hooks in front of
//! conntrack, where the live-frames drop rate (`drop.rs`) is measured:
//!
//! - **nftables netdev ingress, concatenated ranges** (pipapo), as an
//!   expert would lay it out: the rules in strength order (priority, drop
//!   before accept, SPEC §3 step 5.2) are packed into as few layers of one
//!   verdict as the order allows (an element moves up past every element
//!   of the other verdict it does not overlap); each layer is one or a few
//!   sets of `addr . proto . port` intervals and one rule `ip saddr . meta
//!   l4proto . th dport @set verdict`. A set may hold no overlapping
//!   elements, so an element another of its layer covers is left out (same
//!   verdict) and one that only overlaps goes to the layer's next set. A
//!   frame no rule admits pays one set lookup per set.
//! - **iptables-legacy raw `PREROUTING`**: `netfilter::iptables`'s linear
//!   chain, ingress only, without the conntrack rule.
//!
//! Both end in a counted default drop, which [`dropped`] reads.
use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
};

use anyhow::{anyhow, bail, Context as _, Result};
use filter::ruleset::{Action, Direction, Protocol, Ruleset};
use filter_tests::netns::Netns;
use ipnet::IpNet;
use serde_json::Value;

use crate::{netfilter, veth::run_with_input};

/// The nft table and the named counter of its default drop.
const TABLE: &str = "fbench";
const DROP_COUNTER: &str = "default_drop";

/// One set element: a peer, protocols, destination ports.
#[derive(Clone, Copy, Debug)]
struct Element {
    net: IpNet,
    proto: (u8, u8),
    ports: (u16, u16),
}

impl Element {
    fn within(&self, other: &Element) -> bool {
        other.proto.0 <= self.proto.0
            && self.proto.1 <= other.proto.1
            && other.ports.0 <= self.ports.0
            && self.ports.1 <= other.ports.1
    }

    fn overlaps(&self, other: &Element) -> bool {
        self.proto.0 <= other.proto.1
            && other.proto.0 <= self.proto.1
            && self.ports.0 <= other.ports.1
            && other.ports.0 <= self.ports.1
    }
}

/// The sets of one run, of one family: each keyed by prefix for the
/// covering and overlap checks (only wider prefixes, inserted first, can
/// contain a narrower one).
#[derive(Default)]
struct RunSets {
    sets: Vec<HashMap<IpNet, Vec<Element>>>,
}

impl RunSets {
    /// Adds `e` (inserted from the widest prefix to the narrowest).
    fn add(&mut self, e: Element) {
        let supernets = |e: &Element| -> Vec<IpNet> {
            (0..=e.net.prefix_len())
                .filter_map(|len| IpNet::new(e.net.addr(), len).ok().map(|n| n.trunc()))
                .collect()
        };
        let above = supernets(&e);
        for set in &mut self.sets {
            let others = above.iter().filter_map(|n| set.get(n)).flatten();
            let mut overlap = false;
            for o in others {
                if e.within(o) {
                    return;
                }
                overlap |= e.overlaps(o);
            }
            if !overlap {
                set.entry(e.net).or_default().push(e);
                return;
            }
        }
        self.sets.push(HashMap::from([(e.net, vec![e])]));
    }
}

/// The nftables netdev translation of the ENI ingress of `rs` on `iface`:
/// the `nft -f` text and its number of set elements.
pub fn nft_pipapo(rs: &Ruleset, iface: &str) -> Result<(String, usize)> {
    let runs = layers(strength_order(rs)?);
    let mut sets = String::new();
    let mut rules = String::new();
    let mut elements = 0;
    for (r, (action, run)) in runs.iter().enumerate() {
        let verdict = if *action == Action::Drop {
            "drop"
        } else {
            "accept"
        };
        let mut sorted = run.clone();
        sorted.sort_by_key(|e| e.net.prefix_len());
        let (mut v4, mut v6) = (RunSets::default(), RunSets::default());
        for e in sorted {
            match e.net {
                IpNet::V4(_) => v4.add(e),
                IpNet::V6(_) => v6.add(e),
            }
        }
        for (family, addr_type, match_addr, run_sets) in [
            ("4", "ipv4_addr", "ip saddr", v4),
            ("6", "ipv6_addr", "ip6 saddr", v6),
        ] {
            for (k, set) in run_sets.sets.iter().enumerate() {
                let name = format!("r{r}_{family}_{k}");
                let _ = writeln!(
                    sets,
                    "  set {name} {{\n    type {addr_type} . inet_proto . inet_service\n    \
                     flags interval\n    elements = {{"
                );
                for e in set.values().flatten() {
                    elements += 1;
                    let _ = writeln!(
                        sets,
                        "      {} . {}-{} . {}-{},",
                        e.net, e.proto.0, e.proto.1, e.ports.0, e.ports.1
                    );
                }
                sets.push_str("    }\n  }\n");
                let _ = writeln!(
                    rules,
                    "    {match_addr} . meta l4proto . th dport @{name} {verdict}"
                );
            }
        }
    }
    let text = format!(
        "table netdev {TABLE} {{\n  counter {DROP_COUNTER} {{ }}\n{sets}  chain in {{\n    \
         type filter hook ingress device \"{iface}\" priority 0; policy accept;\n    \
         meta protocol != {{ ip, ip6 }} accept\n{rules}    counter name {DROP_COUNTER} drop\n  \
         }}\n}}\n"
    );
    Ok((text, elements))
}

/// Where an element's prefix starts, for the layer index: (IPv6, first
/// address, prefix length).
type IndexKey = (bool, u128, u8);

fn index_key(net: &IpNet) -> IndexKey {
    match net {
        IpNet::V4(n) => (false, u128::from(u32::from(n.network())), n.prefix_len()),
        IpNet::V6(n) => (true, u128::from(n.network()), n.prefix_len()),
    }
}

/// Every placed element by prefix start, with its layer: the layers an
/// element must follow.
#[derive(Default)]
struct Placed {
    index: BTreeMap<IndexKey, Vec<(usize, Action, Element)>>,
}

impl Placed {
    fn add(&mut self, layer: usize, action: Action, e: Element) {
        self.index
            .entry(index_key(&e.net))
            .or_default()
            .push((layer, action, e));
    }

    /// The last layer of the other verdict than `action` holding an
    /// element a packet could match together with `e`: a wider prefix
    /// whose protocols and ports overlap, or any narrower one (taken as
    /// overlapping whatever its ports: checking them under every wide
    /// prefix made 100k rules take many minutes, and erring this way only
    /// costs a layer more).
    fn last_conflict(&self, action: Action, e: &Element) -> Option<usize> {
        let (v6, start, len) = index_key(&e.net);
        let supernets = (0..=len)
            .filter_map(|l| {
                let net = IpNet::new(e.net.addr(), l).ok()?.trunc();
                self.index.get(&index_key(&net))
            })
            .flatten()
            .filter(|(_, a, o)| *a != action && o.overlaps(e))
            .map(|(layer, _, _)| *layer);
        let end = match e.net {
            IpNet::V4(n) => u128::from(u32::from(n.broadcast())),
            IpNet::V6(n) => u128::from(n.broadcast()),
        };
        let subnets = self
            .index
            .range((v6, start, len)..=(v6, end, u8::MAX))
            .filter(|((_, _, l), _)| *l > len)
            .flat_map(|(_, v)| v)
            .filter(|(_, a, _)| *a != action)
            .map(|(layer, _, _)| *layer);
        supernets.chain(subnets).max()
    }
}

/// Packs elements in strength order into layers of one verdict: each goes
/// into the first layer of its verdict after the last layer of the other
/// verdict it may overlap, so every overlapping pair keeps its order.
fn layers(ordered: Vec<(Action, Element)>) -> Vec<(Action, Vec<Element>)> {
    let mut layers: Vec<(Action, Vec<Element>)> = Vec::new();
    let mut placed = Placed::default();
    for (action, e) in ordered {
        let after = placed.last_conflict(action, &e).map_or(0, |i| i + 1);
        let layer = match layers[after..].iter().position(|l| l.0 == action) {
            Some(i) => after + i,
            None => {
                layers.push((action, Vec::new()));
                layers.len() - 1
            }
        };
        layers[layer].1.push(e);
        placed.add(layer, action, e);
    }
    layers
}

/// The ENI's ingress rules as elements, strongest first (inner access
/// first: it wins over every rule).
fn strength_order(rs: &Ruleset) -> Result<Vec<(Action, Element)>> {
    let [eni] = rs.enis.as_slice() else {
        bail!(
            "the benchmark's rule set has {} ENIs, not one",
            rs.enis.len()
        );
    };
    let mut runs: Vec<(Action, Element)> = Vec::new();
    let mut push = |action: Action, e: Element| runs.push((action, e));
    for g in &eni.groups {
        let group = &rs.groups[*g];
        if group.inner_accept {
            for member in &group.members {
                push(
                    Action::Accept,
                    Element {
                        net: *member,
                        proto: (0, 255),
                        ports: (0, u16::MAX),
                    },
                );
            }
        }
    }
    let mut rules: Vec<_> = eni
        .groups
        .iter()
        .flat_map(|g| rs.groups[*g].rules.iter())
        .filter(|r| r.direction == Direction::Ingress)
        .collect();
    rules.sort_by_key(|r| (r.priority, r.action != Action::Drop));
    for r in rules {
        if r.local.is_some() || !r.src_ports.is_any() {
            bail!(
                "{}: the nft translation has no local address or source port",
                r.id
            );
        }
        let (proto, ports) = match r.protocol {
            Protocol::All => ((0, 255), (0, u16::MAX)),
            Protocol::Tcp => ((6, 6), (r.dst_ports.lo, r.dst_ports.hi)),
            Protocol::Udp => ((17, 17), (r.dst_ports.lo, r.dst_ports.hi)),
            Protocol::Icmp => ((1, 1), (0, u16::MAX)),
            Protocol::Icmpv6 => ((58, 58), (0, u16::MAX)),
            Protocol::Gre => ((47, 47), (0, u16::MAX)),
        };
        for net in rs.peer_nets(&r.remote) {
            // icmp names IPv4 only, icmpv6 IPv6 only (SPEC §2.2).
            let v6 = matches!(net, IpNet::V6(_));
            if (r.protocol == Protocol::Icmp && v6) || (r.protocol == Protocol::Icmpv6 && !v6) {
                continue;
            }
            push(
                r.action,
                Element {
                    net: *net,
                    proto,
                    ports,
                },
            );
        }
    }
    Ok(runs)
}

/// Installs the translation into `ns` on `iface`: nftables ([`nft_pipapo`])
/// or iptables-legacy raw; returns what was installed, in its units.
pub fn install(nft: bool, rs: &Ruleset, ns: &Netns, iface: &str) -> Result<String> {
    if nft {
        let (text, elements) = nft_pipapo(rs, iface)?;
        run_with_input(ns, "nft", &["-f", "-"], &text)?;
        Ok(format!("{elements} elements"))
    } else {
        let ipt = netfilter::iptables_raw(rs, iface)?;
        run_with_input(ns, "iptables-legacy-restore", &[], &ipt.v4)?;
        run_with_input(ns, "ip6tables-legacy-restore", &[], &ipt.v6)?;
        Ok(format!("{} + {} (v6) rules", ipt.rules[0], ipt.rules[1]))
    }
}

/// Packets the default drop of [`install`]'s translation has dropped.
pub fn dropped(nft: bool, ns: &Netns) -> Result<u64> {
    if nft {
        let out = ns.run_ok(&[
            "nft",
            "-j",
            "list",
            "counter",
            "netdev",
            TABLE,
            DROP_COUNTER,
        ])?;
        let json: Value = serde_json::from_str(&out).context("parsing `nft -j list counter`")?;
        json["nftables"]
            .as_array()
            .and_then(|items| items.iter().find_map(|i| i["counter"]["packets"].as_u64()))
            .ok_or_else(|| anyhow!("`nft -j list counter` has no packet count"))
    } else {
        // The last rule of the chain is the default drop.
        let out = ns.run_ok(&[
            "iptables-legacy",
            "-t",
            "raw",
            "-L",
            "fb-in",
            "-v",
            "-x",
            "-n",
        ])?;
        out.lines()
            .last()
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow!("no counter in `iptables-legacy -t raw -L fb-in`"))
    }
}
