//! `cargo xtask test`: the three tiers.
//!
//! 1. Unit tests that need no privileges: every crate's library and binary
//!    tests, plus `filter-user`'s integration tests.
//! 2. BPF tests: the real object through BPF_PROG_TEST_RUN (`tests/`).
//! 3. Namespace end-to-end tests (`tests/`).
//!
//! Tiers 2 and 3 are the `filter-tests` crate's integration tests; they need
//! root. Before them, a test package is built (`FILTER_DEB`, for
//! `tests/tests/package.rs`). The output ends with cargo's own result lines.
use std::{path::Path, thread};

use anyhow::{bail, Result};

use crate::{
    dist,
    run::{cargo, is_root, run, workspace_root},
    setup::Toolchain,
};

pub struct Options {
    /// Only tier 1.
    pub unprivileged: bool,
    /// Passed to every test binary (a name filter, `--nocapture`, ...).
    pub args: Vec<String>,
}

pub fn test(toolchain: &Toolchain, opts: &Options) -> Result<()> {
    if !opts.unprivileged && !is_root() {
        bail!(
            "the BPF and namespace tests (tiers 2 and 3) load eBPF programs and create network \
             namespaces: run as root (`sudo -E cargo xtask test`), or \
             `cargo xtask test --unprivileged` for the unit tests only"
        );
    }
    let env = toolchain.build_env();

    println!("xtask: tier 1: unit tests (no privileges)");
    run(cargo([
        "test",
        "--workspace",
        "--lib",
        "--bins",
        "--no-fail-fast",
        "--",
    ])
    .args(&opts.args)
    .envs(env.clone()))?;
    if has_integration_tests(&workspace_root().join("filter-user/tests")) {
        run(cargo([
            "test",
            "-p",
            "filter-user",
            "--test",
            "*",
            "--no-fail-fast",
            "--",
        ])
        .args(&opts.args)
        .envs(env.clone()))?;
    }
    if opts.unprivileged {
        return Ok(());
    }

    // Each test loads its own object and namespaces, so they run in
    // parallel; one thread per core (2 on CI) keeps the verifier and the
    // namespace set-up from starving each other.
    let threads = thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
    println!(
        "xtask: tiers 2 and 3: BPF_PROG_TEST_RUN fixtures and namespace end-to-end tests (root)"
    );
    // The daemon end-to-end tests run the real filterd and filterctl
    // (`filter_tests::daemon`), which `cargo test` does not build for them.
    run(cargo(["build", "-p", "filter-user", "--bins"]).envs(env.clone()))?;
    // The package test installs a .deb (`tests/tests/package.rs`): built
    // once here from those same debug binaries, seconds instead of the
    // minutes of a release build.
    let deb = dist::dist(
        toolchain,
        &dist::Options {
            profile: "dev".to_owned(),
        },
    )?;
    run(cargo([
        "test",
        "-p",
        "filter-tests",
        "--test",
        "*",
        "--no-fail-fast",
        "--",
    ])
    .arg(format!("--test-threads={threads}"))
    .args(&opts.args)
    .envs(env)
    .env("FILTER_DEB", deb))
}

fn has_integration_tests(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .any(|e| e.path().extension().is_some_and(|x| x == "rs"))
        })
        .unwrap_or(false)
}
