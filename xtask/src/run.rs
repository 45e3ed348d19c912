//! Running child processes: echo the command, inherit the terminal, turn a
//! failure into an error that keeps the child's exit code.
use std::{
    ffi::OsStr,
    fmt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result};

/// A child process failed; it has already said why on the terminal, so
/// `main` exits with its code and prints nothing more.
#[derive(Debug)]
pub struct Failed {
    pub what: String,
    pub code: i32,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` failed (exit code {})", self.what, self.code)
    }
}

impl std::error::Error for Failed {}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// A command that runs in the workspace root with stdin closed (CI has
/// none, and nothing here may prompt).
pub fn cmd(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(workspace_root()).stdin(Stdio::null());
    cmd
}

/// `cargo <args>`.
pub fn cargo<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = cmd("cargo");
    c.args(args);
    c
}

/// The command line, for messages.
pub fn describe(cmd: &Command) -> String {
    let envs: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())))
        .filter(|kv| !kv.starts_with("PATH="))
        .collect();
    envs.into_iter()
        .chain(std::iter::once(
            cmd.get_program().to_string_lossy().into_owned(),
        ))
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with the terminal attached, after echoing it.
pub fn run(cmd: &mut Command) -> Result<()> {
    let what = describe(cmd);
    println!("xtask: $ {what}");
    let status = cmd.status().with_context(|| format!("starting `{what}`"))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failed {
            what,
            code: status.code().unwrap_or(1),
        }
        .into())
    }
}

/// Runs `cmd` quietly; its trimmed stdout when it succeeds, `None` when it
/// fails or cannot start (a probe, not a step).
pub fn probe(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Whether `program` is on PATH (`command -v`).
pub fn have(program: &str) -> bool {
    probe(cmd("sh").args(["-c", &format!("command -v {program}")])).is_some()
}

/// Whether the process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
