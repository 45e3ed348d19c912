//! Faults and abuse against the real `filterd` (issue 22, "Faults" and
//! "Security"; docs/SECURITY.md names what each test covers):
//!
//! - `sigkill_at_random_points_of_apply`: SIGKILL after a random delay
//!   within a measured apply; the kernel runs the old generation or the new
//!   one, never a mix; the state directory reads back; the restarted daemon
//!   takes over exactly what the kernel ran.
//! - `a_full_then_read_only_state_dir_fails_the_apply_and_changes_nothing`:
//!   a clear error naming the path, the old generation keeps running, and
//!   a restart restores it (nothing half-written).
//! - `no_path_leads_outside_the_daemon_dirs`: interface names that are
//!   paths are refused; links planted in the state directory are not
//!   followed.
//! - `an_unprivileged_user_changes_nothing`: every mutating command as uid
//!   65534 is refused and changes nothing; reading works.
//!
//! The ENI is `lo` of the daemon's namespace, ifindex 1 as in every
//! namespace, and a BPF_PROG_TEST_RUN arrives on ifindex 1: running the
//! *pinned* TC program (egress, so ENI ingress in tap mode) on a crafted
//! datagram gives the verdict the kernel's maps give right now, with no
//! traffic and no waiting. Each document admits UDP 5001 from its own
//! probe sources, spread through thousands of filler rules; the probes of
//! one document pass and the other's drop, or it is a mix.
use std::{
    fs,
    net::Ipv4Addr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use aya::{
    maps::{Array, Map, MapData},
    programs::{SchedClassifier, TestRun, TestRunOptions},
};
use filter::{api::Method, daemon::StateStore, dataplane::pins::PROGS_DIR};
use filter_common::names;
use filter_tests::{
    bpf::{TC_ACT_OK, TC_ACT_SHOT},
    cmd,
    daemon::DaemonGuard,
    id::TestId,
    netns::TestNet,
    packet::{Ipv4, Pkt, Udp},
};
use serde_json::{json, Value};

/// The ENI's address and the port the probe rules admit.
const ENI_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
const PROBE_PORT: u16 = 5001;
/// Probe rules per document, spread evenly through the filler rules.
const PROBES: usize = 8;
/// SIGKILLs in a default run; `FILTER_FAULT_KILLS` sets another number.
/// Each costs a daemon restart, which loads and verifies the programs
/// again (seconds each on 2 cores): see docs/SECURITY.md.
const DEFAULT_KILLS: usize = 6;
/// Filler rules of the kill test's documents: enough that an apply takes
/// well over 100 ms, so the kills land all over it.
const KILL_RULES: usize = 3_000;

/// Runs `body`, then checks that nothing was left behind, even when the
/// body failed.
fn fault_test(name: &str, body: impl FnOnce(&TestId) -> Result<()>) -> Result<()> {
    let id = TestId::new(name);
    let result = body(&id);
    let left = id.assert_nothing_left();
    result.and(left)
}

// ---------------------------------------------------------------------------
// Two documents, told apart by a verdict probe
// ---------------------------------------------------------------------------

/// Which of the two documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Doc {
    Old,
    New,
}

impl Doc {
    fn other(self) -> Doc {
        match self {
            Doc::Old => Doc::New,
            Doc::New => Doc::Old,
        }
    }

    /// The source of probe `k`: 198.51.100.x for the old document,
    /// 203.0.113.x for the new (RFC 5737).
    fn probe_source(self, k: usize) -> Ipv4Addr {
        let k = u8::try_from(k + 1).unwrap_or(u8::MAX);
        match self {
            Doc::Old => Ipv4Addr::new(198, 51, 100, k),
            Doc::New => Ipv4Addr::new(203, 0, 113, k),
        }
    }

    /// `rules` filler rules (UDP, a port band of its own per document, from
    /// /32s in 172.16.0.0/12) with the [`PROBES`] probe rules among them,
    /// on one ENI on `lo`.
    fn document(self, rules: usize) -> Value {
        let band = match self {
            Doc::Old => 10_000,
            Doc::New => 20_000,
        };
        let every = (rules / PROBES).max(1);
        let mut list = Vec::with_capacity(rules + PROBES);
        for i in 0..rules {
            if i % every == 0 && i / every < PROBES {
                let k = i / every;
                list.push(json!({
                    "id": format!("probe-{k}"), "direction": "ingress", "policy": "accept",
                    "ip_protocol": "udp", "port_range": format!("{PROBE_PORT}/{PROBE_PORT}"),
                    "source_cidr_ip": format!("{}/32", self.probe_source(k)),
                }));
            }
            let port = band + i % 5_000;
            let src = Ipv4Addr::from(0xac10_0000_u32 + u32::try_from(i).unwrap_or(0));
            list.push(json!({
                "id": format!("fill-{i}"), "direction": "ingress", "policy": "accept",
                "ip_protocol": "udp", "port_range": format!("{port}/{port}"),
                "source_cidr_ip": format!("{src}/32"),
            }));
        }
        json!({
            "vpcs": [{"id": "vpc-f", "cidr": "10.0.0.0/8"}],
            "vswitches": [{"id": "vsw-f", "vpc_id": "vpc-f", "cidr": "10.0.1.0/24"}],
            "security_groups": [{"id": "sg-f", "vpc_id": "vpc-f", "type": "basic", "rules": list}],
            "enis": [{"id": "eni-f", "interface": "lo", "attach_mode": "tap",
                      "vswitch_id": "vsw-f", "ips": [ENI_ADDR.to_string()],
                      "security_group_ids": ["sg-f"]}],
        })
    }
}

/// The pinned maps and TC program of one daemon, read from the test.
struct Kernel<'a> {
    pin_dir: &'a Path,
    /// Source ports, new for every probe: each is a first packet, never a
    /// tracked one.
    next_port: u16,
}

impl<'a> Kernel<'a> {
    fn new(pin_dir: &'a Path) -> Self {
        Kernel {
            pin_dir,
            next_port: 20_000,
        }
    }

    /// `FILTER_ACTIVE[0]`: the generation the programs run.
    fn active(&self) -> Result<u32> {
        let data = MapData::from_pin(self.pin_dir.join(names::ACTIVE))
            .context("opening the pinned FILTER_ACTIVE")?;
        let active: Array<MapData, u32> = Array::try_from(Map::Array(data))?;
        Ok(active.get(&0, 0)?)
    }

    /// Whether the pinned TC program passes a UDP datagram from `src` to
    /// the ENI's probe port.
    fn passes(&mut self, src: Ipv4Addr) -> Result<bool> {
        self.next_port = self.next_port.checked_add(1).unwrap_or(20_000);
        let frame = Pkt::eth()
            .push(Ipv4::new(src.octets(), ENI_ADDR.octets()))
            .push(Udp::new(self.next_port, PROBE_PORT))
            .build();
        let prog = SchedClassifier::from_pin(self.pin_dir.join(PROGS_DIR).join(names::PROG_TC))
            .context("opening the pinned TC program")?;
        let code = prog
            .test_run(TestRunOptions {
                data_in: Some(frame.as_ref()),
                ..Default::default()
            })?
            .return_value;
        match code {
            TC_ACT_OK => Ok(true),
            TC_ACT_SHOT => Ok(false),
            other => bail!("the TC program returned {other}"),
        }
    }

    /// Which document every probe's verdict agrees with; an error names
    /// the probes of a mix.
    fn runs(&mut self) -> Result<Doc> {
        let mut verdicts = Vec::new();
        for doc in [Doc::Old, Doc::New] {
            for k in 0..PROBES {
                verdicts.push((doc, k, self.passes(doc.probe_source(k))?));
            }
        }
        for doc in [Doc::Old, Doc::New] {
            if verdicts.iter().all(|(d, _, pass)| *pass == (*d == doc)) {
                return Ok(doc);
            }
        }
        bail!("the kernel runs a mix of the two documents: (document, probe, passes) {verdicts:?}")
    }
}

/// The state directory reads back: a newest record, every record parses.
fn state_reads_back(state_dir: &Path) -> Result<u32> {
    let store = StateStore::open(state_dir)?;
    let (newest, skipped) = store.newest()?;
    ensure!(skipped.is_empty(), "unreadable records: {skipped:?}");
    let newest = newest.ok_or_else(|| anyhow!("no saved generation"))?;
    for g in store.generations()? {
        ensure!(store.load(g)?.is_some(), "generation {g} does not load");
    }
    Ok(newest.generation)
}

/// `status`: the generation and the digest.
fn enforced(daemon: &DaemonGuard) -> Result<(u64, String)> {
    let (status, degraded) = daemon.status_json()?;
    ensure!(!degraded, "the daemon says it is degraded: {status}");
    let generation = status["generation"]
        .as_u64()
        .ok_or_else(|| anyhow!("no generation: {status}"))?;
    let digest = status["digest"]
        .as_str()
        .ok_or_else(|| anyhow!("no digest: {status}"))?;
    Ok((generation, digest.to_owned()))
}

/// A small xorshift generator: the seed is printed, and
/// `FILTER_FAULT_SEED` replays a run.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("FILTER_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("FILTER_FAULT_SEED={seed}");
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

// ---------------------------------------------------------------------------
// SIGKILL during apply
// ---------------------------------------------------------------------------

/// SIGKILL at a random point of `apply`, `FILTER_FAULT_KILLS` times (see
/// [`DEFAULT_KILLS`]): each time the kernel runs the old or the new
/// document, never a mix (probed in the kernel right after the kill, with
/// no daemon), the state directory reads back, and the restarted daemon
/// reports, as generation and digest, exactly what the kernel ran (an
/// apply killed before its switch is not restored: its client never heard
/// it succeed). An apply that `filterctl` saw succeed is the one running.
#[test]
fn sigkill_at_random_points_of_apply() -> Result<()> {
    fault_test("f_kill", |id| {
        let kills = std::env::var("FILTER_FAULT_KILLS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(DEFAULT_KILLS);
        let mut rng = Rng::from_env();
        let mut net = TestNet::new(id)?;
        let host = net.netns("host")?;
        let mut daemon = DaemonGuard::start(id, &host)?;
        let mut files = Vec::new();
        let mut digests = Vec::new();
        for doc in [Doc::Old, Doc::New] {
            let text = doc.document(KILL_RULES).to_string();
            digests.push(
                filter::digest::document_digest(&text)
                    .ok_or_else(|| anyhow!("no digest of the {doc:?} document"))?,
            );
            files.push(daemon.write_file("kill", &text)?);
        }
        let file = |doc: Doc| files[doc as usize].to_string_lossy().into_owned();
        let digest = |doc: Doc| digests[doc as usize].clone();
        let pin_dir = daemon.pin_dir().to_owned();
        let mut kernel = Kernel::new(&pin_dir);

        // Measure an apply as the rounds see it, the first after a
        // restart (slower: the other slot's leftovers are looked for);
        // the delays reach half as far again, past the client's answer.
        daemon.ctl_ok(&["apply", &file(Doc::New)])?;
        daemon.restart()?;
        let started = Instant::now();
        daemon.ctl_ok(&["apply", &file(Doc::Old)])?;
        let window = started.elapsed() * 3 / 2;
        ensure!(kernel.runs()? == Doc::Old);
        eprintln!("killing within {window:?} of each apply of {KILL_RULES} rules");

        let mut running = Doc::Old;
        let mut outcomes = [0usize; 3];
        let mut saved_unswitched = 0;
        for round in 0..kills {
            let target = running.other();
            let before = kernel.active()?;
            let mut client = Command::new(&daemon.bins().filterctl);
            client
                .arg("--socket")
                .arg(daemon.socket())
                .args(["apply", &file(target)])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut client = client.spawn()?;
            let delay = Duration::from_micros(rng.below(window.as_micros() as u64));
            thread::sleep(delay);
            daemon.kill9()?;
            let succeeded = client.wait()?.success();

            // The daemon is dead: the kernel alone.
            let seen = kernel.runs().with_context(|| format!("round {round}"))?;
            let active = kernel.active()?;
            ensure!(
                (seen == running) == (active == before),
                "round {round}: FILTER_ACTIVE {before} -> {active} but the probes see {seen:?}"
            );
            ensure!(
                !succeeded || seen == target,
                "round {round}: filterctl reported success but the kernel runs {seen:?}"
            );
            let newest = state_reads_back(daemon.state_dir())
                .with_context(|| format!("round {round}: the state directory"))?;
            // Killed between saving the record and switching to it: the
            // case a restart must not restore.
            saved_unswitched += usize::from(newest > active);

            daemon.restart()?;
            let (generation, restored) = enforced(&daemon)?;
            ensure!(
                generation == u64::from(active) && restored == digest(seen),
                "round {round}: the kernel ran generation {active} ({seen:?}), the restarted \
                 daemon enforces generation {generation} with digest {restored}"
            );
            ensure!(
                kernel.runs()? == seen,
                "round {round}: changed by the restart"
            );
            outcomes[usize::from(seen == target) + usize::from(succeeded)] += 1;
            eprintln!(
                "round {round}: applying {target:?} over {running:?}, killed after {delay:?}: \
                 the kernel ran {seen:?}"
            );
            running = seen;
        }
        eprintln!(
            "{kills} kills: {} left the old generation ({saved_unswitched} of them with the new \
             record saved), {} the new one before its client heard, {} after",
            outcomes[0], outcomes[1], outcomes[2]
        );
        // The restarted daemon is in charge: the next apply goes through.
        daemon.ctl_ok(&["apply", &file(running.other())])?;
        ensure!(kernel.runs()? == running.other());
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// A full or read-only state directory
// ---------------------------------------------------------------------------

/// A tmpfs mounted over a directory, unmounted (lazily: the daemon may
/// still hold it) when dropped.
struct Mounted {
    path: PathBuf,
}

impl Mounted {
    fn tmpfs(path: &Path, size: &str) -> Result<Mounted> {
        cmd::run(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(path),
        )?;
        Ok(Mounted {
            path: path.to_owned(),
        })
    }

    fn remount(&self, options: &str) -> Result<()> {
        cmd::run(
            Command::new("mount")
                .args(["-o", &format!("remount,{options}")])
                .arg(&self.path),
        )?;
        Ok(())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = cmd::run(Command::new("umount").arg("-l").arg(&self.path)) {
            eprintln!("filter-tests: {e:#}");
        }
    }
}

/// Copies the files of `from` (one level of directories) into `to`.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            fs::create_dir_all(&target)?;
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// An apply that the state directory refuses: the error names what
/// failed, the path and the cause; nothing changed in the kernel, in
/// `status` or in the directory; and a restarted daemon restores what ran
/// before.
fn refused_then_restored(
    daemon: &mut DaemonGuard,
    kernel: &mut Kernel<'_>,
    doc: &Path,
    cause: &str,
    before: &(u64, String),
) -> Result<()> {
    let (error, _) = daemon.ctl_json_err(&["apply", &doc.to_string_lossy()])?;
    let message = error["message"].as_str().unwrap_or_default();
    let generations = daemon.state_dir().join("generations");
    ensure!(
        error["code"] == json!("state_failed")
            && message.contains("saving generation")
            && message.contains(&format!("generation {} keeps running", before.0))
            && message.contains(&*generations.to_string_lossy())
            && message.contains(cause),
        "the error should say what failed, where and why ({cause}): {error}"
    );
    ensure!(&enforced(daemon)? == before, "status changed");
    ensure!(kernel.runs()? == Doc::Old, "the kernel changed");
    let saved = StateStore::open(daemon.state_dir())?.generations()?;
    ensure!(saved == [before.0 as u32], "saved generations {saved:?}");
    let stray: Vec<_> = fs::read_dir(&generations)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    ensure!(stray.is_empty(), "half-written files left: {stray:?}");
    daemon.restart()?;
    ensure!(
        &enforced(daemon)? == before,
        "the restart restored something else"
    );
    ensure!(kernel.runs()? == Doc::Old, "the restart changed the kernel");
    Ok(())
}

/// A full disk, then a read-only one, under the state directory: each
/// apply fails with an error that names the path and the cause, the old
/// generation keeps running (probed in the kernel), and a restarted daemon
/// restores the old generation: nothing half-written is ever restored.
#[test]
fn a_full_then_read_only_state_dir_fails_the_apply_and_changes_nothing() -> Result<()> {
    fault_test("f_disk", |id| {
        let mut net = TestNet::new(id)?;
        let host = net.netns("host")?;
        let mut daemon = DaemonGuard::start(id, &host)?;
        let pin_dir = daemon.pin_dir().to_owned();
        let mut kernel = Kernel::new(&pin_dir);
        daemon.apply(&Doc::Old.document(PROBES))?;
        ensure!(kernel.runs()? == Doc::Old);
        let before = enforced(&daemon)?;
        // A document whose record cannot fit in what is left.
        let big = daemon.write_file("big", &Doc::New.document(KILL_RULES).to_string())?;

        // Declared after the daemon: unmounted before the daemon's guard
        // cleans up.
        let state = daemon.state_dir().to_owned();
        let saved = daemon.paths().run_dir.join("state-copy");
        fs::create_dir(&saved)?;
        copy_tree(&state, &saved)?;
        let mount = Mounted::tmpfs(&state, "256k")?;
        copy_tree(&saved, &state)?;

        refused_then_restored(
            &mut daemon,
            &mut kernel,
            &big,
            "No space left on device",
            &before,
        )?;

        mount.remount("ro")?;
        let small = daemon.write_file("small", &Doc::New.document(PROBES).to_string())?;
        refused_then_restored(
            &mut daemon,
            &mut kernel,
            &small,
            "Read-only file system",
            &before,
        )?;

        // Writable again: the same apply goes through.
        mount.remount("rw")?;
        daemon.ctl_ok(&["apply", &small.to_string_lossy()])?;
        ensure!(kernel.runs()? == Doc::New);
        drop(mount);
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------

/// One request on the daemon's socket, as root, without `filterctl` (so
/// no client-side check comes first): the response.
fn raw_call(socket: &Path, request: &Value) -> Result<Value> {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(serde_json::from_str(&line)?)
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
    {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(files_under(&path));
        }
        out.push(path);
    }
    out.sort();
    out
}

/// The only field of a document or request that becomes a path is an
/// ENI's `interface` (the name of its link pins, `links/<ifname>-tc`):
/// names that are paths are refused before anything is touched. And the
/// daemon follows no link planted in its state directory: not at a
/// temporary file's name (it would write through it), not as a record (it
/// would restore a document from elsewhere).
#[test]
fn no_path_leads_outside_the_daemon_dirs() -> Result<()> {
    fault_test("f_paths", |id| {
        let mut net = TestNet::new(id)?;
        let host = net.netns("host")?;
        let mut daemon = DaemonGuard::start(id, &host)?;
        let pin_dir = daemon.pin_dir().to_owned();
        let mut kernel = Kernel::new(&pin_dir);
        daemon.apply(&Doc::Old.document(PROBES))?;
        let before = enforced(&daemon)?;
        let outside = daemon.paths().run_dir.join("outside");
        fs::create_dir(&outside)?;
        let victim = outside.join("victim");
        let pins_before = files_under(&pin_dir);

        let escape = format!("../../../../..{}", outside.display());
        for name in [
            escape.as_str(),
            "../x",
            "..",
            ".",
            "/etc/passwd",
            "a/../../b",
            "lo\0x",
        ] {
            let mut doc = Doc::Old.document(PROBES);
            doc["enis"][0]["interface"] = json!(name);
            let response = raw_call(
                daemon.socket(),
                &json!({"v": 1, "id": 1, "method": "apply",
                        "params": {"document": doc.to_string()}}),
            )?;
            let details = response["error"]["details"].to_string();
            ensure!(
                response["error"]["code"] == json!("invalid_document")
                    && details.contains("enis[0].interface"),
                "interface {name:?}: {response}"
            );
        }
        ensure!(
            files_under(&pin_dir) == pins_before,
            "the pin directory changed"
        );
        ensure!(
            files_under(&outside).is_empty(),
            "something was made outside"
        );
        ensure!(enforced(&daemon)? == before);

        // A link planted at the next record's temporary name: the apply
        // replaces it rather than write through it.
        let generations = daemon.state_dir().join("generations");
        let next = before.0 + 1;
        fs::write(&victim, b"not the daemon's")?;
        std::os::unix::fs::symlink(&victim, generations.join(format!(".{next:010}.json.tmp")))?;
        let applied = daemon.apply(&Doc::New.document(PROBES))?;
        ensure!(applied["generation"].as_u64() == Some(next), "{applied}");
        ensure!(
            fs::read(&victim)? == b"not the daemon's",
            "written through a link"
        );
        ensure!(kernel.runs()? == Doc::New);
        let after = enforced(&daemon)?;

        // A link planted as the newest record, to a record of the old
        // document outside: the restart neither restores nor writes it.
        let record = fs::read(generations.join(format!("{:010}.json", before.0)))?;
        let planted = outside.join("record.json");
        fs::write(&planted, &record)?;
        std::os::unix::fs::symlink(&planted, generations.join("0000099999.json"))?;
        daemon.restart()?;
        ensure!(
            enforced(&daemon)? == after,
            "restored through a planted link"
        );
        ensure!(
            fs::read(&planted)? == record,
            "the planted record was written"
        );
        ensure!(kernel.runs()? == Doc::New);
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// An unprivileged user
// ---------------------------------------------------------------------------

/// uid 65534 may read and change nothing (SPEC §5). The socket file is
/// opened to everyone (0666) so the daemon's own check is what refuses:
/// every mutating command, in every form `filterctl` has, exits 1 with
/// `permission_denied` naming the uid, and afterwards the generation, the
/// digest, the saved generations, the pins and the kernel's verdicts are
/// what they were. The read-only commands answer as for root.
#[test]
fn an_unprivileged_user_changes_nothing() -> Result<()> {
    fault_test("f_nobody", |id| {
        let mut net = TestNet::new(id)?;
        let host = net.netns("host")?;
        let daemon = DaemonGuard::start(id, &host)?;
        let pin_dir = daemon.pin_dir().to_owned();
        let mut kernel = Kernel::new(&pin_dir);
        daemon.apply(&Doc::New.document(PROBES))?;
        daemon.apply(&Doc::Old.document(PROBES))?;
        let before = enforced(&daemon)?;
        let saved = StateStore::open(daemon.state_dir())?.generations()?;
        let pins = files_under(&pin_dir);

        // The mode keeps nobody out of the socket itself.
        let out = daemon.ctl_as_nobody(&[], &["status"])?;
        ensure!(
            out.status.code() == Some(1)
                && String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "a 0660 socket should refuse uid 65534: {out:?}"
        );
        fs::set_permissions(daemon.socket(), fs::Permissions::from_mode(0o666))?;

        // Every mutating method; a new one fails here until it is added.
        let mutating: Vec<Method> = Method::ALL
            .into_iter()
            .filter(|m| m.is_mutating())
            .collect();
        ensure!(
            mutating == [Method::Apply, Method::Rollback, Method::Detach],
            "mutating methods {mutating:?}: test each one below"
        );
        let doc = daemon.write_file("nobody", &Doc::New.document(PROBES).to_string())?;
        let doc = doc.to_string_lossy();
        let generation = before.0.to_string();
        let first = saved.first().map(u32::to_string).unwrap_or_default();
        for args in [
            vec!["apply", &*doc],
            vec!["apply", "--if-generation", &generation, &doc],
            vec!["rollback"],
            vec!["rollback", "--to", &first],
            vec!["detach"],
        ] {
            let out = daemon.ctl_as_nobody(&[], &args)?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            ensure!(
                out.status.code() == Some(1)
                    && stderr.contains("(permission_denied)")
                    && stderr.contains("you are uid 65534"),
                "`filterctl {}` as uid 65534: {out:?}",
                args.join(" ")
            );
            ensure!(
                enforced(&daemon)? == before,
                "`{}` changed status",
                args.join(" ")
            );
        }
        ensure!(StateStore::open(daemon.state_dir())?.generations()? == saved);
        ensure!(files_under(&pin_dir) == pins, "the pins changed");
        ensure!(kernel.runs()? == Doc::Old, "the kernel changed");

        // Reading is for everyone who can open the socket.
        let src = format!("{}:40000", Doc::Old.probe_source(0));
        let dst = format!("{ENI_ADDR}:{PROBE_PORT}");
        for args in [
            vec!["status"],
            vec!["get"],
            vec!["counters"],
            vec!["version"],
            vec!["flows"],
            vec!["apply", "--dry-run", &*doc],
            vec![
                "explain",
                "--eni",
                "eni-f",
                "--direction",
                "ingress",
                "--proto",
                "udp",
                "--src",
                &src,
                "--dst",
                &dst,
            ],
        ] {
            let mut json_args = vec!["--json"];
            json_args.extend(&args);
            let as_nobody = daemon.ctl_as_nobody(&[], &json_args)?;
            ensure!(
                as_nobody.status.success(),
                "`filterctl {}` as uid 65534: {as_nobody:?}",
                args.join(" ")
            );
        }
        let got: Value =
            serde_json::from_slice(&daemon.ctl_as_nobody(&[], &["--json", "get"])?.stdout)?;
        ensure!(
            got["generation"].as_u64() == Some(before.0),
            "`get` as uid 65534: {got}"
        );
        ensure!(enforced(&daemon)? == before, "a read changed something");
        Ok(())
    })
}
