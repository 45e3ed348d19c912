//! The eBPF object as built: a property of the compiled code that no packet
//! test can see, because it changes no verdict.
#![expect(clippy::expect_used, reason = "test code")]
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SectionKind};

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
