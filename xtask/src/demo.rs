//! `cargo xtask demo`: build `filterd`, `filterctl` and the demo, then run
//! the demo as root.
//!
//! The demo itself is `filter-demo` (`tests/src/bin/filter-demo.rs`): it
//! shares the namespace cloud, the traffic checks and the daemon guard with
//! the scenario tests (`tests/src/{cloud,traffic,daemon}.rs`), which xtask
//! cannot depend on (xtask must build before `setup` has installed the eBPF
//! toolchain that `filter-user` needs). What it does is in its module docs
//! and in `examples/README.md`.
//!
//! Ctrl-C goes to the whole foreground process group: the demo catches it,
//! removes everything it made and exits; xtask ignores it meanwhile, so the
//! prompt comes back only once the clean-up is done.
use std::{
    env,
    path::{Path, PathBuf},
};

use anyhow::{bail, Result};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::{
    run::{cargo, cmd, is_root, run, workspace_root},
    setup::Toolchain,
};

pub struct Options {
    /// End after the traffic script instead of tailing the flow log until
    /// Ctrl-C (for CI and tests).
    pub no_follow: bool,
}

pub fn demo(toolchain: &Toolchain, opts: &Options) -> Result<()> {
    if !is_root() {
        bail!(
            "the demo creates network namespaces and loads eBPF programs: run it as root \
             (`sudo -E env \"PATH=$PATH\" cargo xtask demo`)"
        );
    }
    let env = toolchain.build_env();
    run(cargo(["build", "-p", "filter-user", "--bins"]).envs(env.clone()))?;
    run(cargo(["build", "-p", "filter-tests", "--bin", "filter-demo"]).envs(env))?;

    let bin_dir = target_dir().join("debug");
    let mut demo = cmd(bin_dir.join("filter-demo"));
    demo.env("FILTER_BIN_DIR", &bin_dir);
    if opts.no_follow {
        demo.arg("--no-follow");
    }
    let _ignore = IgnoreInterrupts::install();
    run(&mut demo)
}

/// `$CARGO_TARGET_DIR` (relative to the workspace root when relative),
/// else `<workspace>/target`.
pub(crate) fn target_dir() -> PathBuf {
    let root = workspace_root();
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

extern "C" fn ignore(_: nix::libc::c_int) {}

/// While alive, SIGINT does nothing to xtask. A handler rather than
/// `SIG_IGN`: handlers are reset on exec, so the demo still gets Ctrl-C.
struct IgnoreInterrupts {
    previous: Option<SigAction>,
}

impl IgnoreInterrupts {
    fn install() -> Self {
        let action = SigAction::new(
            SigHandler::Handler(ignore),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        // SAFETY: the handler does nothing.
        let previous = unsafe { sigaction(Signal::SIGINT, &action) }.ok();
        Self { previous }
    }
}

impl Drop for IgnoreInterrupts {
    fn drop(&mut self) {
        if let Some(previous) = &self.previous {
            // SAFETY: restores the disposition found at install.
            let _ = unsafe { sigaction(Signal::SIGINT, previous) };
        }
    }
}
