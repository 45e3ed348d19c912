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

/// Every target by name (the name of its binary and corpus directory),
/// and whether it needs root (it loads the eBPF object).
pub const TARGETS: [(&str, fn(&[u8]), bool); 5] = [
    ("document", document, false),
    ("compile", compile, false),
    ("request", request, false),
    ("writers", writers, false),
    ("packet", packet, true),
];
