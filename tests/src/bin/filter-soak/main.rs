//! `filter-soak`: the soak test (issue 22, "Load"), run by
//! `cargo xtask soak --minutes N` (or `--seconds N`) as root.
//!
//! For the whole run, at once:
//! - documents are applied every 100 ms (back to back when an apply takes
//!   longer), going round three whose verdicts differ ([`site`]);
//! - after each apply, a round of UDP probes crosses the cloud and each
//!   is judged against the reference evaluator ([`probes`] says why the
//!   check is exact);
//! - clients connect, tail flows, monitor, send half requests and go
//!   ([`churn::clients`]);
//! - an instance's interface is deleted and re-created ([`churn::flap`]).
//!
//! At the end: zero wrong verdicts, zero client failures, the same daemon
//! process, and no growth in its memory or descriptors between a sample
//! after the warm-up and one at the end (both taken with every worker
//! parked and every client gone). It prints a summary and exits 1 on any
//! failure, 2 on a usage error.
mod churn;
mod probes;
mod site;

use std::{
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use filter_tests::{
    daemon::{DaemonGuard, DaemonOptions},
    id::TestId,
    process::{open_fds, rss_kib},
};
use serde_json::Value;

use crate::{
    churn::{Ctl, Pause, Tally},
    probes::{Arrivals, Kind, Receivers, ARRIVAL_WAIT},
    site::{Judge, Site},
};

/// How often a document is applied.
const APPLY_EVERY: Duration = Duration::from_millis(100);
/// Probes per round (one round per apply).
const ROUND: usize = 12;
/// The share of the run before the first memory and descriptor sample:
/// the flow log's tables (one entry per flow the kernel's maps hold), the
/// allocator's arenas and tokio's workers reach their working size in the
/// first seconds (measured: filterd's RSS grows by about 2 MiB in each of
/// the first two quarter-minutes, then by less and less).
const WARM_UP: f64 = 1.0 / 3.0;
/// How much filterd's resident memory may grow between the samples.
/// glibc's allocator keeps freed memory in per-thread arenas and returns
/// it lazily, so the same work at two moments shows a few MiB of noise; a
/// leak of anything per apply (10 a second) or per client (several a
/// second) exceeds this within a minute.
const RSS_SLACK_KIB: u64 = 8 * 1024;
/// How many more descriptors filterd may hold at the end. Both samples
/// are taken with no client connected and every interface attached, but
/// one may be in flight (the link of the interface that just came back,
/// a connection being closed); a leak per apply, client or flap (hundreds
/// of each a minute) exceeds this at once.
const FD_SLACK: usize = 4;
/// The workers that park for a sample: clients and the link flapper.
const WORKERS: usize = 2;

struct Options {
    duration: Duration,
}

fn usage() -> &'static str {
    "usage: filter-soak (--minutes N | --seconds N)\n\
     \n\
     The soak test (run as root; `cargo xtask soak` builds and runs it)."
}

fn options() -> Result<Options> {
    let mut args = std::env::args().skip(1);
    let mut duration = None;
    while let Some(arg) = args.next() {
        let unit = match arg.as_str() {
            "--minutes" => 60,
            "--seconds" => 1,
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{}", usage()),
        };
        let n: u64 = args
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow!("{arg} needs a whole number\n{}", usage()))?;
        duration = Some(Duration::from_secs(n * unit));
    }
    let duration = duration.ok_or_else(|| anyhow!("how long?\n{}", usage()))?;
    ensure!(
        duration >= Duration::from_secs(10),
        "a soak shorter than 10 seconds has no warm-up"
    );
    Ok(Options { duration })
}

fn main() -> ExitCode {
    let opts = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("soak: {e:#}");
            return ExitCode::from(2);
        }
    };
    let id = TestId::new("soak");
    let outcome = filter_tests::require_root().and_then(|()| soak(&id, &opts));
    let left = id.assert_nothing_left();
    match (outcome, left) {
        (Ok(summary), Ok(())) => {
            println!("{summary}");
            if summary.failed() {
                println!("soak: FAILED");
                ExitCode::FAILURE
            } else {
                println!("soak: ok");
                ExitCode::SUCCESS
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("soak: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What the soak saw.
#[derive(Default)]
struct Summary {
    duration: Duration,
    probes: u64,
    wrong: Vec<String>,
    applies: u64,
    clients: u64,
    flaps: u64,
    failures: Vec<String>,
    /// (first, last) samples.
    rss_kib: (u64, u64),
    fds: (usize, usize),
    /// (p50, max) of `filterctl apply`, ms.
    apply_ms: (u64, u64),
}

impl Summary {
    fn failed(&self) -> bool {
        !self.wrong.is_empty()
            || !self.failures.is_empty()
            || self.rss_kib.1 > self.rss_kib.0 + RSS_SLACK_KIB
            || self.fds.1 > self.fds.0 + FD_SLACK
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.duration.as_secs_f64().max(1e-3);
        writeln!(f, "soak summary ({:.0} s):", secs)?;
        writeln!(
            f,
            "  probes         {} ({:.1}/s), wrong verdicts {}",
            self.probes,
            self.probes as f64 / secs,
            self.wrong.len()
        )?;
        for w in self.wrong.iter().take(10) {
            writeln!(f, "    {w}")?;
        }
        writeln!(
            f,
            "  applies        {} ({:.1}/s; filterctl apply p50 {} ms, max {} ms)",
            self.applies,
            self.applies as f64 / secs,
            self.apply_ms.0,
            self.apply_ms.1
        )?;
        writeln!(
            f,
            "  clients        {}, failures {}",
            self.clients,
            self.failures.len()
        )?;
        for e in self.failures.iter().take(10) {
            writeln!(f, "    {e}")?;
        }
        writeln!(f, "  link flaps     {}", self.flaps)?;
        writeln!(
            f,
            "  filterd RSS    {} KiB first, {} KiB last (slack {} KiB)",
            self.rss_kib.0, self.rss_kib.1, RSS_SLACK_KIB
        )?;
        write!(
            f,
            "  filterd fds    {} first, {} last (slack {})",
            self.fds.0, self.fds.1, FD_SLACK
        )
    }
}

/// A probe sent: its number, kind, source port, and the round (apply) it
/// was sent in.
struct Sent {
    n: u64,
    kind: usize,
    sport: u16,
    round: usize,
    at: Instant,
}

fn soak(id: &TestId, opts: &Options) -> Result<Summary> {
    let site = Arc::new(Site::build(id)?);
    let judges: Vec<Judge> = site
        .documents()?
        .into_iter()
        .map(Judge::new)
        .collect::<Result<_>>()?;
    let kinds = probes::kinds(&site.probed);
    // expected[doc][kind]: whether that document accepts that kind.
    let expected: Vec<Vec<bool>> = judges
        .iter()
        .map(|j| {
            kinds
                .iter()
                .map(|k| j.accepts(&k.from, &k.to, k.family, k.port))
                .collect::<Result<_>>()
        })
        .collect::<Result<_>>()?;
    let differ = (0..kinds.len())
        .filter(|&k| expected.iter().any(|e| e[k] != expected[0][k]))
        .count();
    println!(
        "soak: {} probe kinds, {differ} of them judged differently by the {} documents",
        kinds.len(),
        judges.len()
    );
    let receivers = Receivers::start(&site.probed)?;
    let daemon = DaemonGuard::start_with(
        id,
        site.cloud.host(),
        DaemonOptions {
            args: vec!["--capture-window".into(), "1s".into()],
            ..DaemonOptions::default()
        },
    )?;
    let pid = daemon.pid().context("filterd runs")?;
    let result = run(
        &site,
        &daemon,
        &judges,
        &kinds,
        &expected,
        &receivers.arrivals,
        opts,
    );
    ensure!(
        daemon.pid() == Some(pid) && daemon_alive(pid),
        "filterd {pid} is gone; its log:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    ensure!(
        !log.contains("panicked"),
        "filterd panicked; its log:\n{log}"
    );
    drop(daemon);
    drop(receivers);
    result
}

fn daemon_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The soak proper: the apply and probe loop here, the workers alongside.
fn run(
    site: &Arc<Site>,
    daemon: &DaemonGuard,
    judges: &[Judge],
    kinds: &[Kind],
    expected: &[Vec<bool>],
    arrivals: &Arrivals,
    opts: &Options,
) -> Result<Summary> {
    let pid = daemon.pid().context("filterd runs")?;
    let (pause, stop, tally) = (
        Arc::new(Pause::default()),
        Arc::new(AtomicBool::new(false)),
        Arc::new(Tally::default()),
    );
    // The first document before the workers start: `get` has an answer.
    let mut applies = vec![apply(daemon, &judges[0].document)?];
    let ctl = Ctl {
        bins: daemon.bins().clone(),
        socket: daemon.socket().to_owned(),
    };
    let workers = [
        thread::spawn({
            let (pause, stop, tally) = (pause.clone(), stop.clone(), tally.clone());
            move || churn::clients(ctl, pause, stop, tally)
        }),
        thread::spawn({
            let (site, pause, stop, tally) =
                (site.clone(), pause.clone(), stop.clone(), tally.clone());
            move || churn::flap(site, pause, stop, tally)
        }),
    ];
    let started = Instant::now();
    let warm_up = opts.duration.mul_f64(WARM_UP);
    let mut summary = Summary::default();
    let mut first_sample = None;
    let mut sent: Vec<Sent> = Vec::new();
    let mut next_probe = 0u64;
    let mut pick = 0usize;
    let loop_result = (|| -> Result<()> {
        while started.elapsed() < opts.duration {
            let round = applies.len() - 1;
            let doc = round % judges.len();
            // A round of probes under the generation just applied.
            let picked: Vec<(u64, usize)> = (0..ROUND)
                .map(|i| {
                    pick = (pick + 7 + i) % kinds.len();
                    next_probe += 1;
                    (next_probe, pick)
                })
                .collect();
            let now = Instant::now();
            let ports = probes::send(
                &picked
                    .iter()
                    .map(|&(n, k)| (n, &kinds[k]))
                    .collect::<Vec<_>>(),
            )?;
            for &(n, kind) in &picked {
                let sport = ports.get(&n).copied().unwrap_or(0);
                sent.push(Sent {
                    n,
                    kind,
                    sport,
                    round,
                    at: now,
                });
            }
            // Until every probe this document accepts has arrived.
            let deadline = Instant::now() + ARRIVAL_WAIT;
            while picked
                .iter()
                .any(|&(n, k)| expected[doc][k] && arrivals.get(n).is_none())
                && Instant::now() < deadline
            {
                thread::sleep(Duration::from_millis(2));
            }
            if first_sample.is_none() && started.elapsed() >= warm_up {
                first_sample = Some(sample(daemon, &pause, pid)?);
            }
            if round % 50 == 49 {
                println!(
                    "soak: {:.0} s: {} applies, {} probes; filterd {} KiB, {} fds (not parked)",
                    started.elapsed().as_secs_f64(),
                    applies.len(),
                    sent.len(),
                    rss_kib(pid).unwrap_or(0),
                    open_fds(pid).unwrap_or(0),
                );
            }
            let since = applies[round].0.elapsed();
            thread::sleep(APPLY_EVERY.saturating_sub(since));
            let next = &judges[(round + 1) % judges.len()].document;
            applies.push(apply(daemon, next)?);
        }
        Ok(())
    })();
    let last_sample = sample(daemon, &pause, pid);
    stop.store(true, Ordering::SeqCst);
    pause.release();
    for w in workers {
        if w.join().is_err() {
            tally.fail("a worker panicked");
        }
    }
    loop_result?;
    // Late arrivals had a second more.
    thread::sleep(Duration::from_secs(1));
    let (first, last) = (
        first_sample.context("the soak ended before its warm-up")?,
        last_sample?,
    );
    summary.duration = started.elapsed();
    summary.probes = sent.len() as u64;
    summary.wrong = judge(&sent, kinds, expected, arrivals, &applies, judges.len());
    if !summary.wrong.is_empty() {
        explain_wrong(daemon, &sent, kinds, &summary.wrong);
    }
    summary.apply_ms = percentiles(applies.iter().filter_map(|a| a.2).collect());
    summary.applies = applies.len() as u64;
    summary.clients = tally.clients.load(Ordering::Relaxed);
    summary.flaps = tally.flaps.load(Ordering::Relaxed);
    summary.failures = tally.take_failures();
    summary.rss_kib = (first.0, last.0);
    summary.fds = (first.1, last.1);
    // The interface that came and went is guarded again.
    wait_all_attached(daemon)?;
    Ok(summary)
}

/// Applies `doc`: when the apply was asked, the generation, how long
/// `filterctl apply` took (ms).
fn apply(daemon: &DaemonGuard, doc: &Value) -> Result<(Instant, u64, Option<u64>)> {
    let asked = Instant::now();
    let result = daemon.apply(doc).context("an apply during the soak")?;
    let generation = result["generation"]
        .as_u64()
        .with_context(|| format!("no generation in {result}"))?;
    let took = u64::try_from(asked.elapsed().as_millis()).ok();
    Ok((asked, generation, took))
}

/// (p50, max) of `values`.
fn percentiles(mut values: Vec<u64>) -> (u64, u64) {
    values.sort_unstable();
    (
        values.get(values.len() / 2).copied().unwrap_or(0),
        values.last().copied().unwrap_or(0),
    )
}

/// Prints the flow-log records of the wrongly judged probes: the kernel's
/// own account of what it did to them (action, reason, generation).
fn explain_wrong(daemon: &DaemonGuard, sent: &[Sent], kinds: &[Kind], wrong: &[String]) {
    // The last capture window reaches the file within its length (1 s).
    thread::sleep(Duration::from_secs(2));
    let log = std::fs::read_to_string(&daemon.paths().flow_log).unwrap_or_default();
    let is_wrong = |p: &&Sent| {
        wrong
            .iter()
            .any(|w| w.starts_with(&format!("probe {} ", p.n)))
    };
    for probe in sent.iter().filter(is_wrong).take(10) {
        let kind = &kinds[probe.kind];
        let (src, dst) = (
            kind.from.addr(kind.family).to_string(),
            kind.to.addr(kind.family).to_string(),
        );
        let records: Vec<&str> = log
            .lines()
            .filter(|l| {
                serde_json::from_str::<Value>(l).is_ok_and(|r| {
                    r["srcaddr"] == src.as_str()
                        && r["dstaddr"] == dst.as_str()
                        && r["srcport"] == probe.sport
                        && r["dstport"] == kind.port
                })
            })
            .collect();
        println!(
            "soak: probe {} {kind} from port {}: flow log says {records:?}",
            probe.n, probe.sport
        );
    }
}

/// filterd's (RSS KiB, descriptors) with every worker parked, every client
/// gone and every interface attached.
fn sample(daemon: &DaemonGuard, pause: &Pause, pid: u32) -> Result<(u64, usize)> {
    ensure!(
        pause.hold(WORKERS, Duration::from_secs(120)),
        "the workers did not park for a sample"
    );
    let result = (|| {
        wait_all_attached(daemon)?;
        // The daemon closes a connection as soon as its client goes; give
        // its tasks a moment.
        thread::sleep(Duration::from_millis(500));
        Ok((rss_kib(pid)?, open_fds(pid)?))
    })();
    pause.release();
    result
}

/// Waits until `status` shows every ENI attached (not degraded).
fn wait_all_attached(daemon: &DaemonGuard) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, degraded) = daemon.status_json()?;
        if !degraded {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "an interface is still not guarded 10 s after it came back: {status}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Every wrong verdict: a probe the enforced document accepts that did not
/// arrive, or one that arrived although every document enforced between
/// its send and its arrival drops it.
fn judge(
    sent: &[Sent],
    kinds: &[Kind],
    expected: &[Vec<bool>],
    arrivals: &Arrivals,
    applies: &[(Instant, u64, Option<u64>)],
    docs: usize,
) -> Vec<String> {
    let mut wrong = Vec::new();
    for probe in sent {
        let doc = probe.round % docs;
        let generation = applies[probe.round].1;
        let kind = &kinds[probe.kind];
        match arrivals.get(probe.n) {
            None if expected[doc][probe.kind] => wrong.push(format!(
                "probe {} {kind}: generation {generation} (document {doc}) accepts it; it never \
                 arrived",
                probe.n
            )),
            None => {}
            Some(at) => {
                // Rounds whose apply was asked before the arrival.
                let last = (probe.round..applies.len())
                    .take_while(|&r| applies[r].0 <= at)
                    .last()
                    .unwrap_or(probe.round);
                let accepted = (probe.round..=last).any(|r| expected[r % docs][probe.kind]);
                if !accepted {
                    wrong.push(format!(
                        "probe {} {kind}: arrived {:?} after it was sent, though generation \
                         {generation} (document {doc}){} drops it",
                        probe.n,
                        at.saturating_duration_since(probe.at),
                        if last > probe.round {
                            " and every one after it until then"
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
    }
    wrong
}
