//! Linker settings for the eBPF object.
//!
//! bpf-linker passes `--bpf-expand-memcpy-in-order` to LLVM by default. That
//! option exists for offload JITs that pattern-match copies; it also sets
//! LLVM's store budget for `memset` and `memmove` to zero, so every struct
//! zeroing or copy the compiler cannot prove disjoint (three padding bytes
//! included) becomes a BPF-to-BPF call to compiler_builtins' byte-at-a-time
//! loop. On the packet path that was a 64-byte loop per packet, about a
//! sixth of an established packet's cost (docs/BENCHMARKS.md). Without
//! the option LLVM writes those as a few word-sized stores, as clang does
//! for C programs; the host JIT needs no copy patterns.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "bpf") {
        println!("cargo:rustc-link-arg=--disable-expand-memcpy-in-order");
    }
}
