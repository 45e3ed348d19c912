//! Security groups (SPEC §2.1): the group itself, its members, and the
//! qualified ids of its rules. The rules are checked in `rules.rs`.
use std::{collections::HashMap, net::IpAddr};

use super::{
    addrs,
    errors::{Errors, JsonPath},
    network::PrefixListFacts,
    refs::{Indexes, Kind},
    rules::{self, RuleContext},
    values,
};
use crate::{
    model::{Document, SecurityGroup},
    ruleset::{GroupKind, SgRule},
};

#[derive(Debug)]
pub(crate) struct GroupFacts {
    pub vpc: Option<usize>,
    pub kind: Option<GroupKind>,
    pub inner_accept: Option<bool>,
    pub member_ips: Option<Vec<IpAddr>>,
}

const KINDS: &[(&str, GroupKind)] = &[
    ("basic", GroupKind::Basic),
    ("advanced", GroupKind::Advanced),
];
const INNER_POLICIES: &[(&str, bool)] = &[("accept", true), ("drop", false)];

/// The group fields other checks depend on (its VPC, its type), for every
/// group, before any rule is checked: a rule may name any group as peer.
pub(crate) fn facts(doc: &Document, ix: &Indexes, errs: &mut Errors) -> Vec<GroupFacts> {
    let section = JsonPath::root().field("security_groups");
    doc.security_groups
        .iter()
        .enumerate()
        .map(|(i, sg)| group_facts(sg, i, &section.index(i), ix, errs))
        .collect()
}

fn group_facts(
    sg: &SecurityGroup,
    i: usize,
    path: &JsonPath,
    ix: &Indexes,
    errs: &mut Errors,
) -> GroupFacts {
    ix.groups.check_unique(errs, i);
    values::id(errs, &path.field("id"), &sg.id);
    let vpc = ix.resolve(errs, &path.field("vpc_id"), Kind::Vpc, &sg.vpc_id);
    let kind = values::keyword(errs, &path.field("type"), &sg.kind, KINDS);
    let inner_path = path.field("inner_access_policy");
    let inner_accept = match (kind, sg.inner_access_policy.as_deref()) {
        (_, Some(policy)) => {
            values::keyword(errs, &inner_path, policy, INNER_POLICIES).and_then(|accept| {
                if accept && kind == Some(GroupKind::Advanced) {
                    errs.bad(
                        &inner_path,
                        policy,
                        "is not allowed: advanced groups are always isolated",
                    )
                    .hint("remove it, or write \"drop\"");
                    return None;
                }
                Some(accept)
            })
        }
        // Absent: accept for basic groups, isolated for advanced ones.
        (Some(kind), None) => Some(kind == GroupKind::Basic),
        (None, None) => None,
    };
    let members_path = path.field("member_ips");
    let member_ips: Vec<Option<IpAddr>> = sg
        .member_ips
        .iter()
        .enumerate()
        .map(|(k, ip)| addrs::address(errs, &members_path.index(k), ip))
        .collect();
    GroupFacts {
        vpc,
        kind,
        inner_accept,
        member_ips: member_ips.into_iter().collect(),
    }
}

/// The rules of every group, checked and typed.
pub(crate) fn rules(
    doc: &Document,
    ix: &Indexes,
    groups: &[GroupFacts],
    prefix_lists: &[PrefixListFacts],
    errs: &mut Errors,
) -> Vec<Vec<Option<SgRule>>> {
    let section = JsonPath::root().field("security_groups");
    let mut all = Vec::with_capacity(doc.security_groups.len());
    for (g, (sg, facts)) in doc.security_groups.iter().zip(groups).enumerate() {
        let path = section.index(g);
        let cx = RuleContext {
            doc,
            ix,
            group: facts,
            groups,
            prefix_lists,
        };
        let mut checked: Vec<Option<SgRule>> = sg
            .rules
            .iter()
            .enumerate()
            .map(|(r, rule)| rules::check(&cx, rule, &path.field("rules").index(r), errs))
            .collect();
        assign_ids(sg, &path, &mut checked, errs);
        all.push(checked);
    }
    all
}

/// Names every rule `<sg>/<id>`, or `<sg>/<direction>/<index>` when it has
/// no id (the index in `rules`, so the name leads back to the document),
/// and reports names given twice, including an explicit id that equals the
/// default name of another rule.
fn assign_ids(
    sg: &SecurityGroup,
    path: &JsonPath,
    rules: &mut [Option<SgRule>],
    errs: &mut Errors,
) {
    let mut taken: HashMap<String, usize> = HashMap::with_capacity(rules.len());
    for (r, written) in sg.rules.iter().enumerate() {
        let name = match (&written.id, rules[r].as_ref()) {
            (Some(id), _) => format!("{}/{id}", sg.id),
            (None, Some(rule)) => format!("{}/{}/{r}", sg.id, rule.direction.as_str()),
            (None, None) => continue,
        };
        if let Some(&first) = taken.get(&name) {
            report_collision(sg, path, first, r, &name, errs);
        } else {
            taken.insert(name.clone(), r);
        }
        if let Some(rule) = rules[r].as_mut() {
            rule.id = name;
        }
    }
}

fn report_collision(
    sg: &SecurityGroup,
    path: &JsonPath,
    first: usize,
    second: usize,
    name: &str,
    errs: &mut Errors,
) {
    let rules = path.field("rules");
    match (&sg.rules[first].id, &sg.rules[second].id) {
        (Some(_), Some(id)) => {
            errs.bad(
                &rules.index(second).field("id"),
                id,
                format!("is already the id of {}", rules.index(first)),
            );
        }
        // Two default names never collide (their indices differ), so one of
        // the two is explicit: report it, since that is what to change.
        (Some(id), None) | (None, Some(id)) => {
            let (explicit, default) = if sg.rules[first].id.is_some() {
                (first, second)
            } else {
                (second, first)
            };
            errs.bad(
                &rules.index(explicit).field("id"),
                id,
                format!(
                    "makes the rule name {name}, the default name of {}",
                    rules.index(default)
                ),
            )
            .hint("pick another id");
        }
        (None, None) => {}
    }
}
