//! Flow logs (SPEC §7): what the data plane hands to `filterd`'s collector
//! (`docs/FLOWLOGS.md`).
//!
//! - Accepted connections are accounted in their conntrack entry
//!   ([`crate::CtEntry`]: packets, bytes and TCP flags per direction).
//! - Every other packet on a guarded ENI (rejected packets, and the rare
//!   accepted packet that makes no connection: an ICMP error related to a
//!   tracked connection) is accounted in `FILTER_REJECTS`, an LRU hash keyed
//!   by [`RejectKey`] (the flow in the packet's orientation, with its
//!   direction and action).
//! - `FILTER_EVENTS`, a ring buffer, receives one event when an entry of
//!   either map is created ([`FLOW_EV_CT_NEW`], [`FLOW_EV_REJECT_NEW`]) and
//!   when the data plane itself removes a conntrack entry
//!   ([`FLOW_EV_CT_END`] for an idle one, [`FLOW_EV_CT_CUT`] for a
//!   connection a new generation cut), with the entry's final counts.
//!   Established packets only update counters: no event.
//! - `FILTER_FLOWLOSS[eni_index]` (per CPU) counts what could not be
//!   recorded, so that `filterd` can say so in `SKIPDATA` records.
use crate::{assert_size, pod, CtEntry, CtKey};

/// Size of `FILTER_EVENTS` in bytes (a power of two, a multiple of the page
/// size): about 32,000 conntrack events.
pub const FLOW_EVENTS_BYTES: u32 = 1 << 22;
/// Entries of `FILTER_REJECTS` (LRU: when full, the least recently used
/// flow goes; `filterd` reports its last counts, and the packets counted
/// after them in a `packets_lost` `SKIPDATA` record).
pub const MAX_REJECT_ENTRIES: u32 = 65_536;

/// A conntrack entry was created (its first packet accepted).
pub const FLOW_EV_CT_NEW: u32 = 1;
/// A conntrack entry idle past its timeout was removed by the packet that
/// found it; the event carries its final counts.
pub const FLOW_EV_CT_END: u32 = 2;
/// A tracked connection that the running generation drops was cut (SPEC
/// §3.1 revalidation); the event carries its final counts. The packet that
/// found out is accounted in `FILTER_REJECTS`.
pub const FLOW_EV_CT_CUT: u32 = 3;
/// A `FILTER_REJECTS` entry was created.
pub const FLOW_EV_REJECT_NEW: u32 = 4;

/// No rule counter slot decided the packet (a later fragment whose first
/// fragment was never seen): the record's `rule_id` is `-`.
pub const RULE_SLOT_NONE: u32 = u32::MAX;

/// `FILTER_REJECTS` key: one flow in the packet's own orientation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RejectKey {
    pub ifindex: u32,
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    /// IANA protocol number.
    pub proto: u8,
    /// ENI direction (`DIR_*`).
    pub dir: u8,
    /// `ACTION_DROP`, or `ACTION_ACCEPT` for an accepted packet that made
    /// no connection.
    pub action: u8,
    /// IPv4 in the first four bytes, the rest zero.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// The conntrack ports (transport ports, the echo id in both for ICMP
    /// echo, 0 otherwise); host order.
    pub sport: u16,
    pub dport: u16,
}
assert_size!(RejectKey, 44);

/// `FILTER_REJECTS` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RejectEntry {
    /// `bpf_ktime_get_ns` of the first and the latest packet.
    pub first_ns: u64,
    pub last_ns: u64,
    pub packets: u64,
    /// IP-layer bytes.
    pub bytes: u64,
    /// Counter slot of the rule (or default, or NACL entry) that decided
    /// the latest packet; [`RULE_SLOT_NONE`] for none.
    pub rule_slot: u32,
    /// The generation that decided the latest packet.
    pub generation: u32,
    /// OR of the TCP flags seen (SPEC §7 bit values).
    pub tcp_flags: u8,
    pub _pad: [u8; 7],
}
assert_size!(RejectEntry, 48);

/// A conntrack event ([`FLOW_EV_CT_NEW`], [`FLOW_EV_CT_END`],
/// [`FLOW_EV_CT_CUT`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEvent {
    pub kind: u32,
    /// `EniConfig::eni_index` of the ENI the packet was on.
    pub eni_index: u32,
    pub key: CtKey,
    pub _pad: u32,
    /// The entry as created, or as it was when removed.
    pub entry: CtEntry,
}
assert_size!(CtEvent, 152);

/// A [`FLOW_EV_REJECT_NEW`] event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RejectEvent {
    pub kind: u32,
    pub eni_index: u32,
    pub key: RejectKey,
    pub _pad: u32,
    pub entry: RejectEntry,
}
assert_size!(RejectEvent, 104);

/// `FILTER_FLOWLOSS[eni_index]` (per CPU): what the data plane could not
/// record for one ENI.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowLoss {
    /// Events that found `FILTER_EVENTS` full.
    pub events: u64,
    /// Packets accounted to no flow: `FILTER_REJECTS` or `FILTER_CT` refused
    /// the new entry.
    pub packets: u64,
    /// Packets counted into a `FILTER_REJECTS` entry, bumped after the
    /// entry's counters. Not a loss: what `filterd` compares the entries it
    /// read with, so the packets of an entry the LRU evicted before it was
    /// read are counted exactly (`docs/FLOWLOGS.md`, "Evicted rejects").
    pub rejected: u64,
}
assert_size!(FlowLoss, 24);

pod!(RejectKey, RejectEntry, CtEvent, RejectEvent, FlowLoss);
