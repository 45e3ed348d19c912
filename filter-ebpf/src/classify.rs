//! Classifying a first packet against one table: the lookups of
//! `docs/ARCHITECTURE.md`, "Classifying a packet against a table", steps 1–7.
//!
//! The compiler has already resolved precedence (priority, deny before accept
//! on a tie, inner access first; entry order for a NACL) into the maps, so the
//! kernel makes a few lookups and binary searches and never compares two
//! rules.
use filter_common::{
    family_run, id_index, proto_class, proto_class_index, proto_has_ports, Bound, CellKey,
    ACTION_ACCEPT, ACTION_DROP, ACTION_NONE, ACTION_SKIP, DIR_INGRESS, ID_NONE, MAX_RULE_SETS,
    MAX_TABLES, RULE_SLOT_DEFAULT_DENY, TABLE_HAS_INNER, TABLE_HAS_LOCAL, TABLE_HAS_SPORT,
    TABLE_LIVE,
};

use crate::{
    maps::{FILTER_CELLS, FILTER_RULE_SETS, FILTER_TABLES},
    parse::Flow,
    ranges,
};

/// `ACTION_*` as the u32 that `Bound`, `TableMeta` and `FragEntry` carry.
pub const VERDICT_ACCEPT: u32 = ACTION_ACCEPT as u32;
pub const VERDICT_DROP: u32 = ACTION_DROP as u32;
pub const VERDICT_SKIP: u32 = ACTION_SKIP as u32;
const VERDICT_NONE: u32 = ACTION_NONE as u32;

/// The outcome of one table.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Verdict {
    /// `ACTION_ACCEPT`, `ACTION_DROP` or (NACL) `ACTION_SKIP`.
    pub action: u32,
    /// Rule counter slot that names the reason.
    pub slot: u32,
    /// 1 when no rule decided: the table's default, or a missing table.
    pub is_default: u32,
}

impl Verdict {
    /// A rule decided: the value of the range that held the remote address.
    #[inline(always)]
    fn rule(&mut self, hit: &Bound) {
        self.action = hit.value;
        self.slot = hit.slot;
        self.is_default = 0;
    }
}

/// The class a port or address range maps to, or None (no class: no rule of
/// the table matches).
#[inline(always)]
fn class(hit: Option<&Bound>) -> Option<u32> {
    hit.map(|b| b.value).filter(|&c| c != ID_NONE)
}

/// Classifies `flow`, seen in ENI direction `dir`, against `table`, into `v`.
///
/// The remote endpoint is the source on ingress and the destination on
/// egress (SPEC §3); the local one is the other.
#[inline(never)]
pub fn classify(table: u32, flow: &Flow, dir: u8, v: &mut Verdict) {
    // Step 1: the table. None means a generation was written half-way or the
    // ENI points at nothing: fail closed (ARCHITECTURE.md).
    let meta = match FILTER_TABLES.get(id_index(table, MAX_TABLES)) {
        Some(meta) if meta.flags & TABLE_LIVE != 0 => meta,
        _ => {
            v.action = VERDICT_DROP;
            v.slot = RULE_SLOT_DEFAULT_DENY;
            v.is_default = 1;
            return;
        }
    };
    // Read in place, not copied: user space writes only the slot no program
    // run uses (ARCHITECTURE.md, "Atomic generations").
    // Any miss from here on means no rule matches: the table's default
    // (SPEC §3 step 5.3, or the NACL's implicit deny).
    v.action = meta.default_action;
    v.slot = meta.default_slot;
    v.is_default = 1;

    let (remote, local) = if dir == DIR_INGRESS {
        (&flow.src, &flow.dst)
    } else {
        (&flow.dst, &flow.src)
    };
    let (remote_hi, remote_lo) = Bound::addr_key(remote);

    // Step 2: inner access. A remote address that is a member of a basic
    // group with `inner_access_policy: accept` shared with this ENI is
    // accepted before any rule is looked at: it wins over custom rules,
    // whatever their priority (SPEC §3 step 5.1).
    // The table's summary of its members rules most remote addresses out
    // with one compare (traffic from outside the VPC), sparing the search.
    if meta.flags & TABLE_HAS_INNER != 0 && meta.inner.may_contain(flow.family, remote) {
        let members = family_run(&meta.members, flow.family);
        if let Some(hit) = ranges::find(members, remote_hi, remote_lo) {
            if hit.value != VERDICT_NONE {
                v.rule(hit);
                return;
            }
        }
    }

    // Step 3: destination-port class. Protocols without ports have one
    // range that ignores the port, searched with port 0; protocols no rule
    // can name are folded into PROTO_OTHER, which only `all` rules match.
    let class_index = proto_class_index(proto_class(flow.proto));
    let has_ports = proto_has_ports(proto_class(flow.proto));
    let dport = if has_ports { flow.dport } else { 0 };
    let Some(dport_class) = class(ranges::find(meta.dport[class_index], 0, u64::from(dport)))
    else {
        return;
    };

    // Steps 4–6: tables whose rules also restrict the source port or the
    // local address cut those dimensions into classes too; the cell of the
    // three classes names the rule set. A dimension the table does not cut
    // is ID_NONE in the cell key. Otherwise the destination-port class is
    // the rule set itself.
    let mut rule_set = dport_class;
    if meta.flags & (TABLE_HAS_SPORT | TABLE_HAS_LOCAL) != 0 {
        let mut sport_class = ID_NONE;
        if meta.flags & TABLE_HAS_SPORT != 0 {
            let sport = if has_ports { flow.sport } else { 0 };
            let Some(c) = class(ranges::find(meta.sport[class_index], 0, u64::from(sport))) else {
                return;
            };
            sport_class = c;
        }
        let mut local_class = ID_NONE;
        if meta.flags & TABLE_HAS_LOCAL != 0 {
            let (hi, lo) = Bound::addr_key(local);
            let Some(c) = class(ranges::find(family_run(&meta.local, flow.family), hi, lo)) else {
                return;
            };
            local_class = c;
        }
        let cell = CellKey {
            table,
            dport_class,
            sport_class,
            local_class,
        };
        let Some(id) = FILTER_CELLS.get_ptr(cell) else {
            return;
        };
        // SAFETY: a live map value.
        rule_set = unsafe { *id };
    }

    // Step 7: the range of the rule set that holds the remote address names
    // the strongest rule of the whole rule set that contains the address
    // (priority, then deny on a tie; entry order for a NACL), resolved by
    // the compiler. No rule there: the default stands.
    let Some(runs) = FILTER_RULE_SETS.get(id_index(rule_set, MAX_RULE_SETS)) else {
        return;
    };
    if let Some(hit) = ranges::find(runs.family(flow.family), remote_hi, remote_lo) {
        if hit.value != VERDICT_NONE {
            v.rule(hit);
        }
    }
}
