//! `cargo xtask setup`: make this machine able to build and test `filter`.
//! Idempotent: each step checks first and acts only when something is
//! missing, and says which it did.
//!
//! 1. An eBPF toolchain (TOOLCHAIN.md): `FILTER_BPF_TOOLCHAIN` when set;
//!    else a nightly with rust-src and `bpf-linker` (the usual aya setup);
//!    else Debian's rustc-web linked into rustup as `bpf-debian` with
//!    `bpf-linker`, installed from Debian packages and crates.io when
//!    neither is there. Plus clippy for that toolchain (the eBPF lint pass).
//! 2. The tools the tests drive (`ip`, `tc`, `ping`, `nc`/`socat`, `nft`,
//!    `iptables`, `nsenter`, `promtool`), from Debian packages when missing.
//! 3. bpffs mounted at `/sys/fs/bpf`.
//! 4. The packaging tools (`cargo xtask dist` and its test): `cargo-deb`
//!    from crates.io, `man` and `systemd-analyze` from Debian packages.
//! 5. `cargo-fuzz` from crates.io, for `cargo xtask fuzz`.
//!
//! Installing needs root; checking does not. Without root, a missing
//! toolchain is an error and missing test tools or bpffs are warnings
//! (building needs neither).
use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};

use crate::run::{cargo, cmd, have, is_root, probe, run};

/// The Debian packages of the toolchain recipe (TOOLCHAIN.md step 1).
const DEBIAN_TOOLCHAIN_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];
/// The name the Debian toolchain is linked under.
pub const DEBIAN_TOOLCHAIN: &str = "bpf-debian";
const DEBIAN_SYSROOT: &str = "/usr";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// Clippy for the Debian toolchain (not in the recipe: the eBPF clippy pass
/// needs it).
const DEBIAN_CLIPPY_PACKAGE: &str = "rust-web-clippy";
/// `(command, Debian package)` of the tools the tests run; a group of
/// commands is satisfied by any one of them.
const TEST_TOOLS: &[(&[&str], &str)] = &[
    (&["ip"], "iproute2"),
    (&["tc"], "iproute2"),
    (&["ping"], "iputils-ping"),
    (&["nc", "socat"], "netcat-openbsd"),
    (&["nft"], "nftables"),
    (&["iptables"], "iptables"),
    (&["nsenter"], "util-linux"),
    // The package test: `man filterd`, `systemd-analyze verify` on the unit.
    (&["man"], "man-db"),
    (&["systemd-analyze"], "systemd"),
    // `cargo xtask dist` strips the binaries it packs.
    (&["strip"], "binutils"),
    // The fleet (SPEC §10): the etcd-client crate's build runs protoc; the
    // fleet tests and bench start a real etcd and use etcdctl.
    (&["protoc"], "protobuf-compiler"),
    (&["etcd"], "etcd-server"),
    (&["etcdctl"], "etcd-client"),
    // The metrics test checks a scrape with `promtool check metrics`
    // (Debian ships promtool only with the server; a host without systemd
    // never starts it).
    (&["promtool"], "prometheus"),
    // The benchmark: NAPI on the guarded veth end for live frames
    // (`ethtool -K gro on`).
    (&["ethtool"], "ethtool"),
];
const BPFFS: &str = "/sys/fs/bpf";

/// The eBPF toolchain that builds use.
#[derive(Clone, Debug)]
pub struct Toolchain {
    /// A rustup toolchain name: `nightly`, `bpf-debian`, or the user's.
    pub name: String,
    /// A stable compiler that needs `RUSTC_BOOTSTRAP=1` to accept `-Z`.
    pub needs_bootstrap: bool,
}

impl Toolchain {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            needs_bootstrap: !name.starts_with("nightly"),
        }
    }

    /// Environment for every cargo command of the workspace: the toolchain
    /// `filter-user/build.rs` builds the eBPF object with. (`build.rs` sets
    /// `RUSTC_BOOTSTRAP` for that inner build itself; setting it for the
    /// host build too would make the host compiler look like a nightly to
    /// crates that probe for one, and rebuild them whenever it changes.)
    pub fn build_env(&self) -> [(&'static str, String); 1] {
        [("FILTER_BPF_TOOLCHAIN", self.name.clone())]
    }
}

/// Everything the step found or did, printed as it goes.
pub fn setup() -> Result<Toolchain> {
    add_to_path(&[Path::new("/usr/sbin"), Path::new("/sbin")], false);
    let mut apt = Apt::default();
    let toolchain = toolchain(&mut apt)?;
    clippy(&toolchain, &mut apt)?;
    test_tools(&mut apt)?;
    bpffs()?;
    cargo_tool("cargo-deb", "deb", "`cargo xtask dist` will fail")?;
    cargo_tool("cargo-fuzz", "fuzz", "`cargo xtask fuzz` will fail")?;
    Ok(toolchain)
}

fn say(item: &str, what: impl std::fmt::Display) {
    println!("xtask setup: {item}: {what}");
}

fn warn(item: &str, what: impl std::fmt::Display) {
    println!("xtask setup: {item}: WARNING: {what}");
}

/// Finds a usable eBPF toolchain, installing the Debian one when there is
/// none.
fn toolchain(apt: &mut Apt) -> Result<Toolchain> {
    let linker = find_bpf_linker();
    if let Ok(name) = env::var("FILTER_BPF_TOOLCHAIN") {
        say(
            "eBPF toolchain",
            format!("{name} (from FILTER_BPF_TOOLCHAIN)"),
        );
        return Ok(Toolchain::new(&name));
    }
    if let Some(found) = usable_toolchain(linker.as_deref()) {
        say("eBPF toolchain", found.1);
        return Ok(found.0);
    }
    if !is_root() {
        bail!(
            "no usable eBPF toolchain (a nightly with rust-src and bpf-linker, or Debian's \
             rustc-web linked as {DEBIAN_TOOLCHAIN}), and installing one needs root: \
             run `sudo -E cargo xtask setup`"
        );
    }
    say(
        "eBPF toolchain",
        "none usable; installing the Debian rustc-web toolchain (TOOLCHAIN.md)",
    );
    let missing: Vec<&str> = DEBIAN_TOOLCHAIN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !apt.installed(p))
        .collect();
    if missing.is_empty() {
        say("Debian packages", "already installed");
    } else {
        apt.install(DEBIAN_TOOLCHAIN_PACKAGES)?;
        say(
            "Debian packages",
            format!("installed {}", missing.join(" ")),
        );
    }
    if rustup_toolchains().iter().any(|t| t == DEBIAN_TOOLCHAIN) {
        say("rustup", format!("{DEBIAN_TOOLCHAIN} already linked"));
    } else {
        run(cmd("rustup").args(["toolchain", "link", DEBIAN_TOOLCHAIN, DEBIAN_SYSROOT]))?;
        say(
            "rustup",
            format!("linked {DEBIAN_TOOLCHAIN} to {DEBIAN_SYSROOT}"),
        );
    }
    if find_bpf_linker().is_some() {
        say("bpf-linker", "already installed");
    } else {
        let path = prepend_path(&Path::new(LLVM_PREFIX).join("bin"));
        run(cargo([
            "install",
            "bpf-linker",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("PATH", path)
        .env("LLVM_PREFIX", LLVM_PREFIX))?;
        say(
            "bpf-linker",
            "installed from crates.io, built against LLVM 22",
        );
    }
    match usable_toolchain(find_bpf_linker().as_deref()) {
        Some(found) => {
            say("eBPF toolchain", found.1);
            Ok(found.0)
        }
        None => bail!(
            "installed the Debian toolchain, but it is still not usable (see the messages above)"
        ),
    }
}

/// The first usable toolchain in the order `filter-user/build.rs` picks
/// them, with a description.
fn usable_toolchain(linker: Option<&Path>) -> Option<(Toolchain, String)> {
    let linker = linker?;
    let toolchains = rustup_toolchains();
    let nightly = toolchains
        .iter()
        .find(|t| *t == "nightly" || t.starts_with("nightly-"));
    if nightly.is_some() {
        if let Some(sysroot) = sysroot("nightly") {
            if has_rust_src(&sysroot) {
                let what = format!("nightly with rust-src, bpf-linker at {}", linker.display());
                return Some((Toolchain::new("nightly"), what));
            }
        }
    }
    if toolchains.iter().any(|t| t == DEBIAN_TOOLCHAIN) {
        let sysroot = sysroot(DEBIAN_TOOLCHAIN)?;
        if sysroot == Path::new(DEBIAN_SYSROOT) && has_rust_src(&sysroot) {
            let version =
                probe(cmd("rustup").args(["run", DEBIAN_TOOLCHAIN, "rustc", "--version"]))
                    .map(|v| v.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
                    .unwrap_or_else(|| "rustc".into());
            let what = format!(
                "{DEBIAN_TOOLCHAIN} ({version} linked to {DEBIAN_SYSROOT}), bpf-linker at {}",
                linker.display()
            );
            return Some((Toolchain::new(DEBIAN_TOOLCHAIN), what));
        }
    }
    None
}

/// Names in `rustup toolchain list`, without the `(active, default)` notes.
fn rustup_toolchains() -> Vec<String> {
    probe(cmd("rustup").args(["toolchain", "list"]))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn sysroot(toolchain: &str) -> Option<PathBuf> {
    probe(cmd("rustup").args(["run", toolchain, "rustc", "--print", "sysroot"])).map(PathBuf::from)
}

fn has_rust_src(sysroot: &Path) -> bool {
    sysroot.join("lib/rustlib/src/rust/library/core").is_dir()
}

/// `bpf-linker` on PATH, or in cargo's bin directory (then added to PATH
/// for the children: aya-build runs it by name).
fn find_bpf_linker() -> Option<PathBuf> {
    if let Some(found) = which("bpf-linker") {
        return Some(found);
    }
    let cargo_bin = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?
        .join("bin");
    let candidate = cargo_bin.join("bpf-linker");
    candidate.is_file().then(|| {
        add_to_path(&[&cargo_bin], true);
        candidate
    })
}

fn which(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Adds directories to this process's PATH (so every child sees them),
/// in front or at the end, unless already there.
fn add_to_path(dirs: &[&Path], front: bool) {
    let current = env::var_os("PATH").unwrap_or_default();
    let mut paths: Vec<PathBuf> = env::split_paths(&current).collect();
    for dir in dirs {
        if !paths.iter().any(|p| p == dir) {
            if front {
                paths.insert(0, dir.to_path_buf());
            } else {
                paths.push(dir.to_path_buf());
            }
        }
    }
    if let Ok(joined) = env::join_paths(paths) {
        // xtask is single-threaded; children inherit the change.
        env::set_var("PATH", joined);
    }
}

/// PATH with `dir` in front, for one child.
fn prepend_path(dir: &Path) -> OsString {
    let current = env::var_os("PATH").unwrap_or_default();
    let paths = std::iter::once(dir.to_path_buf()).chain(env::split_paths(&current));
    env::join_paths(paths).unwrap_or(current)
}

/// Clippy for the eBPF toolchain, for `cargo xtask clippy`'s second pass.
fn clippy(toolchain: &Toolchain, apt: &mut Apt) -> Result<()> {
    let has_clippy = |name: &str| {
        probe(cmd("rustup").args(["run", name, "cargo", "clippy", "--version"])).is_some()
    };
    if has_clippy(&toolchain.name) {
        say(
            "clippy",
            format!("already installed for {}", toolchain.name),
        );
    } else if toolchain.name == DEBIAN_TOOLCHAIN && is_root() {
        apt.install(&[DEBIAN_CLIPPY_PACKAGE])?;
        say(
            "clippy",
            format!("installed {DEBIAN_CLIPPY_PACKAGE} for {DEBIAN_TOOLCHAIN}"),
        );
    } else {
        warn(
            "clippy",
            format!(
                "missing for {}: the eBPF pass of `cargo xtask clippy` will fail",
                toolchain.name
            ),
        );
    }
    Ok(())
}

/// The tools the privileged tests run.
fn test_tools(apt: &mut Apt) -> Result<()> {
    let mut missing_cmds = Vec::new();
    let mut packages: Vec<&str> = Vec::new();
    for (commands, package) in TEST_TOOLS {
        if !commands.iter().any(|c| have(c)) {
            missing_cmds.push(commands.join("/"));
            if !packages.contains(package) {
                packages.push(package);
            }
        }
    }
    if packages.is_empty() {
        say(
            "test tools",
            "already installed (ip, tc, ping, nc/socat, nft, iptables, nsenter, man, \
             systemd-analyze, strip, protoc, etcd, etcdctl, promtool, ethtool)",
        );
        return Ok(());
    }
    if !is_root() {
        warn(
            "test tools",
            format!(
                "missing {} and installing needs root",
                missing_cmds.join(", ")
            ),
        );
        return Ok(());
    }
    apt.install(&packages)?;
    say(
        "test tools",
        format!(
            "installed {} (for {})",
            packages.join(" "),
            missing_cmds.join(", ")
        ),
    );
    Ok(())
}

/// A cargo subcommand from crates.io (`cargo <subcommand>` is `package`):
/// `cargo-deb` for `cargo xtask dist` (and so the package test),
/// `cargo-fuzz` for `cargo xtask fuzz`.
fn cargo_tool(package: &str, subcommand: &str, without: &str) -> Result<()> {
    if probe(&mut cargo([subcommand, "--version"])).is_some() {
        say(package, "already installed");
        return Ok(());
    }
    if !is_root() {
        warn(
            package,
            format!("missing: {without} (`cargo install {package} --locked`)"),
        );
        return Ok(());
    }
    run(&mut cargo(["install", package, "--locked"]))?;
    say(package, "installed from crates.io");
    Ok(())
}

/// bpffs at `/sys/fs/bpf` (a fresh machine has none).
fn bpffs() -> Result<()> {
    let mounted = fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            matches!(
                l.split_whitespace().collect::<Vec<_>>()[..],
                [_, BPFFS, "bpf", ..]
            )
        });
    if mounted {
        say("bpffs", format!("already mounted at {BPFFS}"));
    } else if is_root() {
        run(cmd("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
        say("bpffs", format!("mounted at {BPFFS}"));
    } else {
        warn(
            "bpffs",
            format!("not mounted at {BPFFS}, and mounting needs root"),
        );
    }
    Ok(())
}

/// apt-get, with one `apt-get update` per run before the first install.
#[derive(Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    fn installed(&self, package: &str) -> bool {
        probe(cmd("dpkg-query").args(["-W", "-f", "${Status}", package]))
            .is_some_and(|s| s.ends_with("install ok installed"))
    }

    fn install(&mut self, packages: &[&str]) -> Result<()> {
        if !self.updated {
            run(cmd("apt-get")
                .arg("update")
                .env("DEBIAN_FRONTEND", "noninteractive"))
            .context("apt-get update")?;
            self.updated = true;
        }
        run(cmd("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"))
        .context("apt-get install")
    }
}
