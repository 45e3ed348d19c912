//! Network ACLs (SPEC §2.3): ordered, stateless entries per direction.
use std::collections::HashMap;

use super::{
    addrs::{self, CidrField, Family},
    errors::{Errors, JsonPath},
    hints, limits, ports,
    refs::Indexes,
    values,
};
use crate::{
    model::{Document, NetworkAclEntry},
    ruleset::{AclEntry, Direction, NetworkAcl},
};

pub(crate) fn check(doc: &Document, ix: &Indexes, errs: &mut Errors) -> Vec<Option<NetworkAcl>> {
    let section = JsonPath::root().field("network_acls");
    let mut acls = Vec::with_capacity(doc.network_acls.len());
    for (i, acl) in doc.network_acls.iter().enumerate() {
        let path = section.index(i);
        ix.acls.check_unique(errs, i);
        let id_ok = values::id(errs, &path.field("id"), &acl.id);
        let ingress = entries(
            errs,
            &path.field("ingress"),
            &acl.ingress,
            Direction::Ingress,
        );
        let egress = entries(errs, &path.field("egress"), &acl.egress, Direction::Egress);
        acls.push(match (id_ok, ingress, egress) {
            (true, Some(ingress), Some(egress)) => Some(NetworkAcl {
                id: acl.id.clone(),
                ingress,
                egress,
            }),
            _ => None,
        });
    }
    acls
}

fn entries(
    errs: &mut Errors,
    path: &JsonPath,
    list: &[NetworkAclEntry],
    direction: Direction,
) -> Option<Vec<AclEntry>> {
    let mut ok = true;
    if list.len() > limits::MAX_NACL_ENTRIES {
        errs.at(
            path,
            "",
            format!(
                "has {} entries; a network ACL holds at most {} per direction",
                list.len(),
                limits::MAX_NACL_ENTRIES
            ),
        );
        ok = false;
    }
    let mut names: HashMap<&str, usize> = HashMap::with_capacity(list.len());
    let mut checked = Vec::with_capacity(list.len());
    for (k, entry) in list.iter().enumerate() {
        let entry_path = path.index(k);
        if let Some(first) = names.get(entry.name.as_str()) {
            errs.bad(
                &entry_path.field("name"),
                &entry.name,
                format!("is already the name of {}", path.index(*first)),
            );
            ok = false;
        } else {
            names.insert(&entry.name, k);
        }
        match self::entry(errs, &entry_path, entry, direction) {
            Some(e) => checked.push(e),
            None => ok = false,
        }
    }
    ok.then_some(checked)
}

fn entry(
    errs: &mut Errors,
    path: &JsonPath,
    entry: &NetworkAclEntry,
    direction: Direction,
) -> Option<AclEntry> {
    let name_ok = values::id(errs, &path.field("name"), &entry.name);
    let action = values::keyword(errs, &path.field("policy"), &entry.policy, values::POLICIES);
    let protocol = values::keyword(
        errs,
        &path.field("protocol"),
        &entry.protocol,
        values::PROTOCOLS,
    );
    let dst_ports =
        ports::destination_ports(errs, &path.field("port"), entry.port.as_deref(), protocol);
    let remote = peer(errs, path, entry, direction, protocol);
    if let Some(description) = &entry.description {
        values::description(errs, &path.field("description"), description);
    }
    name_ok.then_some(())?;
    Some(AclEntry {
        name: entry.name.clone(),
        action: action?,
        protocol: protocol?,
        dst_ports: dst_ports?,
        remote: remote?,
    })
}

/// The peer: `source_cidr_ip` in ingress entries, `destination_cidr_ip` in
/// egress entries, of either family.
fn peer(
    errs: &mut Errors,
    path: &JsonPath,
    entry: &NetworkAclEntry,
    direction: Direction,
    protocol: Option<crate::ruleset::Protocol>,
) -> Option<ipnet::IpNet> {
    let (right, wrong, right_value, wrong_value) = match direction {
        Direction::Ingress => (
            "source_cidr_ip",
            "destination_cidr_ip",
            &entry.source_cidr_ip,
            &entry.destination_cidr_ip,
        ),
        Direction::Egress => (
            "destination_cidr_ip",
            "source_cidr_ip",
            &entry.destination_cidr_ip,
            &entry.source_cidr_ip,
        ),
    };
    let dir = direction.as_str();
    if let Some(value) = wrong_value {
        errs.bad(
            &path.field(wrong),
            value,
            format!("is not allowed in {dir} entries, whose peer is {right}"),
        )
        .hint(hints::did_you_mean(right));
        return None;
    }
    let Some(value) = right_value else {
        errs.at(
            path,
            "",
            format!("has no {right}: {dir} entries name their peer with it"),
        );
        return None;
    };
    let field_path = path.field(right);
    let net = addrs::cidr(errs, &field_path, value, CidrField::peer(None, None))?;
    addrs::protocol_matches_family(errs, &field_path, value, protocol, Family::of(&net))
        .then_some(net)
}
