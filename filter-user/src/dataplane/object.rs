//! The eBPF object, built by `build.rs` and embedded in the binaries.
use thiserror::Error;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/filter"));

#[derive(Debug, Error)]
#[error("this build has no eBPF object (it was built without an eBPF toolchain): run `cargo xtask setup`, then rebuild")]
pub struct MissingObject;

/// The ELF bytes of the data plane, ready for `aya::Ebpf::load`.
pub fn object() -> Result<&'static [u8], MissingObject> {
    if OBJECT.is_empty() {
        Err(MissingObject)
    } else {
        Ok(OBJECT)
    }
}
