//! `cargo xtask fmt` and `cargo xtask clippy`: rustfmt, then clippy in the
//! two passes an eBPF workspace needs (aya-template's split): the host
//! crates, and the eBPF crate for its real target.
use anyhow::{bail, Result};

use crate::{
    run::{cargo, cmd, run, Failed},
    setup::Toolchain,
};

/// `cargo fmt --all`, or only check it.
pub fn fmt(check: bool) -> Result<()> {
    let mut args = vec!["fmt", "--all"];
    if check {
        args.extend(["--", "--check"]);
    }
    run(&mut cargo(args))
}

/// rustfmt check, host clippy, eBPF clippy. All three run; the command
/// fails if any did.
pub fn clippy(toolchain: &Toolchain) -> Result<()> {
    let mut failed = Vec::new();
    let mut step = |name: &'static str, result: Result<()>| -> Result<()> {
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.is::<Failed>() => {
                failed.push(name);
                Ok(())
            }
            Err(e) => Err(e),
        }
    };
    step("rustfmt --check", fmt(true))?;
    // Pass 1: every crate on the host, the eBPF crate only type-checked.
    step(
        "clippy (host)",
        run(cargo([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .envs(toolchain.build_env())),
    )?;
    // Pass 2: the eBPF crate for bpfel, with the eBPF toolchain, in its own
    // target directory so the two compilers never share fingerprints; with
    // the benchmark's programs (pass 1 covers the product's feature set).
    let mut ebpf = cmd("rustup");
    ebpf.args([
        "run",
        &toolchain.name,
        "cargo",
        "clippy",
        "-p",
        "filter-ebpf",
        "--all-features",
    ])
    .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
    .args(["--target-dir", "target/ebpf-clippy", "--", "-D", "warnings"])
    .envs(toolchain.build_env());
    if toolchain.needs_bootstrap {
        ebpf.env("RUSTC_BOOTSTRAP", "1");
    }
    step("clippy (eBPF)", run(&mut ebpf))?;
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}
