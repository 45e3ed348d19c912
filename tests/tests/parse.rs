//! The packet parser, through both real programs (BPF_PROG_TEST_RUN).
//!
//! Table-driven, katran style: every fixture is a name, a crafted frame, the
//! verdict each program must return and the one `FILTER_STATS` counter that
//! must move, by exactly 1, with no other counter moving.
//!
//! The contract (issue 2, `filter-ebpf/src/pipeline.rs`), in order:
//! 1. parse; a malformed packet drops, counted by the first check it fails,
//!    header by header from the outside in: within a header the fixed part
//!    must be present, then its fields make sense (version, IHL), then its
//!    variable part must be present (options, extension length), then the
//!    lengths it claims must fit (total length, payload length);
//! 2. not IP → pass (`STAT_PASS_NON_IP`);
//! 3. IPv6 neighbour discovery (ICMPv6 133–137) → pass (`STAT_PASS_ND`);
//! 4. the ENI lookup. The maps here are empty and a test run arrives on
//!    interface 1, so every well-formed IP packet passes unguarded
//!    (`STAT_PASS_UNGUARDED`); later fragments too, since dropping one for a
//!    missing head needs a guarded ENI.
//!
//! `FILTER_FIXTURE=<name>` runs only the fixtures whose name contains it.
use anyhow::{bail, Result};
use filter_common::*;
use filter_tests::{
    bpf::{stat_label, Dataplane, Prog, StatsDelta, Verdict},
    packet::{
        addr::*, ethertype, proto, tcp_flags, Arp, Eth, Ext, Frame, Gre, Icmp, Ipv4, Ipv6, Pkt,
        Tcp, Udp, Vlan,
    },
};

/// What one program must do with a fixture.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    /// Return this verdict, and `stat` moves by one, alone.
    Ran { verdict: Verdict, stat: u32 },
    /// The kernel refuses to run the program on this input at all: an
    /// error, and no counter moves. Test runs need at least an Ethernet
    /// header, and skb test runs (TC) also the fixed IP header that the
    /// EtherType announces; XDP runs take the latter, so those fixtures
    /// still reach the parser through XDP.
    Rejected,
}

/// What each program must do with a fixture.
#[derive(Clone, Copy, Debug)]
struct Expect {
    xdp: Outcome,
    tc: Outcome,
}

struct Fixture {
    name: &'static str,
    frame: Frame,
    expect: Expect,
}

fn passed(stat: u32) -> Expect {
    let ran = Outcome::Ran {
        verdict: Verdict::Pass,
        stat,
    };
    Expect { xdp: ran, tc: ran }
}

fn dropped(stat: u32) -> Expect {
    let ran = Outcome::Ran {
        verdict: Verdict::Drop,
        stat,
    };
    Expect { xdp: ran, tc: ran }
}

/// Dropped by XDP; the kernel does not run TC on it (see [`Outcome`]).
fn dropped_by_xdp(stat: u32) -> Expect {
    Expect {
        xdp: Outcome::Ran {
            verdict: Verdict::Drop,
            stat,
        },
        tc: Outcome::Rejected,
    }
}

fn rejected() -> Expect {
    Expect {
        xdp: Outcome::Rejected,
        tc: Outcome::Rejected,
    }
}

fn fx(name: &'static str, frame: Frame, expect: Expect) -> Fixture {
    Fixture {
        name,
        frame,
        expect,
    }
}

const UNGUARDED: u32 = STAT_PASS_UNGUARDED;

fn v4() -> Ipv4 {
    Ipv4::new(V4_A, V4_B)
}

fn v6() -> Ipv6 {
    Ipv6::new(V6_A, V6_B)
}

fn eth4() -> Pkt {
    Pkt::eth().push(v4())
}

fn eth6() -> Pkt {
    Pkt::eth().push(v6())
}

fn syn() -> Tcp {
    Tcp::new(40000, 443)
}

fn dns() -> Udp {
    Udp::new(40001, 53)
}

/// A UDP datagram quoted in an ICMP error (IP header onward, no Ethernet).
fn quoted_v4_udp() -> Frame {
    Pkt::ip(Ipv4::new(V4_B, V4_A))
        .push(Udp::new(53, 40001))
        .payload(b"quoted")
        .build()
}

fn quoted_v6_tcp() -> Frame {
    Pkt::ip(Ipv6::new(V6_B, V6_A))
        .push(Tcp::new(443, 40000))
        .build()
}

/// Ethernet, VLAN, non-IP EtherTypes, and truncation of the link layer.
fn link_layer() -> Vec<Fixture> {
    vec![
        fx(
            "arp_request",
            Pkt::eth().push(Arp::request(V4_A, V4_B)).build(),
            passed(STAT_PASS_NON_IP),
        ),
        fx(
            "vlan_arp",
            Pkt::eth()
                .push(Vlan::new(10))
                .push(Arp::request(V4_A, V4_B))
                .build(),
            passed(STAT_PASS_NON_IP),
        ),
        fx(
            "lldp_other_ethertype",
            Pkt::new()
                .push(Eth::default().ethertype(ethertype::LLDP))
                .payload(&[0; 32])
                .build(),
            passed(STAT_PASS_NON_IP),
        ),
        fx(
            "vlan_ipv4_tcp",
            Pkt::eth()
                .push(Vlan::new(100))
                .push(v4())
                .push(syn())
                .build(),
            passed(UNGUARDED),
        ),
        fx(
            "vlan_ipv6_udp",
            Pkt::eth()
                .push(Vlan::new(4094))
                .push(v6())
                .push(dns())
                .build(),
            passed(UNGUARDED),
        ),
        fx(
            // One tag is walked; an IP packet behind a second tag must not
            // slip through as "not IP", so it fails closed.
            "qinq_second_tag_fails_closed",
            Pkt::eth()
                .push(Vlan::new(100))
                .push(Vlan::new(200))
                .push(v4())
                .push(syn())
                .build(),
            dropped(STAT_DROP_TRUNC_VLAN),
        ),
        fx(
            "runt_shorter_than_ethernet",
            Pkt::eth().push(v4()).build().truncate(10),
            rejected(),
        ),
        fx(
            "vlan_tag_cut",
            Pkt::eth().push(Vlan::new(100)).cut(2).build(),
            dropped(STAT_DROP_TRUNC_VLAN),
        ),
        fx(
            "ethernet_only_ipv4_ethertype",
            Pkt::new()
                .push(Eth::default().ethertype(ethertype::IPV4))
                .build(),
            dropped_by_xdp(STAT_DROP_TRUNC_IPV4),
        ),
        fx(
            "ethernet_only_ipv6_ethertype",
            Pkt::new()
                .push(Eth::default().ethertype(ethertype::IPV6))
                .build(),
            dropped_by_xdp(STAT_DROP_TRUNC_IPV6),
        ),
        fx(
            "vlan_then_nothing",
            Pkt::eth()
                .push(Vlan {
                    ethertype: Some(ethertype::IPV4),
                    ..Vlan::new(100)
                })
                .build(),
            dropped(STAT_DROP_TRUNC_IPV4),
        ),
    ]
}

/// IPv4 headers: protocols, options, and every way the header lies.
fn ipv4() -> Vec<Fixture> {
    vec![
        fx(
            "ipv4_tcp_syn",
            eth4().push(syn()).build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv4_udp",
            eth4().push(dns()).payload(b"query").build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv4_udp_empty_payload",
            eth4().push(dns()).build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv4_icmp_echo_request",
            eth4().push(Icmp::echo_request(7, 1)).build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv4_icmp_echo_reply",
            eth4().push(Icmp::echo_reply(7, 1)).build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv4_icmp_unreachable_quoting_udp",
            eth4().push(Icmp::error(3, 3, quoted_v4_udp())).build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv4_gre",
            eth4().push(Gre::default()).push(v4()).push(syn()).build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv4_other_proto_sctp",
            Pkt::eth()
                .push(v4().proto(proto::SCTP))
                .payload(&[0; 12])
                .build(),
            passed(UNGUARDED),
        ),
        fx("ipv4_other_proto_empty", eth4().build(), passed(UNGUARDED)),
        fx(
            "ipv4_options_router_alert",
            Pkt::eth()
                .push(v4().options(&[0x94, 0x04, 0, 0]))
                .push(dns())
                .build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv4_options_max_ihl_15",
            Pkt::eth().push(v4().options(&[1; 40])).push(syn()).build(),
            passed(UNGUARDED),
        ),
        fx(
            // A 54-byte TCP ACK padded to Ethernet's 60: the total length
            // covers less than the frame, which is fine.
            "ipv4_ethernet_padding",
            eth4().push(syn().flags(tcp_flags::ACK)).build().pad_to(60),
            passed(UNGUARDED),
        ),
        fx(
            "ipv4_ihl_4",
            Pkt::eth().push(v4().ihl(4)).push(syn()).build(),
            dropped(STAT_DROP_BAD_IHL),
        ),
        fx(
            "ipv4_ihl_0",
            Pkt::eth().push(v4().ihl(0)).push(syn()).build(),
            dropped(STAT_DROP_BAD_IHL),
        ),
        fx(
            "ipv4_ethertype_with_version_6",
            Pkt::eth().push(v4().version(6)).push(syn()).build(),
            dropped(STAT_DROP_BAD_IHL),
        ),
        fx(
            "ipv4_total_len_shorter_than_header",
            Pkt::eth().push(v4().total_len(10)).push(syn()).build(),
            dropped(STAT_DROP_BAD_IPV4_LEN),
        ),
        fx(
            "ipv4_total_len_shorter_than_options",
            Pkt::eth()
                .push(v4().options(&[1; 8]).total_len(24))
                .push(syn())
                .build(),
            dropped(STAT_DROP_BAD_IPV4_LEN),
        ),
        fx(
            "ipv4_total_len_past_frame",
            eth4()
                .push(dns())
                .payload(b"query")
                .build()
                .truncate(14 + 20 + 8 + 2),
            dropped(STAT_DROP_BAD_IPV4_LEN),
        ),
        fx(
            "ipv4_fixed_header_cut",
            eth4().cut(12).build(),
            dropped_by_xdp(STAT_DROP_TRUNC_IPV4),
        ),
        fx(
            // IHL says 60 bytes; the frame ends 4 bytes into the options.
            "ipv4_options_cut",
            Pkt::eth().push(v4().options(&[1; 40])).cut(24).build(),
            dropped(STAT_DROP_TRUNC_IPV4),
        ),
    ]
}

/// IPv6: protocols, neighbour discovery, each extension header and chains.
fn ipv6() -> Vec<Fixture> {
    vec![
        fx(
            "ipv6_tcp_syn",
            eth6().push(syn()).build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv6_udp",
            eth6().push(dns()).payload(b"query").build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv6_icmpv6_echo_request",
            eth6().push(Icmp::v6_echo_request(9, 1)).build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv6_icmpv6_echo_reply",
            eth6().push(Icmp::v6_echo_reply(9, 1)).build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv6_icmpv6_packet_too_big_quoting_tcp",
            eth6().push(Icmp::v6_error(2, 0, quoted_v6_tcp())).build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv6_nd_router_solicitation_133",
            Pkt::eth()
                .push(Ipv6::new(V6_LINK_LOCAL, V6_SOLICITED_B).hop_limit(255))
                .push(Icmp::v6(133, 0))
                .build(),
            passed(STAT_PASS_ND),
        ),
        fx(
            "ipv6_nd_neighbour_solicitation_135",
            Pkt::eth()
                .push(Ipv6::new(V6_A, V6_SOLICITED_B).hop_limit(255))
                .push(Icmp::neighbour_solicitation(V6_B))
                .build(),
            passed(STAT_PASS_ND),
        ),
        fx(
            "ipv6_nd_redirect_137",
            Pkt::eth()
                .push(Ipv6::new(V6_LINK_LOCAL, V6_A).hop_limit(255))
                .push(Icmp::v6(137, 0))
                .build(),
            passed(STAT_PASS_ND),
        ),
        fx(
            // MLD reports carry a hop-by-hop header; ND behind one is still ND.
            "ipv6_nd_behind_hop_by_hop",
            eth6()
                .push(Ext::hop_by_hop())
                .push(Icmp::neighbour_solicitation(V6_B))
                .build(),
            passed(STAT_PASS_ND),
        ),
        fx(
            "ipv6_icmpv6_132_is_not_nd",
            eth6().push(Icmp::v6(132, 0)).build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv6_icmpv6_138_is_not_nd",
            eth6().push(Icmp::v6(138, 0)).build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv6_gre",
            eth6()
                .push(Gre {
                    protocol: ethertype::IPV6,
                })
                .push(v6())
                .push(dns())
                .build(),
            passed(UNGUARDED),
        ),
        fx("ipv6_no_next_header", eth6().build(), passed(UNGUARDED)),
        fx(
            "ipv6_hop_by_hop_tcp",
            eth6().push(Ext::hop_by_hop()).push(syn()).build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv6_routing_udp",
            eth6().push(Ext::routing()).push(dns()).build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv6_dest_opts_tcp",
            eth6().push(Ext::dest_opts(1)).push(syn()).build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv6_dest_opts_32_bytes_udp",
            eth6().push(Ext::dest_opts(4)).push(dns()).build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv6_chain_hbh_routing_fragment_dest_tcp",
            eth6()
                .push(Ext::hop_by_hop())
                .push(Ext::routing())
                .push(Ext::fragment(0, false, 0xabcd))
                .push(Ext::dest_opts(1))
                .push(syn())
                .build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv6_chain_of_8_headers",
            chain(8).push(syn()).build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv6_chain_of_9_headers",
            chain(9).push(syn()).build(),
            dropped(STAT_DROP_EXT_CHAIN),
        ),
        fx(
            // AH is not walked: the packet is classified as protocol 51.
            "ipv6_authentication_header",
            eth6().push(Ext::ah()).push(syn()).build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv6_ethertype_with_version_4",
            Pkt::eth().push(v6().version(4)).push(syn()).build(),
            dropped(STAT_DROP_BAD_IHL),
        ),
        fx(
            "ipv6_payload_len_past_frame",
            Pkt::eth()
                .push(v6().payload_len(20 + 8))
                .push(syn())
                .build(),
            dropped(STAT_DROP_BAD_IPV6_LEN),
        ),
        fx(
            "ipv6_fixed_header_cut",
            eth6().cut(30).build(),
            dropped_by_xdp(STAT_DROP_TRUNC_IPV6),
        ),
        fx(
            "ipv6_next_is_hop_by_hop_but_nothing_follows",
            Pkt::eth().push(v6().next_header(proto::HOP_BY_HOP)).build(),
            dropped(STAT_DROP_TRUNC_EXT),
        ),
        fx(
            "ipv6_hop_by_hop_cut",
            eth6().push(Ext::hop_by_hop()).cut(1).build(),
            dropped(STAT_DROP_TRUNC_EXT),
        ),
        fx(
            // The header claims 32 bytes; the payload holds 28.
            "ipv6_hop_by_hop_length_past_payload",
            eth6()
                .push(Ext::hop_by_hop().len_field(3))
                .push(syn())
                .build(),
            dropped(STAT_DROP_TRUNC_EXT),
        ),
        fx(
            "ipv6_routing_cut",
            eth6().push(Ext::routing()).cut(12).build(),
            dropped(STAT_DROP_TRUNC_EXT),
        ),
        fx(
            "ipv6_dest_opts_cut",
            eth6().push(Ext::dest_opts(2)).cut(10).build(),
            dropped(STAT_DROP_TRUNC_EXT),
        ),
        fx(
            "ipv6_fragment_header_cut",
            eth6().push(Ext::fragment(0, true, 1)).cut(4).build(),
            dropped(STAT_DROP_TRUNC_EXT),
        ),
    ]
}

/// An IPv6 packet with `n` destination-options headers in a row.
fn chain(n: usize) -> Pkt {
    (0..n).fold(eth6(), |p, _| p.push(Ext::dest_opts(1)))
}

/// First fragments carry the transport header; later ones do not.
fn fragments() -> Vec<Fixture> {
    vec![
        fx(
            "ipv4_first_fragment_tcp",
            Pkt::eth()
                .push(v4().fragment(0x4242, 0, true))
                .push(syn())
                .payload(&[0; 32])
                .build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv4_middle_fragment",
            Pkt::eth()
                .push(v4().fragment(0x4242, 7, true).proto(proto::TCP))
                .payload(&[0xaa; 56])
                .build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv4_last_fragment",
            Pkt::eth()
                .push(v4().fragment(0x4242, 14, false).proto(proto::UDP))
                .payload(&[0xaa; 24])
                .build(),
            passed(UNGUARDED),
        ),
        fx(
            // One byte of data: not a truncated UDP header, there is none.
            "ipv4_later_fragment_one_byte",
            Pkt::eth()
                .push(v4().fragment(0x4243, 1, false).proto(proto::UDP))
                .payload(&[0xaa])
                .build(),
            passed(UNGUARDED),
        ),
        fx(
            // The tiny-fragment attack (RFC 1858): a first fragment too
            // short for the ports it must be classified by.
            "ipv4_first_fragment_with_cut_tcp",
            Pkt::eth()
                .push(v4().fragment(0x4244, 0, true))
                .push(syn())
                .cut(8)
                .build(),
            dropped(STAT_DROP_TRUNC_L4),
        ),
        fx(
            "ipv6_first_fragment_udp",
            eth6()
                .push(Ext::fragment(0, true, 0x01020304))
                .push(dns())
                .payload(&[0; 32])
                .build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv6_later_fragment",
            eth6()
                .push(Ext::fragment(5, true, 0x01020304).next_header(proto::UDP))
                .payload(&[0xaa; 40])
                .build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv6_last_fragment_behind_hop_by_hop",
            eth6()
                .push(Ext::hop_by_hop())
                .push(Ext::fragment(10, false, 0x01020304).next_header(proto::TCP))
                .payload(&[0xaa; 3])
                .build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv6_atomic_fragment_tcp",
            eth6()
                .push(Ext::fragment(0, false, 0x0badcafe))
                .push(syn())
                .build(),
            passed(UNGUARDED),
        ),
        fx(
            "ipv6_first_fragment_with_cut_udp",
            eth6()
                .push(Ext::fragment(0, true, 0x01020305))
                .push(dns())
                .cut(4)
                .build(),
            dropped(STAT_DROP_TRUNC_L4),
        ),
    ]
}

/// Transport headers: flags, options, data offset, and truncation.
fn transport() -> Vec<Fixture> {
    use tcp_flags::*;
    vec![
        fx(
            "tcp_all_flags",
            eth4()
                .push(syn().flags(FIN | SYN | RST | PSH | ACK | URG))
                .build(),
            passed(UNGUARDED),
        ),
        fx(
            "tcp_fin_ack",
            eth6().push(syn().flags(FIN | ACK)).build(),
            passed(UNGUARDED),
        ),
        fx(
            "tcp_with_options_doff_8",
            eth4()
                .push(syn().options(&[2, 4, 0x05, 0xb4, 4, 2, 1, 1, 1, 3, 3, 7]))
                .build(),
            passed(UNGUARDED),
        ),
        fx(
            "tcp_data_offset_4",
            eth4().push(syn().data_offset(4)).payload(&[0; 20]).build(),
            dropped(STAT_DROP_BAD_TCP_OFF),
        ),
        fx(
            "tcp_data_offset_past_packet",
            eth4().push(syn().data_offset(15)).payload(&[0; 8]).build(),
            dropped(STAT_DROP_BAD_TCP_OFF),
        ),
        fx(
            "ipv6_tcp_data_offset_0",
            eth6().push(syn().data_offset(0)).build(),
            dropped(STAT_DROP_BAD_TCP_OFF),
        ),
        fx(
            "tcp_header_absent",
            Pkt::eth().push(v4().proto(proto::TCP)).build(),
            dropped(STAT_DROP_TRUNC_L4),
        ),
        fx(
            "tcp_cut_before_data_offset",
            eth4().push(syn()).cut(12).build(),
            dropped(STAT_DROP_TRUNC_L4),
        ),
        fx(
            // The frame holds the whole header, but the IP total length ends
            // inside it: bytes past the datagram are padding, not header.
            "tcp_past_ipv4_total_length",
            Pkt::eth().push(v4().total_len(20 + 10)).push(syn()).build(),
            dropped(STAT_DROP_TRUNC_L4),
        ),
        fx(
            "ipv6_tcp_cut",
            eth6().push(syn()).cut(19).build(),
            dropped(STAT_DROP_TRUNC_L4),
        ),
        fx(
            "udp_cut",
            eth4().push(dns()).cut(6).build(),
            dropped(STAT_DROP_TRUNC_L4),
        ),
        fx(
            "ipv6_udp_cut",
            eth6().push(dns()).cut(7).build(),
            dropped(STAT_DROP_TRUNC_L4),
        ),
        fx(
            "icmp_echo_cut",
            eth4().push(Icmp::echo_request(1, 1)).cut(4).build(),
            dropped(STAT_DROP_TRUNC_L4),
        ),
        fx(
            "icmpv6_echo_cut",
            eth6().push(Icmp::v6_echo_request(1, 1)).cut(4).build(),
            dropped(STAT_DROP_TRUNC_L4),
        ),
        fx(
            "ipv6_hop_by_hop_then_cut_tcp",
            eth6().push(Ext::hop_by_hop()).push(syn()).cut(10).build(),
            dropped(STAT_DROP_TRUNC_L4),
        ),
    ]
}

fn all_fixtures() -> Vec<Fixture> {
    let mut all = link_layer();
    all.extend(ipv4());
    all.extend(ipv6());
    all.extend(fragments());
    all.extend(transport());
    all
}

/// Runs every fixture through both programs of one freshly loaded object
/// and fails with the full list of what went wrong.
fn check(fixtures: &[Fixture]) -> Result<()> {
    let dp = Dataplane::load()?;
    let only = std::env::var("FILTER_FIXTURE").ok();
    let mut failures = Vec::new();
    let mut ran = 0;
    for f in fixtures {
        if only.as_deref().is_some_and(|o| !f.name.contains(o)) {
            continue;
        }
        ran += 1;
        for prog in Prog::BOTH {
            match outcome(&dp, prog, f) {
                Ok(line) => println!("ok    {:<48} {prog:<3} {line}", f.name),
                Err(e) => {
                    println!("FAIL  {:<48} {prog:<3} {e:#}", f.name);
                    failures.push(format!("{} [{prog}]: {e:#}", f.name));
                }
            }
        }
    }
    if ran == 0 && only.is_none() {
        bail!("no fixtures");
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} fixture runs failed:\n  {}",
            failures.len(),
            ran * 2,
            failures.join("\n  ")
        );
    }
    Ok(())
}

/// One fixture through one program: a description of what happened, or
/// how it differs from the expectation.
fn outcome(dp: &Dataplane, prog: Prog, f: &Fixture) -> Result<String> {
    let expect = match prog {
        Prog::Xdp => f.expect.xdp,
        Prog::Tc => f.expect.tc,
    };
    match expect {
        Outcome::Rejected => {
            let before = dp.stats()?;
            match dp.test_run_raw(prog, &f.frame.bytes) {
                Ok(code) => {
                    let len = f.frame.len();
                    bail!("expected the kernel to refuse the {len}-byte frame; it returned {code}")
                }
                Err(_) => {
                    let delta = dp.stats()?.since(&before);
                    if !delta.is_empty() {
                        bail!("refused, but counters moved: {delta}");
                    }
                    Ok("refused by the kernel".into())
                }
            }
        }
        Outcome::Ran { verdict, stat } => {
            let run = dp.run(prog, &f.frame.bytes)?;
            if run.verdict != verdict || run.delta != StatsDelta::only(stat) {
                bail!(
                    "expected {verdict} with {} +1 only, got {} with {}",
                    stat_label(stat),
                    run.verdict,
                    run.delta
                );
            }
            Ok(format!("{} {}", run.verdict, run.delta))
        }
    }
}

#[test]
fn link_layer_fixtures() -> Result<()> {
    check(&link_layer())
}

#[test]
fn ipv4_fixtures() -> Result<()> {
    check(&ipv4())
}

#[test]
fn ipv6_fixtures() -> Result<()> {
    check(&ipv6())
}

#[test]
fn fragment_fixtures() -> Result<()> {
    check(&fragments())
}

#[test]
fn transport_fixtures() -> Result<()> {
    check(&transport())
}

/// The table itself: enough fixtures, unique names, and every reason the
/// parser can give (other than a frame shorter than Ethernet, which the
/// kernel never runs a program on) exercised by at least one fixture.
#[test]
fn fixture_table_covers_every_parse_outcome() -> Result<()> {
    let all = all_fixtures();
    if all.len() < 30 {
        bail!("only {} fixtures", all.len());
    }
    let mut names: Vec<_> = all.iter().map(|f| f.name).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        bail!("duplicate fixture name {}", w[0]);
    }
    let outcomes: Vec<Outcome> = all
        .iter()
        .flat_map(|f| [f.expect.xdp, f.expect.tc])
        .collect();
    let covered: Vec<u32> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Ran { stat, .. } => Some(*stat),
            Outcome::Rejected => None,
        })
        .collect();
    let required = [
        STAT_PASS_NON_IP,
        STAT_PASS_ND,
        STAT_PASS_UNGUARDED,
        STAT_DROP_TRUNC_VLAN,
        STAT_DROP_TRUNC_IPV4,
        STAT_DROP_BAD_IHL,
        STAT_DROP_BAD_IPV4_LEN,
        STAT_DROP_TRUNC_IPV6,
        STAT_DROP_BAD_IPV6_LEN,
        STAT_DROP_TRUNC_EXT,
        STAT_DROP_EXT_CHAIN,
        STAT_DROP_TRUNC_L4,
        STAT_DROP_BAD_TCP_OFF,
    ];
    let missing: Vec<_> = required
        .iter()
        .filter(|s| !covered.contains(s))
        .map(|s| stat_label(*s))
        .collect();
    if !missing.is_empty() {
        bail!("no fixture for {}", missing.join(", "));
    }
    if !all
        .iter()
        .any(|f| matches!(f.expect.xdp, Outcome::Rejected))
    {
        bail!("no fixture for a frame shorter than an Ethernet header");
    }
    Ok(())
}
