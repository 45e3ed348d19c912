//! Shadow analysis: rules that can never decide anything.
//!
//! A rule never names a verdict when a stronger rule of the same table (the
//! security groups of an ENI in one direction) matches every packet it
//! matches: same or stronger rank (priority, then drop before accept, then
//! document order), a protocol that covers it, port ranges that contain its
//! ranges, a local restriction that contains its own (or none), and remote
//! prefixes that contain every one of its prefixes. When the stronger rule is
//! a drop of the same priority and the rule is an accept, the accept is
//! "cancelled" (SPEC §3 step 5.2, deny wins on a tie): the rule's author
//! almost certainly meant something else.
//!
//! Only single-rule cover is found: a rule covered by the union of several
//! stronger rules is not reported (that needs a box-union test).
use std::{collections::HashMap, fmt, net::IpAddr, rc::Rc};

use filter_common::{FAMILY_V4, PROTO_GRE, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use serde::{Deserialize, Serialize};

use super::{
    fast_hash::FastMap,
    prefix::{mask, Prefix},
    rules::{ProtoSet, RuleBox},
    tables::{ranked_rules, sg_table_groups},
};
use crate::{
    ruleset::{Action, Direction, GroupIdx, PortRange, Protocol, Ruleset, SgRule},
    verdict::Packet,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShadowKind {
    /// A stronger rule always decides first.
    Shadowed,
    /// An accept that a drop of the same priority always overrides.
    CancelledAccept,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowWarning {
    pub kind: ShadowKind,
    /// The rule that never decides (`SgRule::id`).
    pub rule: String,
    /// The stronger rule that decides instead.
    pub by: String,
    pub direction: Direction,
    /// The ENIs whose groups put both rules in one table.
    pub enis: Vec<String>,
    /// A packet (in `direction`, for the first of `enis`) that `rule`
    /// matches and `by` decides.
    pub witness: Packet,
}

impl fmt::Display for ShadowWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.witness;
        let what = match self.kind {
            ShadowKind::Shadowed => {
                "never decides anything: every packet it matches is decided by the stronger rule"
            }
            ShadowKind::CancelledAccept => {
                "is an accept that the drop of the same priority always overrides"
            }
        };
        write!(
            f,
            "{} ({}, ENIs {}) {what} {}; e.g. proto {} {}:{} -> {}:{}",
            self.rule,
            self.direction.as_str(),
            self.enis.join(", "),
            self.by,
            w.proto,
            w.src,
            w.src_port,
            w.dst,
            w.dst_port
        )
    }
}

/// A security-group table: the ENI's groups in order, and a direction.
type TableOf = (Vec<GroupIdx>, Direction);

/// One rule of a table under analysis.
struct Candidate<'a> {
    rule: &'a SgRule,
    shape: RuleBox,
}

/// Warnings for every security-group table an ENI uses, in a stable order;
/// a warning that holds in several tables is reported once with all their
/// ENIs.
pub fn shadow_warnings(rs: &Ruleset) -> Vec<ShadowWarning> {
    // (group list, direction) → the ENIs that use it.
    let mut tables: Vec<(TableOf, Vec<usize>)> = Vec::new();
    for (e, eni) in rs.enis.iter().enumerate() {
        for direction in Direction::ALL {
            let key = (sg_table_groups(&eni.groups), direction);
            match tables.iter_mut().find(|(k, _)| *k == key) {
                Some((_, enis)) => enis.push(e),
                None => tables.push((key, vec![e])),
            }
        }
    }
    let mut out: Vec<ShadowWarning> = Vec::new();
    let mut index: HashMap<(String, String, ShadowKind, Direction), usize> = HashMap::new();
    for ((groups, direction), enis) in tables {
        for (rule, by, kind) in table_warnings(rs, &groups, direction) {
            let key = (rule.rule.id.clone(), by.rule.id.clone(), kind, direction);
            let eni_ids = enis.iter().map(|&e| rs.enis[e].id.clone());
            match index.get(&key) {
                Some(&i) => out[i].enis.extend(eni_ids),
                None => {
                    index.insert(key, out.len());
                    out.push(ShadowWarning {
                        kind,
                        rule: rule.rule.id.clone(),
                        by: by.rule.id.clone(),
                        direction,
                        enis: eni_ids.collect(),
                        witness: witness(rs, enis[0], direction, &rule),
                    });
                }
            }
        }
    }
    for w in &mut out {
        w.enis.dedup();
    }
    out
}

/// `(rule, stronger rule, kind)` for every rule of one table that a single
/// stronger rule covers.
fn table_warnings<'a>(
    rs: &'a Ruleset,
    groups: &[GroupIdx],
    direction: Direction,
) -> Vec<(Candidate<'a>, Candidate<'a>, ShadowKind)> {
    let rules: Vec<Candidate> = ranked_rules(rs, groups, direction)
        .into_iter()
        .map(|(g, i)| {
            let rule = &rs.groups[g].rules[i];
            let shape = RuleBox::new(
                Default::default(),
                rule.protocol,
                rule.dst_ports,
                rule.src_ports,
                rule.local.as_ref(),
                rs.peer_nets(&rule.remote),
            );
            Candidate { rule, shape }
        })
        .collect();
    // Remote prefix → the rules (by strength position) that name it, only
    // the strongest of each shape: a later rule of the same shape covers
    // what the first covers and is weaker, so it is never the strongest
    // cover. Without this, rules sharing a peer (a prefix list named by
    // thousands of rules) make the search quadratic.
    let mut first_of_shape: FastMap<ShapeKey, usize> = FastMap::default();
    let mut by_prefix: FastMap<Prefix, Vec<usize>> = FastMap::default();
    for (pos, c) in rules.iter().enumerate() {
        if *first_of_shape.entry(shape_key(&c.shape)).or_insert(pos) != pos {
            continue;
        }
        for p in c.shape.remote.iter() {
            by_prefix.entry(*p).or_default().push(pos);
        }
    }
    let mut found = Vec::new();
    for (pos, c) in rules.iter().enumerate() {
        // A stronger cover must contain the first remote prefix: look only at
        // the rules naming one of its ancestors.
        let Some(first) = c.shape.remote.first() else {
            continue;
        };
        // Each list is in strength order: its first cover is its strongest.
        let strongest = ancestors(first)
            .filter_map(|a| by_prefix.get(&a))
            .filter_map(|list| {
                list.iter()
                    .copied()
                    .take_while(|&s| s < pos)
                    .find(|&s| covers(&rules[s].shape, &c.shape))
            })
            .min();
        if let Some(s) = strongest {
            let by = &rules[s];
            let kind = if by.rule.priority == c.rule.priority
                && by.rule.action == Action::Drop
                && c.rule.action == Action::Accept
            {
                ShadowKind::CancelledAccept
            } else {
                ShadowKind::Shadowed
            };
            found.push((pos, s, kind));
        }
    }
    // Rebuild owned pairs (the candidates borrow `rs`, not `rules`).
    let shape = |pos: usize| Candidate {
        rule: rules[pos].rule,
        shape: rules[pos].shape.clone(),
    };
    found
        .into_iter()
        .map(|(r, s, kind)| (shape(r), shape(s), kind))
        .collect()
}

/// What decides which packets a rule matches.
type ShapeKey = (ProtoSet, PortRange, PortRange, Option<Prefix>, Rc<[Prefix]>);

fn shape_key(b: &RuleBox) -> ShapeKey {
    (b.protos, b.dst, b.src, b.local, Rc::clone(&b.remote))
}

/// Every prefix that contains `p`, `p` included.
fn ancestors(p: &Prefix) -> impl Iterator<Item = Prefix> + '_ {
    (0..=p.len).map(|len| Prefix {
        family: p.family,
        addr: mask(p.addr, len),
        len,
    })
}

/// Whether `s` matches every packet that `r` matches.
fn covers(s: &RuleBox, r: &RuleBox) -> bool {
    let protos = super::rules::PROTO_CLASSES
        .iter()
        .all(|&c| !r.protos.contains(c) || s.protos.contains(c));
    let ports = |outer: PortRange, inner: PortRange| outer.lo <= inner.lo && inner.hi <= outer.hi;
    let local = match (s.local, r.local) {
        (None, _) => true,
        (Some(sl), Some(rl)) => sl.contains(&rl),
        (Some(_), None) => false,
    };
    // `s.remote` is sorted: look each ancestor of each prefix up.
    // The remote test is the dear one (a search per ancestor): last, and
    // only when the rest holds.
    protos
        && ports(s.dst, r.dst)
        && ports(s.src, r.src)
        && local
        && r.remote
            .iter()
            .all(|rp| ancestors(rp).any(|a| s.remote.binary_search(&a).is_ok()))
}

/// A packet that `c` matches, in `direction` of ENI `eni`.
fn witness(rs: &Ruleset, eni: usize, direction: Direction, c: &Candidate) -> Packet {
    let remote = c
        .shape
        .remote
        .first()
        .copied()
        .unwrap_or(Prefix::everything(FAMILY_V4));
    let remote_ip = inside(&remote);
    let local_ip = match c.shape.local {
        Some(local) => inside(&local),
        None => rs.enis[eni]
            .ips
            .iter()
            .copied()
            .find(|ip| ip.is_ipv4() == remote_ip.is_ipv4())
            .unwrap_or(if remote_ip.is_ipv4() {
                IpAddr::from([192, 0, 2, 1])
            } else {
                doc_v6()
            }),
    };
    let (proto, icmp_type) = match c.rule.protocol {
        Protocol::Tcp => (PROTO_TCP, 0),
        Protocol::Udp => (PROTO_UDP, 0),
        Protocol::Icmp => (PROTO_ICMP, 8),
        Protocol::Icmpv6 => (PROTO_ICMPV6, 128),
        Protocol::Gre | Protocol::All => (PROTO_GRE, 0),
    };
    let has_ports = c.rule.protocol.has_ports();
    let pick = |range: PortRange, preferred: u16| {
        if !has_ports {
            0
        } else if range.contains(preferred) {
            preferred
        } else {
            range.lo.max(1).min(range.hi)
        }
    };
    let dst_port = pick(c.rule.dst_ports, c.rule.dst_ports.lo.max(1));
    let src_port = pick(c.rule.src_ports, 49152);
    let (src, dst) = match direction {
        Direction::Ingress => (remote_ip, local_ip),
        Direction::Egress => (local_ip, remote_ip),
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

/// An address inside a prefix: the first host after the network address
/// when there is one, so witnesses do not read as `0.0.0.0`.
fn inside(p: &Prefix) -> IpAddr {
    let max = if p.family == FAMILY_V4 { 32 } else { 128 };
    let bump = if p.len < max { 1u128 << (128 - max) } else { 0 };
    Prefix {
        addr: p.addr | bump,
        ..*p
    }
    .first_addr()
}

fn doc_v6() -> IpAddr {
    IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1])
}
