//! The eBPF objects, built by `build.rs` and embedded here: the data
//! plane's, and the benchmark's (the same plus programs of its own). Only
//! the benchmarks call [`bench_object`], so the linker leaves its bytes out
//! of `filterd` and `filterctl`.
use thiserror::Error;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/filter"));
static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/filter-bench"));

#[derive(Debug, Error)]
#[error("this build has no eBPF object (it was built with AYA_BUILD_SKIP=1): run `cargo xtask setup`, then rebuild without it")]
pub struct MissingObject;

/// The ELF bytes of the data plane, ready for `aya::Ebpf::load`.
pub fn object() -> Result<&'static [u8], MissingObject> {
    non_empty(OBJECT)
}

/// The data plane's object with the benchmark's programs added
/// (`filter-ebpf/src/bench/`).
pub fn bench_object() -> Result<&'static [u8], MissingObject> {
    non_empty(BENCH_OBJECT)
}

/// An empty object is the stand-in `AYA_BUILD_SKIP=1` writes.
fn non_empty(object: &'static [u8]) -> Result<&'static [u8], MissingObject> {
    if object.is_empty() {
        Err(MissingObject)
    } else {
        Ok(object)
    }
}
