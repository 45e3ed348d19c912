//! Types shared by the eBPF programs and user space.
//!
//! Everything here is the byte-level contract between the rule compiler in
//! `filter-user` and the data plane in `filter-ebpf`: map keys, map values and
//! the constants both sides agree on. Every struct is `#[repr(C)]` with
//! explicit padding and a compile-time size check, so a change on one side
//! that the other does not follow fails to build instead of misreading maps.
//!
//! The data plane design (the maps, the lookups a packet makes and why) is in
//! `docs/ARCHITECTURE.md`.
#![no_std]

pub mod flowlog;
pub mod maps;
pub mod ranges;
pub mod stats;

pub use flowlog::*;
pub use maps::*;
pub use ranges::*;
pub use stats::*;

/// Direction relative to the ENI (SPEC §1): toward the instance.
pub const DIR_INGRESS: u8 = 0;
/// Direction relative to the ENI (SPEC §1): from the instance.
pub const DIR_EGRESS: u8 = 1;

/// `attach_mode: "tap"` (SPEC §2.4): the interface is the host end of the
/// instance's link, so XDP sees ENI egress and TC egress sees ENI ingress.
pub const MODE_TAP: u8 = 0;
/// `attach_mode: "nic"` (SPEC §2.4): the interface is the instance's NIC, so
/// XDP sees ENI ingress and TC egress sees ENI egress.
pub const MODE_NIC: u8 = 1;

/// Address family tags used inside map keys. IPv4 addresses are stored in
/// the first four bytes of a 16-byte address field; the family byte sits
/// before the address in every key, so an IPv6 prefix such as `::/0` can never
/// cover an IPv4 address (SPEC §2.2: a CIDR matches only its own family).
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// Protocol classes used in classifier keys. The protocols a rule can name
/// keep their IANA number; every other protocol is folded into
/// [`PROTO_OTHER`], which only `all` rules match.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_GRE: u8 = 47;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_OTHER: u8 = 255;

/// The protocol class a packet's IANA protocol number is looked up under.
#[inline(always)]
pub const fn proto_class(ip_proto: u8) -> u8 {
    match ip_proto {
        PROTO_ICMP | PROTO_TCP | PROTO_UDP | PROTO_GRE | PROTO_ICMPV6 => ip_proto,
        _ => PROTO_OTHER,
    }
}

/// Whether a protocol class carries ports that rules can match.
#[inline(always)]
pub const fn proto_has_ports(proto_class: u8) -> bool {
    matches!(proto_class, PROTO_TCP | PROTO_UDP)
}

/// Verdict actions stored in classifier values.
pub const ACTION_NONE: u8 = 0;
pub const ACTION_ACCEPT: u8 = 1;
pub const ACTION_DROP: u8 = 2;
/// NACL only: the remote address lies inside the vSwitch CIDR, so the ACL is
/// skipped (SPEC §3 step 3). Compiled as the strongest NACL entry.
pub const ACTION_SKIP: u8 = 3;

/// `conntrack.on_change` (SPEC §3.1).
pub const ON_CHANGE_REVALIDATE: u32 = 0;
pub const ON_CHANGE_KEEP: u32 = 1;

/// A table id or class id that means "none": the ENI has no NACL, say.
pub const ID_NONE: u32 = u32::MAX;

/// Ids of tables and rule sets carry the generation slot in their top bit so
/// that the generation being written never touches an id the running one
/// uses (see `docs/ARCHITECTURE.md`, "Atomic generations").
pub const SLOT_ID_BIT: u32 = 1 << 31;

/// The slot (0 or 1) a generation's maps live in.
#[inline(always)]
pub const fn generation_slot(generation: u32) -> u32 {
    generation & 1
}

/// Rule-counter slots with a fixed meaning; compiled rules take slots from
/// [`RULE_SLOT_FIRST_DYNAMIC`] up. They are stable across generations so that
/// `filterctl counters` keeps counting (SPEC §3 step 6 names these reasons).
pub const RULE_SLOT_DEFAULT_DENY: u32 = 0;
pub const RULE_SLOT_DEFAULT_ACCEPT: u32 = 1;
pub const RULE_SLOT_TRACKED: u32 = 2;
pub const RULE_SLOT_PASS: u32 = 3;
pub const RULE_SLOT_FIRST_DYNAMIC: u32 = 16;
/// Rule-counter slots: every rule of every group and NACL on the host, with
/// room for the slots of one generation being replaced (a million rules
/// each).
pub const MAX_RULE_SLOTS: u32 = 1 << 21;
/// Slots below this count per CPU (`FILTER_RSTATS`: 384 KiB per CPU), the
/// rest in one shared array (`FILTER_RSHARED`, at `slot - HOT_RULE_SLOTS`)
/// with atomic adds: per-CPU counters for every slot would cost 48 MiB per
/// CPU. The compiler hands out these slots first.
pub const HOT_RULE_SLOTS: u32 = 1 << 14;

/// Map capacities. The compiler checks a document against these before
/// anything is written (SPEC §2.5: sizes that the maps can hold); two
/// generations live side by side during an apply, so each may use half.
pub const MAX_ENIS: u32 = 1024;
/// Interfaces below this ifindex are also found in `FILTER_ENIS_DIRECT`, an
/// array the kernel reads without hashing (ARCHITECTURE.md, "ENI lookup");
/// per slot, so the array has twice this many entries.
pub const ENI_DIRECT_IFINDEXES: u32 = 1 << 16;
pub const MAX_TABLES: u32 = 4096;
/// `FILTER_CELLS` entries the maps are created with; like `FILTER_BOUNDS`
/// it grows when the running generation and the next need more
/// (ARCHITECTURE.md, "Growing the maps"), up to [`MAX_CELLS`].
pub const INITIAL_CELLS: u32 = 1 << 18;
pub const MAX_CELLS: u32 = 1 << 24;
pub const DEFAULT_CT_ENTRIES: u32 = 262_144;
/// Limits on the compiler's prefix tables, which become sorted ranges
/// (`ranges.rs`; `FILTER_BOUNDS` grows to [`MAX_BOUNDS`] of them): entries
/// per kind, counted like map entries (half per generation), so that one
/// table too big is refused by name before the layout. Port, remote and
/// member prefixes may be as many as there are bounds (each takes at least
/// one), so only the ranges' memory stops them.
pub const MAX_PORT_ENTRIES: u32 = MAX_BOUNDS;
/// Local addresses are the ENIs' own: 32k per generation is 64 for each of
/// the 512 ENIs a document may have, and each local class multiplies a
/// table's cells.
pub const MAX_ADDR_CLASS_ENTRIES: u32 = 1 << 16;
pub const MAX_RULE_ENTRIES: u32 = MAX_BOUNDS;
pub const MAX_INNER_ENTRIES: u32 = MAX_BOUNDS;
pub const MAX_FRAG_ENTRIES: u32 = 16_384;

/// Longest IPv6 extension-header chain the parser walks before it gives up
/// and drops the packet (SPEC §3.2).
pub const MAX_IPV6_EXT_HEADERS: u32 = 8;

/// Compile-time size checks: a layout change must be made on purpose.
macro_rules! assert_size {
    ($t:ty, $n:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $n);
    };
}
pub(crate) use assert_size;

/// Implements `aya::Pod` for user space; the kernel side needs nothing.
macro_rules! pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is `#[repr(C)]`, `Copy`, made only of integers
            // and byte arrays, with every padding byte an explicit field.
            unsafe impl aya::Pod for $t {}
        )*
    };
}
pub(crate) use pod;
