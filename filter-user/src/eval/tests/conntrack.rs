//! One test per clause of SPEC §3.1 (and the pipeline order around it).
//! Rule sets are documents, validated as `filterd` would; the world is
//! one VPC `192.0.2.0/24` and `2001:db8::/48`, one vSwitch `192.0.2.0/25`
//! and `2001:db8:0:1::/64`, one ENI `192.0.2.10` / `2001:db8:0:1::10` on
//! interface `tap0`. Remotes are outside the vSwitch (`198.51.100.0/24`,
//! `203.0.113.0/24`, `2001:db8:ff::/64`) unless a test says otherwise.
#![expect(clippy::unwrap_used, reason = "test code")]

use std::net::{IpAddr, SocketAddr};

use filter_common::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use serde_json::{json, Value};

use crate::{
    eval::{conntrack::*, evaluate},
    ruleset::{ConntrackConfig, Direction, Ruleset},
    validate::load,
    verdict::{Packet, Reason, Verdict},
};

const IN: Direction = Direction::Ingress;
const OUT: Direction = Direction::Egress;
const LOCAL: &str = "192.0.2.10";
const S: u64 = NS_PER_S;

/// A rule set with the ENI in one basic group (inner access off) with
/// `rules`, an ACL with `acl` (`null`: none), and `conntrack`.
fn ruleset(rules: Value, acl: Value, conntrack: Value) -> Ruleset {
    ruleset_of_kind("basic", rules, acl, conntrack)
}

fn ruleset_of_kind(kind: &str, rules: Value, acl: Value, conntrack: Value) -> Ruleset {
    let mut vswitch = json!({"id": "vsw", "vpc_id": "vpc", "cidr": "192.0.2.0/25",
                             "ipv6_cidr": "2001:db8:0:1::/64"});
    let mut doc = json!({
        "vpcs": [{"id": "vpc", "cidr": "192.0.2.0/24", "ipv6_cidr": "2001:db8::/48"}],
        "security_groups": [{"id": "sg", "vpc_id": "vpc", "type": kind,
                             "inner_access_policy": "drop", "rules": rules}],
        "enis": [{"id": "eni", "interface": "tap0", "vswitch_id": "vsw",
                  "ips": [LOCAL, "2001:db8:0:1::10"], "security_group_ids": ["sg"]}],
    });
    if !acl.is_null() {
        vswitch["network_acl_id"] = json!("acl");
        let mut acl = acl;
        acl["id"] = json!("acl");
        doc["network_acls"] = json!([acl]);
    }
    doc["vswitches"] = json!([vswitch]);
    if !conntrack.is_null() {
        doc["conntrack"] = conntrack;
    }
    load(&doc.to_string()).unwrap_or_else(|e| panic!("test document: {e:?}\n{doc:#}"))
}

/// Egress TCP 80 and UDP 53 and ICMP echo to anyone; ingress TCP 22 from
/// anyone. Everything else: the defaults (basic: egress accepts).
fn web_client() -> Ruleset {
    ruleset(
        json!([
            {"id": "ssh", "direction": "ingress", "policy": "accept", "ip_protocol": "tcp",
             "port_range": "22/22", "source_cidr_ip": "0.0.0.0/0"},
            {"id": "ssh6", "direction": "ingress", "policy": "accept", "ip_protocol": "tcp",
             "port_range": "22/22", "ipv6_source_cidr_ip": "::/0"},
        ]),
        Value::Null,
        Value::Null,
    )
}

fn sock(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn addr(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn ported(proto: u8, src: &str, dst: &str) -> Packet {
    let (src, dst) = (sock(src), sock(dst));
    Packet {
        src: src.ip(),
        dst: dst.ip(),
        proto,
        src_port: src.port(),
        dst_port: dst.port(),
        icmp_type: 0,
    }
}

fn tcp(src: &str, dst: &str, flags: u8) -> Datagram {
    Datagram::new(ported(PROTO_TCP, src, dst))
        .tcp_flags(flags)
        .bytes(40)
}

fn udp(src: &str, dst: &str) -> Datagram {
    Datagram::new(ported(PROTO_UDP, src, dst)).bytes(28)
}

fn icmp(src: &str, dst: &str, icmp_type: u8) -> Packet {
    let v6 = addr(src).is_ipv6();
    Packet {
        src: addr(src),
        dst: addr(dst),
        proto: if v6 { PROTO_ICMPV6 } else { PROTO_ICMP },
        src_port: 0,
        dst_port: 0,
        icmp_type,
    }
}

fn echo(src: &str, dst: &str, icmp_type: u8, id: u16) -> Datagram {
    Datagram::new(icmp(src, dst, icmp_type))
        .echo_id(id)
        .bytes(84)
}

/// An ICMP error from `src` to `dst` quoting `quoted`.
fn error(src: &str, dst: &str, icmp_type: u8, quoted: &Datagram) -> Datagram {
    Datagram::new(icmp(src, dst, icmp_type))
        .quote(Quote {
            header: quoted.header,
            icmp_id: quoted.icmp_id,
        })
        .bytes(56)
}

/// Runs `d` through `t` at the ENI of `rs` in generation 1.
fn run(t: &mut Tracker, rs: &Ruleset, dir: Direction, d: &Datagram, now: u64) -> Outcome {
    t.process_detailed(rs, 1, 0, dir, d, now)
}

fn key_of(d: &Datagram) -> ConnKey {
    ConnKey::of("tap0", &d.header, d.ct_ports()).0
}

fn rule(id: &str) -> Reason {
    Reason::Rule { id: id.to_owned() }
}

#[track_caller]
fn expect(out: &Outcome, step: Step, reason: &Reason) {
    let verdict = if stat_is_accept(step) {
        Verdict::Accept
    } else {
        Verdict::Drop
    };
    assert_eq!(
        (out.step, &out.decision.verdict, &out.decision.reason),
        (step, &verdict, reason),
        "got {out:?}"
    );
}

fn stat_is_accept(step: Step) -> bool {
    !filter_common::stat_is_drop(step.stat())
}

#[test]
fn first_packets_decide_as_the_stateless_evaluator() {
    let rs = ruleset(
        json!([
            {"id": "web", "direction": "ingress", "policy": "accept", "priority": 5, "ip_protocol": "tcp",
             "port_range": "80/80", "source_cidr_ip": "0.0.0.0/0"},
            {"id": "block", "direction": "ingress", "policy": "drop", "priority": 1, "ip_protocol": "tcp",
             "port_range": "80/80", "source_cidr_ip": "203.0.113.0/24"},
            {"id": "no-dns", "direction": "egress", "policy": "drop", "ip_protocol": "udp",
             "port_range": "53/53", "dest_cidr_ip": "0.0.0.0/0"},
        ]),
        json!({"ingress": [{"name": "no-gre", "policy": "drop", "protocol": "gre", "source_cidr_ip": "0.0.0.0/0"},
                           {"name": "all", "policy": "accept", "protocol": "all", "source_cidr_ip": "0.0.0.0/0"}],
               "egress": [{"name": "no-ssh", "policy": "drop", "protocol": "tcp", "port": "22/22",
                           "destination_cidr_ip": "0.0.0.0/0"},
                          {"name": "all", "policy": "accept", "protocol": "all",
                           "destination_cidr_ip": "0.0.0.0/0"}]}),
        Value::Null,
    );
    let gre = |src: &str, dst: &str| {
        Datagram::new(Packet {
            src: addr(src),
            dst: addr(dst),
            proto: 47,
            src_port: 0,
            dst_port: 0,
            icmp_type: 0,
        })
    };
    let cases = [
        (
            IN,
            tcp("198.51.100.1:40000", "192.0.2.10:80", tcp_flags::SYN),
            Step::AcceptNew,
        ),
        (
            IN,
            tcp("203.0.113.1:40000", "192.0.2.10:80", tcp_flags::SYN),
            Step::DropSgRule,
        ),
        (
            IN,
            tcp("198.51.100.1:40000", "192.0.2.10:81", tcp_flags::SYN),
            Step::DropDefault,
        ),
        (IN, gre("198.51.100.1", LOCAL), Step::DropNacl),
        (
            OUT,
            udp("192.0.2.10:5000", "198.51.100.1:53"),
            Step::DropSgRule,
        ),
        (
            OUT,
            udp("192.0.2.10:5000", "198.51.100.1:54"),
            Step::AcceptNew,
        ),
        (
            OUT,
            tcp("192.0.2.10:5000", "198.51.100.1:22", tcp_flags::SYN),
            Step::DropNacl,
        ),
        // Inside the vSwitch: the ACL is skipped.
        (
            OUT,
            tcp("192.0.2.10:5000", "192.0.2.11:22", tcp_flags::SYN),
            Step::AcceptNew,
        ),
        (OUT, gre(LOCAL, "198.51.100.1"), Step::AcceptNew),
        (IN, echo("198.51.100.1", LOCAL, 8, 7), Step::DropDefault),
    ];
    for (dir, d, step) in cases {
        let mut t = Tracker::new();
        let out = run(&mut t, &rs, dir, &d, 0);
        let want = evaluate(&rs, 0, dir, &d.header).decision;
        assert_eq!(out.decision, want, "{dir:?} {:?}", d.header);
        assert_eq!(out.step, step, "{dir:?} {:?}", d.header);
        // An entry exactly when a new connection was accepted.
        assert_eq!(t.connections().len(), usize::from(step == Step::AcceptNew));
    }
}

#[test]
fn neighbour_discovery_passes_and_is_not_tracked() {
    let rs = ruleset(json!([]), json!({"ingress": [], "egress": []}), Value::Null);
    let mut t = Tracker::new();
    for ty in 133..=137 {
        let d = Datagram::new(icmp("2001:db8:ff::1", "2001:db8:0:1::10", ty));
        expect(
            &run(&mut t, &rs, IN, &d, 0),
            Step::PassNeighbourDiscovery,
            &Reason::Pass,
        );
    }
    // 128 (echo request) is not ND: the empty ACL drops it.
    let d = echo("2001:db8:ff::1", "2001:db8:0:1::10", 128, 1);
    expect(
        &run(&mut t, &rs, IN, &d, 0),
        Step::DropNacl,
        &Reason::NaclDefault { acl: "acl".into() },
    );
    assert!(t.connections().is_empty());
}

#[test]
fn tcp_reply_is_tracked_and_moves_syn_established_closing() {
    let rs = web_client();
    let mut t = Tracker::new();
    let syn = tcp("192.0.2.10:40000", "198.51.100.1:80", tcp_flags::SYN);
    expect(
        &run(&mut t, &rs, OUT, &syn, 0),
        Step::AcceptNew,
        &Reason::DefaultAccept,
    );
    let key = key_of(&syn);
    let conn = t.get(&key).unwrap().clone();
    assert_eq!(conn.state, ConnState::TcpSyn);
    assert_eq!(
        (conn.orig_direction, conn.reason.clone(), conn.generation),
        (OUT, Reason::DefaultAccept, 1)
    );
    assert_eq!((conn.packets, conn.bytes), ([1, 0], [40, 0]));

    // A retransmitted SYN stays SYN.
    expect(
        &run(&mut t, &rs, OUT, &syn, S),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
    assert_eq!(t.get(&key).unwrap().state, ConnState::TcpSyn);

    // The reply: ingress default-deny, but tracked.
    let synack = tcp(
        "198.51.100.1:80",
        "192.0.2.10:40000",
        tcp_flags::SYN | tcp_flags::ACK,
    );
    expect(
        &run(&mut t, &rs, IN, &synack, 2 * S),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
    let conn = t.get(&key).unwrap();
    assert_eq!(conn.state, ConnState::TcpEstablished);
    assert_eq!((conn.packets, conn.bytes), ([2, 1], [80, 40]));
    assert_eq!(conn.tcp_flags, tcp_flags::SYN | tcp_flags::ACK);
    assert_eq!(
        conn.dir_tcp_flags,
        [tcp_flags::SYN, tcp_flags::SYN | tcp_flags::ACK]
    );

    let fin = tcp(
        "198.51.100.1:80",
        "192.0.2.10:40000",
        tcp_flags::FIN | tcp_flags::ACK,
    );
    expect(
        &run(&mut t, &rs, IN, &fin, 3 * S),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
    // SPEC §3.1 half-close: one FIN keeps the established timeout, so the
    // instance may go on sending after 15 s of silence (past
    // tcp_closing_s, 10 s).
    let conn = t.get(&key).unwrap();
    assert_eq!(conn.state, ConnState::TcpEstablished);
    assert_eq!(conn.ct_flags, filter_common::CT_FLAG_FIN_REPLY);
    let data = tcp("192.0.2.10:40000", "198.51.100.1:80", tcp_flags::ACK);
    expect(
        &run(&mut t, &rs, OUT, &data, 18 * S),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
    let ack = tcp("198.51.100.1:80", "192.0.2.10:40000", tcp_flags::ACK);
    expect(
        &run(&mut t, &rs, IN, &ack, 33 * S),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
    // The instance's FIN closes the other half: closing starts.
    let our_fin = tcp(
        "192.0.2.10:40000",
        "198.51.100.1:80",
        tcp_flags::FIN | tcp_flags::ACK,
    );
    expect(
        &run(&mut t, &rs, OUT, &our_fin, 34 * S),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
    assert_eq!(t.get(&key).unwrap().state, ConnState::TcpClosing);

    // Closing lasts tcp_closing_s (10 s) of idleness, then the reply is a
    // first packet again, and inbound is default-deny.
    expect(
        &run(&mut t, &rs, IN, &ack, 44 * S),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
    expect(
        &run(&mut t, &rs, IN, &ack, 54 * S + 1),
        Step::DropDefault,
        &Reason::DefaultDeny,
    );
    assert!(
        t.get(&key).is_none(),
        "the expired entry is removed when looked up"
    );
}

#[test]
fn an_rst_starts_closing_at_once() {
    let rs = web_client();
    let mut t = Tracker::new();
    let syn = tcp("192.0.2.10:40000", "198.51.100.1:80", tcp_flags::SYN);
    run(&mut t, &rs, OUT, &syn, 0);
    let rst = tcp("198.51.100.1:80", "192.0.2.10:40000", tcp_flags::RST);
    expect(
        &run(&mut t, &rs, IN, &rst, S),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
    assert_eq!(t.get(&key_of(&syn)).unwrap().state, ConnState::TcpClosing);
}

#[test]
fn first_tcp_state_follows_the_flags() {
    let rs = web_client();
    for (flags, state) in [
        (tcp_flags::SYN, Some(ConnState::TcpSyn)),
        (
            tcp_flags::SYN | tcp_flags::ACK,
            Some(ConnState::TcpEstablished),
        ),
        (tcp_flags::SYN | tcp_flags::RST, Some(ConnState::TcpClosing)),
        // A FIN is half a close: the other way has not sent one.
        (tcp_flags::SYN | tcp_flags::FIN, Some(ConnState::TcpSyn)),
        // Without SYN: accepted by the rules, tracked by nothing.
        (tcp_flags::ACK, None),
        (0, None),
        (tcp_flags::FIN | tcp_flags::ACK, None),
        (tcp_flags::RST, None),
    ] {
        let mut t = Tracker::new();
        let d = tcp("192.0.2.10:40000", "198.51.100.1:80", flags);
        let out = run(&mut t, &rs, OUT, &d, 0);
        assert_eq!(out.decision.verdict, Verdict::Accept, "flags {flags:#x}");
        assert_eq!(
            t.get(&key_of(&d)).map(|c| c.state),
            state,
            "flags {flags:#x}"
        );
    }
}

#[test]
fn tcp_timeouts_come_from_the_document() {
    let rs = ruleset(
        json!([]),
        Value::Null,
        json!({"tcp_syn_s": 5, "tcp_established_s": 50, "tcp_closing_s": 1}),
    );
    let mut t = Tracker::new();
    let syn = tcp("192.0.2.10:40000", "198.51.100.1:80", tcp_flags::SYN);
    let synack = tcp(
        "198.51.100.1:80",
        "192.0.2.10:40000",
        tcp_flags::SYN | tcp_flags::ACK,
    );
    run(&mut t, &rs, OUT, &syn, 0);
    // SYN idle exactly 5 s: still there; a moment more: gone.
    expect(
        &run(&mut t, &rs, IN, &synack, 5 * S),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
    let ack = tcp("198.51.100.1:80", "192.0.2.10:40000", tcp_flags::ACK);
    // Established: 50 s.
    expect(
        &run(&mut t, &rs, IN, &ack, 55 * S),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
    expect(
        &run(&mut t, &rs, IN, &ack, 105 * S + 1),
        Step::DropDefault,
        &Reason::DefaultDeny,
    );

    let mut t = Tracker::new();
    run(&mut t, &rs, OUT, &syn, 0);
    expect(
        &run(&mut t, &rs, IN, &synack, 5 * S + 1),
        Step::DropDefault,
        &Reason::DefaultDeny,
    );
}

#[test]
fn udp_is_one_way_then_a_stream_with_its_own_timeout() {
    let rs = ruleset(
        json!([]),
        Value::Null,
        json!({"udp_s": 30, "udp_stream_s": 180}),
    );
    let mut t = Tracker::new();
    let query = udp("192.0.2.10:5353", "198.51.100.1:53");
    let answer = udp("198.51.100.1:53", "192.0.2.10:5353");
    expect(
        &run(&mut t, &rs, OUT, &query, 0),
        Step::AcceptNew,
        &Reason::DefaultAccept,
    );
    let key = key_of(&query);
    assert_eq!(t.get(&key).unwrap().state, ConnState::Udp);
    // More queries: still one-way.
    run(&mut t, &rs, OUT, &query, 10 * S);
    assert_eq!(t.get(&key).unwrap().state, ConnState::Udp);
    expect(
        &run(&mut t, &rs, IN, &answer, 20 * S),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
    assert_eq!(t.get(&key).unwrap().state, ConnState::UdpStream);
    // A stream lives 180 s idle, not 30.
    expect(
        &run(&mut t, &rs, IN, &answer, 190 * S),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
    expect(
        &run(&mut t, &rs, IN, &answer, 371 * S),
        Step::DropDefault,
        &Reason::DefaultDeny,
    );

    // One-way: 30 s.
    let mut t = Tracker::new();
    run(&mut t, &rs, OUT, &query, 0);
    expect(
        &run(&mut t, &rs, IN, &answer, 31 * S),
        Step::DropDefault,
        &Reason::DefaultDeny,
    );
}

#[test]
fn icmp_echo_is_tracked_by_its_identifier() {
    let rs = web_client();
    let mut t = Tracker::new();
    expect(
        &run(&mut t, &rs, OUT, &echo(LOCAL, "198.51.100.1", 8, 7), 0),
        Step::AcceptNew,
        &Reason::DefaultAccept,
    );
    expect(
        &run(&mut t, &rs, IN, &echo("198.51.100.1", LOCAL, 0, 7), 0),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
    expect(
        &run(&mut t, &rs, IN, &echo("198.51.100.1", LOCAL, 0, 8), 0),
        Step::DropDefault,
        &Reason::DefaultDeny,
    );
    // Another host's reply with the same id is another connection.
    expect(
        &run(&mut t, &rs, IN, &echo("198.51.100.2", LOCAL, 0, 7), 0),
        Step::DropDefault,
        &Reason::DefaultDeny,
    );
    // IPv6 alike.
    let (l6, r6) = ("2001:db8:0:1::10", "2001:db8:ff::1");
    expect(
        &run(&mut t, &rs, OUT, &echo(l6, r6, 128, 9), 0),
        Step::AcceptNew,
        &Reason::DefaultAccept,
    );
    expect(
        &run(&mut t, &rs, IN, &echo(r6, l6, 129, 9), 0),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
    let conn = t.get(&key_of(&echo(l6, r6, 128, 9))).unwrap();
    assert_eq!((conn.state, conn.packets), (ConnState::Icmp, [1, 1]));
    // ICMP other than echo between two hosts: one entry, ports 0.
    let ts = Datagram::new(icmp(LOCAL, "198.51.100.1", 13));
    run(&mut t, &rs, OUT, &ts, 0);
    assert_eq!(key_of(&ts).a.1, 0);
    expect(
        &run(
            &mut t,
            &rs,
            IN,
            &Datagram::new(icmp("198.51.100.1", LOCAL, 14)),
            0,
        ),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
}

#[test]
fn icmp_errors_quoting_a_tracked_connection_are_related() {
    let rs = web_client();
    let mut t = Tracker::new();
    let query = udp("192.0.2.10:5353", "198.51.100.1:53");
    run(&mut t, &rs, OUT, &query, 0);
    let before = t.get(&key_of(&query)).unwrap().clone();

    // Port unreachable from the server, and time exceeded from a router.
    for (src, ty) in [
        ("198.51.100.1", 3),
        ("203.0.113.9", 11),
        ("203.0.113.9", 12),
    ] {
        let err = error(src, LOCAL, ty, &query);
        expect(
            &run(&mut t, &rs, IN, &err, S),
            Step::AcceptRelated,
            &Reason::Tracked,
        );
    }
    // Related errors neither create entries nor touch the connection's.
    assert_eq!(t.connections().len(), 1);
    assert_eq!(t.get(&key_of(&query)).unwrap(), &before);

    // Not related: a quote of an untracked flow, a quote whose source is
    // not the error's destination, an unreadable quote, a type that is
    // not an error.
    let other = udp("192.0.2.10:5354", "198.51.100.1:53");
    expect(
        &run(&mut t, &rs, IN, &error("198.51.100.1", LOCAL, 3, &other), S),
        Step::DropDefault,
        &Reason::DefaultDeny,
    );
    let backwards = udp("198.51.100.1:53", "192.0.2.10:5353");
    expect(
        &run(
            &mut t,
            &rs,
            IN,
            &error("198.51.100.1", LOCAL, 3, &backwards),
            S,
        ),
        Step::DropDefault,
        &Reason::DefaultDeny,
    );
    let unreadable = Datagram {
        quote: None,
        ..error("198.51.100.1", LOCAL, 3, &query)
    };
    expect(
        &run(&mut t, &rs, IN, &unreadable, S),
        Step::DropDefault,
        &Reason::DefaultDeny,
    );
    expect(
        &run(&mut t, &rs, IN, &error("198.51.100.1", LOCAL, 5, &query), S),
        Step::DropDefault,
        &Reason::DefaultDeny,
    );

    // IPv6: types 1–4 are errors; an echo quote matches by id.
    let (l6, r6) = ("2001:db8:0:1::10", "2001:db8:ff::1");
    let ping = echo(l6, r6, 128, 77);
    run(&mut t, &rs, OUT, &ping, S);
    for ty in 1..=4 {
        expect(
            &run(&mut t, &rs, IN, &error("2001:db8:ff::2", l6, ty, &ping), S),
            Step::AcceptRelated,
            &Reason::Tracked,
        );
    }
    let other_id = echo(l6, r6, 128, 78);
    expect(
        &run(
            &mut t,
            &rs,
            IN,
            &error("2001:db8:ff::2", l6, 1, &other_id),
            S,
        ),
        Step::DropDefault,
        &Reason::DefaultDeny,
    );

    // An expired connection relates nothing (udp_s 30).
    expect(
        &run(
            &mut t,
            &rs,
            IN,
            &error("198.51.100.1", LOCAL, 3, &query),
            31 * S,
        ),
        Step::DropDefault,
        &Reason::DefaultDeny,
    );
}

#[test]
fn later_fragments_follow_their_first_fragment() {
    let rs = ruleset(
        json!([{"id": "dns", "direction": "ingress", "policy": "accept", "ip_protocol": "udp",
                "port_range": "53/53", "source_cidr_ip": "0.0.0.0/0"}]),
        Value::Null,
        Value::Null,
    );
    let mut t = Tracker::new();
    let head = udp("198.51.100.1:4000", "192.0.2.10:53")
        .fragment(Fragment::First { id: 9 })
        .bytes(1500);
    let later = |id: u32, src: &str| {
        Datagram::new(Packet {
            src_port: 0,
            dst_port: 0,
            src: addr(src),
            ..head.header
        })
        .fragment(Fragment::Later { id })
        .bytes(500)
    };
    // No head yet: drops.
    expect(
        &run(&mut t, &rs, IN, &later(9, "198.51.100.1"), 0),
        Step::DropFragmentWithoutHead,
        &Reason::DefaultDeny,
    );
    expect(
        &run(&mut t, &rs, IN, &head, 0),
        Step::AcceptNew,
        &rule("sg/dns"),
    );
    // Later fragments: the head's verdict and reason, counted to its
    // connection.
    expect(
        &run(&mut t, &rs, IN, &later(9, "198.51.100.1"), S),
        Step::AcceptFragment,
        &rule("sg/dns"),
    );
    expect(
        &run(&mut t, &rs, IN, &later(9, "198.51.100.1"), S),
        Step::AcceptFragment,
        &rule("sg/dns"),
    );
    let conn = t.get(&key_of(&head)).unwrap();
    assert_eq!((conn.packets, conn.bytes), ([3, 0], [2500, 0]));
    // Another id, or another source: no head.
    expect(
        &run(&mut t, &rs, IN, &later(10, "198.51.100.1"), S),
        Step::DropFragmentWithoutHead,
        &Reason::DefaultDeny,
    );
    expect(
        &run(&mut t, &rs, IN, &later(9, "198.51.100.2"), S),
        Step::DropFragmentWithoutHead,
        &Reason::DefaultDeny,
    );
    // A dropped head: its later fragments drop, with its reason.
    let bad = udp("198.51.100.1:4000", "192.0.2.10:54").fragment(Fragment::First { id: 11 });
    expect(
        &run(&mut t, &rs, IN, &bad, 0),
        Step::DropDefault,
        &Reason::DefaultDeny,
    );
    expect(
        &run(&mut t, &rs, IN, &later(11, "198.51.100.1"), 0),
        Step::DropFragment,
        &Reason::DefaultDeny,
    );

    // A tracked head: later fragments say tracked, and a reply's later
    // fragment counts as a reply (UDP becomes a stream).
    let reply_head = udp("192.0.2.10:53", "198.51.100.1:4000").fragment(Fragment::First { id: 12 });
    expect(
        &run(&mut t, &rs, OUT, &reply_head, 2 * S),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
    let reply_later = Datagram::new(Packet {
        src_port: 0,
        dst_port: 0,
        ..reply_head.header
    })
    .fragment(Fragment::Later { id: 12 });
    expect(
        &run(&mut t, &rs, OUT, &reply_later, 2 * S),
        Step::AcceptFragment,
        &Reason::Tracked,
    );
    let conn = t.get(&key_of(&head)).unwrap();
    assert_eq!((conn.state, conn.packets), (ConnState::UdpStream, [3, 2]));

    // The head's verdict is forgotten after 60 s.
    expect(
        &run(&mut t, &rs, IN, &later(9, "198.51.100.1"), 60 * S),
        Step::AcceptFragment,
        &rule("sg/dns"),
    );
    expect(
        &run(&mut t, &rs, IN, &later(9, "198.51.100.1"), 60 * S + 1),
        Step::DropFragmentWithoutHead,
        &Reason::DefaultDeny,
    );
}

#[test]
fn the_nacl_sees_every_packet_and_an_egress_nacl_drop_creates_nothing() {
    let rs = ruleset(
        json!([{"id": "ssh", "direction": "ingress", "policy": "accept", "ip_protocol": "tcp",
                "port_range": "22/22", "source_cidr_ip": "0.0.0.0/0"}]),
        json!({"ingress": [{"name": "not-c", "policy": "drop", "protocol": "all", "source_cidr_ip": "203.0.113.0/24"},
                           {"name": "in", "policy": "accept", "protocol": "all", "source_cidr_ip": "0.0.0.0/0"}],
               "egress": [{"name": "no-9", "policy": "drop", "protocol": "tcp", "port": "1/65535",
                           "destination_cidr_ip": "198.51.100.9/32"},
                          {"name": "out", "policy": "accept", "protocol": "all", "destination_cidr_ip": "0.0.0.0/0"}]}),
        Value::Null,
    );
    let mut t = Tracker::new();
    // Egress: the groups accept (basic default), the NACL drops: no entry,
    // so the answer is not tracked.
    let syn = tcp("192.0.2.10:40000", "198.51.100.9:80", tcp_flags::SYN);
    let no9 = Reason::Nacl {
        acl: "acl".into(),
        entry: "no-9".into(),
    };
    expect(&run(&mut t, &rs, OUT, &syn, 0), Step::DropNacl, &no9);
    assert!(t.connections().is_empty());

    // An accepted connection whose reply the ingress NACL drops: the
    // NACL comes first, tracked or not.
    let syn = tcp("203.0.113.5:40000", "192.0.2.10:22", tcp_flags::SYN);
    let not_c = Reason::Nacl {
        acl: "acl".into(),
        entry: "not-c".into(),
    };
    expect(&run(&mut t, &rs, IN, &syn, 0), Step::DropNacl, &not_c);
    let syn = tcp("198.51.100.9:40000", "192.0.2.10:22", tcp_flags::SYN);
    expect(
        &run(&mut t, &rs, IN, &syn, 0),
        Step::AcceptNew,
        &rule("sg/ssh"),
    );
    // Its replies go to 198.51.100.9 port 40000: the egress NACL drops
    // them although the connection is tracked.
    let synack = tcp(
        "192.0.2.10:22",
        "198.51.100.9:40000",
        tcp_flags::SYN | tcp_flags::ACK,
    );
    expect(&run(&mut t, &rs, OUT, &synack, 0), Step::DropNacl, &no9);
    // ...and a dropped packet does not move the connection.
    let conn = t.get(&key_of(&syn)).unwrap();
    assert_eq!((conn.state, conn.packets), (ConnState::TcpSyn, [1, 0]));
}

/// Generation 1 admits `client → 198.51.100.1:80` by rule `web`;
/// generation 2 is `gen2` with `on_change`.
fn revalidation(gen2_rules: Value, on_change: &str) -> (Tracker, Ruleset, Datagram, Datagram) {
    let gen1 = ruleset_of_kind(
        "advanced",
        json!([{"id": "web", "direction": "egress", "policy": "accept", "ip_protocol": "tcp",
                "port_range": "80/80", "dest_cidr_ip": "198.51.100.0/24"}]),
        Value::Null,
        Value::Null,
    );
    let gen2 = ruleset_of_kind(
        "advanced",
        gen2_rules,
        Value::Null,
        json!({"on_change": on_change}),
    );
    let mut t = Tracker::new();
    let syn = tcp("192.0.2.10:40000", "198.51.100.1:80", tcp_flags::SYN);
    let synack = tcp(
        "198.51.100.1:80",
        "192.0.2.10:40000",
        tcp_flags::SYN | tcp_flags::ACK,
    );
    expect(
        &t.process_detailed(&gen1, 1, 0, OUT, &syn, 0),
        Step::AcceptNew,
        &rule("sg/web"),
    );
    expect(
        &t.process_detailed(&gen1, 1, 0, IN, &synack, 0),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
    (t, gen2, syn, synack)
}

#[test]
fn revalidation_cuts_a_connection_the_new_rules_drop() {
    let (mut t, gen2, syn, synack) = revalidation(json!([]), "revalidate");
    // The reply arrives on ingress; the connection is judged as it
    // began: egress to port 80, which advanced groups now drop by
    // default.
    let out = t.process_detailed(&gen2, 2, 0, IN, &synack, S);
    expect(&out, Step::DropRevalidated, &Reason::DefaultDeny);
    assert!(t.get(&key_of(&syn)).is_none());
    // Cut: the next reply is a first packet (ingress default-deny).
    expect(
        &t.process_detailed(&gen2, 2, 0, IN, &synack, S),
        Step::DropDefault,
        &Reason::DefaultDeny,
    );

    // A drop rule names itself.
    let (mut t, gen2, _, _) = revalidation(
        json!([{"id": "no-web", "direction": "egress", "policy": "drop", "ip_protocol": "tcp",
                "port_range": "80/80", "dest_cidr_ip": "198.51.100.1/32"}]),
        "revalidate",
    );
    expect(
        &t.process_detailed(&gen2, 2, 0, OUT, &syn, S),
        Step::DropRevalidated,
        &rule("sg/no-web"),
    );
}

/// A cut connection stays cut when its other end speaks first: the
/// server's retransmission leaves by the basic group's default accept
/// but picks nothing up, so the client's next segment is a first packet
/// again (and not a "reply").
#[test]
fn a_cut_connection_is_not_picked_up_in_the_other_orientation() {
    let gen1 = web_client();
    let gen2 = ruleset(json!([]), Value::Null, json!({"on_change": "revalidate"}));
    let mut t = Tracker::new();
    let syn = tcp("198.51.100.1:40000", "192.0.2.10:22", tcp_flags::SYN);
    let synack = tcp(
        "192.0.2.10:22",
        "198.51.100.1:40000",
        tcp_flags::SYN | tcp_flags::ACK,
    );
    let ack = tcp("198.51.100.1:40000", "192.0.2.10:22", tcp_flags::ACK);
    let data = tcp("192.0.2.10:22", "198.51.100.1:40000", tcp_flags::ACK | 0x08);
    expect(
        &run(&mut t, &gen1, IN, &syn, 0),
        Step::AcceptNew,
        &rule("sg/ssh"),
    );
    expect(
        &run(&mut t, &gen1, OUT, &synack, 0),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
    let out = t.process_detailed(&gen2, 2, 0, IN, &ack, S);
    expect(&out, Step::DropRevalidated, &Reason::DefaultDeny);
    // The server retransmits: egress is open, but nothing is tracked.
    let out = t.process_detailed(&gen2, 2, 0, OUT, &data, S);
    expect(&out, Step::AcceptNew, &Reason::DefaultAccept);
    assert!(t.get(&key_of(&syn)).is_none());
    expect(
        &t.process_detailed(&gen2, 2, 0, IN, &ack, S),
        Step::DropDefault,
        &Reason::DefaultDeny,
    );
}

#[test]
fn revalidation_records_the_rule_that_still_admits_it() {
    let (mut t, gen2, syn, synack) = revalidation(
        json!([{"id": "web2", "direction": "egress", "policy": "accept", "ip_protocol": "all",
                "dest_cidr_ip": "198.51.100.0/25"}]),
        "revalidate",
    );
    expect(
        &t.process_detailed(&gen2, 2, 0, IN, &synack, S),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
    let conn = t.get(&key_of(&syn)).unwrap();
    assert_eq!(
        (
            conn.reason.clone(),
            conn.generation,
            conn.reason_generation,
            conn.state
        ),
        (rule("sg/web2"), 2, 2, ConnState::TcpEstablished)
    );
    // Revalidated once: the next packet of generation 2 is just tracked.
    expect(
        &t.process_detailed(&gen2, 2, 0, OUT, &syn, S),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
}

#[test]
fn on_change_keep_leaves_connections_alone() {
    let (mut t, gen2, syn, synack) = revalidation(json!([]), "keep");
    expect(
        &t.process_detailed(&gen2, 2, 0, IN, &synack, S),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
    let conn = t.get(&key_of(&syn)).unwrap();
    assert_eq!(
        (conn.reason.clone(), conn.generation, conn.reason_generation),
        (rule("sg/web"), 2, 1)
    );
    // New connections meet the new rules.
    let other = tcp("192.0.2.10:40001", "198.51.100.1:80", tcp_flags::SYN);
    expect(
        &t.process_detailed(&gen2, 2, 0, OUT, &other, S),
        Step::DropDefault,
        &Reason::DefaultDeny,
    );
}

#[test]
fn tables_are_per_interface() {
    let rs = web_client();
    let mut doc_two: Ruleset = rs.clone();
    let mut second = doc_two.enis[0].clone();
    second.id = "eni2".into();
    second.interface = "tap1".into();
    doc_two.enis.push(second);
    let mut t = Tracker::new();
    let syn = tcp("192.0.2.10:40000", "198.51.100.1:80", tcp_flags::SYN);
    let synack = tcp(
        "198.51.100.1:80",
        "192.0.2.10:40000",
        tcp_flags::SYN | tcp_flags::ACK,
    );
    t.process_detailed(&doc_two, 1, 0, OUT, &syn, 0);
    expect(
        &t.process_detailed(&doc_two, 1, 1, IN, &synack, 0),
        Step::DropDefault,
        &Reason::DefaultDeny,
    );
    expect(
        &t.process_detailed(&doc_two, 1, 0, IN, &synack, 0),
        Step::AcceptTracked,
        &Reason::Tracked,
    );
    assert_eq!(t.connections().keys().next().unwrap().interface, "tap0");
}

#[test]
fn keys_order_endpoints_by_address_then_port() {
    let (k1, a1) = ConnKey::new(
        "x",
        6,
        (addr("198.51.100.1"), 80),
        (addr("192.0.2.10"), 40000),
    );
    let (k2, a2) = ConnKey::new(
        "x",
        6,
        (addr("192.0.2.10"), 40000),
        (addr("198.51.100.1"), 80),
    );
    assert_eq!(k1, k2);
    assert_eq!((a1, a2), (false, true));
    assert_eq!(k1.a, (addr("192.0.2.10"), 40000));
    let (k, a) = ConnKey::new("x", 6, (addr("192.0.2.1"), 9), (addr("192.0.2.1"), 8));
    assert_eq!((k.a.1, a), (8, false));
    let (k, _) = ConnKey::new("x", 6, (addr("2001:db8::2"), 1), (addr("2001:db8::1:0"), 1));
    assert_eq!(k.a.0, addr("2001:db8::2"));
    assert_eq!(
        k.to_string(),
        "x proto 6 [2001:db8::2]:1 <-> [2001:db8::1:0]:1"
    );
}

#[test]
fn states_map_to_the_kernel_values() {
    for state in [
        ConnState::TcpSyn,
        ConnState::TcpEstablished,
        ConnState::TcpClosing,
        ConnState::Udp,
        ConnState::UdpStream,
        ConnState::Icmp,
        ConnState::Other,
    ] {
        assert_eq!(ConnState::from_ct_state(state.ct_state()), Some(state));
    }
    assert_eq!(ConnState::from_ct_state(0), None);
    let zero = ConntrackConfig {
        tcp_syn_s: 0,
        ..ConntrackConfig::default()
    };
    assert_eq!(ConnState::TcpSyn.timeout_ns(&zero), 120 * S);
}
