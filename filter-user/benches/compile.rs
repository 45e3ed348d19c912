//! Apply-path benchmark (`cargo xtask bench`, or `cargo bench -p
//! filter-user --bench compile`): 10 to 200k rules on one ENI, for both
//! generators of `filter::compile::synthetic` (services: few port classes;
//! diverse: as many as the port space allows), and a million diverse
//! rules (issue 18: no fixed limit below a million).
//!
//! Per size, the steps an `apply` takes in `filterd`, each timed once:
//! parse and validate the document text, shadow warnings, the change
//! summary, compile (best and median of several runs), and, as root with
//! the eBPF object built, the write into a data plane of its own (loaded,
//! never attached; the second of two writes, as every apply after the
//! first pays). Then the map sizes (rule sets, sorted-range bounds,
//! kernel bytes per rule) and the peak RSS of one apply per rule: the
//! high-water mark (reset through `/proc/self/clear_refs`) over the RSS
//! before the document text was made.
//!
//! Goals: issue 3, compile of 100k services rules under 1 s; issue 18,
//! apply of 100k diverse rules under 2 s with at most 2 KiB per rule.
use std::{
    fs,
    hint::black_box,
    time::{Duration, Instant},
};

use filter::{
    compile::{compile, shadow_warnings, synthetic::Generator, SlotTable},
    daemon::summarize,
    dataplane::{Dataplane, GenerationMaps},
    validate::load,
};

const SIZES: [usize; 5] = [10, 1_000, 10_000, 100_000, 200_000];
/// The diverse generator's last row.
const MILLION: usize = 1_000_000;
const GOAL_APPLY: Duration = Duration::from_secs(2);
const GOAL_BYTES_PER_RULE: usize = 2048;

/// Resident set size and its high-water mark, in bytes.
fn rss() -> (usize, usize) {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the high-water mark to the current RSS (Linux ≥ 4.0).
fn reset_peak() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

struct Row {
    doc_mb: f64,
    parse: Duration,
    warnings: Duration,
    summary: Duration,
    compile_best: Duration,
    compile_median: Duration,
    write: Option<Duration>,
    rule_sets: usize,
    bounds: usize,
    kernel_bytes: usize,
    peak: Option<usize>,
}

fn measure(
    generator: Generator,
    rules: usize,
    dataplane: &mut Option<Dataplane>,
    generation: &mut u32,
) -> Result<Row, String> {
    let before = rss().0;
    let peak_ok = reset_peak();
    let text = generator.document(rules, "bench0").to_string();
    let start = Instant::now();
    let rs = load(&text).map_err(|e| match e.into_iter().next() {
        Some(first) => format!("invalid: {first}"),
        None => "invalid".to_owned(),
    })?;
    let parse = start.elapsed();
    let start = Instant::now();
    black_box(shadow_warnings(&rs));
    let warnings = start.elapsed();
    let start = Instant::now();
    black_box(summarize(None, &rs));
    let summary = start.elapsed();

    let runs = if rules >= 100_000 { 3 } else { 9 };
    let mut times = Vec::with_capacity(runs);
    let mut compiled = None;
    for _ in 0..runs {
        drop(compiled.take());
        let mut slots = SlotTable::new();
        let start = Instant::now();
        let c = compile(black_box(&rs), *generation, &|_| Some(2), &mut slots)
            .map_err(|e| format!("compile failed: {e}"))?;
        times.push(start.elapsed());
        compiled = Some(c);
    }
    times.sort_unstable();
    let compiled = compiled.ok_or("no compile run")?;
    let write = match dataplane {
        Some(dp) => {
            // The first write into fresh maps scans them for leftovers; the
            // daemon pays that once. The second is what every apply costs.
            let mut elapsed = Duration::ZERO;
            for _ in 0..2 {
                let mut slots = SlotTable::new();
                let c = compile(&rs, *generation, &|_| Some(2), &mut slots)
                    .map_err(|e| format!("compile failed: {e}"))?;
                let start = Instant::now();
                dp.write_generation(&GenerationMaps::from(&c))
                    .map_err(|e| format!("write failed: {e}"))?;
                elapsed = start.elapsed();
                *generation += 1;
            }
            Some(elapsed)
        }
        None => None,
    };
    let stats = compiled.stats();
    let peak = peak_ok.then(|| rss().1.saturating_sub(before));
    Ok(Row {
        doc_mb: text.len() as f64 / 1e6,
        parse,
        warnings,
        summary,
        compile_best: times[0],
        compile_median: times[runs / 2],
        write,
        rule_sets: stats.rule_sets,
        bounds: stats.bounds,
        kernel_bytes: stats.kernel_bytes,
        peak,
    })
}

/// Runs each size in a process of its own (this bench, with `--one`), so
/// that its peak RSS is its own and not what an earlier size left in the
/// allocator.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--one") {
        let generator = match args.get(i + 1).map(String::as_str) {
            Some("diverse") => Generator::Diverse,
            _ => Generator::Services,
        };
        let rules = args.get(i + 2).and_then(|r| r.parse().ok()).unwrap_or(10);
        one(generator, rules);
        return;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            println!("cannot find this benchmark's executable: {e}");
            return;
        }
    };
    for generator in Generator::ALL {
        println!("\n{generator} rule sets:");
        println!(
            "{:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7} {:>8} {:>9} {:>8} {:>8} {:>9} goal",
            "rules",
            "doc MB",
            "parse",
            "shadow",
            "diff",
            "compile",
            "(median)",
            "write",
            "apply s",
            "rule-sets",
            "bounds",
            "kern B/r",
            "peak B/r",
        );
        let million = (generator == Generator::Diverse).then_some(MILLION);
        for rules in SIZES.into_iter().chain(million) {
            let out = std::process::Command::new(&exe)
                .args(["--one", &generator.to_string(), &rules.to_string()])
                .output();
            match out {
                Ok(out) => {
                    print!("{}", String::from_utf8_lossy(&out.stdout));
                    if !out.status.success() {
                        println!(
                            "{rules:>7} failed: {}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                }
                Err(e) => println!("{rules:>7} cannot run: {e}"),
            }
        }
    }
}

/// One row: `rules` rules of `generator`.
fn one(generator: Generator, rules: usize) {
    // Pinned, as the daemon's: a generation larger than `FILTER_BOUNDS`
    // makes it grow, which only pinned links allow (the first write pays
    // it, as a daemon's first apply of such a document does).
    let pins = std::path::Path::new(filter::dataplane::pins::BPFFS)
        .join(format!("filter-bench-compile-{}", std::process::id()));
    let mut dataplane = Dataplane::load(Some(&pins)).ok();
    if dataplane.is_none() && rules == SIZES[0] {
        println!("(no map writes: the data plane does not load here)");
    }
    let mut generation = 1;
    let measured = measure(generator, rules, &mut dataplane, &mut generation);
    if let Some(dp) = dataplane {
        if let Err(e) = dp.destroy() {
            println!("removing {}: {e}", pins.display());
        }
    }
    let row = match measured {
        Ok(row) => row,
        Err(e) => {
            println!("{rules:>7} {e}");
            return;
        }
    };
    let apply =
        row.parse + row.warnings + row.summary + row.compile_median + row.write.unwrap_or_default();
    let peak_per_rule = row.peak.map(|p| p / rules);
    let goal = if generator == Generator::Diverse && rules == 100_000 {
        let ok = apply <= GOAL_APPLY && peak_per_rule.is_some_and(|p| p <= GOAL_BYTES_PER_RULE);
        format!(
            "{} (apply ≤ {}s, peak ≤ {GOAL_BYTES_PER_RULE} B/rule)",
            if ok { "ok" } else { "MISSED" },
            GOAL_APPLY.as_secs()
        )
    } else {
        "-".to_owned()
    };
    println!(
        "{:>7} {:>7.1} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7} {:>8} {:>9} {:>8} {:>8} {:>9} {goal}",
        rules,
        row.doc_mb,
        secs(row.parse),
        secs(row.warnings),
        secs(row.summary),
        secs(row.compile_best),
        secs(row.compile_median),
        row.write.map_or("-".to_owned(), secs),
        secs(apply),
        row.rule_sets,
        row.bounds,
        row.kernel_bytes / rules,
        peak_per_rule.map_or("-".to_owned(), |p| p.to_string()),
    );
}
