//! The pipeline without per-packet flow accounting: benchmark only.
//!
//! `cargo xtask bench` runs these beside `filter_xdp` and `filter_tc`, on
//! the same maps and packets, and reports the difference as what the flow
//! log's accounting costs per packet (issue 6): on an established packet
//! the counters and flags of its conntrack entry, on a rejected one its
//! `FILTER_REJECTS` flow. Verdicts, counters and conntrack states are the
//! data plane's.
use aya_ebpf::{
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::{tc, xdp};

#[xdp]
pub fn filter_xdp_unaccounted(ctx: XdpContext) -> u32 {
    xdp::run::<false>(&ctx)
}

#[classifier]
pub fn filter_tc_unaccounted(ctx: TcContext) -> i32 {
    tc::run::<false>(&ctx, crate::pipeline::HOOK_EGRESS)
}
