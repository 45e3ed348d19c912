//! Header parsing: Ethernet (+ one 802.1Q tag), IPv4, IPv6 with a bounded
//! extension-header walk, TCP, UDP, ICMP and ICMPv6 (SPEC §3.2).
//!
//! Everything is read through [`Frame::load`], which fails for bytes past the
//! frame; on top of that every header is checked against the length the IP
//! header claims, so a datagram padded by its link layer is not read into the
//! padding and one that claims more than the frame holds is malformed.
//! A malformed packet yields the `STAT_DROP_*` counter that names the reason.
use filter_common::{
    FAMILY_V4, FAMILY_V6, MAX_IPV6_EXT_HEADERS, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
    STAT_DROP_BAD_IHL, STAT_DROP_BAD_IPV4_LEN, STAT_DROP_BAD_IPV6_LEN, STAT_DROP_BAD_TCP_OFF,
    STAT_DROP_EXT_CHAIN, STAT_DROP_TRUNC_ETH, STAT_DROP_TRUNC_EXT, STAT_DROP_TRUNC_IPV4,
    STAT_DROP_TRUNC_IPV6, STAT_DROP_TRUNC_L4, STAT_DROP_TRUNC_VLAN,
};

use crate::frame::Frame;

/// Returned by the parsers when the packet is well formed (every other value
/// is the `STAT_DROP_*` index of the reason it is not).
pub const PARSE_OK: u32 = u32::MAX;

/// `Parsed::frag`: not a fragment (or an IPv6 atomic fragment).
pub const FRAG_NONE: u8 = 0;
/// The first fragment (offset 0, more fragments): it carries the ports.
pub const FRAG_FIRST: u8 = 1;
/// A later fragment (offset > 0): no transport header, follows the first.
pub const FRAG_LATER: u8 = 2;

const ETH_HLEN: u32 = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

const IPV6_HLEN: u32 = 40;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;

const TCP_HLEN: u32 = 20;
const UDP_HLEN: u32 = 8;
/// Type, code, checksum and the 4-byte rest (echo id and sequence).
const ICMP_HLEN: u32 = 8;
/// TCP flag bits FIN..URG: the SPEC §7 values are the header's own bits.
const TCP_FLAGS_MASK: u8 = 0x3f;

/// The addresses, protocol and ports of one packet, as classification sees
/// them. Addresses are in network order, IPv4 in the first four bytes and the
/// rest zero (the layout of `AddrKeyData::addr`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Flow {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Host byte order; 0 for protocols without ports (ICMP included).
    pub sport: u16,
    pub dport: u16,
    /// `FAMILY_V4` / `FAMILY_V6`, or 0 for a frame that is not IP.
    pub family: u8,
    /// IANA number of the transport protocol (after IPv6 extension headers).
    pub proto: u8,
    pub _pad: [u8; 2],
}

/// Everything the pipeline needs from the headers of one packet.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Parsed {
    pub flow: Flow,
    /// IP-layer length: what the byte counters count. For a frame that is
    /// not IP, the length after the link-layer header.
    pub ip_len: u32,
    /// Offset just past the IP datagram (the frame may carry padding after).
    pub ip_end: u32,
    /// Offset of the transport header.
    pub l4_off: u32,
    /// IPv4 identification or IPv6 fragment id (fragments only).
    pub frag_id: u32,
    /// `FRAG_*`.
    pub frag: u8,
    /// The protocol a fragment's `FragKey` carries: the IPv4 protocol, or the
    /// next header of the IPv6 fragment header, which is the same in every
    /// fragment of a datagram (RFC 8200 §4.5) while the transport protocol
    /// may sit behind further extension headers in the first one only.
    pub frag_proto: u8,
    /// TCP flags (FIN, SYN, RST, PSH, ACK, URG).
    pub tcp_flags: u8,
    /// 1 for ICMP in IPv4 and ICMPv6 in IPv6, with the fields below parsed.
    pub is_icmp: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// The echo identifier (host order); meaningful for echo messages only.
    pub icmp_id: u16,
}

#[inline(always)]
fn be16(hi: u8, lo: u8) -> u16 {
    u16::from_be_bytes([hi, lo])
}

#[inline(always)]
fn be32(b: [u8; 4]) -> u32 {
    u32::from_be_bytes(b)
}

/// An IPv4 address in the 16-byte layout, built as 32-bit words so that it
/// is stored as words: the conntrack key and the searches read it back in
/// words, and a load that spans several narrower stores cannot take its
/// data from the store buffer, it waits until they reach the cache
/// (`crate::words`).
#[inline(always)]
fn v4_addr(a: u8, b: u8, c: u8, d: u8) -> [u8; 16] {
    crate::words::bytes([u32::from_ne_bytes([a, b, c, d]), 0, 0, 0])
}

/// The fixed IPv6 header, as bytes (alignment 1, any bit pattern valid).
#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv6Hdr {
    /// Version, traffic class, flow label.
    vtcfl: [u8; 4],
    payload_len: [u8; 2],
    nexthdr: u8,
    _hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<Ipv6Hdr>() == IPV6_HLEN as usize);

/// Whether `nh` is an extension header the walk steps over.
#[inline(always)]
fn is_ext_header(nh: u8) -> bool {
    matches!(
        nh,
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_FRAGMENT
    )
}

/// State of an IPv6 extension-header walk.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ExtWalk {
    /// In: offset of the first header after the fixed IPv6 header.
    /// Out: offset of the transport header.
    pub off: u32,
    pub frag_id: u32,
    /// In: the fixed header's next header. Out: the transport protocol (or,
    /// for a later fragment, the fragment header's next header).
    pub nexthdr: u8,
    pub frag: u8,
    pub frag_proto: u8,
    pub _pad: u8,
}

/// Walks at most `MAX_IPV6_EXT_HEADERS` hop-by-hop, routing, destination
/// options and fragment headers, none of which may reach past `ip_end`.
/// Returns `PARSE_OK` or the `STAT_DROP_*` reason.
#[inline(never)]
fn walk_ipv6_ext<F: Frame>(f: F, w: &mut ExtWalk, ip_end: u32) -> u32 {
    // Bounded loop: each step consumes one header; a chain longer than the
    // bound is dropped below rather than walked (SPEC §3.2).
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match w.nexthdr {
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                // Next header, then the length in 8-byte units not counting
                // the first 8.
                let Some(h) = f.load::<[u8; 2]>(w.off) else {
                    return STAT_DROP_TRUNC_EXT;
                };
                let len = (u32::from(h[1]) + 1) * 8;
                if w.off + len > ip_end {
                    return STAT_DROP_TRUNC_EXT;
                }
                w.nexthdr = h[0];
                w.off += len;
            }
            NEXTHDR_FRAGMENT => {
                let Some(h) = f.load::<[u8; 8]>(w.off) else {
                    return STAT_DROP_TRUNC_EXT;
                };
                if w.off + 8 > ip_end {
                    return STAT_DROP_TRUNC_EXT;
                }
                let off_m = be16(h[2], h[3]);
                w.nexthdr = h[0];
                w.frag_proto = h[0];
                w.frag_id = be32([h[4], h[5], h[6], h[7]]);
                w.off += 8;
                if off_m & 0xfff8 != 0 {
                    // A later fragment: what follows is the middle of the
                    // datagram, not headers. Stop here.
                    w.frag = FRAG_LATER;
                    return PARSE_OK;
                }
                if off_m & 1 != 0 {
                    w.frag = FRAG_FIRST;
                }
                // Offset 0 without M is an atomic fragment: a whole packet.
            }
            _ => return PARSE_OK,
        }
    }
    if is_ext_header(w.nexthdr) {
        STAT_DROP_EXT_CHAIN
    } else {
        PARSE_OK
    }
}

/// Parses a frame into `p`. Returns `PARSE_OK` or the `STAT_DROP_*` reason.
/// A frame that is not IPv4/IPv6 leaves `p.flow.family == 0`.
///
/// Untagged IPv4, most of the traffic, is parsed in line; every other frame
/// goes to [`parse_any`], a call. A call costs 5–7 ns of every packet on a
/// CPU whose returns go through the SRSO return thunk, and inlining the whole
/// parser (IPv6 extension headers included) takes the verifier past its
/// instruction limit.
#[inline(always)]
pub fn parse<F: Frame>(f: F, p: &mut Parsed) -> u32 {
    if let Some(eth) = f.load::<[u8; 14]>(0) {
        if be16(eth[12], eth[13]) == ETH_P_IP {
            return parse_ipv4(f, p, ETH_HLEN);
        }
    }
    parse_any(f, p)
}

/// [`parse`] for any frame: VLAN tags, IPv6, non-IP, truncated.
#[inline(never)]
fn parse_any<F: Frame>(f: F, p: &mut Parsed) -> u32 {
    let Some(eth) = f.load::<[u8; 14]>(0) else {
        return STAT_DROP_TRUNC_ETH;
    };
    let mut ethertype = be16(eth[12], eth[13]);
    let mut l3 = ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        // One tag: TCI, then the inner EtherType.
        let Some(tag) = f.load::<[u8; 4]>(l3) else {
            return STAT_DROP_TRUNC_VLAN;
        };
        ethertype = be16(tag[2], tag[3]);
        l3 += 4;
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            // A second tag (QinQ) would hide an IP packet from the filter if
            // it passed as "not IP"; the parser walks one tag, so fail closed.
            return STAT_DROP_TRUNC_VLAN;
        }
    }
    match ethertype {
        ETH_P_IP => parse_ipv4(f, p, l3),
        ETH_P_IPV6 => parse_ipv6(f, p, l3),
        _ => {
            p.flow.family = 0;
            p.ip_len = f.len().saturating_sub(l3);
            PARSE_OK
        }
    }
}

#[inline(always)]
fn parse_ipv4<F: Frame>(f: F, p: &mut Parsed, l3: u32) -> u32 {
    let Some(h) = f.load::<[u8; 20]>(l3) else {
        return STAT_DROP_TRUNC_IPV4;
    };
    let ihl = u32::from(h[0] & 0x0f);
    if h[0] >> 4 != 4 || ihl < 5 {
        return STAT_DROP_BAD_IHL;
    }
    let hlen = ihl * 4;
    if !f.covers(l3 + hlen) {
        return STAT_DROP_TRUNC_IPV4;
    }
    let mut total = u32::from(be16(h[2], h[3]));
    if total == 0 {
        // BIG TCP (RFC 2675 in spirit): the stack builds GSO packets longer
        // than 64 KiB with a total length of 0 and lets the skb length
        // speak, which TC egress sees. No real datagram is that long. The
        // frame covers the header, so the subtraction cannot wrap.
        let rest = f.len() - l3;
        if rest > 0xffff {
            total = rest;
        }
    }
    if total < hlen || !f.covers(l3 + total) {
        return STAT_DROP_BAD_IPV4_LEN;
    }
    let frag_field = be16(h[6], h[7]);
    p.flow.family = FAMILY_V4;
    p.flow.proto = h[9];
    p.flow.src = v4_addr(h[12], h[13], h[14], h[15]);
    p.flow.dst = v4_addr(h[16], h[17], h[18], h[19]);
    p.ip_len = total;
    p.ip_end = l3 + total;
    p.l4_off = l3 + hlen;
    p.frag_proto = h[9];
    p.frag_id = u32::from(be16(h[4], h[5]));
    p.frag = if frag_field & 0x1fff != 0 {
        FRAG_LATER
    } else if frag_field & 0x2000 != 0 {
        FRAG_FIRST
    } else {
        FRAG_NONE
    };
    if p.frag == FRAG_LATER {
        return PARSE_OK;
    }
    parse_l4(f, p)
}

#[inline(always)]
fn parse_ipv6<F: Frame>(f: F, p: &mut Parsed, l3: u32) -> u32 {
    let Some(h) = f.load::<Ipv6Hdr>(l3) else {
        return STAT_DROP_TRUNC_IPV6;
    };
    if h.vtcfl[0] >> 4 != 6 {
        return STAT_DROP_BAD_IHL;
    }
    let payload = u32::from(be16(h.payload_len[0], h.payload_len[1]));
    let mut ip_end = l3 + IPV6_HLEN + payload;
    if !f.covers(ip_end) {
        return STAT_DROP_BAD_IPV6_LEN;
    }
    // Payload length 0 behind a hop-by-hop header is a jumbogram (RFC 2675);
    // BIG TCP GSO packets, which TC egress sees, carry 0 with or without
    // that header. Either way the length is the rest of the frame, which
    // covers the fixed header (so the subtraction cannot wrap).
    if payload == 0 {
        let frame_len = f.len();
        if h.nexthdr == NEXTHDR_HOP || frame_len - ip_end > 0xffff {
            ip_end = frame_len;
        }
    }
    p.flow.family = FAMILY_V6;
    p.flow.src = h.src;
    p.flow.dst = h.dst;
    p.ip_len = ip_end - l3;
    p.ip_end = ip_end;

    let mut w = ExtWalk {
        off: l3 + IPV6_HLEN,
        nexthdr: h.nexthdr,
        ..ExtWalk::default()
    };
    let rc = walk_ipv6_ext(f, &mut w, ip_end);
    if rc != PARSE_OK {
        return rc;
    }
    p.flow.proto = w.nexthdr;
    p.l4_off = w.off;
    p.frag = w.frag;
    p.frag_id = w.frag_id;
    p.frag_proto = w.frag_proto;
    if p.frag == FRAG_LATER {
        return PARSE_OK;
    }
    parse_l4(f, p)
}

/// The transport header of a whole packet or a first fragment. A first
/// fragment too short to hold it is malformed (the tiny-fragment attack,
/// RFC 1858): its ports could not be classified.
#[inline(always)]
fn parse_l4<F: Frame>(f: F, p: &mut Parsed) -> u32 {
    let off = p.l4_off;
    let end = p.ip_end;
    let family = p.flow.family;
    match p.flow.proto {
        PROTO_TCP => {
            let Some(h) = f.load::<[u8; 20]>(off) else {
                return STAT_DROP_TRUNC_L4;
            };
            if off + TCP_HLEN > end {
                return STAT_DROP_TRUNC_L4;
            }
            let doff = u32::from(h[12] >> 4);
            if doff < 5 || off + doff * 4 > end {
                return STAT_DROP_BAD_TCP_OFF;
            }
            p.flow.sport = be16(h[0], h[1]);
            p.flow.dport = be16(h[2], h[3]);
            p.tcp_flags = h[13] & TCP_FLAGS_MASK;
        }
        PROTO_UDP => {
            let Some(h) = f.load::<[u8; 8]>(off) else {
                return STAT_DROP_TRUNC_L4;
            };
            if off + UDP_HLEN > end {
                return STAT_DROP_TRUNC_L4;
            }
            p.flow.sport = be16(h[0], h[1]);
            p.flow.dport = be16(h[2], h[3]);
        }
        proto
            if (family == FAMILY_V4 && proto == PROTO_ICMP)
                || (family == FAMILY_V6 && proto == PROTO_ICMPV6) =>
        {
            let Some(h) = f.load::<[u8; 8]>(off) else {
                return STAT_DROP_TRUNC_L4;
            };
            if off + ICMP_HLEN > end {
                return STAT_DROP_TRUNC_L4;
            }
            // ICMP has no ports: classification sees port 0; conntrack
            // keys echo messages by their identifier.
            p.is_icmp = 1;
            p.icmp_type = h[0];
            p.icmp_code = h[1];
            p.icmp_id = be16(h[4], h[5]);
        }
        // Every other protocol (GRE included) is classified by number only.
        _ => {}
    }
    PARSE_OK
}

/// ICMPv6 neighbour discovery (router/neighbour solicitation and
/// advertisement, redirect: types 133–137), which passes (SPEC §3 step 1).
#[inline(always)]
pub fn is_neighbour_discovery(p: &Parsed) -> bool {
    p.flow.family == FAMILY_V6 && p.is_icmp != 0 && (133..=137).contains(&p.icmp_type)
}

/// ICMP errors that embed the header of the packet they are about
/// (SPEC §3.1): v4 destination unreachable, time exceeded, parameter
/// problem; v6 destination unreachable, packet too big, time exceeded,
/// parameter problem.
#[inline(always)]
pub fn is_icmp_error(p: &Parsed) -> bool {
    if p.is_icmp == 0 {
        return false;
    }
    match p.flow.family {
        FAMILY_V4 => matches!(p.icmp_type, 3 | 11 | 12),
        FAMILY_V6 => (1..=4).contains(&p.icmp_type),
        _ => false,
    }
}

/// Whether an ICMP message of this family and type is an echo request or
/// reply, which conntrack keys by identifier.
#[inline(always)]
pub fn is_icmp_echo(family: u8, icmp_type: u8) -> bool {
    match family {
        FAMILY_V4 => icmp_type == 8 || icmp_type == 0,
        FAMILY_V6 => icmp_type == 128 || icmp_type == 129,
        _ => false,
    }
}

/// Parses the header embedded in an ICMP error (`p` must be one) into
/// `inner`, with *conntrack* ports: the transport ports, or the echo
/// identifier in both for an embedded echo message, or 0.
///
/// Returns false when the embedded header cannot be read. That is not
/// malformed (routers may quote little, and the error itself was well
/// formed): the error is just not related to anything.
#[inline(never)]
pub fn parse_icmp_inner<F: Frame>(f: F, p: &Parsed, inner: &mut Flow) -> bool {
    // The quoted datagram follows the 8-byte ICMP header.
    let l3 = p.l4_off + ICMP_HLEN;
    let end = p.ip_end;
    let l4;
    if p.flow.family == FAMILY_V4 {
        let Some(h) = f.load::<[u8; 20]>(l3) else {
            return false;
        };
        let ihl = u32::from(h[0] & 0x0f);
        if h[0] >> 4 != 4 || ihl < 5 {
            return false;
        }
        // A quoted later fragment has no ports to look up.
        if be16(h[6], h[7]) & 0x1fff != 0 {
            return false;
        }
        inner.family = FAMILY_V4;
        inner.proto = h[9];
        inner.src = v4_addr(h[12], h[13], h[14], h[15]);
        inner.dst = v4_addr(h[16], h[17], h[18], h[19]);
        l4 = l3 + ihl * 4;
    } else {
        let Some(h) = f.load::<Ipv6Hdr>(l3) else {
            return false;
        };
        if h.vtcfl[0] >> 4 != 6 {
            return false;
        }
        let mut w = ExtWalk {
            off: l3 + IPV6_HLEN,
            nexthdr: h.nexthdr,
            ..ExtWalk::default()
        };
        if walk_ipv6_ext(f, &mut w, end) != PARSE_OK || w.frag == FRAG_LATER {
            return false;
        }
        inner.family = FAMILY_V6;
        inner.proto = w.nexthdr;
        inner.src = h.src;
        inner.dst = h.dst;
        l4 = w.off;
    }
    inner.sport = 0;
    inner.dport = 0;
    match inner.proto {
        PROTO_TCP | PROTO_UDP => {
            // Only the ports: RFC 792 guarantees 8 quoted bytes, no more.
            let Some(h) = f.load::<[u8; 4]>(l4) else {
                return false;
            };
            if l4 + 4 > end {
                return false;
            }
            inner.sport = be16(h[0], h[1]);
            inner.dport = be16(h[2], h[3]);
        }
        proto
            if (inner.family == FAMILY_V4 && proto == PROTO_ICMP)
                || (inner.family == FAMILY_V6 && proto == PROTO_ICMPV6) =>
        {
            let Some(h) = f.load::<[u8; 8]>(l4) else {
                return false;
            };
            if l4 + ICMP_HLEN > end {
                return false;
            }
            if is_icmp_echo(inner.family, h[0]) {
                let id = be16(h[4], h[5]);
                inner.sport = id;
                inner.dport = id;
            }
        }
        _ => {}
    }
    true
}
