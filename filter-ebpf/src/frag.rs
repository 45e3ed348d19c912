//! Fragments (SPEC §3.1): the first fragment of a datagram is classified
//! with its ports; its final verdict is remembered in `FILTER_FRAGS` under
//! the datagram's identity, and later fragments (which carry no ports) follow
//! it. A later fragment with no remembered first fragment drops.
use filter_common::{FragEntry, FragKey};

use crate::{maps::FILTER_FRAGS, parse::Parsed};

/// How long a first fragment's verdict stays usable. Reassembly gives up
/// after 60 s at most (RFC 8200 §4.5; Linux's ipfrag_time is 30 s), so an
/// older entry belongs to an earlier datagram that happened to reuse the id.
const FRAG_TIMEOUT_NS: u64 = 60 * 1_000_000_000;

/// The datagram a fragment belongs to, on this interface. Source and
/// destination are not ordered: the fragments of one datagram all travel
/// the same way.
#[inline(always)]
pub fn key(ifindex: u32, p: &Parsed) -> FragKey {
    FragKey {
        ifindex,
        family: p.flow.family,
        proto: p.frag_proto,
        _pad: 0,
        id: p.frag_id,
        src: p.flow.src,
        dst: p.flow.dst,
    }
}

/// The verdict of the datagram's first fragment, if it was seen recently.
#[inline(always)]
pub fn follow(key: &FragKey, now: u64) -> Option<FragEntry> {
    let e = FILTER_FRAGS.get_ptr(key)?;
    // SAFETY: a live map value, copied out.
    let e = unsafe { *e };
    if now.saturating_sub(e.seen_ns) > FRAG_TIMEOUT_NS {
        return None;
    }
    Some(e)
}

/// Remembers the final verdict of a first fragment, with its conntrack
/// ports (transport ports or echo id) so that later fragments count to the
/// same connection.
#[inline(always)]
pub fn remember(key: &FragKey, sport: u16, dport: u16, action: u32, rule_slot: u32, now: u64) {
    let entry = FragEntry {
        seen_ns: now,
        rule_slot,
        sport,
        dport,
        action,
        _pad: 0,
    };
    // LRU: a full table forgets the oldest datagrams, whose later fragments
    // then drop as headless; never one that a rule would drop gets through.
    let _ = FILTER_FRAGS.insert(key, entry, 0);
}
