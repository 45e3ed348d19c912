//! Ids and references between objects: duplicate ids, and references to
//! ids that do not exist (with the nearest known id as a hint).
use std::collections::HashMap;

use super::{
    errors::{quote, Errors, JsonPath},
    hints,
};
use crate::model::Document;

/// The kinds of object a document names by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Vpc,
    VSwitch,
    PrefixList,
    SecurityGroup,
    NetworkAcl,
    Eni,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Vpc,
        Kind::VSwitch,
        Kind::PrefixList,
        Kind::SecurityGroup,
        Kind::NetworkAcl,
        Kind::Eni,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Vpc => "VPC",
            Kind::VSwitch => "vSwitch",
            Kind::PrefixList => "prefix list",
            Kind::SecurityGroup => "security group",
            Kind::NetworkAcl => "network ACL",
            Kind::Eni => "ENI",
        }
    }

    /// "a VPC", "an ENI".
    pub(crate) fn a(self) -> String {
        let article = if self == Kind::Eni { "an" } else { "a" };
        format!("{article} {}", self.name())
    }

    fn section(self) -> &'static str {
        match self {
            Kind::Vpc => "vpcs",
            Kind::VSwitch => "vswitches",
            Kind::PrefixList => "prefix_lists",
            Kind::SecurityGroup => "security_groups",
            Kind::NetworkAcl => "network_acls",
            Kind::Eni => "enis",
        }
    }
}

/// The ids of one section: where each is first defined.
#[derive(Debug)]
pub(crate) struct Index<'d> {
    kind: Kind,
    ids: Vec<&'d str>,
    first: HashMap<&'d str, usize>,
}

impl<'d> Index<'d> {
    fn new(kind: Kind, ids: impl Iterator<Item = &'d str>) -> Self {
        let ids: Vec<&str> = ids.collect();
        let mut first = HashMap::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            first.entry(*id).or_insert(i);
        }
        Index { kind, ids, first }
    }

    pub(crate) fn get(&self, id: &str) -> Option<usize> {
        self.first.get(id).copied()
    }

    /// Reports element `i` when an earlier element has the same id.
    pub(crate) fn check_unique(&self, errs: &mut Errors, i: usize) {
        let Some(id) = self.ids.get(i) else { return };
        if let Some(first) = self.get(id).filter(|first| *first != i) {
            let section = JsonPath::root().field(self.kind.section());
            let element = section.index(i);
            let path = element.field("id");
            let first_path = section.index(first);
            errs.bad(&path, id, format!("is already the id of {first_path}"));
        }
    }
}

/// Every id of a document, by kind.
#[derive(Debug)]
pub(crate) struct Indexes<'d> {
    pub vpcs: Index<'d>,
    pub vswitches: Index<'d>,
    pub prefix_lists: Index<'d>,
    pub groups: Index<'d>,
    pub acls: Index<'d>,
    pub enis: Index<'d>,
}

impl<'d> Indexes<'d> {
    pub(crate) fn new(doc: &'d Document) -> Self {
        Indexes {
            vpcs: Index::new(Kind::Vpc, doc.vpcs.iter().map(|x| x.id.as_str())),
            vswitches: Index::new(Kind::VSwitch, doc.vswitches.iter().map(|x| x.id.as_str())),
            prefix_lists: Index::new(
                Kind::PrefixList,
                doc.prefix_lists.iter().map(|x| x.id.as_str()),
            ),
            groups: Index::new(
                Kind::SecurityGroup,
                doc.security_groups.iter().map(|x| x.id.as_str()),
            ),
            acls: Index::new(
                Kind::NetworkAcl,
                doc.network_acls.iter().map(|x| x.id.as_str()),
            ),
            enis: Index::new(Kind::Eni, doc.enis.iter().map(|x| x.id.as_str())),
        }
    }

    fn of(&self, kind: Kind) -> &Index<'d> {
        match kind {
            Kind::Vpc => &self.vpcs,
            Kind::VSwitch => &self.vswitches,
            Kind::PrefixList => &self.prefix_lists,
            Kind::SecurityGroup => &self.groups,
            Kind::NetworkAcl => &self.acls,
            Kind::Eni => &self.enis,
        }
    }

    /// The index of the `kind` object named `id`, or an error at `path`
    /// with the nearest id of that kind as a hint (or, when `id` names an
    /// object of another kind, which kind that is).
    pub(crate) fn resolve(
        &self,
        errs: &mut Errors,
        path: &JsonPath,
        kind: Kind,
        id: &str,
    ) -> Option<usize> {
        let index = self.of(kind);
        if let Some(i) = index.get(id) {
            return Some(i);
        }
        let err = errs.bad(path, id, format!("is not {} in this document", kind.a()));
        if let Some(close) = hints::closest(id, index.ids.iter().copied()) {
            err.hint(hints::did_you_mean(close));
        } else if let Some(other) = Kind::ALL
            .into_iter()
            .find(|k| *k != kind && self.of(*k).get(id).is_some())
        {
            err.hint(format!("{} is {}", quote(id), other.a()));
        }
        None
    }
}
