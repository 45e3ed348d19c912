//! The data plane: an XDP program and a TC program that share one pipeline
//! (`docs/ARCHITECTURE.md`).
//!
//! | file | concern |
//! |---|---|
//! | `xdp.rs`, `tc.rs` | entry points |
//! | `pipeline.rs` | the order of SPEC §3 |
//! | `frame.rs` | bounds-checked packet reads |
//! | `parse.rs` | headers, malformed packets (SPEC §3.2) |
//! | `classify.rs` | one table: the lookups that find the strongest rule |
//! | `ranges.rs` | binary search over a run of sorted ranges |
//! | `clock.rs` | the time stamps of every packet |
//! | `conntrack.rs` | connection tracking (SPEC §3.1) |
//! | `frag.rs` | fragments |
//! | `flowlog.rs` | flow-log accounting and events (SPEC §7) |
//! | `stats.rs` | counters |
//! | `words.rs` | byte fields stored as whole words, for the loads that read them back |
//! | `maps.rs` | the maps |
//! | `bench/` | programs for the benchmark only (feature `bench`) |
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The BPF target has no compare-and-swap, so core offers no `fetch_add`;
// conntrack counters use the atomic-add intrinsic (see `conntrack.rs`).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

// The product object holds only what the daemon attaches or runs; the
// benchmark's object (`--features bench`) adds its programs on top.
#[cfg(feature = "bench")]
mod bench;
mod classify;
mod clock;
mod conntrack;
mod flowlog;
mod frag;
mod frame;
mod maps;
mod parse;
mod pipeline;
mod ranges;
mod stats;
mod tc;
mod words;
mod xdp;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable: nothing in the crate indexes out of bounds or unwraps,
    // and the verifier rejects a program that could loop here.
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

/// On the host this crate is only type-checked (clippy's first pass).
#[cfg(not(target_arch = "bpf"))]
fn main() {}
