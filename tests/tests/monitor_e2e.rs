//! `filterctl monitor` end to end (SPEC §9, issue 19): the real `filterd`
//! guarding an ENI in a namespace, with the default 60 s capture window, so
//! nothing shown can have come from a closed window.
//!
//! - `events_arrive_within_100ms_with_each_filter`: an admitted connection
//!   (with its rule), a rejected flow (with its reason) and a connection
//!   cut by revalidation reach every `monitor` subscriber whose filters
//!   they pass, and no other, within 100 ms of the packet; `filterctl
//!   monitor` prints them.
//! - `a_stalled_client_blocks_nothing`: a `monitor` client and a scrape
//!   that stall while 8,000 flows are rejected: another `monitor` client
//!   gets every event, `status` and scrapes answer, connections go
//!   through, the flow log records every flow, and the stalled client,
//!   once it reads, is told exactly how many events it missed.
//!
//! Addresses are RFC 5737 only. Everything is removed at the end.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::unix::net::UnixStream,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{anyhow, ensure, Context as _, Result};
use filter_tests::{
    daemon::{DaemonGuard, DaemonOptions},
    flowlog::read_log,
    id::TestId,
    instance::HostAndInstance,
    netns::Netns,
};
use serde_json::{json, Value};

const HOST: &str = "192.0.2.1";
const VM: &str = "192.0.2.10";
const LATENCY: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_secs(10);
const METRICS: &str = "127.0.0.1:9465";

fn setup(id: &TestId) -> Result<HostAndInstance> {
    HostAndInstance::new(id, &format!("{HOST}/24"), &format!("{VM}/24"))
}

/// TCP 8080 in is accepted by `http`; other inbound UDP meets the default
/// deny; anything out is accepted by the egress default (basic group).
fn document(tap: &str, extra_rules: &[Value]) -> Value {
    let mut rules = vec![
        json!({"id": "http", "direction": "ingress", "policy": "accept",
        "priority": 1, "ip_protocol": "tcp", "port_range": "8080/8080",
        "source_cidr_ip": "0.0.0.0/0"}),
    ];
    rules.extend_from_slice(extra_rules);
    json!({
        "vpcs": [{"id": "vpc-mon", "cidr": "192.0.2.0/24"}],
        "vswitches": [{"id": "vsw-mon", "vpc_id": "vpc-mon", "cidr": "192.0.2.0/25"}],
        "security_groups": [{"id": "sg-mon", "vpc_id": "vpc-mon", "type": "basic",
                             "inner_access_policy": "drop", "rules": rules}],
        "enis": [{"id": "eni-mon", "interface": tap, "attach_mode": "tap",
                  "vswitch_id": "vsw-mon", "ips": [VM], "security_group_ids": ["sg-mon"]}]
    })
}

// ---------------------------------------------------------------------------
// A raw `monitor` client
// ---------------------------------------------------------------------------

/// One line of a stream as it arrived.
struct Line {
    at: Instant,
    events: Vec<Value>,
    missed: u64,
}

/// A `monitor` subscription on the daemon's socket, read by a thread.
struct Monitor {
    socket: UnixStream,
    lines: mpsc::Receiver<Line>,
    reader: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Subscribes with `params` and waits for the (empty) first line.
    fn subscribe(socket: &Path, params: Value) -> Result<(UnixStream, BufReader<UnixStream>)> {
        let mut s = UnixStream::connect(socket)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        let request = json!({"v": 1, "id": 1, "method": "monitor", "params": params});
        s.write_all(format!("{request}\n").as_bytes())?;
        let mut reader = BufReader::new(s.try_clone()?);
        let mut first = String::new();
        reader.read_line(&mut first)?;
        let first: Value =
            serde_json::from_str(&first).with_context(|| format!("monitor {params}: {first:?}"))?;
        ensure!(
            first["ok"] == true && first["result"]["events"] == json!([]),
            "monitor {params}: {first}"
        );
        s.set_read_timeout(None)?;
        Ok((s, reader))
    }

    /// Subscribes and reads every line from now on.
    fn start(socket: &Path, params: Value) -> Result<Monitor> {
        let (socket, reader) = Monitor::subscribe(socket, params)?;
        let (tx, lines) = mpsc::channel();
        let reader = thread::spawn(move || read_lines(reader, &tx));
        Ok(Monitor {
            socket,
            lines,
            reader: Some(reader),
        })
    }

    /// Every line that arrived until `until` (those already there when
    /// it has passed).
    fn lines_until(&self, until: Instant) -> Vec<Line> {
        let mut out = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => out.push(line),
                Err(_) => return out,
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn read_lines(mut reader: BufReader<UnixStream>, tx: &mpsc::Sender<Line>) {
    let mut text = String::new();
    loop {
        text.clear();
        match reader.read_line(&mut text) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        let at = Instant::now();
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            return;
        };
        let line = Line {
            at,
            events: value["result"]["events"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            missed: value["result"]["missed"].as_u64().unwrap_or(0),
        };
        if tx.send(line).is_err() {
            return;
        }
    }
}

/// The first event of `kind` from source port `sport` to destination port
/// `dport`, with the time its line arrived.
fn find(lines: &[Line], kind: &str, sport: u16, dport: u16) -> Option<(Instant, Value)> {
    lines.iter().find_map(|l| {
        l.events
            .iter()
            .find(|e| e["event"] == kind && e["srcport"] == sport && e["dstport"] == dport)
            .map(|e| (l.at, e.clone()))
    })
}

// ---------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// One datagram from `from:sport` (0: any) in `ns` to `to:port`; its
/// source port.
fn datagram(ns: &Netns, (from, sport): (&str, u16), to: &str, port: u16) -> Result<u16> {
    let socket = ns.run(|| UdpSocket::bind((from, sport)))??;
    socket.send_to(b"hello", SocketAddr::from((ip(to), port)))?;
    Ok(socket.local_addr()?.port())
}

fn accept_within(listener: &TcpListener) -> Result<TcpStream> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match listener.accept() {
            Ok((c, _)) => {
                c.set_nonblocking(false)?;
                return Ok(c);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e).context("accepting"),
        }
    }
}

/// A TCP connection from `client` to `server` at `addr:port`: (client end,
/// server end).
fn connect(
    client: &Netns,
    server: &Netns,
    addr: &str,
    port: u16,
) -> Result<(TcpStream, TcpStream)> {
    let listener = server.run(|| TcpListener::bind((addr, port)))??;
    listener.set_nonblocking(true)?;
    let to = SocketAddr::from((ip(addr), port));
    let c = client.run(|| TcpStream::connect_timeout(&to, TIMEOUT))??;
    let s = accept_within(&listener)?;
    Ok((c, s))
}

/// `filterctl monitor ARGS` printing into a thread: its lines.
fn filterctl_monitor(
    daemon: &DaemonGuard,
    args: &[&str],
) -> Result<(Child, mpsc::Receiver<String>)> {
    let mut child = Command::new(&daemon.bins().filterctl)
        .arg("--socket")
        .arg(daemon.socket())
        .arg("monitor")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Ok((child, rx))
}

/// Kills a child when dropped.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `filterd` on the host, enforcing [`document`], with `args`.
fn start(id: &TestId, s: &HostAndInstance, args: &[&str]) -> Result<DaemonGuard> {
    DaemonGuard::start_with(
        id,
        &s.host,
        DaemonOptions {
            ruleset: Some(document(&s.tap, &[])),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            ..DaemonOptions::default()
        },
    )
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[test]
fn events_arrive_within_100ms_with_each_filter() -> Result<()> {
    let id = TestId::new("monitor_filters");
    filters_scenario(&id)?;
    id.assert_nothing_left()
}

fn filters_scenario(id: &TestId) -> Result<()> {
    let s = setup(id)?;
    let daemon = start(id, &s, &[])?;
    let (cli, cli_lines) = filterctl_monitor(&daemon, &["--rule", "sg-mon/http"])?;
    let _cli = Reap(cli);
    // (filters, shows the admitted connection, shows the rejected flow).
    let cases: Vec<(Value, bool, bool)> = vec![
        (json!({}), true, true),
        (json!({"eni": "eni-mon"}), true, true),
        (json!({"eni": "eni-other"}), false, false),
        (json!({"action": "ACCEPT"}), true, false),
        (json!({"action": "REJECT"}), false, true),
        (json!({"addr": VM}), true, true),
        (json!({"addr": "192.0.2.99"}), false, false),
        (json!({"port": 8080}), true, false),
        (json!({"proto": "udp"}), false, true),
        (json!({"direction": "ingress"}), true, true),
        (json!({"direction": "egress"}), false, false),
        (json!({"src": "192.0.2.0/28"}), true, true),
        (json!({"src": "198.51.100.0/24"}), false, false),
        (json!({"dst": "192.0.2.10/32"}), true, true),
        (json!({"dst": "192.0.2.1/32"}), false, false),
        (json!({"rule": "sg-mon/http"}), true, false),
        (json!({"rule": "default-deny"}), false, true),
    ];
    let monitors = cases
        .iter()
        .map(|(params, _, _)| Monitor::start(daemon.socket(), params.clone()))
        .collect::<Result<Vec<_>>>()?;
    // The CLI has no first line to wait for.
    thread::sleep(Duration::from_millis(300));

    let admitted_at = Instant::now();
    let (client, _server) = connect(&s.host, &s.vm, VM, 8080)?;
    let sport = client.local_addr()?.port();
    let rejected_at = Instant::now();
    let uport = datagram(&s.host, (HOST, 0), VM, 5354)?;
    let until = Instant::now() + Duration::from_millis(500);

    for ((params, admitted, rejected), monitor) in cases.iter().zip(&monitors) {
        let lines = monitor.lines_until(until);
        let a = find(&lines, "admitted", sport, 8080);
        let r = find(&lines, "rejected", uport, 5354);
        ensure!(a.is_some() == *admitted, "{params}: admitted event {a:?}");
        ensure!(r.is_some() == *rejected, "{params}: rejected event {r:?}");
        for (got, sent, rule) in [
            (a, admitted_at, "sg-mon/http"),
            (r, rejected_at, "default-deny"),
        ] {
            let Some((at, event)) = got else { continue };
            ensure!(
                at.duration_since(sent) <= LATENCY,
                "{params}: {event} came {:?} after the packet",
                at.duration_since(sent)
            );
            ensure!(
                event["rule_id"] == rule
                    && event["eni_id"] == "eni-mon"
                    && event["direction"] == "ingress"
                    && event["srcaddr"] == HOST
                    && event["dstaddr"] == VM,
                "{params}: {event}"
            );
        }
    }
    let printed = cli_lines.recv_timeout(TIMEOUT)?;
    ensure!(
        printed.contains("admitted")
            && printed.contains("sg-mon/http")
            && printed.contains(&format!("{HOST}:{sport} -> {VM}:8080")),
        "filterctl monitor printed {printed:?}"
    );
    drop(monitors);

    // A connection out, admitted by the egress default, then cut by a
    // generation that drops it, on its next packet.
    let watch = Monitor::start(daemon.socket(), json!({"port": 8081}))?;
    let (mut client, mut server) = connect(&s.vm, &s.host, HOST, 8081)?;
    let sport = client.local_addr()?.port();
    client.write_all(b"ping")?;
    server.read_exact(&mut [0u8; 4])?;
    let drop_8081 = json!({"id": "cut-8081", "direction": "egress", "policy": "drop",
        "priority": 1, "ip_protocol": "tcp", "port_range": "8081/8081",
        "dest_cidr_ip": "0.0.0.0/0"});
    daemon.apply(&document(&s.tap, &[drop_8081]))?;
    let cut_at = Instant::now();
    client.write_all(b"more")?;
    let lines = watch.lines_until(Instant::now() + Duration::from_millis(500));
    let admitted = find(&lines, "admitted", sport, 8081);
    ensure!(
        admitted.is_some(),
        "no admitted event for the connection out"
    );
    let (at, cut) = find(&lines, "cut", sport, 8081).ok_or_else(|| anyhow!("no cut event"))?;
    ensure!(
        at.duration_since(cut_at) <= LATENCY,
        "the cut came {:?} after the packet",
        at.duration_since(cut_at)
    );
    ensure!(
        cut["rule_id"] == "default-accept" && cut["direction"] == "egress",
        "{cut}"
    );
    Ok(())
}

#[test]
fn a_stalled_client_blocks_nothing() -> Result<()> {
    let id = TestId::new("monitor_stall");
    stall_scenario(&id)?;
    id.assert_nothing_left()
}

/// Flows rejected while a client stalls.
const FLOWS: usize = 8000;

fn stall_scenario(id: &TestId) -> Result<()> {
    let s = setup(id)?;
    let daemon = start(
        id,
        &s,
        &["--capture-window", "1s", "--metrics-listen", METRICS],
    )?;
    let filter = json!({"port": 5354});
    // Reads its first line, then nothing until the end.
    let (_stalled_socket, mut stalled) = Monitor::subscribe(daemon.socket(), filter.clone())?;
    let live = Monitor::start(daemon.socket(), filter)?;
    // A scrape that never finishes its request, and one that never reads.
    let metrics: SocketAddr = METRICS.parse()?;
    let (_half, _unread) = s.host.run(move || -> Result<(TcpStream, TcpStream)> {
        let mut half = TcpStream::connect(metrics)?;
        half.write_all(b"GET /metr")?;
        let mut unread = TcpStream::connect(metrics)?;
        unread.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
        Ok((half, unread))
    })??;

    let started = Instant::now();
    // A source port each: a reused port would be the same flow.
    let mut ports = Vec::with_capacity(FLOWS);
    for (i, sport) in (20_000..).take(FLOWS).enumerate() {
        ports.push(datagram(&s.host, (HOST, sport), VM, 5354)?);
        if i % 500 == 499 {
            thread::sleep(Duration::from_millis(20));
        }
    }
    let sent_in = started.elapsed();

    // Meanwhile everyone else is served.
    let t = Instant::now();
    daemon.ctl_json(&["status"])?;
    ensure!(
        t.elapsed() < Duration::from_secs(3),
        "status took {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let scraped = s.host.run(move || -> Result<String> {
        let mut c = TcpStream::connect_timeout(&metrics, TIMEOUT)?;
        c.set_read_timeout(Some(TIMEOUT))?;
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        c.read_to_string(&mut text)?;
        Ok(text)
    })??;
    ensure!(
        scraped.starts_with("HTTP/1.1 200") && t.elapsed() < Duration::from_secs(3),
        "a scrape beside the stalled ones took {:?}: {scraped:.200}",
        t.elapsed()
    );
    let (_c, _s) = connect(&s.host, &s.vm, VM, 8080)?;

    // The live client got every flow's event.
    let mut seen: BTreeMap<u16, usize> = BTreeMap::new();
    let deadline = Instant::now() + TIMEOUT;
    let mut missed = 0;
    while seen.len() < FLOWS && Instant::now() < deadline {
        for line in live.lines_until(Instant::now() + Duration::from_millis(200)) {
            missed += line.missed;
            for e in &line.events {
                if let Some(p) = e["srcport"].as_u64().and_then(|p| u16::try_from(p).ok()) {
                    *seen.entry(p).or_default() += 1;
                }
            }
        }
    }
    ensure!(
        missed == 0 && ports.iter().all(|p| seen.get(p) == Some(&1)),
        "the live client saw {} of {FLOWS} flows (missed {missed}; sent in {sent_in:?})",
        seen.len()
    );

    // The flow log recorded every flow.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let records = read_log(&daemon.paths().flow_log)?;
        let mut packets: BTreeMap<u16, u64> = BTreeMap::new();
        for r in records.iter().filter(|r| r.dstport == Some(5354)) {
            *packets.entry(r.srcport.unwrap_or(0)).or_default() += r.packets.unwrap_or(0);
        }
        if ports.iter().all(|p| packets.get(p) == Some(&1)) {
            break;
        }
        let odd: Vec<_> = records
            .iter()
            .filter(|r| r.dstport == Some(5354) && packets.get(&r.srcport.unwrap_or(0)) != Some(&1))
            .map(|r| (r.srcport, r.start, r.end, r.packets, r.generation))
            .take(12)
            .collect();
        ensure!(
            Instant::now() < deadline,
            "the flow log has {} of {FLOWS} rejected flows; not one packet each: {odd:?}",
            packets.len()
        );
        thread::sleep(Duration::from_millis(250));
    }

    // The stalled client reads at last: what it gets and what it is told
    // it missed add up to every flow.
    let (mut got, mut missed) = (0u64, 0u64);
    let mut text = String::new();
    while got + missed < FLOWS as u64 {
        text.clear();
        stalled.get_mut().set_read_timeout(Some(TIMEOUT))?;
        ensure!(
            stalled.read_line(&mut text)? > 0,
            "the stream ended after {got} events and {missed} missed"
        );
        let v: Value = serde_json::from_str(&text)?;
        got += v["result"]["events"]
            .as_array()
            .map_or(0, |e| e.len() as u64);
        missed += v["result"]["missed"].as_u64().unwrap_or(0);
    }
    ensure!(
        got + missed == FLOWS as u64 && missed > 0,
        "the stalled client got {got} and missed {missed} of {FLOWS}"
    );
    Ok(())
}
