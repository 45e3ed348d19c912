//! Builds the eBPF objects into OUT_DIR, where `crate::dataplane::object`
//! embeds them: `filter`, the programs the daemon attaches or runs, and
//! `filter-bench`, the same crate with feature `bench` (the benchmark's
//! programs on top).
//!
//! The toolchain is picked the way `cargo xtask setup` installs it
//! (TOOLCHAIN.md): `FILTER_BPF_TOOLCHAIN` when set, else a nightly with
//! rust-src, else the Debian rustc-web toolchain linked as `bpf-debian`.
//! Without one the build fails: a daemon without its programs would only
//! fail at run time. `AYA_BUILD_SKIP=1` asks for empty stand-in objects
//! instead, for `cargo check` and unit tests that load nothing.
//!
//! The inner cargo runs here, as `aya_build::build_ebpf` would run it, but
//! with its output captured: aya-build replays every line as a cargo
//! warning on every later build. Here it is shown only when it fails.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{anyhow, bail, Context as _, Result};

const CRATE: &str = "filter-ebpf";
/// The crate's one binary, as cargo names the built object.
const BIN: &str = "filter";
/// The objects written to OUT_DIR, and the features each is built with.
const OBJECTS: [(&str, &[&str]); 2] = [("filter", &[]), ("filter-bench", &["bench"])];
const TARGET: &str = "bpfel-unknown-none";

fn main() -> Result<()> {
    println!("cargo:rerun-if-env-changed=FILTER_BPF_TOOLCHAIN");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let ebpf_dir = Path::new(&env::var("CARGO_MANIFEST_DIR")?).join("../filter-ebpf");
    let ebpf_dir = ebpf_dir.canonicalize().context("locating filter-ebpf")?;
    // The build-dependency on filter-ebpf reruns this script when its
    // library or filter-common changes; the binary's sources need this.
    println!("cargo:rerun-if-changed={}", ebpf_dir.display());

    if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        println!(
            "cargo:warning=AYA_BUILD_SKIP=1: empty stand-in eBPF objects; nothing can load them"
        );
        for (object, _) in OBJECTS {
            fs::write(out_dir.join(object), []).context("writing a stand-in eBPF object")?;
        }
        return Ok(());
    }
    let Some(toolchain) = pick_toolchain() else {
        bail!(
            "no eBPF toolchain found (a nightly with rust-src, or `bpf-debian`): run `cargo \
             xtask setup` (TOOLCHAIN.md), or set FILTER_BPF_TOOLCHAIN. To build without the \
             eBPF object (`cargo check`, unit tests), set AYA_BUILD_SKIP=1."
        );
    };
    let target_dir = out_dir.join("ebpf-target");
    for (object, features) in OBJECTS {
        build(&toolchain, features, &target_dir)?;
        let built = target_dir.join(TARGET).join("release").join(BIN);
        fs::copy(&built, out_dir.join(object))
            .with_context(|| format!("copying {}", built.display()))?;
    }
    Ok(())
}

/// `cargo build` of the eBPF crate for BPF with `features`; its output is
/// printed only when it fails.
fn build(toolchain: &str, features: &[&str], target_dir: &Path) -> Result<()> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH")?;
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        toolchain,
        "cargo",
        "build",
        "--package",
        CRATE,
        "--bins",
    ])
    .args(["--release", "--target", TARGET, "-Z", "build-std=core"])
    .args(["--features", &features.join(",")])
    .arg("--target-dir")
    .arg(target_dir)
    // aya-build's flags: aya-ebpf's `bpf_target_arch`, BTF for the loader.
    .env(
        "CARGO_ENCODED_RUSTFLAGS",
        format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
    )
    // The outer build's compiler is not the eBPF toolchain's.
    .env_remove("RUSTC")
    .env_remove("RUSTC_WORKSPACE_WRAPPER");
    if !toolchain.starts_with("nightly") {
        // rustc-web is a stable compiler: it accepts `-Z build-std` only
        // with RUSTC_BOOTSTRAP.
        cmd.env("RUSTC_BOOTSTRAP", "1");
    }
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        bail!("building the eBPF object failed ({}): {cmd:?}", out.status);
    }
    Ok(())
}

/// The first usable eBPF toolchain, by the order in the module comment.
fn pick_toolchain() -> Option<String> {
    if let Ok(name) = env::var("FILTER_BPF_TOOLCHAIN") {
        return Some(name);
    }
    let has = |toolchain: &str| -> bool {
        Command::new("rustup")
            .args(["run", toolchain, "rustc", "--print", "sysroot"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .is_some_and(|sysroot| sysroot.join("lib/rustlib/src/rust/library/core").exists())
    };
    ["nightly", "bpf-debian"]
        .into_iter()
        .find(|t| has(t))
        .map(str::to_owned)
}
