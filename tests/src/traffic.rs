//! Real traffic between the nodes of a [`Cloud`](crate::cloud::Cloud):
//! echo servers, one-shot probes, and [`Checks`], lists of connections
//! that must work or must fail.
//!
//! - [`Servers`] answer on TCP and UDP ports of one node, both families
//!   (one dual-stack socket per port): every line or datagram comes back
//!   prefixed with the node's name, so an answer proves which node it came
//!   from.
//! - A probe ([`probe`]) sends one request from a node and says what came
//!   back: the answer, silence, or a refusal (a TCP reset, an ICMP error),
//!   which means the request got through to the host.
//! - ICMP is `ping` (the kernel's ping sockets are off in new namespaces).
//!
//! Timing on a loaded 2-core machine: a connection that **must work** gets
//! [`WORK_TRIES`] tries of [`WORK_WAIT`] each (a first IPv6 packet may wait
//! a second for neighbour discovery); one that **must fail** is given a
//! fixed [`FAIL_WAIT`] to stay silent. A refusal never counts as "failed as
//! expected": the filter drops silently, so a reset means the packet passed.
//! The checks of one list run in parallel.
use std::{
    fmt,
    io::{self, BufRead, BufReader, Write},
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use filter::{api::ExplainResult, ruleset::Direction, verdict::Verdict};

use crate::{
    cloud::{Family, Node},
    daemon::DaemonGuard,
};

/// One try of a connection that must work.
pub const WORK_WAIT: Duration = Duration::from_secs(2);
/// Tries of a connection that must work.
pub const WORK_TRIES: u32 = 3;
/// How long a connection that must fail has to stay silent.
pub const FAIL_WAIT: Duration = Duration::from_millis(1500);
/// How long a server keeps an idle connection open.
const IDLE: Duration = Duration::from_secs(120);
/// How often server threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);

/// What a probe asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    Tcp(u16),
    Udp(u16),
    /// ICMP / ICMPv6 echo.
    Ping,
}

impl Service {
    /// `tcp`, `udp`, or `icmp`/`icmpv6` for `family`: the protocol as
    /// documents and `filterctl` name it.
    pub fn proto(&self, family: Family) -> &'static str {
        match (self, family) {
            (Service::Tcp(_), _) => "tcp",
            (Service::Udp(_), _) => "udp",
            (Service::Ping, Family::V4) => "icmp",
            (Service::Ping, Family::V6) => "icmpv6",
        }
    }

    /// The IP protocol number.
    pub fn proto_number(&self, family: Family) -> u8 {
        match (self, family) {
            (Service::Tcp(_), _) => 6,
            (Service::Udp(_), _) => 17,
            (Service::Ping, Family::V4) => 1,
            (Service::Ping, Family::V6) => 58,
        }
    }

    /// The destination port, for TCP and UDP.
    pub fn port(&self) -> Option<u16> {
        match self {
            Service::Tcp(p) | Service::Udp(p) => Some(*p),
            Service::Ping => None,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Service::Tcp(p) => write!(f, "tcp/{p}"),
            Service::Udp(p) => write!(f, "udp/{p}"),
            Service::Ping => f.write_str("ping"),
        }
    }
}

/// What came back from one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The service answered (its answer).
    Answered(String),
    /// Nothing came back in time: what a filter drop looks like.
    Silent,
    /// The host answered, but not the service: a TCP reset, an ICMP error.
    /// The request passed the filter.
    Refused(String),
    /// The probe itself could not run.
    Error(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Answered(a) => write!(f, "answered ({a})"),
            Outcome::Silent => f.write_str("no answer"),
            Outcome::Refused(why) => write!(f, "refused ({why}): the request got through"),
            Outcome::Error(e) => write!(f, "probe error: {e}"),
        }
    }
}

/// One request from `from` to `to` (`to`'s address of `family`), waiting
/// at most `wait` for the answer.
pub fn probe(from: &Node, to: IpAddr, service: Service, wait: Duration) -> Outcome {
    match service {
        Service::Ping => ping(from, to, wait),
        Service::Tcp(port) => from
            .netns
            .run(move || tcp_probe(SocketAddr::new(to, port), wait))
            .unwrap_or_else(|e| Outcome::Error(format!("{e:#}"))),
        Service::Udp(port) => from
            .netns
            .run(move || udp_probe(SocketAddr::new(to, port), wait))
            .unwrap_or_else(|e| Outcome::Error(format!("{e:#}"))),
    }
}

fn ping(from: &Node, to: IpAddr, wait: Duration) -> Outcome {
    let secs = wait.as_secs().max(1).to_string();
    let to = to.to_string();
    match from.netns.output(&["ping", "-n", "-c1", "-W", &secs, &to]) {
        Ok(out) if out.status.success() => Outcome::Answered("echo reply".into()),
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            // "From 192.0.2.1 icmp_seq=1 Destination Host Unreachable" (an
            // ICMP error: something answered), not "... Redirect Host".
            let error = |l: &&str| {
                l.starts_with("From ")
                    && ["Unreachable", "Prohibited", "exceeded"]
                        .iter()
                        .any(|w| l.contains(w))
            };
            match text.lines().find(error) {
                Some(line) => Outcome::Refused(line.trim().to_owned()),
                None if out.status.code() == Some(1) => Outcome::Silent,
                None => Outcome::Error(format!(
                    "ping exited with {}: {}{}",
                    out.status,
                    text,
                    String::from_utf8_lossy(&out.stderr)
                )),
            }
        }
        Err(e) => Outcome::Error(format!("{e:#}")),
    }
}

fn io_outcome(e: &io::Error) -> Outcome {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Outcome::Silent,
        io::ErrorKind::ConnectionRefused => Outcome::Refused("connection refused".into()),
        io::ErrorKind::ConnectionReset => Outcome::Refused("connection reset".into()),
        _ => match e.raw_os_error() {
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => Outcome::Refused(e.to_string()),
            _ => Outcome::Error(e.to_string()),
        },
    }
}

fn tcp_probe(addr: SocketAddr, wait: Duration) -> Outcome {
    let deadline = Instant::now() + wait;
    let stream = match TcpStream::connect_timeout(&addr, wait) {
        Ok(s) => s,
        Err(e) => return io_outcome(&e),
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    exchange_line(&stream, "probe", left)
}

/// Sends `msg` and a newline on `stream`; the line that comes back.
fn exchange_line(stream: &TcpStream, msg: &str, wait: Duration) -> Outcome {
    let (Ok(()), Ok(())) = (
        stream.set_read_timeout(Some(wait)),
        stream.set_write_timeout(Some(wait)),
    ) else {
        return Outcome::Error("setting socket timeouts".into());
    };
    let mut writer = stream;
    if let Err(e) = writer.write_all(format!("{msg}\n").as_bytes()) {
        return io_outcome(&e);
    }
    let mut line = String::new();
    match BufReader::new(stream).read_line(&mut line) {
        Ok(0) => Outcome::Refused("the connection was closed".into()),
        Ok(_) => Outcome::Answered(line.trim_end().to_owned()),
        Err(e) => io_outcome(&e),
    }
}

fn udp_probe(addr: SocketAddr, wait: Duration) -> Outcome {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let result = (|| -> io::Result<String> {
        let socket = UdpSocket::bind(local)?;
        socket.connect(addr)?;
        socket.set_read_timeout(Some(wait))?;
        socket.send(b"probe")?;
        let mut buf = [0u8; 1500];
        let n = socket.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })();
    match result {
        Ok(answer) => Outcome::Answered(answer),
        Err(e) => io_outcome(&e),
    }
}

/// Whether a connection is expected to work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Works,
    Fails,
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expect::Works => "must work",
            Expect::Fails => "must fail",
        })
    }
}

/// One connection and what must happen to it.
#[derive(Clone, Debug)]
pub struct Check {
    pub from: Node,
    pub to: Node,
    pub family: Family,
    pub service: Service,
    pub expect: Expect,
}

impl Check {
    pub fn dst(&self) -> IpAddr {
        self.to.addr(self.family)
    }

    pub fn src(&self) -> IpAddr {
        self.from.addr(self.family)
    }

    /// Runs the check: retries while a working connection does not work
    /// yet; one fixed wait for one that must fail.
    pub fn run(&self) -> CheckResult {
        let started = Instant::now();
        let answer = format!("{}:probe", self.to.name);
        let mut tries = 0;
        let outcome = loop {
            tries += 1;
            let wait = match self.expect {
                Expect::Works => WORK_WAIT,
                Expect::Fails => FAIL_WAIT,
            };
            let outcome = probe(&self.from, self.dst(), self.service, wait);
            let answered = matches!(outcome, Outcome::Answered(_));
            if self.expect == Expect::Fails || answered || tries >= WORK_TRIES {
                break outcome;
            }
            thread::sleep(Duration::from_millis(200));
        };
        let works = match &outcome {
            Outcome::Answered(a) => self.service == Service::Ping || *a == answer,
            _ => false,
        };
        let ok = match self.expect {
            Expect::Works => works,
            Expect::Fails => outcome == Outcome::Silent,
        };
        CheckResult {
            check: self.clone(),
            outcome,
            ok,
            tries,
            elapsed: started.elapsed(),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {} {} {} ({} -> {})",
            self.from,
            self.to,
            self.service,
            self.family,
            self.src(),
            self.dst()
        )
    }
}

/// What a [`Check`] found.
#[derive(Clone, Debug)]
pub struct CheckResult {
    pub check: Check,
    pub outcome: Outcome,
    /// Whether the expectation held.
    pub ok: bool,
    pub tries: u32,
    pub elapsed: Duration,
}

impl CheckResult {
    /// Whether the connection worked (whatever was expected).
    pub fn worked(&self) -> bool {
        match self.check.expect {
            Expect::Works => self.ok,
            Expect::Fails => !self.ok && matches!(self.outcome, Outcome::Answered(_)),
        }
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}: {} [{} tr{}, {:.1}s]",
            if self.ok { "ok  " } else { "FAIL" },
            self.check,
            self.check.expect,
            self.outcome,
            self.tries,
            if self.tries == 1 { "y" } else { "ies" },
            self.elapsed.as_secs_f64()
        )
    }
}

/// A list of connections that must work and connections that must fail.
#[derive(Clone, Debug, Default)]
pub struct Checks {
    pub list: Vec<Check>,
}

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    /// `from` → `to` must work over IPv4 and IPv6.
    pub fn works(&mut self, from: &Node, to: &Node, service: Service) -> &mut Self {
        self.add(from, to, service, &Family::BOTH, Expect::Works)
    }

    /// `from` → `to` must fail over IPv4 and IPv6.
    pub fn fails(&mut self, from: &Node, to: &Node, service: Service) -> &mut Self {
        self.add(from, to, service, &Family::BOTH, Expect::Fails)
    }

    pub fn add(
        &mut self,
        from: &Node,
        to: &Node,
        service: Service,
        families: &[Family],
        expect: Expect,
    ) -> &mut Self {
        for &family in families {
            self.list.push(Check {
                from: from.clone(),
                to: to.clone(),
                family,
                service,
                expect,
            });
        }
        self
    }

    /// Runs every check in parallel; the results in list order.
    pub fn run(&self) -> Vec<CheckResult> {
        thread::scope(|s| {
            let handles: Vec<_> = self.list.iter().map(|c| s.spawn(|| c.run())).collect();
            handles
                .into_iter()
                .zip(&self.list)
                .map(|(h, c)| {
                    h.join().unwrap_or_else(|_| CheckResult {
                        check: c.clone(),
                        outcome: Outcome::Error("the check panicked".into()),
                        ok: false,
                        tries: 0,
                        elapsed: Duration::ZERO,
                    })
                })
                .collect()
        })
    }

    /// Runs every check, prints every result under `title`, and fails
    /// naming every check whose expectation did not hold.
    pub fn assert(&self, title: &str) -> Result<Vec<CheckResult>> {
        let results = self.run();
        println!("{title}:");
        for r in &results {
            println!("  {r}");
        }
        let failed: Vec<String> = results
            .iter()
            .filter(|r| !r.ok)
            .map(ToString::to_string)
            .collect();
        if !failed.is_empty() {
            bail!(
                "{title}: {} of {} connection checks failed:\n  {}",
                failed.len(),
                results.len(),
                failed.join("\n  ")
            );
        }
        Ok(results)
    }
}

/// Echo servers on one node: TCP (a line in, the line back prefixed with
/// `<node>:`) and UDP (the same per datagram) on every port asked for,
/// over both families. Stopped, connections and all, on drop.
#[derive(Debug)]
pub struct Servers {
    stop: Arc<AtomicBool>,
    /// Accepted connections, to shut down on drop.
    conns: Arc<Mutex<Vec<TcpStream>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    pub fn start(node: &Node, tcp: &[u16], udp: &[u16]) -> Result<Servers> {
        let (tcp, udp) = (tcp.to_vec(), udp.to_vec());
        // Sockets belong to the namespace they are made in: bind there,
        // serve from anywhere.
        let (listeners, sockets) = node
            .netns
            .run(move || -> Result<(Vec<TcpListener>, Vec<UdpSocket>)> {
                let any = |port| SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
                let listeners = tcp
                    .iter()
                    .map(|&p| TcpListener::bind(any(p)).with_context(|| format!("tcp/{p}")))
                    .collect::<Result<Vec<_>>>()?;
                let sockets = udp
                    .iter()
                    .map(|&p| UdpSocket::bind(any(p)).with_context(|| format!("udp/{p}")))
                    .collect::<Result<Vec<_>>>()?;
                Ok((listeners, sockets))
            })?
            .with_context(|| format!("starting servers on {node}"))?;
        let mut servers = Servers {
            stop: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(Vec::new())),
            threads: Vec::new(),
        };
        for listener in listeners {
            listener.set_nonblocking(true)?;
            let (stop, conns, name) = (
                servers.stop.clone(),
                servers.conns.clone(),
                node.name.clone(),
            );
            servers.threads.push(thread::spawn(move || {
                accept_loop(&listener, &stop, &conns, &name)
            }));
        }
        for socket in sockets {
            socket.set_read_timeout(Some(POLL * 5))?;
            let (stop, name) = (servers.stop.clone(), node.name.clone());
            servers
                .threads
                .push(thread::spawn(move || udp_loop(&socket, &stop, &name)));
        }
        Ok(servers)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for conn in self
            .conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    stop: &Arc<AtomicBool>,
    conns: &Arc<Mutex<Vec<TcpStream>>>,
    name: &str,
) {
    let mut handlers: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let Ok(clone) = stream.try_clone() else {
                    continue;
                };
                conns
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(clone);
                let name = name.to_owned();
                handlers.push(thread::spawn(move || echo_lines(stream, &name)));
                handlers.retain(|h| !h.is_finished());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(_) => thread::sleep(POLL),
        }
    }
    // Connections accepted before the stop flag are shut down by the
    // owner; wait for their handlers.
    for h in handlers {
        let _ = h.join();
    }
}

fn echo_lines(stream: TcpStream, name: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(IDLE));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                // `delay:<ms>`: answer that much later (a server that
                // speaks while the client is silent).
                if let Some(ms) = line.trim_end().strip_prefix("delay:") {
                    thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
                }
                let reply = format!("{name}:{}\n", line.trim_end());
                if writer.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}

fn udp_loop(socket: &UdpSocket, stop: &Arc<AtomicBool>, name: &str) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::SeqCst) {
        if let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let reply = format!("{name}:{}", String::from_utf8_lossy(&buf[..n]));
            let _ = socket.send_to(reply.as_bytes(), peer);
        }
    }
}

/// An open TCP connection to an echo server, for checks on established
/// connections (a rule change that cuts it or keeps it).
#[derive(Debug)]
pub struct Conversation {
    stream: TcpStream,
    server: String,
    sent: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl Conversation {
    /// Connects `from` to `to`:`port` over `family` and exchanges a first
    /// line (retrying the connect as a working check does).
    pub fn open(from: &Node, to: &Node, family: Family, port: u16) -> Result<Conversation> {
        let addr = SocketAddr::new(to.addr(family), port);
        let mut last = String::new();
        for _ in 0..WORK_TRIES {
            let stream = from
                .netns
                .run(move || TcpStream::connect_timeout(&addr, WORK_WAIT))?;
            match stream {
                Ok(stream) => {
                    let mut conv = Conversation {
                        local: stream.local_addr()?,
                        remote: addr,
                        stream,
                        server: to.name.clone(),
                        sent: 0,
                    };
                    if conv.exchange(WORK_WAIT) {
                        return Ok(conv);
                    }
                    last = "connected, but the first line got no answer".into();
                }
                Err(e) => last = e.to_string(),
            }
            thread::sleep(Duration::from_millis(200));
        }
        bail!("{from} -> {to} tcp/{port} {family}: could not open a conversation: {last}")
    }

    /// Sends one more line; whether its echo comes back within `wait`.
    pub fn exchange(&mut self, wait: Duration) -> bool {
        self.sent += 1;
        let msg = format!("line{}", self.sent);
        let expected = format!("{}:{msg}", self.server);
        matches!(exchange_line(&self.stream, &msg, wait), Outcome::Answered(a) if a == expected)
    }

    /// Asks the server to answer only after `delay`, and returns at once:
    /// [`Conversation::answered`] waits for that answer.
    pub fn request_delayed(&mut self, delay: Duration) -> Result<()> {
        let msg = format!("delay:{}\n", delay.as_millis());
        (&self.stream)
            .write_all(msg.as_bytes())
            .context("sending a delayed request")
    }

    /// Whether the answer to [`Conversation::request_delayed`] arrives within
    /// `wait`.
    pub fn answered(&mut self, wait: Duration) -> bool {
        if self.stream.set_read_timeout(Some(wait)).is_err() {
            return false;
        }
        let mut line = String::new();
        matches!(BufReader::new(&self.stream).read_line(&mut line), Ok(n) if n > 0)
            && line.starts_with(&format!("{}:delay:", self.server))
    }
}

/// The source port [`explain`] gives a TCP or UDP packet: a typical
/// ephemeral port (the checks' real ones are picked by the kernel).
pub const EXPLAIN_SRC_PORT: u16 = 40000;

/// `filterctl explain` for the first packet of a check at one ENI.
#[derive(Clone, Debug)]
pub struct Explained {
    pub eni: String,
    pub direction: Direction,
    pub result: ExplainResult,
}

impl Explained {
    pub fn verdict(&self) -> Verdict {
        self.result.decision.verdict
    }

    /// The reason as `filterctl` prints it (`sg-web/http`, `default-deny`).
    pub fn reason(&self) -> &str {
        &self.result.reason
    }
}

impl fmt::Display for Explained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.verdict() {
            Verdict::Accept => "ACCEPT",
            Verdict::Drop => "DROP",
        };
        write!(
            f,
            "{} {}: {verdict} by {}",
            self.eni,
            self.direction.as_str(),
            self.reason()
        )
    }
}

/// `IP:PORT`, `[IPv6]:PORT`, or the bare address without a port.
pub fn endpoint(addr: IpAddr, port: Option<u16>) -> String {
    match port {
        Some(p) => SocketAddr::new(addr, p).to_string(),
        None => addr.to_string(),
    }
}

/// What the running rules decide about the first packet of `check`: at the
/// source's ENI on egress and at the destination's ENI on ingress (those
/// that are instances), in that order, the way the packet goes.
pub fn explain(daemon: &DaemonGuard, check: &Check) -> Result<Vec<Explained>> {
    let family = check.family;
    let proto = check.service.proto(family);
    let sport = check.service.port().map(|_| EXPLAIN_SRC_PORT);
    let src = endpoint(check.src(), sport);
    let dst = endpoint(check.dst(), check.service.port());
    let mut out = Vec::new();
    for (node, direction) in [
        (&check.from, Direction::Egress),
        (&check.to, Direction::Ingress),
    ] {
        let Some(eni) = node.eni_id() else {
            continue;
        };
        let json = daemon.ctl_json(&[
            "explain",
            "--eni",
            &eni,
            "--direction",
            direction.as_str(),
            "--proto",
            proto,
            "--src",
            &src,
            "--dst",
            &dst,
        ])?;
        let result: ExplainResult = serde_json::from_value(json)
            .with_context(|| format!("reading `filterctl --json explain` for {check}"))?;
        out.push(Explained {
            eni,
            direction,
            result,
        });
    }
    Ok(out)
}
