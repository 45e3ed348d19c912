//! ENIs (SPEC §2.4): the interfaces this host guards, their addresses and
//! their security groups.
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use super::{
    addrs,
    errors::{Errors, JsonPath},
    groups::GroupFacts,
    limits,
    network::VSwitchFacts,
    refs::{Indexes, Kind},
    values,
};
use crate::{
    model::{Document, Eni},
    ruleset::{self, AttachMode, GroupKind, HookChoice},
};

const ATTACH_MODES: &[(&str, AttachMode)] = &[("tap", AttachMode::Tap), ("nic", AttachMode::Nic)];
const HOOKS: &[(&str, HookChoice)] = &[
    ("auto", HookChoice::Auto),
    ("xdp", HookChoice::Xdp),
    ("tc", HookChoice::Tc),
];

/// What ENIs must not share: interfaces and addresses.
#[derive(Default)]
struct Taken<'d> {
    interfaces: HashMap<&'d str, usize>,
    ips: HashMap<IpAddr, String>,
}

pub(crate) struct EniContext<'a> {
    pub doc: &'a Document,
    pub ix: &'a Indexes<'a>,
    pub vswitches: &'a [VSwitchFacts],
    pub groups: &'a [GroupFacts],
}

pub(crate) fn check(cx: &EniContext, errs: &mut Errors) -> Vec<Option<ruleset::Eni>> {
    let section = JsonPath::root().field("enis");
    if cx.doc.enis.len() > limits::MAX_ENIS {
        errs.at(
            &section,
            "",
            format!(
                "has {} ENIs; a host guards at most {}",
                cx.doc.enis.len(),
                limits::MAX_ENIS
            ),
        );
    }
    let mut taken = Taken::default();
    let mut enis = Vec::with_capacity(cx.doc.enis.len());
    for (i, eni) in cx.doc.enis.iter().enumerate() {
        enis.push(check_eni(cx, eni, i, &section.index(i), &mut taken, errs));
    }
    enis
}

fn check_eni<'d>(
    cx: &EniContext<'d>,
    eni: &'d Eni,
    i: usize,
    path: &JsonPath,
    taken: &mut Taken<'d>,
    errs: &mut Errors,
) -> Option<ruleset::Eni> {
    cx.ix.enis.check_unique(errs, i);
    let id_ok = values::id(errs, &path.field("id"), &eni.id);
    let interface_ok = interface(eni, i, path, taken, errs);
    let mode = values::keyword(
        errs,
        &path.field("attach_mode"),
        &eni.attach_mode,
        ATTACH_MODES,
    );
    let hook = values::keyword(errs, &path.field("hook"), &eni.hook, HOOKS);
    let vswitch = cx.ix.resolve(
        errs,
        &path.field("vswitch_id"),
        Kind::VSwitch,
        &eni.vswitch_id,
    );
    let ips = ips(cx, eni, vswitch, path, taken, errs);
    let groups = groups(cx, eni, vswitch, path, errs);
    (id_ok && interface_ok).then_some(())?;
    Some(ruleset::Eni {
        id: eni.id.clone(),
        interface: eni.interface.clone(),
        mode: mode?,
        hook: hook?,
        vswitch: vswitch?,
        ips: ips?,
        groups: groups?,
    })
}

/// A valid name, used by no other ENI. (The interface need not exist yet:
/// its ENI is then pending, SPEC §2.4.)
fn interface<'d>(
    eni: &'d Eni,
    i: usize,
    path: &JsonPath,
    taken: &mut Taken<'d>,
    errs: &mut Errors,
) -> bool {
    let path = path.field("interface");
    if !values::interface_name(errs, &path, &eni.interface) {
        return false;
    }
    if let Some(first) = taken.interfaces.get(eni.interface.as_str()) {
        errs.bad(
            &path,
            &eni.interface,
            format!("is already the interface of enis[{first}]"),
        );
        return false;
    }
    taken.interfaces.insert(&eni.interface, i);
    true
}

/// At least one address, each inside the vSwitch's block of its family and
/// used by no other ENI (or twice by this one).
fn ips(
    cx: &EniContext,
    eni: &Eni,
    vswitch: Option<usize>,
    path: &JsonPath,
    taken: &mut Taken,
    errs: &mut Errors,
) -> Option<Vec<IpAddr>> {
    let list = path.field("ips");
    if eni.ips.is_empty() {
        errs.at(&list, "[]", "is empty: an ENI has at least one address");
        return None;
    }
    let vsw = vswitch.and_then(|v| cx.vswitches.get(v));
    let mut ok = true;
    let mut addrs = Vec::with_capacity(eni.ips.len());
    for (k, text) in eni.ips.iter().enumerate() {
        let ip_path = list.index(k);
        let Some(ip) = addrs::address(errs, &ip_path, text) else {
            ok = false;
            continue;
        };
        if let Some(first) = taken.ips.get(&ip) {
            errs.bad(&ip_path, text, format!("is already an address of {first}"));
            ok = false;
            continue;
        }
        taken.ips.insert(ip, ip_path.to_string());
        // A vSwitch without ipv6_cidr says nothing about IPv6 addresses
        // (SPEC §2's own example has one), so those are not checked.
        let block = match (ip, vsw) {
            (IpAddr::V4(_), Some(v)) => v.cidr,
            (IpAddr::V6(_), Some(v)) => v.ipv6_cidr.flatten(),
            (_, None) => None,
        };
        if let Some(block) = block.filter(|b| !b.contains(&ip)) {
            errs.bad(
                &ip_path,
                text,
                format!("is outside the vSwitch {} ({block})", eni.vswitch_id),
            );
            ok = false;
        }
        addrs.push(ip);
    }
    ok.then_some(addrs)
}

/// 1–10 groups, each once, all of one type and in the ENI's VPC, with at
/// most [`limits::MAX_RULES_PER_ENI`] rules between them.
fn groups(
    cx: &EniContext,
    eni: &Eni,
    vswitch: Option<usize>,
    path: &JsonPath,
    errs: &mut Errors,
) -> Option<Vec<usize>> {
    let list = path.field("security_group_ids");
    let mut ok = true;
    let count = eni.security_group_ids.len();
    if !limits::GROUPS_PER_ENI.contains(&count) {
        let range = limits::describe(&limits::GROUPS_PER_ENI);
        errs.at(
            &list,
            "",
            format!("has {count} security groups; an ENI joins {range}"),
        );
        ok = false;
    }
    let vpc = vswitch
        .and_then(|v| cx.vswitches.get(v))
        .and_then(|v| v.vpc);
    let mut resolved = Vec::with_capacity(count);
    let mut seen = HashSet::with_capacity(count);
    for (k, id) in eni.security_group_ids.iter().enumerate() {
        let id_path = list.index(k);
        let Some(g) = cx.ix.resolve(errs, &id_path, Kind::SecurityGroup, id) else {
            ok = false;
            continue;
        };
        if !seen.insert(g) {
            errs.bad(&id_path, id, "is listed twice");
            ok = false;
            continue;
        }
        let group_vpc = cx.groups.get(g).and_then(|f| f.vpc);
        if let (Some(mine), Some(theirs)) = (vpc, group_vpc) {
            if mine != theirs {
                let (theirs, mine) = (&cx.doc.vpcs[theirs].id, &cx.doc.vpcs[mine].id);
                errs.bad(
                    &id_path,
                    id,
                    format!("is in VPC {theirs}, but this ENI's vSwitch is in {mine}"),
                );
                ok = false;
            }
        }
        resolved.push(g);
    }
    ok &= one_kind(cx, &resolved, &list, errs);
    ok &= rule_count(cx, &resolved, &list, errs);
    ok.then_some(resolved)
}

/// Basic and advanced groups differ in their defaults (SPEC §3 step 5.3),
/// so an ENI cannot mix them.
fn one_kind(cx: &EniContext, groups: &[usize], path: &JsonPath, errs: &mut Errors) -> bool {
    let of_kind = |kind| -> Vec<&str> {
        groups
            .iter()
            .filter(|g| cx.groups.get(**g).and_then(|f| f.kind) == Some(kind))
            .map(|g| cx.doc.security_groups[*g].id.as_str())
            .collect()
    };
    let (basic, advanced) = (of_kind(GroupKind::Basic), of_kind(GroupKind::Advanced));
    if basic.is_empty() || advanced.is_empty() {
        return true;
    }
    errs.at(
        path,
        "",
        format!(
            "mixes basic ({}) and advanced ({}) groups; an ENI's groups are all of one type",
            basic.join(", "),
            advanced.join(", ")
        ),
    );
    false
}

fn rule_count(cx: &EniContext, groups: &[usize], path: &JsonPath, errs: &mut Errors) -> bool {
    let rules: usize = groups
        .iter()
        .map(|g| cx.doc.security_groups[*g].rules.len())
        .sum();
    if rules <= limits::MAX_RULES_PER_ENI {
        return true;
    }
    errs.at(
        path,
        "",
        format!(
            "have {rules} rules together; an ENI has at most {}",
            limits::MAX_RULES_PER_ENI
        ),
    );
    false
}
