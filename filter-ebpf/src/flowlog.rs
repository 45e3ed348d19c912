//! Flow logs, the kernel half (SPEC §7, `docs/FLOWLOGS.md`).
//!
//! Every packet on a guarded ENI is accounted to exactly one flow entry:
//! an accepted connection's conntrack entry (`conntrack.rs`), or else a
//! `FILTER_REJECTS` entry keyed by the flow in the packet's orientation,
//! its direction and its action ([`account_reject`]). Events go to
//! `FILTER_EVENTS` only when an entry is created or removed by the data
//! plane ([`ct_event`]), never per packet; what cannot be recorded is
//! counted in `FILTER_FLOWLOSS[eni_index]`, so user space can say so.
use core::ptr::addr_of_mut;

use aya_ebpf::bindings::BPF_NOEXIST;
use filter_common::{
    CtEntry, CtEvent, CtKey, RejectEntry, RejectEvent, RejectKey, FLOW_EV_REJECT_NEW,
};

use crate::{
    conntrack::atomic_add,
    maps::{FILTER_EVENTS, FILTER_FLOWLOSS, FILTER_REJECTS},
};

/// Which `FlowLoss` counter [`tally`] bumps.
const LOST_EVENT: u32 = 0;
const LOST_PACKET: u32 = 1;
/// Not a loss: a packet counted into a `FILTER_REJECTS` entry.
const REJECTED: u32 = 2;

/// Counts one thing the flow log missed for ENI `eni_index` (or, with
/// [`REJECTED`], one packet it has in an entry). Per-CPU, so a plain
/// increment; an index past the array is ignored.
#[inline(always)]
fn tally(eni_index: u32, what: u32) {
    if let Some(l) = FILTER_FLOWLOSS.get_ptr_mut(eni_index) {
        // SAFETY: this CPU's copy of a live map value; only this CPU writes
        // it, and the program runs to completion without migrating.
        unsafe {
            if what == LOST_EVENT {
                (*l).events += 1;
            } else if what == LOST_PACKET {
                (*l).packets += 1;
            } else {
                (*l).rejected += 1;
            }
        }
    }
}

/// Sends a conntrack event (`FLOW_EV_CT_*`) with a copy of `entry`: the
/// entry as created, or its final counts just before the data plane removes
/// it. A full ring buffer is counted, never waited for.
#[inline(never)]
pub fn ct_event(kind: u32, eni_index: u32, key: &CtKey, entry: *const CtEntry) {
    let Some(mut ev) = FILTER_EVENTS.reserve::<CtEvent>(0) else {
        tally(eni_index, LOST_EVENT);
        return;
    };
    let p = ev.as_mut_ptr();
    // SAFETY: `p` points at a reserved ring-buffer record of
    // `size_of::<CtEvent>()` bytes, which we own until `submit`; every field
    // is written (the struct has no implicit padding). `entry` is a live map
    // value or this CPU's scratch.
    unsafe {
        addr_of_mut!((*p).kind).write(kind);
        addr_of_mut!((*p).eni_index).write(eni_index);
        addr_of_mut!((*p).key).write(*key);
        addr_of_mut!((*p)._pad).write(0);
        addr_of_mut!((*p).entry).write(*entry);
    }
    ev.submit(0);
}

/// Sends the [`FLOW_EV_REJECT_NEW`] event of a new `FILTER_REJECTS` entry.
#[inline(always)]
fn reject_event(key: &RejectKey, entry: &RejectEntry, eni_index: u32) {
    let Some(mut ev) = FILTER_EVENTS.reserve::<RejectEvent>(0) else {
        tally(eni_index, LOST_EVENT);
        return;
    };
    let p = ev.as_mut_ptr();
    // SAFETY: as in `ct_event`.
    unsafe {
        addr_of_mut!((*p).kind).write(FLOW_EV_REJECT_NEW);
        addr_of_mut!((*p).eni_index).write(eni_index);
        addr_of_mut!((*p).key).write(*key);
        addr_of_mut!((*p)._pad).write(0);
        addr_of_mut!((*p).entry).write(*entry);
    }
    ev.submit(0);
}

/// One packet of a `FILTER_REJECTS` flow: what [`account_reject`] adds to
/// its entry, or makes its first entry of.
#[derive(Clone, Copy)]
pub struct RejectPacket {
    /// The packet's time stamp.
    pub now: u64,
    /// IP-layer bytes.
    pub bytes: u64,
    /// Counter slot of the rule (or default, or NACL entry) that decided it.
    pub rule_slot: u32,
    /// The generation that decided it.
    pub generation: u32,
    pub tcp_flags: u8,
}

/// Adds packet `p` to an existing entry. Counters are atomic adds (several
/// CPUs may count one flow); the rest are plain stores of the latest
/// packet's values.
#[inline(always)]
fn add(e: *mut RejectEntry, p: &RejectPacket) {
    // SAFETY: a live map value (LRU values stay mapped while the program
    // runs, even if another CPU evicts the entry meanwhile).
    unsafe {
        atomic_add(addr_of_mut!((*e).packets), 1);
        atomic_add(addr_of_mut!((*e).bytes), p.bytes);
        (*e).last_ns = p.now;
        (*e).rule_slot = p.rule_slot;
        (*e).generation = p.generation;
        let flags = p.tcp_flags;
        if (*e).tcp_flags & flags != flags {
            (*e).tcp_flags |= flags;
        }
    }
}

/// Accounts a packet that belongs to no conntrack entry (rejected, or an
/// accepted ICMP error related to a connection) to its `FILTER_REJECTS`
/// flow `key`. `fresh` is scratch space for the entry its first packet
/// creates (one packet, `first_ns == last_ns == now`), written only when
/// the flow has no entry: a repeated flow's packets store nothing there.
///
/// The entry is counted before `FlowLoss::rejected`, so a reader that sees
/// the total and then reads the entries finds the packet in its entry,
/// unless the LRU evicted the entry: that difference is what `filterd`
/// reports as lost.
#[inline(always)]
pub fn account_reject(key: &RejectKey, fresh: &mut RejectEntry, p: RejectPacket, eni_index: u32) {
    if let Some(e) = FILTER_REJECTS.get_ptr_mut(key) {
        add(e, &p);
        tally(eni_index, REJECTED);
        return;
    }
    fresh.first_ns = p.now;
    fresh.last_ns = p.now;
    fresh.packets = 1;
    fresh.bytes = p.bytes;
    fresh.rule_slot = p.rule_slot;
    fresh.generation = p.generation;
    fresh.tcp_flags = p.tcp_flags;
    fresh._pad = [0; 7];
    let fresh: &RejectEntry = fresh;
    // NOEXIST: two CPUs creating the same flow at once must not overwrite
    // each other's first packet.
    if FILTER_REJECTS
        .insert(key, fresh, u64::from(BPF_NOEXIST))
        .is_ok()
    {
        tally(eni_index, REJECTED);
        reject_event(key, fresh, eni_index);
        return;
    }
    match FILTER_REJECTS.get_ptr_mut(key) {
        // The other CPU won: count into its entry.
        Some(e) => {
            add(e, &p);
            tally(eni_index, REJECTED);
        }
        // The map refused the entry (out of memory while evicting): this
        // packet is in no flow; say so.
        None => tally(eni_index, LOST_PACKET),
    }
}
