//! The real `filterd` and `filterctl` binaries, for end-to-end tests.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use filter_tests::{daemon::DaemonGuard, id::TestId, netns::TestNet};
//! let id = TestId::new("my_test");
//! {
//!     let mut net = TestNet::new(&id)?;
//!     let host = net.netns("host")?;
//!     // Declared after `net`, so it drops first: the daemon detaches while
//!     // its interfaces still exist.
//!     let daemon = DaemonGuard::start(&id, &host)?;
//!     let status = daemon.ctl_json(&["status"])?;
//!     assert!(status["generation"].is_null());
//! }
//! id.assert_nothing_left()?;
//! # Ok(()) }
//! ```
//!
//! A [`DaemonGuard`] runs `filterd` in a network namespace with
//! `nsenter --net=...` (only the network namespace: the daemon must see the
//! host's bpffs to pin, TOOLCHAIN.md), with paths of its own:
//!
//! - pin dir: [`TestId::pin_dir`] (`/sys/fs/bpf/filter-test-...`), which
//!   [`TestId::assert_nothing_left`] checks;
//! - socket, state dir, flow log and the daemon's log under the run dir
//!   `<tmp>/filter-test-<test>-<pid>-<n>/` (mode 0755, so a test may let
//!   another uid reach the socket).
//!
//! `filterctl` runs in the test's own namespaces: the socket is a path, not
//! part of any network namespace. Every child gets a time limit, so a
//! wedged daemon fails a test instead of hanging it.
//!
//! Dropping the guard runs `filterctl detach` (when the daemon is up), stops
//! the daemon (SIGTERM, then SIGKILL), removes whatever is still pinned
//! (links first, so the programs come off the interfaces) and the run dir.
//! One guard per [`TestId`]: two daemons need two ids.
//!
//! The binaries: `$FILTER_BIN_DIR`, else `$CARGO_TARGET_DIR/debug`, else the
//! workspace's `target/debug`. `cargo xtask test` builds them first.
use std::{
    fs,
    io::{self, Read},
    os::unix::{
        fs::PermissionsExt,
        net::UnixStream,
        process::{CommandExt, ExitStatusExt},
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc, Mutex, OnceLock,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use serde_json::Value;

use crate::{cmd::describe, id::TestId, netns::Netns, pins::ensure_bpffs};

/// How long `filterd` may take to load, verify and attach and then answer
/// on its socket (2 shared cores: the verifier can be slow).
pub const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one `filterctl` command may take.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a SIGTERM may take before the guard sends SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the `filterd` and `filterctl` binaries are.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub filterd: PathBuf,
    pub filterctl: PathBuf,
}

impl Binaries {
    /// `$FILTER_BIN_DIR`, else `$CARGO_TARGET_DIR/debug`, else
    /// `<workspace>/target/debug`; fails when a binary is missing.
    pub fn locate() -> Result<Binaries> {
        let dir = match (
            std::env::var_os("FILTER_BIN_DIR"),
            std::env::var_os("CARGO_TARGET_DIR"),
        ) {
            (Some(dir), _) => PathBuf::from(dir),
            (None, Some(target)) => PathBuf::from(target).join("debug"),
            (None, None) => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug"),
        };
        let bins = Binaries {
            filterd: dir.join("filterd"),
            filterctl: dir.join("filterctl"),
        };
        for bin in [&bins.filterd, &bins.filterctl] {
            if !bin.is_file() {
                bail!(
                    "{} is missing: run `cargo build -p filter-user --bins` first (`cargo xtask \
                     test` does), or point FILTER_BIN_DIR at the directory that has filterd and \
                     filterctl",
                    bin.display()
                );
            }
        }
        Ok(bins)
    }
}

/// Extra `filterd` settings; the paths are always the guard's own.
#[derive(Clone, Debug, Default)]
pub struct DaemonOptions {
    /// `--socket-group` (a name or a gid).
    pub socket_group: Option<String>,
    /// `--ruleset`: a document applied at start (written to the run dir).
    pub ruleset: Option<Value>,
    /// More flags, e.g. `["--capture-window", "1s"]`.
    pub args: Vec<String>,
    /// More environment, e.g. `NOTIFY_SOCKET`.
    pub env: Vec<(String, String)>,
}

/// The paths of one daemon.
#[derive(Clone, Debug)]
pub struct DaemonPaths {
    /// `<tmp>/filter-test-<test>-<pid>-<n>`: everything below but the pins.
    pub run_dir: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub pin_dir: PathBuf,
    pub flow_log: PathBuf,
    /// The daemon's stderr and stdout, over all its starts.
    pub log: PathBuf,
}

impl DaemonPaths {
    pub fn new(id: &TestId) -> DaemonPaths {
        let pin_dir = id.pin_dir();
        let name = pin_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("filter-test-{}", id.test()));
        let run_dir = std::env::temp_dir().join(name);
        DaemonPaths {
            socket: run_dir.join("run/filterd.sock"),
            state_dir: run_dir.join("state"),
            flow_log: run_dir.join("flows.log"),
            log: run_dir.join("filterd.log"),
            run_dir,
            pin_dir,
        }
    }
}

/// A running `filterd` (see the module docs). Stops it and removes all it
/// made when dropped.
#[derive(Debug)]
pub struct DaemonGuard {
    netns: Netns,
    bins: Binaries,
    paths: DaemonPaths,
    options: DaemonOptions,
    child: Option<Child>,
    next_file: AtomicU32,
}

impl DaemonGuard {
    /// Starts `filterd` in `netns` and waits until it answers on its socket.
    pub fn start(id: &TestId, netns: &Netns) -> Result<DaemonGuard> {
        Self::start_with(id, netns, DaemonOptions::default())
    }

    pub fn start_with(id: &TestId, netns: &Netns, options: DaemonOptions) -> Result<DaemonGuard> {
        crate::require_root()?;
        ensure_bpffs()?;
        let bins = Binaries::locate()?;
        sweep_stale_run_dirs();
        let paths = DaemonPaths::new(id);
        if paths.run_dir.exists() {
            bail!(
                "{} exists already: one DaemonGuard per TestId",
                paths.run_dir.display()
            );
        }
        fs::create_dir_all(&paths.run_dir)
            .with_context(|| format!("creating {}", paths.run_dir.display()))?;
        let mut guard = DaemonGuard {
            netns: netns.clone(),
            bins,
            paths,
            options,
            child: None,
            next_file: AtomicU32::new(0),
        };
        // From here on, a failure drops the guard, which cleans up.
        fs::set_permissions(&guard.paths.run_dir, fs::Permissions::from_mode(0o755))?;
        let ruleset = match guard.options.ruleset.clone() {
            Some(doc) => Some(guard.write_file("ruleset", &doc.to_string())?),
            None => None,
        };
        guard.spawn(ruleset.as_deref())?;
        Ok(guard)
    }

    pub fn paths(&self) -> &DaemonPaths {
        &self.paths
    }

    pub fn socket(&self) -> &Path {
        &self.paths.socket
    }

    pub fn pin_dir(&self) -> &Path {
        &self.paths.pin_dir
    }

    pub fn state_dir(&self) -> &Path {
        &self.paths.state_dir
    }

    pub fn bins(&self) -> &Binaries {
        &self.bins
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the daemon printed so far (all its starts).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.paths.log).unwrap_or_default()
    }

    /// Writes `contents` to a new file in the run dir (mode 0644) and
    /// returns its path.
    pub fn write_file(&self, stem: &str, contents: &str) -> Result<PathBuf> {
        let n = self.next_file.fetch_add(1, Ordering::Relaxed);
        let path = self.paths.run_dir.join(format!("{stem}-{n}.json"));
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        Ok(path)
    }

    fn spawn(&mut self, ruleset: Option<&Path>) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.paths.log)
            .with_context(|| format!("opening {}", self.paths.log.display()))?;
        let mut cmd = self.netns.nsenter(&self.bins.filterd.to_string_lossy());
        cmd.arg("--socket")
            .arg(&self.paths.socket)
            .arg("--state-dir")
            .arg(&self.paths.state_dir)
            .arg("--pin-dir")
            .arg(&self.paths.pin_dir)
            .arg("--flow-log")
            .arg(&self.paths.flow_log);
        if let Some(group) = &self.options.socket_group {
            cmd.arg("--socket-group").arg(group);
        }
        if let Some(path) = ruleset {
            cmd.arg("--ruleset").arg(path);
        }
        cmd.args(&self.options.args)
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let what = describe(&cmd);
        let child = spawn_outliving_caller(cmd).with_context(|| format!("starting `{what}`"))?;
        self.child = Some(child);
        self.wait_ready()
            .with_context(|| format!("`{what}` did not come up; its log:\n{}", self.log()))
    }

    /// Waits until the daemon answers `version` on its socket, or fails
    /// when it exits first.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!("filterd exited at start ({status})");
                }
            }
            if version_answers(&self.paths.socket) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "no answer on {} within {START_TIMEOUT:?}",
                    self.paths.socket.display()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `filterctl --socket <socket> <args>`, whatever its exit status.
    pub fn ctl(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(&self.bins.filterctl);
        cmd.arg("--socket").arg(&self.paths.socket).args(args);
        output_within(&mut cmd, CTL_TIMEOUT)
    }

    /// `filterctl --socket <socket> <args>` as uid and gid 65534 (nobody)
    /// with exactly the supplementary groups `groups` (`setpriv`), whatever
    /// its exit status.
    pub fn ctl_as_nobody(&self, groups: &[u32], args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534"]);
        if groups.is_empty() {
            cmd.arg("--clear-groups");
        } else {
            let list: Vec<String> = groups.iter().map(u32::to_string).collect();
            cmd.arg(format!("--groups={}", list.join(",")));
        }
        cmd.arg("--")
            .arg(&self.bins.filterctl)
            .arg("--socket")
            .arg(&self.paths.socket)
            .args(args);
        output_within(&mut cmd, CTL_TIMEOUT)
    }

    /// [`Self::ctl`], failing (with everything printed) on a non-zero exit;
    /// its stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.ctl(args)?;
        if !out.status.success() {
            bail!(
                "`filterctl {}` failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `filterctl --json <args>`, which must succeed: its output parsed.
    pub fn ctl_json(&self, args: &[&str]) -> Result<Value> {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let text = self.ctl_ok(&full)?;
        serde_json::from_str(&text)
            .with_context(|| format!("`filterctl {}` printed no JSON:\n{text}", full.join(" ")))
    }

    /// `filterctl --json status` on a host that may be degraded (exit 3,
    /// SPEC §8): the status and whether it said degraded.
    pub fn status_json(&self) -> Result<(Value, bool)> {
        let out = self.ctl(&["--json", "status"])?;
        let degraded = match out.status.code() {
            Some(0) => false,
            Some(3) => true,
            _ => bail!("`filterctl --json status` failed: {out:?}"),
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let status = serde_json::from_str(&text)
            .with_context(|| format!("`filterctl --json status` printed no JSON:\n{text}"))?;
        Ok((status, degraded))
    }

    /// `filterctl --json <args>`, which must fail with exit code 1: the
    /// `error` object it printed, and its stderr.
    pub fn ctl_json_err(&self, args: &[&str]) -> Result<(Value, String)> {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = self.ctl(&full)?;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        if out.status.code() != Some(1) {
            bail!(
                "`filterctl {}` should fail with exit code 1, got {}:\n{stdout}{stderr}",
                full.join(" "),
                out.status
            );
        }
        let value: Value = serde_json::from_str(&stdout).with_context(|| {
            format!("`filterctl {}` printed no JSON:\n{stdout}", full.join(" "))
        })?;
        let error = value
            .get("error")
            .cloned()
            .ok_or_else(|| anyhow!("no \"error\" in {value}"))?;
        Ok((error, stderr))
    }

    /// `filterctl --json apply FILE` with `doc` written to a file: the
    /// apply result. Fails when the daemon refuses.
    pub fn apply(&self, doc: &Value) -> Result<Value> {
        self.apply_text(&doc.to_string())
    }

    /// [`Self::apply`] with the document as text (byte for byte).
    pub fn apply_text(&self, text: &str) -> Result<Value> {
        let path = self.write_file("doc", text)?;
        self.ctl_json(&["apply", &path.to_string_lossy()])
    }

    /// The running generation (`status`), `None` when nothing runs.
    pub fn generation(&self) -> Result<Option<u64>> {
        Ok(self.status_json()?.0["generation"].as_u64())
    }

    /// Whether the daemon process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// SIGKILL: the daemon dies at once, without cleaning anything up.
    pub fn kill9(&mut self) -> Result<ExitStatus> {
        self.signal_and_wait(Signal::SIGKILL, STOP_TIMEOUT)
    }

    /// SIGTERM, and waits for the daemon to exit; its exit status.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        self.signal_and_wait(Signal::SIGTERM, STOP_TIMEOUT)
    }

    /// Sends `signal` and waits for the daemon to exit; its exit status.
    pub fn stop_with(&mut self, signal: Signal) -> Result<ExitStatus> {
        self.signal_and_wait(signal, STOP_TIMEOUT)
    }

    fn signal_and_wait(&mut self, signal: Signal, limit: Duration) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("filterd is not running"))?;
        let pid = Pid::from_raw(i32::try_from(child.id()).context("pid")?);
        if child.try_wait()?.is_none() {
            kill(pid, signal).with_context(|| format!("sending {signal} to filterd {pid}"))?;
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "filterd {pid} did not exit within {limit:?} of {signal}; killed it. Its \
                     log:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the daemon again with the same paths (no `--ruleset`: it
    /// restores or takes over what it finds), after stopping it with SIGTERM
    /// if it still runs.
    pub fn restart(&mut self) -> Result<()> {
        if self.is_running() {
            self.terminate()?;
        }
        self.spawn(None)
    }

    /// What dropping does, with errors: detach through the daemon if it
    /// runs, stop it, remove what is still pinned and the run dir.
    pub fn shutdown(mut self) -> Result<()> {
        self.cleanup()
    }

    fn cleanup(&mut self) -> Result<()> {
        let mut errors = Vec::new();
        if self.is_running() {
            match self.ctl(&["detach"]) {
                Ok(out) if out.status.success() => {}
                Ok(out) => errors.push(format!(
                    "filterctl detach: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )),
                Err(e) => errors.push(format!("filterctl detach: {e:#}")),
            }
            if let Err(e) = self.terminate() {
                errors.push(format!("{e:#}"));
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Links first (detaching the programs from the interfaces), then
        // maps, programs and the directory.
        if let Err(e) = filter::dataplane::detach_all_pinned(&self.paths.pin_dir) {
            errors.push(format!("removing {}: {e}", self.paths.pin_dir.display()));
            let _ = fs::remove_dir_all(&self.paths.pin_dir);
        }
        match fs::remove_dir_all(&self.paths.run_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("removing {}: {e}", self.paths.run_dir.display())),
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("cleaning up filterd:\n  {}", errors.join("\n  "))
        }
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            eprintln!("filter-tests: {e:#}");
        }
    }
}

/// Once per process: removes run dirs (`<tmp>/filter-test-<test>-<pid>-<n>`)
/// of test processes that no longer run. Their pins and namespaces are
/// swept by [`crate::id::sweep_stale`], their daemons died with them
/// (`PR_SET_PDEATHSIG`).
fn sweep_stale_run_dirs() {
    static SWEEP: OnceLock<()> = OnceLock::new();
    SWEEP.get_or_init(|| {
        let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("filter-test-") else {
                continue;
            };
            let fields: Vec<&str> = rest.split('-').collect();
            let numeric = |f: &str| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit());
            let pid = match fields.as_slice() {
                [_, pid, n] if numeric(pid) && numeric(n) => *pid,
                _ => continue,
            };
            if !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    });
}

/// Whether something answers a `version` request on `socket`.
fn version_answers(socket: &Path) -> bool {
    use std::io::{BufRead, BufReader, Write};
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"{\"v\":1,\"id\":0,\"method\":\"version\"}\n")
        .is_err()
    {
        return false;
    }
    let mut line = String::new();
    if BufReader::new(stream).read_line(&mut line).is_err() {
        return false;
    }
    serde_json::from_str::<Value>(&line).is_ok_and(|v| v["ok"] == Value::Bool(true))
}

/// Runs `cmd` with stdin closed and its output captured, killing it after
/// `limit`.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let what = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{what}`"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{what}` did not finish within {limit:?}; killed it");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let join = |h: thread::JoinHandle<Vec<u8>>| h.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout: join(stdout),
        stderr: join(stderr),
    })
}

/// Whether `status` is death by `signal`.
pub fn killed_by(status: &ExitStatus, signal: Signal) -> bool {
    status.signal() == Some(signal as i32)
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` from one thread that lives as long as the test process,
/// with `PR_SET_PDEATHSIG` = SIGKILL: a test process that dies without
/// dropping its guards (killed, aborted) takes its daemons with it, while a
/// guard started or restarted on any test thread outlives that thread.
fn spawn_outliving_caller(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    // SAFETY: prctl is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("filterd-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .map(drop)
            .unwrap_or_else(|e| eprintln!("filter-tests: no spawner thread: {e}"));
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}
