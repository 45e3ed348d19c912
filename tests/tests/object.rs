//! The eBPF object as built: a property of the compiled code that no packet
//! test can see, because it changes no verdict.
#![expect(clippy::expect_used, reason = "test code")]
use std::collections::BTreeSet;

use filter_common::names;
use object::{
    Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SectionKind, SymbolKind,
};

/// What the daemon attaches (`filter_xdp`, `filter_tc`) or runs
/// (`filter_clock_sample`, the clock calibration).
const PRODUCT_PROGRAMS: [&str; 4] = [
    names::PROG_XDP,
    names::PROG_TC,
    names::PROG_TC_INGRESS,
    names::PROG_CLOCK,
];

/// What only `cargo xtask bench` loads (`filter-ebpf/src/bench/`).
const BENCH_PROGRAMS: [&str; 11] = [
    "filter_noop_xdp",
    "filter_noop_tc",
    "filter_xdp_unaccounted",
    "filter_tc_unaccounted",
    "filter_cost_ct_xdp",
    "filter_cost_ct_reject_xdp",
    "filter_cost_array_xdp",
    "filter_flowlog_bench",
    "filter_live_tx",
    "filter_live_tx_random",
    "filter_live_sink",
];
const BENCH_MAPS: [&str; 2] = ["FILTER_COST_TABLE", "FILTER_LIVE_SEEN"];

/// The programs (functions in a program section, not `.text`'s
/// subprograms) and the maps of an object.
fn contents(bytes: &[u8]) -> (BTreeSet<String>, BTreeSet<String>) {
    let elf = object::File::parse(bytes).expect("the eBPF object is an ELF file");
    let (mut programs, mut maps) = (BTreeSet::new(), BTreeSet::new());
    for symbol in elf.symbols().filter(|s| s.is_global()) {
        let Some(section) = symbol
            .section_index()
            .and_then(|i| elf.section_by_index(i).ok())
        else {
            continue;
        };
        let name = symbol.name().unwrap_or_default().to_owned();
        let into = match (symbol.kind(), section.name().unwrap_or_default()) {
            (SymbolKind::Text, ".text") => continue,
            (SymbolKind::Text, _) => &mut programs,
            (_, "maps") => &mut maps,
            _ => continue,
        };
        into.insert(name);
    }
    (programs, maps)
}

fn set<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    names.into_iter().map(str::to_owned).collect()
}

/// The daemon's object holds what it attaches or runs, nothing of the
/// benchmark's: every program and map of an object is loaded with it.
#[test]
fn product_object_holds_only_what_the_daemon_uses() {
    let bytes = filter::dataplane::object::object()
        .expect("no eBPF object was built: run `cargo xtask setup` first");
    let (programs, maps) = contents(bytes);
    assert_eq!(programs, set(PRODUCT_PROGRAMS));
    for map in BENCH_MAPS {
        assert!(!maps.contains(map), "{map} is in the product object");
    }
}

/// The benchmark's object is the product's plus its own programs and maps,
/// so its numbers are the product's pipeline.
#[test]
fn bench_object_adds_the_benchmark_programs_to_the_product() {
    let (product_programs, product_maps) =
        contents(filter::dataplane::object::object().expect("no eBPF object was built"));
    let (programs, maps) =
        contents(filter::dataplane::object::bench_object().expect("no benchmark object was built"));
    assert_eq!(programs, &product_programs | &set(BENCH_PROGRAMS));
    assert_eq!(maps, &product_maps | &set(BENCH_MAPS));
}

/// compiler_builtins' memory functions, which the object carries and which
/// copy or compare one byte per loop iteration.
const BYTE_LOOPS: [&str; 5] = ["memset", "memcpy", "memmove", "memcmp", "bcmp"];

/// bpf-linker's default `--bpf-expand-memcpy-in-order` turns every struct
/// zeroing and copy on the packet path into a call to one of those loops,
/// which once cost half of an established packet (docs/BENCHMARKS.md);
/// `filter-ebpf/build.rs` switches it off. If a toolchain change brought
/// the calls back, every verdict would stay right and only this test would
/// notice.
#[test]
fn no_program_calls_a_byte_loop_memory_function() {
    let bytes = filter::dataplane::object::object()
        .expect("no eBPF object was built: run `cargo xtask setup` first");
    let elf = object::File::parse(bytes).expect("the eBPF object is an ELF file");
    let mut calls = Vec::new();
    let mut code_sections = 0;
    for section in elf.sections().filter(|s| s.kind() == SectionKind::Text) {
        code_sections += 1;
        for (offset, reloc) in section.relocations() {
            let RelocationTarget::Symbol(index) = reloc.target() else {
                continue;
            };
            let name = elf
                .symbol_by_index(index)
                .and_then(|s| s.name())
                .unwrap_or_default();
            if BYTE_LOOPS.contains(&name) {
                calls.push(format!(
                    "{} at {offset:#x} calls {name}",
                    section.name().unwrap_or("?")
                ));
            }
        }
    }
    // The check must have looked at the programs: xdp, classifier, .text.
    assert!(
        code_sections >= 3,
        "only {code_sections} code sections in the object"
    );
    assert!(
        calls.is_empty(),
        "the eBPF object calls byte-at-a-time memory functions (is \
         `--disable-expand-memcpy-in-order` still passed to bpf-linker?):\n{}",
        calls.join("\n")
    );
}
