//! A builder for crafted frames: well-formed ones and every kind of broken.
//!
//! A packet is a stack of layers, outermost first. Building encodes from the
//! innermost layer outward, so each layer sees its payload and fills in what
//! depends on it (EtherType, protocol and next-header numbers, lengths,
//! checksums) unless the test overrides that field to lie about it.
//!
//! ```
//! use filter_tests::packet::{Pkt, Ipv4, Tcp, tcp_flags};
//! let frame = Pkt::eth()
//!     .push(Ipv4::new([192, 0, 2, 1], [198, 51, 100, 2]))
//!     .push(Tcp::new(40000, 80).flags(tcp_flags::SYN))
//!     .build();
//! assert_eq!(frame.len(), 14 + 20 + 20);
//! ```
//!
//! Two kinds of truncation: [`Pkt::cut`] shortens one layer *before* the
//! outer layers are encoded, so their length fields agree with the shortened
//! bytes (the packet is short, not lying); [`Frame::truncate`] cuts the
//! finished frame, so the length fields claim more than is there.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    ops::Range,
};

/// EtherTypes.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const IPV6: u16 = 0x86dd;
    pub const LLDP: u16 = 0x88cc;
}

/// IP protocol / IPv6 next-header numbers.
pub mod proto {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const IPIP: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const IPV6: u8 = 41;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const GRE: u8 = 47;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const NO_NEXT: u8 = 59;
    pub const DEST_OPTS: u8 = 60;
    pub const SCTP: u8 = 132;
    /// RFC 3692 experimental value: a protocol nothing should parse.
    pub const EXPERIMENTAL: u8 = 253;
}

/// TCP flag bits (the SPEC §7 values).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// Documentation addresses (RFC 5737, RFC 3849) for crafted packets.
pub mod addr {
    pub const V4_A: [u8; 4] = [192, 0, 2, 1];
    pub const V4_B: [u8; 4] = [198, 51, 100, 2];
    pub const V4_C: [u8; 4] = [203, 0, 113, 3];
    pub const V6_A: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    pub const V6_B: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    /// `fe80::1`, for neighbour discovery.
    pub const V6_LINK_LOCAL: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    /// `ff02::1:ff00:2`, the solicited-node address of `V6_B`.
    pub const V6_SOLICITED_B: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 2];
    pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
}

/// Ethernet II header. `ethertype: None` takes the next layer's.
#[derive(Clone, Debug)]
pub struct Eth {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ethertype: Option<u16>,
}

impl Default for Eth {
    fn default() -> Self {
        Self {
            dst: addr::MAC_B,
            src: addr::MAC_A,
            ethertype: None,
        }
    }
}

impl Eth {
    pub fn ethertype(mut self, ethertype: u16) -> Self {
        self.ethertype = Some(ethertype);
        self
    }
}

/// One 802.1Q tag: TPID 0x8100, then PCP/DEI/VID, then the inner EtherType.
#[derive(Clone, Debug)]
pub struct Vlan {
    pub vid: u16,
    pub pcp: u8,
    pub ethertype: Option<u16>,
}

impl Vlan {
    pub fn new(vid: u16) -> Self {
        Self {
            vid,
            pcp: 0,
            ethertype: None,
        }
    }
}

/// ARP over Ethernet/IPv4 (28 bytes).
#[derive(Clone, Debug)]
pub struct Arp {
    /// 1 request, 2 reply.
    pub op: u16,
    pub sha: [u8; 6],
    pub spa: [u8; 4],
    pub tha: [u8; 6],
    pub tpa: [u8; 4],
}

impl Arp {
    pub fn request(spa: [u8; 4], tpa: [u8; 4]) -> Self {
        Self {
            op: 1,
            sha: addr::MAC_A,
            spa,
            tha: [0; 6],
            tpa,
        }
    }
}

/// IPv4 header. Every `Option` left `None` is computed.
#[derive(Clone, Debug)]
pub struct Ipv4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub tos: u8,
    pub id: u16,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// Fragment offset in 8-byte units.
    pub frag_offset: u16,
    pub ttl: u8,
    /// Options, padded with zeros (end of list) to a multiple of 4 bytes.
    pub options: Vec<u8>,
    pub proto: Option<u8>,
    /// Override the version nibble (4).
    pub version: Option<u8>,
    /// Override IHL (32-bit words).
    pub ihl: Option<u8>,
    /// Override the total length.
    pub total_len: Option<u16>,
}

impl Ipv4 {
    pub fn new(src: [u8; 4], dst: [u8; 4]) -> Self {
        Self {
            src,
            dst,
            tos: 0,
            id: 0x1234,
            dont_fragment: false,
            more_fragments: false,
            frag_offset: 0,
            ttl: 64,
            options: Vec::new(),
            proto: None,
            version: None,
            ihl: None,
            total_len: None,
        }
    }
    pub fn options(mut self, options: &[u8]) -> Self {
        self.options = options.to_vec();
        self
    }
    pub fn proto(mut self, proto: u8) -> Self {
        self.proto = Some(proto);
        self
    }
    pub fn ihl(mut self, ihl: u8) -> Self {
        self.ihl = Some(ihl);
        self
    }
    pub fn version(mut self, version: u8) -> Self {
        self.version = Some(version);
        self
    }
    pub fn total_len(mut self, total_len: u16) -> Self {
        self.total_len = Some(total_len);
        self
    }
    /// A fragment: identification, offset in 8-byte units, more-fragments.
    pub fn fragment(mut self, id: u16, offset_units: u16, more: bool) -> Self {
        self.id = id;
        self.frag_offset = offset_units;
        self.more_fragments = more;
        self
    }
}

/// IPv6 fixed header. Every `Option` left `None` is computed.
#[derive(Clone, Debug)]
pub struct Ipv6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub traffic_class: u8,
    pub flow_label: u32,
    pub hop_limit: u8,
    pub next_header: Option<u8>,
    /// Override the version nibble (6).
    pub version: Option<u8>,
    /// Override the payload length.
    pub payload_len: Option<u16>,
}

impl Ipv6 {
    pub fn new(src: [u8; 16], dst: [u8; 16]) -> Self {
        Self {
            src,
            dst,
            traffic_class: 0,
            flow_label: 0,
            hop_limit: 64,
            next_header: None,
            version: None,
            payload_len: None,
        }
    }
    pub fn next_header(mut self, next_header: u8) -> Self {
        self.next_header = Some(next_header);
        self
    }
    pub fn hop_limit(mut self, hop_limit: u8) -> Self {
        self.hop_limit = hop_limit;
        self
    }
    pub fn version(mut self, version: u8) -> Self {
        self.version = Some(version);
        self
    }
    pub fn payload_len(mut self, payload_len: u16) -> Self {
        self.payload_len = Some(payload_len);
        self
    }
}

/// The IPv6 extension headers the parser walks, plus AH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtKind {
    HopByHop,
    Routing,
    DestOpts,
    Fragment,
    /// Authentication header (its length counts 4-byte units, minus 2).
    Ah,
}

impl ExtKind {
    pub fn number(self) -> u8 {
        match self {
            Self::HopByHop => proto::HOP_BY_HOP,
            Self::Routing => proto::ROUTING,
            Self::DestOpts => proto::DEST_OPTS,
            Self::Fragment => proto::FRAGMENT,
            Self::Ah => proto::AH,
        }
    }
}

/// One IPv6 extension header.
#[derive(Clone, Debug)]
pub struct Ext {
    pub kind: ExtKind,
    pub next_header: Option<u8>,
    /// Everything after the next-header and length bytes; its size sets the
    /// length field (for the fragment header: the 6 bytes after `next`,
    /// reserved included).
    pub body: Vec<u8>,
    /// Override the header's length byte (hdr ext len, or AH payload len).
    pub len_field: Option<u8>,
}

impl Ext {
    /// Hop-by-hop options: 8 bytes, one PadN option.
    pub fn hop_by_hop() -> Self {
        Self {
            kind: ExtKind::HopByHop,
            next_header: None,
            body: pad_n(6),
            len_field: None,
        }
    }
    /// Destination options of `8 * units` bytes (PadN filled).
    pub fn dest_opts(units: usize) -> Self {
        let units = units.max(1);
        Self {
            kind: ExtKind::DestOpts,
            next_header: None,
            body: pad_n(units * 8 - 2),
            len_field: None,
        }
    }
    /// A segment routing header (type 4) with one segment and none left.
    pub fn routing() -> Self {
        let mut body = vec![4, 0, 0, 0, 0, 0];
        body.extend_from_slice(&addr::V6_B);
        Self {
            kind: ExtKind::Routing,
            next_header: None,
            body,
            len_field: None,
        }
    }
    /// A fragment header: offset in 8-byte units, more-fragments, id.
    pub fn fragment(offset_units: u16, more: bool, id: u32) -> Self {
        let off = (offset_units << 3) | u16::from(more);
        let mut body = vec![0];
        body.extend_from_slice(&off.to_be_bytes());
        body.extend_from_slice(&id.to_be_bytes());
        // 7 bytes after the next-header byte: reserved, offset/flags, id
        // (the fragment header has no length field).
        Self {
            kind: ExtKind::Fragment,
            next_header: None,
            body,
            len_field: None,
        }
    }
    /// An authentication header with a 12-byte ICV (24 bytes in all).
    pub fn ah() -> Self {
        let mut body = vec![0, 0]; // reserved
        body.extend_from_slice(&0x100u32.to_be_bytes()); // SPI
        body.extend_from_slice(&1u32.to_be_bytes()); // sequence
        body.extend_from_slice(&[0; 12]); // ICV
        Self {
            kind: ExtKind::Ah,
            next_header: None,
            body,
            len_field: None,
        }
    }
    pub fn next_header(mut self, next_header: u8) -> Self {
        self.next_header = Some(next_header);
        self
    }
    pub fn len_field(mut self, len_field: u8) -> Self {
        self.len_field = Some(len_field);
        self
    }
}

/// TCP header. `data_offset: None` is computed from the options.
#[derive(Clone, Debug)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub urgent: u16,
    /// Options, padded with zeros to a multiple of 4 bytes.
    pub options: Vec<u8>,
    /// Override the data offset (32-bit words).
    pub data_offset: Option<u8>,
}

impl Tcp {
    pub fn new(sport: u16, dport: u16) -> Self {
        Self {
            sport,
            dport,
            seq: 1,
            ack: 0,
            flags: tcp_flags::SYN,
            window: 65535,
            urgent: 0,
            options: Vec::new(),
            data_offset: None,
        }
    }
    pub fn flags(mut self, flags: u8) -> Self {
        self.flags = flags;
        self
    }
    pub fn options(mut self, options: &[u8]) -> Self {
        self.options = options.to_vec();
        self
    }
    pub fn data_offset(mut self, data_offset: u8) -> Self {
        self.data_offset = Some(data_offset);
        self
    }
}

/// UDP header. `len: None` is computed.
#[derive(Clone, Debug)]
pub struct Udp {
    pub sport: u16,
    pub dport: u16,
    pub len: Option<u16>,
}

impl Udp {
    pub fn new(sport: u16, dport: u16) -> Self {
        Self {
            sport,
            dport,
            len: None,
        }
    }
}

/// ICMP or ICMPv6 message: type, code, the 4 "rest of header" bytes, and a
/// body (echo data, or the embedded packet of an error).
#[derive(Clone, Debug)]
pub struct Icmp {
    pub v6: bool,
    pub icmp_type: u8,
    pub code: u8,
    pub rest: [u8; 4],
    pub body: Vec<u8>,
}

impl Icmp {
    fn echo(v6: bool, icmp_type: u8, id: u16, seq: u16) -> Self {
        let mut rest = [0; 4];
        rest[..2].copy_from_slice(&id.to_be_bytes());
        rest[2..].copy_from_slice(&seq.to_be_bytes());
        Self {
            v6,
            icmp_type,
            code: 0,
            rest,
            body: b"filter-test-echo".to_vec(),
        }
    }
    pub fn echo_request(id: u16, seq: u16) -> Self {
        Self::echo(false, 8, id, seq)
    }
    pub fn echo_reply(id: u16, seq: u16) -> Self {
        Self::echo(false, 0, id, seq)
    }
    pub fn v6_echo_request(id: u16, seq: u16) -> Self {
        Self::echo(true, 128, id, seq)
    }
    pub fn v6_echo_reply(id: u16, seq: u16) -> Self {
        Self::echo(true, 129, id, seq)
    }
    /// Any ICMP message with a zero rest-of-header and no body.
    pub fn v4(icmp_type: u8, code: u8) -> Self {
        Self {
            v6: false,
            icmp_type,
            code,
            rest: [0; 4],
            body: Vec::new(),
        }
    }
    /// Any ICMPv6 message with a zero rest-of-header and no body.
    pub fn v6(icmp_type: u8, code: u8) -> Self {
        Self {
            v6: true,
            icmp_type,
            code,
            rest: [0; 4],
            body: Vec::new(),
        }
    }
    /// An ICMP error (3, 11, 12) quoting `inner`, an IP packet built with
    /// [`Pkt::ip`].
    pub fn error(icmp_type: u8, code: u8, inner: Frame) -> Self {
        Self {
            v6: false,
            icmp_type,
            code,
            rest: [0; 4],
            body: inner.bytes,
        }
    }
    /// An ICMPv6 error (1–4) quoting `inner`.
    pub fn v6_error(icmp_type: u8, code: u8, inner: Frame) -> Self {
        Self {
            v6: true,
            icmp_type,
            code,
            rest: [0; 4],
            body: inner.bytes,
        }
    }
    /// Neighbour solicitation for `target` (type 135).
    pub fn neighbour_solicitation(target: [u8; 16]) -> Self {
        let mut body = target.to_vec();
        body.extend_from_slice(&[1, 1]); // source link-layer address option
        body.extend_from_slice(&addr::MAC_A);
        Self {
            v6: true,
            icmp_type: 135,
            code: 0,
            rest: [0; 4],
            body,
        }
    }
    pub fn body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }
}

/// GRE base header (RFC 2784), no optional fields.
#[derive(Clone, Debug)]
pub struct Gre {
    pub protocol: u16,
}

impl Default for Gre {
    fn default() -> Self {
        Self {
            protocol: ethertype::IPV4,
        }
    }
}

/// One layer of a packet.
#[derive(Clone, Debug)]
pub enum Layer {
    Eth(Eth),
    Vlan(Vlan),
    Arp(Arp),
    Ipv4(Ipv4),
    Ipv6(Ipv6),
    Ext(Ext),
    Tcp(Tcp),
    Udp(Udp),
    Icmp(Icmp),
    Gre(Gre),
    /// Bytes as given (a payload, or an unparsed protocol).
    Raw(Vec<u8>),
}

macro_rules! into_layer {
    ($($t:ident),*) => {$(
        impl From<$t> for Layer {
            fn from(layer: $t) -> Self {
                Layer::$t(layer)
            }
        }
    )*};
}
into_layer!(Eth, Vlan, Arp, Ipv4, Ipv6, Ext, Tcp, Udp, Icmp, Gre);

impl From<Vec<u8>> for Layer {
    fn from(bytes: Vec<u8>) -> Self {
        Layer::Raw(bytes)
    }
}

impl From<&[u8]> for Layer {
    fn from(bytes: &[u8]) -> Self {
        Layer::Raw(bytes.to_vec())
    }
}

/// What a layer looks like from the layer outside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Eth,
    Vlan,
    Arp,
    Ipv4,
    Ipv6,
    Ext(ExtKind),
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    Gre,
    Raw,
}

impl Layer {
    pub fn kind(&self) -> Kind {
        match self {
            Self::Eth(_) => Kind::Eth,
            Self::Vlan(_) => Kind::Vlan,
            Self::Arp(_) => Kind::Arp,
            Self::Ipv4(_) => Kind::Ipv4,
            Self::Ipv6(_) => Kind::Ipv6,
            Self::Ext(e) => Kind::Ext(e.kind),
            Self::Tcp(_) => Kind::Tcp,
            Self::Udp(_) => Kind::Udp,
            Self::Icmp(i) if i.v6 => Kind::Icmpv6,
            Self::Icmp(_) => Kind::Icmp,
            Self::Gre(_) => Kind::Gre,
            Self::Raw(_) => Kind::Raw,
        }
    }

    /// The EtherType that announces this layer.
    fn ethertype(&self) -> Option<u16> {
        match self {
            Self::Vlan(_) => Some(ethertype::VLAN),
            Self::Arp(_) => Some(ethertype::ARP),
            Self::Ipv4(_) => Some(ethertype::IPV4),
            Self::Ipv6(_) => Some(ethertype::IPV6),
            _ => None,
        }
    }

    /// The IP protocol / next-header number that announces this layer.
    fn ip_proto(&self) -> Option<u8> {
        match self {
            Self::Ipv4(_) => Some(proto::IPIP),
            Self::Ipv6(_) => Some(proto::IPV6),
            Self::Ext(e) => Some(e.kind.number()),
            Self::Tcp(_) => Some(proto::TCP),
            Self::Udp(_) => Some(proto::UDP),
            Self::Icmp(i) if i.v6 => Some(proto::ICMPV6),
            Self::Icmp(_) => Some(proto::ICMP),
            Self::Gre(_) => Some(proto::GRE),
            _ => None,
        }
    }
}

/// The addresses an upper-layer checksum covers.
#[derive(Clone, Copy)]
enum Pseudo {
    None,
    V4([u8; 4], [u8; 4]),
    V6([u8; 16], [u8; 16]),
}

/// A packet under construction: layers outermost first.
#[derive(Clone, Debug, Default)]
pub struct Pkt {
    layers: Vec<(Layer, Option<usize>)>,
}

impl Pkt {
    /// An empty packet: start it with any layer, e.g. IP for ICMP quotes.
    pub fn new() -> Self {
        Self::default()
    }
    /// A packet that starts with a default Ethernet header.
    pub fn eth() -> Self {
        Self::new().push(Eth::default())
    }
    /// A packet that starts with the given IP header (no Ethernet).
    pub fn ip(header: impl Into<Layer>) -> Self {
        Self::new().push(header)
    }
    pub fn push(mut self, layer: impl Into<Layer>) -> Self {
        self.layers.push((layer.into(), None));
        self
    }
    /// Adds bytes after the last layer.
    pub fn payload(self, bytes: &[u8]) -> Self {
        self.push(bytes)
    }
    /// Shortens the last layer pushed so far (its header and everything
    /// after it) to `len` bytes before the outer layers are encoded: their
    /// length fields then describe the short packet truthfully.
    pub fn cut(mut self, len: usize) -> Self {
        if let Some(last) = self.layers.last_mut() {
            last.1 = Some(len);
        }
        self
    }

    pub fn build(&self) -> Frame {
        let mut spans = Vec::new();
        let bytes = encode(&self.layers, Pseudo::None, 0, &mut spans);
        spans.sort_by_key(|s| s.range.start);
        Frame { bytes, spans }
    }
}

/// Where one layer's header sits in a built frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub kind: Kind,
    pub range: Range<usize>,
}

/// A built frame and where each header landed in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub bytes: Vec<u8>,
    pub spans: Vec<Span>,
}

impl Frame {
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// The frame cut to `len` bytes, length fields untouched (they now
    /// claim more than is there).
    pub fn truncate(mut self, len: usize) -> Self {
        self.bytes.truncate(len);
        for span in &mut self.spans {
            span.range.end = span.range.end.min(len);
            span.range.start = span.range.start.min(len);
        }
        self.spans.retain(|s| !s.range.is_empty());
        self
    }
    /// The byte range of the first header of `kind`.
    pub fn header(&self, kind: Kind) -> Option<Range<usize>> {
        self.spans
            .iter()
            .find(|s| s.kind == kind)
            .map(|s| s.range.clone())
    }
    /// Appends zeros up to `len` bytes, as a link layer pads a short frame
    /// (the IP length fields then cover less than the frame).
    pub fn pad_to(mut self, len: usize) -> Self {
        if self.bytes.len() < len {
            self.bytes.resize(len, 0);
        }
        self
    }
    /// Overwrites one byte (for a field the builder has no knob for).
    pub fn poke(mut self, offset: usize, value: u8) -> Self {
        if let Some(b) = self.bytes.get_mut(offset) {
            *b = value;
        }
        self
    }
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Encodes `layers` (innermost last); `offset` is where the first of them
/// starts in the frame, for the spans.
fn encode(
    layers: &[(Layer, Option<usize>)],
    pseudo: Pseudo,
    offset: usize,
    spans: &mut Vec<Span>,
) -> Vec<u8> {
    let Some(((layer, cut), rest)) = layers.split_first() else {
        return Vec::new();
    };
    let next = rest.first().map(|(l, _)| l);
    let inner_pseudo = match layer {
        Layer::Ipv4(h) => Pseudo::V4(h.src, h.dst),
        Layer::Ipv6(h) => Pseudo::V6(h.src, h.dst),
        _ => pseudo,
    };
    let header_len = header_len(layer);
    let payload = encode(rest, inner_pseudo, offset + header_len, spans);
    let mut bytes = encode_one(layer, next, &payload, pseudo);
    if let Some(len) = cut {
        bytes.truncate(*len);
    }
    spans.push(Span {
        kind: layer.kind(),
        range: offset..offset + header_len.min(bytes.len()),
    });
    bytes
}

fn pad4(mut v: Vec<u8>) -> Vec<u8> {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
    v
}

/// A PadN option filling `len` bytes (Pad1 when `len` is 1).
fn pad_n(len: usize) -> Vec<u8> {
    match len {
        0 => Vec::new(),
        1 => vec![0],
        n => {
            let mut v = vec![1, (n - 2) as u8];
            v.resize(n, 0);
            v
        }
    }
}

fn header_len(layer: &Layer) -> usize {
    match layer {
        Layer::Eth(_) => 14,
        Layer::Vlan(_) => 4,
        Layer::Arp(_) => 28,
        Layer::Ipv4(h) => 20 + pad4(h.options.clone()).len(),
        Layer::Ipv6(_) => 40,
        Layer::Ext(e) => ext_encoded_len(e),
        Layer::Tcp(t) => 20 + pad4(t.options.clone()).len(),
        Layer::Udp(_) => 8,
        Layer::Icmp(_) => 8,
        Layer::Gre(_) => 4,
        Layer::Raw(b) => b.len(),
    }
}

fn ext_encoded_len(e: &Ext) -> usize {
    match e.kind {
        // next header + the 7 bytes of body
        ExtKind::Fragment => 1 + e.body.len(),
        _ => 2 + e.body.len(),
    }
}

fn encode_one(layer: &Layer, next: Option<&Layer>, payload: &[u8], pseudo: Pseudo) -> Vec<u8> {
    let next_ethertype = next.and_then(Layer::ethertype).unwrap_or(0);
    let next_proto = |default: u8| next.and_then(Layer::ip_proto).unwrap_or(default);
    let mut out = Vec::with_capacity(header_len(layer) + payload.len());
    match layer {
        Layer::Eth(h) => {
            out.extend_from_slice(&h.dst);
            out.extend_from_slice(&h.src);
            out.extend_from_slice(&h.ethertype.unwrap_or(next_ethertype).to_be_bytes());
        }
        Layer::Vlan(h) => {
            // The TPID belongs to the outer header; the tag holds TCI and
            // the inner EtherType.
            let tci = (u16::from(h.pcp & 7) << 13) | (h.vid & 0x0fff);
            out.extend_from_slice(&tci.to_be_bytes());
            out.extend_from_slice(&h.ethertype.unwrap_or(next_ethertype).to_be_bytes());
        }
        Layer::Arp(a) => {
            out.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
            out.extend_from_slice(&ethertype::IPV4.to_be_bytes());
            out.extend_from_slice(&[6, 4]);
            out.extend_from_slice(&a.op.to_be_bytes());
            out.extend_from_slice(&a.sha);
            out.extend_from_slice(&a.spa);
            out.extend_from_slice(&a.tha);
            out.extend_from_slice(&a.tpa);
        }
        Layer::Ipv4(h) => {
            let options = pad4(h.options.clone());
            let hlen = 20 + options.len();
            let ihl = h.ihl.unwrap_or((hlen / 4) as u8);
            let total = h.total_len.unwrap_or((hlen + payload.len()) as u16);
            let mut flags_frag = h.frag_offset & 0x1fff;
            if h.dont_fragment {
                flags_frag |= 0x4000;
            }
            if h.more_fragments {
                flags_frag |= 0x2000;
            }
            out.push((h.version.unwrap_or(4) << 4) | (ihl & 0x0f));
            out.push(h.tos);
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&h.id.to_be_bytes());
            out.extend_from_slice(&flags_frag.to_be_bytes());
            out.push(h.ttl);
            out.push(h.proto.unwrap_or_else(|| next_proto(proto::EXPERIMENTAL)));
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&h.src);
            out.extend_from_slice(&h.dst);
            out.extend_from_slice(&options);
            let sum = checksum(&[&out]);
            out[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        Layer::Ipv6(h) => {
            let first = (u32::from(h.version.unwrap_or(6)) << 28)
                | (u32::from(h.traffic_class) << 20)
                | (h.flow_label & 0x000f_ffff);
            out.extend_from_slice(&first.to_be_bytes());
            out.extend_from_slice(&h.payload_len.unwrap_or(payload.len() as u16).to_be_bytes());
            out.push(h.next_header.unwrap_or_else(|| next_proto(proto::NO_NEXT)));
            out.push(h.hop_limit);
            out.extend_from_slice(&h.src);
            out.extend_from_slice(&h.dst);
        }
        Layer::Ext(e) => {
            out.push(e.next_header.unwrap_or_else(|| next_proto(proto::NO_NEXT)));
            match e.kind {
                ExtKind::Fragment => {
                    // Reserved byte, offset/flags, id: the body as given,
                    // except a `len_field` override lands on the reserved byte.
                    let mut body = e.body.clone();
                    if let (Some(v), Some(b)) = (e.len_field, body.first_mut()) {
                        *b = v;
                    }
                    out.extend_from_slice(&body);
                }
                kind => {
                    let total = 2 + e.body.len();
                    let len = match kind {
                        ExtKind::Ah => (total / 4).saturating_sub(2),
                        _ => (total / 8).saturating_sub(1),
                    };
                    out.push(e.len_field.unwrap_or(len as u8));
                    out.extend_from_slice(&e.body);
                }
            }
        }
        Layer::Tcp(t) => {
            let options = pad4(t.options.clone());
            let doff = t.data_offset.unwrap_or(((20 + options.len()) / 4) as u8);
            out.extend_from_slice(&t.sport.to_be_bytes());
            out.extend_from_slice(&t.dport.to_be_bytes());
            out.extend_from_slice(&t.seq.to_be_bytes());
            out.extend_from_slice(&t.ack.to_be_bytes());
            out.push(doff << 4);
            out.push(t.flags);
            out.extend_from_slice(&t.window.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&t.urgent.to_be_bytes());
            out.extend_from_slice(&options);
            let sum = l4_checksum(pseudo, proto::TCP, &out, payload);
            out[16..18].copy_from_slice(&sum.to_be_bytes());
        }
        Layer::Udp(u) => {
            let len = u.len.unwrap_or((8 + payload.len()) as u16);
            out.extend_from_slice(&u.sport.to_be_bytes());
            out.extend_from_slice(&u.dport.to_be_bytes());
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
            let sum = match l4_checksum(pseudo, proto::UDP, &out, payload) {
                0 => 0xffff,
                s => s,
            };
            out[6..8].copy_from_slice(&sum.to_be_bytes());
        }
        Layer::Icmp(i) => {
            out.push(i.icmp_type);
            out.push(i.code);
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&i.rest);
            out.extend_from_slice(&i.body);
            let sum = if i.v6 {
                l4_checksum(pseudo, proto::ICMPV6, &out, payload)
            } else {
                checksum(&[&out, payload])
            };
            out[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        Layer::Gre(g) => {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&g.protocol.to_be_bytes());
        }
        Layer::Raw(b) => out.extend_from_slice(b),
    }
    out.extend_from_slice(payload);
    out
}

/// The Internet checksum over the concatenation of `parts`.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn l4_checksum(pseudo: Pseudo, proto: u8, header: &[u8], payload: &[u8]) -> u16 {
    let len = (header.len() + payload.len()) as u32;
    match pseudo {
        Pseudo::None => checksum(&[header, payload]),
        Pseudo::V4(src, dst) => {
            let mut ph = Vec::with_capacity(12);
            ph.extend_from_slice(&src);
            ph.extend_from_slice(&dst);
            ph.extend_from_slice(&[0, proto]);
            ph.extend_from_slice(&(len as u16).to_be_bytes());
            checksum(&[&ph, header, payload])
        }
        Pseudo::V6(src, dst) => {
            let mut ph = Vec::with_capacity(40);
            ph.extend_from_slice(&src);
            ph.extend_from_slice(&dst);
            ph.extend_from_slice(&len.to_be_bytes());
            ph.extend_from_slice(&[0, 0, 0, proto]);
            checksum(&[&ph, header, payload])
        }
    }
}

/// `Ipv4Addr` → octets, for tests that hold std addresses.
pub fn v4(a: Ipv4Addr) -> [u8; 4] {
    a.octets()
}

/// `Ipv6Addr` → octets.
pub fn v6(a: Ipv6Addr) -> [u8; 16] {
    a.octets()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_v4() -> Frame {
        Pkt::eth()
            .push(Ipv4::new(addr::V4_A, addr::V4_B))
            .push(Tcp::new(40000, 80))
            .payload(b"hello")
            .build()
    }

    #[test]
    fn ipv4_tcp_fields_and_checksums() {
        let f = tcp_v4();
        let b = &f.bytes;
        assert_eq!(b.len(), 14 + 20 + 20 + 5);
        assert_eq!(&b[12..14], &[0x08, 0x00]);
        assert_eq!(b[14], 0x45);
        assert_eq!(u16::from_be_bytes([b[16], b[17]]), 45);
        assert_eq!(b[23], proto::TCP);
        // A correct header checksums to zero.
        assert_eq!(checksum(&[&b[14..34]]), 0);
        let mut ph = Vec::new();
        ph.extend_from_slice(&addr::V4_A);
        ph.extend_from_slice(&addr::V4_B);
        ph.extend_from_slice(&[0, 6, 0, 25]);
        assert_eq!(checksum(&[&ph, &b[34..]]), 0);
        assert_eq!(b[34 + 12], 5 << 4);
        assert_eq!(f.header(Kind::Tcp), Some(34..54));
    }

    #[test]
    fn vlan_tag_sits_between_macs_and_inner_ethertype() {
        let f = Pkt::eth()
            .push(Vlan::new(100))
            .push(Ipv4::new(addr::V4_A, addr::V4_B))
            .push(Udp::new(1, 2))
            .build();
        assert_eq!(&f.bytes[12..18], &[0x81, 0x00, 0x00, 100, 0x08, 0x00]);
        assert_eq!(f.header(Kind::Ipv4), Some(18..38));
    }

    #[test]
    fn ipv4_options_set_ihl() {
        let f = Pkt::eth()
            .push(Ipv4::new(addr::V4_A, addr::V4_B).options(&[0x94, 0x04, 0, 0, 1]))
            .push(Udp::new(1, 2))
            .build();
        assert_eq!(f.bytes[14], 0x47); // 20 + 8 bytes of (padded) options
        assert_eq!(checksum(&[&f.bytes[14..42]]), 0);
    }

    #[test]
    fn ipv6_extension_chain_links_next_headers() {
        let f = Pkt::eth()
            .push(Ipv6::new(addr::V6_A, addr::V6_B))
            .push(Ext::hop_by_hop())
            .push(Ext::routing())
            .push(Ext::fragment(0, true, 7))
            .push(Ext::dest_opts(2))
            .push(Udp::new(1, 2))
            .build();
        let b = &f.bytes;
        assert_eq!(b[14 + 6], proto::HOP_BY_HOP);
        let hbh = 54;
        assert_eq!((b[hbh], b[hbh + 1]), (proto::ROUTING, 0));
        let rt = hbh + 8;
        assert_eq!((b[rt], b[rt + 1], b[rt + 2]), (proto::FRAGMENT, 2, 4));
        let frag = rt + 24;
        assert_eq!(b[frag], proto::DEST_OPTS);
        assert_eq!(&b[frag + 2..frag + 4], &[0, 1]); // offset 0, M set
        let dst = frag + 8;
        assert_eq!((b[dst], b[dst + 1]), (proto::UDP, 1));
        let payload_len = u16::from_be_bytes([b[18], b[19]]) as usize;
        assert_eq!(payload_len, b.len() - 54);
        assert_eq!(f.header(Kind::Udp), Some(dst + 16..dst + 24));
    }

    #[test]
    fn cut_keeps_outer_lengths_truthful_and_truncate_does_not() {
        let cut = Pkt::eth()
            .push(Ipv4::new(addr::V4_A, addr::V4_B))
            .push(Tcp::new(1, 2))
            .cut(10)
            .build();
        assert_eq!(cut.len(), 14 + 20 + 10);
        assert_eq!(u16::from_be_bytes([cut.bytes[16], cut.bytes[17]]), 30);
        let truncated = tcp_v4().truncate(40);
        assert_eq!(truncated.len(), 40);
        assert_eq!(
            u16::from_be_bytes([truncated.bytes[16], truncated.bytes[17]]),
            45
        );
        assert_eq!(truncated.header(Kind::Tcp), Some(34..40));
    }

    #[test]
    fn icmp_error_quotes_inner_packet() {
        let inner = Pkt::ip(Ipv4::new(addr::V4_B, addr::V4_A))
            .push(Udp::new(53, 40000))
            .build();
        let f = Pkt::eth()
            .push(Ipv4::new(addr::V4_C, addr::V4_B))
            .push(Icmp::error(3, 3, inner.clone()))
            .build();
        assert_eq!(&f.bytes[34 + 8..], &inner.bytes[..]);
        assert_eq!(checksum(&[&f.bytes[34..]]), 0);
    }

    #[test]
    fn icmpv6_checksum_uses_pseudo_header() {
        let f = Pkt::eth()
            .push(Ipv6::new(addr::V6_A, addr::V6_B))
            .push(Icmp::v6_echo_request(1, 1))
            .build();
        let b = &f.bytes;
        let mut ph = Vec::new();
        ph.extend_from_slice(&addr::V6_A);
        ph.extend_from_slice(&addr::V6_B);
        ph.extend_from_slice(&((b.len() - 54) as u32).to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, 58]);
        assert_eq!(checksum(&[&ph, &b[54..]]), 0);
    }

    #[test]
    fn ah_length_counts_four_byte_units() {
        let f = Pkt::eth()
            .push(Ipv6::new(addr::V6_A, addr::V6_B))
            .push(Ext::ah())
            .push(Tcp::new(1, 2))
            .build();
        assert_eq!(f.bytes[54 + 1], 4); // 24 bytes: 24 / 4 - 2
        assert_eq!(f.header(Kind::Tcp), Some(78..98));
    }
}
