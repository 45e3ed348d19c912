//! `cargo xtask <command>`: everything beyond a plain `cargo build`.
//!
//! Every command first runs `setup` (idempotent), so a fresh machine needs
//! no manual step: it finds or installs the eBPF toolchain and the test
//! tools, mounts bpffs, and hands the toolchain to the build through
//! `FILTER_BPF_TOOLCHAIN` (read by `filter-user/build.rs`).
mod bench;
mod demo;
mod dist;
mod fuzz;
mod lint;
mod run;
mod setup;
mod soak;
mod test;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::run::{cargo, run, Failed};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, lint, test and demo `filter`"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Find or install the eBPF toolchain and the test tools; mount bpffs.
    Setup,
    /// Build the workspace, the eBPF object included.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// rustfmt check, then clippy on the host crates and on the eBPF crate.
    Clippy,
    /// Format the workspace.
    Fmt {
        /// Only check.
        #[arg(long)]
        check: bool,
    },
    /// Unit tests, then (as root) the BPF and network-namespace tests.
    Test {
        /// Only the unit tests that need no privileges.
        #[arg(long)]
        unprivileged: bool,
        /// Arguments for the test binaries (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Benchmarks: the rule compiler, then (as root) the data plane
    /// against the empty program, nftables and iptables.
    Bench(bench::Options),
    /// The Debian package (filterd, filterctl, the unit, the default
    /// config, man pages, completions) in target/dist.
    Dist {
        /// `release`, or `dev` for a quick test package.
        #[arg(long, default_value = "release")]
        profile: String,
    },
    /// The soak (as root): traffic, applies every 100 ms, clients and
    /// interfaces that come and go; fails on a wrong verdict, a crash, or
    /// growth in filterd's memory or descriptors.
    Soak(soak::Options),
    /// Build the fuzz targets (tests/fuzz) and run each for a while; the
    /// `packet` target needs root.
    Fuzz(fuzz::Options),
    /// The demo: a small cloud in network namespaces, guarded by filterd.
    Demo {
        /// End after the traffic script instead of tailing the flow log
        /// until Ctrl-C (also FILTER_DEMO_NO_FOLLOW=1).
        #[arg(long)]
        no_follow: bool,
    },
}

fn main() -> ExitCode {
    match run_cli(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<Failed>() {
            // The child has said why; its result lines stay the last output.
            Some(failed) => ExitCode::from(u8::try_from(failed.code).unwrap_or(1).max(1)),
            None => {
                eprintln!("xtask: error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_cli(cli: Cli) -> Result<()> {
    let toolchain = setup::setup()?;
    match cli.command {
        Command::Setup => Ok(()),
        Command::Build { release } => {
            let mut build = cargo(["build", "--workspace", "--all-targets"]);
            if release {
                build.arg("--release");
            }
            run(build.envs(toolchain.build_env()))
        }
        Command::Clippy => lint::clippy(&toolchain),
        Command::Fmt { check } => lint::fmt(check),
        Command::Test { unprivileged, args } => {
            test::test(&toolchain, &test::Options { unprivileged, args })
        }
        Command::Bench(opts) => bench::bench(&toolchain, &opts),
        Command::Dist { profile } => dist::dist(&toolchain, &dist::Options { profile }).map(drop),
        Command::Soak(opts) => soak::soak(&toolchain, &opts),
        Command::Fuzz(opts) => fuzz::fuzz(&toolchain, &opts),
        Command::Demo { no_follow } => demo::demo(&toolchain, &demo::Options { no_follow }),
    }
}
