//! The reasons a rule set can give (SPEC §3 step 6): what `counters`
//! lists, for one ENI or for the whole document.
use std::collections::BTreeSet;

use crate::{
    ruleset::{EniIdx, Ruleset},
    verdict::Reason,
};

/// Every reason that can decide a packet at `eni` (every ENI for `None`):
/// the rules and inner accepts of its groups, its vSwitch's NACL entries
/// and default, and the fixed reasons.
pub fn reasons(rs: &Ruleset, eni: Option<EniIdx>) -> BTreeSet<Reason> {
    let mut out: BTreeSet<Reason> = [Reason::DefaultDeny, Reason::DefaultAccept, Reason::Tracked]
        .into_iter()
        .collect();
    let groups: BTreeSet<usize> = match eni {
        Some(e) => rs.enis[e].groups.iter().copied().collect(),
        None => (0..rs.groups.len()).collect(),
    };
    for group in groups.iter().filter_map(|g| rs.groups.get(*g)) {
        if group.inner_accept {
            out.insert(Reason::InnerAccept {
                group: group.id.clone(),
            });
        }
        out.extend(
            group
                .rules
                .iter()
                .map(|r| Reason::Rule { id: r.id.clone() }),
        );
    }
    let acls: BTreeSet<usize> = match eni {
        Some(e) => rs.eni_acl(e).into_iter().collect(),
        None => (0..rs.acls.len()).collect(),
    };
    for acl in acls.iter().filter_map(|a| rs.acls.get(*a)) {
        for entry in acl.ingress.iter().chain(&acl.egress) {
            out.insert(Reason::Nacl {
                acl: acl.id.clone(),
                entry: entry.name.clone(),
            });
        }
        out.insert(Reason::NaclDefault {
            acl: acl.id.clone(),
        });
    }
    out
}
