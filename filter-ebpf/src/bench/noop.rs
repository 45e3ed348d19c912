//! Empty programs: the baseline of `cargo xtask bench`.
//!
//! They return the pass verdict and touch nothing, so BPF_PROG_TEST_RUN of
//! these measures what every program pays (the test-run loop, the context,
//! the call) and the benchmark subtracts it from the data plane's time. On
//! a veth pair they measure what attaching any XDP and TC program costs.
use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

#[xdp]
pub fn filter_noop_xdp(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[classifier]
pub fn filter_noop_tc(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}
