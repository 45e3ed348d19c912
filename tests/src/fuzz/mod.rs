//! The bodies of the fuzz targets (docs/FUZZING.md). Each takes the
//! fuzzer's bytes and panics only on a bug: a panic in the product, or a
//! property that does not hold. `tests/fuzz` wraps each in libFuzzer's
//! `fuzz_target!`; `tests/tests/fuzz_corpus.rs` replays the corpus and every
//! crash kept through the same functions, so a plain `cargo test` keeps
//! what the fuzzer found fixed.
mod compile;
mod document;
mod gen;
mod packet;
mod request;
mod writers;

pub use compile::compile;
pub use document::document;
pub use packet::{packet, packet_init};
pub use request::request;
pub use writers::writers;

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target by name (the name of its binary and corpus directory).
/// `packet` loads the eBPF object: it needs root.
pub const TARGETS: [(&str, Target); 5] = [
    ("document", document),
    ("compile", compile),
    ("request", request),
    ("writers", writers),
    ("packet", packet),
];
