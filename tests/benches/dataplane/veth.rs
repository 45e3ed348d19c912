//! filter against nftables, iptables and nothing, with real traffic on a
//! veth pair (see `traffic.rs` for the loads and `netfilter.rs` for the
//! translations).
//!
//! Every engine gets its own pair of namespaces per rule count, so no
//! connection table carries over. The server's interface is the guarded
//! one: the data plane in `nic` mode (XDP sees what arrives, ENI ingress),
//! nftables and iptables in the server namespace's `input`/`output` hooks,
//! the empty programs on the same hooks as the data plane.
//!
//! The engines of one rule count are installed side by side and measured
//! in rounds (each engine once per round, every load), and the median of
//! the rounds is reported: on a shared machine the load of the moment
//! then weighs on every engine alike, and the ratios between engines hold
//! better than the absolute numbers.
use std::{io::Write as _, process::Stdio, time::Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::programs::{
    tc::{self, SchedClassifierLinkId},
    xdp::XdpLinkId,
    TcAttachType, XdpMode,
};
use filter::compile::{compile, SlotTable};
use filter_tests::{cmd, netns::Netns};

use crate::{
    netfilter,
    pair::Pair,
    rules,
    testrun::{self, Noop, Runner as _},
    traffic::{self, Timing},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    None,
    Noop,
    Filter,
    Nft,
    Iptables,
    IptablesLegacy,
}

impl Engine {
    pub fn label(self) -> &'static str {
        match self {
            Self::None => "no filter",
            Self::Noop => "empty XDP+TC",
            Self::Filter => "filter",
            Self::Nft => "nftables",
            Self::Iptables => "iptables (nft)",
            Self::IptablesLegacy => "iptables-legacy",
        }
    }

    /// Whether it enforces the rules (and must drop the closed port).
    fn filters(self) -> bool {
        !matches!(self, Self::None | Self::Noop)
    }
}

/// One measured cell.
pub struct Row {
    pub engine: Engine,
    pub rules: usize,
    /// Seconds to install the rule set (compile + write, `nft -f`,
    /// `iptables-restore`).
    pub setup_s: f64,
    /// What was installed, in the engine's units.
    pub size: String,
    /// Datagrams to a closed port that got through (of 20).
    pub closed_passed: u64,
    pub new_flows: f64,
    pub established: f64,
    pub tcp_gbit: f64,
}

/// Everything the comparison needs loaded once.
pub struct Engines<'a> {
    pub noop: &'a mut Noop,
    pub filter: &'a mut testrun::Bench,
}

/// An engine installed on its own pair.
struct Cell {
    engine: Engine,
    pair: Pair,
    noop_links: Option<NoopLinks>,
    setup_s: f64,
    size: String,
    closed_passed: u64,
    /// Samples of the three loads.
    samples: [Vec<f64>; 3],
}

/// Measures every engine of `list` with `bench`'s rules, in rounds (see
/// the module comment). An engine that cannot be installed is reported
/// and left out. Whatever happens, the programs are detached again before
/// the namespaces go.
pub fn measure(
    engines: &mut Engines<'_>,
    list: &[Engine],
    bench: &rules::Bench,
    timing: Timing,
) -> Result<Vec<Row>> {
    let mut cells: Vec<Cell> = Vec::new();
    let result = (|| -> Result<()> {
        for &engine in list {
            let pair = Pair::new(&format!("{}{}", short(engine), bench.rules))?;
            let mut noop_links = None;
            let installed = install(engines, engine, bench, &pair, &mut noop_links);
            let cell = Cell {
                engine,
                pair,
                noop_links,
                setup_s: 0.0,
                size: String::new(),
                closed_passed: 0,
                samples: Default::default(),
            };
            match installed {
                Ok((setup_s, size)) => cells.push(Cell {
                    setup_s,
                    size,
                    ..cell
                }),
                Err(e) => {
                    println!("{}: not measured: {e:#}", engine.label());
                    let _ = uninstall(engines, cell);
                }
            }
        }
        for cell in &mut cells {
            cell.closed_passed =
                traffic::closed_port_passes(&cell.pair.client, &cell.pair.server, 20)?;
            if cell.engine.filters() && cell.closed_passed != 0 {
                eprintln!(
                    "WARNING: {}: {} of 20 datagrams to a closed port got through",
                    cell.engine.label(),
                    cell.closed_passed
                );
            }
        }
        let loads: [(Load, &str); 3] = [
            (traffic::new_flows, "new flows"),
            (traffic::established, "established flow"),
            (traffic::tcp_stream, "TCP stream"),
        ];
        for _ in 0..timing.repeats.max(1) {
            for cell in &mut cells {
                for (samples, (load, what)) in cell.samples.iter_mut().zip(loads) {
                    let value = load(&cell.pair.client, &cell.pair.server, timing)
                        .with_context(|| format!("{}: {what}", cell.engine.label()))?;
                    samples.push(value);
                }
            }
        }
        Ok(())
    })();
    let mut rows = Vec::new();
    let mut removed = Ok(());
    for cell in cells {
        let [new_flows, established, tcp_gbit] = cell.samples.clone().map(median);
        rows.push(Row {
            engine: cell.engine,
            rules: bench.rules,
            setup_s: cell.setup_s,
            size: cell.size.clone(),
            closed_passed: cell.closed_passed,
            new_flows,
            established,
            tcp_gbit,
        });
        removed = removed.and(uninstall(engines, cell));
    }
    result?;
    removed?;
    Ok(rows)
}

pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

type NoopLinks = (XdpLinkId, SchedClassifierLinkId);

/// A traffic load: client and server namespaces → its rate.
type Load = fn(&Netns, &Netns, Timing) -> Result<f64>;

/// Installs `engine` on the server's interface: (seconds the rule set took
/// to install, what was installed).
fn install(
    engines: &mut Engines<'_>,
    engine: Engine,
    bench: &rules::Bench,
    pair: &Pair,
    noop_links: &mut Option<NoopLinks>,
) -> Result<(f64, String)> {
    let (server, iface) = (&pair.server, pair.server_if.as_str());
    match engine {
        Engine::None => Ok((0.0, "-".into())),
        Engine::Noop => {
            let noop = &mut *engines.noop;
            *noop_links = Some(server.run(|| -> Result<_> {
                let xdp = noop.xdp()?.attach(iface, XdpMode::default())?;
                match tc::qdisc_add_clsact(iface) {
                    Ok(()) | Err(tc::TcError::AlreadyAttached) => {}
                    Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {
                    }
                    Err(e) => return Err(anyhow!(e).context("adding clsact")),
                }
                let tc = noop.tc()?.attach(iface, TcAttachType::Egress)?;
                Ok((xdp, tc))
            })??);
            Ok((0.0, "-".into()))
        }
        Engine::Filter => {
            let ifindex = server.run(|| nix::net::if_::if_nametoindex(iface))??;
            let dp = engines.filter.dataplane();
            server.run(|| -> Result<()> {
                // Interface indices repeat in fresh namespaces: forget any
                // earlier cell's interface of this name, then attach.
                dp.detach(iface)?;
                dp.attach(iface)
                    .with_context(|| format!("attaching to {iface}"))?;
                Ok(())
            })??;
            let applied = engines.filter.apply(&bench.ruleset, ifindex)?;
            let stats = applied.plan.stats();
            Ok((
                applied.compile_s + applied.write_s,
                format!("{} rule sets, {} prefixes", stats.rule_sets, stats.rules),
            ))
        }
        Engine::Nft => {
            let plan = compile(&bench.ruleset, 1, &|_| Some(1), &mut SlotTable::new())
                .map_err(|e| anyhow!("compiling: {e}"))?;
            let nft = netfilter::nft(&plan, iface)?;
            let start = Instant::now();
            run_with_input(server, "nft", &["-f", "-"], &nft.text)?;
            Ok((
                start.elapsed().as_secs_f64(),
                format!("{} chains, {} elements", nft.chains, nft.elements),
            ))
        }
        Engine::Iptables | Engine::IptablesLegacy => {
            let ipt = netfilter::iptables(&bench.ruleset, iface)?;
            let (v4, v6) = if engine == Engine::Iptables {
                ("iptables-restore", "ip6tables-restore")
            } else {
                ("iptables-legacy-restore", "ip6tables-legacy-restore")
            };
            let start = Instant::now();
            run_with_input(server, v4, &[], &ipt.v4)?;
            run_with_input(server, v6, &[], &ipt.v6)?;
            Ok((
                start.elapsed().as_secs_f64(),
                format!("{} + {} (v6) rules", ipt.rules[0], ipt.rules[1]),
            ))
        }
    }
}

/// Detaches what [`install`] attached (nftables and iptables go with the
/// namespaces), then removes the namespaces.
fn uninstall(engines: &mut Engines<'_>, mut cell: Cell) -> Result<()> {
    let (server, iface) = (&cell.pair.server, cell.pair.server_if.as_str());
    match cell.engine {
        Engine::Filter => {
            let dp = engines.filter.dataplane();
            server.run(|| dp.detach(iface))??;
        }
        Engine::Noop => {
            if let Some((xdp, tc)) = cell.noop_links.take() {
                let noop = &mut *engines.noop;
                noop.xdp()?.detach(xdp)?;
                noop.tc()?.detach(tc)?;
            }
        }
        _ => {}
    }
    drop(cell);
    Ok(())
}

fn short(engine: Engine) -> &'static str {
    match engine {
        Engine::None => "n",
        Engine::Noop => "e",
        Engine::Filter => "f",
        Engine::Nft => "t",
        Engine::Iptables => "i",
        Engine::IptablesLegacy => "l",
    }
}

/// Whether the legacy (x_tables) iptables works in a namespace here.
pub fn legacy_available() -> bool {
    cmd::run(cmd::tool("sh").args(["-c", "command -v iptables-legacy-restore"])).is_ok()
}

/// `program args` in `ns` with `input` on its stdin (a rule set for
/// `nft -f -` or `iptables-restore`); fails with what it printed.
pub fn run_with_input(ns: &Netns, program: &str, args: &[&str], input: &str) -> Result<()> {
    let mut command = ns.cmd(program);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = cmd::describe(&command);
    let mut child = command
        .spawn()
        .with_context(|| format!("running `{what}`"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .with_context(|| format!("writing to `{what}`"))?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(
            "`{what}` failed ({}): {}",
            out.status,
            stderr.chars().take(2000).collect::<String>()
        );
    }
    Ok(())
}
