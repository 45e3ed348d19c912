//! `cargo xtask fuzz [--seconds N] [TARGET]`: builds the fuzz targets of
//! `tests/fuzz` (docs/FUZZING.md) and runs each for N seconds.
//!
//! The toolchain is the stable one every machine has, with
//! `RUSTC_BOOTSTRAP=1` for the `-Z` flags cargo-fuzz passes, and no
//! sanitizer: the code under test is safe Rust, and libFuzzer's coverage
//! guidance needs none. New inputs go to a scratch corpus in the fuzz
//! crate's target directory, so the repository's corpus only changes by
//! hand (`cargo fuzz cmin`); a crash is left in `tests/fuzz/artifacts/`.
use std::{fs, path::Path};

use anyhow::{bail, Context as _, Result};

use crate::{
    run::{cargo, is_root, probe, run, workspace_root},
    setup::Toolchain,
};

/// Where the fuzz crate lives, from the workspace root.
const FUZZ_DIR: &str = "tests/fuzz";
/// Targets that load the eBPF object (BPF_PROG_TEST_RUN): root only.
const ROOT_TARGETS: &[&str] = &["packet"];

#[derive(clap::Args)]
pub struct Options {
    /// How long each target runs.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// One target (`cargo fuzz list --fuzz-dir tests/fuzz`); all by default.
    pub target: Option<String>,
}

pub fn fuzz(toolchain: &Toolchain, opts: &Options) -> Result<()> {
    let all = targets()?;
    let chosen: Vec<&String> = match &opts.target {
        Some(t) if all.contains(t) => all.iter().filter(|a| *a == t).collect(),
        Some(t) => bail!("no fuzz target {t:?}; targets: {}", all.join(", ")),
        None => all.iter().collect(),
    };
    let runnable: Vec<&String> = chosen
        .into_iter()
        .filter(|t| {
            let ok = is_root() || !ROOT_TARGETS.contains(&t.as_str());
            if !ok {
                println!("xtask: fuzz: skipping {t}: it loads the eBPF object and needs root");
            }
            ok
        })
        .collect();
    // One build (of the one target asked for, or of all: cargo-fuzz takes
    // one or none), with the flags `run` uses, so `run` builds nothing.
    run(fuzz_cmd(toolchain, "build", &[]).args(opts.target.as_deref()))?;
    let scratch = workspace_root().join(FUZZ_DIR).join("target/corpus");
    for target in runnable {
        let work = scratch.join(target);
        fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let seeds = Path::new(FUZZ_DIR).join("corpus").join(target);
        run(fuzz_cmd(toolchain, "run", &[target.as_str()])
            .arg(&work)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={}", opts.seconds))
            // A slow input is a bug too (a loop the limits should stop).
            .arg("-timeout=20")
            .arg("-print_final_stats=1"))?;
    }
    Ok(())
}

/// The targets, as cargo-fuzz lists them from the fuzz crate's manifest.
fn targets() -> Result<Vec<String>> {
    let listed = probe(&mut cargo(["fuzz", "list", "--fuzz-dir", FUZZ_DIR]))
        .context("`cargo fuzz list` failed: is cargo-fuzz installed (`cargo xtask setup`)?")?;
    Ok(listed.lines().map(str::to_owned).collect())
}

/// `cargo fuzz <sub>` with the build settings every call shares.
fn fuzz_cmd(toolchain: &Toolchain, sub: &str, args: &[&str]) -> std::process::Command {
    let mut c = cargo(["fuzz", sub, "--fuzz-dir", FUZZ_DIR, "--sanitizer", "none"]);
    // Many codegen units: the build is most of the cost on 2 cores.
    c.args(["--codegen-units", "16"])
        .args(args)
        .envs(toolchain.build_env())
        .env("RUSTC_BOOTSTRAP", "1");
    c
}
