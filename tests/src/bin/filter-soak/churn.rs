//! What goes on around the probes: clients that come and go, an interface
//! that comes and goes, and a [`Pause`] that stills them while the
//! daemon's memory and descriptors are sampled.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Condvar, Mutex, PoisonError,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use filter_tests::{
    cloud::Node,
    daemon::{output_within, Binaries},
};

use crate::site::Site;

/// Stops the workers at a checkpoint of theirs while held.
#[derive(Default)]
pub struct Pause {
    state: Mutex<PauseState>,
    changed: Condvar,
}

#[derive(Default)]
struct PauseState {
    wanted: bool,
    parked: usize,
}

impl Pause {
    /// Called by a worker between two steps: parks while a pause is held.
    /// Returns before parking when `stop` is set.
    pub fn checkpoint(&self, stop: &AtomicBool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.wanted {
            return;
        }
        state.parked += 1;
        self.changed.notify_all();
        while state.wanted && !stop.load(Ordering::SeqCst) {
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.parked -= 1;
    }

    /// Asks every one of `workers` to park, and waits until they have
    /// (at most `limit`); the pause lasts until [`Pause::release`].
    pub fn hold(&self, workers: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.wanted = true;
        while state.parked < workers {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Whether a pause is asked for.
    pub fn wanted(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .wanted
    }

    pub fn release(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .wanted = false;
        self.changed.notify_all();
    }
}

/// What the workers counted, and every failure they saw.
#[derive(Default)]
pub struct Tally {
    pub clients: AtomicU64,
    pub flaps: AtomicU64,
    pub failures: Mutex<Vec<String>>,
}

impl Tally {
    pub fn fail(&self, what: impl Into<String>) {
        let what = what.into();
        eprintln!("soak: FAIL {what}");
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(what);
    }

    pub fn take_failures(&self) -> Vec<String> {
        std::mem::take(&mut *self.failures.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The socket and the CLI, for the client worker.
#[derive(Clone)]
pub struct Ctl {
    pub bins: Binaries,
    pub socket: PathBuf,
}

impl Ctl {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bins.filterctl);
        cmd.arg("--socket").arg(&self.socket).args(args);
        cmd
    }
}

/// A `flows --follow` or `monitor` client and the lines it printed.
struct Stream {
    what: String,
    child: Child,
    ends: Instant,
    reader: Option<JoinHandle<usize>>,
}

/// Clients, one after another, with up to two streams alongside: `status`
/// (exit 0, or 3 while `flap` is pending), `flows`, `counters`, `get`, a raw
/// client that sends half a request and hangs up, and `flows --follow` /
/// `monitor` streams that run a second or two and are stopped. Every exit
/// status is checked; a stream must still run when it is stopped.
pub fn clients(ctl: Ctl, pause: Arc<Pause>, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut streams: Vec<Stream> = Vec::new();
    let mut turn = 0u64;
    while !stop.load(Ordering::SeqCst) {
        // Streams end before a pause: the samples see no client at all.
        let pausing = pause.wanted();
        streams.retain_mut(|s| {
            if !pausing && Instant::now() < s.ends {
                return true;
            }
            end_stream(s, &tally);
            false
        });
        pause.checkpoint(&stop);
        turn += 1;
        if streams.len() < 2 && turn.is_multiple_of(3) {
            let args: &[&str] = if turn.is_multiple_of(2) {
                &["flows", "--follow"]
            } else {
                &["monitor"]
            };
            match start_stream(&ctl, args) {
                Ok(s) => streams.push(s),
                Err(e) => tally.fail(format!("starting filterctl {}: {e}", args.join(" "))),
            }
            tally.clients.fetch_add(1, Ordering::Relaxed);
        }
        let args: &[&str] = match turn % 5 {
            0 => &["--json", "status"],
            1 => &["flows"],
            2 => &["counters"],
            3 => &["get"],
            _ => &[],
        };
        if args.is_empty() {
            half_a_request(&ctl, &tally);
        } else {
            match output_within(&mut ctl.command(args), Duration::from_secs(60)) {
                Ok(out) => {
                    // `status` says 3 while an interface is pending (flap).
                    let ok = out.status.success()
                        || (args.contains(&"status") && out.status.code() == Some(3));
                    if !ok {
                        tally.fail(format!(
                            "filterctl {} exited with {}: {}",
                            args.join(" "),
                            out.status,
                            String::from_utf8_lossy(&out.stderr).trim()
                        ));
                    }
                }
                Err(e) => tally.fail(format!("filterctl {}: {e:#}", args.join(" "))),
            }
        }
        tally.clients.fetch_add(1, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(20));
    }
    for mut s in streams {
        end_stream(&mut s, &tally);
    }
}

fn start_stream(ctl: &Ctl, args: &[&str]) -> std::io::Result<Stream> {
    let mut child = ctl
        .command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take();
    let reader = thread::spawn(move || {
        stdout.map_or(0, |out| {
            BufReader::new(out).lines().map_while(Result::ok).count()
        })
    });
    Ok(Stream {
        what: format!("filterctl {}", args.join(" ")),
        child,
        ends: Instant::now() + Duration::from_millis(1000 + (rand_ms() % 1500)),
        reader: Some(reader),
    })
}

/// Stops a stream; it must not have ended on its own.
fn end_stream(s: &mut Stream, tally: &Tally) {
    match s.child.try_wait() {
        Ok(None) => {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
        Ok(Some(status)) => tally.fail(format!("{} ended on its own with {status}", s.what)),
        Err(e) => tally.fail(format!("{}: {e}", s.what)),
    }
    // The reader ends with the pipe.
    if let Some(reader) = s.reader.take() {
        let _ = reader.join();
    }
}

/// Connects, sends half a request and hangs up; then a full `version` on a
/// fresh connection must still be answered.
fn half_a_request(ctl: &Ctl, tally: &Tally) {
    let result = (|| -> std::io::Result<String> {
        let mut s = UnixStream::connect(&ctl.socket)?;
        s.write_all(br#"{"v":1,"id":1,"meth"#)?;
        drop(s);
        let mut s = UnixStream::connect(&ctl.socket)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(b"{\"v\":1,\"id\":2,\"method\":\"version\"}\n")?;
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line)?;
        Ok(line)
    })();
    match result {
        Ok(line) if line.contains("\"ok\":true") => {}
        Ok(line) => tally.fail(format!("version after a hang-up answered {line:?}")),
        Err(e) => tally.fail(format!("a raw client: {e}")),
    }
}

/// Deletes and re-creates `flap`'s interface until `stop`; leaves it
/// plugged in.
pub fn flap(site: Arc<Site>, pause: Arc<Pause>, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let node: &Node = &site.flap;
    while !stop.load(Ordering::SeqCst) {
        pause.checkpoint(&stop);
        if let Err(e) = site.cloud.unplug(node) {
            tally.fail(format!("deleting {}: {e:#}", node.port));
            return;
        }
        thread::sleep(Duration::from_millis(150));
        if let Err(e) = site.cloud.replug(node) {
            tally.fail(format!("re-creating {}: {e:#}", node.port));
            return;
        }
        tally.flaps.fetch_add(1, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(350));
    }
}

/// A few hundred milliseconds of jitter without a random-number crate.
fn rand_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()) / 1000)
}
