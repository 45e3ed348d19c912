//! The checked parts → a [`Ruleset`]. Runs only when no error was found, so
//! every fact is present; a missing one is a bug in a check, and the caller
//! reports it as such instead of panicking.
use std::collections::HashSet;

use ipnet::IpNet;

use super::{
    groups::GroupFacts,
    network::{PrefixListFacts, VSwitchFacts, VpcFacts},
};
use crate::{
    model::Document,
    ruleset::{
        ConntrackConfig, Eni, FlowLogConfig, NetworkAcl, PrefixList, Ruleset, SecurityGroup,
        SgRule, VSwitch, Vpc,
    },
};

pub(crate) struct Checked {
    pub vpcs: Vec<VpcFacts>,
    pub vswitches: Vec<VSwitchFacts>,
    pub prefix_lists: Vec<PrefixListFacts>,
    pub groups: Vec<GroupFacts>,
    pub rules: Vec<Vec<Option<SgRule>>>,
    pub acls: Vec<Option<NetworkAcl>>,
    pub enis: Vec<Option<Eni>>,
    pub conntrack: ConntrackConfig,
    pub flow_log: FlowLogConfig,
}

pub(crate) fn ruleset(doc: &Document, checked: Checked) -> Option<Ruleset> {
    let Checked {
        vpcs,
        vswitches,
        prefix_lists,
        groups,
        rules,
        acls,
        enis,
        conntrack,
        flow_log,
    } = checked;
    let vpcs = doc
        .vpcs
        .iter()
        .zip(vpcs)
        .map(|(v, f)| {
            Some(Vpc {
                id: v.id.clone(),
                cidrs: cidrs(f.cidr, f.ipv6_cidr)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let vswitches = doc
        .vswitches
        .iter()
        .zip(vswitches)
        .map(|(v, f)| {
            Some(VSwitch {
                id: v.id.clone(),
                vpc: f.vpc?,
                cidrs: cidrs(f.cidr, f.ipv6_cidr)?,
                acl: f.acl?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let prefix_lists = doc
        .prefix_lists
        .iter()
        .zip(prefix_lists)
        .map(|(p, f)| {
            Some(PrefixList {
                id: p.id.clone(),
                entries: f.entries?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let enis = enis.into_iter().collect::<Option<Vec<_>>>()?;
    let members = members(&enis, &groups)?;
    let groups = doc
        .security_groups
        .iter()
        .zip(groups)
        .zip(rules)
        .zip(members)
        .map(|(((sg, f), rules), members)| {
            Some(SecurityGroup {
                id: sg.id.clone(),
                vpc: f.vpc?,
                kind: f.kind?,
                inner_accept: f.inner_accept?,
                members,
                rules: rules.into_iter().collect::<Option<Vec<_>>>()?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let acls = acls.into_iter().collect::<Option<Vec<_>>>()?;
    Some(Ruleset {
        vpcs,
        vswitches,
        prefix_lists,
        groups,
        acls,
        enis,
        conntrack,
        flow_log,
    })
}

/// The IPv4 block and, when given, the IPv6 block.
fn cidrs(v4: Option<IpNet>, v6: Option<Option<IpNet>>) -> Option<Vec<IpNet>> {
    Some([Some(v4?), v6?].into_iter().flatten().collect())
}

/// Group membership (SPEC §2.1): the addresses of the local ENIs that list
/// the group, in ENI order, then `member_ips`; as host prefixes, each once.
fn members(enis: &[Eni], groups: &[GroupFacts]) -> Option<Vec<Vec<IpNet>>> {
    let mut members: Vec<Vec<IpNet>> = vec![Vec::new(); groups.len()];
    for eni in enis {
        for g in &eni.groups {
            members
                .get_mut(*g)?
                .extend(eni.ips.iter().map(|ip| IpNet::from(*ip)));
        }
    }
    for (list, facts) in members.iter_mut().zip(groups) {
        list.extend(facts.member_ips.as_ref()?.iter().map(|ip| IpNet::from(*ip)));
        let mut seen = HashSet::with_capacity(list.len());
        list.retain(|net| seen.insert(*net));
    }
    Some(members)
}
