//! VPCs, vSwitches and prefix lists: the address plan the rules refer to.
//!
//! Each check returns the *facts* later checks need, one `Option` per field
//! (`None`: invalid, already reported). A later check uses whatever is
//! valid, so one mistake is reported once and does not hide the others.
use std::collections::HashMap;

use ipnet::IpNet;

use super::{
    addrs::{self, CidrField, Family},
    errors::{Errors, JsonPath},
    limits,
    refs::{Indexes, Kind},
    values,
};
use crate::model::Document;

#[derive(Debug)]
pub(crate) struct VpcFacts {
    pub cidr: Option<IpNet>,
    /// `Some(None)`: no IPv6 block given.
    pub ipv6_cidr: Option<Option<IpNet>>,
}

#[derive(Debug)]
pub(crate) struct VSwitchFacts {
    pub vpc: Option<usize>,
    pub cidr: Option<IpNet>,
    pub ipv6_cidr: Option<Option<IpNet>>,
    pub acl: Option<Option<usize>>,
}

#[derive(Debug)]
pub(crate) struct PrefixListFacts {
    pub family: Option<Family>,
    pub entries: Option<Vec<IpNet>>,
    /// `Some(None)`: usable from every VPC.
    pub vpc: Option<Option<usize>>,
}

const ADDRESS_FAMILIES: &[(&str, Family)] = &[("ipv4", Family::V4), ("ipv6", Family::V6)];

/// An optional field: `Some(None)` when absent, `None` when invalid.
fn optional<T>(value: Option<&str>, check: impl FnOnce(&str) -> Option<T>) -> Option<Option<T>> {
    match value {
        None => Some(None),
        Some(v) => check(v).map(Some),
    }
}

pub(crate) fn vpcs(doc: &Document, ix: &Indexes, errs: &mut Errors) -> Vec<VpcFacts> {
    let section = JsonPath::root().field("vpcs");
    let mut facts = Vec::with_capacity(doc.vpcs.len());
    for (i, vpc) in doc.vpcs.iter().enumerate() {
        let path = section.index(i);
        ix.vpcs.check_unique(errs, i);
        values::id(errs, &path.field("id"), &vpc.id);
        let cidr = addrs::cidr(
            errs,
            &path.field("cidr"),
            &vpc.cidr,
            CidrField::block(Family::V4),
        );
        let ipv6_cidr = optional(vpc.ipv6_cidr.as_deref(), |v| {
            addrs::cidr(
                errs,
                &path.field("ipv6_cidr"),
                v,
                CidrField::block(Family::V6),
            )
        });
        facts.push(VpcFacts { cidr, ipv6_cidr });
    }
    facts
}

pub(crate) fn vswitches(
    doc: &Document,
    ix: &Indexes,
    vpcs: &[VpcFacts],
    errs: &mut Errors,
) -> Vec<VSwitchFacts> {
    let section = JsonPath::root().field("vswitches");
    let mut facts = Vec::with_capacity(doc.vswitches.len());
    for (i, vsw) in doc.vswitches.iter().enumerate() {
        let path = section.index(i);
        ix.vswitches.check_unique(errs, i);
        values::id(errs, &path.field("id"), &vsw.id);
        let vpc = ix.resolve(errs, &path.field("vpc_id"), Kind::Vpc, &vsw.vpc_id);
        let vpc_facts = vpc.and_then(|v| vpcs.get(v));
        let vpc_id = vsw.vpc_id.as_str();

        let cidr_path = path.field("cidr");
        let cidr = addrs::cidr(errs, &cidr_path, &vsw.cidr, CidrField::block(Family::V4));
        if let (Some(net), Some(outer)) = (cidr, vpc_facts.and_then(|f| f.cidr)) {
            if !outer.contains(&net) {
                errs.bad(
                    &cidr_path,
                    &vsw.cidr,
                    format!("is outside {vpc_id}'s block {outer}"),
                );
            }
        }

        let v6_path = path.field("ipv6_cidr");
        let ipv6_cidr = optional(vsw.ipv6_cidr.as_deref(), |v| {
            let net = addrs::cidr(errs, &v6_path, v, CidrField::block(Family::V6))?;
            match vpc_facts.and_then(|f| f.ipv6_cidr) {
                Some(Some(outer)) if !outer.contains(&net) => {
                    errs.bad(&v6_path, v, format!("is outside {vpc_id}'s block {outer}"));
                }
                Some(None) => {
                    errs.bad(
                        &v6_path,
                        v,
                        format!("is an IPv6 block, but {vpc_id} has no ipv6_cidr"),
                    );
                }
                _ => {}
            }
            Some(net)
        });

        let acl = optional(vsw.network_acl_id.as_deref(), |id| {
            ix.resolve(errs, &path.field("network_acl_id"), Kind::NetworkAcl, id)
        });

        facts.push(VSwitchFacts {
            vpc,
            cidr,
            ipv6_cidr,
            acl,
        });
    }
    check_overlaps(doc, &facts, errs);
    facts
}

/// vSwitches of one VPC do not overlap (as in Alibaba): an address belongs
/// to one subnet, which decides the NACL that guards it. Sorted by network
/// address, a block that overlaps an earlier one lies inside it, so one
/// pass with a stack of enclosing blocks finds every overlap in n log n.
fn check_overlaps(doc: &Document, facts: &[VSwitchFacts], errs: &mut Errors) {
    for field in ["cidr", "ipv6_cidr"] {
        let mut blocks: Vec<(usize, IpNet, usize)> = facts
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                let net = if field == "cidr" {
                    f.cidr
                } else {
                    f.ipv6_cidr.flatten()
                };
                Some((f.vpc?, net?, i))
            })
            .collect();
        blocks.sort_by_key(|(vpc, net, i)| (*vpc, net.network(), net.prefix_len(), *i));
        let mut enclosing: Vec<(usize, IpNet, usize)> = Vec::new();
        for block in blocks {
            let (vpc, net, i) = block;
            while enclosing
                .last()
                .is_some_and(|(v, outer, _)| *v != vpc || !outer.contains(&net))
            {
                enclosing.pop();
            }
            if let Some(&(_, outer, j)) = enclosing.last() {
                // Report the later of the two, naming the earlier.
                let (at, other, other_net) = if i > j { (i, j, outer) } else { (j, i, net) };
                let written = if field == "cidr" {
                    Some(&doc.vswitches[at].cidr)
                } else {
                    doc.vswitches[at].ipv6_cidr.as_ref()
                };
                let section = JsonPath::root().field("vswitches");
                let element = section.index(at);
                let path = element.field(field);
                let other_id = &doc.vswitches[other].id;
                errs.bad(
                    &path,
                    written.map_or("", String::as_str),
                    format!("overlaps {other_id} ({other_net}) in the same VPC"),
                );
            }
            enclosing.push(block);
        }
    }
}

pub(crate) fn prefix_lists(
    doc: &Document,
    ix: &Indexes,
    errs: &mut Errors,
) -> Vec<PrefixListFacts> {
    let section = JsonPath::root().field("prefix_lists");
    let mut facts = Vec::with_capacity(doc.prefix_lists.len());
    for (i, list) in doc.prefix_lists.iter().enumerate() {
        let path = section.index(i);
        ix.prefix_lists.check_unique(errs, i);
        values::id(errs, &path.field("id"), &list.id);
        let family = values::keyword(
            errs,
            &path.field("address_family"),
            &list.address_family,
            ADDRESS_FAMILIES,
        );
        let entries = prefix_list_entries(errs, &path, &list.entries, family);
        let vpc = optional(list.vpc_id.as_deref(), |id| {
            ix.resolve(errs, &path.field("vpc_id"), Kind::Vpc, id)
        });
        facts.push(PrefixListFacts {
            family,
            entries,
            vpc,
        });
    }
    facts
}

fn prefix_list_entries(
    errs: &mut Errors,
    path: &JsonPath,
    entries: &[String],
    family: Option<Family>,
) -> Option<Vec<IpNet>> {
    let entries_path = path.field("entries");
    let mut ok = true;
    if entries.len() > limits::MAX_PREFIX_LIST_ENTRIES {
        errs.at(
            &entries_path,
            "",
            format!(
                "has {} entries; a prefix list holds at most {}",
                entries.len(),
                limits::MAX_PREFIX_LIST_ENTRIES
            ),
        );
        ok = false;
    }
    let mut nets: Vec<IpNet> = Vec::with_capacity(entries.len());
    let mut seen: HashMap<IpNet, usize> = HashMap::with_capacity(entries.len());
    for (k, entry) in entries.iter().enumerate() {
        let entry_path = entries_path.index(k);
        let Some(net) = addrs::cidr(errs, &entry_path, entry, CidrField::peer(None, None)) else {
            ok = false;
            continue;
        };
        if let Some(want) = family.filter(|want| *want != Family::of(&net)) {
            let keyword = if want == Family::V4 { "ipv4" } else { "ipv6" };
            let message = format!(
                "is {}, but the list's address_family is {keyword}",
                Family::of(&net).name()
            );
            errs.bad(&entry_path, entry, message);
            ok = false;
            continue;
        }
        if let Some(first) = seen.get(&net) {
            errs.bad(
                &entry_path,
                entry,
                format!("is already listed as entries[{first}]"),
            );
            ok = false;
            continue;
        }
        seen.insert(net, k);
        nets.push(net);
    }
    (ok && family.is_some()).then_some(nets)
}
