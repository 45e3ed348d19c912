//! The real `filterd` as systemd runs it (SPEC §8): `READY=1` only once
//! the initial or restored generation is enforced and the socket answers,
//! `STATUS=` naming the generation, `STOPPING=1`, exit code 0 on SIGTERM;
//! the audit log of an apply; and `filterd cleanup` taking everything off
//! after the daemon has stopped (enforcement outlives it).
use std::{
    fs,
    os::unix::net::UnixDatagram,
    path::PathBuf,
    process::Command,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use aya::programs::{tc::TcAttachType, SchedClassifier};
use filter::digest::document_digest;
use filter_tests::{
    daemon::{output_within, Binaries, DaemonGuard, DaemonOptions, DaemonPaths},
    id::TestId,
    netns::{Netns, TestNet},
};
use serde_json::{json, Value};

/// How long a notification may take after the daemon was told to act.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(150);

/// What the test's `NOTIFY_SOCKET` heard: each datagram, and for a
/// `READY=1` the generation `status` answered with at that moment.
#[derive(Debug)]
struct Heard {
    message: String,
    /// Whether the kernel had the programs on the interface at READY=1.
    hooked_at_ready: Option<Result<bool, String>>,
    status_at_ready: Option<Result<Option<u64>, String>>,
}

/// A datagram socket standing in for systemd, in a directory of its own
/// (removed on drop); a thread forwards what it hears.
struct Notify {
    dir: PathBuf,
    socket: PathBuf,
    heard: mpsc::Receiver<Heard>,
}

impl Notify {
    fn bind(
        id: &TestId,
        daemon_socket: PathBuf,
        filterctl: PathBuf,
        guarded: (Netns, String),
    ) -> Result<Notify> {
        let dir = std::env::temp_dir().join(format!(
            "filter-notify-{}-{}",
            id.test(),
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let socket = dir.join("notify.sock");
        let receiver =
            UnixDatagram::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
        let (tx, heard) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = receiver.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                // Look at once, before anything else can happen: READY=1
                // promises that the generation runs (the kernel has the
                // programs on the interface) and that the socket answers.
                let ready = message.lines().any(|l| l == "READY=1");
                let hooked_at_ready =
                    ready.then(|| hooked(&guarded.0, &guarded.1).map_err(|e| format!("{e:#}")));
                let status_at_ready = ready.then(|| status_generation(&filterctl, &daemon_socket));
                if tx
                    .send(Heard {
                        message,
                        hooked_at_ready,
                        status_at_ready,
                    })
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Notify { dir, socket, heard })
    }

    /// The next message that has `line`, skipping others.
    fn wait_for(&self, line: &str) -> Result<Heard> {
        let deadline = Instant::now() + NOTIFY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let heard = self
                .heard
                .recv_timeout(left)
                .with_context(|| format!("no {line} within {NOTIFY_TIMEOUT:?}"))?;
            if heard.message.lines().any(|l| l == line) {
                return Ok(heard);
            }
        }
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn status_generation(filterctl: &PathBuf, socket: &PathBuf) -> Result<Option<u64>, String> {
    let out = output_within(
        Command::new(filterctl)
            .arg("--socket")
            .arg(socket)
            .args(["--json", "status"]),
        Duration::from_secs(60),
    )
    .map_err(|e| format!("{e:#}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(v["generation"].as_u64())
}

fn document(iface: &str, port: u16) -> Value {
    json!({
        "vpcs": [{"id": "vpc-a", "cidr": "192.0.2.0/24"}],
        "vswitches": [{"id": "vsw-a", "vpc_id": "vpc-a", "cidr": "192.0.2.0/28"}],
        "security_groups": [{"id": "sg-a", "vpc_id": "vpc-a", "type": "basic", "rules": [
            {"id": "web", "direction": "ingress", "policy": "accept", "ip_protocol": "tcp",
             "port_range": format!("{port}/{port}"), "source_cidr_ip": "0.0.0.0/0"}]}],
        "enis": [{"id": "eni-a", "interface": iface, "attach_mode": "tap",
                  "vswitch_id": "vsw-a", "ips": ["192.0.2.2"], "security_group_ids": ["sg-a"]}]
    })
}

fn hooked(ns: &Netns, iface: &str) -> Result<bool> {
    let xdp = ns
        .ip(&["-d", "link", "show", "dev", iface])?
        .contains("prog/xdp");
    let name = iface.to_owned();
    let tcx = ns.run(move || {
        [TcAttachType::Ingress, TcAttachType::Egress]
            .into_iter()
            .map(|at| SchedClassifier::query_tcx(&name, at).map(|(_, progs)| progs.len()))
            .sum::<Result<usize, _>>()
    })??;
    Ok(xdp || tcx > 0)
}

/// The audit line of `action` for `generation` in the daemon's log.
fn audit_line(log: &str, action: &str, generation: u64) -> Option<String> {
    log.lines()
        .filter(|l| l.contains("filterd::audit"))
        .find(|l| {
            l.contains(&format!("action=\"{action}\""))
                && l.contains(&format!(" generation={generation} "))
        })
        .map(str::to_owned)
}

#[test]
fn ready_after_enforcing_status_names_the_generation_and_cleanup_removes_all() -> Result<()> {
    let id = TestId::new("host_ready");
    {
        let mut net = TestNet::new(&id)?;
        let host = net.netns("host")?;
        let inst = net.netns("inst")?;
        let veth = net.veth(&host, &inst)?;
        let iface = veth.a.name.clone();
        let bins = Binaries::locate()?;
        let paths = DaemonPaths::new(&id);
        let notify = Notify::bind(
            &id,
            paths.socket.clone(),
            bins.filterctl.clone(),
            (host.clone(), iface.clone()),
        )?;

        // Start with --ruleset: READY only once generation 1 is enforced.
        let mut daemon = DaemonGuard::start_with(
            &id,
            &host,
            DaemonOptions {
                ruleset: Some(document(&iface, 80)),
                env: vec![(
                    "NOTIFY_SOCKET".to_owned(),
                    notify.socket.to_string_lossy().into_owned(),
                )],
                ..DaemonOptions::default()
            },
        )?;
        let ready = notify.wait_for("READY=1")?;
        assert_eq!(
            ready.hooked_at_ready,
            Some(Ok(true)),
            "at READY=1, {iface} should be guarded"
        );
        assert_eq!(
            ready.status_at_ready,
            Some(Ok(Some(1))),
            "at READY=1, status should answer with generation 1"
        );
        assert!(
            ready.message.contains("STATUS=enforcing generation 1"),
            "{}",
            ready.message
        );

        // An apply: STATUS= follows, and the audit log names the caller,
        // the generation and the digest.
        let doc = document(&iface, 8080);
        let applied = daemon.apply(&doc)?;
        assert_eq!(applied["generation"], 2);
        let status = notify.wait_for("STATUS=enforcing generation 2")?;
        assert!(!status.message.contains("READY=1"), "{}", status.message);
        let digest = document_digest(&doc.to_string()).context("digest")?;
        let log = daemon.log();
        let line = audit_line(&log, "apply", 2)
            .with_context(|| format!("no audit line for the apply in:\n{log}"))?;
        assert!(line.contains(" uid=0 "), "{line}");
        assert!(line.contains(&format!("digest=\"{digest}\"")), "{line}");
        let pid = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("pid="))
            .and_then(|p| p.parse::<u32>().ok());
        assert!(pid.is_some_and(|p| p > 1), "{line}");

        // A rejected apply is audited with the digest of what was sent.
        let mut bad = document(&iface, 8081);
        bad["security_groups"][0]["rules"][0]["priority"] = json!(101);
        let path = daemon.write_file("bad", &bad.to_string())?;
        daemon.ctl_json_err(&["apply", &path.to_string_lossy()])?;
        let digest = document_digest(&bad.to_string()).context("digest")?;
        let log = daemon.log();
        let rejected = log
            .lines()
            .rfind(|l| l.contains("filterd::audit") && l.contains("outcome=\"rejected\""))
            .with_context(|| format!("no audit line for the rejected apply in:\n{log}"))?;
        assert!(
            rejected.contains(&format!("digest=\"{digest}\"")),
            "{rejected}"
        );

        // A restart restores (takes over) generation 2: READY again, only
        // once it runs.
        daemon.restart()?;
        let ready = notify.wait_for("READY=1")?;
        assert_eq!(ready.status_at_ready, Some(Ok(Some(2))));
        assert!(
            ready.message.contains("STATUS=enforcing generation 2"),
            "{}",
            ready.message
        );

        // SIGTERM: STOPPING=1 and a clean exit; enforcement stays.
        let stopped = daemon.terminate()?;
        notify.wait_for("STOPPING=1")?;
        assert_eq!(stopped.code(), Some(0), "{stopped}");
        ensure!(daemon.pin_dir().exists(), "the pins went with the daemon");
        ensure!(
            hooked(&host, &iface)?,
            "{iface} unguarded after the daemon stopped"
        );

        // filterd cleanup, without a daemon: every link, program and map.
        let pin_dir = daemon.pin_dir().to_path_buf();
        let out = output_within(
            Command::new(&bins.filterd)
                .args(["--config", "/dev/null", "cleanup", "--pin-dir"])
                .arg(&pin_dir),
            Duration::from_secs(60),
        )?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(err.contains("detached"), "{err}");
        ensure!(!pin_dir.exists(), "{} is still there", pin_dir.display());
        ensure!(
            !hooked(&host, &iface)?,
            "{iface} is still hooked after cleanup"
        );
        // The state directory stays: a new start restores from it.
        ensure!(daemon.state_dir().join("generations").is_dir());
        drop(daemon);
    }
    id.assert_nothing_left()
}

/// `filterd cleanup` refuses while a daemon holds the pin directory.
#[test]
fn cleanup_refuses_while_a_daemon_runs() -> Result<()> {
    let id = TestId::new("host_cleanup_busy");
    {
        let mut net = TestNet::new(&id)?;
        let host = net.netns("host")?;
        let daemon = DaemonGuard::start(&id, &host)?;
        let bins = Binaries::locate()?;
        let out = output_within(
            Command::new(&bins.filterd)
                .args(["--config", "/dev/null", "cleanup", "--pin-dir"])
                .arg(daemon.pin_dir()),
            Duration::from_secs(60),
        )?;
        if out.status.code() != Some(1) {
            bail!(
                "cleanup should fail with 1 while the daemon runs: {:?} {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ensure!(daemon.pin_dir().exists());
        ensure!(daemon.generation()?.is_none());
    }
    id.assert_nothing_left()
}
