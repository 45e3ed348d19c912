//! Enforcement end to end with real traffic (issue 4, "Tests"): two network
//! namespaces joined by a veth pair, the data plane attached to one end,
//! documents validated and compiled as `filterd` does and written with
//! `Dataplane::write_generation`, real TCP and UDP sockets on both sides.
//!
//! - `allowed_one_way_works_both_ways_{tap,nic}`: a connection the ingress
//!   rules allow carries data both ways; a connection from the other side,
//!   or to a port no rule opens, never gets an answer.
//! - `rule_change_cuts_or_keeps_an_established_connection`: a generation
//!   that no longer allows a connection cuts it on its next packet
//!   (`on_change: revalidate`); with `keep` it lives on while new
//!   connections are refused.
//! - `a_thousand_swaps_under_traffic_give_no_wrong_verdict`: 1,000
//!   generations, alternating two documents that both allow the traffic
//!   under different rule ids and priorities, while TCP and UDP flow both
//!   ways and a third party sends what a drop rule denies: no allowed
//!   packet is dropped (every drop counter but the third-party rule's stays
//!   at zero, and every datagram and stream record comes back), no denied
//!   packet passes.
//!
//! Topology: namespace `client` (the host side: the remote peer, and in
//! `tap` mode the host end of the instance's link) and namespace `vm` (the
//! instance, which owns the ENI addresses). Which end is guarded is the
//! attach mode's point (SPEC §2.4):
//!
//! - `tap`: the data plane sits on the host end, in `client`; the instance's
//!   namespace has nothing attached and cannot touch it, as with a VM's tap
//!   or a container's veth. Packets to the instance leave the host end (TC:
//!   ENI ingress, run in the sending thread), its replies arrive there (XDP:
//!   ENI egress, run in veth's NAPI poll).
//! - `nic`: the data plane sits on the instance's own interface, in `vm`:
//!   XDP is ENI ingress and TC is ENI egress.
//!
//! The one-way test runs in both modes. The others run in `tap`, the
//! default and the deployment the product is for; as in `nic`, every
//! connection crosses both programs (TC one way, XDP the other), so during
//! the swaps both read `FILTER_ACTIVE` while it changes.
//!
//! The group is `advanced`: egress is default-deny too, so a connection the
//! instance starts is refused unless a rule opens it, and "allowed one way"
//! means exactly that. ICMPv6 is accepted both ways (neighbour discovery
//! passes anyway; this keeps MLD reports out of the default-deny counters,
//! which the tests read). Addresses: RFC 5737 and RFC 3849 only. Every
//! namespace, interface and program is gone when a test ends, checked with
//! `TestId::assert_nothing_left`.
use std::{
    collections::{BTreeMap, HashMap},
    io::{self, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use filter::{
    compile::{compile, Compiled, SlotTable},
    dataplane::{Dataplane, GenerationMaps},
    ruleset::Ruleset,
    validate::load,
};
use filter_common::{
    stat_is_drop, CtEntry, CtKey, CT_TCP_ESTABLISHED, DIR_INGRESS, PROTO_TCP, PROTO_UDP,
    RULE_SLOT_DEFAULT_DENY, STAT_COUNT, STAT_DROP_DEFAULT, STAT_DROP_REVALIDATE, STAT_DROP_SG_RULE,
};
use filter_tests::{
    bpf::stat_label,
    id::TestId,
    netns::{Netns, TestNet},
};
use serde_json::{json, Value};

const CLIENT4: &str = "192.0.2.1";
const CLIENT6: &str = "2001:db8:0:1::1";
const VM4: &str = "192.0.2.10";
const VM6: &str = "2001:db8:0:1::10";
/// A third party on the client side that a drop rule denies.
const THIRD4: &str = "203.0.113.7";

/// The service the rules open, and one they do not.
const PORT: u16 = 8080;
const OTHER_PORT: u16 = 8081;
/// The UDP service of the swap test.
const UDP_PORT: u16 = 5353;

/// What a connection that must work gets to succeed (the machine is small
/// and shared: SYN retransmits and slow threads are fine, failure is not).
const PATIENCE: Duration = Duration::from_secs(15);
/// How long a connection that must fail is given. A dropped SYN never gets
/// an answer, so the wait only bounds the test; the drop counters then say
/// that the data plane dropped it.
const REFUSED_AFTER: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[test]
fn allowed_one_way_works_both_ways_tap() -> Result<()> {
    let id = TestId::new("e2e_enforce_one_way_tap");
    one_way(&id, Mode::Tap)?;
    id.assert_nothing_left()
}

#[test]
fn allowed_one_way_works_both_ways_nic() -> Result<()> {
    let id = TestId::new("e2e_enforce_one_way_nic");
    one_way(&id, Mode::Nic)?;
    id.assert_nothing_left()
}

#[test]
fn rule_change_cuts_or_keeps_an_established_connection() -> Result<()> {
    let id = TestId::new("e2e_enforce_rule_change");
    rule_change(&id)?;
    id.assert_nothing_left()
}

#[test]
fn a_thousand_swaps_under_traffic_give_no_wrong_verdict() -> Result<()> {
    let id = TestId::new("e2e_enforce_swaps");
    swaps(&id, 1_000)?;
    id.assert_nothing_left()
}

// ---------------------------------------------------------------------------
// Documents
// ---------------------------------------------------------------------------

/// One advanced group `sg-app` with `rules` on the ENI `eni-app` (the
/// interface `iface`, attached as `mode`), and `on_change`.
fn document(iface: &str, mode: Mode, rules: Value, on_change: &str) -> Value {
    json!({
        "vpcs": [{"id": "vpc", "cidr": "192.0.2.0/24", "ipv6_cidr": "2001:db8::/48"}],
        "vswitches": [{"id": "vsw", "vpc_id": "vpc", "cidr": "192.0.2.0/26",
                       "ipv6_cidr": "2001:db8:0:1::/64"}],
        "security_groups": [{"id": "sg-app", "vpc_id": "vpc", "type": "advanced", "rules": rules}],
        "enis": [{"id": "eni-app", "interface": iface, "attach_mode": mode.name(),
                  "vswitch_id": "vsw", "ips": [VM4, VM6], "security_group_ids": ["sg-app"]}],
        "conntrack": {"on_change": on_change},
    })
}

/// ICMPv6 both ways (see the module comment).
fn icmpv6_rules() -> [Value; 2] {
    [
        json!({"id": "icmpv6-in", "direction": "ingress", "policy": "accept", "priority": 1,
               "ip_protocol": "icmpv6", "port_range": "-1/-1", "ipv6_source_cidr_ip": "::/0"}),
        json!({"id": "icmpv6-out", "direction": "egress", "policy": "accept", "priority": 1,
               "ip_protocol": "icmpv6", "port_range": "-1/-1", "ipv6_dest_cidr_ip": "::/0"}),
    ]
}

/// TCP `port` from the client only (`web` for IPv4, `web6` for IPv6), and
/// nothing else but ICMPv6.
fn client_may_connect(port: u16) -> Value {
    let ports = format!("{port}/{port}");
    let [icmp_in, icmp_out] = icmpv6_rules();
    json!([
        {"id": "web", "direction": "ingress", "policy": "accept", "priority": 1,
         "ip_protocol": "tcp", "port_range": ports, "source_cidr_ip": format!("{CLIENT4}/32")},
        {"id": "web6", "direction": "ingress", "policy": "accept", "priority": 1,
         "ip_protocol": "tcp", "port_range": ports, "ipv6_source_cidr_ip": format!("{CLIENT6}/128")},
        icmp_in,
        icmp_out,
    ])
}

// ---------------------------------------------------------------------------
// (a) allowed one way: works both ways; the other way and other ports fail
// ---------------------------------------------------------------------------

fn one_way(id: &TestId, mode: Mode) -> Result<()> {
    let mut w = World::new(id, mode)?;
    let plan = w.apply(&document(
        &w.iface,
        mode,
        client_may_connect(PORT),
        "revalidate",
    ))?;
    let web = slot_of(&plan, "sg-app/web")?;
    let web6 = slot_of(&plan, "sg-app/web6")?;
    let start = w.dp.stats()?;

    let vm4 = sa(VM4, PORT);
    let vm6 = sa(VM6, PORT);
    let echo = EchoServer::start(&w.vm, &[vm4, vm6])?;
    // Listeners on the client side, on the same port: what the instance
    // tries to reach there must fail because of the direction alone.
    let client_side = listeners(&w.client, &[sa(CLIENT4, PORT), sa(CLIENT6, PORT)])?;
    // A listener on a port of the instance that no rule opens.
    let closed = listeners(&w.vm, &[sa(VM4, OTHER_PORT), sa(VM6, OTHER_PORT)])?;

    for (server, slot) in [(vm4, web), (vm6, web6)] {
        let mut conn = connect(&w.client, server)?;
        for i in 0..5 {
            roundtrip(&mut conn, format!("hello {i} over {server}").as_bytes())?;
        }
        // The connection is tracked under the rule that admitted it, and
        // its packets crossed the data plane both ways.
        let local = conn.local_addr()?;
        let (_, entry) = w
            .conntrack(PROTO_TCP, local, server)?
            .ok_or_else(|| anyhow!("no conntrack entry for {local} → {server}"))?;
        ensure!(
            entry.rule_slot == slot,
            "{local} → {server} is tracked under slot {} instead of {slot}",
            entry.rule_slot
        );
        ensure!(
            entry.state == CT_TCP_ESTABLISHED && entry.orig_dir == DIR_INGRESS,
            "{local} → {server}: state {} direction {}, expected an established ingress connection",
            entry.state,
            entry.orig_dir
        );
        ensure!(
            entry.packets[0] >= 6 && entry.packets[1] >= 6,
            "{local} → {server}: packets {:?}: the data did not cross both ways",
            entry.packets
        );
    }

    // The other way round: the instance connecting to the client, and the
    // client connecting to a port no rule opens.
    let attempts = [
        (&w.vm, sa(CLIENT4, PORT), "from the instance (IPv4)"),
        (&w.vm, sa(CLIENT6, PORT), "from the instance (IPv6)"),
        (&w.client, sa(VM4, OTHER_PORT), "to a closed port (IPv4)"),
        (&w.client, sa(VM6, OTHER_PORT), "to a closed port (IPv6)"),
    ];
    for (ns, target, what) in attempts {
        let denied_before = w.dp.rule_stats(RULE_SLOT_DEFAULT_DENY)?.packets;
        must_not_connect(ns, target).with_context(|| format!("connecting {what}"))?;
        let denied = w.dp.rule_stats(RULE_SLOT_DEFAULT_DENY)?.packets - denied_before;
        ensure!(
            denied >= 1,
            "connecting {what} failed, but default-deny counted nothing"
        );
    }

    // Nothing else was dropped: no allowed packet, in either direction.
    let drops = drops_since(&w.dp.stats()?, &start);
    ensure!(
        drops.keys().all(|stat| *stat == STAT_DROP_DEFAULT),
        "unexpected drops: {}",
        describe(&drops)
    );
    ensure!(echo.errors().is_empty(), "echo server: {:?}", echo.errors());
    drop((echo, client_side, closed));
    w.close()
}

// ---------------------------------------------------------------------------
// (b) rule change: revalidate cuts, keep keeps
// ---------------------------------------------------------------------------

fn rule_change(id: &TestId) -> Result<()> {
    let mode = Mode::Tap;
    let mut w = World::new(id, mode)?;
    let open = document(&w.iface, mode, client_may_connect(PORT), "revalidate");
    // The service moved: the old port is no longer open.
    let moved = document(&w.iface, mode, client_may_connect(OTHER_PORT), "revalidate");
    let moved_keep = document(&w.iface, mode, client_may_connect(OTHER_PORT), "keep");
    let server = sa(VM4, PORT);
    let echo = EchoServer::start(&w.vm, &[server])?;

    // Revalidate (the default): the next packet of the connection meets the
    // new rules, which drop it, and the entry goes.
    let plan = w.apply(&open)?;
    let web = slot_of(&plan, "sg-app/web")?;
    let mut cut = connect(&w.client, server)?;
    roundtrip(&mut cut, b"before the change")?;
    let cut_local = cut.local_addr()?;
    let received_before = echo.received_from(cut_local);
    let before = w.dp.stats()?;
    w.apply(&moved)?;
    cut.write_all(b"after the change")?;
    cut.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut buf = [0u8; 64];
    match cut.read(&mut buf) {
        Err(e) if is_timeout(&e) => {}
        Ok(n) => bail!(
            "the cut connection still carried data: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => bail!("reading on the cut connection: {e} (expected a time-out)"),
    }
    let delta = stat_delta(&w.dp.stats()?, &before);
    ensure!(
        delta[STAT_DROP_REVALIDATE as usize] == 1,
        "expected one revalidation drop, got: {}",
        describe(&drops_since(&w.dp.stats()?, &before))
    );
    ensure!(
        w.conntrack(PROTO_TCP, cut_local, server)?.is_none(),
        "the cut connection is still tracked"
    );
    ensure!(
        echo.received_from(cut_local) == received_before,
        "the server received data after the cut"
    );
    drop(cut);

    // Keep: the connection admitted under the old rules lives on; a new
    // one is refused by the new rules.
    w.apply(&open)?;
    let mut kept = connect(&w.client, server)?;
    roundtrip(&mut kept, b"before the change")?;
    let kept_local = kept.local_addr()?;
    let before = w.dp.stats()?;
    let generation = w.generation;
    w.apply(&moved_keep)?;
    for i in 0..5 {
        roundtrip(&mut kept, format!("still here {i}").as_bytes())
            .context("the connection did not survive a change with on_change: keep")?;
    }
    let (_, entry) = w
        .conntrack(PROTO_TCP, kept_local, server)?
        .ok_or_else(|| anyhow!("the kept connection is no longer tracked"))?;
    ensure!(
        entry.generation == w.generation && entry.rule_slot == web,
        "the kept connection's entry: generation {} (expected {} after {generation}), slot {} \
         (expected {web})",
        entry.generation,
        w.generation,
        entry.rule_slot
    );
    must_not_connect(&w.client, server).context("a new connection after the change")?;
    let delta = stat_delta(&w.dp.stats()?, &before);
    ensure!(
        delta[STAT_DROP_REVALIDATE as usize] == 0,
        "keep revalidated: {}",
        describe(&drops_since(&w.dp.stats()?, &before))
    );
    drop(kept);
    ensure!(echo.errors().is_empty(), "echo server: {:?}", echo.errors());
    drop(echo);
    w.close()
}

// ---------------------------------------------------------------------------
// (c) 1,000 swaps under traffic
// ---------------------------------------------------------------------------

/// Document A: everything from the client's subnet at priority 10, the
/// third party denied by a stronger rule (priority 5).
fn swap_doc_a(iface: &str) -> Value {
    let [icmp_in, icmp_out] = icmpv6_rules();
    document(
        iface,
        Mode::Tap,
        json!([
            {"id": "deny-3rd", "direction": "ingress", "policy": "drop", "priority": 5,
             "ip_protocol": "all", "port_range": "-1/-1", "source_cidr_ip": "203.0.113.0/24"},
            {"id": "allow-a", "direction": "ingress", "policy": "accept", "priority": 10,
             "ip_protocol": "all", "port_range": "-1/-1", "source_cidr_ip": "0.0.0.0/0"},
            icmp_in,
            icmp_out,
        ]),
        "revalidate",
    )
}

/// Document B: the same traffic allowed by other rules at priority 60, and
/// the third party denied at the same priority (deny wins on a tie).
fn swap_doc_b(iface: &str) -> Value {
    let [icmp_in, icmp_out] = icmpv6_rules();
    document(
        iface,
        Mode::Tap,
        json!([
            {"id": "allow-b-tcp", "direction": "ingress", "policy": "accept", "priority": 60,
             "ip_protocol": "tcp", "port_range": format!("{PORT}/{PORT}"),
             "source_cidr_ip": format!("{CLIENT4}/32")},
            {"id": "allow-b-udp", "direction": "ingress", "policy": "accept", "priority": 60,
             "ip_protocol": "udp", "port_range": format!("{UDP_PORT}/{UDP_PORT}"),
             "source_cidr_ip": "0.0.0.0/0"},
            {"id": "deny-3rd", "direction": "ingress", "policy": "drop", "priority": 60,
             "ip_protocol": "udp", "port_range": "1/65535", "source_cidr_ip": "203.0.113.0/24"},
            icmp_in,
            icmp_out,
        ]),
        "revalidate",
    )
}

fn swaps(id: &TestId, count: u32) -> Result<()> {
    let mut w = World::new(id, Mode::Tap)?;
    w.net.addr(&w.client_end, &format!("{THIRD4}/32"))?;
    let docs = [swap_doc_a(&w.iface), swap_doc_b(&w.iface)];
    let rulesets = [ruleset(&docs[0])?, ruleset(&docs[1])?];
    let first = w.apply_ruleset(&rulesets[0])?;
    let deny = slot_of(&first, "sg-app/deny-3rd")?;

    let tcp_server = sa(VM4, PORT);
    let echo = EchoServer::start(&w.vm, &[tcp_server])?;
    let udp = UdpEcho::start(&w.vm, sa("0.0.0.0", UDP_PORT), THIRD4.parse()?)?;
    let mut tcp = connect(&w.client, tcp_server)?;
    roundtrip(&mut tcp, b"warm-up")?;

    let before = w.dp.stats()?;
    let deny_before = w.dp.rule_stats(deny)?.packets;
    let udp_errors_before = [udp_errors(&w.client)?, udp_errors(&w.vm)?];

    let client = w.client.clone();
    let stop_flag = AtomicBool::new(false);
    let stop = &stop_flag;
    let (summary, swap_time) = thread::scope(|s| -> Result<_> {
        let tcp_flow = s.spawn(move || tcp_stream(tcp, stop));
        let udp_flow = s.spawn(|| udp_stream(&client, sa(VM4, UDP_PORT), stop));
        let denied = s.spawn(|| denied_stream(&client, sa(VM4, UDP_PORT), stop));
        // Let every flow get going (and be tracked) before the first swap.
        thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let swapped = (0..count).try_for_each(|i| {
            w.apply_ruleset(&rulesets[(i as usize + 1) % 2])
                .map(drop)
                .with_context(|| format!("swap {i}"))
        });
        let swap_time = started.elapsed();
        // Some traffic after the last swap: every tracked flow meets the
        // final generation once.
        thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        let join = |h: thread::ScopedJoinHandle<'_, Result<Flow>>| match h.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let flows = [join(tcp_flow), join(udp_flow), join(denied)];
        swapped?;
        let [tcp, udp, denied] = flows;
        Ok(((tcp?, udp?, denied?), swap_time))
    })?;
    let (tcp_flow, udp_flow, denied_flow) = summary;
    let after = w.dp.stats()?;
    let deny_count = w.dp.rule_stats(deny)?.packets - deny_before;
    let udp_errors_after = [udp_errors(&w.client)?, udp_errors(&w.vm)?];
    let server = udp.stop()?;
    println!(
        "{count} swaps in {swap_time:.2?} ({:.2?} each); tcp {} echoed, udp {} sent / {} at the \
         server / {} echoed, denied {} sent",
        swap_time / count,
        tcp_flow.received,
        udp_flow.sent,
        server.allowed,
        udp_flow.received,
        denied_flow.sent,
    );

    ensure!(
        w.dp.active_generation()? == 1 + count,
        "the running generation is {}, expected {}",
        w.dp.active_generation()?,
        1 + count
    );
    // A denied packet never passed...
    ensure!(
        server.denied == 0,
        "{} of {} datagrams from the denied third party reached the instance",
        server.denied,
        denied_flow.sent
    );
    // ...each one was dropped by the third-party rule, and that rule is
    // all that dropped anything: no allowed packet (TCP or UDP, either way)
    // was dropped, by a rule, a default, a revalidation or anything else.
    let drops = drops_since(&after, &before);
    ensure!(
        drops.keys().all(|stat| *stat == STAT_DROP_SG_RULE)
            && drops.get(&STAT_DROP_SG_RULE).copied().unwrap_or(0) == deny_count
            && deny_count == denied_flow.sent,
        "drops during the swaps: {} (the third-party rule counted {deny_count}, the third party \
         sent {})",
        describe(&drops),
        denied_flow.sent
    );
    // The allowed flows: the TCP stream came back whole and in order (the
    // reader checks), and every UDP datagram reached the instance and came
    // back, but for what a full socket buffer lost after the data plane
    // (counted by the namespaces' own UDP statistics, never by us).
    ensure!(
        tcp_flow.received == tcp_flow.sent && tcp_flow.received > 100,
        "TCP: {} sent, {} echoed",
        tcp_flow.sent,
        tcp_flow.received
    );
    let lost_in_sockets = [
        udp_errors_after[0] - udp_errors_before[0],
        udp_errors_after[1] - udp_errors_before[1],
    ];
    ensure!(
        server.allowed + lost_in_sockets[1] == udp_flow.sent
            && udp_flow.received + lost_in_sockets[0] == server.allowed
            && udp_flow.sent > 100,
        "UDP: {} sent, {} received by the instance, {} echoed back; socket-buffer losses \
         (client, instance): {lost_in_sockets:?}",
        udp_flow.sent,
        server.allowed,
        udp_flow.received
    );
    ensure!(
        server.duplicates == 0 && udp_flow.out_of_range == 0,
        "UDP: {} duplicates at the instance, {} unknown echoes",
        server.duplicates,
        udp_flow.out_of_range
    );
    // The flows were revalidated into the last generation, under its rule
    // (swap `i` applies document `(i + 1) % 2`).
    let expected_rule = if count.is_multiple_of(2) {
        "sg-app/allow-a"
    } else {
        "sg-app/allow-b-udp"
    };
    let final_plan = w
        .last_plan
        .as_ref()
        .ok_or_else(|| anyhow!("no generation written"))?;
    let expected_slot = slot_of(final_plan, expected_rule)?;
    let udp_entry =
        w.dp.conntrack_entries()?
            .into_iter()
            .find(|(k, _)| {
                k.proto == PROTO_UDP && (k.port_a == UDP_PORT || k.port_b == UDP_PORT) && {
                    let (a, b) = (ip_of(k, true), ip_of(k, false));
                    a != THIRD4.parse().ok() && b != THIRD4.parse().ok()
                }
            })
            .map(|(_, e)| e)
            .ok_or_else(|| anyhow!("the UDP flow is not tracked"))?;
    ensure!(
        udp_entry.generation == w.generation && udp_entry.rule_slot == expected_slot,
        "the UDP flow's entry: generation {} slot {}, expected generation {} slot {expected_slot} \
         ({expected_rule})",
        udp_entry.generation,
        udp_entry.rule_slot,
        w.generation
    );
    ensure!(echo.errors().is_empty(), "echo server: {:?}", echo.errors());
    drop(echo);
    w.close()
}

/// What one traffic thread did.
#[derive(Debug, Default)]
struct Flow {
    sent: u64,
    received: u64,
    /// Echoes of something never sent.
    out_of_range: u64,
}

/// Sends numbered 16-byte records on `conn` until `stop`, a few every
/// millisecond, while a reader checks that the echoes come back complete
/// and in order; then waits for the last echoes.
fn tcp_stream(conn: TcpStream, stop: &AtomicBool) -> Result<Flow> {
    // A connection that stalls must fail the test, not hang it.
    conn.set_write_timeout(Some(PATIENCE))?;
    let mut reader = conn.try_clone()?;
    reader.set_read_timeout(Some(Duration::from_millis(50)))?;
    let sent = AtomicU64::new(0);
    let writer_done = AtomicBool::new(false);
    thread::scope(|s| {
        let read = s.spawn(|| -> Result<u64> {
            let mut next = 0u64;
            let mut pending = Vec::new();
            let mut buf = [0u8; 4096];
            let mut tail_deadline: Option<Instant> = None;
            loop {
                if writer_done.load(Ordering::Acquire) {
                    let sent = sent.load(Ordering::Acquire);
                    if next == sent {
                        return Ok(next);
                    }
                    let deadline = *tail_deadline.get_or_insert_with(|| Instant::now() + PATIENCE);
                    ensure!(
                        Instant::now() < deadline,
                        "TCP: {next} of {sent} records came back"
                    );
                }
                match reader.read(&mut buf) {
                    Ok(0) => bail!("TCP: the connection closed after {next} records"),
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                    Err(e) if is_timeout(&e) => continue,
                    Err(e) => return Err(e).context(format!("TCP echo after {next} records")),
                }
                let whole = pending.len() / 16 * 16;
                for record in pending[..whole].chunks_exact(16) {
                    let (seq, tail) = record.split_at(8);
                    let seq = u64::from_be_bytes(seq.try_into()?);
                    ensure!(
                        seq == next && tail == b"filter!!",
                        "TCP echo: record {seq} {tail:?} where {next} was expected"
                    );
                    next += 1;
                }
                pending.drain(..whole);
            }
        });
        let mut writer = &conn;
        let mut seq = 0u64;
        let written = (|| -> Result<()> {
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..4 {
                    let mut record = [0u8; 16];
                    record[..8].copy_from_slice(&seq.to_be_bytes());
                    record[8..].copy_from_slice(b"filter!!");
                    writer.write_all(&record)?;
                    seq += 1;
                    sent.store(seq, Ordering::Release);
                }
                thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        })();
        writer_done.store(true, Ordering::Release);
        let received = match read.join() {
            Ok(r) => r?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        written.context("writing the TCP stream")?;
        Ok(Flow {
            sent: seq,
            received,
            out_of_range: 0,
        })
    })
}

/// Numbered datagrams from the client to `server` until `stop`, while the
/// echoes are counted; then waits for the last echoes.
fn udp_stream(client: &Netns, server: SocketAddr, stop: &AtomicBool) -> Result<Flow> {
    let sock = client.run(|| UdpSocket::bind(sa(CLIENT4, 0)))??;
    set_rcvbuf(&sock, 4 << 20)?;
    sock.connect(server)?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let sent = AtomicU64::new(0);
    let writer_done = AtomicBool::new(false);
    thread::scope(|s| {
        let read = s.spawn(|| -> Result<(u64, u64)> {
            let mut seen = Vec::<bool>::new();
            let (mut received, mut unknown) = (0u64, 0u64);
            let mut quiet_since: Option<Instant> = None;
            let mut buf = [0u8; 64];
            loop {
                match sock.recv(&mut buf) {
                    Ok(8) => {
                        quiet_since = None;
                        let seq = u64::from_be_bytes(buf[..8].try_into()?);
                        let index = seq as usize;
                        if seq >= sent.load(Ordering::Acquire) {
                            unknown += 1;
                            continue;
                        }
                        if seen.len() <= index {
                            seen.resize(index + 1, false);
                        }
                        if !seen[index] {
                            seen[index] = true;
                            received += 1;
                        }
                    }
                    Ok(_) => unknown += 1,
                    Err(e) if is_timeout(&e) => {
                        if writer_done.load(Ordering::Acquire) {
                            if received == sent.load(Ordering::Acquire) {
                                break;
                            }
                            // The last echoes get a generous while to come
                            // back; the caller tells a loss from a wait.
                            let since = *quiet_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > Duration::from_secs(3) {
                                break;
                            }
                        }
                    }
                    Err(e) => return Err(e).context("receiving UDP echoes"),
                }
            }
            Ok((received, unknown))
        });
        let mut seq = 0u64;
        let written = (|| -> Result<()> {
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..4 {
                    // Counted as sent before it leaves, so an echo is never
                    // "unknown" because it raced the count.
                    sent.store(seq + 1, Ordering::Release);
                    sock.send(&seq.to_be_bytes())?;
                    seq += 1;
                }
                thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        })();
        writer_done.store(true, Ordering::Release);
        written.context("sending UDP")?;
        let (received, out_of_range) = match read.join() {
            Ok(r) => r?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        Ok(Flow {
            sent: seq,
            received,
            out_of_range,
        })
    })
}

/// Datagrams from the third party to `server` until `stop`.
fn denied_stream(client: &Netns, server: SocketAddr, stop: &AtomicBool) -> Result<Flow> {
    let sock = client.run(|| UdpSocket::bind(sa(THIRD4, 0)))??;
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        sock.send_to(b"denied!!", server)?;
        sent += 1;
        thread::sleep(Duration::from_millis(2));
    }
    Ok(Flow {
        sent,
        ..Flow::default()
    })
}

/// `InErrors` (which includes `RcvbufErrors`) of the UDP statistics of a
/// namespace: datagrams the stack received but could not queue.
fn udp_errors(ns: &Netns) -> Result<u64> {
    let snmp = ns.run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))??;
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        bail!("no Udp lines in /proc/net/snmp");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "InErrors")
        .ok_or_else(|| anyhow!("no Udp InErrors in /proc/net/snmp"))?
        .1
        .parse()
        .context("Udp InErrors")
}

fn set_rcvbuf(sock: &UdpSocket, bytes: usize) -> Result<()> {
    nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::RcvBuf, &bytes)
        .context("SO_RCVBUF")
}

/// What the UDP server saw.
#[derive(Debug, Default)]
struct UdpSeen {
    allowed: u64,
    duplicates: u64,
    denied: u64,
}

/// A UDP server in the instance: echoes what the client sends, counts (and
/// never answers) what the denied third party sends.
struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<UdpSeen>>>,
}

impl UdpEcho {
    fn start(ns: &Netns, addr: SocketAddr, denied: IpAddr) -> Result<Self> {
        let sock = ns.run(|| UdpSocket::bind(addr))??;
        set_rcvbuf(&sock, 4 << 20)?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || -> Result<UdpSeen> {
            let mut seen = UdpSeen::default();
            let mut numbers = Vec::<bool>::new();
            let mut buf = [0u8; 64];
            while !flag.load(Ordering::Relaxed) {
                let (n, from) = match sock.recv_from(&mut buf) {
                    Ok(got) => got,
                    Err(e) if is_timeout(&e) => continue,
                    Err(e) => return Err(e).context("UDP server"),
                };
                if from.ip() == denied {
                    seen.denied += 1;
                    continue;
                }
                if n != 8 {
                    continue;
                }
                let index = u64::from_be_bytes(buf[..8].try_into()?) as usize;
                if numbers.len() <= index {
                    numbers.resize(index + 1, false);
                }
                if numbers[index] {
                    seen.duplicates += 1;
                } else {
                    numbers[index] = true;
                    seen.allowed += 1;
                }
                sock.send_to(&buf[..n], from).context("UDP echo")?;
            }
            Ok(seen)
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    fn stop(mut self) -> Result<UdpSeen> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(seen)) => seen,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => bail!("the UDP server was already stopped"),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------
// The world: namespaces, the data plane, generations
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Tap,
    Nic,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Tap => "tap",
            Self::Nic => "nic",
        }
    }
}

/// Two namespaces, a veth pair with the test addresses, and the data plane
/// attached to the guarded end. Dropping it detaches the programs (the
/// data plane goes first) and deletes the namespaces.
struct World {
    dp: Dataplane,
    slots: SlotTable,
    generation: u32,
    last_plan: Option<Compiled>,
    /// The guarded interface (the ENI's `interface`) and its index.
    iface: String,
    ifindex: u32,
    client: Netns,
    vm: Netns,
    client_end: filter_tests::netns::Iface,
    net: TestNet,
}

impl World {
    fn new(id: &TestId, mode: Mode) -> Result<Self> {
        let mut net = TestNet::new(id)?;
        let client = net.netns("client")?;
        let vm = net.netns("vm")?;
        let veth = net.veth(&client, &vm)?;
        net.addr(&veth.a, &format!("{CLIENT4}/24"))?;
        net.addr(&veth.a, &format!("{CLIENT6}/64"))?;
        net.addr(&veth.b, &format!("{VM4}/24"))?;
        net.addr(&veth.b, &format!("{VM6}/64"))?;
        let guarded = match mode {
            Mode::Tap => veth.a.clone(),
            Mode::Nic => veth.b.clone(),
        };
        let mut dp = Dataplane::load(None).context("loading the data plane")?;
        let name = guarded.name.clone();
        guarded
            .netns
            .run(|| dp.attach(&name))?
            .with_context(|| format!("attaching to {name}"))?;
        let ifindex = guarded.index()?;
        Ok(Self {
            dp,
            slots: SlotTable::new(),
            generation: 0,
            last_plan: None,
            iface: guarded.name,
            ifindex,
            client,
            vm,
            client_end: veth.a,
            net,
        })
    }

    /// Validates `doc` and makes it the next generation.
    fn apply(&mut self, doc: &Value) -> Result<Compiled> {
        let rs = ruleset(doc)?;
        self.apply_ruleset(&rs)
    }

    /// Compiles `rs` as the next generation and writes it, as `filterd`
    /// does: fresh counter slots zeroed, then `write_generation`.
    fn apply_ruleset(&mut self, rs: &Ruleset) -> Result<Compiled> {
        let generation = self.generation + 1;
        let (iface, ifindex) = (self.iface.as_str(), self.ifindex);
        let ifindex_of = |name: &str| (name == iface).then_some(ifindex);
        let plan = compile(rs, generation, &ifindex_of, &mut self.slots)
            .map_err(|e| anyhow!("compiling generation {generation}: {e}"))?;
        for slot in &plan.fresh_slots {
            self.dp.reset_rule_stats(*slot)?;
        }
        let summary = self
            .dp
            .write_generation(&GenerationMaps::from(&plan))
            .with_context(|| format!("writing generation {generation}"))?;
        if let Some(e) = summary.cleanup_error {
            bail!("generation {generation}: removing the previous one failed: {e}");
        }
        self.generation = generation;
        self.last_plan = Some(plan.clone());
        Ok(plan)
    }

    /// The conntrack entry of the `proto` connection between `a` and `b`.
    fn conntrack(
        &self,
        proto: u8,
        a: SocketAddr,
        b: SocketAddr,
    ) -> Result<Option<(CtKey, CtEntry)>> {
        Ok(self.dp.conntrack_entries()?.into_iter().find(|(k, _)| {
            let ends = [(ip_of(k, true), k.port_a), (ip_of(k, false), k.port_b)];
            k.ifindex == self.ifindex
                && k.proto == proto
                && ends.contains(&(Some(a.ip()), a.port()))
                && ends.contains(&(Some(b.ip()), b.port()))
        }))
    }

    /// Detaches and removes everything, reporting a failure to detach.
    fn close(self) -> Result<()> {
        let Self { mut dp, net, .. } = self;
        dp.detach_all().context("detaching")?;
        drop(dp);
        drop(net);
        Ok(())
    }
}

fn ruleset(doc: &Value) -> Result<Ruleset> {
    load(&doc.to_string()).map_err(|e| anyhow!("the test's document does not validate: {e:?}"))
}

/// The counter slot of the rule (or other reason) `reason` in `plan`.
fn slot_of(plan: &Compiled, reason: &str) -> Result<u32> {
    plan.slot_reasons
        .iter()
        .find(|(_, r)| r.to_string() == reason)
        .map(|(slot, _)| *slot)
        .ok_or_else(|| anyhow!("no counter slot for {reason}"))
}

/// An endpoint address of a conntrack key (`a` or `b`).
fn ip_of(k: &CtKey, a: bool) -> Option<IpAddr> {
    let addr = if a { k.addr_a } else { k.addr_b };
    match k.family {
        filter_common::FAMILY_V4 => Some(IpAddr::from([addr[0], addr[1], addr[2], addr[3]])),
        filter_common::FAMILY_V6 => Some(IpAddr::from(addr)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------

fn stat_delta(
    after: &[u64; STAT_COUNT as usize],
    before: &[u64; STAT_COUNT as usize],
) -> [u64; STAT_COUNT as usize] {
    let mut out = [0u64; STAT_COUNT as usize];
    for (o, (a, b)) in out.iter_mut().zip(after.iter().zip(before)) {
        *o = a.wrapping_sub(*b);
    }
    out
}

/// The drop counters that moved, by `STAT_*` index.
fn drops_since(
    after: &[u64; STAT_COUNT as usize],
    before: &[u64; STAT_COUNT as usize],
) -> BTreeMap<u32, u64> {
    (0u32..)
        .zip(stat_delta(after, before))
        .filter(|(stat, delta)| stat_is_drop(*stat) && *delta != 0)
        .collect()
}

fn describe(drops: &BTreeMap<u32, u64>) -> String {
    if drops.is_empty() {
        return "none".into();
    }
    drops
        .iter()
        .map(|(stat, n)| format!("{} +{n}", stat_label(*stat)))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------

fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])), port)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A TCP connection from `ns` to `server` that must succeed.
fn connect(ns: &Netns, server: SocketAddr) -> Result<TcpStream> {
    let conn = ns
        .run(|| TcpStream::connect_timeout(&server, PATIENCE))?
        .with_context(|| format!("connecting to {server} from {}", ns.name()))?;
    conn.set_read_timeout(Some(PATIENCE))?;
    conn.set_nodelay(true)?;
    Ok(conn)
}

/// A TCP connection from `ns` to `target` that must fail for want of an
/// answer: the SYN was dropped (a refusal would mean it got through).
fn must_not_connect(ns: &Netns, target: SocketAddr) -> Result<()> {
    match ns.run(|| TcpStream::connect_timeout(&target, REFUSED_AFTER))? {
        Ok(conn) => bail!(
            "{} connected to {target} from {}",
            conn.local_addr()?,
            ns.name()
        ),
        Err(e) if is_timeout(&e) => Ok(()),
        Err(e) => bail!("connecting to {target}: {e} (expected no answer at all)"),
    }
}

/// The peer reset or closed the connection.
fn gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// Sends `msg` and reads the echo.
fn roundtrip(conn: &mut TcpStream, msg: &[u8]) -> Result<()> {
    conn.write_all(msg)?;
    let mut back = vec![0u8; msg.len()];
    let peer = conn.peer_addr()?;
    conn.read_exact(&mut back)
        .with_context(|| format!("reading the echo from {peer}"))?;
    ensure!(back == msg, "echo {back:?} for {msg:?}");
    Ok(())
}

/// Bound listeners that never accept (a SYN that reaches one is answered
/// by the kernel).
fn listeners(ns: &Netns, addrs: &[SocketAddr]) -> Result<Vec<TcpListener>> {
    addrs
        .iter()
        .map(|a| {
            ns.run(|| TcpListener::bind(a))?
                .with_context(|| format!("listening on {a}"))
        })
        .collect()
}

/// A TCP echo server in a namespace: every connection gets back what it
/// sends. Counts bytes per peer; stops (and joins its threads) on drop.
struct EchoServer {
    stop: Arc<AtomicBool>,
    received: Arc<Mutex<HashMap<SocketAddr, u64>>>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoServer {
    fn start(ns: &Netns, addrs: &[SocketAddr]) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(HashMap::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for listener in listeners(ns, addrs)? {
            listener.set_nonblocking(true)?;
            let (stop, received, errors) = (
                Arc::clone(&stop),
                Arc::clone(&received),
                Arc::clone(&errors),
            );
            threads.push(thread::spawn(move || {
                accept_loop(&listener, &stop, &received, &errors)
            }));
        }
        Ok(Self {
            stop,
            received,
            errors,
            threads,
        })
    }

    /// Bytes received from `peer` so far.
    fn received_from(&self, peer: SocketAddr) -> u64 {
        self.received
            .lock()
            .map(|m| m.get(&peer).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    stop: &AtomicBool,
    received: &Mutex<HashMap<SocketAddr, u64>>,
    errors: &Mutex<Vec<String>>,
) {
    thread::scope(|s| {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((conn, peer)) => {
                    s.spawn(move || {
                        if let Err(e) = echo(conn, peer, stop, received) {
                            if let Ok(mut errors) = errors.lock() {
                                errors.push(format!("{peer}: {e:#}"));
                            }
                        }
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => {
                    if let Ok(mut errors) = errors.lock() {
                        errors.push(format!("accept: {e}"));
                    }
                    return;
                }
            }
        }
    });
}

fn echo(
    mut conn: TcpStream,
    peer: SocketAddr,
    stop: &AtomicBool,
    received: &Mutex<HashMap<SocketAddr, u64>>,
) -> Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(Duration::from_millis(50)))?;
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let n = match conn.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if is_timeout(&e) => continue,
            // A connection the test cut and closed may come back later as
            // a reset: not the server's error.
            Err(e) if gone(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if let Ok(mut m) = received.lock() {
            *m.entry(peer).or_default() += n as u64;
        }
        match conn.write_all(&buf[..n]) {
            Err(e) if gone(&e) => return Ok(()),
            other => other?,
        }
    }
    Ok(())
}
