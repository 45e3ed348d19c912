//! Which tables a rule set needs, and the rules of each in strength order,
//! so that "the strongest of a set" is its smallest [`RuleBox`] index. What
//! a table is and the order: ARCHITECTURE.md, "Classifying a packet against
//! a table" and "How the compiler cuts a table".
use std::collections::{BTreeMap, HashMap};

use filter_common::{
    RuleHit, ACTION_ACCEPT, ACTION_DROP, ACTION_SKIP, RULE_SLOT_DEFAULT_ACCEPT,
    RULE_SLOT_DEFAULT_DENY, RULE_SLOT_PASS,
};
use ipnet::IpNet;

use super::{fast_hash::FastMap, prefix::Prefix, rules::RuleBox};
use crate::{
    ruleset::{
        AclIdx, Action, Direction, GroupIdx, GroupKind, PortRange, Protocol, Ruleset, VSwitchIdx,
    },
    verdict::Reason,
};

/// A counter slot that is known only once the slot table has been planned:
/// either fixed, or the index of a reason in [`TablePlan::reasons`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotRef {
    Fixed(u32),
    Reason(usize),
}

/// What identifies a table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum TableKey {
    /// The ENI's groups, in its order, and a direction.
    Sg(Vec<GroupIdx>, Direction),
    Nacl(VSwitchIdx, AclIdx, Direction),
}

#[derive(Debug)]
pub(crate) struct TableSpec {
    /// For error messages: what the table is and which ENIs use it.
    pub label: String,
    /// Rule ids, ascending (= strongest first).
    pub rules: Vec<u32>,
    /// Inner-access members with the rank of their group (SG tables only).
    pub inner: Vec<(Prefix, u32)>,
    /// Slot of each inner-access group, by rank.
    pub inner_slots: Vec<SlotRef>,
    pub default_action: u32,
    pub default_slot: SlotRef,
}

/// Everything `compile` builds from, before any map entry exists.
#[derive(Debug, Default)]
pub(crate) struct TablePlan {
    pub tables: Vec<TableSpec>,
    pub boxes: Vec<RuleBox>,
    /// The slot of each box (resolved into `boxes[i].hit.slot` later).
    pub box_slots: Vec<SlotRef>,
    /// Every reason that needs a dynamic slot (texts may repeat).
    pub reasons: Vec<Reason>,
    /// Per ENI: table index per direction for security groups and NACL.
    pub eni_tables: Vec<EniTables>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct EniTables {
    pub sg: [usize; 2],
    pub nacl: Option<[usize; 2]>,
}

/// Collects the reasons that need a dynamic slot. The same text may come
/// twice (two NACL entries of one name); the slot table gives it one slot.
#[derive(Default)]
struct Reasons {
    list: Vec<Reason>,
}

impl Reasons {
    fn slot(&mut self, reason: Reason) -> SlotRef {
        if let Some(fixed) = super::slots::fixed_slot(&reason) {
            return SlotRef::Fixed(fixed);
        }
        self.list.push(reason);
        SlotRef::Reason(self.list.len() - 1)
    }
}

/// The group list a table is keyed by: the ENI's groups in its order (which
/// names the winner among equals), a repeated group kept at its first place.
pub(crate) fn sg_table_groups(groups: &[GroupIdx]) -> Vec<GroupIdx> {
    let mut out: Vec<GroupIdx> = Vec::with_capacity(groups.len());
    for g in groups {
        if !out.contains(g) {
            out.push(*g);
        }
    }
    out
}

pub(crate) fn plan(rs: &Ruleset) -> TablePlan {
    let mut reasons = Reasons::default();
    let mut keys: BTreeMap<TableKey, usize> = BTreeMap::new();
    let mut order: Vec<(TableKey, Vec<String>)> = Vec::new();
    let mut eni_tables = Vec::with_capacity(rs.enis.len());
    for eni in &rs.enis {
        let groups = sg_table_groups(&eni.groups);
        let mut table_of = |key: TableKey| {
            let idx = *keys.entry(key.clone()).or_insert_with(|| {
                order.push((key, Vec::new()));
                order.len() - 1
            });
            order[idx].1.push(eni.id.clone());
            idx
        };
        let sg = Direction::ALL.map(|d| table_of(TableKey::Sg(groups.clone(), d)));
        let acl = rs.vswitches[eni.vswitch].acl;
        let nacl =
            acl.map(|acl| Direction::ALL.map(|d| table_of(TableKey::Nacl(eni.vswitch, acl, d))));
        eni_tables.push(EniTables { sg, nacl });
    }

    let mut boxes = Vec::new();
    let mut box_slots = Vec::new();
    let nacl_rules = nacl_boxes(rs, &order, &mut boxes, &mut box_slots, &mut reasons);
    let mut sg_rules = SgRules::default();

    let mut tables = Vec::with_capacity(order.len());
    for (key, enis) in order {
        let spec = match &key {
            TableKey::Sg(groups, direction) => {
                let rules = sg_rules.table(
                    rs,
                    groups,
                    *direction,
                    &mut boxes,
                    &mut box_slots,
                    &mut reasons,
                );
                let mut inner = Vec::new();
                let mut inner_slots = Vec::new();
                for &g in groups.iter().filter(|g| {
                    rs.groups[**g].inner_accept && rs.groups[**g].kind == GroupKind::Basic
                }) {
                    let rank = inner_slots.len() as u32;
                    inner_slots.push(reasons.slot(Reason::InnerAccept {
                        group: rs.groups[g].id.clone(),
                    }));
                    inner.extend(
                        rs.groups[g]
                            .members
                            .iter()
                            .map(|m| (Prefix::from_net(m), rank)),
                    );
                }
                let advanced = groups
                    .iter()
                    .any(|g| rs.groups[*g].kind == GroupKind::Advanced);
                let (default_action, default_slot) = match (direction, advanced) {
                    (Direction::Egress, false) => {
                        (u32::from(ACTION_ACCEPT), RULE_SLOT_DEFAULT_ACCEPT)
                    }
                    _ => (u32::from(ACTION_DROP), RULE_SLOT_DEFAULT_DENY),
                };
                let names: Vec<&str> = groups.iter().map(|g| rs.groups[*g].id.as_str()).collect();
                TableSpec {
                    label: format!(
                        "security groups {} {} (ENIs {})",
                        names.join("+"),
                        direction.as_str(),
                        enis.join(", ")
                    ),
                    rules,
                    inner,
                    inner_slots,
                    default_action,
                    default_slot: SlotRef::Fixed(default_slot),
                }
            }
            TableKey::Nacl(vswitch, acl, direction) => {
                let mut rules = vec![nacl_rules.skip[vswitch]];
                rules.extend(
                    nacl_rules
                        .entries
                        .get(&(*acl, *direction))
                        .into_iter()
                        .flatten(),
                );
                TableSpec {
                    label: format!(
                        "network ACL {} {} on vSwitch {} (ENIs {})",
                        rs.acls[*acl].id,
                        direction.as_str(),
                        rs.vswitches[*vswitch].id,
                        enis.join(", ")
                    ),
                    rules,
                    inner: Vec::new(),
                    inner_slots: Vec::new(),
                    default_action: u32::from(ACTION_DROP),
                    default_slot: reasons.slot(Reason::NaclDefault {
                        acl: rs.acls[*acl].id.clone(),
                    }),
                }
            }
        };
        tables.push(spec);
    }
    TablePlan {
        tables,
        boxes,
        box_slots,
        reasons: reasons.list,
        eni_tables,
    }
}

struct NaclRules {
    /// vSwitch → its skip rule.
    skip: HashMap<VSwitchIdx, u32>,
    /// (ACL, direction) → entry rules in order.
    entries: HashMap<(AclIdx, Direction), Vec<u32>>,
}

/// NACL boxes: every used vSwitch's skip rule first (stronger than any
/// entry), then the entries of every used ACL direction in order.
fn nacl_boxes(
    rs: &Ruleset,
    order: &[(TableKey, Vec<String>)],
    boxes: &mut Vec<RuleBox>,
    box_slots: &mut Vec<SlotRef>,
    reasons: &mut Reasons,
) -> NaclRules {
    let mut skip = HashMap::new();
    let mut entries = HashMap::new();
    for (key, _) in order {
        if let TableKey::Nacl(vswitch, _, _) = key {
            skip.entry(*vswitch).or_insert_with(|| {
                // Traffic inside the vSwitch skips the ACL: every protocol,
                // every port (SPEC §3 step 3). The slot is never counted.
                let hit = RuleHit {
                    action: u32::from(ACTION_SKIP),
                    slot: RULE_SLOT_PASS,
                };
                let cidrs: &[IpNet] = &rs.vswitches[*vswitch].cidrs;
                boxes.push(RuleBox::new(
                    hit,
                    Protocol::All,
                    PortRange::ANY,
                    PortRange::ANY,
                    None,
                    cidrs,
                ));
                box_slots.push(SlotRef::Fixed(RULE_SLOT_PASS));
                (boxes.len() - 1) as u32
            });
        }
    }
    for (key, _) in order {
        if let TableKey::Nacl(_, acl, direction) = key {
            entries.entry((*acl, *direction)).or_insert_with(|| {
                let acl_id = &rs.acls[*acl].id;
                let mut ids = Vec::new();
                for entry in rs.acls[*acl].entries(*direction) {
                    let hit = RuleHit {
                        action: action_code(entry.action),
                        slot: 0,
                    };
                    let remote = std::slice::from_ref(&entry.remote);
                    boxes.push(RuleBox::new(
                        hit,
                        entry.protocol,
                        entry.dst_ports,
                        PortRange::ANY,
                        None,
                        remote,
                    ));
                    box_slots.push(reasons.slot(Reason::Nacl {
                        acl: acl_id.clone(),
                        entry: entry.name.clone(),
                    }));
                    ids.push((boxes.len() - 1) as u32);
                }
                ids
            });
        }
    }
    NaclRules { skip, entries }
}

/// Security-group boxes, numbered per table in strength order. A rule's
/// box is built once and copied into every table that has it (its remote
/// prefixes are shared, not copied).
#[derive(Default)]
struct SgRules {
    built: FastMap<(GroupIdx, usize), (RuleBox, SlotRef)>,
}

impl SgRules {
    /// The rule ids of the table of `groups` (in ENI order) and `direction`.
    fn table(
        &mut self,
        rs: &Ruleset,
        groups: &[GroupIdx],
        direction: Direction,
        boxes: &mut Vec<RuleBox>,
        box_slots: &mut Vec<SlotRef>,
        reasons: &mut Reasons,
    ) -> Vec<u32> {
        let ranked = ranked_rules(rs, groups, direction);
        let mut ids = Vec::with_capacity(ranked.len());
        for (g, i) in ranked {
            let (rule_box, slot) = self.built.entry((g, i)).or_insert_with(|| {
                let rule = &rs.groups[g].rules[i];
                let hit = RuleHit {
                    action: action_code(rule.action),
                    slot: 0,
                };
                let remote = rs.peer_nets(&rule.remote);
                let rule_box = RuleBox::new(
                    hit,
                    rule.protocol,
                    rule.dst_ports,
                    rule.src_ports,
                    rule.local.as_ref(),
                    remote,
                );
                (
                    rule_box,
                    reasons.slot(Reason::Rule {
                        id: rule.id.clone(),
                    }),
                )
            });
            boxes.push(rule_box.clone());
            box_slots.push(*slot);
            ids.push((boxes.len() - 1) as u32);
        }
        ids
    }
}

/// The `(group, rule index)` of every rule of `groups` in `direction`,
/// strongest first: (priority, drop before accept, group position, rule
/// index), the order of SPEC §3 step 5.2 with `crate::eval`'s tie-break.
pub(crate) fn ranked_rules(
    rs: &Ruleset,
    groups: &[GroupIdx],
    direction: Direction,
) -> Vec<(GroupIdx, usize)> {
    let mut ranked: Vec<(u8, bool, usize, usize, GroupIdx)> = groups
        .iter()
        .enumerate()
        .flat_map(|(pos, &g)| {
            rs.groups[g]
                .rules
                .iter()
                .enumerate()
                .filter(move |(_, rule)| rule.direction == direction)
                .map(move |(i, rule)| (rule.priority, rule.action == Action::Accept, pos, i, g))
        })
        .collect();
    ranked.sort_unstable();
    ranked.into_iter().map(|(_, _, _, i, g)| (g, i)).collect()
}

fn action_code(action: Action) -> u32 {
    u32::from(match action {
        Action::Accept => ACTION_ACCEPT,
        Action::Drop => ACTION_DROP,
    })
}
