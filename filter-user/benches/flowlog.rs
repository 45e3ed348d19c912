//! Flow-log event throughput (issue 6), as root: `cargo xtask bench`, or
//! `cargo bench -p filter-user --bench flowlog`.
//!
//! `filter_flowlog_bench` (`filter-ebpf/src/bench/flowlog.rs`) sends one
//! new-connection event per run through the data plane's own `ct_event`;
//! BPF_PROG_TEST_RUN with `repeat` runs it back to back on CPU 0, while a
//! thread on CPU 1 drains `FILTER_EVENTS` with the collector's own code
//! (`dataplane::decode` into a `flowlog::window::FlowTable`, cleared
//! every 262,144 flows as the conntrack table would bound it), sleeping in
//! poll(2) when the ring is empty as the collector sleeps in `AsyncFd`.
//!
//! - **paced**: the producer never gets more than half a ring ahead of the
//!   consumer, so nothing may be lost: events per second consumed without
//!   loss (goal: 1 million). The run fails if any event was lost.
//! - **flood**: the producer as fast as it goes: what the consumer keeps up
//!   with, and what a full ring costs (counted in `FILTER_FLOWLOSS`, never
//!   silent).
//!
//! The established path sends no event; its cost (the counters and the
//! per-direction flags byte) is in the data-plane benchmark's
//! "established" rows.
use std::{
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{SchedClassifier, TestRun, TestRunOptions},
    EbpfLoader,
};
use clap::Parser;
use filter::{
    dataplane::{decode, Event},
    flowlog::window::{FlowTable, Origin},
};
use filter_common::{names, FlowLoss, FLOW_EVENTS_BYTES};
use nix::{
    sched::{sched_setaffinity, CpuSet},
    unistd::Pid,
};

const PROG: &str = "filter_flowlog_bench";
/// Events the ring holds: a 120-byte event and its 8-byte header.
const RING_EVENTS: u64 = FLOW_EVENTS_BYTES as u64 / 128;
/// Runs per BPF_PROG_TEST_RUN call.
const CHUNK: u32 = 4096;
const GOAL: f64 = 1_000_000.0;

#[derive(Parser, Debug)]
#[command(about = "filter flow-log event throughput (root)")]
struct Args {
    /// Passed by `cargo bench`; without it nothing runs.
    #[arg(long, hide = true)]
    bench: bool,
    /// Fewer events (a quick look).
    #[arg(long)]
    quick: bool,
    /// Events per measurement.
    #[arg(long, default_value_t = 4_000_000)]
    events: u64,
}

struct Outcome {
    produced: u64,
    consumed: u64,
    lost: u64,
    elapsed: Duration,
    /// Kernel ns per event (the producer alone).
    kernel_ns: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.bench {
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowlog bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("loads eBPF programs: run as root");
    }
    let events = if args.quick {
        args.events.min(1_000_000)
    } else {
        args.events
    };
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    println!("## Flow-log events\n");
    println!(
        "One new-connection event per run of `{PROG}` on CPU 0 (BPF_PROG_TEST_RUN), drained on \
         CPU {} by the collector's decoder and flow table; {events} events per row.\n",
        if cpus > 1 { 1 } else { 0 }
    );
    println!("| mode | events/s consumed | lost | kernel ns/event | seconds |");
    println!("|---|---|---|---|---|");
    let mut paced_rate = 0.0;
    for paced in [true, false] {
        let o = measure(paced, events, cpus > 1)?;
        let rate = o.consumed as f64 / o.elapsed.as_secs_f64();
        println!(
            "| {} | {:.0} | {} of {} | {:.0} | {:.2} |",
            if paced { "paced (no loss)" } else { "flood" },
            rate,
            o.lost,
            o.produced,
            o.kernel_ns,
            o.elapsed.as_secs_f64()
        );
        if paced {
            if o.lost != 0 {
                bail!("the paced run lost {} events", o.lost);
            }
            paced_rate = rate;
        } else if o.consumed + o.lost != o.produced {
            bail!(
                "events unaccounted for: {} produced, {} consumed, {} counted lost",
                o.produced,
                o.consumed,
                o.lost
            );
        }
    }
    let capacity = consumer_alone(events)?;
    println!("| consumer alone (a filled ring, drained) | {capacity:.0} | 0 | - | - |");
    println!(
        "\nGoal: {GOAL:.0} events/s consumed without loss: {:.2}× the goal (paced); the \
         consumer alone can take {:.2}× the goal. The paced and flood rows need both CPUs \
         to themselves: other load (packets in softirq especially) starves the producer.",
        paced_rate / GOAL,
        capacity / GOAL
    );
    Ok(())
}

/// The consumer's own rate: half a ring is filled with nobody reading,
/// then drained and timed, until `total` events have gone through.
fn consumer_alone(total: u64) -> Result<f64> {
    let (ebpf, mut ring, _loss) = load()?;
    let prog: &SchedClassifier = ebpf
        .program(PROG)
        .ok_or_else(|| anyhow!("no {PROG}"))?
        .try_into()?;
    pin(0)?;
    let frame = [0u8; 64];
    let half = u32::try_from(RING_EVENTS / 2).unwrap_or(CHUNK);
    let mut table = FlowTable::new();
    let (mut n, mut busy) = (0u64, Duration::ZERO);
    while n < total {
        prog.test_run(TestRunOptions {
            data_in: Some(&frame),
            repeat: half,
            ..TestRunOptions::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
        let t0 = Instant::now();
        while let Some(item) = ring.next() {
            if let Some(Event::CtNew(k, e)) = decode(&item) {
                table.ct(&k, &e, Origin::Created);
            }
            n += 1;
            if table.len() >= 262_144 {
                table.clear();
            }
        }
        busy += t0.elapsed();
    }
    Ok(n as f64 / busy.as_secs_f64())
}

type Loaded = (aya::Ebpf, RingBuf<MapData>, PerCpuArray<MapData, FlowLoss>);

/// A fresh copy of the object with the benchmark program loaded, its ring
/// buffer and loss counters.
fn load() -> Result<Loaded> {
    let object = filter::dataplane::object::bench_object()?;
    // The object's big preallocated maps are made small: only the ring and
    // the loss counters are used.
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(names::CT, 1)
        .map_max_entries(names::FRAGS, 1)
        .map_max_entries(names::REJECTS, 1)
        .load(object)
        .context("loading the eBPF object")?;
    let prog: &mut SchedClassifier = ebpf
        .program_mut(PROG)
        .ok_or_else(|| anyhow!("the object has no {PROG}"))?
        .try_into()?;
    prog.load()?;
    let ring = RingBuf::try_from(
        ebpf.take_map(names::EVENTS)
            .ok_or_else(|| anyhow!("no {}", names::EVENTS))?,
    )?;
    let loss: PerCpuArray<MapData, FlowLoss> = PerCpuArray::try_from(
        ebpf.take_map(names::FLOWLOSS)
            .ok_or_else(|| anyhow!("no {}", names::FLOWLOSS))?,
    )?;
    Ok((ebpf, ring, loss))
}

fn pin(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set).context("sched_setaffinity")?;
    Ok(())
}

/// One measurement with a fresh object (fresh ring and loss counters).
fn measure(paced: bool, total: u64, two_cpus: bool) -> Result<Outcome> {
    let (ebpf, mut ring, loss) = load()?;
    let prog: &SchedClassifier = ebpf
        .program(PROG)
        .ok_or_else(|| anyhow!("no {PROG}"))?
        .try_into()?;

    let consumed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (consumed, stop) = (Arc::clone(&consumed), Arc::clone(&stop));
        thread::spawn(move || -> Result<u64> {
            pin(if two_cpus { 1 } else { 0 })?;
            let mut table = FlowTable::new();
            let mut n = 0u64;
            loop {
                let took = match ring.next() {
                    Some(item) => {
                        if let Some(Event::CtNew(k, e)) = decode(&item) {
                            table.ct(&k, &e, Origin::Created);
                        }
                        true
                    }
                    None => false,
                };
                if took {
                    n += 1;
                    if n.is_multiple_of(256) {
                        consumed.store(n, Ordering::Release);
                    }
                    if table.len() >= 262_144 {
                        table.clear();
                    }
                    continue;
                }
                consumed.store(n, Ordering::Release);
                if stop.load(Ordering::Acquire) {
                    return Ok(n);
                }
                // Sleep until the kernel says there is data, as the
                // collector does (`AsyncFd`): the kernel then wakes the
                // reader once per drain, not once per event.
                wait_readable(&ring, Duration::from_millis(10));
            }
        })
    };

    pin(0)?;
    let frame = [0u8; 64];
    let mut produced = 0u64;
    let mut kernel = Duration::ZERO;
    let start = Instant::now();
    while produced < total {
        if paced {
            while produced.saturating_sub(consumed.load(Ordering::Acquire)) > RING_EVENTS / 2 {
                std::hint::spin_loop();
            }
        }
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                repeat: CHUNK,
                ..TestRunOptions::default()
            })
            .context("BPF_PROG_TEST_RUN")?;
        kernel += r.duration * CHUNK;
        produced += u64::from(CHUNK);
    }
    let lost = lost_events(&loss)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumed.load(Ordering::Acquire) + lost < produced {
        if Instant::now() > deadline {
            break;
        }
        thread::yield_now();
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Release);
    let consumed = consumer
        .join()
        .map_err(|_| anyhow!("the consumer panicked"))??;
    Ok(Outcome {
        produced,
        consumed,
        lost,
        elapsed,
        kernel_ns: kernel.as_nanos() as f64 / produced as f64,
    })
}

/// poll(2) on the ring buffer's fd.
fn wait_readable(ring: &RingBuf<MapData>, limit: Duration) {
    use std::os::fd::AsRawFd as _;
    let mut fd = libc::pollfd {
        fd: ring.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut fd, 1, limit.as_millis() as i32) };
}

/// `FILTER_FLOWLOSS[0].events`, summed over CPUs.
fn lost_events(loss: &PerCpuArray<MapData, FlowLoss>) -> Result<u64> {
    let values = loss.get(&0, 0)?;
    Ok(values.iter().map(|v| v.events).sum())
}
