//! Builds the eBPF object with aya-build and puts it in OUT_DIR, where
//! `crate::dataplane::object` embeds it.
//!
//! The toolchain is picked the way `cargo xtask setup` installs it
//! (TOOLCHAIN.md): `FILTER_BPF_TOOLCHAIN` when set, else a nightly with
//! rust-src, else the Debian rustc-web toolchain linked as `bpf-debian`.
//! With no toolchain (or `AYA_BUILD_SKIP=1`) an empty stand-in object is
//! written so `cargo check` and the unprivileged unit tests still build;
//! loading it fails with a message that says to run `cargo xtask setup`.
use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

const OBJECT: &str = "filter";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=FILTER_BPF_TOOLCHAIN");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let toolchain = if skip { None } else { pick_toolchain() };
    let Some(toolchain) = toolchain else {
        println!("cargo:warning=no eBPF toolchain (run `cargo xtask setup`); writing an empty stand-in object");
        fs::write(out_dir.join(OBJECT), []).context("writing stand-in eBPF object")?;
        return Ok(());
    };
    if toolchain != "nightly" {
        // rustc-web is a stable compiler: it accepts `-Z build-std` only with
        // RUSTC_BOOTSTRAP, which aya-build reads from our environment.
        // SAFETY: build scripts are single-threaded at this point.
        env::set_var("RUSTC_BOOTSTRAP", "1");
    }
    let ebpf_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../filter-ebpf");
    let ebpf_dir = ebpf_dir.canonicalize().context("locating filter-ebpf")?;
    let root_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [Package {
            name: "filter-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
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
