//! Keys and values of the data plane's maps.
//!
//! A first packet makes these lookups (see `docs/ARCHITECTURE.md`):
//!
//! 1. `FILTER_ACTIVE[0]`: the running generation (one u32, written last by
//!    an apply: the atomic switch).
//! 2. `FILTER_CT[key]`: the conntrack entry, which alone decides an
//!    established packet it has stamped for this generation (the fast path,
//!    [`CtEntry::fast_generation`]); a first packet misses.
//! 3. `FILTER_ENIS[(slot, ifindex)]`: the ENI and its tables per direction.
//! 4. Per table (NACL, then security groups): `FILTER_TABLES[table]`, then
//!    binary searches over runs of sorted ranges in `FILTER_BOUNDS`
//!    (`ranges.rs`): the inner-access members if [`TableMeta::inner`] lets
//!    the remote address through, the destination port (-> class),
//!    optionally the source port and the local address (-> classes, then
//!    `FILTER_CELLS`), and last, through `FILTER_RULE_SETS`, the remote
//!    address, whose range names the strongest matching rule.
//!
//! The compiler builds those ranges from longest-prefix tables, whose keys
//! ([`PortKeyData`], [`AddrKeyData`]) put the exact-match fields before the
//! address or port, so the prefix length of a key is `fixed bits + CIDR
//! length` (the layout cloudflare/tubular uses for LPM tries).
use crate::{assert_size, pod, Run, PROTO_CLASS_COUNT};

/// Exact-match bits in front of the port in a [`PortKeyData`].
pub const PORT_KEY_FIXED_BITS: u32 = 48;
/// Exact-match bits in front of the address in an [`AddrKeyData`].
pub const ADDR_KEY_FIXED_BITS: u32 = 64;

/// Per-generation settings, `FILTER_CONFIG[slot]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenConfig {
    /// Conntrack idle timeouts in nanoseconds (SPEC §3.1).
    pub tcp_syn_ns: u64,
    pub tcp_established_ns: u64,
    pub tcp_closing_ns: u64,
    pub udp_ns: u64,
    pub udp_stream_ns: u64,
    pub icmp_ns: u64,
    pub other_ns: u64,
    /// [`crate::ON_CHANGE_REVALIDATE`] or [`crate::ON_CHANGE_KEEP`].
    pub on_change: u32,
    /// Where the generation's ranges lie in `FILTER_BOUNDS`, chosen by the
    /// writer beside the running generation's. User space's bookkeeping:
    /// the programs follow the absolute runs of the tables and rule sets.
    pub bounds: crate::Run,
    /// How many `FILTER_CELLS` entries the generation wrote (bookkeeping
    /// too: the map must hold the running generation's and the next's).
    pub cells: u32,
}
assert_size!(GenConfig, 72);

/// `FILTER_ENIS` key: the generation slot, then the interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EniKey {
    pub slot: u32,
    pub ifindex: u32,
}
assert_size!(EniKey, 8);

/// Index of interface `ifindex` of generation slot `slot` in
/// `FILTER_ENIS_DIRECT`, for an `ifindex` below [`crate::ENI_DIRECT_IFINDEXES`].
#[inline(always)]
pub const fn eni_direct_index(slot: u32, ifindex: u32) -> u32 {
    (slot & 1) * crate::ENI_DIRECT_IFINDEXES + ifindex
}

/// `FILTER_ENIS` value: one guarded interface in one generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EniConfig {
    /// Stable index of the ENI in the daemon (flow logs, counters).
    pub eni_index: u32,
    /// [`crate::MODE_TAP`] or [`crate::MODE_NIC`].
    pub mode: u8,
    /// 1 in the `FILTER_ENIS_DIRECT` entries the writer made (an array entry
    /// without it is no ENI); not read in `FILTER_ENIS`.
    pub live: u8,
    pub _pad: [u8; 2],
    /// Security-group table per ENI direction (index: `DIR_*`).
    pub sg_table: [u32; 2],
    /// NACL table per ENI direction, [`crate::ID_NONE`] when the vSwitch has
    /// no ACL.
    pub nacl_table: [u32; 2],
}
assert_size!(EniConfig, 24);

/// The table uses source-port classes (source-port ranges).
pub const TABLE_HAS_SPORT: u32 = 1;
/// The table uses local-address classes (local-address ranges).
pub const TABLE_HAS_LOCAL: u32 = 2;
/// The table has inner-access members.
pub const TABLE_HAS_INNER: u32 = 4;
/// Set in every table the compiler writes: `FILTER_TABLES` is an array, and
/// an entry without it (never written, or cleared) is no table.
pub const TABLE_LIVE: u32 = 1 << 31;

/// `FILTER_TABLES[table]`: how to classify a packet against one table (the
/// security groups of an ENI in one direction, or one NACL direction).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableMeta {
    /// `TABLE_HAS_*` bits: which optional lookups this table needs.
    pub flags: u32,
    /// What happens when no rule matches: [`crate::ACTION_ACCEPT`] or
    /// [`crate::ACTION_DROP`] (SPEC §3 step 5.3; a NACL always drops).
    pub default_action: u32,
    /// Counter slot of the default verdict (`default-deny`,
    /// `default-accept`, or the NACL's own no-match slot).
    pub default_slot: u32,
    pub _pad: u32,
    /// The inner-access summary ([`InnerSummary`]): a remote address
    /// outside it is no member, and the inner-access search is skipped.
    pub inner: InnerSummary,
    /// Destination-port ranges → destination-port class, per protocol
    /// class (`proto_class_index`).
    pub dport: [Run; PROTO_CLASS_COUNT],
    /// Source-port ranges → source-port class ([`TABLE_HAS_SPORT`]).
    pub sport: [Run; PROTO_CLASS_COUNT],
    /// Local-address ranges → local-address class, IPv4 then IPv6
    /// ([`TABLE_HAS_LOCAL`]).
    pub local: [Run; 2],
    /// Remote-address ranges → inner-access accept, IPv4 then IPv6
    /// ([`TABLE_HAS_INNER`]).
    pub members: [Run; 2],
}
assert_size!(TableMeta, 168);

/// The run of a family among a table's per-family runs (IPv4 first).
#[inline(always)]
pub fn family_run(runs: &[Run; 2], family: u8) -> Run {
    runs[crate::family_index(family)]
}

/// A prefix per family that covers every inner-access member of a table,
/// as `(address & mask) == net` over the address's leading bits read as a
/// big-endian integer: 32 bits of IPv4, 64 of IPv6 (a longer common prefix
/// is cut to 64: still a cover). A filter in front of the lookup, so it may
/// let through what is no member, never the other way round: the default
/// (mask 0) lets everything through. A family without members gets
/// [`InnerSummary::NOBODY`]'s half, which lets through only the address 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InnerSummary {
    pub v4_net: u32,
    pub v4_mask: u32,
    pub v6_net: u64,
    pub v6_mask: u64,
}
assert_size!(InnerSummary, 24);

impl InnerSummary {
    /// No member in either family.
    pub const NOBODY: InnerSummary = InnerSummary {
        v4_net: 0,
        v4_mask: u32::MAX,
        v6_net: 0,
        v6_mask: u64::MAX,
    };

    /// Whether `addr` (IPv4 in the first 4 bytes) may be a member: false
    /// only when it is certainly none.
    #[inline(always)]
    pub fn may_contain(&self, family: u8, addr: &[u8; 16]) -> bool {
        if family == crate::FAMILY_V4 {
            let a = u32::from_be_bytes([addr[0], addr[1], addr[2], addr[3]]);
            a & self.v4_mask == self.v4_net
        } else {
            let a = u64::from_be_bytes([
                addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
            ]);
            a & self.v6_mask == self.v6_net
        }
    }
}

/// The compiler's port prefix tables (destination and source port): a port
/// range is stored as the prefixes that cover it. Protocols without ports use one entry with
/// prefix length [`PORT_KEY_FIXED_BITS`] and are looked up with port 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKeyData {
    pub table: u32,
    /// Protocol class (`PROTO_*`).
    pub proto: u8,
    pub _pad: u8,
    /// Big-endian, so that prefix bits are port bits.
    pub port: [u8; 2],
}
assert_size!(PortKeyData, 8);

/// The compiler's address prefix tables: local-address classes, rules by
/// remote address, and inner-access members.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddrKeyData {
    /// Table id (local classes, inner access) or rule-set id (rules).
    pub id: u32,
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    pub _pad: [u8; 3],
    /// IPv4 in the first four bytes, the rest zero.
    pub addr: [u8; 16],
}
assert_size!(AddrKeyData, 24);

/// `FILTER_CELLS` key: the classes of one packet in one table. Only tables
/// with source-port or local-address classes have cells; for the others the
/// destination-port class is the rule-set id itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CellKey {
    pub table: u32,
    pub dport_class: u32,
    pub sport_class: u32,
    pub local_class: u32,
}
assert_size!(CellKey, 16);

/// The value of a rule or inner-access prefix: the strongest rule that covers
/// the prefix, already resolved at compile time (priority, then deny
/// before accept for security groups; entry order for NACLs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleHit {
    /// `ACTION_ACCEPT`, `ACTION_DROP` or (NACL) `ACTION_SKIP`.
    pub action: u32,
    /// Counter slot of the rule, which names it to user space.
    pub slot: u32,
}
assert_size!(RuleHit, 8);

/// Conntrack key (`FILTER_CT`, LRU). Endpoints are ordered so both directions
/// of a connection find the same entry: `(addr_a, port_a) <= (addr_b, port_b)`.
/// ICMP echo puts its identifier in both ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub ifindex: u32,
    pub family: u8,
    /// IANA protocol number (not the class).
    pub proto: u8,
    pub _pad: u16,
    pub addr_a: [u8; 16],
    pub addr_b: [u8; 16],
    pub port_a: u16,
    pub port_b: u16,
}
assert_size!(CtKey, 44);

/// Conntrack states, each with its own timeout (SPEC §3.1).
pub const CT_TCP_SYN: u8 = 1;
pub const CT_TCP_ESTABLISHED: u8 = 2;
pub const CT_TCP_CLOSING: u8 = 3;
/// UDP seen in one direction only.
pub const CT_UDP: u8 = 4;
/// UDP seen in both directions.
pub const CT_UDP_STREAM: u8 = 5;
pub const CT_ICMP: u8 = 6;
pub const CT_OTHER: u8 = 7;

/// Nanoseconds in a second.
pub const NS_PER_S: u64 = 1_000_000_000;

/// The state table (SPEC §3.1): each state's name, its timeout field in
/// [`GenConfig`] and its default in seconds. The kernel, the daemon's
/// readers and the reference evaluator all look timeouts up here.
impl GenConfig {
    /// Idle timeout of an entry in `state` under `cfg`. A timeout left at 0
    /// (no config, or one never written) is the SPEC default: an all-zero
    /// config must not expire every entry at once.
    #[inline(always)]
    pub fn timeout_ns(cfg: Option<&GenConfig>, state: u8) -> u64 {
        let (configured, default_s) = match state {
            CT_TCP_SYN => (cfg.map(|c| c.tcp_syn_ns), 120),
            CT_TCP_ESTABLISHED => (cfg.map(|c| c.tcp_established_ns), 910),
            CT_TCP_CLOSING => (cfg.map(|c| c.tcp_closing_ns), 10),
            CT_UDP => (cfg.map(|c| c.udp_ns), 30),
            CT_UDP_STREAM => (cfg.map(|c| c.udp_stream_ns), 180),
            CT_ICMP => (cfg.map(|c| c.icmp_ns), 30),
            _ => (cfg.map(|c| c.other_ns), 600),
        };
        match configured {
            Some(ns) if ns != 0 => ns,
            _ => default_s * NS_PER_S,
        }
    }
}

/// The name of a conntrack state, as `status`, `explain` and the documents
/// (`conntrack.<name>_s`) spell it.
pub const fn ct_state_name(state: u8) -> &'static str {
    match state {
        CT_TCP_SYN => "tcp_syn",
        CT_TCP_ESTABLISHED => "tcp_established",
        CT_TCP_CLOSING => "tcp_closing",
        CT_UDP => "udp",
        CT_UDP_STREAM => "udp_stream",
        CT_ICMP => "icmp",
        CT_OTHER => "other",
        _ => "unknown",
    }
}

/// Ways a packet can meet a conntrack entry (`CtEntry::fast_generation`):
/// two hooks (XDP, TC) × two orientations (the first packet's, the reply's).
pub const CT_WAYS: usize = 4;

/// Conntrack value. Counters are per direction of the connection: index 0 is
/// the direction of the first packet ("original"), 1 the replies.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    pub created_ns: u64,
    pub last_seen_ns: u64,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// Counter slot of the rule that admitted the connection.
    pub rule_slot: u32,
    /// Generation that admitted (or last revalidated) it.
    pub generation: u32,
    /// Per way a packet can meet the entry, index `2 × hook + reply` (hook
    /// 0 XDP, 1 TC; reply 1 when the packet travels against the first
    /// packet's orientation): the running generation under which the full
    /// pipeline last accepted a packet that way, or 0 if none was yet. The
    /// hook and the ENI's mode give the ENI direction, and the orientation
    /// which endpoint is remote, so the NACL's verdict is a function of the
    /// generation and the way. While the stamp is the running generation
    /// (never 0), the next packet that way is decided by this entry alone
    /// (ARCHITECTURE.md, "Established fast path").
    pub fast_generation: [u32; CT_WAYS],
    /// Per way, the counter slot of the NACL entry that accepted that
    /// packet (`RULE_SLOT_NONE`: no NACL, or the address skips it), which
    /// the fast path counts as the full pipeline would.
    pub nacl_slot: [u32; CT_WAYS],
    /// `CT_*` state.
    pub state: u8,
    /// ENI direction (`DIR_*`) of the first packet.
    pub orig_dir: u8,
    /// 1 when the first packet's source was endpoint `a` of the key.
    pub orig_src_is_a: u8,
    /// OR of the TCP flags seen (SPEC §7 bit values).
    pub tcp_flags: u8,
    /// The same per direction (index 0 original, 1 replies), for the flow
    /// log's per-direction records.
    pub dir_tcp_flags: [u8; 2],
    /// `CT_FLAG_*` bits: which directions sent a FIN (half-close), and
    /// whether an echo request opened the entry. Was padding: entries made
    /// by an older build read 0 (docs/OPERATIONS.md, "Upgrade").
    pub ct_flags: u8,
    pub _pad: u8,
}
assert_size!(CtEntry, 96);

/// `CtEntry::ct_flags`: the original direction sent a FIN.
pub const CT_FLAG_FIN_ORIG: u8 = 0x01;
/// The reply direction sent a FIN.
pub const CT_FLAG_FIN_REPLY: u8 = 0x02;
/// Both directions sent a FIN: `tcp_closing_s` starts (SPEC §3.1).
pub const CT_FLAG_FIN_BOTH: u8 = CT_FLAG_FIN_ORIG | CT_FLAG_FIN_REPLY;
/// An ICMP echo request opened the entry: it admits echo requests the
/// original way and echo replies the other way only (SPEC §3.1).
pub const CT_FLAG_ECHO: u8 = 0x04;

/// The `ct_flags` bit of a FIN travelling the reply way or not.
#[inline(always)]
pub const fn ct_fin_flag(reply: bool) -> u8 {
    if reply {
        CT_FLAG_FIN_REPLY
    } else {
        CT_FLAG_FIN_ORIG
    }
}

/// Whether an echo message of the family (`v6` or not) and type is an
/// echo reply (v4 0, v6 129), as opposed to a request (8, 128).
#[inline(always)]
pub const fn is_echo_reply_type(v6: bool, icmp_type: u8) -> bool {
    if v6 {
        icmp_type == 129
    } else {
        icmp_type == 0
    }
}

/// Fragment tracking key (`FILTER_FRAGS`, LRU): the datagram a fragment
/// belongs to. `id` is the IPv4 identification or the IPv6 fragment id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub ifindex: u32,
    pub family: u8,
    pub proto: u8,
    pub _pad: u16,
    pub id: u32,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}
assert_size!(FragKey, 44);

/// The verdict of a datagram's first fragment, which later fragments follow
/// (SPEC §3.1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragEntry {
    pub seen_ns: u64,
    pub rule_slot: u32,
    /// Ports of the first fragment, so later fragments count to its flow.
    pub sport: u16,
    pub dport: u16,
    /// `ACTION_ACCEPT` or `ACTION_DROP`.
    pub action: u32,
    pub _pad: u32,
}
assert_size!(FragEntry, 24);

/// `FILTER_CLOCK[0]`: how the data plane turns jiffies into nanoseconds on
/// the `CLOCK_MONOTONIC` time line (ARCHITECTURE.md, "Clock"):
/// `jiffies * tick_ns + offset_ns`. All zero (never calibrated): the
/// programs read the coarse clock instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockConfig {
    /// Nanoseconds per jiffy (`TICK_NSEC` of the kernel's `HZ`); 0 for none.
    pub tick_ns: u64,
    /// `CLOCK_MONOTONIC` nanoseconds minus `jiffies * tick_ns` (wrapping).
    pub offset_ns: u64,
}
assert_size!(ClockConfig, 16);

/// Per-rule counters, `FILTER_RULE_STATS[slot]` (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleStats {
    pub packets: u64,
    pub bytes: u64,
    /// `bpf_ktime_get_ns` of the last hit; user space converts it.
    pub last_hit_ns: u64,
}
assert_size!(RuleStats, 24);

pod!(
    GenConfig,
    ClockConfig,
    EniKey,
    EniConfig,
    TableMeta,
    InnerSummary,
    PortKeyData,
    AddrKeyData,
    CellKey,
    RuleHit,
    CtKey,
    CtEntry,
    FragKey,
    FragEntry,
    RuleStats,
);
