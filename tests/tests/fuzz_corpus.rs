//! The fuzz corpus and every crash the fuzzer found, replayed through the
//! targets' own functions (`filter_tests::fuzz`) without libFuzzer: each
//! file in `tests/fuzz/corpus/<target>/` and `tests/fuzz/regressions/<target>/`
//! must run without a panic (docs/FUZZING.md). The `packet` target loads
//! the eBPF object and needs root, like the rest of this crate's tests.
use std::{
    fs,
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
};

use filter_tests::fuzz::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Every input kept for `target`, sorted (so a failure replays in order).
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ["corpus", "regressions"]
        .iter()
        .filter_map(|kind| fs::read_dir(fuzz_dir().join(kind).join(target)).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(name: &str) {
    let (_, run) = TARGETS
        .iter()
        .find(|(n, ..)| *n == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"));
    let files = inputs(name);
    assert!(
        !files.is_empty(),
        "no corpus for {name} in {}",
        fuzz_dir().display()
    );
    let failed: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            catch_unwind(AssertUnwindSafe(|| run(&data)))
                .is_err()
                .then(|| path.display().to_string())
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{name}: these inputs fail:\n{}",
        failed.join("\n")
    );
}

#[test]
fn document_corpus() {
    replay("document");
}

#[test]
fn compile_corpus() {
    replay("compile");
}

#[test]
fn request_corpus() {
    replay("request");
}

#[test]
fn writers_corpus() {
    replay("writers");
}

#[test]
fn packet_corpus() {
    replay("packet");
}

/// Every target has a test above, and every corpus directory a target.
#[test]
fn every_target_is_replayed() {
    let source = include_str!("fuzz_corpus.rs");
    for (name, ..) in TARGETS {
        assert!(
            source.contains(&format!("replay(\"{name}\")")),
            "{name} is not replayed"
        );
    }
    for entry in fs::read_dir(fuzz_dir().join("corpus"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            TARGETS.iter().any(|(n, ..)| *n == name),
            "corpus/{name} has no target"
        );
    }
}
