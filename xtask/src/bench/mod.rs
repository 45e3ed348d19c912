//! `cargo xtask bench`: the benchmarks, measured in one run.
//!
//! 1. The rule compiler (`filter-user/benches/compile.rs`): compile time
//!    and map sizes at 10 to 100k rules. No privileges needed.
//! 2. The data plane (`tests/benches/dataplane/`), as root:
//!    BPF_PROG_TEST_RUN ns per packet against the empty program; real
//!    traffic on a veth pair, filter against nftables, iptables and no
//!    filter at the same rule counts; the live-frames drop rate against
//!    the XDP ceiling; TCP per ingress hook and apply time and peak RSS
//!    through the release `filterd` and `filterctl`. Its report (Markdown
//!    tables) is also written to `target/bench/dataplane.md`, its plots to
//!    `docs/bench/*.svg`.
//! 3. Flow-log events (`filter-user/benches/flowlog.rs`, `flowlog.rs`
//!    here), as root.
//!
//! A `/metrics` scrape at 100k rules (`metrics.rs` here) runs after the
//! compiler benchmark, unprivileged.
//!
//! The data-plane benchmark removes its namespaces itself; if it is killed
//! (Ctrl-C reaches it, not this process, which waits) whatever it left is
//! removed here afterwards.
use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::Stdio,
};

use anyhow::{bail, Context as _, Result};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

mod flowlog;
mod metrics;

use crate::{
    run::{cargo, cmd, describe, is_root, run, workspace_root, Failed},
    setup::Toolchain,
};

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Only the compiler benchmark (no root needed).
    #[arg(long)]
    pub unprivileged: bool,
    /// Shorter data-plane measurements: a quick look, noisier numbers.
    #[arg(long)]
    pub quick: bool,
    /// Arguments for the data-plane benchmark (after `--`): `--only
    /// testrun|veth|drop|tcp|apply`, `--sizes 10,1000`, `--veth-sizes 10`,
    /// `--drop-sizes 10,1000`, `--apply-sizes 10,1000`, `--seconds 2`,
    /// `--iptables-max 10000`.
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// Namespaces of the data-plane benchmark: `ft-bench-<pid>-<n>-<label>`
/// (`filter_tests::id::TestId` of the test name `bench`).
const NETNS_PREFIX: &str = "ft-bench-";
const NETNS_DIR: &str = "/run/netns";

pub fn bench(toolchain: &Toolchain, opts: &Options) -> Result<()> {
    if !opts.unprivileged && !is_root() {
        bail!(
            "the data-plane benchmarks load eBPF programs and create network namespaces: run as \
             root (`sudo -E cargo xtask bench`), or `cargo xtask bench --unprivileged` for the \
             compiler benchmark only"
        );
    }
    let env = toolchain.build_env();
    // `-- --only PART` asks for one part of the data plane: nothing else.
    let one_part = opts
        .args
        .iter()
        .any(|a| a == "--only" || a.starts_with("--only="));
    if !one_part {
        println!("xtask: bench 1/3: the rule compiler");
        run(cargo(["bench", "-p", "filter-user", "--bench", "compile"]).envs(env.clone()))?;
        metrics::bench(toolchain)?;
    }
    if opts.unprivileged {
        return Ok(());
    }

    println!(
        "xtask: bench 2/3: the data plane (BPF_PROG_TEST_RUN; veth: filter, nftables, iptables; \
         live-frames drop rate; TCP per hook; apply time and RSS)"
    );
    // The daemon's parts measure the binaries a host runs.
    run(cargo(["build", "--release", "-p", "filter-user", "--bins"]).envs(env.clone()))?;
    let mut dataplane = cargo(["bench", "-p", "filter-tests", "--bench", "dataplane", "--"]);
    dataplane.env("FILTER_BIN_DIR", crate::demo::target_dir().join("release"));
    if opts.quick {
        dataplane.arg("--quick");
    }
    dataplane.args(&opts.args).envs(env);
    let report = workspace_root().join("target/bench/dataplane.md");
    let result = while_ignoring_sigint(|| run_teed(&mut dataplane, &report));
    let swept = sweep();
    if swept > 0 {
        println!("xtask: removed {swept} network namespaces the benchmark left behind");
    }
    result?;
    println!(
        "xtask: the data-plane report is also in {}",
        report.display()
    );
    if one_part {
        return Ok(());
    }
    flowlog::bench(toolchain, opts.quick)?;
    // The fleet (SPEC §10): a real etcd on loopback, agents in one process.
    println!("xtask: bench: the fleet (etcd convergence, revisions per second)");
    run(cargo([
        "run",
        "--release",
        "-p",
        "filter-tests",
        "--bin",
        "fleet-bench",
    ])
    .envs(toolchain.build_env()))
}

/// Runs `cmd`, its output both on the terminal and in `report` (stderr
/// only on the terminal).
fn run_teed(cmd: &mut std::process::Command, report: &Path) -> Result<()> {
    let what = describe(cmd);
    println!("xtask: $ {what}");
    if let Some(dir) = report.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file =
        fs::File::create(report).with_context(|| format!("creating {}", report.display()))?;
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{what}`"))?;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.context("reading the benchmark's output")?;
            println!("{line}");
            writeln!(file, "{line}").with_context(|| format!("writing {}", report.display()))?;
        }
    }
    let status = child.wait()?;
    if status.success() {
        Ok(())
    } else {
        Err(Failed {
            what,
            code: status.code().unwrap_or(1),
        }
        .into())
    }
}

extern "C" fn ignore(_: std::ffi::c_int) {}

/// Runs `f` with SIGINT caught and ignored by this process, so a Ctrl-C
/// ends the benchmark (the terminal sends it to the whole foreground
/// group) while we live on to clean up. A caught signal, unlike an ignored
/// one, is reset to its default in the children.
fn while_ignoring_sigint<T>(f: impl FnOnce() -> T) -> T {
    let action = SigAction::new(
        SigHandler::Handler(ignore),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    let previous = unsafe { sigaction(Signal::SIGINT, &action) }.ok();
    let out = f();
    if let Some(previous) = previous {
        // SAFETY: restores what was installed before.
        let _ = unsafe { sigaction(Signal::SIGINT, &previous) };
    }
    out
}

/// Deletes the benchmark's namespaces whose process is gone; how many.
fn sweep() -> usize {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NETNS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let deleted = cmd("ip")
            .args(["netns", "delete", &name])
            .stdout(Stdio::null())
            .status();
        if deleted.is_ok_and(|s| s.success()) {
            removed += 1;
        } else {
            eprintln!("xtask: could not delete network namespace {name}");
        }
    }
    removed
}
