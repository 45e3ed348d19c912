//! What one map lookup costs on this kernel and CPU: benchmark only.
//!
//! `cargo xtask bench` runs these beside the empty program to measure the
//! floor that the issue's goals meet (BENCHMARKS.md, "What one lookup
//! costs"): a conntrack lookup that hits, one that misses, the two lookups
//! every dropped first packet makes (the conntrack miss, then its
//! `FILTER_REJECTS` flow), and, for comparison, a lookup in a table of our
//! own on an array map, which the verifier inlines (no call at all). Each
//! program reads a 44-byte key from the frame (`KEY_OFFSET`) and answers
//! pass for a hit, drop for a miss.
//!
//! They run on private copies of the maps (the benchmark loads the object
//! on its own).
use core::mem::size_of;

use aya_ebpf::{bindings::xdp_action, macros::map, macros::xdp, maps::Array, programs::XdpContext};
use filter_common::{CtKey, RejectKey};

use crate::maps::{FILTER_CT, FILTER_REJECTS};

/// Where the key starts: after the Ethernet header and two bytes of
/// padding, so it is 4-aligned (test runs put the frame at an aligned
/// headroom) and read as whole words, as the data plane builds its keys.
const KEY_OFFSET: usize = 16;

/// Buckets of the array table: a power of two, few, as only one key is
/// ever looked up (a real table would have as many as `FILTER_CT`).
const COST_BUCKETS: u32 = 64;
/// Keys per bucket, compared in turn.
const COST_WAYS: usize = 4;
/// A conntrack key as the 32-bit words the table hashes and compares.
const KEY_WORDS: usize = 11;

/// Odd 64-bit constants of the hash, one per key word: the first eleven
/// outputs of splitmix64 from seed 0, each with its low bit set.
const HASH_KEYS: [u64; KEY_WORDS] = [
    0xe220_a839_7b1d_cdaf,
    0x6e78_9e6a_a1b9_65f5,
    0x06c4_5d18_8009_454f,
    0xf88b_b8a8_724c_81ed,
    0x1b39_896a_51a8_749b,
    0x53cb_9f0c_747e_a2eb,
    0x2c82_9abe_1f45_32e1,
    0xc584_133a_c916_ab3d,
    0x3ee5_7890_41c9_8ac3,
    0xf3b8_488c_368c_b0a7,
    0x657e_ecdd_3cb1_3d09,
];

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CostWay {
    key: [u32; KEY_WORDS],
    hits: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CostBucket {
    ways: [CostWay; COST_WAYS],
}

/// The array table: `COST_BUCKETS` buckets of `COST_WAYS` keys, 12 KiB.
/// Only in the benchmark's object.
#[map]
static FILTER_COST_TABLE: Array<CostBucket> = Array::with_max_entries(COST_BUCKETS, 0);

/// The frame's key as a `T` of 4-byte alignment, or None for a short frame.
#[inline(always)]
fn key<T: Copy>(ctx: &XdpContext) -> Option<T> {
    let (start, end) = (ctx.data() + KEY_OFFSET, ctx.data_end());
    if start + size_of::<T>() > end {
        return None;
    }
    // SAFETY: inside the packet, checked above, and 4-aligned (see
    // `KEY_OFFSET`); `T` is plain bytes. The aligned read makes word loads
    // where `read_unaligned` would load byte by byte.
    Some(unsafe { core::ptr::read(start as *const T) })
}

/// Key equality as one OR of word differences: word loads and no branch
/// per word, where `==` on the arrays is expanded byte by byte.
#[inline(always)]
fn same(a: &[u32; KEY_WORDS], b: &[u32; KEY_WORDS]) -> bool {
    a.iter().zip(b).fold(0, |d, (x, y)| d | (x ^ y)) == 0
}

#[inline(always)]
fn verdict(hit: bool) -> u32 {
    if hit {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// One `FILTER_CT` lookup: what the established fast path makes.
#[xdp]
pub fn filter_cost_ct_xdp(ctx: XdpContext) -> u32 {
    let Some(key) = key::<CtKey>(&ctx) else {
        return xdp_action::XDP_ABORTED;
    };
    verdict(FILTER_CT.get_ptr(key).is_some())
}

/// A `FILTER_CT` lookup, then a `FILTER_REJECTS` lookup of the same bytes:
/// what every dropped first packet makes. Pass when the second one hits.
#[xdp]
pub fn filter_cost_ct_reject_xdp(ctx: XdpContext) -> u32 {
    let (Some(key), Some(rkey)) = (key::<CtKey>(&ctx), key::<RejectKey>(&ctx)) else {
        return xdp_action::XDP_ABORTED;
    };
    if FILTER_CT.get_ptr(key).is_some() {
        return xdp_action::XDP_ABORTED;
    }
    verdict(FILTER_REJECTS.get_ptr(rkey).is_some())
}

/// A lookup in the array table: the hash computed here, the bucket an
/// inlined array read, its ways compared word by word. A miss stores the
/// key (so the next run of the same frame hits).
#[xdp]
pub fn filter_cost_array_xdp(ctx: XdpContext) -> u32 {
    let Some(key) = key::<[u32; KEY_WORDS]>(&ctx) else {
        return xdp_action::XDP_ABORTED;
    };
    // A multilinear hash: each word times a constant of its own, summed.
    // The products do not wait on one another, where a hash that mixes
    // word after word into one state makes a chain of multiplies as long
    // as the key. The bucket comes from the high half, the best mixed.
    let mut h: u64 = 0;
    for (w, k) in key.iter().zip(HASH_KEYS) {
        h = h.wrapping_add(u64::from(*w).wrapping_mul(k));
    }
    let h = (h >> 32) as u32;
    let Some(bucket) = FILTER_COST_TABLE.get_ptr_mut(h & (COST_BUCKETS - 1)) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: a live array value; the benchmark runs one CPU at a time on it.
    let bucket = unsafe { &mut *bucket };
    for way in bucket.ways.iter_mut() {
        if same(&way.key, &key) {
            way.hits = way.hits.wrapping_add(1);
            return verdict(true);
        }
    }
    if let Some(way) = bucket.ways.get_mut((h >> 8) as usize % COST_WAYS) {
        way.key = key;
        way.hits = 1;
    }
    verdict(false)
}
