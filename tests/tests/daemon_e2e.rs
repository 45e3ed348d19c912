//! The real `filterd` and `filterctl` against the kernel, with real traffic
//! (issue 5, "Tests").
//!
//! The site: a `host` namespace, where `filterd` runs (through
//! `nsenter --net`, so it pins into the host's bpffs), and one namespace
//! per instance, joined to the host by a veth pair. The host end of each
//! pair is the ENI's interface, in `tap` mode (SPEC §2.4): what the host
//! sends to the instance leaves through the host end's TC egress (ENI
//! ingress), what the instance sends arrives at its XDP (ENI egress).
//!
//! Addresses (RFC 5737, RFC 3849, `fd00::/8` only):
//!
//! | | |
//! |---|---|
//! | instance `k` | `192.0.2.(16k+2)/28`, `fd00:0:0:k::2/64`, default route via the host end |
//! | host end of `k` | `192.0.2.(16k+1)/28`, `fd00:0:0:k::1/64` |
//! | remotes, on the host's `lo` | `198.51.100.1` and `2001:db8:1::1` (the rules admit them), `203.0.113.1` and `2001:db8:2::1` (they do not) |
//!
//! Every instance runs a TCP echo server on ports 80 and 8080. "Allowed"
//! means a connection is made and echoes; "blocked" means the handshake
//! times out (a drop, not a reset: a reset would mean the packet got
//! through) and the daemon's drop counter moved.
//!
//! Every test ends with nothing left: namespaces, interfaces, pin
//! directories, the daemon's run directory.
use std::{
    collections::BTreeSet,
    fs,
    io::{self, BufRead, BufReader, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::{fd::AsRawFd, unix::fs::PermissionsExt, unix::net::UnixStream},
    path::Path,
    process::{Command, Output},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Barrier,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use aya::programs::{SchedClassifier, TcAttachType};
use filter_tests::{
    bpf::program_loaded,
    daemon::{killed_by, output_within, DaemonGuard, DaemonOptions, DaemonPaths},
    id::TestId,
    netns::{Iface, Netns, TestNet},
};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// Remotes the rules admit, and ones they do not.
const ALLOWED4: &str = "198.51.100.1";
const DENIED4: &str = "203.0.113.1";
const ALLOWED6: &str = "2001:db8:1::1";
const DENIED6: &str = "2001:db8:2::1";
/// How long an allowed handshake may take (2 busy cores).
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a blocked handshake is given to (wrongly) succeed.
const BLOCKED_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an echo may take.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// The site
// ---------------------------------------------------------------------------

/// One instance behind a guarded interface.
struct Inst {
    k: u8,
    ns: Netns,
    /// The host end of the veth: the ENI's interface.
    guarded: String,
    v4: IpAddr,
    v6: IpAddr,
    _servers: Vec<Echo>,
}

impl Inst {
    fn eni(&self) -> String {
        format!("eni-{}", self.k)
    }

    fn addr(&self, v6: bool, port: u16) -> SocketAddr {
        SocketAddr::new(if v6 { self.v6 } else { self.v4 }, port)
    }
}

struct Site {
    host: Netns,
    insts: Vec<Inst>,
    /// Last: the namespaces go after the echo servers.
    _net: TestNet,
}

impl Site {
    fn new(id: &TestId, instances: u8) -> Result<Site> {
        let mut net = TestNet::new(id)?;
        let host = net.netns("host")?;
        let lo = Iface {
            netns: host.clone(),
            name: "lo".to_owned(),
        };
        for remote in [
            "198.51.100.1/32",
            "203.0.113.1/32",
            "2001:db8:1::1/128",
            "2001:db8:2::1/128",
        ] {
            net.addr(&lo, remote)?;
        }
        let mut insts = Vec::new();
        for k in 0..instances {
            let ns = net.netns(&format!("inst{k}"))?;
            let veth = net.veth(&host, &ns)?;
            let base = 16 * u16::from(k);
            let (host4, inst4) = (
                format!("192.0.2.{}", base + 1),
                format!("192.0.2.{}", base + 2),
            );
            let (host6, inst6) = (format!("fd00:0:0:{k}::1"), format!("fd00:0:0:{k}::2"));
            net.addr(&veth.a, &format!("{host4}/28"))?;
            net.addr(&veth.b, &format!("{inst4}/28"))?;
            net.addr(&veth.a, &format!("{host6}/64"))?;
            net.addr(&veth.b, &format!("{inst6}/64"))?;
            ns.ip(&["route", "add", "default", "via", &host4])?;
            ns.ip(&["-6", "route", "add", "default", "via", &host6])?;
            // Dual-stack listeners: `[::]` takes IPv4 too.
            let servers = vec![
                Echo::start(&ns, "[::]:80".parse()?)?,
                Echo::start(&ns, "[::]:8080".parse()?)?,
            ];
            insts.push(Inst {
                k,
                ns,
                guarded: veth.a.name.clone(),
                v4: inst4.parse()?,
                v6: inst6.parse()?,
                _servers: servers,
            });
        }
        Ok(Site {
            host,
            insts,
            _net: net,
        })
    }

    fn inst(&self, k: usize) -> &Inst {
        &self.insts[k]
    }
}

// ---------------------------------------------------------------------------
// Documents
// ---------------------------------------------------------------------------

/// The document for `insts`, each an ENI in its own vSwitch, all in
/// `sg-web` with `rules`.
fn doc(insts: &[&Inst], rules: Value) -> Value {
    let vswitches: Vec<Value> = insts
        .iter()
        .map(|i| {
            json!({"id": format!("vsw-{}", i.k), "vpc_id": "vpc-t",
                   "cidr": format!("192.0.2.{}/28", 16 * u16::from(i.k)),
                   "ipv6_cidr": format!("fd00:0:0:{}::/64", i.k)})
        })
        .collect();
    let enis: Vec<Value> = insts
        .iter()
        .map(|i| {
            json!({"id": i.eni(), "interface": i.guarded, "attach_mode": "tap",
                   "vswitch_id": format!("vsw-{}", i.k),
                   "ips": [i.v4.to_string(), i.v6.to_string()],
                   "security_group_ids": ["sg-web"]})
        })
        .collect();
    json!({
        "vpcs": [{"id": "vpc-t", "cidr": "192.0.2.0/24", "ipv6_cidr": "fd00::/48"}],
        "vswitches": vswitches,
        "security_groups": [{"id": "sg-web", "vpc_id": "vpc-t", "type": "basic", "rules": rules}],
        "enis": enis,
    })
}

/// Port 80 and ping from the allowed remotes.
fn web_rules() -> Value {
    json!([
        {"id": "http", "direction": "ingress", "policy": "accept", "priority": 1,
         "ip_protocol": "tcp", "port_range": "80/80", "source_cidr_ip": "198.51.100.0/24"},
        {"id": "http6", "direction": "ingress", "policy": "accept", "priority": 1,
         "ip_protocol": "tcp", "port_range": "80/80", "ipv6_source_cidr_ip": "2001:db8:1::/48"},
        {"id": "ping", "direction": "ingress", "policy": "accept", "priority": 1,
         "ip_protocol": "icmp", "port_range": "-1/-1", "source_cidr_ip": "198.51.100.0/24"}
    ])
}

/// Only port 8080, from the other remote.
fn alt_rules() -> Value {
    json!([
        {"id": "alt", "direction": "ingress", "policy": "accept", "priority": 1,
         "ip_protocol": "tcp", "port_range": "8080/8080", "source_cidr_ip": "203.0.113.0/24"}
    ])
}

// ---------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------

/// A TCP echo server in a namespace, stopped when dropped.
struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Echo {
    fn start(ns: &Netns, bind: SocketAddr) -> Result<Echo> {
        let listener = ns
            .run(|| TcpListener::bind(bind))?
            .with_context(|| format!("binding {bind} in {}", ns.name()))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let flag = Arc::clone(&flag);
                        thread::spawn(move || echo_loop(conn, &flag));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Echo {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn echo_loop(mut conn: TcpStream, stop: &AtomicBool) {
    if conn.set_nonblocking(false).is_err()
        || conn
            .set_read_timeout(Some(Duration::from_millis(200)))
            .is_err()
    {
        return;
    }
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// A TCP connection from `src` (an address of `ns`) to `dst`, made inside
/// `ns`, giving the handshake `limit`. A handshake that does not finish in
/// time is `TimedOut`.
fn connect_from(
    ns: &Netns,
    src: IpAddr,
    dst: SocketAddr,
    limit: Duration,
) -> Result<io::Result<TcpStream>> {
    ns.run(move || connect_bound(src, dst, limit))
}

fn connect_bound(src: IpAddr, dst: SocketAddr, limit: Duration) -> io::Result<TcpStream> {
    use nix::{
        errno::Errno,
        sys::{
            socket::{
                bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType,
                SockaddrStorage,
            },
            time::{TimeVal, TimeValLike},
        },
    };
    let family = if dst.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    bind(
        fd.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(src, 0)),
    )?;
    // A blocking connect gives up after SO_SNDTIMEO, with EINPROGRESS.
    let millis = i64::try_from(limit.as_millis()).unwrap_or(i64::MAX);
    setsockopt(&fd, sockopt::SendTimeout, &TimeVal::milliseconds(millis))?;
    match connect(fd.as_raw_fd(), &SockaddrStorage::from(dst)) {
        Ok(()) => {}
        Err(Errno::EINPROGRESS | Errno::EAGAIN) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no handshake with {dst} within {limit:?}"),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    let stream = TcpStream::from(fd);
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Sends `msg` and reads it back.
fn echo(stream: &mut TcpStream, msg: &str) -> Result<()> {
    stream
        .write_all(msg.as_bytes())
        .with_context(|| format!("sending {msg:?}"))?;
    let mut back = vec![0u8; msg.len()];
    stream
        .read_exact(&mut back)
        .with_context(|| format!("reading the echo of {msg:?}"))?;
    ensure!(
        back == msg.as_bytes(),
        "echo of {msg:?} came back as {back:?}"
    );
    Ok(())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// A connection from the host's `src` to `dst` must be made and echo.
fn open(site: &Site, src: &str, dst: SocketAddr) -> Result<TcpStream> {
    let mut stream = connect_from(&site.host, ip(src), dst, OPEN_TIMEOUT)?
        .with_context(|| format!("a connection from {src} to {dst} should be allowed"))?;
    echo(&mut stream, "hello")
        .with_context(|| format!("the connection from {src} to {dst} should carry data"))?;
    Ok(stream)
}

/// A connection from the host's `src` to `dst` must time out, and
/// `daemon`'s drop counters must move.
fn blocked(site: &Site, daemon: &DaemonGuard, src: &str, dst: SocketAddr) -> Result<()> {
    let before = drops(daemon)?;
    blocked_quietly(site, src, dst)?;
    let after = drops(daemon)?;
    ensure!(
        after > before,
        "the connection from {src} to {dst} was not made, but no drop was counted ({before} → \
         {after})"
    );
    Ok(())
}

/// [`blocked`] without asking the daemon (when it is down).
fn blocked_quietly(site: &Site, src: &str, dst: SocketAddr) -> Result<()> {
    match connect_from(&site.host, ip(src), dst, BLOCKED_TIMEOUT)? {
        Ok(_) => bail!("a connection from {src} to {dst} should be blocked, and was made"),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(()),
        Err(e) => bail!("a connection from {src} to {dst} should time out (dropped), but: {e}"),
    }
}

fn ping(site: &Site, src: &str, dst: IpAddr, wait_s: u32) -> Result<Output> {
    site.host.output(&[
        "ping",
        "-c",
        "1",
        "-W",
        &wait_s.to_string(),
        "-I",
        src,
        &dst.to_string(),
    ])
}

/// Every drop counter of the data plane, summed.
fn drops(daemon: &DaemonGuard) -> Result<u64> {
    let (status, _) = daemon.status_json()?;
    Ok(status["stats"]
        .as_array()
        .ok_or_else(|| anyhow!("no stats in {status}"))?
        .iter()
        .filter(|s| s["drop"] == json!(true))
        .filter_map(|s| s["packets"].as_u64())
        .sum())
}

/// One verdict counter by name.
fn stat(status: &Value, name: &str) -> Result<u64> {
    status["stats"]
        .as_array()
        .and_then(|stats| stats.iter().find(|s| s["name"] == json!(name)))
        .and_then(|s| s["packets"].as_u64())
        .ok_or_else(|| anyhow!("no counter {name} in {status}"))
}

/// One rule's counter from `counters --json`.
fn rule_counter(counters: &Value, rule: &str) -> Result<Value> {
    counters["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["rule"] == json!(rule)))
        .cloned()
        .ok_or_else(|| anyhow!("no counter for {rule} in {counters}"))
}

/// The traffic `web_rules` allows and blocks at instance `k`.
fn assert_web(site: &Site, daemon: &DaemonGuard, k: usize) -> Result<()> {
    let inst = site.inst(k);
    open(site, ALLOWED4, inst.addr(false, 80))?;
    open(site, ALLOWED6, inst.addr(true, 80))?;
    blocked(site, daemon, DENIED4, inst.addr(false, 80))?;
    blocked(site, daemon, DENIED6, inst.addr(true, 80))?;
    blocked(site, daemon, ALLOWED4, inst.addr(false, 8080))?;
    Ok(())
}

/// The traffic `alt_rules` allows and blocks at instance `k`.
fn assert_alt(site: &Site, daemon: &DaemonGuard, k: usize) -> Result<()> {
    let inst = site.inst(k);
    open(site, DENIED4, inst.addr(false, 8080))?;
    blocked(site, daemon, ALLOWED4, inst.addr(false, 80))?;
    blocked(site, daemon, ALLOWED4, inst.addr(false, 8080))?;
    blocked(site, daemon, ALLOWED6, inst.addr(true, 80))?;
    Ok(())
}

/// Nothing filters instance `k`: every remote reaches every port.
fn assert_unfiltered(site: &Site, k: usize) -> Result<()> {
    let inst = site.inst(k);
    for (src, v6) in [(ALLOWED4, false), (DENIED4, false), (DENIED6, true)] {
        for port in [80, 8080] {
            open(site, src, inst.addr(v6, port))?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The kernel side
// ---------------------------------------------------------------------------

/// Whether an XDP program is attached to `iface` in `ns`.
fn xdp_attached(ns: &Netns, iface: &str) -> Result<bool> {
    let link = ns.ip(&["-d", "link", "show", "dev", iface])?;
    Ok(link.contains("prog/xdp"))
}

/// Program ids on tcx egress of `iface`.
fn tcx_egress(ns: &Netns, iface: &str) -> Result<Vec<u32>> {
    tcx(ns, iface, TcAttachType::Egress)
}

fn tcx(ns: &Netns, iface: &str, at: TcAttachType) -> Result<Vec<u32>> {
    let name = iface.to_owned();
    let (_, progs) = ns.run(move || SchedClassifier::query_tcx(&name, at))??;
    Ok(progs.iter().map(|p| p.id()).collect())
}

/// Whether a program filters `iface`'s ingress: XDP or tcx ingress (the
/// `auto` hook of a veth, SPEC §2.4).
fn ingress_attached(ns: &Netns, iface: &str) -> Result<bool> {
    Ok(xdp_attached(ns, iface)? || !tcx(ns, iface, TcAttachType::Ingress)?.is_empty())
}

fn assert_hooked(ns: &Netns, iface: &str, hooked: bool) -> Result<()> {
    ensure!(
        ingress_attached(ns, iface)? == hooked,
        "a program on {iface}'s ingress should be attached: {hooked}"
    );
    let tcx = tcx_egress(ns, iface)?;
    ensure!(
        tcx.is_empty() != hooked,
        "TC on {iface} should be attached: {hooked} (tcx egress: {tcx:?})"
    );
    Ok(())
}

/// Waits up to `limit` for both programs on `iface`.
fn wait_hooked(ns: &Netns, iface: &str, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while assert_hooked(ns, iface, true).is_err() && start.elapsed() < limit {
        thread::sleep(Duration::from_millis(10));
    }
    assert_hooked(ns, iface, true)
}

/// Ids of the programs on `iface`: XDP (`prog/xdp id N` in `ip -d link`),
/// tcx ingress and egress.
fn program_ids(ns: &Netns, iface: &str) -> Result<Vec<u32>> {
    let link = ns.ip(&["-d", "link", "show", "dev", iface])?;
    let mut ids: Vec<u32> = link
        .lines()
        .filter(|l| l.contains("prog/xdp"))
        .filter_map(|l| {
            let mut words = l.split_whitespace().skip_while(|w| *w != "id");
            words.nth(1)?.parse().ok()
        })
        .collect();
    ids.extend(tcx(ns, iface, TcAttachType::Ingress)?);
    ids.extend(tcx_egress(ns, iface)?);
    Ok(ids)
}

/// Waits (generously: the kernel frees programs a moment after their last
/// reference) until none of `ids` is loaded.
fn assert_unloaded(ids: &[u32]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut loaded = Vec::new();
        for id in ids {
            if program_loaded(*id)? {
                loaded.push(*id);
            }
        }
        if loaded.is_empty() {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "programs {loaded:?} are still loaded"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The link pins of `iface` under `pin_dir`.
fn link_pins(pin_dir: &Path, iface: &str) -> Vec<String> {
    ["xdp", "tci", "tc"]
        .iter()
        .map(|hook| pin_dir.join("links").join(format!("{iface}-{hook}")))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect()
}

/// Saved generation numbers in the state directory.
fn saved_generations(state_dir: &Path) -> Result<BTreeSet<u32>> {
    let dir = state_dir.join("generations");
    Ok(fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".json")?
                .parse()
                .ok()
        })
        .collect())
}

// ---------------------------------------------------------------------------
// Running a test
// ---------------------------------------------------------------------------

/// Runs `body` with a fresh identity, then checks that nothing of it is
/// left: namespaces, interfaces, pins, the daemon's run directory.
fn e2e(name: &str, body: impl FnOnce(&TestId) -> Result<()>) -> Result<()> {
    let id = TestId::new(name);
    let result = body(&id);
    let left = nothing_left(&id);
    result?;
    left
}

fn nothing_left(id: &TestId) -> Result<()> {
    id.assert_nothing_left()?;
    let run_dir = DaemonPaths::new(id).run_dir;
    ensure!(
        !run_dir.exists(),
        "test {} left {} behind",
        id.test(),
        run_dir.display()
    );
    Ok(())
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn generation(v: &Value) -> Result<u64> {
    v["generation"]
        .as_u64()
        .ok_or_else(|| anyhow!("no generation in {v}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// `apply` makes the kernel enforce what the document says: allowed
/// remotes reach the allowed port over IPv4 and IPv6, every other
/// connection is dropped and counted, ping follows the ICMP rule, the
/// instance's own connections out are tracked and their replies come back,
/// and the per-rule counters show who decided.
#[test]
fn apply_enforces_the_document_on_real_traffic() -> Result<()> {
    e2e("d_apply_traffic", |id| {
        let site = Site::new(id, 1)?;
        let daemon = DaemonGuard::start(id, &site.host)?;
        let inst = site.inst(0);

        // Before any apply nothing filters: what is blocked later is the
        // rules' doing.
        assert_unfiltered(&site, 0)?;
        assert_hooked(&site.host, &inst.guarded, false)?;

        let applied = daemon.apply(&doc(&[inst], web_rules()))?;
        let g = generation(&applied)?;
        ensure!(applied["previous"].is_null(), "{applied}");
        ensure!(strings(&applied["changes"]["enis"]["added"]) == [inst.eni()]);
        ensure!(
            strings(&applied["changes"]["rules"]["added"])
                == ["sg-web/http", "sg-web/http6", "sg-web/ping"],
            "{applied}"
        );
        assert_hooked(&site.host, &inst.guarded, true)?;
        ensure!(link_pins(daemon.pin_dir(), &inst.guarded).len() == 2);

        assert_web(&site, &daemon, 0)?;
        let ok = ping(&site, ALLOWED4, inst.v4, 10)?;
        ensure!(ok.status.success(), "ping from {ALLOWED4}: {}", stdout(&ok));
        let before = daemon.ctl_json(&["status"])?;
        let dropped = ping(&site, DENIED4, inst.v4, 1)?;
        ensure!(!dropped.status.success(), "ping from {DENIED4} got through");
        let after = daemon.ctl_json(&["status"])?;
        ensure!(
            stat(&after, "drop_default_deny")? > stat(&before, "drop_default_deny")?,
            "the blocked ping was not counted as default-deny"
        );

        // The instance's own connection out: egress is open (basic group),
        // and the replies come in because the connection is tracked (no
        // ingress rule admits 203.0.113.1).
        let _server = Echo::start(&site.host, SocketAddr::new(ip(DENIED4), 9000))?;
        let mut out = connect_from(
            &inst.ns,
            inst.v4,
            SocketAddr::new(ip(DENIED4), 9000),
            OPEN_TIMEOUT,
        )?
        .context("the instance's connection out should be allowed")?;
        echo(&mut out, "out")?;

        let status = daemon.ctl_json(&["status"])?;
        ensure!(status["generation"] == json!(g), "{status}");
        ensure!(
            status["conntrack"]["used"].as_u64() >= Some(2),
            "conntrack: {}",
            status["conntrack"]
        );
        let counters = daemon.ctl_json(&["counters", "--eni", &inst.eni()])?;
        for rule in [
            "sg-web/http",
            "sg-web/http6",
            "sg-web/ping",
            "default-deny",
            "default-accept",
        ] {
            let c = rule_counter(&counters, rule)?;
            ensure!(
                c["packets"].as_u64() > Some(0) && c["bytes"].as_u64() > Some(0),
                "{rule} should have counted: {c}"
            );
            ensure!(c["last_hit"].is_u64(), "{rule} has no last hit: {c}");
        }
        Ok(())
    })
}

/// Every `filterctl` command against the real daemon, as tables and as
/// JSON: apply, apply --dry-run, get, status, explain, counters, rollback,
/// rollback --to, version, detach, and their failures.
#[test]
fn every_command_as_table_and_json() -> Result<()> {
    e2e("d_commands", |id| {
        let site = Site::new(id, 1)?;
        let daemon = DaemonGuard::start(id, &site.host)?;
        let inst = site.inst(0);
        let iface = inst.guarded.as_str();
        let web = doc(&[inst], web_rules()).to_string();
        let alt = doc(&[inst], alt_rules()).to_string();
        let web_file = daemon.write_file("web", &web)?;
        let alt_file = daemon.write_file("alt", &alt)?;
        let (web_path, alt_path) = (web_file.to_string_lossy(), alt_file.to_string_lossy());

        // Nothing yet.
        let (error, err) = daemon.ctl_json_err(&["get"])?;
        ensure!(error["code"] == json!("no_generation"), "{error}");
        ensure!(err.contains("no_generation"), "{err}");
        let status = daemon.ctl_ok(&["status"])?;
        ensure!(
            status.contains("generation  none (nothing enforced)"),
            "{status}"
        );

        // apply --dry-run: the number it would get, nothing enforced.
        let dry = daemon.ctl_ok(&["apply", "--dry-run", &web_path])?;
        ensure!(
            dry.starts_with("dry run: the document is valid and would be enforced as generation "),
            "{dry}"
        );
        ensure!(dry.contains("(running: none); nothing changed"), "{dry}");
        let dry = daemon.ctl_json(&["apply", "--dry-run", &web_path])?;
        ensure!(dry["dry_run"] == json!(true), "{dry}");
        let would_be = generation(&dry)?;
        ensure!(daemon.generation()?.is_none());
        assert_hooked(&site.host, iface, false)?;
        open(&site, DENIED4, inst.addr(false, 80))?;

        // apply, as a table.
        let applied = daemon.ctl_ok(&["apply", &web_path])?;
        ensure!(
            applied.starts_with(&format!("generation {would_be} enforced (was none)\n")),
            "{applied}"
        );
        for row in [
            "added   enis           eni-0",
            "added   groups         sg-web",
            "added   rules          sg-web/http",
        ] {
            ensure!(
                applied
                    .lines()
                    .any(|l| l.split_whitespace().eq(row.split_whitespace())),
                "no row {row:?} in:\n{applied}"
            );
        }
        let g1 = would_be;
        assert_web(&site, &daemon, 0)?;

        // apply --dry-run with something running: says what would change.
        let dry = daemon.ctl_json(&["apply", "--dry-run", &alt_path])?;
        ensure!(dry["previous"] == json!(g1), "{dry}");
        ensure!(
            strings(&dry["changes"]["rules"]["added"]) == ["sg-web/alt"]
                && strings(&dry["changes"]["rules"]["removed"])
                    == ["sg-web/http", "sg-web/http6", "sg-web/ping"],
            "{dry}"
        );
        ensure!(daemon.generation()? == Some(g1));
        open(&site, ALLOWED4, inst.addr(false, 80))?;

        // get: the document byte for byte.
        ensure!(daemon.ctl_ok(&["get"])? == format!("{web}\n"));
        let got = daemon.ctl_json(&["get"])?;
        ensure!(
            got["document"] == json!(web) && got["generation"] == json!(g1),
            "{got}"
        );
        ensure!(got["applied_at"].is_u64(), "{got}");

        // status.
        let status = daemon.ctl_ok(&["status"])?;
        for want in [
            format!("generation  {g1} (applied "),
            format!("pin dir     {}", daemon.pin_dir().display()),
            format!("state dir   {}", daemon.state_dir().display()),
            "drop_default_deny".to_owned(),
        ] {
            ensure!(status.contains(&want), "no {want:?} in:\n{status}");
        }
        ensure!(
            status.lines().any(|l| l.split_whitespace().eq([
                "eni-0",
                iface,
                "tap",
                "vsw-0",
                "tc-ingress,tc"
            ])),
            "no ENI row in:\n{status}"
        );
        let status = daemon.ctl_json(&["status"])?;
        ensure!(
            status["enis"]
                == json!([{"id": "eni-0", "interface": iface, "attach_mode": "tap",
                           "vswitch": "vsw-0", "hooks": ["tc-ingress", "tc"], "state": "attached"}]),
            "{status}"
        );
        ensure!(
            status["daemon"]["pin_dir"] == json!(daemon.pin_dir()),
            "{status}"
        );
        ensure!(status["conntrack"]["size"].as_u64() > Some(0), "{status}");
        let mode = fs::metadata(daemon.state_dir())?.permissions().mode() & 0o777;
        ensure!(
            mode == 0o700,
            "the state directory has mode {mode:o}, not 0700"
        );

        // explain: a packet the rules admit, one they drop, and a tracked
        // connection.
        let mut conn = open(&site, ALLOWED4, inst.addr(false, 80))?;
        let port = conn.local_addr()?.port();
        let src = format!("{ALLOWED4}:{port}");
        let dst = format!("{}:80", inst.v4);
        let explain = |src: &str, dst: &str, json: bool| -> Result<String> {
            let mut args = vec![
                "explain",
                "--eni",
                "eni-0",
                "--direction",
                "ingress",
                "--proto",
                "tcp",
                "--src",
                src,
                "--dst",
                dst,
            ];
            if json {
                args.insert(0, "--json");
            }
            daemon.ctl_ok(&args)
        };
        let text = explain(&src, &dst, false)?;
        for want in [
            "verdict     ACCEPT by tracked (connection admitted by sg-web/http)".to_owned(),
            "rules       ACCEPT by sg-web/http".to_owned(),
            format!("tracked     yes: tcp_established, admitted by sg-web/http in generation {g1}"),
            "admitted by sg-web/http".to_owned(),
        ] {
            ensure!(text.contains(&want), "no {want:?} in:\n{text}");
        }
        let json: Value = serde_json::from_str(&explain(&src, &dst, true)?)?;
        ensure!(json["decision"]["verdict"] == json!("accept"), "{json}");
        ensure!(json["reason"] == json!("sg-web/http"), "{json}");
        ensure!(json["tracked"]["rule"] == json!("sg-web/http"), "{json}");
        ensure!(json["tracked"]["generation"] == json!(g1), "{json}");
        ensure!(json["tracked"]["packets"].as_u64() >= Some(4), "{json}");
        ensure!(json["admitted_by"] == json!("sg-web/http"), "{json}");
        ensure!(
            json["trace"].as_array().is_some_and(|t| !t.is_empty()),
            "{json}"
        );
        let json: Value = serde_json::from_str(&explain(
            &format!("[{ALLOWED6}]:40000"),
            &format!("[{}]:80", inst.v6),
            true,
        )?)?;
        ensure!(json["reason"] == json!("sg-web/http6"), "{json}");
        let denied_src = format!("{DENIED4}:40000");
        let text = explain(&denied_src, &dst, false)?;
        for want in [
            "verdict     DROP by default-deny",
            "tracked     no tracked connection",
            "admitted by nothing (dropped)",
        ] {
            ensure!(text.contains(want), "no {want:?} in:\n{text}");
        }
        let json: Value = serde_json::from_str(&explain(&denied_src, &dst, true)?)?;
        ensure!(
            json["decision"]["verdict"] == json!("drop")
                && json["tracked"].is_null()
                && json["admitted_by"].is_null(),
            "{json}"
        );
        // A bad packet is refused by filterctl itself; an unknown ENI by
        // the daemon.
        let bad = daemon.ctl(&[
            "explain",
            "--eni",
            "eni-0",
            "--direction",
            "ingress",
            "--proto",
            "tcp",
            "--src",
            ALLOWED4,
            "--dst",
            &dst,
        ])?;
        ensure!(bad.status.code() == Some(1), "{bad:?}");
        let (error, _) = daemon.ctl_json_err(&[
            "explain",
            "--eni",
            "eni-nope",
            "--direction",
            "ingress",
            "--proto",
            "tcp",
            "--src",
            &src,
            "--dst",
            &dst,
        ])?;
        ensure!(error["code"] == json!("invalid_params"), "{error}");
        echo(&mut conn, "still there")?;

        // counters, every one and per ENI.
        let table = daemon.ctl_ok(&["counters"])?;
        ensure!(table.starts_with("RULE"), "{table}");
        let http_row = table
            .lines()
            .find(|l| l.starts_with("sg-web/http "))
            .ok_or_else(|| anyhow!("no sg-web/http row in:\n{table}"))?;
        ensure!(http_row.ends_with("ago"), "{http_row}");
        let all = daemon.ctl_json(&["counters"])?;
        let one = daemon.ctl_json(&["counters", "--eni", "eni-0"])?;
        ensure!(
            one["eni"] == json!("eni-0") && all["generation"] == json!(g1),
            "{one}"
        );
        for rule in [
            "default-deny",
            "default-accept",
            "tracked",
            "inner-accept:sg-web",
            "sg-web/http",
        ] {
            rule_counter(&all, rule)?;
            rule_counter(&one, rule)?;
        }
        ensure!(rule_counter(&one, "sg-web/http")?["packets"].as_u64() > Some(0));
        let (error, _) = daemon.ctl_json_err(&["counters", "--eni", "eni-nope"])?;
        ensure!(error["code"] == json!("invalid_params"), "{error}");

        // A second generation, then rollback (table) and rollback --to
        // (JSON).
        let g2 = generation(&daemon.ctl_json(&["apply", &alt_path])?)?;
        ensure!(g2 > g1);
        assert_alt(&site, &daemon, 0)?;
        let rolled = daemon.ctl_ok(&["rollback"])?;
        let g3 = daemon
            .generation()?
            .ok_or_else(|| anyhow!("nothing runs"))?;
        ensure!(
            rolled.starts_with(&format!(
                "rolled back to generation {g1}'s document: generation {g3} enforced (was {g2})"
            )),
            "{rolled}"
        );
        ensure!(daemon.ctl_json(&["get"])?["document"] == json!(web));
        assert_web(&site, &daemon, 0)?;
        let rolled = daemon.ctl_json(&["rollback", "--to", &g2.to_string()])?;
        ensure!(
            rolled["rolled_back_to"] == json!(g2) && generation(&rolled)? > g3,
            "{rolled}"
        );
        ensure!(daemon.ctl_json(&["get"])?["document"] == json!(alt));
        assert_alt(&site, &daemon, 0)?;
        let (error, err) = daemon.ctl_json_err(&["rollback", "--to", "999"])?;
        ensure!(error["code"] == json!("not_found"), "{error}");
        ensure!(err.contains("999"), "{err}");

        // version.
        let version = daemon.ctl_ok(&["version"])?;
        ensure!(
            version.contains("filterctl ") && version.contains("filterd "),
            "{version}"
        );
        let version = daemon.ctl_json(&["version"])?;
        ensure!(version["protocol"] == json!(1), "{version}");
        ensure!(strings(&version["methods"]).contains(&"apply".to_owned()));

        // detach: a table, then JSON (nothing left to detach).
        let running = daemon
            .generation()?
            .ok_or_else(|| anyhow!("nothing runs"))?;
        let detached = daemon.ctl_ok(&["detach"])?;
        ensure!(
            detached
                == format!(
                    "detached from {iface}: generation {running} is no longer enforced; pins removed\n"
                ),
            "{detached}"
        );
        let again = daemon.ctl_json(&["detach"])?;
        ensure!(
            again == json!({"previous": null, "interfaces": []}),
            "{again}"
        );
        assert_hooked(&site.host, iface, false)?;
        let (error, _) = daemon.ctl_json_err(&["get"])?;
        ensure!(error["code"] == json!("no_generation"), "{error}");

        // The daemon is not there: a clear reason, exit 1.
        let gone = output_within(
            Command::new(&daemon.bins().filterctl)
                .arg("--socket")
                .arg(daemon.paths().run_dir.join("nobody-here.sock"))
                .arg("status"),
            Duration::from_secs(60),
        )?;
        ensure!(gone.status.code() == Some(1), "{gone:?}");
        ensure!(
            stderr(&gone).contains("cannot connect to filterd"),
            "{}",
            stderr(&gone)
        );
        // A usage error: exit 2.
        let usage = daemon.ctl(&["rollback", "--to", "x"])?;
        ensure!(usage.status.code() == Some(2), "{usage:?}");
        Ok(())
    })
}

/// A rejected document changes nothing: the same generation and document,
/// the same traffic (an open connection keeps working), no new saved
/// generation; filterctl exits 1 and prints every error on a line of its
/// own.
#[test]
fn bad_apply_changes_nothing() -> Result<()> {
    e2e("d_bad_apply", |id| {
        let site = Site::new(id, 1)?;
        let daemon = DaemonGuard::start(id, &site.host)?;
        let inst = site.inst(0);
        let good = doc(&[inst], web_rules());
        let g = generation(&daemon.apply(&good)?)?;
        let saved = saved_generations(daemon.state_dir())?;
        let mut conn = open(&site, ALLOWED4, inst.addr(false, 80))?;

        // Five independent mistakes.
        let mut bad = good.clone();
        bad["security_groups"][0]["rules"][0]["priority"] = json!(0);
        bad["security_groups"][0]["rules"][0]["source_cidr_ip"] = json!("198.51.100.1/24");
        bad["security_groups"][0]["rules"][1]["port_range"] = json!("90/80");
        // (A missing interface is no mistake: its ENI would be pending.)
        bad["enis"][0]["interface"] = json!("bad/if0");
        bad["enis"][0]["security_group_ids"] = json!(["sg-web", "sg-missing"]);
        let path = daemon.write_file("bad", &bad.to_string())?;
        let out = daemon.ctl(&["apply", &path.to_string_lossy()])?;
        ensure!(out.status.code() == Some(1), "{out:?}");
        ensure!(stdout(&out).is_empty(), "{}", stdout(&out));
        let err = stderr(&out);
        let lines: Vec<&str> = err.lines().collect();
        let (head, errors) = lines
            .split_first()
            .ok_or_else(|| anyhow!("nothing on stderr"))?;
        ensure!(
            *head
                == format!(
                    "filterctl: the document was rejected with {} error(s); nothing changed \
                     (invalid_document)",
                    errors.len()
                ),
            "{err}"
        );
        for (path, value) in [
            ("security_groups[0].rules[0].priority", "0"),
            (
                "security_groups[0].rules[0].source_cidr_ip",
                "198.51.100.1/24",
            ),
            ("security_groups[0].rules[1].port_range", "90/80"),
            ("enis[0].interface", "bad/if0"),
            ("enis[0].security_group_ids[1]", "sg-missing"),
        ] {
            let found: Vec<&&str> = errors
                .iter()
                .filter(|l| l.starts_with(&format!("{path}: ")))
                .collect();
            ensure!(found.len() == 1, "one error for {path} expected in:\n{err}");
            ensure!(
                found[0].contains(value),
                "{path}: the value is missing: {}",
                found[0]
            );
        }
        ensure!(
            errors.len() == 5,
            "exactly the five mistakes expected:\n{err}"
        );
        // The same in JSON.
        let (error, _) = daemon.ctl_json_err(&["apply", &path.to_string_lossy()])?;
        ensure!(error["code"] == json!("invalid_document"), "{error}");
        ensure!(strings(&error["details"]) == errors, "{error}");
        // --dry-run says the same.
        let (error, _) = daemon.ctl_json_err(&["apply", "--dry-run", &path.to_string_lossy()])?;
        ensure!(strings(&error["details"]) == errors, "{error}");

        // Malformed JSON: where.
        let broken =
            daemon.write_file("broken", "{\n  \"vpcs\": [\n    {\"id\": \"vpc-t\",,}\n")?;
        let out = daemon.ctl(&["apply", &broken.to_string_lossy()])?;
        ensure!(out.status.code() == Some(1), "{out:?}");
        ensure!(stderr(&out).contains("line 3"), "{}", stderr(&out));
        // Not a file.
        let out = daemon.ctl(&["apply", "/nonexistent/filter-doc.json"])?;
        ensure!(
            out.status.code() == Some(1) && stderr(&out).contains("/nonexistent/filter-doc.json"),
            "{out:?}"
        );

        // Nothing changed.
        ensure!(daemon.generation()? == Some(g));
        ensure!(daemon.ctl_json(&["get"])?["document"] == json!(good.to_string()));
        ensure!(
            saved_generations(daemon.state_dir())? == saved,
            "a rejected document was saved"
        );
        echo(&mut conn, "still open")?;
        assert_web(&site, &daemon, 0)?;
        ensure!(link_pins(daemon.pin_dir(), &inst.guarded).len() == 2);
        Ok(())
    })
}

/// Rollback enforces an earlier document again as a new generation, and
/// the traffic follows; only the last 10 generations can be rolled back to.
#[test]
fn rollback_switches_the_traffic_back() -> Result<()> {
    e2e("d_rollback", |id| {
        let site = Site::new(id, 1)?;
        let daemon = DaemonGuard::start(id, &site.host)?;
        let inst = site.inst(0);
        let (web, alt) = (doc(&[inst], web_rules()), doc(&[inst], alt_rules()));
        let g1 = generation(&daemon.apply(&web)?)?;
        assert_web(&site, &daemon, 0)?;
        let g2 = generation(&daemon.apply(&alt)?)?;
        assert_alt(&site, &daemon, 0)?;

        let back = daemon.ctl_json(&["rollback"])?;
        ensure!(
            back["rolled_back_to"] == json!(g1) && back["previous"] == json!(g2),
            "{back}"
        );
        let g3 = generation(&back)?;
        ensure!(g3 > g2, "generation numbers only go up: {g3} after {g2}");
        ensure!(daemon.ctl_json(&["get"])?["document"] == json!(web.to_string()));
        assert_web(&site, &daemon, 0)?;

        let to = daemon.ctl_json(&["rollback", "--to", &g2.to_string()])?;
        ensure!(to["rolled_back_to"] == json!(g2), "{to}");
        assert_alt(&site, &daemon, 0)?;

        // Ten more: g1 falls out of the state directory.
        for n in 0..10 {
            let mut rules = alt_rules();
            rules[0]["description"] = json!(format!("round {n}"));
            daemon.apply(&doc(&[inst], rules))?;
        }
        let saved = saved_generations(daemon.state_dir())?;
        ensure!(
            saved.len() == 10 && !saved.contains(&(g1 as u32)),
            "{saved:?}"
        );
        let (error, _) = daemon.ctl_json_err(&["rollback", "--to", &g1.to_string()])?;
        ensure!(error["code"] == json!("not_found"), "{error}");
        assert_alt(&site, &daemon, 0)?;
        Ok(())
    })
}

/// kill -9: the pinned programs keep enforcing while the daemon is dead
/// (fail closed), and a restarted daemon takes the same generation over
/// without cutting a TCP connection that only conntrack lets through.
#[test]
fn kill9_keeps_enforcing_and_restart_keeps_connections() -> Result<()> {
    e2e("d_kill9", |id| {
        let site = Site::new(id, 1)?;
        let mut daemon = DaemonGuard::start(id, &site.host)?;
        let inst = site.inst(0);
        let g = generation(&daemon.apply(&doc(&[inst], web_rules()))?)?;

        // The instance connects out to 203.0.113.1, which no ingress rule
        // admits: the replies come in only because conntrack knows the
        // connection. Lose the table and the connection dies.
        let remote = SocketAddr::new(ip(DENIED4), 9000);
        let _server = Echo::start(&site.host, remote)?;
        let mut conn = connect_from(&inst.ns, inst.v4, remote, OPEN_TIMEOUT)?
            .context("the instance's connection out should be allowed")?;
        echo(&mut conn, "before")?;
        let port = conn.local_addr()?.port();
        let (local, far) = (format!("{}:{port}", inst.v4), remote.to_string());
        let explain_reply = |daemon: &DaemonGuard| {
            daemon.ctl_json(&[
                "explain",
                "--eni",
                "eni-0",
                "--direction",
                "ingress",
                "--proto",
                "tcp",
                "--src",
                &far,
                "--dst",
                &local,
            ])
        };
        let reply = explain_reply(&daemon)?;
        ensure!(
            reply["decision"]["verdict"] == json!("drop")
                && reply["tracked"]["state"] == json!("tcp_established")
                && reply["tracked"]["generation"] == json!(g)
                && reply["admitted_by"] == json!("default-accept"),
            "the replies should be admitted by conntrack alone: {reply}"
        );
        let packets_before = reply["tracked"]["packets"].as_u64().unwrap_or(0);
        open(&site, ALLOWED4, inst.addr(false, 80))?;
        let counters_before = daemon.ctl_json(&["counters"])?;
        let http_before = rule_counter(&counters_before, "sg-web/http")?["packets"]
            .as_u64()
            .unwrap_or(0);
        ensure!(http_before > 0, "{counters_before}");

        let status = daemon.kill9()?;
        ensure!(killed_by(&status, Signal::SIGKILL), "{status}");
        // Its socket file stays behind; the restart below must replace it.
        ensure!(daemon.socket().exists());
        // Dead, and still enforcing: the links are pinned.
        ensure!(link_pins(daemon.pin_dir(), &inst.guarded).len() == 2);
        assert_hooked(&site.host, &inst.guarded, true)?;
        echo(&mut conn, "while dead")?;
        blocked_quietly(&site, DENIED4, inst.addr(false, 80))?;
        blocked_quietly(&site, ALLOWED4, inst.addr(false, 8080))?;
        open(&site, ALLOWED4, inst.addr(false, 80))?;
        echo(&mut conn, "still while dead")?;

        daemon.restart()?;
        ensure!(
            daemon.log().contains(&format!(
                "took over generation {g} from the pinned data plane"
            )),
            "the restarted daemon did not take over generation {g}:\n{}",
            daemon.log()
        );
        ensure!(daemon.generation()? == Some(g));
        echo(&mut conn, "after restart")?;
        let reply = explain_reply(&daemon)?;
        ensure!(
            reply["tracked"]["generation"] == json!(g)
                && reply["tracked"]["rule"] == json!("default-accept")
                && reply["tracked"]["packets"].as_u64() > Some(packets_before),
            "the same conntrack entry should carry on: {reply}"
        );
        // The counters and the hooks are the ones from before the kill.
        let counters = daemon.ctl_json(&["counters"])?;
        let http = rule_counter(&counters, "sg-web/http")?["packets"]
            .as_u64()
            .unwrap_or(0);
        ensure!(
            http > http_before,
            "sg-web/http counted {http_before} before the kill (and more while the daemon was \
             dead), {http} after the restart"
        );
        let status = daemon.ctl_json(&["status"])?;
        ensure!(
            status["enis"][0]["hooks"] == json!(["tc-ingress", "tc"]),
            "{status}"
        );
        assert_web(&site, &daemon, 0)?;

        // The restarted daemon is in charge: a new generation, and the
        // connection (still allowed) lives on.
        let g2 = generation(&daemon.apply(&doc(&[inst], alt_rules()))?)?;
        ensure!(g2 > g);
        assert_alt(&site, &daemon, 0)?;
        echo(&mut conn, "after a new generation")?;
        Ok(())
    })
}

/// SIGTERM stops the daemon cleanly and leaves the rules enforced; a
/// restart takes the same generation over.
#[test]
fn sigterm_leaves_enforcement_in_place() -> Result<()> {
    e2e("d_sigterm", |id| {
        let site = Site::new(id, 1)?;
        let mut daemon = DaemonGuard::start(id, &site.host)?;
        let inst = site.inst(0);
        let g = generation(&daemon.apply(&doc(&[inst], web_rules()))?)?;
        let remote = SocketAddr::new(ip(DENIED4), 9000);
        let _server = Echo::start(&site.host, remote)?;
        let mut conn = connect_from(&inst.ns, inst.v4, remote, OPEN_TIMEOUT)?
            .context("the instance's connection out should be allowed")?;
        echo(&mut conn, "before")?;

        let status = daemon.terminate()?;
        ensure!(
            status.success(),
            "filterd exited with {status} on SIGTERM:\n{}",
            daemon.log()
        );
        ensure!(
            daemon
                .log()
                .contains("the pinned data plane keeps enforcing"),
            "{}",
            daemon.log()
        );
        ensure!(!daemon.socket().exists(), "the socket outlived the daemon");
        ensure!(link_pins(daemon.pin_dir(), &inst.guarded).len() == 2);
        assert_hooked(&site.host, &inst.guarded, true)?;
        echo(&mut conn, "stopped")?;
        blocked_quietly(&site, DENIED4, inst.addr(false, 80))?;
        blocked_quietly(&site, DENIED6, inst.addr(true, 80))?;
        open(&site, ALLOWED4, inst.addr(false, 80))?;

        daemon.restart()?;
        ensure!(daemon.generation()? == Some(g));
        ensure!(
            daemon.log().contains(&format!("took over generation {g}")),
            "{}",
            daemon.log()
        );
        echo(&mut conn, "restarted")?;
        assert_web(&site, &daemon, 0)?;

        // SIGINT stops it as gracefully. Stopped, the guard cleans up
        // without a daemon to ask: the links, pins and programs go, the
        // interface is free.
        let programs = program_ids(&site.host, &inst.guarded)?;
        let status = daemon.stop_with(Signal::SIGINT)?;
        ensure!(status.success(), "filterd exited with {status} on SIGINT");
        ensure!(daemon.pin_dir().exists());
        let pin_dir = daemon.pin_dir().to_owned();
        daemon.shutdown()?;
        ensure!(!pin_dir.exists());
        assert_hooked(&site.host, &inst.guarded, false)?;
        assert_unloaded(&programs)?;
        assert_unfiltered(&site, 0)?;
        Ok(())
    })
}

/// `filterctl detach` removes everything: the programs from the interface,
/// every pin, the tracked connections; the saved generations stay, and a
/// restarted daemon enforces nothing until told to.
#[test]
fn detach_removes_everything() -> Result<()> {
    e2e("d_detach", |id| {
        let site = Site::new(id, 1)?;
        let mut daemon = DaemonGuard::start(id, &site.host)?;
        let inst = site.inst(0);
        let g = generation(&daemon.apply(&doc(&[inst], web_rules()))?)?;
        assert_web(&site, &daemon, 0)?;
        let programs = program_ids(&site.host, &inst.guarded)?;
        ensure!(
            programs.len() == 2,
            "XDP and TC programs expected: {programs:?}"
        );

        let detached = daemon.ctl_json(&["detach"])?;
        ensure!(
            detached == json!({"previous": g, "interfaces": [inst.guarded]}),
            "{detached}"
        );
        ensure!(
            !daemon.pin_dir().exists(),
            "{} is still there",
            daemon.pin_dir().display()
        );
        assert_hooked(&site.host, &inst.guarded, false)?;
        // The daemon holds nothing either: the programs are gone.
        assert_unloaded(&programs)?;
        assert_unfiltered(&site, 0)?;
        let status = daemon.ctl_json(&["status"])?;
        ensure!(
            status["generation"].is_null() && status["enis"] == json!([]),
            "{status}"
        );
        ensure!(saved_generations(daemon.state_dir())?.contains(&(g as u32)));

        // Restarted: nothing restored.
        daemon.restart()?;
        ensure!(daemon.generation()?.is_none(), "{}", daemon.log());
        assert_hooked(&site.host, &inst.guarded, false)?;
        assert_unfiltered(&site, 0)?;

        // Until a rollback brings the saved document back.
        let back = daemon.ctl_json(&["rollback"])?;
        ensure!(
            back["rolled_back_to"] == json!(g) && generation(&back)? > g,
            "{back}"
        );
        assert_hooked(&site.host, &inst.guarded, true)?;
        assert_web(&site, &daemon, 0)?;
        Ok(())
    })
}

/// SPEC §3.1: the connection table is sized from the document that starts
/// the daemon (`--ruleset`), `status` shows the live size, and an apply
/// asking for another size says it waits for fresh maps; after `detach`
/// the next apply makes them with its size.
#[test]
fn conntrack_max_entries_sizes_the_table() -> Result<()> {
    e2e("d_ctsize", |id| {
        let site = Site::new(id, 1)?;
        let inst = site.inst(0);
        let sized = |n: u32| {
            let mut d = doc(&[inst], web_rules());
            d["conntrack"] = json!({ "max_entries": n });
            d
        };
        let daemon = DaemonGuard::start_with(
            id,
            &site.host,
            DaemonOptions {
                ruleset: Some(sized(4096)),
                ..DaemonOptions::default()
            },
        )?;
        let size = |daemon: &DaemonGuard| -> Result<Value> {
            Ok(daemon.ctl_json(&["status"])?["conntrack"]["size"].clone())
        };
        ensure!(size(&daemon)? == json!(4096), "{}", daemon.log());

        let applied = daemon.apply(&sized(8192))?;
        let notices = strings(&applied["notices"]);
        ensure!(
            notices
                .iter()
                .any(|n| n.starts_with("conntrack.max_entries 8192 takes effect")
                    && n.ends_with("keeps its 4096 entries until then")),
            "{applied}"
        );
        ensure!(size(&daemon)? == json!(4096));
        // The same size: no notice.
        let applied = daemon.apply(&sized(4096))?;
        ensure!(strings(&applied["notices"]).is_empty(), "{applied}");

        daemon.ctl_json(&["detach"])?;
        let applied = daemon.apply(&sized(8192))?;
        ensure!(strings(&applied["notices"]).is_empty(), "{applied}");
        ensure!(size(&daemon)? == json!(8192));
        Ok(())
    })
}

/// A free group id: no group in the database has it.
fn unused_gid() -> Result<u32> {
    (61_000..65_000)
        .find(|g| {
            matches!(
                nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(*g)),
                Ok(None)
            )
        })
        .ok_or_else(|| anyhow!("no unused gid between 61000 and 65000"))
}

/// A non-root uid may read but not change (SPEC §5).
///
/// The daemon runs with `--socket-group G`, G a gid nobody has. Two locks
/// guard the socket, and the test takes them apart:
///
/// 1. The file: mode 0660, root:G. uid 65534 without G cannot even
///    connect (EACCES from the kernel, not an answer from the daemon).
/// 2. SO_PEERCRED: to see the daemon's own check, the test opens the file
///    (chmod 0666), which lets anyone connect. Now uid 65534 reads
///    (`status` works, so the connection is fine) and is refused `apply`,
///    `rollback` and `detach` with the daemon's `permission_denied`, which
///    names its uid: the refusal can only come from the credentials the
///    daemon read off the connection.
/// 3. The same uid with G as a supplementary group, through the 0660 file
///    again, may apply: the group is what the check wants, and it is read
///    from the peer.
#[test]
fn a_non_root_uid_is_refused_apply() -> Result<()> {
    e2e("d_nonroot", |id| {
        let site = Site::new(id, 1)?;
        let gid = unused_gid()?;
        let daemon = DaemonGuard::start_with(
            id,
            &site.host,
            DaemonOptions {
                socket_group: Some(gid.to_string()),
                ..DaemonOptions::default()
            },
        )?;
        let inst = site.inst(0);
        let g = generation(&daemon.apply(&doc(&[inst], web_rules()))?)?;
        let meta = fs::metadata(daemon.socket())?;
        ensure!(
            meta.permissions().mode() & 0o777 == 0o660,
            "socket mode {:o}",
            meta.permissions().mode()
        );
        ensure!(
            std::os::unix::fs::MetadataExt::gid(&meta) == gid,
            "the socket's group is not {gid}"
        );
        let alt = daemon.write_file("alt", &doc(&[inst], alt_rules()).to_string())?;
        let alt = alt.to_string_lossy();

        // 1. The file mode keeps uid 65534 out.
        let out = daemon.ctl_as_nobody(&[], &["status"])?;
        ensure!(
            out.status.code() == Some(1) && stderr(&out).contains("Permission denied"),
            "uid 65534 should not get through a 0660 socket: {out:?}"
        );

        // 2. With the file open to all, the daemon's own check refuses.
        fs::set_permissions(daemon.socket(), fs::Permissions::from_mode(0o666))?;
        let out = daemon.ctl_as_nobody(&[], &["--json", "status"])?;
        ensure!(out.status.success(), "reading should be allowed: {out:?}");
        let status: Value = serde_json::from_slice(&out.stdout)?;
        ensure!(status["generation"] == json!(g), "{status}");
        for args in [vec!["apply", &*alt], vec!["rollback"], vec!["detach"]] {
            let out = daemon.ctl_as_nobody(&[], &args)?;
            let err = stderr(&out);
            ensure!(
                out.status.code() == Some(1)
                    && err.contains("(permission_denied)")
                    && err.contains("you are uid 65534 gid 65534"),
                "`filterctl {}` as uid 65534: {out:?}",
                args.join(" ")
            );
            let mut json_args = vec!["--json"];
            json_args.extend(&args);
            let out = daemon.ctl_as_nobody(&[], &json_args)?;
            let error: Value = serde_json::from_slice(&out.stdout)?;
            ensure!(
                error["error"]["code"] == json!("permission_denied"),
                "{error}"
            );
        }
        // A dry run only reads: anyone who can connect may (issue 21).
        let out = daemon.ctl_as_nobody(&[], &["apply", "--dry-run", &alt])?;
        ensure!(
            out.status.success() && stdout(&out).starts_with("dry run: "),
            "a dry run as uid 65534: {out:?}"
        );
        ensure!(
            daemon.generation()? == Some(g),
            "a refused call or a dry run changed the generation"
        );
        ensure!(
            link_pins(daemon.pin_dir(), &inst.guarded).len() == 2,
            "a refused detach detached"
        );
        assert_web(&site, &daemon, 0)?;

        // 3. A member of the socket group, through the 0660 file, may.
        fs::set_permissions(daemon.socket(), fs::Permissions::from_mode(0o660))?;
        let out = daemon.ctl_as_nobody(&[gid], &["--json", "apply", &alt])?;
        ensure!(
            out.status.success(),
            "a member of the socket group should apply: {out:?}"
        );
        let applied: Value = serde_json::from_slice(&out.stdout)?;
        ensure!(generation(&applied)? > g, "{applied}");
        assert_alt(&site, &daemon, 0)?;
        Ok(())
    })
}

/// One request line on a raw connection, one response back.
struct Raw {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Raw {
    fn connect(socket: &Path) -> Result<Raw> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        stream.set_write_timeout(Some(Duration::from_secs(120)))?;
        Ok(Raw {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    fn send(&mut self, line: &[u8]) -> Result<()> {
        self.writer.write_all(line)?;
        self.writer.write_all(b"\n")?;
        Ok(())
    }

    fn recv(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line)?;
        ensure!(n > 0, "the daemon closed the connection");
        serde_json::from_str(&line).with_context(|| format!("a response that is not JSON: {line}"))
    }

    fn call(&mut self, line: &[u8]) -> Result<Value> {
        self.send(line)?;
        self.recv()
    }
}

/// `{"ok": false, "error": {"code": code}}` with `id`.
fn is_error(response: &Value, id: Value, code: &str) -> Result<()> {
    ensure!(
        response["v"] == json!(1)
            && response["ok"] == json!(false)
            && response["id"] == id
            && response["error"]["code"] == json!(code)
            && response["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
        "expected a {code} error with id {id}, got {response}"
    );
    Ok(())
}

/// Malformed, oversized and unknown requests over the raw socket each get
/// an error reply, and the connection, the daemon and the data plane keep
/// working; a client that does not read its responses holds up nobody.
#[test]
fn bad_requests_get_errors_and_the_connection_goes_on() -> Result<()> {
    e2e("d_raw", |id| {
        let site = Site::new(id, 1)?;
        // A small request limit, so going over it is cheap.
        let options = DaemonOptions {
            args: vec!["--max-request-size".into(), "1M".into()],
            ..DaemonOptions::default()
        };
        let daemon = DaemonGuard::start_with(id, &site.host, options)?;
        let inst = site.inst(0);
        let g = generation(&daemon.apply(&doc(&[inst], web_rules()))?)?;
        let mut raw = Raw::connect(daemon.socket())?;
        let version = br#"{"v":1,"id":"ok","method":"version"}"#;

        let r = raw.call(b"{oops")?;
        is_error(&r, Value::Null, "bad_request")?;
        ensure!(
            r["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("malformed JSON")),
            "{r}"
        );
        is_error(&raw.call(b"[1,2,3]")?, Value::Null, "bad_request")?;
        is_error(&raw.call(br#"{"v":1,"id":7}"#)?, json!(7), "bad_request")?;
        is_error(
            &raw.call(br#"{"v":1,"id":"x1","method":"frobnicate"}"#)?,
            json!("x1"),
            "unknown_method",
        )?;
        is_error(
            &raw.call(br#"{"v":2,"id":3,"method":"status"}"#)?,
            json!(3),
            "unsupported_version",
        )?;
        is_error(
            &raw.call(br#"{"v":1,"id":4,"method":"status","params":{"bogus":1}}"#)?,
            json!(4),
            "invalid_params",
        )?;
        is_error(
            &raw.call(br#"{"v":1,"id":5,"method":"rollback","params":{"to":"x"}}"#)?,
            json!(5),
            "invalid_params",
        )?;
        let r =
            raw.call(br#"{"v":1,"id":6,"method":"apply","params":{"document":"{not json"}}"#)?;
        is_error(&r, json!(6), "invalid_document")?;
        ensure!(
            r["error"]["details"]
                .as_array()
                .is_some_and(|d| d.len() == 1),
            "{r}"
        );
        is_error(
            &raw.call(br#"{"v":1,"id":8,"method":"explain","params":{"eni":"eni-nope","direction":"ingress","proto":"tcp","src":"198.51.100.1:1","dst":"192.0.2.2:80"}}"#)?,
            json!(8),
            "invalid_params",
        )?;
        // A blank line is no request: the next response is the version's.
        raw.send(b"")?;
        let r = raw.call(version)?;
        ensure!(r["ok"] == json!(true) && r["id"] == json!("ok"), "{r}");

        // Over the 1 MiB limit, sent while the daemon reads it.
        let big = vec![b'x'; 1024 * 1024 + 1];
        raw.send(&big)?;
        let r = raw.recv()?;
        is_error(&r, Value::Null, "request_too_large")?;
        // A document inside an oversized apply: refused the same way.
        let mut huge = br#"{"v":1,"id":9,"method":"apply","params":{"document":""#.to_vec();
        huge.extend(std::iter::repeat_n(b' ', 1024 * 1024));
        huge.extend(br#""}}"#);
        raw.send(&huge)?;
        is_error(&raw.recv()?, Value::Null, "request_too_large")?;
        // Still the same connection, still working.
        let r = raw.call(version)?;
        ensure!(r["ok"] == json!(true) && r["id"] == json!("ok"), "{r}");
        let r = raw.call(br#"{"v":1,"id":10,"method":"status"}"#)?;
        ensure!(
            r["ok"] == json!(true) && r["result"]["generation"] == json!(g),
            "{r}"
        );

        // A client that asks and never reads, and one that sends half a
        // line and waits: neither holds up the others.
        let mut greedy = UnixStream::connect(daemon.socket())?;
        greedy.set_write_timeout(Some(Duration::from_secs(5)))?;
        let ask = b"{\"v\":1,\"id\":1,\"method\":\"counters\"}\n";
        for _ in 0..2000 {
            if greedy.write_all(ask).is_err() {
                break; // its buffers are full: it is stuck, as intended
            }
        }
        let mut half = UnixStream::connect(daemon.socket())?;
        half.write_all(br#"{"v":1,"id":1,"meth"#)?;
        let started = Instant::now();
        ensure!(daemon.generation()? == Some(g));
        let r = raw.call(version)?;
        ensure!(r["ok"] == json!(true), "{r}");
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "stuck clients slowed the others down"
        );
        assert_web(&site, &daemon, 0)?;
        drop((greedy, half));

        // Cut off mid-line: the daemon does not mind.
        let mut cut = UnixStream::connect(daemon.socket())?;
        cut.write_all(br#"{"v":1,"id":1,"method":"sta"#)?;
        drop(cut);
        let r = raw.call(version)?;
        ensure!(r["ok"] == json!(true), "{r}");
        ensure!(daemon.ctl_json(&["status"])?["generation"] == json!(g));
        Ok(())
    })
}

/// 200 clients connected at once, each asking several questions pipelined
/// on its connection, while an apply goes through: every answer correct,
/// the apply enforced.
#[test]
fn two_hundred_concurrent_clients() -> Result<()> {
    const CLIENTS: usize = 200;
    e2e("d_200", |id| {
        let site = Site::new(id, 1)?;
        let daemon = DaemonGuard::start(id, &site.host)?;
        let inst = site.inst(0);
        let web = doc(&[inst], web_rules()).to_string();
        let g = generation(&daemon.apply_text(&web)?)?;
        let alt_path = daemon.write_file("alt", &doc(&[inst], alt_rules()).to_string())?;
        let explain = format!(
            r#"{{"eni":"eni-0","direction":"ingress","proto":"tcp","src":"{ALLOWED4}:40000","dst":"{}:80"}}"#,
            inst.v4
        );

        let all_connected = Barrier::new(CLIENTS + 1);
        let results: Vec<Result<()>> = thread::scope(|s| {
            let clients: Vec<_> = (0..CLIENTS)
                .map(|c| {
                    let (all_connected, socket, explain, web) =
                        (&all_connected, daemon.socket(), &explain, &web);
                    s.spawn(move || -> Result<()> {
                        let raw = Raw::connect(socket);
                        all_connected.wait();
                        let mut raw = raw?;
                        let requests = [
                            format!(r#"{{"v":1,"id":"{c}-status","method":"status"}}"#),
                            format!(r#"{{"v":1,"id":"{c}-get","method":"get"}}"#),
                            format!(r#"{{"v":1,"id":"{c}-explain","method":"explain","params":{explain}}}"#),
                            format!(r#"{{"v":1,"id":"{c}-counters","method":"counters"}}"#),
                            format!(r#"{{"v":1,"id":"{c}-version","method":"version"}}"#),
                        ];
                        for r in &requests {
                            raw.send(r.as_bytes())?;
                        }
                        for what in ["status", "get", "explain", "counters", "version"] {
                            let r = raw.recv()?;
                            ensure!(
                                r["ok"] == json!(true) && r["id"] == json!(format!("{c}-{what}")),
                                "client {c}, {what}: {r}"
                            );
                            match what {
                                "get" => {
                                    // Before or after the concurrent apply.
                                    let doc = &r["result"]["document"];
                                    ensure!(doc == &json!(web) || r["result"]["generation"] != json!(g), "client {c}: {r}");
                                }
                                "explain" => ensure!(r["result"]["decision"]["verdict"].is_string(), "client {c}: {r}"),
                                _ => {}
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            all_connected.wait();
            // All 200 are connected now: a mutating call among them.
            let applied = daemon.ctl_json(&["apply", &alt_path.to_string_lossy()]);
            let mut results: Vec<Result<()>> = clients
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("a client panicked")))
                })
                .collect();
            results.push(applied.map(drop).context("the apply among the clients"));
            results
        });
        let failures: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}")))
            .collect();
        ensure!(
            failures.is_empty(),
            "{} of {CLIENTS} clients failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
        ensure!(daemon.generation()? > Some(g));
        assert_alt(&site, &daemon, 0)?;

        // The client limit (`--max-clients`, the idle connection that
        // makes room, `busy`) is `clients_e2e` and `daemon_load`'s.
        Ok(())
    })
}

/// Two daemons in one host namespace, each with its own socket, state and
/// pin directory and its own interface: each enforces its own document,
/// neither can take the other's directories or interface, and detaching one
/// leaves the other enforcing.
#[test]
fn two_daemons_side_by_side() -> Result<()> {
    let (id_a, id_b, id_c) = (
        TestId::new("d_two_a"),
        TestId::new("d_two_b"),
        TestId::new("d_two_c"),
    );
    let result = (|| -> Result<()> {
        let site = Site::new(&id_a, 2)?;
        let (inst0, inst1) = (site.inst(0), site.inst(1));
        let a = DaemonGuard::start(&id_a, &site.host)?;
        // B starts with its document (--ruleset).
        let b = DaemonGuard::start_with(
            &id_b,
            &site.host,
            DaemonOptions {
                ruleset: Some(doc(&[inst1], alt_rules())),
                ..DaemonOptions::default()
            },
        )?;
        ensure!(
            b.log().contains("--ruleset enforced as generation"),
            "{}",
            b.log()
        );
        a.apply(&doc(&[inst0], web_rules()))?;
        assert_web(&site, &a, 0)?;
        assert_alt(&site, &b, 1)?;

        let (sa, sb) = (a.ctl_json(&["status"])?, b.ctl_json(&["status"])?);
        ensure!(
            sa["enis"].as_array().map(Vec::len) == Some(1) && sa["enis"][0]["id"] == json!("eni-0"),
            "{sa}"
        );
        ensure!(
            sb["enis"].as_array().map(Vec::len) == Some(1) && sb["enis"][0]["id"] == json!("eni-1"),
            "{sb}"
        );
        ensure!(
            link_pins(a.pin_dir(), &inst0.guarded).len() == 2
                && link_pins(a.pin_dir(), &inst1.guarded).is_empty()
        );
        ensure!(
            link_pins(b.pin_dir(), &inst1.guarded).len() == 2
                && link_pins(b.pin_dir(), &inst0.guarded).is_empty()
        );

        // A third daemon on A's directories is refused, and so is one on
        // A's socket.
        let third = |state: &Path, pins: &Path, socket: &Path| -> Result<Output> {
            let mut cmd = site.host.nsenter(&a.bins().filterd.to_string_lossy());
            cmd.arg("--socket")
                .arg(socket)
                .arg("--state-dir")
                .arg(state)
                .arg("--pin-dir")
                .arg(pins)
                .arg("--flow-log")
                .arg(b.paths().run_dir.join("third-flows.log"));
            output_within(&mut cmd, Duration::from_secs(120))
        };
        let spare = b.paths().run_dir.join("third");
        let out = third(
            a.state_dir(),
            &spare.join("pins-unused"),
            &spare.join("s1.sock"),
        )?;
        ensure!(
            !out.status.success() && stderr(&out).contains("in use by another filterd"),
            "{out:?}"
        );
        let out = third(&spare.join("state"), a.pin_dir(), &spare.join("s2.sock"))?;
        ensure!(
            !out.status.success() && stderr(&out).contains("is in use"),
            "same pin dir: {out:?}"
        );
        // (It loads its data plane before it finds the socket taken: its
        // pins go with a third identity, removed here.)
        let out = third(&spare.join("state2"), &id_c.pin_dir(), a.socket());
        let removed = filter::dataplane::detach_all_pinned(&id_c.pin_dir());
        let out = out?;
        removed?;
        ensure!(
            !out.status.success() && stderr(&out).contains("another filterd is serving"),
            "same socket: {out:?}"
        );

        // B may not take A's interface: the apply fails as a whole and
        // both keep enforcing what they had.
        let gb = b.generation()?;
        let both = doc(&[inst0, inst1], alt_rules());
        let path = b.write_file("both", &both.to_string())?;
        let (error, err) = b.ctl_json_err(&["apply", &path.to_string_lossy()])?;
        ensure!(
            error["code"] == json!("enforcement_failed"),
            "{error} {err}"
        );
        ensure!(b.generation()? == gb);
        ensure!(
            link_pins(b.pin_dir(), &inst0.guarded).is_empty(),
            "B kept a link on A's interface"
        );
        assert_web(&site, &a, 0)?;
        assert_alt(&site, &b, 1)?;

        // Detaching A leaves B alone.
        a.ctl_json(&["detach"])?;
        assert_hooked(&site.host, &inst0.guarded, false)?;
        assert_unfiltered(&site, 0)?;
        assert_hooked(&site.host, &inst1.guarded, true)?;
        assert_alt(&site, &b, 1)?;
        ensure!(!a.pin_dir().exists() && b.pin_dir().exists());
        Ok(())
    })();
    let left_a = nothing_left(&id_a);
    let left_b = nothing_left(&id_b);
    let left_c = nothing_left(&id_c);
    result?;
    left_a?;
    left_b?;
    left_c
}

/// Interfaces join and leave with the document: an apply attaches the
/// interfaces that join and detaches (and unpins) those that leave. An
/// apply whose attach fails half-way undoes the attachments it made and
/// changes nothing.
#[test]
fn interfaces_join_and_leave_with_the_document() -> Result<()> {
    e2e("d_join_leave", |id| {
        let site = Site::new(id, 3)?;
        let daemon = DaemonGuard::start(id, &site.host)?;
        let (i0, i1, i2) = (site.inst(0), site.inst(1), site.inst(2));

        let g1 = generation(&daemon.apply(&doc(&[i0], web_rules()))?)?;
        assert_hooked(&site.host, &i0.guarded, true)?;
        assert_hooked(&site.host, &i1.guarded, false)?;
        assert_unfiltered(&site, 1)?;

        // i1 joins.
        let joined = daemon.apply(&doc(&[i0, i1], web_rules()))?;
        ensure!(
            strings(&joined["changes"]["enis"]["added"]) == [i1.eni()],
            "{joined}"
        );
        assert_hooked(&site.host, &i1.guarded, true)?;
        assert_web(&site, &daemon, 0)?;
        assert_web(&site, &daemon, 1)?;

        // i0 leaves: no programs, no pins, no filtering.
        let left = daemon.apply(&doc(&[i1], web_rules()))?;
        ensure!(
            strings(&left["changes"]["enis"]["removed"]) == [i0.eni()],
            "{left}"
        );
        ensure!(left.get("notices").is_none(), "{left}");
        assert_hooked(&site.host, &i0.guarded, false)?;
        ensure!(link_pins(daemon.pin_dir(), &i0.guarded).is_empty());
        assert_unfiltered(&site, 0)?;
        assert_web(&site, &daemon, 1)?;
        let g = daemon.generation()?;
        ensure!(g > Some(g1));

        // Another program holds i2's XDP hook. An apply that brings i0
        // back and adds i2 attaches i0 first (in name order), then fails on
        // i2: i0 must be detached again and nothing else may change.
        let mut foreign = filter_tests::bpf::Dataplane::load()?;
        let i2_iface = i2.guarded.clone();
        site.host.run(|| {
            foreign
                .xdp_mut()?
                .attach(&i2_iface, aya::programs::XdpMode::default())
                .context("attaching a foreign XDP program")
        })??;
        // (On XDP, asked for: `auto` would put a veth on tcx.)
        let mut three = doc(&[i0, i1, i2], web_rules());
        for eni in three["enis"].as_array_mut().into_iter().flatten() {
            eni["hook"] = json!("xdp");
        }
        let path = daemon.write_file("three", &three.to_string())?;
        let (error, err) = daemon.ctl_json_err(&["apply", &path.to_string_lossy()])?;
        ensure!(
            error["code"] == json!("enforcement_failed"),
            "{error} {err}"
        );
        ensure!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains(&i2.guarded)),
            "the failure should name {}: {error}",
            i2.guarded
        );
        ensure!(
            daemon.generation()? == g,
            "the failed apply changed the generation"
        );
        assert_hooked(&site.host, &i0.guarded, false)?;
        ensure!(link_pins(daemon.pin_dir(), &i0.guarded).is_empty());
        ensure!(link_pins(daemon.pin_dir(), &i2.guarded).is_empty());
        ensure!(
            xdp_attached(&site.host, &i2.guarded)?,
            "the foreign program was removed"
        );
        ensure!(
            tcx_egress(&site.host, &i2.guarded)?.is_empty(),
            "TC was left on {}",
            i2.guarded
        );
        assert_unfiltered(&site, 0)?;
        assert_web(&site, &daemon, 1)?;
        let status = daemon.ctl_json(&["status"])?;
        ensure!(
            status["enis"].as_array().map(Vec::len) == Some(1)
                && status["enis"][0]["id"] == json!(i1.eni()),
            "{status}"
        );
        drop(foreign);
        Ok(())
    })
}

/// A guarded interface that is deleted and made again under the same name
/// (a VM restarted, its tap recreated) is guarded again by the next apply.
#[test]
fn a_recreated_interface_is_guarded_again() -> Result<()> {
    e2e("d_recreated", |id| {
        let site = Site::new(id, 1)?;
        let mut daemon = DaemonGuard::start(id, &site.host)?;
        let inst = site.inst(0);
        let web = doc(&[inst], web_rules());
        let g = generation(&daemon.apply(&web)?)?;
        assert_web(&site, &daemon, 0)?;

        // The instance's link goes away and comes back with the same names
        // and addresses: the daemon guards the new interface by itself
        // (SPEC §2.4), under the same generation.
        recreate_link(&site, inst)?;
        wait_hooked(&site.host, &inst.guarded, Duration::from_secs(2))?;
        assert_web(&site, &daemon, 0)?;
        ensure!(daemon.generation()? == Some(g));
        let status = daemon.ctl_json(&["status"])?;
        ensure!(
            status["enis"][0]["hooks"] == json!(["tc-ingress", "tc"])
                && status["enis"][0]["state"] == json!("attached"),
            "{status}"
        );

        // The same while the daemon is dead: the restarted daemon must not
        // take over a data plane that guards an interface index that is
        // gone.
        daemon.kill9()?;
        recreate_link(&site, inst)?;
        assert_hooked(&site.host, &inst.guarded, false)?;
        daemon.restart()?;
        assert_hooked(&site.host, &inst.guarded, true)?;
        assert_web(&site, &daemon, 0)?;
        ensure!(
            daemon.generation()? > Some(g) && daemon.log().contains("not taking over generation"),
            "the restarted daemon should enforce the document anew:\n{}",
            daemon.log()
        );
        Ok(())
    })
}

/// Deletes instance `inst`'s veth pair and makes it again with the same
/// names, addresses and routes: a new interface index for the same name.
fn recreate_link(site: &Site, inst: &Inst) -> Result<()> {
    let peer = peer_name(inst)?;
    let before = site
        .host
        .ip(&["-o", "link", "show", "dev", &inst.guarded])?;
    delete_link(site, inst)?;
    make_link(site, inst, &peer)?;
    let after = site
        .host
        .ip(&["-o", "link", "show", "dev", &inst.guarded])?;
    ensure!(
        before.split(':').next() != after.split(':').next(),
        "the interface index did not change"
    );
    Ok(())
}

/// The name of the instance's end of its veth pair.
fn peer_name(inst: &Inst) -> Result<String> {
    let peer = inst.ns.ip(&["-o", "link", "show", "type", "veth"])?;
    Ok(peer
        .split(':')
        .nth(1)
        .and_then(|n| n.trim().split('@').next())
        .ok_or_else(|| anyhow!("no veth in {}: {peer}", inst.ns.name()))?
        .to_owned())
}

/// Makes instance `inst`'s veth pair (instance end `peer`), with its
/// addresses and routes.
fn make_link(site: &Site, inst: &Inst, peer: &str) -> Result<()> {
    let k = inst.k;
    let base = 16 * u16::from(k);
    let (host4, inst4) = (
        format!("192.0.2.{}", base + 1),
        format!("192.0.2.{}", base + 2),
    );
    let (host6, inst6) = (format!("fd00:0:0:{k}::1"), format!("fd00:0:0:{k}::2"));
    site.host.ip(&[
        "link",
        "add",
        &inst.guarded,
        "type",
        "veth",
        "peer",
        "name",
        peer,
        "netns",
        inst.ns.name(),
    ])?;
    site.host.ip(&["link", "set", &inst.guarded, "up"])?;
    inst.ns.ip(&["link", "set", peer, "up"])?;
    site.host
        .ip(&["addr", "add", &format!("{host4}/28"), "dev", &inst.guarded])?;
    site.host.ip(&[
        "addr",
        "add",
        &format!("{host6}/64"),
        "dev",
        &inst.guarded,
        "nodad",
    ])?;
    inst.ns
        .ip(&["addr", "add", &format!("{inst4}/28"), "dev", peer])?;
    inst.ns
        .ip(&["addr", "add", &format!("{inst6}/64"), "dev", peer, "nodad"])?;
    inst.ns.ip(&["route", "add", "default", "via", &host4])?;
    inst.ns
        .ip(&["-6", "route", "add", "default", "via", &host6])?;
    Ok(())
}

/// Applies are atomic under traffic: while generations are switched back
/// and forth, a stream of datagrams from a remote that every one of them
/// drops never gets a single one through (no moment without rules), an
/// allowed TCP connection keeps echoing, and no packet on the guarded
/// interface is ever passed as unguarded.
#[test]
fn applies_are_atomic_under_traffic() -> Result<()> {
    e2e("d_atomic", |id| {
        let site = Site::new(id, 1)?;
        let daemon = DaemonGuard::start(id, &site.host)?;
        let inst = site.inst(0);
        let mut rules_b = web_rules();
        if let Some(rules) = rules_b.as_array_mut() {
            rules.push(
                json!({"id": "https", "direction": "ingress", "policy": "accept",
                "priority": 1, "ip_protocol": "tcp", "port_range": "443/443",
                "source_cidr_ip": "198.51.100.0/24"}),
            );
        }
        let (a, b) = (doc(&[inst], web_rules()), doc(&[inst], rules_b));
        daemon.apply(&a)?;
        let mut conn = open(&site, ALLOWED4, inst.addr(false, 80))?;

        let before = daemon.ctl_json(&["status"])?;
        let (sent, received, applied) = flood_during(&site, inst, DENIED4, || {
            let mut applied = 0;
            for round in 0..12 {
                daemon.apply(if round % 2 == 0 { &b } else { &a })?;
                applied += 1;
                echo(&mut conn, &format!("round {round}"))?;
            }
            Ok(applied)
        })?;
        let after = daemon.ctl_json(&["status"])?;
        ensure!(
            applied == 12 && sent > 1000,
            "sent {sent} datagrams over {applied} applies"
        );
        ensure!(
            received == 0,
            "{received} of {sent} datagrams got through during the applies"
        );
        let dropped = stat(&after, "drop_default_deny")? - stat(&before, "drop_default_deny")?;
        ensure!(
            dropped >= sent,
            "{sent} sent, {dropped} counted as default-deny"
        );
        ensure!(
            stat(&after, "pass_unguarded")? == stat(&before, "pass_unguarded")?,
            "packets passed unguarded during the applies"
        );
        Ok(())
    })
}

/// Floods instance `inst`'s UDP port 5353 from the host's `from` while
/// `during` runs, counting what arrives in the instance: (datagrams sent,
/// datagrams received, what `during` returned).
fn flood_during<T>(
    site: &Site,
    inst: &Inst,
    from: &str,
    during: impl FnOnce() -> Result<T>,
) -> Result<(u64, u64, T)> {
    let receiver = inst
        .ns
        .run(|| std::net::UdpSocket::bind("0.0.0.0:5353"))??;
    receiver.set_read_timeout(Some(Duration::from_millis(100)))?;
    let sender = site
        .host
        .run(|| std::net::UdpSocket::bind((ip(from), 0)))??;
    let target = inst.addr(false, 5353);
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let flood = s.spawn(|| {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if sender.send_to(b"should never arrive", target).is_ok() {
                    sent += 1;
                }
                if sent.is_multiple_of(16) {
                    thread::sleep(Duration::from_micros(200));
                }
            }
            sent
        });
        let count = s.spawn(|| {
            let mut n = 0u64;
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if receiver.recv_from(&mut buf).is_ok() {
                    n += 1;
                }
            }
            n
        });
        let result = during();
        stop.store(true, Ordering::Relaxed);
        let sent = flood.join().map_err(|_| anyhow!("the sender panicked"))?;
        let received = count.join().map_err(|_| anyhow!("the receiver panicked"))?;
        Ok((sent, received, result?))
    })
}

// ---------------------------------------------------------------------------
// Interfaces that come and go (SPEC §2.4)
// ---------------------------------------------------------------------------

/// Watches `iface` from another thread and returns how long after `since`
/// both programs were on it (`None`: not within `limit`).
fn time_to_guard(
    ns: &Netns,
    iface: &str,
    since: Instant,
    limit: Duration,
) -> thread::JoinHandle<Option<Duration>> {
    let (ns, iface) = (ns.clone(), iface.to_owned());
    thread::spawn(move || {
        while since.elapsed() < limit {
            if assert_hooked(&ns, &iface, true).is_ok() {
                return Some(since.elapsed());
            }
            thread::sleep(Duration::from_millis(1));
        }
        None
    })
}

/// Removes instance `inst`'s veth pair (both ends go).
fn delete_link(site: &Site, inst: &Inst) -> Result<()> {
    site.host.ip(&["link", "del", &inst.guarded])?;
    Ok(())
}

/// The time a link waits for its guard, as `BENCHMARKS.md` reports it.
fn report_guard(what: &str, took: Option<Duration>) -> Result<Duration> {
    let took = took.ok_or_else(|| anyhow!("{what}: not guarded within the limit"))?;
    eprintln!(
        "{what}: guarded {:.1} ms after it was created",
        took.as_secs_f64() * 1e3
    );
    Ok(took)
}

/// A veth made after the apply is guarded from its first packet: the ENI
/// is pending (a notice, `status` exits 3) until the link appears, then a
/// denied connection made at once fails and an allowed one works, without
/// another apply.
#[test]
fn a_veth_made_after_the_apply_is_guarded_from_its_first_packet() -> Result<()> {
    e2e("d_late_veth", |id| {
        let site = Site::new(id, 1)?;
        let daemon = DaemonGuard::start(id, &site.host)?;
        let inst = site.inst(0);
        let peer = peer_name(inst)?;
        delete_link(&site, inst)?;
        let applied = daemon.apply(&doc(&[inst], web_rules()))?;
        let g = generation(&applied)?;
        ensure!(
            strings(&applied["notices"])
                .iter()
                .any(|n| n.starts_with(&format!(
                    "{}: interface {} does not exist yet",
                    inst.eni(),
                    inst.guarded
                ))),
            "{applied}"
        );
        let out = daemon.ctl(&["status"])?;
        ensure!(
            out.status.code() == Some(3),
            "a pending ENI is degraded: {out:?}"
        );
        ensure!(stdout(&out).contains("PENDING"), "{}", stdout(&out));
        let (status, degraded) = daemon.status_json()?;
        ensure!(
            degraded && status["enis"][0]["state"] == json!("pending"),
            "{status}"
        );

        let created = Instant::now();
        let watch = time_to_guard(&site.host, &inst.guarded, created, Duration::from_secs(5));
        make_link(&site, inst, &peer)?;
        // At once: the first packets already meet the rules.
        blocked_quietly(&site, DENIED4, inst.addr(false, 80))?;
        open(&site, ALLOWED4, inst.addr(false, 80))?;
        let took = report_guard(
            "veth",
            watch.join().map_err(|_| anyhow!("watcher panicked"))?,
        )?;
        ensure!(took < Duration::from_secs(1), "guarded only after {took:?}");
        assert_web(&site, &daemon, 0)?;
        ensure!(daemon.generation()? == Some(g), "an apply happened");
        let out = daemon.ctl(&["status"])?;
        ensure!(out.status.code() == Some(0), "{out:?}");
        Ok(())
    })
}

/// A VM's tap made after the apply: what the host sends towards the VM
/// from a denied address never reaches the tap, from an allowed one it
/// does.
#[test]
fn a_tap_made_after_the_apply_is_guarded_from_its_first_packet() -> Result<()> {
    use filter_tests::tap::{tcp_syns, Tap};
    e2e("d_late_tap", |id| {
        let site = Site::new(id, 0)?;
        let daemon = DaemonGuard::start(id, &site.host)?;
        let name = id.ifname(99)?;
        let vm = Inst {
            k: 3,
            ns: site.host.clone(),
            guarded: name.clone(),
            v4: ip("192.0.2.50"),
            v6: ip("fd00:0:0:3::2"),
            _servers: Vec::new(),
        };
        daemon.apply(&doc(&[&vm], web_rules()))?;

        let created = Instant::now();
        let watch = time_to_guard(&site.host, &name, created, Duration::from_secs(5));
        let mut tap = Tap::create(&site.host, &name)?;
        site.host
            .ip(&["addr", "add", "192.0.2.49/28", "dev", &name])?;
        site.host.ip(&["link", "set", &name, "up"])?;
        site.host.ip(&[
            "neigh",
            "replace",
            "192.0.2.50",
            "lladdr",
            "02:00:00:00:00:32",
            "dev",
            &name,
        ])?;
        // Handshakes that cannot finish (nothing answers in the VM): only
        // their SYNs matter.
        let short = Duration::from_millis(300);
        let _ = connect_from(&site.host, ip(DENIED4), vm.addr(false, 80), short)?;
        let _ = connect_from(&site.host, ip(ALLOWED4), vm.addr(false, 80), short)?;
        let syns = tcp_syns(&tap.frames(Duration::from_millis(200))?);
        let took = report_guard(
            "tap",
            watch.join().map_err(|_| anyhow!("watcher panicked"))?,
        )?;
        ensure!(
            !syns.iter().any(|(src, _)| src.to_string() == DENIED4),
            "a SYN from the denied {DENIED4} reached the VM: {syns:?}"
        );
        ensure!(
            syns.iter()
                .any(|(src, port)| src.to_string() == ALLOWED4 && *port == 80),
            "no SYN from the allowed {ALLOWED4} reached the VM: {syns:?}"
        );
        ensure!(took < Duration::from_secs(1), "guarded only after {took:?}");
        drop(tap);
        Ok(())
    })
}

/// Delete and make again a guarded interface, over and over, while a
/// remote floods the instance with datagrams the rules drop: not one
/// arrives, and the allowed service works after every round.
#[test]
fn recreating_an_interface_under_traffic_lets_nothing_through() -> Result<()> {
    e2e("d_recreate_flood", |id| {
        let site = Site::new(id, 1)?;
        let daemon = DaemonGuard::start(id, &site.host)?;
        let inst = site.inst(0);
        daemon.apply(&doc(&[inst], web_rules()))?;
        let (sent, received, guards) = flood_during(&site, inst, ALLOWED4, || {
            let mut guards = Vec::new();
            for _ in 0..8 {
                let created = Instant::now();
                let watch =
                    time_to_guard(&site.host, &inst.guarded, created, Duration::from_secs(5));
                recreate_link(&site, inst)?;
                guards.push(report_guard(
                    "recreated veth",
                    watch.join().map_err(|_| anyhow!("watcher panicked"))?,
                )?);
                open(&site, ALLOWED4, inst.addr(false, 80))?;
            }
            Ok(guards)
        })?;
        ensure!(sent > 1000, "only {sent} datagrams sent");
        ensure!(
            received == 0,
            "{received} of {sent} datagrams got through while the interface came and went"
        );
        let slowest = guards.iter().max().copied().unwrap_or_default();
        eprintln!("8 re-creations under traffic: slowest guard {slowest:?}");
        Ok(())
    })
}

/// A restart with every ENI's interface missing restores the saved
/// generation (nothing to fail on), shows the ENI pending, and guards it
/// when its interface appears.
#[test]
fn a_restart_without_the_interfaces_restores_and_waits_for_them() -> Result<()> {
    e2e("d_restart_missing", |id| {
        let site = Site::new(id, 1)?;
        let mut daemon = DaemonGuard::start(id, &site.host)?;
        let inst = site.inst(0);
        let g = generation(&daemon.apply(&doc(&[inst], web_rules()))?)?;
        daemon.terminate()?;
        let peer = peer_name(inst)?;
        delete_link(&site, inst)?;
        daemon.restart()?;
        let (status, degraded) = daemon.status_json()?;
        ensure!(
            degraded
                && status["generation"].as_u64() >= Some(g)
                && status["enis"][0]["state"] == json!("pending")
                && status.get("restore_error").is_none(),
            "{status}"
        );
        make_link(&site, inst, &peer)?;
        wait_hooked(&site.host, &inst.guarded, Duration::from_secs(2))?;
        assert_web(&site, &daemon, 0)?;
        let status = daemon.ctl_json(&["status"])?;
        ensure!(status["enis"][0]["state"] == json!("attached"), "{status}");
        Ok(())
    })
}

/// A new `filterd` over pins of another layout (an upgrade, SPEC §8):
/// the pins of two maps are swapped while no daemon runs, as a build with
/// other map layouts would find them. The new daemon retires them, writes
/// the saved generation into new maps and only then moves the links to its
/// programs: a flood the rules drop never gets a datagram through, the
/// allowed service works after, and the log says connections were not
/// carried over.
#[test]
fn an_upgrade_over_another_layout_keeps_every_verdict() -> Result<()> {
    e2e("d_upgrade", |id| {
        let site = Site::new(id, 1)?;
        let mut daemon = DaemonGuard::start(id, &site.host)?;
        let inst = site.inst(0);
        let g = generation(&daemon.apply(&doc(&[inst], web_rules()))?)?;
        open(&site, ALLOWED4, inst.addr(false, 80))?;
        daemon.terminate()?;
        let pins = daemon.pin_dir().to_owned();
        let (a, b) = (pins.join("FILTER_STATS"), pins.join("FILTER_FLOWLOSS"));
        let tmp = pins.join("swap");
        fs::rename(&a, &tmp)?;
        fs::rename(&b, &a)?;
        fs::rename(&tmp, &b)?;

        let (sent, received, ()) = flood_during(&site, inst, ALLOWED4, || {
            daemon.restart()?;
            thread::sleep(Duration::from_millis(300));
            Ok(())
        })?;
        ensure!(sent > 1000, "only {sent} datagrams sent");
        ensure!(
            received == 0,
            "{received} of {sent} datagrams got through during the upgrade"
        );
        let log = daemon.log();
        ensure!(
            log.contains("another build's layout")
                && log.contains("tracked connections cannot be carried over"),
            "{log}"
        );
        ensure!(
            daemon.generation()? > Some(g),
            "the saved generation was not restored"
        );
        ensure!(
            !pins.join("retired").exists(),
            "the old maps' pins are left"
        );
        assert_hooked(&site.host, &inst.guarded, true)?;
        assert_web(&site, &daemon, 0)?;
        Ok(())
    })
}

/// SPEC §2.4 `hook`: a veth is filtered on tcx ingress by default (XDP
/// there would cost the sender its GSO), on XDP when the document asks,
/// and back; the hook moves without a moment unguarded and `status` names
/// it.
#[test]
fn the_ingress_hook_follows_the_document() -> Result<()> {
    e2e("d_hook", |id| {
        let site = Site::new(id, 1)?;
        let daemon = DaemonGuard::start(id, &site.host)?;
        let inst = site.inst(0);
        let with_hook = |hook: &str| {
            let mut d = doc(&[inst], web_rules());
            d["enis"][0]["hook"] = json!(hook);
            d
        };
        let hooks = |daemon: &DaemonGuard| -> Result<Value> {
            Ok(daemon.ctl_json(&["status"])?["enis"][0]["hooks"].clone())
        };
        let tcx_in = |ns: &Netns| tcx(ns, &inst.guarded, TcAttachType::Ingress);

        daemon.apply(&doc(&[inst], web_rules()))?;
        ensure!(hooks(&daemon)? == json!(["tc-ingress", "tc"]));
        ensure!(!xdp_attached(&site.host, &inst.guarded)? && !tcx_in(&site.host)?.is_empty());
        assert_web(&site, &daemon, 0)?;

        daemon.apply(&with_hook("xdp"))?;
        ensure!(
            hooks(&daemon)? == json!(["xdp", "tc"]),
            "{}",
            hooks(&daemon)?
        );
        ensure!(xdp_attached(&site.host, &inst.guarded)? && tcx_in(&site.host)?.is_empty());
        ensure!(link_pins(daemon.pin_dir(), &inst.guarded).len() == 2);
        assert_web(&site, &daemon, 0)?;

        daemon.apply(&with_hook("tc"))?;
        ensure!(hooks(&daemon)? == json!(["tc-ingress", "tc"]));
        ensure!(!xdp_attached(&site.host, &inst.guarded)?);
        assert_web(&site, &daemon, 0)?;
        Ok(())
    })
}
