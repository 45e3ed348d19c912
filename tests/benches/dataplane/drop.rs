//! Drop rate of live frames (issue 18): 64-byte UDP frames no rule admits
//! (default-deny), made by [`crate::live`] on the client end of a veth
//! pair, against each engine on the server end, counted by the engine
//! itself at the guarded end:
//!
//! - **ceiling**: an XDP program that counts and drops (`live.rs` sink);
//! - **filter**, XDP hook and tc (tcx ingress) hook: the data plane in
//!   `nic` mode, its drop counters (`FILTER_STATS`);
//! - **nftables** netdev ingress, strength-ordered concatenated-range sets
//!   (pipapo, `netfilter::nft_pipapo`), its rule counters;
//! - **iptables-legacy** raw `PREROUTING`, the linear chain, its counters.
//!
//! A frame goes to UDP [`DIVERSE_UDP_PORT`] from [`REMOTE`], outside
//! every generated peer: the port class with the most rules, whose whole
//! address search runs and misses. The compiled model confirms the
//! default-deny before a number is taken, and the engine's counter must
//! see what the sink would.
use anyhow::{anyhow, ensure, Context as _, Result};
use filter::{
    compile::{
        compile,
        model::{Hook, Model},
        synthetic::{Generator, DIVERSE_UDP_PORT, ENI_ADDR},
        SlotTable,
    },
    dataplane::IngressHook,
    ruleset::Ruleset,
    validate::load,
    verdict::{Packet, Reason},
};
use filter_common::{PROTO_TCP, PROTO_UDP, STAT_DROP_DEFAULT};

use crate::{
    live::{self, LiveFrames, Rate, Tuples},
    pair::Pair,
    testrun,
};

/// The frames' source: TEST-NET-2, which no generator draws peers from.
pub const REMOTE: [u8; 4] = [198, 51, 100, 7];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Ceiling,
    Filter(IngressHook),
    Nft,
    IptablesLegacy,
}

impl Engine {
    pub fn label(self) -> &'static str {
        match self {
            Self::Ceiling => "XDP count and drop (ceiling)",
            Self::Filter(IngressHook::Xdp) => "filter, XDP",
            Self::Filter(IngressHook::Tc) => "filter, tc",
            Self::Nft => "nftables pipapo",
            Self::IptablesLegacy => "iptables-legacy raw",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Self::Ceiling => "c",
            Self::Filter(IngressHook::Xdp) => "x",
            Self::Filter(IngressHook::Tc) => "t",
            Self::Nft => "n",
            Self::IptablesLegacy => "l",
        }
    }
}

/// One measured cell: frames per second the guarded end's engine dropped
/// (median of the runs), and what the generator made meanwhile.
#[derive(Clone, Debug)]
pub struct Cell {
    pub generator: Generator,
    pub rules: usize,
    pub engine: Engine,
    pub tuples: Tuples,
    /// `PROTO_UDP` (the drop-rate rows) or `PROTO_TCP` (the SYN flood).
    pub proto: u8,
    pub rate: Rate,
}

/// A document of `generator` with `rules` rules, its ENI on `iface` in
/// `nic` mode (XDP or tcx ingress is ENI ingress), validated.
pub fn ruleset(generator: Generator, rules: usize, iface: &str) -> Result<Ruleset> {
    let mut doc = generator.document(rules, iface);
    doc["enis"][0]["attach_mode"] = "nic".into();
    load(&doc.to_string()).map_err(|e| anyhow!("the {generator} document does not validate: {e:?}"))
}

/// The frame of this benchmark: UDP, or a TCP SYN for the flood rows.
pub fn frame(proto: u8) -> Vec<u8> {
    let dst = ENI_ADDR
        .parse::<std::net::Ipv4Addr>()
        .map_or([10, 0, 1, 10], |a| a.octets());
    if proto == PROTO_TCP {
        live::syn_frame(REMOTE, dst, DIVERSE_UDP_PORT)
    } else {
        live::udp_frame(REMOTE, dst, DIVERSE_UDP_PORT)
    }
}

/// Checks on the compiled rules that the frame is dropped by default-deny.
fn check_default_deny(rs: &Ruleset, proto: u8) -> Result<()> {
    let plan = compile(rs, 1, &|_| Some(1), &mut SlotTable::new())
        .map_err(|e| anyhow!("compiling: {e}"))?;
    let dst = ENI_ADDR.parse::<std::net::Ipv4Addr>()?;
    let pkt = Packet {
        src: std::net::Ipv4Addr::from(REMOTE).into(),
        dst: dst.into(),
        proto,
        src_port: 40000,
        dst_port: DIVERSE_UDP_PORT,
        icmp_type: 0,
    };
    let got = Model::new(&plan).classify(1, Hook::Xdp, &pkt);
    ensure!(
        got.decision.reason == Reason::DefaultDeny,
        "the benchmark's frame is decided by {}, not default-deny",
        got.decision.reason
    );
    Ok(())
}

/// What the drop-rate runs share.
pub struct Bench<'a> {
    pub live: &'a mut LiveFrames,
    pub filter: &'a mut testrun::Bench,
    pub seconds: f64,
    pub runs: usize,
}

impl Bench<'_> {
    /// Every engine of `engines` at `rules` rules of `generator`, each on
    /// a pair of its own, measured in rounds (each engine once per round)
    /// so the machine's load weighs on all alike.
    pub fn measure(
        &mut self,
        generator: Generator,
        rules: usize,
        engines: &[Engine],
        tuples: Tuples,
        proto: u8,
    ) -> Result<Vec<Cell>> {
        let mut installed = Vec::new();
        let result = (|| -> Result<Vec<Cell>> {
            for &engine in engines {
                let pair = Pair::new(&format!("d{}{rules}", engine.short()))?;
                let rs = ruleset(generator, rules, &pair.server_if)?;
                check_default_deny(&rs, proto)?;
                let guard = self
                    .install(engine, &rs, &pair)
                    .with_context(|| format!("{}: installing", engine.label()))?;
                installed.push((engine, pair, guard));
            }
            let mut templates = Vec::new();
            for (_, pair, _) in &installed {
                // Addressed to the guarded end, so its IP stack takes it.
                let mut template = frame(proto);
                template[..6].copy_from_slice(&live::mac(&pair.server, &pair.server_if)?);
                templates.push(template);
            }
            let mut samples: Vec<Vec<Rate>> = vec![Vec::new(); installed.len()];
            for _ in 0..self.runs.max(1) {
                for (((engine, pair, _), samples), template) in
                    installed.iter().zip(samples.iter_mut()).zip(&templates)
                {
                    let (live, filter) = (&*self.live, &*self.filter);
                    let mut seen = || counter(*engine, pair, live, filter);
                    let rate = live.send(
                        &pair.client,
                        &pair.client_if,
                        template,
                        tuples,
                        self.seconds,
                        &mut seen,
                    )?;
                    samples.push(rate);
                }
            }
            Ok(installed
                .iter()
                .zip(samples)
                .map(|((engine, _, _), s)| Cell {
                    generator,
                    rules,
                    engine: *engine,
                    tuples,
                    proto,
                    rate: median(s),
                })
                .collect())
        })();
        for (engine, pair, guard) in installed {
            if let Err(e) = self.uninstall(engine, guard, &pair) {
                eprintln!("{}: removing: {e:#}", engine.label());
            }
        }
        result
    }

    fn install(&mut self, engine: Engine, rs: &Ruleset, pair: &Pair) -> Result<Guard> {
        let (server, iface) = (&pair.server, pair.server_if.as_str());
        match engine {
            Engine::Ceiling => Ok(Guard::Sink(self.live.attach_sink(server, iface)?)),
            Engine::Filter(hook) => {
                let ifindex = server.run(|| nix::net::if_::if_nametoindex(iface))??;
                let dp = self.filter.dataplane();
                server.run(|| -> Result<()> {
                    // Interface indices repeat in fresh namespaces: forget
                    // an earlier pair's interface of this name first.
                    dp.detach(iface)?;
                    dp.attach_with(iface, hook)?;
                    Ok(())
                })??;
                if hook == IngressHook::Tc {
                    live::enable_napi(server, iface)?;
                }
                self.filter.apply(rs, ifindex)?;
                Ok(Guard::None)
            }
            Engine::Nft | Engine::IptablesLegacy => {
                live::enable_napi(server, iface)?;
                crate::stateless::install(engine == Engine::Nft, rs, server, iface)?;
                Ok(Guard::None)
            }
        }
    }

    fn uninstall(&mut self, engine: Engine, guard: Guard, pair: &Pair) -> Result<()> {
        match (engine, guard) {
            (_, Guard::Sink(link)) => self.live.detach_sink(link),
            (Engine::Filter(_), _) => {
                let dp = self.filter.dataplane();
                pair.server.run(|| dp.detach(&pair.server_if))??;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// What stays to remove after an engine was installed.
enum Guard {
    None,
    Sink(aya::programs::xdp::XdpLinkId),
}

/// The engine's own count of what it dropped at the guarded end.
/// filter's: its default-deny counter, the path this benchmark means.
fn counter(engine: Engine, pair: &Pair, live: &LiveFrames, filter: &testrun::Bench) -> Result<u64> {
    match engine {
        Engine::Ceiling => live.sink_seen(),
        Engine::Filter(_) => Ok(filter.stats()?[STAT_DROP_DEFAULT as usize]),
        Engine::Nft | Engine::IptablesLegacy => {
            crate::stateless::dropped(engine == Engine::Nft, &pair.server)
        }
    }
}

fn median(mut rates: Vec<Rate>) -> Rate {
    rates.sort_by(|a, b| a.seen.total_cmp(&b.seen));
    rates.get(rates.len() / 2).copied().unwrap_or(Rate {
        made: f64::NAN,
        seen: f64::NAN,
    })
}

/// How long and how often each cell is measured.
#[derive(Clone, Copy, Debug)]
pub struct Effort {
    pub seconds: f64,
    pub runs: usize,
}

/// The drop-rate part of the benchmark: every engine at every size of
/// both generators, then the SYN flood rows; prints its tables and
/// returns every cell.
pub fn run(sizes: &[usize], iptables_max: usize, effort: Effort) -> Result<Vec<Cell>> {
    let live = &mut LiveFrames::load().context("loading the live-frames programs")?;
    let filter = &mut testrun::Bench::new()?;
    let mut bench = Bench {
        live,
        filter,
        seconds: effort.seconds,
        runs: effort.runs,
    };
    println!("## Live frames: drop rate at the guarded end\n");
    println!(
        "64-byte UDP frames no rule admits (default-deny), made by BPF_PROG_TEST_RUN with \
         `BPF_F_TEST_XDP_LIVE_FRAMES` on one end of a veth pair (`XDP_TX`), one CPU; each \
         engine counts what it drops at the other end. Median of {} runs of {} s per cell, the \
         engines of a row measured in turn.\n",
        effort.runs, effort.seconds
    );
    let mut cells = Vec::new();
    for generator in Generator::ALL {
        println!("### {generator} generator\n");
        println!("| rules | engine | Mpps dropped | × ceiling | filter XDP ÷ this | made Mpps |");
        println!("|---:|---|---:|---:|---:|---:|");
        for &n in sizes {
            let mut engines = vec![
                Engine::Ceiling,
                Engine::Filter(IngressHook::Xdp),
                Engine::Filter(IngressHook::Tc),
                Engine::Nft,
            ];
            if n <= iptables_max {
                engines.push(Engine::IptablesLegacy);
            }
            let row = bench.measure(generator, n, &engines, Tuples::Repeated, PROTO_UDP)?;
            print_rows(&row);
            if n > iptables_max {
                println!(
                    "| {} | iptables-legacy raw | not measured (over --iptables-max) | | | |",
                    crate::thousands(n)
                );
            }
            cells.extend(row);
        }
        println!();
    }
    flood(&mut bench, sizes, &mut cells)?;
    Ok(cells)
}

/// Frames per second as Mpps, with the digits a slow engine needs.
fn mpps(per_second: f64) -> String {
    let m = per_second / 1e6;
    if m < 0.1 {
        format!("{m:.4}")
    } else {
        format!("{m:.2}")
    }
}

fn print_rows(row: &[Cell]) {
    let find = |e: Engine| row.iter().find(|c| c.engine == e).map(|c| c.rate.seen);
    let ceiling = find(Engine::Ceiling);
    let filter = find(Engine::Filter(IngressHook::Xdp));
    for c in row {
        let ratio = |of: Option<f64>, num: bool| {
            of.map_or("-".into(), |o| {
                format!(
                    "{:.2}",
                    if num {
                        o / c.rate.seen
                    } else {
                        c.rate.seen / o
                    }
                )
            })
        };
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            crate::thousands(c.rules),
            c.engine.label(),
            mpps(c.rate.seen),
            ratio(ceiling, false),
            ratio(filter, true),
            mpps(c.rate.made)
        );
    }
}

/// SYN flood of random tuples against one repeated SYN (issue 18 point
/// 2), filter on both hooks, at 10k rules (or the largest size below).
fn flood(bench: &mut Bench<'_>, sizes: &[usize], cells: &mut Vec<Cell>) -> Result<()> {
    let Some(&n) = sizes.iter().filter(|&&n| n <= 10_000).max() else {
        return Ok(());
    };
    println!(
        "### SYN flood: random tuples against one repeated tuple, {} rules\n",
        crate::thousands(n)
    );
    println!("| generator | engine | repeated Mpps | random Mpps | random ÷ repeated |");
    println!("|---|---|---:|---:|---:|");
    let engines = [
        Engine::Filter(IngressHook::Xdp),
        Engine::Filter(IngressHook::Tc),
    ];
    for generator in Generator::ALL {
        let repeated = bench.measure(generator, n, &engines, Tuples::Repeated, PROTO_TCP)?;
        let random = bench.measure(generator, n, &engines, Tuples::Random, PROTO_TCP)?;
        for (a, b) in repeated.iter().zip(&random) {
            println!(
                "| {generator} | {} | {} | {} | {:.2} |",
                a.engine.label(),
                mpps(a.rate.seen),
                mpps(b.rate.seen),
                b.rate.seen / a.rate.seen
            );
        }
        cells.extend(repeated);
        cells.extend(random);
    }
    println!();
    Ok(())
}
