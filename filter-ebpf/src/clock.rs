//! The data plane's clock (ARCHITECTURE.md, "Clock").
//!
//! Every packet stamps the time (conntrack, flow logs, rule counters). The
//! kernel keeps `jiffies` by the monotonic clock (each tick adds the
//! monotonic time elapsed, in whole ticks), so `jiffies * TICK_NSEC` plus
//! a constant is `CLOCK_MONOTONIC` to within a tick, as the coarse clock
//! is. `bpf_jiffies64` is a load the verifier inlines; the coarse clock is
//! a helper call, about a tenth of an established packet here.
use aya_ebpf::{
    bindings::TC_ACT_OK,
    helpers::generated::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    macros::classifier,
    programs::TcContext,
};

use crate::maps::FILTER_CLOCK;

/// Nanoseconds on the `CLOCK_MONOTONIC` time line, to a tick.
#[inline(always)]
pub fn now() -> u64 {
    if let Some(c) = FILTER_CLOCK.get(0) {
        if c.tick_ns != 0 {
            // SAFETY: a helper without arguments (an inlined load).
            let jiffies = unsafe { bpf_jiffies64() };
            return jiffies.wrapping_mul(c.tick_ns).wrapping_add(c.offset_ns);
        }
    }
    // Not calibrated (a loader that does not, or a kernel whose HZ the
    // calibration did not recognise): the same time line, from the helper.
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Calibration only, run by user space with BPF_PROG_TEST_RUN, never
/// attached: writes `[jiffies, coarse ns]`, read back to back, over the
/// first 16 bytes of the packet it is given.
#[classifier]
pub fn filter_clock_sample(ctx: TcContext) -> i32 {
    // SAFETY: helpers without arguments.
    let sample = unsafe { [bpf_jiffies64(), bpf_ktime_get_coarse_ns()] };
    match ctx.store(0, &sample, 0) {
        Ok(()) => TC_ACT_OK,
        Err(_) => aya_ebpf::bindings::TC_ACT_SHOT,
    }
}
