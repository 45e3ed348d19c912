//! Memory per rule of an apply (issue 18: at most 2 KiB per rule at 100k
//! rules), measured deterministically: the heap bytes live at the peak, as
//! a counting allocator sees them, not the RSS, which depends on the
//! allocator's arenas and the machine.
//!
//! The path is the daemon's: the document text (held for the state
//! directory), parse and validate, shadow warnings as text, the change
//! summary and compile. The diverse
//! generator is the worst case (a port class per port).
use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering::Relaxed},
};

use filter::{
    compile::{compile, shadow_warnings, synthetic::Generator, SlotTable},
    daemon::summarize,
    validate::load,
};

/// Counts live heap bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is passed to `System` unchanged; the counters only
// observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= layout.size() {
            grew(new_size - layout.size());
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The goal for the daemon's peak, per rule.
const GOAL_BYTES_PER_RULE: usize = 2048;
/// What the kernel's maps hold per rule of the diverse table (123 B at
/// 100k rules when this was written): the ranges, not the rules, grow.
const KERNEL_BYTES_PER_RULE: usize = 256;
const RULES: usize = 20_000;

/// Heap bytes at the peak of an apply of `rules` diverse rules, above what
/// was live before its document existed, and the kernel bytes it fills.
fn apply_peak(rules: usize) -> (usize, usize) {
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let text = Generator::Diverse.document(rules, "bench0").to_string();
    let rs = load(&text).unwrap_or_else(|e| panic!("the document is invalid: {e:?}"));
    let warnings: Vec<String> = shadow_warnings(&rs).iter().map(|w| w.to_string()).collect();
    let summary = summarize(None, &rs);
    let mut slots = SlotTable::new();
    let compiled = compile(&rs, 1, &|_| Some(2), &mut slots)
        .unwrap_or_else(|e| panic!("the document does not compile: {e}"));
    let kernel = compiled.stats().kernel_bytes;
    drop((compiled, summary, warnings, rs, text));
    (PEAK.load(Relaxed) - before, kernel)
}

#[test]
fn an_apply_of_the_diverse_table_stays_within_2_kib_per_rule() {
    let (peak, kernel) = apply_peak(RULES);
    let per_rule = peak / RULES;
    println!("{RULES} diverse rules: peak heap {peak} B ({per_rule} B/rule), kernel {kernel} B");
    assert!(
        per_rule <= GOAL_BYTES_PER_RULE,
        "the apply of {RULES} diverse rules peaks at {per_rule} heap bytes per rule, over the \
         goal of {GOAL_BYTES_PER_RULE}"
    );
    assert!(
        kernel / RULES <= KERNEL_BYTES_PER_RULE,
        "the maps take {} bytes per rule, over {KERNEL_BYTES_PER_RULE}",
        kernel / RULES
    );
}
