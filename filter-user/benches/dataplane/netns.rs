//! Network namespaces for the veth benchmark, removed on drop.
//!
//! Names are `fbench-<pid>-<label>`, so a run that was killed before its
//! guards dropped is recognised and swept by the next one (and by `cargo
//! xtask bench` when the benchmark exits). Interfaces are created inside the
//! namespaces and never exist in the caller's.
use std::{
    fs::{self, File},
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};
use nix::sched::{setns, CloneFlags};

const NETNS_DIR: &str = "/run/netns";
pub const PREFIX: &str = "fbench-";
/// The interface names of every pair (each pair has its own namespaces).
pub const CLIENT_IF: &str = "fbc0";
/// The guarded end, which the rule sets name.
pub const SERVER_IF: &str = "fbs0";

/// A namespace this process made.
pub struct Ns {
    name: String,
}

impl Ns {
    /// Creates `fbench-<pid>-<label>` with `lo` up.
    pub fn new(label: &str) -> Result<Self> {
        let name = format!("{PREFIX}{}-{label}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Runs `f` on a thread inside the namespace (sockets it opens live
    /// there; netlink and interface names resolve there).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let file = File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        std::thread::scope(|s| {
            let handle = s.spawn(move || -> Result<T> {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("setns into {}", self.name))?;
                Ok(f())
            });
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Moves the calling thread into the namespace for good (traffic
    /// threads that live as long as a measurement).
    pub fn enter(&self) -> Result<()> {
        let file = File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns into {}", self.name))
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// `ip netns exec <ns> <argv>`, with `stdin` as its input.
    pub fn exec(&self, argv: &[&str], stdin: Option<&[u8]>) -> Result<String> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(argv);
        match stdin {
            None => run(&mut cmd),
            Some(input) => run_with_input(&mut cmd, input),
        }
    }

    /// `sysctl -w` inside the namespace.
    pub fn sysctl(&self, settings: &[&str]) -> Result<()> {
        let mut argv = vec!["sysctl", "-q", "-w"];
        argv.extend_from_slice(settings);
        self.exec(&argv, None).map(drop)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Err(e) = run(Command::new("ip").args(["netns", "delete", &self.name])) {
            eprintln!("could not delete network namespace {}: {e:#}", self.name);
        }
    }
}

/// Two namespaces joined by a veth pair with `192.0.2.1/24` on the client
/// end and `192.0.2.2/24` on the server end (the guarded one).
pub struct Pair {
    pub client: Ns,
    pub server: Ns,
    pub server_if: String,
}

impl Pair {
    pub fn new(tag: &str) -> Result<Self> {
        let client = Ns::new(&format!("{tag}-c"))?;
        let server = Ns::new(&format!("{tag}-s"))?;
        let (client_if, server_if) = (CLIENT_IF, SERVER_IF.to_owned());
        run(Command::new("ip").args([
            "link",
            "add",
            client_if,
            "netns",
            client.name(),
            "type",
            "veth",
            "peer",
            "name",
            &server_if,
            "netns",
            server.name(),
        ]))?;
        client.ip(&["addr", "add", "192.0.2.1/24", "dev", client_if])?;
        server.ip(&["addr", "add", "192.0.2.2/24", "dev", &server_if])?;
        client.ip(&["link", "set", client_if, "up"])?;
        server.ip(&["link", "set", &server_if, "up"])?;
        // The new-flow traffic comes from many addresses of the client's
        // subnet, which the server never answers: no reverse-path check.
        server.sysctl(&[
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            &format!("net.ipv4.conf.{server_if}.rp_filter=0"),
        ])?;
        Ok(Self {
            client,
            server,
            server_if,
        })
    }
}

/// Deletes the `fbench-<pid>-*` namespaces of processes that are gone.
pub fn sweep_stale() {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = run(Command::new("ip").args(["netns", "delete", &name]));
        }
    }
}

/// Runs `cmd`; its stdout, or an error with everything it printed.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_with_input(cmd: &mut Command, input: &[u8]) -> Result<String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .with_context(|| format!("writing to {cmd:?}"))?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            stderr.chars().take(2000).collect::<String>()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
