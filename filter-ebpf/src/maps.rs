//! Every map of the data plane. The symbol names are the map names user space
//! opens (`filter_common::names`), and the key/value types are the
//! `#[repr(C)]` contract in `filter_common::maps`.
//!
//! None is pinned by its definition: the loader pins them where it wants
//! (`EbpfLoader::map_pin_path`), so tests can load private copies.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use filter_common::{
    Bound, CellKey, ClockConfig, CtEntry, CtKey, EniConfig, EniKey, FlowLoss, FragEntry, FragKey,
    GenConfig, RejectEntry, RejectKey, RuleSetRuns, RuleStats, TableMeta, DEFAULT_CT_ENTRIES,
    ENI_DIRECT_IFINDEXES, FLOW_EVENTS_BYTES, HOT_RULE_SLOTS, INITIAL_BOUNDS, INITIAL_CELLS,
    MAX_ENIS, MAX_FRAG_ENTRIES, MAX_REJECT_ENTRIES, MAX_RULE_SETS, MAX_RULE_SLOTS, MAX_TABLES,
    STAT_COUNT,
};

use crate::pipeline::Packet;

/// `[0]`: the running generation. Written last by an apply: the one write
/// that switches every packet to the new slot.
#[map]
pub static FILTER_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

/// `[0]`: jiffies to nanoseconds (`clock.rs`), written once per boot by
/// user space before this build's programs run; zero: not calibrated.
#[map]
pub static FILTER_CLOCK: Array<ClockConfig> = Array::with_max_entries(1, 0);

/// Per-slot settings (conntrack timeouts, `on_change`).
#[map]
pub static FILTER_CONFIG: Array<GenConfig> = Array::with_max_entries(2, 0);

/// Guarded interfaces per slot. Both slots live here during an apply, so
/// each generation may use half (as for every map sized by a `MAX_*`).
#[map]
pub static FILTER_ENIS: HashMap<EniKey, EniConfig> = HashMap::with_max_entries(MAX_ENIS, 0);

/// The same ENIs for interfaces below `ENI_DIRECT_IFINDEXES`, at
/// `eni_direct_index(slot, ifindex)`: an array read the verifier inlines,
/// where a hash lookup is a call. An entry without `live` is no ENI.
#[map]
pub static FILTER_ENIS_DIRECT: Array<EniConfig> =
    Array::with_max_entries(2 * ENI_DIRECT_IFINDEXES, 0);

/// Tables (security groups of an ENI in one direction, one NACL direction),
/// at `id_index(table, MAX_TABLES)`; an entry without `TABLE_LIVE` is none.
#[map]
pub static FILTER_TABLES: Array<TableMeta> = Array::with_max_entries(MAX_TABLES, 0);

/// (table, dport class, sport class, local class) → rule-set id.
#[map]
pub static FILTER_CELLS: HashMap<CellKey, u32> = HashMap::with_max_entries(INITIAL_CELLS, 0);

/// Rule set → its runs of remote-address ranges, at
/// `id_index(rule set, MAX_RULE_SETS)`.
#[map]
pub static FILTER_RULE_SETS: Array<RuleSetRuns> = Array::with_max_entries(MAX_RULE_SETS, 0);

/// Every run of sorted ranges (`filter_common::ranges`): ports → classes,
/// local addresses → classes, remote addresses → the strongest rule (or
/// inner-access accept) covering them. Created at the size the daemon asks
/// for; this one is the default.
#[map]
pub static FILTER_BOUNDS: Array<Bound> = Array::with_max_entries(INITIAL_BOUNDS, 0);

/// Connection tracking. LRU: a full table evicts the least recently used
/// entry, whose next packet is classified again (never admitted blindly).
#[map]
pub static FILTER_CT: LruHashMap<CtKey, CtEntry> =
    LruHashMap::with_max_entries(DEFAULT_CT_ENTRIES, 0);

/// Verdicts of first fragments, for the later fragments of the datagram.
#[map]
pub static FILTER_FRAGS: LruHashMap<FragKey, FragEntry> =
    LruHashMap::with_max_entries(MAX_FRAG_ENTRIES, 0);

/// One counter per verdict reason (`STAT_*`), per CPU.
#[map]
pub static FILTER_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// Per-CPU scratch space for the pipeline's per-packet state, which does
/// not fit the 512-byte BPF stack next to the deepest call chain. Internal:
/// user space never opens it. One entry per CPU, and a program runs to
/// completion on its CPU, so no two packets share it at once.
#[map]
pub static FILTER_SCRATCH: PerCpuArray<Packet> = PerCpuArray::with_max_entries(1, 0);

/// Packets, bytes and last hit per rule counter slot below
/// `HOT_RULE_SLOTS`, per CPU.
#[map]
pub static FILTER_RSTATS: PerCpuArray<RuleStats> = PerCpuArray::with_max_entries(HOT_RULE_SLOTS, 0);

/// The same for the slots from `HOT_RULE_SLOTS` on, at `slot -
/// HOT_RULE_SLOTS`: one copy for all CPUs, added to atomically, so that a
/// million rules cost 48 MiB rather than 48 MiB per CPU.
#[map]
pub static FILTER_RSHARED: Array<RuleStats> =
    Array::with_max_entries(MAX_RULE_SLOTS - HOT_RULE_SLOTS, 0);

/// Flow logs: flows without a conntrack entry (rejected packets, related
/// ICMP errors), keyed in the packet's orientation with direction and
/// action. LRU: when full the least recently used flow goes.
#[map]
pub static FILTER_REJECTS: LruHashMap<RejectKey, RejectEntry> =
    LruHashMap::with_max_entries(MAX_REJECT_ENTRIES, 0);

/// Flow logs: one event per new flow entry and per entry the data plane
/// removes (`filter_common::flowlog`), read by `filterd` with `AsyncFd`.
#[map]
pub static FILTER_EVENTS: RingBuf = RingBuf::with_byte_size(FLOW_EVENTS_BYTES, 0);

/// Flow logs: what could not be recorded, per ENI index, per CPU.
#[map]
pub static FILTER_FLOWLOSS: PerCpuArray<FlowLoss> = PerCpuArray::with_max_entries(MAX_ENIS, 0);
