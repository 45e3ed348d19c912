//! Data-plane benchmarks (`cargo xtask bench`, which runs this as root;
//! `cargo bench -p filter-tests --bench dataplane` also works, as root).
//! Issue 18's goals first, then the diagnostics:
//!
//! 1. **Live-frames drop rate** (`drop.rs`, frames from `live.rs`, the
//!    netfilter side in `stateless.rs`): filter on both hooks against the
//!    XDP ceiling, nftables pipapo and iptables-legacy raw; a SYN flood.
//! 2. **TCP per ingress hook** (`tcp.rs`) through the real `filterd`.
//! 3. **Apply time and peak RSS** (`apply.rs`) through `filterctl apply`.
//! 4. **BPF_PROG_TEST_RUN** (`testrun.rs`): ns per packet through the real
//!    XDP and TC programs, minus the empty program measured in the same
//!    run, for a first packet (dropped, and accepted) and a packet of an
//!    established connection, at 10, 1k, 10k and 100k rules; against the
//!    goals of issue 4 (first packet at most 40, 100, 200, 350 ns;
//!    established at most 50 ns, flat); and what one map lookup costs on
//!    its own (`lookups.rs`), the floor under those goals.
//! 5. **veth** (`veth.rs`): the same rule sets enforced by filter, by
//!    nftables (written as an expert would, with interval maps) and by
//!    iptables (the naive linear chain), and nothing, with real traffic
//!    between two namespaces: new connections per second, packets per
//!    second of an established flow, TCP throughput; ratios to no filter
//!    and between the engines, all measured in one run.
//!
//! The plots (`plot.rs`) go to `docs/bench/`.
//!
//! A measurement tool, not a test: it checks that every number belongs to
//! the path it names (verdicts, counters, a closed port is closed), never
//! what the number is. Without `--bench` (as `cargo test --benches` runs
//! it) it does nothing.
mod apply;
mod drop;
mod live;
mod lookups;
mod netfilter;
mod pair;
mod plot;
mod rules;
mod stateless;
mod tcp;
mod testrun;
mod traffic;
mod veth;

use std::{process::ExitCode, time::Duration};

use anyhow::{bail, Context as _, Result};
use clap::Parser;

use crate::{
    testrun::{Baseline, Costs, Effort, Noop, Prog},
    traffic::Timing,
    veth::{Engine, Engines, Row},
};

#[derive(Parser, Debug)]
#[command(about = "filter data-plane benchmarks (root)")]
struct Args {
    /// Passed by `cargo bench`; without it nothing runs.
    #[arg(long, hide = true)]
    bench: bool,
    /// Shorter measurements (a quick look, noisier numbers).
    #[arg(long)]
    quick: bool,
    /// Only one part: `testrun`, `veth`, `drop`, `tcp` or `apply`.
    #[arg(long)]
    only: Option<String>,
    /// Rule counts for the live-frames drop rate.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,10000,100000")]
    drop_sizes: Vec<usize>,
    /// Rule counts for apply time and peak RSS (diverse generator).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,1000,10000,100000,200000"
    )]
    apply_sizes: Vec<usize>,
    /// Rule counts for BPF_PROG_TEST_RUN.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,10000,100000")]
    sizes: Vec<usize>,
    /// Rule counts for the veth comparison.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,10000,100000")]
    veth_sizes: Vec<usize>,
    /// Largest rule count iptables is loaded with (its linear chain is
    /// slow to load and to run).
    #[arg(long, default_value_t = 100_000)]
    iptables_max: usize,
    /// Seconds of traffic per veth measurement (after a warm-up).
    #[arg(long)]
    seconds: Option<f64>,
    /// Profiling aid: before each repeated BPF_PROG_TEST_RUN path is
    /// measured, run it for this many seconds, announced on stderr, so
    /// `perf record -a` taken meanwhile sees that path alone.
    #[arg(long, hide = true)]
    profile: Option<f64>,
    /// Anything else cargo passes (filters).
    #[arg(hide = true)]
    rest: Vec<String>,
}

/// The goals of issue 4, ns: first packet by rule count, established.
const FIRST_PACKET_GOALS: [(usize, f64); 4] = [
    (10, 40.0),
    (1_000, 100.0),
    (10_000, 200.0),
    (100_000, 350.0),
];
const ESTABLISHED_GOAL: f64 = 50.0;

/// A line of the BPF_PROG_TEST_RUN table: the path, its cost, whether it
/// was measured in single runs, its goal.
type PathRow = (&'static str, fn(&Costs) -> f64, bool, Option<f64>);

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.bench {
        println!("dataplane: a benchmark; run it with `cargo xtask bench` (as root)");
        return ExitCode::SUCCESS;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "dataplane: needs root (it loads eBPF programs and creates network namespaces): \
             `sudo -E cargo xtask bench`"
        );
        return ExitCode::FAILURE;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dataplane: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    filter_tests::id::sweep_stale();
    netfilter::check_flatten()?;
    environment();
    let mut noop = Noop::load().context("loading the empty programs")?;
    // Each part gets a data plane of its own: a generation's apply time
    // includes removing the one it replaces, which must be the part's own.
    match args.only.as_deref() {
        // Issue 18's goals first, then the diagnostics.
        None => {
            drop_rate(args)?;
            tcp(args)?;
            plot::apply(&apply::run(&args.apply_sizes)?)?;
            prog_test_run(args, &mut noop)?;
            compare(args, &mut noop)?;
        }
        Some("testrun") => prog_test_run(args, &mut noop)?,
        Some("veth") => compare(args, &mut noop)?,
        Some("drop") => drop_rate(args)?,
        Some("tcp") => tcp(args)?,
        Some("apply") => plot::apply(&apply::run(&args.apply_sizes)?)?,
        Some(other) => {
            bail!("--only {other}: expected `testrun`, `veth`, `drop`, `tcp` or `apply`")
        }
    }
    println!("Load average at the end: {}", load_average());
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Kernel, CPUs and tool versions: numbers mean little without them.
fn environment() {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let version = |argv: &[&str]| {
        filter_tests::cmd::run(filter_tests::cmd::tool(argv[0]).args(&argv[1..]))
            .map(|v| v.lines().next().unwrap_or_default().trim().to_owned())
            .unwrap_or_else(|_| "not installed".into())
    };
    println!("## Environment\n");
    println!("- kernel {}, {cpus} CPUs ({cpu})", kernel.trim());
    println!(
        "- {}; {}",
        version(&["nft", "--version"]),
        version(&["iptables", "--version"])
    );
    println!("- load average at the start: {}", load_average());
    println!();
}

// ---------------------------------------------------------------------------
// BPF_PROG_TEST_RUN
// ---------------------------------------------------------------------------

/// One rule count on one program: its costs, compile and write seconds.
type Measured = (usize, Prog, Costs, f64, f64);

/// The XDP and TC costs measured at `n` rules.
fn costs_at(results: &[Measured], n: usize) -> Option<(Costs, Costs)> {
    let get = |prog: Prog| {
        results
            .iter()
            .find(|r| r.0 == n && r.1 == prog)
            .map(|r| r.2)
    };
    Some((get(Prog::Xdp)?, get(Prog::Tc)?))
}

fn prog_test_run(args: &Args, noop: &mut Noop) -> Result<()> {
    let filter = &mut testrun::Bench::new()?;
    let effort = if args.quick {
        Effort {
            repeat: 100_000,
            runs: 3,
            samples: 1_000,
            profile_s: args.profile,
        }
    } else {
        Effort {
            repeat: 1_000_000,
            runs: 5,
            samples: 3_000,
            profile_s: args.profile,
        }
    };
    println!("## BPF_PROG_TEST_RUN: ns per packet, minus the empty program\n");
    println!(
        "{} repeats per timed run, mean of {} runs; single-run paths: median of {} new connections.\n",
        effort.repeat, effort.runs, effort.samples
    );
    let mut base = [Baseline::default(); 2];
    for (b, prog) in base.iter_mut().zip([Prog::Xdp, Prog::Tc]) {
        *b = testrun::baseline(noop, prog, effort)?;
    }
    let lookups = lookups::Lookups::load()
        .context("loading the lookup-cost programs")?
        .measure(noop, effort)?;
    let mut results: Vec<Measured> = Vec::new();
    for &n in &args.sizes {
        let bench = rules::generate(n, "bench0", "nic")?;
        for prog in [Prog::Xdp, Prog::Tc] {
            let (costs, applied) = filter.measure(&bench, prog, effort)?;
            results.push((n, prog, costs, applied.compile_s, applied.write_s));
        }
    }
    // The baseline again at the end: drift shows, and the mean is used.
    for (b, prog) in base.iter_mut().zip([Prog::Xdp, Prog::Tc]) {
        let again = testrun::baseline(noop, prog, effort)?;
        println!(
            "- empty {} program: {:.1} / {:.1} ns repeated, {:.0} / {:.0} ns single run (start / end of the run)",
            prog.name(),
            b.repeated,
            again.repeated,
            b.single,
            again.single
        );
        b.repeated = (b.repeated + again.repeated) / 2.0;
        b.single = (b.single + again.single) / 2.0;
    }
    println!();
    println!("| rules | path | XDP ns | XDP × empty | TC ns | TC × empty | goal | XDP ÷ goal | TC ÷ goal |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &args.sizes {
        let Some((xdp, tc)) = costs_at(&results, n) else {
            continue;
        };
        let first_goal = FIRST_PACKET_GOALS.iter().find(|g| g.0 == n).map(|g| g.1);
        let rows: [PathRow; 7] = [
            ("first packet, dropped", |c| c.drop_first, false, first_goal),
            (
                "first packet, accepted (single runs)",
                |c| c.accept_first_single,
                true,
                first_goal,
            ),
            (
                "first packet, dropped (single runs)",
                |c| c.drop_first_single,
                true,
                first_goal,
            ),
            (
                "established",
                |c| c.established,
                false,
                Some(ESTABLISHED_GOAL),
            ),
            (
                "established, NACL on the vSwitch",
                |c| c.established_nacl,
                false,
                Some(ESTABLISHED_GOAL),
            ),
            (
                "first packet, dropped, without flow accounting",
                |c| c.drop_first_unaccounted,
                false,
                None,
            ),
            (
                "established, without flow accounting",
                |c| c.established_unaccounted,
                false,
                None,
            ),
        ];
        for (path, value, single, goal) in rows {
            let net = |c: &Costs, b: &Baseline| {
                let raw = value(c);
                let empty = if single { b.single } else { b.repeated };
                (raw - empty, raw / empty)
            };
            let (x, xr) = net(&xdp, &base[0]);
            let (t, tr) = net(&tc, &base[1]);
            let goal_text = goal.map_or("-".into(), |g| format!("≤ {g:.0}"));
            let ratio = |v: f64| goal.map_or("-".into(), |g| format!("{:.2}", v / g));
            println!(
                "| {} | {path} | {x:.1} | {xr:.1} | {t:.1} | {tr:.1} | {goal_text} | {} | {} |",
                thousands(n),
                ratio(x),
                ratio(t)
            );
        }
    }
    println!();
    println!(
        "Flow-log accounting (issue 6), ns per packet: the row minus the same row without \
         flow accounting (the counters and flags of the packet's conntrack entry; a rejected \
         packet's `FILTER_REJECTS` flow):\n"
    );
    println!("| rules | path | XDP ns | TC ns |");
    println!("|---:|---|---:|---:|");
    for &n in &args.sizes {
        let Some((xdp, tc)) = costs_at(&results, n) else {
            continue;
        };
        for (path, with, without) in [
            (
                "established",
                (|c| c.established) as fn(&Costs) -> f64,
                (|c| c.established_unaccounted) as fn(&Costs) -> f64,
            ),
            (
                "first packet, dropped",
                |c| c.drop_first,
                |c| c.drop_first_unaccounted,
            ),
        ] {
            println!(
                "| {} | {path} | {:.1} | {:.1} |",
                thousands(n),
                with(&xdp) - without(&xdp),
                with(&tc) - without(&tc)
            );
        }
    }
    println!();
    lookup_table(&lookups);
    println!("Generation apply (compile, then write into the maps and switch):\n");
    println!("| rules | compile | write | ");
    println!("|---:|---:|---:|");
    for (n, prog, _, compile_s, write_s) in &results {
        if *prog == Prog::Xdp {
            println!(
                "| {} | {:.1} ms | {:.1} ms |",
                thousands(*n),
                compile_s * 1e3,
                write_s * 1e3
            );
        }
    }
    println!();
    Ok(())
}

/// What one lookup costs (`lookups.rs`), net of the empty XDP program.
fn lookup_table(l: &lookups::LookupCosts) {
    println!(
        "What one lookup costs: XDP programs that read a 44-byte key from the frame and look \
         it up, ns per packet net of the empty program run beside them (the fastest of {} runs \
         of each; `filter-ebpf/src/bench/lookup_cost.rs`):\n",
        lookups::LOOKUP_RUNS
    );
    println!("| lookup | ns |");
    println!("|---|---:|");
    for (what, ns) in [
        ("`FILTER_CT` (LRU hash), hit", l.ct_hit),
        ("`FILTER_CT`, miss", l.ct_miss),
        (
            "`FILTER_CT` miss, then `FILTER_REJECTS` hit (every dropped first packet)",
            l.ct_miss_reject_hit,
        ),
        (
            "array table of our own (hash in the program, 4 ways), hit",
            l.array_hit,
        ),
    ] {
        println!("| {what} | {ns:.1} |");
    }
    println!();
}

// ---------------------------------------------------------------------------
// veth: filter, nftables, iptables
// ---------------------------------------------------------------------------

fn compare(args: &Args, noop: &mut Noop) -> Result<()> {
    let filter = &mut testrun::Bench::new()?;
    let seconds = args.seconds.unwrap_or(if args.quick { 0.5 } else { 1.0 });
    let timing = Timing {
        warmup: Duration::from_secs_f64((seconds / 3.0).max(0.2)),
        measure: Duration::from_secs_f64(seconds),
        repeats: if args.quick { 1 } else { 5 },
    };
    println!("## veth: filter against nftables and iptables\n");
    println!(
        "Two namespaces per engine, one veth pair, the server's end guarded; the engines of a \
         rule count measured in turn, {} rounds of {seconds} s per load after {:.1} s of \
         warm-up (median shown); one sending thread.\n",
        timing.repeats,
        timing.warmup.as_secs_f64()
    );
    let mut engines = Engines { noop, filter };
    let mut rows: Vec<Row> = Vec::new();
    for &n in &args.veth_sizes {
        let bench = rules::generate(n, "bench0", "nic")?;
        let mut list = vec![Engine::None, Engine::Noop, Engine::Filter, Engine::Nft];
        if n <= args.iptables_max {
            list.push(Engine::Iptables);
            if veth::legacy_available() {
                list.push(Engine::IptablesLegacy);
            }
        } else {
            println!("{}: iptables skipped (over --iptables-max)", thousands(n));
        }
        let measured = veth::measure(&mut engines, &list, &bench, timing)?;
        for row in &measured {
            print_row(
                row,
                &measured,
                rows.is_empty() && std::ptr::eq(row, &measured[0]),
            );
        }
        rows.extend(measured);
    }
    println!();
    summary(&rows, &args.veth_sizes);
    Ok(())
}

/// One line of the veth table; `×` columns against the same rule count's
/// "no filter".
fn print_row(row: &Row, block: &[Row], header: bool) {
    if header {
        println!(
            "| rules | engine | installed | set-up | closed port | new flows/s | × none | \
             established pkt/s | × none | TCP Gbit/s | × none |"
        );
        println!("|---:|---|---|---:|---|---:|---:|---:|---:|---:|---:|");
    }
    let none = block.iter().find(|r| r.engine == Engine::None);
    let ratio =
        |v: f64, f: fn(&Row) -> f64| none.map_or("-".into(), |n| format!("{:.2}", v / f(n)));
    let closed = if row.closed_passed == 0 {
        "dropped".to_owned()
    } else {
        format!("{} of 20 pass", row.closed_passed)
    };
    let bare = matches!(row.engine, Engine::None | Engine::Noop);
    println!(
        "| {} | {} | {} | {} | {closed} | {} | {} | {} | {} | {:.2} | {} |",
        thousands(row.rules),
        row.engine.label(),
        if bare { "-" } else { &row.size },
        if bare {
            "-".into()
        } else {
            seconds(row.setup_s)
        },
        thousands(row.new_flows as usize),
        ratio(row.new_flows, |r| r.new_flows),
        thousands(row.established as usize),
        ratio(row.established, |r| r.established),
        row.tcp_gbit,
        ratio(row.tcp_gbit, |r| r.tcp_gbit),
    );
}

/// filter ÷ each other engine, per rule count and load.
fn summary(rows: &[Row], sizes: &[usize]) {
    println!(
        "filter ÷ the other engine (above 1: filter is faster; against the empty programs: what \
         the filtering itself costs on the XDP path):\n"
    );
    println!("| rules | against | new flows | established | TCP |");
    println!("|---:|---|---:|---:|---:|");
    for &n in sizes {
        let find = |e: Engine| rows.iter().find(|r| r.engine == e && r.rules == n);
        let Some(f) = find(Engine::Filter) else {
            continue;
        };
        for other in [
            Engine::Noop,
            Engine::Nft,
            Engine::Iptables,
            Engine::IptablesLegacy,
        ] {
            if let Some(o) = find(other) {
                println!(
                    "| {} | {} | {:.2} | {:.2} | {:.2} |",
                    thousands(n),
                    other.label(),
                    f.new_flows / o.new_flows,
                    f.established / o.established,
                    f.tcp_gbit / o.tcp_gbit
                );
            }
        }
    }
    println!();
}

fn drop_rate(args: &Args) -> Result<()> {
    let effort = drop::Effort {
        seconds: args.seconds.unwrap_or(if args.quick { 0.5 } else { 2.0 }),
        runs: if args.quick { 1 } else { 5 },
    };
    plot::drop_rate(&drop::run(&args.drop_sizes, args.iptables_max, effort)?)
}

fn tcp(args: &Args) -> Result<()> {
    let seconds = args.seconds.unwrap_or(if args.quick { 1.0 } else { 2.0 });
    let timing = Timing {
        warmup: Duration::from_secs_f64(0.5),
        measure: Duration::from_secs_f64(seconds),
        repeats: if args.quick { 1 } else { 5 },
    };
    for link in [tcp::Link::Veth, tcp::Link::Tap] {
        plot::tcp_throughput(&tcp::run(timing, link)?, link)?;
    }
    Ok(())
}

fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else {
        format!("{s:.1} s")
    }
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
