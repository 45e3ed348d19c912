//! The Debian package (SPEC §8), installed on this machine for real:
//! `dpkg -i`, the binaries run, the man pages and completions are in place,
//! the configuration is a conffile, the unit verifies, and `dpkg --purge`
//! leaves nothing behind (state and logs included).
//!
//! The package is `$FILTER_DEB`, which `cargo xtask test` builds once
//! (`cargo xtask dist --profile dev`). The test refuses to run where a
//! filterd is installed or has left state: it installs into /usr and purges.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use anyhow::{bail, ensure, Context as _, Result};
use filter_tests::daemon::output_within;

const PACKAGE: &str = "filterd";
const LIMIT: Duration = Duration::from_secs(120);
/// What the package or the daemon would make; none may exist before the
/// test, and none after the purge.
const HOST_PATHS: &[&str] = &[
    "/usr/sbin/filterd",
    "/usr/bin/filterctl",
    "/etc/filterd",
    "/var/lib/filterd",
    "/var/log/filterd",
    "/sys/fs/bpf/filterd",
    "/lib/systemd/system/filterd.service",
];

fn run(cmd: &mut Command) -> Result<Output> {
    output_within(cmd, LIMIT)
}

fn ok(cmd: &mut Command) -> Result<String> {
    let what = format!("{cmd:?}");
    let out = run(cmd)?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn installed() -> bool {
    run(Command::new("dpkg-query").args(["-W", "-f", "${Status}", PACKAGE]))
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("installed"))
}

/// Purges the package when dropped, so a failing test leaves nothing.
struct Installed;

impl Installed {
    fn purge(&self) -> Result<String> {
        ok(Command::new("dpkg").args(["--purge", PACKAGE]))
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if installed() {
            if let Err(e) = self.purge() {
                eprintln!("filter-tests: purging {PACKAGE}: {e:#}");
            }
        }
    }
}

#[test]
fn the_package_installs_works_and_purges_clean() -> Result<()> {
    filter_tests::require_root()?;
    let deb = PathBuf::from(std::env::var_os("FILTER_DEB").context(
        "FILTER_DEB is not set: `cargo xtask test` builds the package and sets it (or run \
         `cargo xtask dist --profile dev` and point FILTER_DEB at the .deb)",
    )?);
    ensure!(deb.is_file(), "{} does not exist", deb.display());
    ensure!(
        !installed(),
        "{PACKAGE} is installed on this machine: this test would purge it; remove it first"
    );
    let present: Vec<&str> = HOST_PATHS
        .iter()
        .copied()
        .filter(|p| Path::new(p).exists())
        .collect();
    ensure!(
        present.is_empty(),
        "{present:?} exist: a filterd was installed or ran here, and the purge would remove its \
         files; this test runs only on a host without one"
    );

    let guard = Installed;
    // --path-include: hosts that exclude documentation (minimal images)
    // still get the man pages, which the test checks.
    ok(Command::new("dpkg")
        .args(["-i", "--path-include=/usr/share/man/*"])
        .arg(&deb))?;
    ensure!(installed(), "dpkg -i did not install {PACKAGE}");
    let files: Vec<PathBuf> = ok(Command::new("dpkg").args(["-L", PACKAGE]))?
        .lines()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect();

    // The binaries run.
    let version = ok(Command::new("/usr/sbin/filterd").arg("--version"))?;
    ensure!(version.starts_with("filterd "), "{version}");
    let version = ok(Command::new("/usr/bin/filterctl").arg("--version"))?;
    ensure!(version.starts_with("filterctl "), "{version}");

    // The commented configuration is in place, a conffile, and reads as
    // the defaults.
    let shipped = fs::read_to_string("/etc/filterd/filterd.toml")?;
    let source =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/filterd.toml"))?;
    ensure!(
        shipped == source,
        "/etc/filterd/filterd.toml differs from contrib/filterd.toml"
    );
    let conffiles = ok(Command::new("dpkg-query").args(["-W", "-f", "${Conffiles}", PACKAGE]))?;
    ensure!(
        conffiles.contains("/etc/filterd/filterd.toml"),
        "conffiles: {conffiles}"
    );
    let printed = ok(Command::new("/usr/sbin/filterd").arg("--print-config"))?;
    ensure!(
        printed.contains("state_dir = \"/var/lib/filterd\""),
        "{printed}"
    );

    // Man pages: found by name and rendered.
    for (name, section) in [("filterd", "8"), ("filterctl", "1")] {
        let page = ok(Command::new("man").args(["-w", name]))?;
        ensure!(
            page.trim()
                .starts_with(&format!("/usr/share/man/man{section}/{name}.{section}")),
            "man -w {name}: {page}"
        );
        let text = ok(Command::new("man")
            .args(["-P", "cat", "-l"])
            .arg(page.trim())
            .env("MANWIDTH", "100"))?;
        ensure!(text.contains("--socket"), "man {name}:\n{text}");
    }
    // Completions for bash, zsh and fish, both commands.
    for name in ["filterd", "filterctl"] {
        for path in [
            format!("/usr/share/bash-completion/completions/{name}"),
            format!("/usr/share/zsh/vendor-completions/_{name}"),
            format!("/usr/share/fish/vendor_completions.d/{name}.fish"),
        ] {
            let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
            ensure!(text.contains(name) && text.contains("socket"), "{path}");
        }
    }
    // The installed unit verifies, its man: links included.
    let out = run(
        Command::new("systemd-analyze").args(["verify", "/lib/systemd/system/filterd.service"])
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {err}"
    );
    // Not started on install (docs/OPERATIONS.md).
    ensure!(!Path::new("/run/filterd/filterd.sock").exists());

    // What a running daemon leaves: saved generations and flow logs.
    fs::create_dir_all("/var/lib/filterd/generations")?;
    fs::write("/var/lib/filterd/generations/1.json", "{}")?;
    fs::create_dir_all("/var/log/filterd")?;
    fs::write("/var/log/filterd/flows.log", "")?;

    guard.purge()?;
    ensure!(!installed(), "{PACKAGE} is still installed after the purge");
    let left: Vec<String> = files
        .iter()
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .chain(
            HOST_PATHS
                .iter()
                .filter(|p| Path::new(p).exists())
                .map(|p| p.to_string()),
        )
        .collect();
    ensure!(left.is_empty(), "left after dpkg --purge: {left:?}");
    ensure!(!files.is_empty());
    Ok(())
}
