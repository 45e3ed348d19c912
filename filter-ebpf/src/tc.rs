//! The tcx entry points: the interface's egress (ENI ingress on a tap, ENI
//! egress on a NIC), and its ingress where XDP does not fit (virtual
//! devices: XDP there costs the sender its GSO, SPEC §2.4).
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};

use crate::{
    frame::TcFrame,
    pipeline::{self, HOOK_EGRESS, HOOK_INGRESS},
};

#[classifier]
pub fn filter_tc(ctx: TcContext) -> i32 {
    run::<true>(&ctx, HOOK_EGRESS)
}

/// The interface's ingress on tcx: the same pipeline as `filter_xdp`.
#[classifier]
pub fn filter_tc_ingress(ctx: TcContext) -> i32 {
    run::<true>(&ctx, HOOK_INGRESS)
}

/// The pipeline on a packet at `hook`, as a TC action. Headers
/// are read with `bpf_skb_load_bytes`, which also reads the paged part of
/// a non-linear skb, so no `bpf_skb_pull_data` is needed.
/// `FLOW_ACCOUNTING`: see `pipeline::run`.
#[inline(always)]
pub fn run<const FLOW_ACCOUNTING: bool>(ctx: &TcContext, hook: u8) -> i32 {
    // SAFETY: the kernel's context; `ifindex` is a plain field (the device
    // the packet is being sent on, or arrived on at ingress).
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if pipeline::run::<_, FLOW_ACCOUNTING>(TcFrame(ctx.skb.skb), hook, ifindex) {
        TC_ACT_OK
    } else {
        TC_ACT_SHOT
    }
}
