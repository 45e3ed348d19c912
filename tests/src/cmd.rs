//! Running the system tools the tests drive (`ip`, `tc`, `ping`, `nsenter`).
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context as _, Result};

/// `ip`, with stdin closed.
pub fn ip() -> Command {
    tool("ip")
}

/// `tc`, with stdin closed.
pub fn tc() -> Command {
    tool("tc")
}

/// Any tool, with stdin closed (tests never prompt).
pub fn tool(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `cmd`; its stdout when it succeeds, else an error that shows the
/// command line and everything it printed.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}):\n{}{}",
            describe(cmd),
            out.status,
            lossy(&out.stdout),
            lossy(&out.stderr)
        );
    }
    Ok(lossy(&out.stdout))
}

/// Runs `cmd` and returns its output whatever the exit status.
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.output().with_context(|| {
        format!(
            "running `{}` (is it installed? `cargo xtask setup` installs the test tools)",
            describe(cmd)
        )
    })
}

/// The command line, for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
