//! `cargo xtask <command>`: everything beyond a plain `cargo build`.
//!
//! Every command first runs `setup` (idempotent), so a fresh machine needs
//! no manual step: it finds or installs the eBPF toolchain and the test
//! tools, mounts bpffs, and hands the toolchain to the build through
//! `FILTER_BPF_TOOLCHAIN` (read by `filter-user/build.rs`).
mod lint;
mod run;
mod setup;
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
    /// Benchmarks.
    Bench,
    /// The demo: a small cloud in network namespaces, guarded by filterd.
    Demo,
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
        Command::Bench => {
            println!("xtask: benchmarks: the rule compiler for now. The data-plane benchmarks");
            println!("xtask: (ns per packet through BPF_PROG_TEST_RUN, first packet and tracked,");
            println!("xtask: against the empty program) come later.");
            run(cargo(["bench", "-p", "filter-user", "--bench", "compile"])
                .envs(toolchain.build_env()))
        }
        Command::Demo => {
            demo_plan();
            Ok(())
        }
    }
}

/// What `cargo xtask demo` will do once the daemon and CLI land (issue 7).
fn demo_plan() {
    println!(
        "\
xtask demo: not built yet. When it lands it will, as root:
  1. build everything (setup has already run);
  2. create a small cloud in network namespaces: a bridge for the vSwitch
     fabric, instances web1 and web2 (one vSwitch), db1 (another), and the
     outside hosts admin and client;
  3. start filterd guarding the instances' interfaces and apply the example
     document in examples/: a web tier, SSH from admin only, the database
     open only to the web group, ICMP from admin, an outbound whitelist on
     db1, a network ACL on the database vSwitch;
  4. drive a short script of allowed and denied traffic, printing each
     attempt next to its `filterctl explain` reason;
  5. tail `filterctl flows --follow` until Ctrl-C, then remove everything it
     created (also on Ctrl-C or failure)."
    );
}
