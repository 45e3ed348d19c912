//! Connection tracking (SPEC §3.1, ARCHITECTURE.md "Connection tracking").
//!
//! One LRU hash, `FILTER_CT`, keyed by interface, family, protocol and the
//! two endpoints in a fixed order so both directions meet in one entry. An
//! entry exists only for connections whose first packet was accepted; an
//! idle entry past its state's timeout counts as absent.
use core::ptr::{addr_of, addr_of_mut, NonNull};

use aya_ebpf::bindings::BPF_NOEXIST;
use filter_common::{
    ct_fin_flag, is_echo_reply_type, CtEntry, CtKey, GenConfig, CT_FLAG_ECHO, CT_FLAG_FIN_BOTH,
    CT_ICMP, CT_OTHER, CT_TCP_CLOSING, CT_TCP_ESTABLISHED, CT_TCP_SYN, CT_UDP, CT_UDP_STREAM,
    CT_WAYS, DIR_EGRESS, FAMILY_V6, FLOW_EV_CT_END, PROTO_TCP, PROTO_UDP, RULE_SLOT_NONE,
};

use crate::{
    flowlog,
    maps::{FILTER_CONFIG, FILTER_CT},
    parse::{is_icmp_echo, is_icmp_error, Parsed},
    words,
};

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// The settings of generation slot `slot`.
#[inline(always)]
pub fn config(slot: u32) -> Option<&'static GenConfig> {
    FILTER_CONFIG.get(slot)
}

/// Conntrack ports of a packet: the transport ports, the echo identifier in
/// both for an ICMP echo request or reply (so the reply, whose id is the
/// same, meets the request), and 0 for everything else.
#[inline(always)]
pub fn ct_ports(p: &Parsed) -> (u16, u16) {
    if p.is_icmp != 0 {
        if is_icmp_echo(p.flow.family, p.icmp_type) {
            (p.icmp_id, p.icmp_id)
        } else {
            (0, 0)
        }
    } else {
        // Parsing left them 0 for protocols without ports.
        (p.flow.sport, p.flow.dport)
    }
}

/// Builds the key of the connection `(src, sport) → (dst, dport)`. The
/// smaller endpoint, comparing the address as a big-endian number then the
/// port, is `a`, so both directions build the same key. Returns whether the
/// source is endpoint `a`.
#[inline(always)]
pub fn make_key(key: &mut CtKey, src: &[u8; 16], sport: u16, dst: &[u8; 16], dport: u16) -> bool {
    // u128 comparisons compile to two 64-bit compares; no memcmp call.
    let s = u128::from_be_bytes(*src);
    let d = u128::from_be_bytes(*dst);
    let src_is_a = s < d || (s == d && sport <= dport);
    let ports = if src_is_a {
        key.addr_a = *src;
        key.addr_b = *dst;
        words::pair(sport, dport)
    } else {
        key.addr_a = *dst;
        key.addr_b = *src;
        words::pair(dport, sport)
    };
    // SAFETY: `port_a`, `port_b`: the key's last four bytes, 4-aligned (the
    // key starts with a u32 and is 44 bytes long). One word: `words.rs`.
    unsafe { words::store(addr_of_mut!(key.port_a).cast(), ports) };
    src_is_a
}

/// Starts `key` for interface `ifindex`, `family` and IANA `proto`; the
/// endpoints come from [`make_key`].
#[inline(always)]
pub fn set_head(key: &mut CtKey, ifindex: u32, family: u8, proto: u8) {
    key.ifindex = ifindex;
    // SAFETY: `family`, `proto`, `_pad`: the key's bytes 4..8, 4-aligned.
    // One word: `words.rs`.
    unsafe { words::store(addr_of_mut!(key.family), [family, proto, 0, 0]) };
}

/// The entry for `key`, live or not. A lookup without side effects, so the
/// pipeline can make it before the ENI lookup (the established fast path)
/// and judge it later with [`live`].
#[inline(always)]
pub fn find(key: &CtKey) -> Option<NonNull<CtEntry>> {
    NonNull::new(FILTER_CT.get_ptr_mut(key)?)
}

/// Whether entry `e` has been idle past its state's timeout under the
/// running generation's settings.
#[inline(always)]
fn expired(e: NonNull<CtEntry>, now: u64, cfg: Option<&GenConfig>) -> bool {
    // SAFETY: a live map value; LRU values stay mapped while the program
    // runs (RCU), even if another CPU evicts the entry meanwhile.
    let (state, last_seen) = unsafe { ((*e.as_ptr()).state, (*e.as_ptr()).last_seen_ns) };
    // Saturating: another CPU may have stamped a later `now` than ours.
    now.saturating_sub(last_seen) > GenConfig::timeout_ns(cfg, state)
}

/// `found` (the [`find`] of `key`) if it is live: not idle past its
/// timeout. An expired entry is deleted, so the packet is classified as a
/// first packet (SPEC §3.1 "Idle entries expire"); its final counts go to
/// the flow log first (`FLOW_EV_CT_END`, on ENI `eni_index`).
#[inline(always)]
pub fn live(
    found: Option<NonNull<CtEntry>>,
    key: &CtKey,
    now: u64,
    cfg: Option<&GenConfig>,
    eni_index: u32,
) -> Option<NonNull<CtEntry>> {
    let e = found?;
    if expired(e, now, cfg) {
        flowlog::ct_event(FLOW_EV_CT_END, eni_index, key, e.as_ptr());
        let _ = FILTER_CT.remove(key);
        return None;
    }
    Some(e)
}

/// [`find`], then [`live`].
#[inline(always)]
pub fn lookup(
    key: &CtKey,
    now: u64,
    cfg: Option<&GenConfig>,
    eni_index: u32,
) -> Option<NonNull<CtEntry>> {
    live(find(key), key, now, cfg, eni_index)
}

/// The index into `CtEntry::fast_generation` and `nacl_slot` of a packet
/// seen by `hook` (`pipeline::HOOK_*`: 0 or 1) travelling in the `reply`
/// orientation or not.
#[inline(always)]
pub fn way(hook: u8, reply: bool) -> usize {
    usize::from(hook & 1) * 2 + usize::from(reply)
}

/// The fast path (ARCHITECTURE.md, "Established fast path"): when entry
/// `e` alone decides a packet that meets it `way` ([`way`]), the counter
/// slot of the NACL entry that accepts that way (`RULE_SLOT_NONE` for
/// none). That is: the full pipeline accepted a packet the same way under
/// the running `generation`, and the entry is live. Such a packet would
/// meet the same ENI direction and remote endpoint, so the same NACL
/// verdict, the tracked connection and no revalidation: accept (tracked)
/// either way. An entry that fails this goes the full way, where its
/// expiry is handled.
#[inline(always)]
pub fn fast_nacl_slot(
    e: NonNull<CtEntry>,
    way: usize,
    generation: u32,
    now: u64,
    cfg: Option<&GenConfig>,
) -> Option<u32> {
    if way >= CT_WAYS {
        return None;
    }
    let p = e.as_ptr();
    // SAFETY: a live map value, and `way` is within both arrays.
    let (fast, slot) = unsafe {
        (
            *addr_of!((*p).fast_generation).cast::<u32>().add(way),
            *addr_of!((*p).nacl_slot).cast::<u32>().add(way),
        )
    };
    if fast != generation || generation == 0 || expired(e, now, cfg) {
        return None;
    }
    Some(slot)
}

/// Records that the full pipeline accepted a packet that met entry `e`
/// `way` ([`way`]) under `generation` (the entry's own, after any
/// revalidation), its NACL counting into `nacl_slot`: the next packet that
/// way may take the fast path. Written only when it changes.
///
/// The slot is stored before the generation. Any writer of one generation
/// and way writes the same slot (the NACL's verdict is a function of
/// them), so a reader that sees the generation sees its slot; a store
/// reordered on a weakly ordered machine could at worst count one packet
/// to the previous generation's slot, never change a verdict.
#[inline(always)]
pub fn stamp_fast(e: NonNull<CtEntry>, way: usize, generation: u32, nacl_slot: u32) {
    if way >= CT_WAYS {
        return;
    }
    let p = e.as_ptr();
    // SAFETY: a live map value, and `way` is within both arrays. Plain
    // stores: racing writers of one generation and way write the same.
    unsafe {
        let fast = addr_of_mut!((*p).fast_generation).cast::<u32>().add(way);
        if *fast != generation {
            *addr_of_mut!((*p).nacl_slot).cast::<u32>().add(way) = nacl_slot;
            *fast = generation;
        }
    }
}

/// Whether a packet whose source is endpoint `a` iff `src_is_a` travels in
/// the reply direction of entry `e`.
#[inline(always)]
pub fn is_reply(e: NonNull<CtEntry>, src_is_a: bool) -> bool {
    // SAFETY: a live map value.
    let orig_src_is_a = unsafe { (*e.as_ptr()).orig_src_is_a } != 0;
    src_is_a != orig_src_is_a
}

/// Whether entry `e` tracks a packet travelling the `reply` way (SPEC
/// §3.1): an echo entry only echo requests the original way and echo
/// replies the other (a far side's request reusing the id is a first
/// packet of its own); an entry by address pair no echo message; no entry
/// an ICMP error, which is at most related. Everything else: yes.
#[inline(always)]
pub fn meets(e: NonNull<CtEntry>, p: &Parsed, reply: bool) -> bool {
    if p.is_icmp == 0 {
        return true;
    }
    if is_icmp_error(p) {
        return false;
    }
    // SAFETY: a live map value.
    let echo_entry = unsafe { (*e.as_ptr()).ct_flags } & CT_FLAG_ECHO != 0;
    if is_icmp_echo(p.flow.family, p.icmp_type) {
        echo_entry && reply == is_echo_reply_type(p.flow.family == FAMILY_V6, p.icmp_type)
    } else {
        !echo_entry
    }
}

/// ENI direction of the first packet of the connection.
#[inline(always)]
pub fn orig_dir(e: NonNull<CtEntry>) -> u8 {
    // SAFETY: a live map value.
    unsafe { (*e.as_ptr()).orig_dir }
}

/// Generation that admitted or last revalidated the connection.
#[inline(always)]
pub fn generation(e: NonNull<CtEntry>) -> u32 {
    // SAFETY: a live map value.
    unsafe { (*e.as_ptr()).generation }
}

/// Records a revalidation (or, under `on_change: keep`, just the new
/// generation) so the next packet does not classify again.
#[inline(always)]
pub fn set_rule(e: NonNull<CtEntry>, rule_slot: u32, generation: u32) {
    // SAFETY: a live map value. Plain stores: two CPUs revalidating the same
    // connection at once write the same values.
    unsafe {
        (*e.as_ptr()).rule_slot = rule_slot;
        (*e.as_ptr()).generation = generation;
    }
}

/// Same, keeping the admitting rule.
#[inline(always)]
pub fn set_generation(e: NonNull<CtEntry>, generation: u32) {
    // SAFETY: a live map value.
    unsafe { (*e.as_ptr()).generation = generation };
}

/// Deletes the entry of `key` (a revalidation drop).
#[inline(always)]
pub fn remove(key: &CtKey) {
    let _ = FILTER_CT.remove(key);
}

/// Adds `n` to a counter other CPUs update too (the two directions of one
/// connection are often handled on different CPUs).
///
/// The BPF target has no compare-and-swap, so core's `fetch_add` does not
/// exist there; the intrinsic lowers to the BPF atomic add instruction
/// (`lock *(u64 *)(r + 0) += r`), which needs none.
#[inline(always)]
pub(crate) fn atomic_add(counter: *mut u64, n: u64) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: `counter` points into a live map value, 8-byte aligned
    // (`CtEntry`, `RejectEntry` and `RuleStats` are `repr(C)`, their u64
    // fields first).
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            counter, n,
        );
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: as above (host type-check only).
    unsafe {
        core::sync::atomic::AtomicU64::from_ptr(counter)
            .fetch_add(n, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Accounts an accepted packet of a tracked connection and moves its state:
/// an RST, or a FIN once both ways have sent one → closing (a half-closed
/// connection keeps its timeout); a SYN answered by the other side →
/// established; UDP seen both ways → stream. Without `FLOW_ACCOUNTING` (the benchmark's
/// variant, `pipeline::run`) the packet and byte counters and the flags
/// stay as they are: only the time stamp and the state move.
#[inline(always)]
pub fn update<const FLOW_ACCOUNTING: bool>(e: NonNull<CtEntry>, p: &Parsed, reply: bool, now: u64) {
    let e = e.as_ptr();
    let flags = p.tcp_flags;
    // SAFETY: a live map value. Counters use atomic adds; the state, flags
    // and timestamp are plain stores, where a lost race costs at most one
    // transition that the next packet makes again.
    unsafe {
        if FLOW_ACCOUNTING {
            account(e, p, reply);
        }
        (*e).last_seen_ns = now;
        let state = (*e).state;
        let mut fins = (*e).ct_flags;
        if p.flow.proto == PROTO_TCP && flags & TCP_FIN != 0 {
            fins |= ct_fin_flag(reply);
            if fins != (*e).ct_flags {
                (*e).ct_flags = fins;
            }
        }
        let next = match p.flow.proto {
            PROTO_TCP if flags & TCP_RST != 0 => CT_TCP_CLOSING,
            PROTO_TCP if fins & CT_FLAG_FIN_BOTH == CT_FLAG_FIN_BOTH => CT_TCP_CLOSING,
            PROTO_TCP if state == CT_TCP_SYN && reply => CT_TCP_ESTABLISHED,
            PROTO_UDP if state == CT_UDP && reply => CT_UDP_STREAM,
            _ => state,
        };
        if next != state {
            (*e).state = next;
        }
    }
}

/// The flow log's share of [`update`]: packets and bytes per direction, and
/// the TCP flags seen, overall and per direction.
///
/// # Safety
/// `e` points at a live conntrack map value.
#[inline(always)]
unsafe fn account(e: *mut CtEntry, p: &Parsed, reply: bool) {
    let bytes = u64::from(p.ip_len);
    let flags = p.tcp_flags;
    // SAFETY: as the caller promised.
    unsafe {
        if reply {
            atomic_add(addr_of_mut!((*e).packets[1]), 1);
            atomic_add(addr_of_mut!((*e).bytes[1]), bytes);
        } else {
            atomic_add(addr_of_mut!((*e).packets[0]), 1);
            atomic_add(addr_of_mut!((*e).bytes[0]), bytes);
        }
        if (*e).tcp_flags & flags != flags {
            (*e).tcp_flags |= flags;
        }
        // Per direction too, for the flow log's per-direction records.
        let dir_flags = if reply {
            addr_of_mut!((*e).dir_tcp_flags[1])
        } else {
            addr_of_mut!((*e).dir_tcp_flags[0])
        };
        if *dir_flags & flags != flags {
            *dir_flags |= flags;
        }
    }
}

/// Whether an accepted packet that no entry tracks opens a connection: any
/// packet but TCP, ICMP errors and echo replies, and TCP only with SYN.
/// An ICMP error or an echo reply answers something: the instance sending
/// one must not let the far side in (SPEC §3.1). A TCP segment without SYN is
/// passed or dropped by the rules like a first packet but tracked by no
/// entry: picked up mid-stream, a connection that a revalidation has just
/// cut (SPEC §3.1) would come back in the other orientation as soon as
/// its other end sends (a server retransmitting, with egress open by
/// default), its packets then "replies".
#[inline(always)]
pub fn opens(p: &Parsed) -> bool {
    if p.is_icmp != 0 {
        let echo_reply = is_icmp_echo(p.flow.family, p.icmp_type)
            && is_echo_reply_type(p.flow.family == FAMILY_V6, p.icmp_type);
        return !(is_icmp_error(p) || echo_reply);
    }
    p.flow.proto != PROTO_TCP || p.tcp_flags & TCP_SYN != 0
}

/// State of a new connection from its accepted first packet.
#[inline(always)]
fn first_state(p: &Parsed) -> u8 {
    match p.flow.proto {
        PROTO_TCP => {
            let f = p.tcp_flags;
            if f & TCP_RST != 0 {
                // Already closing: keep it for `tcp_closing_s`, not 910 s.
                // A FIN is half a close ([`update`]).
                CT_TCP_CLOSING
            } else if f & (TCP_SYN | TCP_ACK) == TCP_SYN {
                CT_TCP_SYN
            } else {
                // A SYN-ACK whose SYN is no longer tracked (evicted,
                // expired): the rules accepted it, so it is established.
                CT_TCP_ESTABLISHED
            }
        }
        PROTO_UDP => CT_UDP,
        _ if p.is_icmp != 0 => CT_ICMP,
        _ => CT_OTHER,
    }
}

/// What admitted a new connection's first packet.
#[derive(Clone, Copy)]
pub struct Admission {
    /// The security-group rule (or default) that accepted it.
    pub rule_slot: u32,
    /// The running generation.
    pub generation: u32,
    /// The NACL entry that accepted it (`RULE_SLOT_NONE`: none).
    pub nacl_slot: u32,
    /// Its [`way`]: which hook saw it (the orientation is the original).
    pub way: usize,
}

/// Fills `entry` for a connection whose first packet was accepted (after
/// the egress NACL too), recording the admitting rule and generation. The
/// first packet's way may take the fast path at once ([`stamp_fast`]); the
/// others' NACL verdicts are not known until a packet has gone the full
/// way.
#[inline(always)]
pub fn init(
    entry: &mut CtEntry,
    src_is_a: bool,
    p: &Parsed,
    dir: u8,
    admission: Admission,
    now: u64,
) {
    entry.created_ns = now;
    entry.last_seen_ns = now;
    entry.packets = [1, 0];
    entry.bytes = [u64::from(p.ip_len), 0];
    entry.rule_slot = admission.rule_slot;
    entry.generation = admission.generation;
    entry.fast_generation = [0; CT_WAYS];
    entry.nacl_slot = [RULE_SLOT_NONE; CT_WAYS];
    if let (Some(fast), Some(slot)) = (
        entry.fast_generation.get_mut(admission.way),
        entry.nacl_slot.get_mut(admission.way),
    ) {
        *fast = admission.generation;
        *slot = admission.nacl_slot;
    }
    entry.state = first_state(p);
    entry.orig_dir = if dir == DIR_EGRESS { DIR_EGRESS } else { 0 };
    entry.orig_src_is_a = u8::from(src_is_a);
    entry.tcp_flags = p.tcp_flags;
    entry.dir_tcp_flags = [p.tcp_flags, 0];
    entry.ct_flags = if p.flow.proto == PROTO_TCP && p.tcp_flags & TCP_FIN != 0 {
        ct_fin_flag(false)
    } else if p.is_icmp != 0 && is_icmp_echo(p.flow.family, p.icmp_type) {
        // `opens` lets only requests open an echo entry.
        CT_FLAG_ECHO
    } else {
        0
    };
    entry._pad = 0;
}

/// Inserts a new connection's entry (made by [`init`]); false when it
/// could not be inserted: another CPU created the same connection a moment
/// ago (its entry is kept, not overwritten: `BPF_NOEXIST`), or the table
/// refused it. On a full table the LRU evicts the least recently used
/// entry first.
#[inline(always)]
pub fn insert(key: &CtKey, entry: &CtEntry) -> bool {
    FILTER_CT.insert(key, entry, u64::from(BPF_NOEXIST)).is_ok()
}
