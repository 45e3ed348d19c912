//! What the kernel will do: the lookups of ARCHITECTURE.md steps 1–7 and the
//! pipeline order (without conntrack and fragments), performed on a
//! [`Compiled`] generation in user space.
//!
//! It reads nothing but the map contents, as the kernel would: the tables,
//! cells and rule sets by id, and the sorted ranges of [`super::Layout`]
//! with the kernel's binary search, so a range laid out wrongly fails here
//! as it would in the kernel. It is a test model, so it favours plainness
//! over speed.
use std::collections::HashMap;

use filter_common::{
    family_run, proto_class, proto_class_index, proto_has_ports, Bound, CellKey, EniConfig, EniKey,
    RuleSetRuns, Run, TableMeta, ACTION_DROP, ACTION_NONE, ID_NONE, MODE_NIC,
    RULE_SLOT_DEFAULT_DENY, RULE_SLOT_PASS, STAT_ACCEPT_NEW, STAT_DROP_DEFAULT, STAT_DROP_NACL,
    STAT_DROP_SG_RULE, STAT_PASS_ND, STAT_PASS_UNGUARDED, TABLE_HAS_INNER, TABLE_HAS_LOCAL,
    TABLE_HAS_SPORT, TABLE_LIVE,
};

use super::{prefix::left_aligned, Compiled, Layout};
use crate::{
    ruleset::Direction,
    verdict::{Decision, Packet, Reason, Verdict},
};

/// The program a packet runs through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Interface ingress.
    Xdp,
    /// Interface egress.
    Tc,
}

/// What the data plane does with one first packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelVerdict {
    /// The ENI direction; `None` when the interface is not guarded.
    pub direction: Option<Direction>,
    pub decision: Decision,
    /// The `FILTER_RSTATS` slot the packet counts into.
    pub slot: u32,
    /// The `FILTER_STATS` counter the packet counts into.
    pub stat: u32,
}

/// Classifies a first packet arriving at `hook` of interface `ifindex`.
pub fn classify(c: &Compiled, ifindex: u32, hook: Hook, pkt: &Packet) -> ModelVerdict {
    Model::new(c).classify(ifindex, hook, pkt)
}

/// The decision for a first packet in ENI direction `direction` of the ENI
/// on `ifindex` (what `crate::eval` answers for that ENI and direction).
pub fn classify_direction(
    c: &Compiled,
    ifindex: u32,
    direction: Direction,
    pkt: &Packet,
) -> Decision {
    Model::new(c)
        .classify_direction(ifindex, direction, pkt)
        .decision
}

/// The maps of one generation, indexed for lookups. Build it once to
/// classify many packets.
pub struct Model<'a> {
    c: &'a Compiled,
    slot: u32,
    enis: HashMap<EniKey, EniConfig>,
    /// By array index, as the kernel finds them.
    tables: HashMap<u32, TableMeta>,
    cells: HashMap<CellKey, u32>,
    rule_sets: HashMap<u32, RuleSetRuns>,
}

/// The result of classifying against one table.
#[derive(Clone, Copy, Debug)]
struct TableHit {
    action: u32,
    slot: u32,
    /// No rule matched: the table's default applied.
    default: bool,
}

impl<'a> Model<'a> {
    pub fn new(c: &'a Compiled) -> Model<'a> {
        Model {
            c,
            slot: c.generation & 1,
            enis: c.enis.iter().copied().collect(),
            tables: c
                .layout
                .tables
                .iter()
                .map(|&(id, t)| (Layout::table_index(id), t))
                .collect(),
            cells: c.cells.iter().copied().collect(),
            rule_sets: c
                .layout
                .rule_sets
                .iter()
                .map(|&(id, r)| (Layout::rule_set_index(id), r))
                .collect(),
        }
    }

    pub fn classify(&self, ifindex: u32, hook: Hook, pkt: &Packet) -> ModelVerdict {
        let Some(eni) = self.enis.get(&EniKey {
            slot: self.slot,
            ifindex,
        }) else {
            return self.pass(None, STAT_PASS_UNGUARDED);
        };
        // ARCHITECTURE.md "Direction": the hook and the attach mode.
        let direction = match (hook, eni.mode == MODE_NIC) {
            (Hook::Xdp, true) | (Hook::Tc, false) => Direction::Ingress,
            (Hook::Xdp, false) | (Hook::Tc, true) => Direction::Egress,
        };
        self.decide(eni, direction, pkt)
    }

    pub fn classify_direction(
        &self,
        ifindex: u32,
        direction: Direction,
        pkt: &Packet,
    ) -> ModelVerdict {
        match self.enis.get(&EniKey {
            slot: self.slot,
            ifindex,
        }) {
            Some(eni) => self.decide(eni, direction, pkt),
            None => self.pass(None, STAT_PASS_UNGUARDED),
        }
    }

    /// The pipeline without conntrack: ingress NACL, security groups, egress
    /// NACL (SPEC §3 step 2).
    fn decide(&self, eni: &EniConfig, direction: Direction, pkt: &Packet) -> ModelVerdict {
        if pkt.is_neighbour_discovery() {
            return self.pass(Some(direction), STAT_PASS_ND);
        }
        let (remote, local) = match direction {
            Direction::Ingress => (pkt.src, pkt.dst),
            Direction::Egress => (pkt.dst, pkt.src),
        };
        let d = usize::from(direction.as_u8());
        let nacl = eni.nacl_table[d];
        let drop =
            |hit: TableHit, stat: u32| self.verdict(direction, Verdict::Drop, hit.slot, stat);
        let nacl_drops = |hit: Option<TableHit>| hit.filter(|h| h.action == u32::from(ACTION_DROP));
        let nacl_hit =
            |table: u32| (table != ID_NONE).then(|| self.table(table, pkt, remote, local));
        if direction == Direction::Ingress {
            if let Some(hit) = nacl_drops(nacl_hit(nacl)) {
                return drop(hit, STAT_DROP_NACL);
            }
        }
        let sg = self.table(eni.sg_table[d], pkt, remote, local);
        if sg.action != u32::from(filter_common::ACTION_ACCEPT) {
            return drop(
                sg,
                if sg.default {
                    STAT_DROP_DEFAULT
                } else {
                    STAT_DROP_SG_RULE
                },
            );
        }
        if direction == Direction::Egress {
            if let Some(hit) = nacl_drops(nacl_hit(nacl)) {
                return drop(hit, STAT_DROP_NACL);
            }
        }
        self.verdict(direction, Verdict::Accept, sg.slot, STAT_ACCEPT_NEW)
    }

    /// Steps 1–7 against one table.
    fn table(
        &self,
        table: u32,
        pkt: &Packet,
        remote: std::net::IpAddr,
        local: std::net::IpAddr,
    ) -> TableHit {
        // A missing table fails closed.
        let Some(meta) = self
            .tables
            .get(&Layout::table_index(table))
            .filter(|t| t.flags & TABLE_LIVE != 0)
        else {
            return TableHit {
                action: u32::from(ACTION_DROP),
                slot: RULE_SLOT_DEFAULT_DENY,
                default: true,
            };
        };
        let default = TableHit {
            action: meta.default_action,
            slot: meta.default_slot,
            default: true,
        };
        let rule = |hit: Option<&Bound>| {
            hit.filter(|b| b.value != u32::from(ACTION_NONE))
                .map(|b| TableHit {
                    action: b.value,
                    slot: b.slot,
                    default: false,
                })
        };
        let class = |run: Run, key: u128| {
            self.find(run, key)
                .map(|b| b.value)
                .filter(|&c| c != ID_NONE)
        };
        // The address as a `Flow` holds it: IPv4 in the first four bytes.
        let (family, remote_key) = left_aligned(remote);
        let (_, local_key) = left_aligned(local);
        if meta.flags & TABLE_HAS_INNER != 0
            && meta.inner.may_contain(family, &remote_key.to_be_bytes())
        {
            if let Some(hit) = rule(self.find(family_run(&meta.members, family), remote_key)) {
                return hit;
            }
        }
        let proto = proto_class(pkt.proto);
        let class_index = proto_class_index(proto);
        let ports = proto_has_ports(proto);
        let dport = if ports { pkt.dst_port } else { 0 };
        let sport = if ports { pkt.src_port } else { 0 };
        let Some(dclass) = class(meta.dport[class_index], u128::from(dport)) else {
            return default;
        };
        let rule_set = if meta.flags & (TABLE_HAS_SPORT | TABLE_HAS_LOCAL) != 0 {
            let sclass = if meta.flags & TABLE_HAS_SPORT != 0 {
                match class(meta.sport[class_index], u128::from(sport)) {
                    Some(class) => class,
                    None => return default,
                }
            } else {
                ID_NONE
            };
            let lclass = if meta.flags & TABLE_HAS_LOCAL != 0 {
                match class(family_run(&meta.local, family), local_key) {
                    Some(class) => class,
                    None => return default,
                }
            } else {
                ID_NONE
            };
            let cell = CellKey {
                table,
                dport_class: dclass,
                sport_class: sclass,
                local_class: lclass,
            };
            match self.cells.get(&cell) {
                Some(&rule_set) => rule_set,
                None => return default,
            }
        } else {
            dclass
        };
        // A NACL hit may be ACTION_SKIP (inside the vSwitch): the caller
        // goes on as after an accept, since only a drop stops the packet.
        let Some(runs) = self.rule_sets.get(&Layout::rule_set_index(rule_set)) else {
            return default;
        };
        rule(self.find(runs.family(family), remote_key)).unwrap_or(default)
    }

    /// The kernel's binary search over the generation's bounds.
    fn find(&self, run: Run, key: u128) -> Option<&Bound> {
        self.c.layout.find(run, key)
    }

    fn pass(&self, direction: Option<Direction>, stat: u32) -> ModelVerdict {
        ModelVerdict {
            direction,
            decision: Decision {
                verdict: Verdict::Accept,
                reason: Reason::Pass,
            },
            slot: RULE_SLOT_PASS,
            stat,
        }
    }

    fn verdict(
        &self,
        direction: Direction,
        verdict: Verdict,
        slot: u32,
        stat: u32,
    ) -> ModelVerdict {
        let reason = self
            .c
            .slot_reasons
            .get(&slot)
            .cloned()
            .unwrap_or_else(|| Reason::Rule {
                // A compiler bug, made visible rather than hidden.
                id: format!("<slot {slot} has no reason>"),
            });
        ModelVerdict {
            direction: Some(direction),
            decision: Decision { verdict, reason },
            slot,
            stat,
        }
    }
}
