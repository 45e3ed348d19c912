//! `cargo xtask dist`: the Debian package (SPEC §8), with cargo-deb.
//!
//! 1. Build `filterd` and `filterctl` (release, or `--profile dev` for the
//!    package test: minutes less on two cores) and stage them, without
//!    debug info, in `target/dist-assets/bin`.
//! 2. Refuse a `filterd` without a real eBPF object inside: the build
//!    writes an empty stand-in when it has no toolchain, and a package must
//!    never ship one.
//! 3. Write the man pages and completions from the binaries' clap
//!    definitions (the `dist-assets` example) to `target/dist-assets`.
//! 4. `cargo deb --no-build` with `filter-user`'s `[package.metadata.deb]`,
//!    which packs what is staged.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};

use crate::{
    run::{cargo, cmd, run, workspace_root},
    setup::Toolchain,
};

pub struct Options {
    /// `release` or `dev`.
    pub profile: String,
}

/// Builds the package; its path.
pub fn dist(toolchain: &Toolchain, opts: &Options) -> Result<PathBuf> {
    let profile = opts.profile.as_str();
    let profile_dir = match profile {
        "release" => "release",
        "dev" => "debug",
        other => bail!("--profile {other}: release or dev"),
    };
    let env = toolchain.build_env();
    run(cargo(["build", "-p", "filter-user", "--bins", "--profile", profile]).envs(env.clone()))?;

    // Everything the package takes from the build is staged here, so
    // cargo-deb packs the same paths whatever the profile.
    let target = target_dir();
    let assets = workspace_root().join("target/dist-assets");
    if assets.exists() {
        fs::remove_dir_all(&assets).with_context(|| format!("removing {}", assets.display()))?;
    }
    let bin = assets.join("bin");
    fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    for name in ["filterd", "filterctl"] {
        let built = target.join(profile_dir).join(name);
        let staged = bin.join(name);
        fs::copy(&built, &staged)
            .with_context(|| format!("copying {} to {}", built.display(), staged.display()))?;
        // Debug info off, symbols kept (backtraces still name functions).
        run(cmd("strip").arg("--strip-debug").arg(&staged))?;
    }
    let filterd = bin.join("filterd");
    let size = embedded_bpf_object(&filterd)?;
    println!(
        "xtask dist: {} embeds an eBPF object of {size} bytes",
        filterd.display()
    );

    run(cargo([
        "run",
        "-q",
        "-p",
        "filter-user",
        "--example",
        "dist-assets",
        "--",
    ])
    .arg("--out")
    .arg(&assets)
    .envs(env.clone()))?;

    let out = target.join("dist");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut deb = cargo([
        "deb",
        "-p",
        "filter-user",
        "--no-build",
        "--profile",
        profile,
    ]);
    deb.arg("--output").arg(&out);
    if profile == "dev" {
        // A test package: gzip instead of xz, minutes less.
        deb.arg("--fast");
    }
    run(deb.envs(env))?;
    let package = newest_deb(&out)?;
    println!("xtask dist: {}", package.display());
    Ok(package)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The size of the eBPF ELF object embedded in `binary`: an ELF header
/// for machine EM_BPF (247) after the binary's own header, whose section
/// table ends past a few hundred bytes. An error when there is none.
fn embedded_bpf_object(binary: &Path) -> Result<u64> {
    let bytes = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    const EM_BPF: u16 = 247;
    let u16_at = |at: usize| -> Option<u16> {
        Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
    };
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    let mut largest = 0;
    let mut at = 1;
    while let Some(offset) = find(&bytes[at..], b"\x7fELF\x02\x01") {
        let start = at + offset;
        at = start + 1;
        if u16_at(start + 18) != Some(EM_BPF) {
            continue;
        }
        // e_shoff + e_shnum * e_shentsize: where the section table ends.
        let (Some(shoff), Some(shentsize), Some(shnum)) =
            (u64_at(start + 40), u16_at(start + 58), u16_at(start + 60))
        else {
            continue;
        };
        largest = largest.max(shoff + u64::from(shentsize) * u64::from(shnum));
    }
    if largest < 1024 {
        bail!(
            "{} has no eBPF object inside (the build wrote its empty stand-in: no eBPF \
             toolchain?). Run `cargo xtask setup`; a package never ships without the programs",
            binary.display()
        );
    }
    Ok(largest)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn newest_deb(dir: &Path) -> Result<PathBuf> {
    let mut debs: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    debs.sort();
    match debs.pop() {
        Some((_, path)) => Ok(path),
        None => bail!("cargo deb wrote no .deb to {}", dir.display()),
    }
}
