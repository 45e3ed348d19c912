//! Scale through the socket (issue 18, "No cliffs"), against a real
//! `filterd` and `filterctl`:
//!
//! - `a_100k_rule_diverse_document_applies_through_filterctl`: the
//!   diverse-port document (`filter::compile::synthetic`) of 100k rules,
//!   18 MB of JSON, over the old 16 MiB request limit, is applied with
//!   `filterctl apply`; then datagrams from sampled sources get, in the
//!   kernel, the verdict the reference evaluator gives them.
//! - `the_maps_grow_under_an_open_connection`: a daemon whose
//!   `FILTER_BOUNDS` starts at 1024 ranges applies diverse documents that
//!   need more (ARCHITECTURE.md, "Growing the maps"): the array grows,
//!   sampled datagrams get the evaluator's verdicts after each apply and
//!   after a restart, and a TCP connection opened before the second growth
//!   goes on after it (conntrack and links carried over).
//! - `a_request_over_the_limit_is_refused_with_the_limit`: a daemon with
//!   `--max-request-size 1K` answers an apply of a larger document with an
//!   error that names the limit, and `filterctl` shows it.
//!
//! Topology: namespace `host` runs the daemon and guards the host end of a
//! veth (tap mode) whose other end, in `inst`, holds the ENI address.
use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    time::Duration,
};

use anyhow::{bail, ensure, Context as _, Result};
use filter::{
    compile::synthetic::{Generator, DIVERSE_UDP_PORT, ENI_ADDR},
    eval::evaluate,
    ruleset::{Direction, Peer, Protocol, Ruleset},
    validate::load,
    verdict::{Packet, Verdict},
};
use filter_common::PROTO_UDP;
use filter_tests::{
    daemon::{DaemonGuard, DaemonOptions},
    id::TestId,
    netns::{Netns, TestNet},
};

const RULES: usize = 100_000;
/// How long a datagram the rules admit may take to arrive, and how long
/// one they drop is given to (wrongly) arrive.
const WAIT: Duration = Duration::from_secs(2);
/// Sampled sources per verdict.
const SAMPLES: usize = 3;
const SOURCE_PORT: u16 = 40_000;

/// Runs `body`, then checks that the test left nothing behind, even when
/// the body failed.
fn scale_test(name: &str, body: impl FnOnce(&TestId) -> Result<()>) -> Result<()> {
    let id = TestId::new(name);
    let result = body(&id);
    let left = id.assert_nothing_left();
    result.and(left)
}

/// The first address of each UDP 5001 rule's source prefix, with the
/// evaluator's verdict on a datagram from it: `SAMPLES` of each verdict.
fn samples(rs: &Ruleset) -> Result<Vec<(IpAddr, Verdict)>> {
    let dst: IpAddr = ENI_ADDR.parse()?;
    let mut out: Vec<(IpAddr, Verdict)> = Vec::new();
    let rules = rs.groups.iter().flat_map(|g| &g.rules);
    for rule in rules.filter(|r| r.protocol == Protocol::Udp && r.dst_ports.lo == DIVERSE_UDP_PORT)
    {
        let Peer::Cidr(net) = &rule.remote else {
            continue;
        };
        let pkt = Packet {
            src: net.network(),
            dst,
            proto: PROTO_UDP,
            src_port: SOURCE_PORT,
            dst_port: DIVERSE_UDP_PORT,
            icmp_type: 0,
        };
        let verdict = evaluate(rs, 0, Direction::Ingress, &pkt).decision.verdict;
        if out.iter().filter(|(_, v)| *v == verdict).count() < SAMPLES
            && !out.iter().any(|(a, _)| *a == pkt.src)
        {
            out.push((pkt.src, verdict));
        }
        if out.len() == 2 * SAMPLES {
            return Ok(out);
        }
    }
    bail!("the document has fewer than {SAMPLES} sources of each verdict: {out:?}")
}

/// Whether a datagram from `src` (an address of `host`) reaches the
/// instance's port.
fn arrives(host: &Netns, server: &UdpSocket, src: IpAddr) -> Result<bool> {
    let client = host.run(|| UdpSocket::bind(SocketAddr::new(src, SOURCE_PORT)))??;
    client.send_to(src.to_string().as_bytes(), server.local_addr()?)?;
    let mut buf = [0u8; 64];
    loop {
        match server.recv_from(&mut buf) {
            Ok((_, from)) if from.ip() == src => return Ok(true),
            // A late datagram of an earlier sample: not this one.
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(false)
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The daemon's peak RSS, from `/proc`.
fn peak_rss(daemon: &DaemonGuard) -> Result<u64> {
    let pid = daemon.pid().context("the daemon is not running")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .context("no VmHWM in /proc/PID/status")
}

#[test]
fn a_100k_rule_diverse_document_applies_through_filterctl() -> Result<()> {
    scale_test("scale_100k_diverse", |id| {
        let mut net = TestNet::new(id)?;
        let host = net.netns("host")?;
        let inst = net.netns("inst")?;
        let dev = scale_net(&mut net, &host, &inst)?;

        let text = Generator::Diverse.document(RULES, &dev).to_string();
        ensure!(
            text.len() > 16 << 20,
            "the document ({} bytes) should be over the old 16 MiB limit",
            text.len()
        );
        let rs = load(&text).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let samples = samples(&rs)?;

        // Declared after `net`: the daemon stops while its interface exists.
        let daemon = DaemonGuard::start(id, &host)?;
        let applied = daemon.apply_text(&text)?;
        ensure!(
            applied["generation"].as_u64().is_some(),
            "apply answered {applied}"
        );
        let peak = peak_rss(&daemon)?;
        eprintln!(
            "filterd peak RSS after applying {RULES} rules: {} MiB, {} B/rule",
            peak >> 20,
            peak / RULES as u64
        );

        let eni_addr: IpAddr = ENI_ADDR.parse()?;
        let server =
            inst.run(|| UdpSocket::bind(SocketAddr::new(eni_addr, DIVERSE_UDP_PORT)))??;
        server.set_read_timeout(Some(WAIT))?;
        check_samples(&host, &server, &dev, &samples)?;
        daemon.shutdown()
    })
}

/// The guarded end's address and the instance's route to the generator's
/// sources, on a fresh veth between `host` and `inst`; the veth's name on
/// the host.
fn scale_net(net: &mut TestNet, host: &Netns, inst: &Netns) -> Result<String> {
    let veth = net.veth(host, inst)?;
    // The generator's addresses (issue 18's table: sources in
    // 172.16.0.0/12), not documentation ones: they stay inside the two
    // private namespaces, so they are added with `ip` directly.
    host.ip(&["addr", "add", "10.0.1.1/24", "dev", &veth.a.name])?;
    inst.ip(&[
        "addr",
        "add",
        &format!("{ENI_ADDR}/24"),
        "dev",
        &veth.b.name,
    ])?;
    inst.ip(&["route", "add", "172.16.0.0/12", "via", "10.0.1.1"])?;
    Ok(veth.a.name.clone())
}

/// Sends a datagram from each sample's source (added to `dev` first) and
/// checks that the kernel gives the evaluator's verdict.
fn check_samples(
    host: &Netns,
    server: &UdpSocket,
    dev: &str,
    samples: &[(IpAddr, Verdict)],
) -> Result<()> {
    for &(src, expected) in samples {
        // Already there after a restart or from an earlier document.
        let _ = host.ip(&["addr", "add", &format!("{src}/32"), "dev", dev]);
        let got = arrives(host, server, src)?;
        ensure!(
            got == (expected == Verdict::Accept),
            "a datagram from {src} to port {DIVERSE_UDP_PORT}: the evaluator says {expected:?}, \
             the kernel {}",
            if got { "let it through" } else { "dropped it" }
        );
    }
    Ok(())
}

/// `FILTER_BOUNDS`'s size, read from its pin.
fn bounds_capacity(pin_dir: &Path) -> Result<u32> {
    let map = aya::maps::MapData::from_pin(pin_dir.join(filter_common::names::BOUNDS))?;
    Ok(map.info()?.max_entries())
}

/// A round trip on an open connection.
fn echo(client: &mut TcpStream, server: &mut TcpStream) -> Result<()> {
    client.write_all(b"ping")?;
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf)?;
    server.write_all(&buf)?;
    client.read_exact(&mut buf)?;
    ensure!(&buf == b"ping", "the echo came back as {buf:?}");
    Ok(())
}

#[test]
fn the_maps_grow_under_an_open_connection() -> Result<()> {
    const INITIAL: u32 = 1024;
    scale_test("scale_maps_grow", |id| {
        let mut net = TestNet::new(id)?;
        let host = net.netns("host")?;
        let inst = net.netns("inst")?;
        let dev = scale_net(&mut net, &host, &inst)?;
        let eni_addr: IpAddr = ENI_ADDR.parse()?;
        let server =
            inst.run(|| UdpSocket::bind(SocketAddr::new(eni_addr, DIVERSE_UDP_PORT)))??;
        server.set_read_timeout(Some(WAIT))?;

        let options = DaemonOptions {
            args: vec!["--bounds-entries".into(), INITIAL.to_string()],
            ..DaemonOptions::default()
        };
        let mut daemon = DaemonGuard::start_with(id, &host, options)?;
        let small = Generator::Diverse.document(500, &dev).to_string();
        daemon.apply_text(&small)?;
        let first = bounds_capacity(daemon.pin_dir())?;
        ensure!(first > INITIAL, "FILTER_BOUNDS did not grow: {first}");
        let rs = load(&small).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        check_samples(&host, &server, &dev, &samples(&rs)?)?;

        // The instance opens a connection out (basic groups let it), whose
        // replies only conntrack admits.
        let listener = host.run(|| TcpListener::bind("10.0.1.1:7000"))??;
        let mut client = inst.run(|| {
            TcpStream::connect_timeout(&"10.0.1.1:7000".parse()?, WAIT).map_err(anyhow::Error::from)
        })??;
        client.set_read_timeout(Some(WAIT))?;
        let (mut accepted, _) = listener.accept()?;
        accepted.set_read_timeout(Some(WAIT))?;
        echo(&mut client, &mut accepted)?;

        let large = Generator::Diverse.document(2_000, &dev).to_string();
        daemon.apply_text(&large)?;
        let second = bounds_capacity(daemon.pin_dir())?;
        ensure!(second > first, "FILTER_BOUNDS did not grow again: {second}");
        echo(&mut client, &mut accepted).context("the connection after the growth")?;
        let rs = load(&large).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let samples = samples(&rs)?;
        check_samples(&host, &server, &dev, &samples)?;
        ensure!(
            daemon.log().contains("maps grew"),
            "the daemon did not log the growth"
        );

        // A restart adopts the grown array and its running generation.
        daemon.restart()?;
        ensure!(bounds_capacity(daemon.pin_dir())? == second);
        check_samples(&host, &server, &dev, &samples)?;
        echo(&mut client, &mut accepted).context("the connection after a restart")?;
        daemon.shutdown()
    })
}

#[test]
fn a_request_over_the_limit_is_refused_with_the_limit() -> Result<()> {
    scale_test("scale_request_limit", |id| {
        let mut net = TestNet::new(id)?;
        let host = net.netns("host")?;
        let options = DaemonOptions {
            args: vec!["--max-request-size".into(), "1K".into()],
            ..DaemonOptions::default()
        };
        let daemon = DaemonGuard::start_with(id, &host, options)?;
        let text = Generator::Diverse.document(100, "lo").to_string();
        let path = daemon.write_file("doc", &text)?;
        let out = daemon.ctl(&["apply", &path.to_string_lossy()])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "the apply went through: {stderr}");
        for part in ["1024 bytes", "--max-request-size", "max_request_size"] {
            ensure!(
                stderr.contains(part),
                "filterctl's message does not name the limit ({part}): {stderr}"
            );
        }
        ensure!(
            daemon.generation()?.is_none(),
            "a refused request changed the generation"
        );
        daemon.shutdown()
    })
}
