//! The XDP entry point: the interface's ingress (ENI egress on a tap, ENI
//! ingress on a NIC).
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

use crate::{
    frame::XdpFrame,
    pipeline::{self, HOOK_INGRESS},
};

#[xdp]
pub fn filter_xdp(ctx: XdpContext) -> u32 {
    run::<true>(&ctx)
}

/// The pipeline on an XDP frame, as an XDP action. Every failure inside
/// (malformed packet, missing table) has already become a counted drop.
/// `FLOW_ACCOUNTING`: see `pipeline::run`.
#[inline(always)]
pub fn run<const FLOW_ACCOUNTING: bool>(ctx: &XdpContext) -> u32 {
    // SAFETY: the kernel's context; `ingress_ifindex` is a plain field.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    if pipeline::run::<_, FLOW_ACCOUNTING>(XdpFrame(ctx.ctx), HOOK_INGRESS, ifindex) {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}
