//! Classifying a first packet against one table: the lookups of
//! `docs/ARCHITECTURE.md`, "Classifying a packet against a table", steps 1–7.
//!
//! The compiler has already resolved precedence (priority, deny before accept
//! on a tie, inner access first; entry order for a NACL) into the maps, so the
//! kernel makes at most seven lookups and never compares two rules.
use aya_ebpf::maps::lpm_trie::Key;
use filter_common::{
    proto_class, proto_has_ports, AddrKeyData, CellKey, PortKeyData, ACTION_ACCEPT, ACTION_DROP,
    ACTION_SKIP, ADDR_KEY_FIXED_BITS, DIR_INGRESS, ID_NONE, PORT_KEY_FIXED_BITS,
    RULE_SLOT_DEFAULT_DENY, TABLE_HAS_INNER, TABLE_HAS_LOCAL, TABLE_HAS_SPORT,
};

use crate::{
    maps::{
        FILTER_CELLS, FILTER_DPORT, FILTER_INNER, FILTER_LOCAL, FILTER_RULES, FILTER_SPORT,
        FILTER_TABLES,
    },
    parse::Flow,
};

/// Port lookups use the whole key: fixed fields, then all 16 port bits.
const PORT_LOOKUP_BITS: u32 = PORT_KEY_FIXED_BITS + 16;
/// Address lookups use the whole key: fixed fields, then 128 address bits
/// (an IPv4 address is followed by zeros, so its /32 is still the longest
/// prefix that can match it).
const ADDR_LOOKUP_BITS: u32 = ADDR_KEY_FIXED_BITS + 128;

/// `ACTION_*` as the u32 that `RuleHit`, `TableMeta` and `FragEntry` carry.
pub const VERDICT_ACCEPT: u32 = ACTION_ACCEPT as u32;
pub const VERDICT_DROP: u32 = ACTION_DROP as u32;
pub const VERDICT_SKIP: u32 = ACTION_SKIP as u32;

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

/// Classifies `flow`, seen in ENI direction `dir`, against `table`, into `v`.
///
/// The remote endpoint is the source on ingress and the destination on
/// egress (SPEC §3); the local one is the other.
#[inline(never)]
pub fn classify(table: u32, flow: &Flow, dir: u8, v: &mut Verdict) {
    // Step 1: the table. None means a generation was written half-way or the
    // ENI points at nothing: fail closed (ARCHITECTURE.md).
    let Some(meta) = FILTER_TABLES.get_ptr(table) else {
        v.action = VERDICT_DROP;
        v.slot = RULE_SLOT_DEFAULT_DENY;
        v.is_default = 1;
        return;
    };
    // SAFETY: a live map value; copied so a concurrent update cannot tear it
    // between fields we read.
    let meta = unsafe { *meta };
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

    // Step 2: inner access. A remote address that is a member of a basic
    // group with `inner_access_policy: accept` shared with this ENI is
    // accepted before any rule is looked at: it wins over custom rules,
    // whatever their priority (SPEC §3 step 5.1).
    // The table's summary of its members rules most remote addresses out
    // with one compare (traffic from outside the VPC), sparing the lookup.
    if meta.flags & TABLE_HAS_INNER != 0 && meta.inner.may_contain(flow.family, remote) {
        let key = Key::new(ADDR_LOOKUP_BITS, addr_key(table, flow.family, remote));
        if let Some(hit) = FILTER_INNER.get(&key) {
            v.action = hit.action;
            v.slot = hit.slot;
            v.is_default = 0;
            return;
        }
    }

    // Step 3: destination-port class. Protocols without ports have one
    // entry that ignores the port, looked up with port 0; protocols no rule
    // can name are folded into PROTO_OTHER, which only `all` rules match.
    let class = proto_class(flow.proto);
    let has_ports = proto_has_ports(class);
    let dport = if has_ports { flow.dport } else { 0 };
    let key = Key::new(PORT_LOOKUP_BITS, port_key(table, class, dport));
    let Some(&dport_class) = FILTER_DPORT.get(&key) else {
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
            let key = Key::new(PORT_LOOKUP_BITS, port_key(table, class, sport));
            let Some(&c) = FILTER_SPORT.get(&key) else {
                return;
            };
            sport_class = c;
        }
        let mut local_class = ID_NONE;
        if meta.flags & TABLE_HAS_LOCAL != 0 {
            let key = Key::new(ADDR_LOOKUP_BITS, addr_key(table, flow.family, local));
            let Some(&c) = FILTER_LOCAL.get(&key) else {
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

    // Step 7: the longest stored prefix containing the remote address holds
    // the strongest rule of the whole rule set that contains the address
    // (priority, then deny on a tie; entry order for a NACL), resolved by
    // the compiler. No entry: no rule matches, the default stands.
    let key = Key::new(ADDR_LOOKUP_BITS, addr_key(rule_set, flow.family, remote));
    if let Some(hit) = FILTER_RULES.get(&key) {
        v.action = hit.action;
        v.slot = hit.slot;
        v.is_default = 0;
    }
}

#[inline(always)]
fn port_key(table: u32, proto: u8, port: u16) -> PortKeyData {
    PortKeyData {
        table,
        proto,
        _pad: 0,
        port: port.to_be_bytes(),
    }
}

#[inline(always)]
fn addr_key(id: u32, family: u8, addr: &[u8; 16]) -> AddrKeyData {
    AddrKeyData {
        id,
        family,
        _pad: [0; 3],
        addr: *addr,
    }
}
