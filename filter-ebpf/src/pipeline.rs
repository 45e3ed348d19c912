//! The order of SPEC §3 for one packet (ARCHITECTURE.md "Pipeline"):
//!
//! ```text
//! gen = FILTER_ACTIVE[0]; slot = gen & 1
//! parse                        malformed → drop (STAT_DROP_<reason>)
//! not IP                       → pass (STAT_PASS_NON_IP)
//! IPv6 ND (ICMPv6 133–137)     → pass (STAT_PASS_ND)
//! not a fragment, conntrack entry that the full pipeline accepted a packet
//!   of under this generation on this hook in this orientation, live
//!                              → accept (tracked): the established fast path
//! ENI = FILTER_ENIS_DIRECT[slot, if] (small if) or FILTER_ENIS[slot, if]
//!                              none → pass (STAT_PASS_UNGUARDED)
//! direction from hook × mode; remote = src on ingress, dst on egress
//! later fragment               → the first fragment's verdict
//! ingress: NACL                drop → STAT_DROP_NACL
//! conntrack hit                → revalidate if the generation changed → accept (tracked)
//! ICMP error about a tracked connection → accept (related)
//! security groups              drop → STAT_DROP_SG_RULE / STAT_DROP_DEFAULT
//! egress: NACL (every packet, tracked ones too: it is stateless)
//! accept → create or update the conntrack entry; first fragment → remember the verdict
//! guarded ENI, not in a conntrack entry → its FILTER_REJECTS flow (flow logs)
//! ```
//!
//! Every packet ends in exactly one `FILTER_STATS` counter and, when a rule,
//! a default or a fixed reason decided it, one `FILTER_RSTATS` slot (plus the
//! slot of a NACL entry that accepted it on the way). Every packet on a
//! guarded ENI is also accounted to exactly one flow for the flow log
//! (`flowlog.rs`): its conntrack entry, or else its `FILTER_REJECTS` entry.
use core::ptr::{addr_of_mut, NonNull};

use filter_common::{
    eni_direct_index, generation_slot, CtEntry, CtKey, EniConfig, EniKey, RejectEntry, RejectKey,
    ACTION_ACCEPT, ACTION_DROP, DIR_EGRESS, DIR_INGRESS, ENI_DIRECT_IFINDEXES, FLOW_EV_CT_CUT,
    FLOW_EV_CT_NEW, ID_NONE, MODE_NIC, ON_CHANGE_REVALIDATE, RULE_SLOT_NONE, RULE_SLOT_PASS,
    RULE_SLOT_TRACKED, STAT_ACCEPT_FRAGMENT, STAT_ACCEPT_NEW, STAT_ACCEPT_RELATED,
    STAT_ACCEPT_TRACKED, STAT_DROP_DEFAULT, STAT_DROP_FRAGMENT, STAT_DROP_FRAG_NO_HEAD,
    STAT_DROP_NACL, STAT_DROP_REVALIDATE, STAT_DROP_SG_RULE, STAT_PASS_ND, STAT_PASS_NON_IP,
    STAT_PASS_UNGUARDED,
};

use crate::{
    classify::{classify, Verdict, VERDICT_ACCEPT, VERDICT_DROP, VERDICT_SKIP},
    clock, conntrack, flowlog, frag,
    frame::Frame,
    maps::{FILTER_ACTIVE, FILTER_ENIS, FILTER_ENIS_DIRECT, FILTER_SCRATCH},
    parse::{
        is_icmp_error, is_neighbour_discovery, parse, parse_icmp_inner, Flow, Parsed, FRAG_FIRST,
        FRAG_LATER, FRAG_NONE, PARSE_OK,
    },
    stats::{count, count_rule},
    words,
};

/// The program sees the interface's ingress (XDP or tcx ingress).
pub const HOOK_INGRESS: u8 = 0;
/// The program sees the interface's egress (tcx egress).
pub const HOOK_EGRESS: u8 = 1;

/// No rule counter: malformed packets and headless fragments are counted in
/// `FILTER_STATS` only (no rule, default or fixed reason decided them).
const NO_SLOT: u32 = RULE_SLOT_NONE;

/// How a packet leaves the pipeline.
#[repr(C)]
#[derive(Clone, Copy)]
struct Decision {
    /// 1 to let the packet through.
    accept: u32,
    /// `STAT_*` reason.
    stat: u32,
    /// `FILTER_RSTATS` slot, or `NO_SLOT`.
    slot: u32,
}

impl Decision {
    #[inline(always)]
    fn accept(stat: u32, slot: u32) -> Self {
        Self {
            accept: 1,
            stat,
            slot,
        }
    }

    #[inline(always)]
    fn drop(stat: u32, slot: u32) -> Self {
        Self {
            accept: 0,
            stat,
            slot,
        }
    }
}

/// What the stages know about the packet, kept in one object so the
/// BPF-to-BPF calls below pass one pointer (BPF calls take at most 5 args).
/// It lives in the per-CPU `FILTER_SCRATCH`, not on the stack.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Packet {
    now: u64,
    /// The running generation, read once.
    generation: u32,
    /// Its map slot.
    slot: u32,
    ifindex: u32,
    /// `HOOK_*`.
    hook: u8,
    /// ENI direction (`DIR_*`).
    dir: u8,
    /// 1 once `FILTER_ENIS` named the interface: the packet belongs in the
    /// flow log.
    guarded: u8,
    /// 1 once the packet is accounted to a conntrack entry (flow logs).
    ct_accounted: u8,
    /// 1 when the packet's source is endpoint `a` of `key`.
    src_is_a: u8,
    /// The NACL entry that accepted the packet, or `NO_SLOT` (no NACL, or
    /// the vSwitch skips it): what the conntrack entry remembers for the
    /// fast path.
    nacl_slot: u32,
    /// The packet's conntrack ports (a later fragment's: its first
    /// fragment's), for its `FILTER_REJECTS` key.
    sport: u16,
    dport: u16,
    eni: EniConfig,
    p: Parsed,
    /// The packet's conntrack key.
    key: CtKey,
    /// A second key: the connection an ICMP error quotes.
    aux_key: CtKey,
    /// A second flow: the one an ICMP error quotes, or the packet turned
    /// into its connection's original orientation (revalidation).
    aux_flow: Flow,
    /// The verdict of the security groups (first packet or revalidation).
    v: Verdict,
    /// The verdict of the vSwitch's NACL (`VERDICT_SKIP`: none).
    nacl: Verdict,
    /// Flow-log scratch: a new connection's entry, and the key and first
    /// entry of a packet's `FILTER_REJECTS` flow.
    ct_new: CtEntry,
    rkey: RejectKey,
    rentry: RejectEntry,
}

/// Runs the pipeline on one packet; true lets it through.
///
/// `FLOW_ACCOUNTING` is true in the data plane. False leaves out the
/// per-packet flow-log accounting (the counters and flags of a packet's
/// conntrack entry, and its `FILTER_REJECTS` flow); only the benchmark's
/// `unaccounted.rs` programs do that, to measure what the accounting costs.
#[inline(always)]
pub fn run<F: Frame, const FLOW_ACCOUNTING: bool>(f: F, hook: u8, ifindex: u32) -> bool {
    let Some(c) = FILTER_SCRATCH.get_ptr_mut(0) else {
        // Unreachable (a one-entry per-CPU array always has entry 0); fail
        // closed all the same.
        return false;
    };
    // SAFETY: this CPU's scratch entry, which nothing else uses while the
    // program runs. It still holds the previous packet: the fields below are
    // reset here, the others are written before they are read.
    let c = unsafe { &mut *c };
    // One tick of resolution (`clock.rs`): timeouts are seconds, flow-log
    // windows are seconds.
    let now = clock::now();
    // Read once: the packet uses this generation's slot for every lookup, so
    // it sees the old rules or the new ones, never a mix. Never written
    // reads as generation 0.
    let generation = FILTER_ACTIVE.get(0).copied().unwrap_or(0);
    c.now = now;
    c.generation = generation;
    c.slot = generation_slot(generation);
    c.ifindex = ifindex;
    c.hook = hook;
    c.dir = DIR_INGRESS;
    c.guarded = 0;
    c.ct_accounted = 0;
    c.src_is_a = 0;
    c.nacl_slot = NO_SLOT;
    c.sport = 0;
    c.dport = 0;
    c.p = Parsed::default();
    // Fail closed: every path below overwrites this.
    let mut d = Decision::drop(STAT_DROP_DEFAULT, NO_SLOT);
    process::<F, FLOW_ACCOUNTING>(f, c, &mut d);
    count(d.stat);
    if d.slot != NO_SLOT {
        count_rule(d.slot, c.p.ip_len, c.now);
    }
    // Flow logs: a packet on a guarded ENI that no conntrack entry took
    // (rejected, related, or its connection could not be stored).
    if FLOW_ACCOUNTING && c.guarded != 0 && c.ct_accounted == 0 {
        account_untracked(c, &d);
    }
    d.accept != 0
}

/// Accounts a packet that is in no conntrack entry to its `FILTER_REJECTS`
/// flow: the flow in the packet's orientation, direction and action.
#[inline(always)]
fn account_untracked(c: &mut Packet, d: &Decision) {
    c.rkey.ifindex = c.ifindex;
    // A later fragment counts to the flow of its first fragment, whose
    // `FragKey` protocol it shares.
    let proto = if c.p.frag == FRAG_LATER {
        c.p.frag_proto
    } else {
        c.p.flow.proto
    };
    let action = if d.accept != 0 {
        ACTION_ACCEPT
    } else {
        ACTION_DROP
    };
    c.rkey.src = c.p.flow.src;
    c.rkey.dst = c.p.flow.dst;
    // SAFETY: `family`, `proto`, `dir`, `action` are the key's bytes 4..8,
    // `sport`, `dport` its last four (it starts with a u32 and is 44 bytes
    // long): 4-aligned. One word each: `words.rs`.
    unsafe {
        words::store(
            addr_of_mut!(c.rkey.family),
            [c.p.flow.family, proto, c.dir, action],
        );
        words::store(
            addr_of_mut!(c.rkey.sport).cast(),
            words::pair(c.sport, c.dport),
        );
    }
    let packet = flowlog::RejectPacket {
        now: c.now,
        bytes: u64::from(c.p.ip_len),
        rule_slot: d.slot,
        generation: c.generation,
        tcp_flags: c.p.tcp_flags,
    };
    flowlog::account_reject(&c.rkey, &mut c.rentry, packet, c.eni.eni_index);
}

#[inline(always)]
fn process<F: Frame, const FLOW_ACCOUNTING: bool>(f: F, c: &mut Packet, d: &mut Decision) {
    let rc = parse(f, &mut c.p);
    if rc != PARSE_OK {
        *d = Decision::drop(rc, NO_SLOT);
        return;
    }
    // SPEC §3 step 1: ARP and friends, and neighbour discovery, pass: without
    // them no address would ever resolve.
    if c.p.flow.family == 0 {
        *d = Decision::accept(STAT_PASS_NON_IP, RULE_SLOT_PASS);
        return;
    }
    if is_neighbour_discovery(&c.p) {
        *d = Decision::accept(STAT_PASS_ND, RULE_SLOT_PASS);
        return;
    }
    // The conntrack entry, before the ENI lookup: an established packet
    // that meets its entry the way the full pipeline has accepted one under
    // this generation needs nothing else (ARCHITECTURE.md, "Established
    // fast path"). A later fragment has no ports, so no key.
    let mut found = None;
    if c.p.frag != FRAG_LATER {
        let (sport, dport) = conntrack::ct_ports(&c.p);
        c.sport = sport;
        c.dport = dport;
        let src_is_a = set_key(c, c.p.flow.proto, sport, dport);
        c.src_is_a = u8::from(src_is_a);
        found = conntrack::find(&c.key);
        // A first fragment goes the full way: its verdict is remembered for
        // the later fragments.
        if let (Some(e), FRAG_NONE) = (found, c.p.frag) {
            let reply = conntrack::is_reply(e, src_is_a);
            let cfg = conntrack::config(c.slot);
            let way = conntrack::way(c.hook, reply);
            let fast = conntrack::meets(e, &c.p, reply)
                .then(|| conntrack::fast_nacl_slot(e, way, c.generation, c.now, cfg))
                .flatten();
            if let Some(nacl_slot) = fast {
                if nacl_slot != NO_SLOT {
                    count_rule(nacl_slot, c.p.ip_len, c.now);
                }
                conntrack::update::<FLOW_ACCOUNTING>(e, &c.p, reply, c.now);
                c.guarded = 1;
                c.ct_accounted = 1;
                *d = Decision::accept(STAT_ACCEPT_TRACKED, RULE_SLOT_TRACKED);
                return;
            }
        }
    }

    let Some(eni) = find_eni(c.slot, c.ifindex) else {
        // Not an ENI of the running generation: not ours to filter.
        *d = Decision::accept(STAT_PASS_UNGUARDED, RULE_SLOT_PASS);
        return;
    };
    c.eni = eni;
    c.dir = direction(c.hook, c.eni.mode);
    c.guarded = 1;

    if c.p.frag == FRAG_LATER {
        follow_fragment::<FLOW_ACCOUNTING>(c, d);
        return;
    }
    decide::<F, FLOW_ACCOUNTING>(f, c, d, found);
    if c.p.frag == FRAG_FIRST {
        let action = if d.accept != 0 {
            VERDICT_ACCEPT
        } else {
            VERDICT_DROP
        };
        frag::remember(
            &frag::key(c.ifindex, &c.p),
            c.sport,
            c.dport,
            action,
            d.slot,
            c.now,
        );
    }
}

/// The ENI on interface `ifindex` in generation slot `slot`. Interfaces
/// below `ENI_DIRECT_IFINDEXES` (nearly all) are an array read; the writer
/// puts every ENI of such an interface there, so a miss is final.
#[inline(always)]
fn find_eni(slot: u32, ifindex: u32) -> Option<EniConfig> {
    if ifindex < ENI_DIRECT_IFINDEXES {
        let eni = FILTER_ENIS_DIRECT.get(eni_direct_index(slot, ifindex))?;
        return (eni.live != 0).then_some(*eni);
    }
    FILTER_ENIS
        .get_ptr(EniKey { slot, ifindex })
        // SAFETY: a live map value, copied.
        .map(|eni| unsafe { *eni })
}

/// Makes `c.key` the conntrack key of the packet's addresses with `proto`
/// and the given conntrack ports; returns whether the source is endpoint
/// `a`.
#[inline(always)]
fn set_key(c: &mut Packet, proto: u8, sport: u16, dport: u16) -> bool {
    conntrack::set_head(&mut c.key, c.ifindex, c.p.flow.family, proto);
    conntrack::make_key(&mut c.key, &c.p.flow.src, sport, &c.p.flow.dst, dport)
}

/// ENI direction (SPEC §2.4): the ingress hook (XDP or tcx ingress) sees
/// what arrives on the interface, tcx egress what leaves it. On a tap that is the instance sending (egress) and
/// receiving (ingress); on the instance's own NIC it is the other way round.
/// An unknown mode is treated as `tap`, the default.
#[inline(always)]
fn direction(hook: u8, mode: u8) -> u8 {
    if (hook == HOOK_INGRESS) == (mode == MODE_NIC) {
        DIR_INGRESS
    } else {
        DIR_EGRESS
    }
}

/// The per-direction entry of an ENI's table array, without an index that
/// could panic.
#[inline(always)]
fn pick(tables: &[u32; 2], dir: u8) -> u32 {
    if dir == DIR_EGRESS {
        tables[1]
    } else {
        tables[0]
    }
}

/// A later fragment carries no ports: it follows the verdict of its first
/// fragment, and counts to the same rule (and connection).
#[inline(never)]
fn follow_fragment<const FLOW_ACCOUNTING: bool>(c: &mut Packet, d: &mut Decision) {
    let Some(head) = frag::follow(&frag::key(c.ifindex, &c.p), c.now) else {
        // The first fragment was never classified (lost, reordered, or the
        // memory is full): nothing says these bytes are allowed.
        *d = Decision::drop(STAT_DROP_FRAG_NO_HEAD, NO_SLOT);
        return;
    };
    // Rejected or accepted, the fragment's flow is its first fragment's.
    c.sport = head.sport;
    c.dport = head.dport;
    if head.action != VERDICT_ACCEPT {
        *d = Decision::drop(STAT_DROP_FRAGMENT, head.rule_slot);
        return;
    }
    *d = Decision::accept(STAT_ACCEPT_FRAGMENT, head.rule_slot);
    // Count the bytes to the connection the first fragment belongs to, so
    // its counters stay exact for fragmented datagrams.
    let src_is_a = set_key(c, c.p.frag_proto, head.sport, head.dport);
    if let Some(e) = conntrack::lookup(&c.key, c.now, conntrack::config(c.slot), c.eni.eni_index) {
        let reply = conntrack::is_reply(e, src_is_a);
        conntrack::update::<FLOW_ACCOUNTING>(e, &c.p, reply, c.now);
        c.ct_accounted = 1;
    }
}

/// The NACL of the ENI's vSwitch in the packet's direction (SPEC §3 step 3),
/// classified into `c.nacl`; [`nacl_drops`] applies it at its place in the
/// order.
///
/// One classification for both directions, before the order branches: the
/// NACL is stateless, so its verdict depends on the packet alone, and a
/// single call site keeps the verifier's work in bounds (it checks
/// `classify` again for every distinct state that reaches a call).
#[inline(always)]
fn nacl_classify(c: &mut Packet) {
    let table = pick(&c.eni.nacl_table, c.dir);
    // No ACL on the vSwitch: nothing to check.
    if table == ID_NONE {
        c.nacl.action = VERDICT_SKIP;
        return;
    }
    classify(table, &c.p.flow, c.dir, &mut c.nacl);
}

/// The NACL stage, from `c.nacl`. Returns true when it drops; `c.nacl.slot`
/// then names the entry (or the ACL's default deny).
#[inline(always)]
fn nacl_drops(c: &mut Packet) -> bool {
    match c.nacl.action {
        // No ACL, or the remote address is inside the vSwitch: the compiler
        // made that the strongest entry, and traffic inside one vSwitch is
        // not filtered by its ACL.
        VERDICT_SKIP => false,
        VERDICT_ACCEPT => {
            // The entry decided this stage: it counts, whatever the security
            // groups say next.
            count_rule(c.nacl.slot, c.p.ip_len, c.now);
            c.nacl_slot = c.nacl.slot;
            false
        }
        // A drop entry, no entry matching (the ACL's default deny), or a
        // missing table: drop.
        _ => true,
    }
}

/// Everything after the ENI lookup for a packet that is not a later
/// fragment: NACL, conntrack, security groups, NACL, conntrack update.
/// `found` is the conntrack entry of `c.key`, live or not.
///
/// In line: its one call site cost a return (the SRSO thunk) on every
/// first packet, and the verifier's budget has room for it
/// (ARCHITECTURE.md, "Verifier budget and calls").
#[inline(always)]
fn decide<F: Frame, const FLOW_ACCOUNTING: bool>(
    f: F,
    c: &mut Packet,
    d: &mut Decision,
    found: Option<NonNull<CtEntry>>,
) {
    // SPEC §3 step 2: on ingress the NACL comes before the security groups.
    nacl_classify(c);
    if c.dir == DIR_INGRESS && nacl_drops(c) {
        *d = Decision::drop(STAT_DROP_NACL, c.nacl.slot);
        return;
    }

    let cfg = conntrack::config(c.slot);
    let src_is_a = c.src_is_a != 0;

    // SPEC §3 step 4: a packet of a tracked connection, either direction,
    // skips the security groups...
    // An entry the packet does not meet (an echo request the reply way, an
    // ICMP error) leaves it a first packet.
    let tracked = conntrack::live(found, &c.key, c.now, cfg, c.eni.eni_index)
        .filter(|e| conntrack::meets(*e, &c.p, conntrack::is_reply(*e, src_is_a)));
    let mut reply = false;
    if let Some(e) = tracked {
        reply = conntrack::is_reply(e, src_is_a);
        if conntrack::generation(e) != c.generation {
            // ...unless the rules changed since it was admitted: SPEC §3.1
            // "rule changes reach existing connections".
            let on_change = cfg.map_or(ON_CHANGE_REVALIDATE, |g| g.on_change);
            if on_change == ON_CHANGE_REVALIDATE {
                revalidate(c, e, reply);
                if c.v.action != VERDICT_ACCEPT {
                    // The connection's last counts go to the flow log; this
                    // packet is a reject of the new rules.
                    flowlog::ct_event(FLOW_EV_CT_CUT, c.eni.eni_index, &c.key, e.as_ptr());
                    conntrack::remove(&c.key);
                    *d = Decision::drop(STAT_DROP_REVALIDATE, c.v.slot);
                    return;
                }
                conntrack::set_rule(e, c.v.slot, c.generation);
            } else {
                conntrack::set_generation(e, c.generation);
            }
        }
        *d = Decision::accept(STAT_ACCEPT_TRACKED, RULE_SLOT_TRACKED);
    } else if is_icmp_error(&c.p) && related(f, c) {
        // SPEC §3.1: an ICMP error about a tracked connection (unreachable,
        // too big, time exceeded) belongs to it.
        *d = Decision::accept(STAT_ACCEPT_RELATED, RULE_SLOT_TRACKED);
    } else {
        // SPEC §3 step 5: a first packet meets the security groups of the
        // ENI in its direction. Any drop names a rule or the default deny.
        classify(pick(&c.eni.sg_table, c.dir), &c.p.flow, c.dir, &mut c.v);
        if c.v.action != VERDICT_ACCEPT {
            let stat = if c.v.is_default != 0 {
                STAT_DROP_DEFAULT
            } else {
                STAT_DROP_SG_RULE
            };
            *d = Decision::drop(stat, c.v.slot);
            return;
        }
        *d = Decision::accept(STAT_ACCEPT_NEW, c.v.slot);
    }

    // SPEC §3 step 2: on egress the NACL comes after the security groups,
    // and being stateless it sees tracked packets too.
    if c.dir == DIR_EGRESS && nacl_drops(c) {
        *d = Decision::drop(STAT_DROP_NACL, c.nacl.slot);
        return;
    }

    // The final verdict is accept: account the connection, or create it
    // (only now, so an egress NACL drop never leaves an entry behind; and
    // only from a packet that opens one: no TCP pickup mid-stream).
    if let Some(e) = tracked {
        conntrack::update::<FLOW_ACCOUNTING>(e, &c.p, reply, c.now);
        // The entry is of this generation now (admitted, revalidated or
        // kept): the next packet this way may take the fast path.
        conntrack::stamp_fast(e, conntrack::way(c.hook, reply), c.generation, c.nacl_slot);
        c.ct_accounted = 1;
    } else if d.stat == STAT_ACCEPT_NEW && conntrack::opens(&c.p) {
        let admission = conntrack::Admission {
            rule_slot: d.slot,
            generation: c.generation,
            nacl_slot: c.nacl_slot,
            way: conntrack::way(c.hook, false),
        };
        conntrack::init(&mut c.ct_new, src_is_a, &c.p, c.dir, admission, c.now);
        if conntrack::insert(&c.key, &c.ct_new) {
            flowlog::ct_event(FLOW_EV_CT_NEW, c.eni.eni_index, &c.key, &c.ct_new);
            c.ct_accounted = 1;
        } else if let Some(e) = conntrack::lookup(&c.key, c.now, cfg, c.eni.eni_index) {
            // Another CPU created the connection a moment ago (its other
            // direction, say): count into its entry, if it tracks the
            // packet (else the key is taken by an entry it does not meet,
            // and the packet stays untracked).
            let reply = conntrack::is_reply(e, src_is_a);
            if conntrack::meets(e, &c.p, reply) {
                conntrack::update::<FLOW_ACCOUNTING>(e, &c.p, reply, c.now);
                c.ct_accounted = 1;
            }
        }
    }
}

/// Classifies a tracked connection again under the running generation, as
/// its first packet: the original orientation and direction, against the
/// ENI's security groups for that direction. The verdict lands in `c.v`.
#[inline(always)]
fn revalidate(c: &mut Packet, e: NonNull<CtEntry>, reply: bool) {
    let dir = if conntrack::orig_dir(e) == DIR_EGRESS {
        DIR_EGRESS
    } else {
        DIR_INGRESS
    };
    c.aux_flow = c.p.flow;
    if reply {
        c.aux_flow.src = c.p.flow.dst;
        c.aux_flow.dst = c.p.flow.src;
        c.aux_flow.sport = c.p.flow.dport;
        c.aux_flow.dport = c.p.flow.sport;
    }
    classify(pick(&c.eni.sg_table, dir), &c.aux_flow, dir, &mut c.v);
}

/// Whether an ICMP error quotes a packet of a live tracked connection.
///
/// An error travels back to the source of the datagram it quotes, so the
/// quoted source must be the error's destination: a forged error naming a
/// connection between other hosts is not related.
#[inline(always)]
fn related<F: Frame>(f: F, c: &mut Packet) -> bool {
    c.aux_flow = Flow::default();
    if !parse_icmp_inner(f, &c.p, &mut c.aux_flow) {
        return false;
    }
    let inner = &c.aux_flow;
    if inner.family != c.p.flow.family
        || u128::from_ne_bytes(inner.src) != u128::from_ne_bytes(c.p.flow.dst)
    {
        return false;
    }
    conntrack::set_head(&mut c.aux_key, c.ifindex, inner.family, inner.proto);
    conntrack::make_key(
        &mut c.aux_key,
        &inner.src,
        inner.sport,
        &inner.dst,
        inner.dport,
    );
    conntrack::lookup(
        &c.aux_key,
        c.now,
        conntrack::config(c.slot),
        c.eni.eni_index,
    )
    .is_some()
}
