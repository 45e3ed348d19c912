//! The XDP entry point: the interface's ingress (ENI egress on a tap, ENI
//! ingress on a NIC).
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

use crate::{
    frame::XdpFrame,
    pipeline::{self, HOOK_XDP},
};

#[xdp]
pub fn filter_xdp(ctx: XdpContext) -> u32 {
    if try_filter_xdp(&ctx) {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// The body: true lets the packet through. Every failure inside (malformed
/// packet, missing table) has already become a counted drop.
#[inline(always)]
fn try_filter_xdp(ctx: &XdpContext) -> bool {
    // SAFETY: the kernel's context; `ingress_ifindex` is a plain field.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    pipeline::run(XdpFrame(ctx.ctx), HOOK_XDP, ifindex)
}
