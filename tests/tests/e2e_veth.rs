//! End to end on a real link: two network namespaces joined by a veth pair,
//! XDP and TC egress attached to one end, real ping, TCP and UDP across it.
//!
//! With empty maps the programs pass everything well formed, so the traffic
//! must work; the verdict counters and the programs' run counts must move
//! (they really ran), no drop counter may move, and after detaching and
//! dropping the guards nothing is left: no program attached, no namespace,
//! interface, pin or loaded program.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use aya::{
    programs::{SchedClassifier, TcAttachType},
    sys::{enable_stats, Stats as KernelStats},
};
use filter_common::{names, STAT_PASS_ND, STAT_PASS_NON_IP, STAT_PASS_UNGUARDED};
use filter_tests::{
    bpf::{program_loaded, Dataplane, Prog, Stats},
    id::TestId,
    netns::{Iface, Netns, TestNet},
    pins::PinDir,
};

const LEFT_V4: &str = "192.0.2.1";
const RIGHT_V4: &str = "192.0.2.2";
const LEFT_V6: &str = "2001:db8::1";
const RIGHT_V6: &str = "2001:db8::2";
const TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn traffic_crosses_attached_programs_and_nothing_is_left() -> Result<()> {
    let id = TestId::new("e2e_veth");
    let program_ids = run_scenario(&id)?;
    // Every guard has dropped: the namespaces (and the veth in them), the
    // pin directory and the loaded object.
    id.assert_nothing_left()?;
    wait_until("the programs are unloaded", || {
        Ok(!program_loaded(program_ids[0])? && !program_loaded(program_ids[1])?)
    })?;
    Ok(())
}

/// The guards remove everything when a test panics half-way, programs
/// attached and all.
#[test]
fn guards_clean_up_when_a_test_panics() -> Result<()> {
    let id = TestId::new("e2e_veth_panic");
    let outcome = std::panic::catch_unwind(|| build_then_panic(&id));
    ensure!(outcome.is_err(), "the scenario did not panic: {outcome:?}");
    id.assert_nothing_left()
}

fn build_then_panic(id: &TestId) -> Result<()> {
    let mut net = TestNet::new(id)?;
    let _pins = PinDir::new(id)?;
    let (left, right) = (net.netns("left")?, net.netns("right")?);
    let veth = net.veth(&left, &right)?;
    let mut dp = Dataplane::load()?;
    let iface = veth.b.name.clone();
    let _attached = right.run(|| dp.attach(&iface))??;
    ensure!(
        id.leftovers()?.len() >= 3,
        "expected two namespaces and a pin directory: {:?}",
        id.leftovers()?
    );
    panic!("deliberate panic with namespaces, a veth pair, pins and attached programs alive");
}

/// Everything that needs the guards alive; returns the program ids so the
/// caller can check they are gone once the guards are.
fn run_scenario(id: &TestId) -> Result<[u32; 2]> {
    let mut net = TestNet::new(id)?;
    let pins = PinDir::new(id)?;
    let left = net.netns("left")?;
    let right = net.netns("right")?;
    let veth = net.veth(&left, &right)?;
    net.addr(&veth.a, &format!("{LEFT_V4}/24"))?;
    net.addr(&veth.a, &format!("{LEFT_V6}/64"))?;
    net.addr(&veth.b, &format!("{RIGHT_V4}/24"))?;
    net.addr(&veth.b, &format!("{RIGHT_V6}/64"))?;

    let mut dp = Dataplane::load()?;
    let program_ids = dp.program_ids()?;
    // The counters through a pin in the test's own bpffs directory, as the
    // daemon will read them.
    let stats_pin = pins.join(names::STATS);
    dp.map(names::STATS)?
        .pin(&stats_pin)
        .context("pinning FILTER_STATS")?;
    // Run counts are kept only while run-time stats are enabled.
    let _run_stats = enable_stats(KernelStats::RunTime).context("enabling BPF run-time stats")?;

    // Attach on the right end, from a thread inside the right namespace
    // (interface names and netlink resolve there).
    let iface = veth.b.name.clone();
    let attached = right.run(|| dp.attach(&iface))??;
    assert_attached(&veth.b, program_ids, true)?;

    let stats_before = Stats::read_pinned(&stats_pin)?;
    let runs_before = run_counts(&dp)?;

    // Ping both ways round: left → right arrives through XDP on the right
    // end, and the replies leave through its TC egress.
    left.run_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", RIGHT_V4])
        .context("IPv4 ping")?;
    left.run_ok(&["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", RIGHT_V6])
        .context("IPv6 ping")?;
    tcp_exchange(&left, &right, RIGHT_V4)?;
    tcp_exchange(&left, &right, RIGHT_V6)?;
    udp_exchange(&left, &right, RIGHT_V4)?;
    udp_exchange(&left, &right, RIGHT_V6)?;

    let delta = Stats::read_pinned(&stats_pin)?.since(&stats_before);
    let runs_after = run_counts(&dp)?;
    println!("counters: {delta}");
    println!(
        "runs: xdp {} → {}, tc {} → {}",
        runs_before[0], runs_after[0], runs_before[1], runs_after[1]
    );
    ensure!(
        delta.drops().is_empty(),
        "well-formed traffic was dropped: {}",
        delta.drops()
    );
    // 2 echo requests in, 2 replies out, per family; TCP and UDP both ways.
    ensure!(
        delta.get(STAT_PASS_UNGUARDED) >= 16,
        "too few packets passed unguarded: {delta}"
    );
    ensure!(
        delta.get(STAT_PASS_NON_IP) >= 1,
        "no ARP was counted: {delta}"
    );
    ensure!(
        delta.get(STAT_PASS_ND) >= 1,
        "no neighbour discovery was counted: {delta}"
    );
    ensure!(runs_after[0] > runs_before[0], "the XDP program never ran");
    ensure!(runs_after[1] > runs_before[1], "the TC program never ran");

    // Detach in the namespace; nothing of ours may stay attached.
    right.run(|| dp.detach(attached))??;
    assert_attached(&veth.b, program_ids, false)?;
    let after_detach = Stats::read_pinned(&stats_pin)?;
    left.run_ok(&["ping", "-c", "1", "-W", "2", RIGHT_V4])
        .context("ping after detach")?;
    ensure!(
        Stats::read_pinned(&stats_pin)? == after_detach,
        "counters moved after the programs were detached"
    );

    drop(dp);
    drop(pins);
    drop(net);
    Ok(program_ids)
}

/// Run counts of the XDP and TC programs.
fn run_counts(dp: &Dataplane) -> Result<[u64; 2]> {
    Ok([
        dp.info(Prog::Xdp)?.run_count(),
        dp.info(Prog::Tc)?.run_count(),
    ])
}

/// Whether our programs are (or are no longer) attached to `iface`: the
/// XDP program id on the link, our program on tcx egress, and no clsact
/// filter on egress.
fn assert_attached(iface: &Iface, program_ids: [u32; 2], attached: bool) -> Result<()> {
    let link = iface
        .netns
        .ip(&["-d", "link", "show", "dev", &iface.name])?;
    // `prog/xdp id N` (native, what veth gets) or `prog/xdpgeneric id N`.
    let xdp_id = format!(" id {} ", program_ids[0]);
    let has_xdp = link
        .lines()
        .any(|l| l.contains("prog/xdp") && format!("{l} ").contains(&xdp_id));
    ensure!(
        has_xdp == attached,
        "XDP attached should be {attached}:\n{link}"
    );
    let name = iface.name.clone();
    let tcx = iface
        .netns
        .run(move || SchedClassifier::query_tcx(&name, TcAttachType::Egress))??;
    let tcx_ids: Vec<u32> = tcx.1.iter().map(|p| p.id()).collect();
    let tc_filters = iface
        .netns
        .run_ok(&["tc", "filter", "show", "dev", &iface.name, "egress"])?;
    if attached {
        ensure!(
            tcx_ids.contains(&program_ids[1]) || tc_filters.contains(names::PROG_TC),
            "TC program not attached: tcx {tcx_ids:?}, filters:\n{tc_filters}"
        );
    } else {
        ensure!(
            tcx_ids.is_empty(),
            "programs still on tcx egress: {tcx_ids:?}"
        );
        ensure!(
            tc_filters.trim().is_empty(),
            "clsact egress filters left:\n{tc_filters}"
        );
    }
    Ok(())
}

/// A TCP connection from `client` to a listener in `server`: a request and
/// a reply cross the link both ways.
fn tcp_exchange(client: &Netns, server: &Netns, server_addr: &str) -> Result<()> {
    let listener = server.run(|| TcpListener::bind((server_addr, 0)))??;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    thread::scope(|s| -> Result<()> {
        let serve = s.spawn(move || -> Result<()> {
            let (mut conn, _) = accept_within(&listener, TIMEOUT)?;
            conn.set_nonblocking(false)?;
            conn.set_read_timeout(Some(TIMEOUT))?;
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf)?;
            ensure!(&buf == b"ping", "server got {buf:?}");
            conn.write_all(b"pong")?;
            Ok(())
        });
        let mut conn = client.run(|| TcpStream::connect_timeout(&addr, TIMEOUT))??;
        conn.set_read_timeout(Some(TIMEOUT))?;
        conn.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf)
            .with_context(|| format!("TCP reply from {addr}"))?;
        ensure!(&buf == b"pong", "client got {buf:?}");
        match serve.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
    .with_context(|| format!("TCP exchange with {addr}"))
}

fn accept_within(listener: &TcpListener, timeout: Duration) -> Result<(TcpStream, SocketAddr)> {
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok(conn) => return Ok(conn),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).context("accepting the TCP connection"),
        }
    }
}

/// A UDP datagram from `client` to `server` and one back.
fn udp_exchange(client: &Netns, server: &Netns, server_addr: &str) -> Result<()> {
    let unspecified = if server_addr.contains(':') {
        "::"
    } else {
        "0.0.0.0"
    };
    let srv = server.run(|| UdpSocket::bind((server_addr, 0)))??;
    let cli = client.run(|| UdpSocket::bind((unspecified, 0)))??;
    let addr = srv.local_addr()?;
    srv.set_read_timeout(Some(TIMEOUT))?;
    cli.set_read_timeout(Some(TIMEOUT))?;
    cli.send_to(b"hello", addr)?;
    let mut buf = [0u8; 16];
    let (n, from) = srv
        .recv_from(&mut buf)
        .with_context(|| format!("UDP datagram to {addr}"))?;
    ensure!(&buf[..n] == b"hello", "server got {:?}", &buf[..n]);
    srv.send_to(b"olleh", from)?;
    let (n, _) = cli
        .recv_from(&mut buf)
        .with_context(|| format!("UDP reply from {addr}"))?;
    if &buf[..n] != b"olleh" {
        bail!("client got {:?}", &buf[..n]);
    }
    Ok(())
}

/// Polls `done` for up to two seconds (program ids are freed after the
/// last reference, which the kernel may drop a moment later).
fn wait_until(what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !done()? {
        if Instant::now() > deadline {
            bail!("timed out waiting until {what}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
