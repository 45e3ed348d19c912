//! `cargo xtask soak --minutes N` (or `--seconds N`): build `filterd`,
//! `filterctl` and the soak driver, then run the driver as root.
//!
//! The soak itself is `filter-soak` (`tests/src/bin/filter-soak/`), for the
//! same reason as the demo (`demo.rs`): it uses the test helpers, which
//! xtask cannot depend on. What it does and checks is in its module docs
//! and in docs/OPERATIONS.md ("Soak and load").
use anyhow::{bail, Result};

use crate::{
    demo::target_dir,
    run::{cargo, cmd, is_root, run},
    setup::Toolchain,
};

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct Options {
    /// How long the soak runs, in minutes.
    #[arg(long)]
    pub minutes: Option<u64>,
    /// How long the soak runs, in seconds (CI runs a short one).
    #[arg(long)]
    pub seconds: Option<u64>,
}

pub fn soak(toolchain: &Toolchain, opts: &Options) -> Result<()> {
    if !is_root() {
        bail!(
            "the soak creates network namespaces and loads eBPF programs: run it as root \
             (`sudo -E env \"PATH=$PATH\" cargo xtask soak --minutes N`)"
        );
    }
    let seconds = match (opts.minutes, opts.seconds) {
        (Some(m), _) => m.saturating_mul(60),
        (None, Some(s)) => s,
        (None, None) => bail!("give --minutes or --seconds"),
    };
    let env = toolchain.build_env();
    run(cargo(["build", "-p", "filter-user", "--bins"]).envs(env.clone()))?;
    run(cargo(["build", "-p", "filter-tests", "--bin", "filter-soak"]).envs(env))?;

    let bin_dir = target_dir().join("debug");
    run(cmd(bin_dir.join("filter-soak"))
        .env("FILTER_BIN_DIR", &bin_dir)
        .args(["--seconds", &seconds.to_string()]))
}
