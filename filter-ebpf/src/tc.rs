//! The TC (clsact egress) entry point: the interface's egress (ENI ingress
//! on a tap, ENI egress on a NIC).
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};

use crate::{
    frame::TcFrame,
    pipeline::{self, HOOK_TC},
};

#[classifier]
pub fn filter_tc(ctx: TcContext) -> i32 {
    run::<true>(&ctx)
}

/// The pipeline on a packet leaving the interface, as a TC action. Headers
/// are read with `bpf_skb_load_bytes`, which also reads the paged part of
/// a non-linear skb, so no `bpf_skb_pull_data` is needed.
/// `FLOW_ACCOUNTING`: see `pipeline::run`.
#[inline(always)]
pub fn run<const FLOW_ACCOUNTING: bool>(ctx: &TcContext) -> i32 {
    // SAFETY: the kernel's context; `ifindex` is a plain field (the device
    // the packet is being sent on).
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if pipeline::run::<_, FLOW_ACCOUNTING>(TcFrame(ctx.skb.skb), HOOK_TC, ifindex) {
        TC_ACT_OK
    } else {
        TC_ACT_SHOT
    }
}
