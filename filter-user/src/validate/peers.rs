//! The peer and local fields of a security-group rule (SPEC §2.2): which
//! are allowed for the direction, exactly one peer and at most one local
//! address, and families that can match the same packet.
use ipnet::IpNet;

use super::{
    addrs::{self, CidrField, Family},
    errors::{Errors, JsonPath},
    hints,
    refs::Kind,
    rules::RuleContext,
};
use crate::{
    model::SecurityGroupRule,
    ruleset::{Direction, GroupKind, Peer, Protocol},
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Dest,
}

#[derive(Clone, Copy)]
enum What {
    Cidr(Family),
    Group,
    PrefixList,
}

/// A peer or local field that the rule gives.
struct Given<'r> {
    name: &'static str,
    side: Side,
    what: What,
    value: &'r str,
}

/// The peer and local fields, in the order of SPEC §2.2; [`given`] pairs
/// them with the rule's values in the same order.
const FIELDS: [(&str, Side, What); 8] = [
    ("source_cidr_ip", Side::Source, What::Cidr(Family::V4)),
    ("ipv6_source_cidr_ip", Side::Source, What::Cidr(Family::V6)),
    ("source_group_id", Side::Source, What::Group),
    ("source_prefix_list_id", Side::Source, What::PrefixList),
    ("dest_cidr_ip", Side::Dest, What::Cidr(Family::V4)),
    ("ipv6_dest_cidr_ip", Side::Dest, What::Cidr(Family::V6)),
    ("dest_group_id", Side::Dest, What::Group),
    ("dest_prefix_list_id", Side::Dest, What::PrefixList),
];

fn given(rule: &SecurityGroupRule) -> Vec<Given<'_>> {
    let values = [
        &rule.source_cidr_ip,
        &rule.ipv6_source_cidr_ip,
        &rule.source_group_id,
        &rule.source_prefix_list_id,
        &rule.dest_cidr_ip,
        &rule.ipv6_dest_cidr_ip,
        &rule.dest_group_id,
        &rule.dest_prefix_list_id,
    ];
    FIELDS
        .into_iter()
        .zip(values)
        .filter_map(|((name, side, what), value)| {
            Some(Given {
                name,
                side,
                what,
                value: value.as_deref()?,
            })
        })
        .collect()
}

/// The same field on the other side: `source_group_id` ↔ `dest_group_id`.
fn other_side(name: &str) -> String {
    if name.contains("source") {
        name.replacen("source", "dest", 1)
    } else {
        name.replacen("dest", "source", 1)
    }
}

/// The same field for the other family: `source_cidr_ip` ↔
/// `ipv6_source_cidr_ip`.
fn other_family(name: &'static str) -> &'static str {
    match name {
        "source_cidr_ip" => "ipv6_source_cidr_ip",
        "ipv6_source_cidr_ip" => "source_cidr_ip",
        "dest_cidr_ip" => "ipv6_dest_cidr_ip",
        "ipv6_dest_cidr_ip" => "dest_cidr_ip",
        _ => name,
    }
}

/// A checked endpoint and the family it is limited to, if any.
struct Endpoint {
    name: &'static str,
    peer: Peer,
    family: Option<Family>,
}

/// Checks the peer and local fields: which are allowed for the direction,
/// exactly one peer and at most one local, and that the families of the
/// protocol, peer and local can all match the same packet.
pub(crate) fn endpoints(
    cx: &RuleContext,
    rule: &SecurityGroupRule,
    path: &JsonPath,
    direction: Option<Direction>,
    protocol: Option<Protocol>,
    errs: &mut Errors,
) -> Option<(Peer, Option<IpNet>)> {
    let remote_side = direction.map(|d| {
        if d == Direction::Ingress {
            Side::Source
        } else {
            Side::Dest
        }
    });
    let (mut peers, mut locals, mut ok) = (Vec::new(), Vec::new(), true);
    for field in given(rule) {
        let field_path = path.field(field.name);
        let is_peer = remote_side.is_none_or(|side| side == field.side);
        if !is_peer && !matches!(field.what, What::Cidr(_)) {
            // Groups and prefix lists are peers only: on the local side they
            // are the wrong field, not a second endpoint.
            let (dir, peer_side) = describe_direction(direction);
            errs.bad(
                &field_path,
                field.value,
                format!("is not allowed in {dir} rule, whose peer is the {peer_side}"),
            )
            .hint(hints::did_you_mean(other_side(field.name)));
            ok = false;
            continue;
        }
        let Some(endpoint) = endpoint(cx, &field, &field_path, protocol, errs) else {
            ok = false;
            continue;
        };
        if is_peer {
            peers.push(endpoint);
        } else {
            locals.push(endpoint);
        }
    }
    let direction = direction?;
    ok &= count_endpoints(errs, path, direction, &peers, &locals, ok);
    if let (Some(peer), Some(local)) = (peers.first(), locals.first()) {
        if let (Some(pf), Some(lf)) = (peer.family, local.family) {
            if pf != lf {
                let value = local_text(rule, local.name);
                errs.bad(
                    &path.field(local.name),
                    value,
                    format!(
                        "is {}, but the peer ({}) is {}: the rule could never match",
                        lf.name(),
                        peer.name,
                        pf.name()
                    ),
                );
                ok = false;
            }
        }
    }
    let local = match locals.first().map(|l| &l.peer) {
        Some(Peer::Cidr(net)) => Some(*net),
        _ => None,
    };
    let peer = peers.into_iter().next()?.peer;
    ok.then_some((peer, local))
}

fn local_text<'r>(rule: &'r SecurityGroupRule, name: &str) -> &'r str {
    given(rule)
        .into_iter()
        .find(|g| g.name == name)
        .map_or("", |g| g.value)
}

/// "an ingress", "the source": how messages name a direction and its peer.
fn describe_direction(direction: Option<Direction>) -> (&'static str, &'static str) {
    match direction {
        Some(Direction::Egress) => ("an egress", "destination (dest_*)"),
        _ => ("an ingress", "source (source_*)"),
    }
}

/// Exactly one peer, at most one local address. `fields_ok` is false when a
/// field was already reported, which may be why no peer is left.
fn count_endpoints(
    errs: &mut Errors,
    path: &JsonPath,
    direction: Direction,
    peers: &[Endpoint],
    locals: &[Endpoint],
    fields_ok: bool,
) -> bool {
    let mut ok = true;
    if peers.is_empty() && fields_ok {
        let (dir, _) = describe_direction(Some(direction));
        let names = match direction {
            Direction::Ingress => {
                "source_cidr_ip, ipv6_source_cidr_ip, source_group_id or source_prefix_list_id"
            }
            Direction::Egress => {
                "dest_cidr_ip, ipv6_dest_cidr_ip, dest_group_id or dest_prefix_list_id"
            }
        };
        let err = errs.at(
            path,
            "",
            format!("has no peer: {dir} rule needs one of {names}"),
        );
        if let Some(local) = locals.first() {
            err.hint(format!(
                "{} is the local address in {dir} rule; did you mean {}?",
                local.name,
                other_side(local.name)
            ));
        }
        ok = false;
    }
    for extra in peers.iter().skip(1) {
        let first = peers.first().map_or("", |p| p.name);
        errs.at(
            &path.field(extra.name),
            "",
            format!("is a second peer: a rule has exactly one, and {first} is given"),
        );
        ok = false;
    }
    for extra in locals.iter().skip(1) {
        let first = locals.first().map_or("", |l| l.name);
        errs.at(
            &path.field(extra.name),
            "",
            format!("is a second local address: a rule has at most one, and {first} is given"),
        );
        ok = false;
    }
    ok
}

/// Checks one field's value: a CIDR of the right family, or a group or
/// prefix list that exists and may be used here.
fn endpoint(
    cx: &RuleContext,
    field: &Given,
    path: &JsonPath,
    protocol: Option<Protocol>,
    errs: &mut Errors,
) -> Option<Endpoint> {
    let (peer, family) = match field.what {
        What::Cidr(family) => {
            let spec = CidrField::peer(Some(family), Some(other_family(field.name)));
            let net = addrs::cidr(errs, path, field.value, spec)?;
            (Peer::Cidr(net), Some(family))
        }
        What::Group => (Peer::Group(group_peer(cx, field, path, errs)?), None),
        What::PrefixList => {
            let (index, family) = prefix_list_peer(cx, field, path, errs)?;
            (Peer::PrefixList(index), Some(family))
        }
    };
    if let Some(family) = family {
        if !addrs::protocol_matches_family(errs, path, field.value, protocol, family) {
            return None;
        }
    }
    Some(Endpoint {
        name: field.name,
        peer,
        family,
    })
}

fn group_peer(
    cx: &RuleContext,
    field: &Given,
    path: &JsonPath,
    errs: &mut Errors,
) -> Option<usize> {
    let index = cx
        .ix
        .resolve(errs, path, Kind::SecurityGroup, field.value)?;
    if cx.group.kind == Some(GroupKind::Advanced) {
        errs.bad(
            path,
            field.value,
            "cannot be a peer: advanced groups cannot name a group as peer",
        )
        .hint("use the members' CIDR blocks or a prefix list");
        return None;
    }
    let theirs = cx.groups.get(index).and_then(|g| g.vpc);
    if let (Some(mine), Some(theirs)) = (cx.group.vpc, theirs) {
        if mine != theirs {
            errs.bad(
                path,
                field.value,
                format!(
                    "is in VPC {}, not in this group's VPC {}",
                    cx.doc.vpcs[theirs].id, cx.doc.vpcs[mine].id
                ),
            );
            return None;
        }
    }
    Some(index)
}

fn prefix_list_peer(
    cx: &RuleContext,
    field: &Given,
    path: &JsonPath,
    errs: &mut Errors,
) -> Option<(usize, Family)> {
    let index = cx.ix.resolve(errs, path, Kind::PrefixList, field.value)?;
    let facts = cx.prefix_lists.get(index)?;
    if let (Some(Some(theirs)), Some(mine)) = (facts.vpc, cx.group.vpc) {
        if theirs != mine {
            errs.bad(
                path,
                field.value,
                format!(
                    "is limited to VPC {} (its vpc_id), not this group's VPC {}",
                    cx.doc.vpcs[theirs].id, cx.doc.vpcs[mine].id
                ),
            );
            return None;
        }
    }
    Some((index, facts.family?))
}
