//! Connection tracking (SPEC §3.1) in the reference evaluator. A [`Tracker`]
//! keeps the connection table and the fragment memory the data plane keeps,
//! with an explicit clock, so the kernel can be checked against it packet by
//! packet, and its `FILTER_CT` against [`Tracker::connections`].
//! [`Tracker::process`] takes the steps of ARCHITECTURE.md "Pipeline" in
//! order; keys and states are "Connection tracking" there. Not modelled:
//! frames that are not IP, malformed packets, unguarded interfaces, and the
//! LRU eviction of a full table (this table never evicts).
use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::IpAddr,
};

pub use filter_common::NS_PER_S;
use filter_common::{
    ct_fin_flag, ct_state_name, is_echo_reply_type, GenConfig, CT_FLAG_ECHO, CT_FLAG_FIN_BOTH,
    CT_ICMP, CT_OTHER, CT_TCP_CLOSING, CT_TCP_ESTABLISHED, CT_TCP_SYN, CT_UDP, CT_UDP_STREAM,
    PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, STAT_ACCEPT_FRAGMENT, STAT_ACCEPT_NEW,
    STAT_ACCEPT_RELATED, STAT_ACCEPT_TRACKED, STAT_DROP_DEFAULT, STAT_DROP_FRAGMENT,
    STAT_DROP_FRAG_NO_HEAD, STAT_DROP_NACL, STAT_DROP_REVALIDATE, STAT_DROP_SG_RULE, STAT_PASS_ND,
};
use serde::{Deserialize, Serialize};

use super::{evaluate_nacl, evaluate_sg, SgOutcome};
use crate::{
    ruleset::{ConntrackConfig, Direction, EniIdx, Ruleset},
    verdict::{Decision, Packet, Reason, Verdict},
};

/// How long the verdict of a first fragment stays usable for the later
/// fragments of its datagram (the kernel's `FRAG_TIMEOUT_NS`: reassembly
/// gives up after 60 s at most, RFC 8200 §4.5).
pub const FRAGMENT_TIMEOUT_NS: u64 = 60 * NS_PER_S;

/// TCP flag bits (SPEC §7 values, the header's own bits).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// Where a datagram sits among fragments (SPEC §3.1 "Fragments").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fragment {
    /// A whole datagram, or an IPv6 atomic fragment (offset 0, no more
    /// fragments).
    #[default]
    None,
    /// The first fragment (offset 0, more fragments): it carries the
    /// transport header and is classified with its ports.
    First { id: u32 },
    /// A later fragment (offset > 0): no transport header; it follows the
    /// verdict of the first fragment with the same id, addresses and
    /// [`Datagram::fragment_proto`].
    Later { id: u32 },
}

/// The header quoted by an ICMP error, as far as conntrack reads it: the
/// addresses, the protocol, and the TCP/UDP ports or the echo identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Quote {
    /// `src_port`/`dst_port` for TCP and UDP; `icmp_type` for a quoted ICMP
    /// message.
    pub header: Packet,
    /// The echo identifier of a quoted echo request or reply.
    pub icmp_id: u16,
}

/// One packet as the pipeline sees it: what rules look at, plus what
/// conntrack and fragment handling need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Datagram {
    /// Addresses, transport protocol (after IPv6 extension headers), ports
    /// (0 for protocols without ports) and ICMP type. For a later fragment
    /// only the addresses are read.
    pub header: Packet,
    /// TCP flags (FIN, SYN, RST, PSH, ACK, URG).
    pub tcp_flags: u8,
    /// ICMP echo identifier (echo requests and replies only).
    pub icmp_id: u16,
    pub fragment: Fragment,
    /// The protocol that identifies the datagram among fragments: the IPv4
    /// protocol, or the next header of the IPv6 fragment header (in a first
    /// fragment the transport header may sit behind further extension
    /// headers). Read for fragments only; [`Datagram::new`] sets it to
    /// `header.proto`.
    pub fragment_proto: u8,
    /// For an ICMP error: the quoted header, or `None` when it cannot be
    /// read (too short, a quoted later fragment, another family), and then
    /// the error is related to nothing.
    pub quote: Option<Quote>,
    /// IP-layer bytes (IPv4 total length, or 40 + IPv6 payload length), for
    /// the per-connection byte counters.
    pub len: u32,
}

impl Datagram {
    /// A whole datagram with no TCP flags, echo id or quote, length 0.
    pub fn new(header: Packet) -> Datagram {
        Datagram {
            header,
            tcp_flags: 0,
            icmp_id: 0,
            fragment: Fragment::None,
            fragment_proto: header.proto,
            quote: None,
            len: 0,
        }
    }

    pub fn tcp_flags(mut self, flags: u8) -> Datagram {
        self.tcp_flags = flags;
        self
    }

    pub fn echo_id(mut self, id: u16) -> Datagram {
        self.icmp_id = id;
        self
    }

    pub fn fragment(mut self, fragment: Fragment) -> Datagram {
        self.fragment = fragment;
        self
    }

    pub fn fragment_proto(mut self, proto: u8) -> Datagram {
        self.fragment_proto = proto;
        self
    }

    pub fn quote(mut self, quote: Quote) -> Datagram {
        self.quote = Some(quote);
        self
    }

    /// The IP-layer length ([`Datagram::len`]).
    pub fn bytes(mut self, len: u32) -> Datagram {
        self.len = len;
        self
    }

    /// The conntrack ports: see [`ConnKey`].
    pub fn ct_ports(&self) -> (u16, u16) {
        ct_ports(&self.header, self.icmp_id)
    }
}

/// Which `FILTER_STATS` counter a packet ends in: the path it took.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// IPv6 neighbour discovery (SPEC §3 step 1).
    PassNeighbourDiscovery,
    /// A first packet the rules accepted: an entry was created.
    AcceptNew,
    /// A packet of a tracked connection (SPEC §3 step 4).
    AcceptTracked,
    /// An ICMP error quoting a tracked connection (SPEC §3.1).
    AcceptRelated,
    /// A later fragment whose first fragment was accepted.
    AcceptFragment,
    /// A NACL entry, or no NACL entry, dropped it.
    DropNacl,
    /// A security-group rule dropped it.
    DropSgRule,
    /// No security-group rule matched and the default drops.
    DropDefault,
    /// A tracked connection the running generation no longer allows: cut.
    DropRevalidated,
    /// A later fragment whose first fragment was dropped.
    DropFragment,
    /// A later fragment with no classified first fragment.
    DropFragmentWithoutHead,
}

impl Step {
    /// The `FILTER_STATS` index (`STAT_*`) of this path.
    pub fn stat(self) -> u32 {
        match self {
            Step::PassNeighbourDiscovery => STAT_PASS_ND,
            Step::AcceptNew => STAT_ACCEPT_NEW,
            Step::AcceptTracked => STAT_ACCEPT_TRACKED,
            Step::AcceptRelated => STAT_ACCEPT_RELATED,
            Step::AcceptFragment => STAT_ACCEPT_FRAGMENT,
            Step::DropNacl => STAT_DROP_NACL,
            Step::DropSgRule => STAT_DROP_SG_RULE,
            Step::DropDefault => STAT_DROP_DEFAULT,
            Step::DropRevalidated => STAT_DROP_REVALIDATE,
            Step::DropFragment => STAT_DROP_FRAGMENT,
            Step::DropFragmentWithoutHead => STAT_DROP_FRAG_NO_HEAD,
        }
    }
}

/// The decision on one packet and the path that reached it.
///
/// The reason is SPEC §3 step 6's: a rule, a NACL entry, a default,
/// `tracked` (tracked and related packets), `pass`. A later fragment gives
/// its first fragment's reason. A later fragment without a first fragment
/// was decided by no rule: it says `default-deny` (the kernel counts it in
/// no rule slot), and [`Step::DropFragmentWithoutHead`] tells it apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Outcome {
    pub decision: Decision,
    pub step: Step,
}

impl Outcome {
    fn new(step: Step, verdict: Verdict, reason: Reason) -> Outcome {
        Outcome {
            decision: Decision { verdict, reason },
            step,
        }
    }

    fn from(step: Step, decision: &Decision) -> Outcome {
        Outcome {
            decision: decision.clone(),
            step,
        }
    }
}

/// A connection's key. One table per interface (the kernel keys by ifindex;
/// the ENI's `interface` stays the same across generations while its index
/// in the rule set need not). Within it a connection is its protocol and its
/// two endpoints, the smaller first, so both directions meet (`CtKey`).
/// Ports are the TCP or UDP ports, the echo identifier (in both) for ICMP
/// echo requests and replies, and 0 for everything else: all other ICMP
/// messages, GRE and other protocols between two addresses share one entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnKey {
    /// The ENI's interface (the kernel's ifindex).
    pub interface: String,
    /// IANA protocol number.
    pub proto: u8,
    /// The smaller endpoint: address compared as a number, then port.
    pub a: (IpAddr, u16),
    pub b: (IpAddr, u16),
}

impl ConnKey {
    /// The key of the packet `(src, sport) → (dst, dport)`, and whether the
    /// source is endpoint `a` (both endpoints equal: it is).
    pub fn new(
        interface: &str,
        proto: u8,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
    ) -> (ConnKey, bool) {
        let src_is_a = (addr_number(src.0), src.1) <= (addr_number(dst.0), dst.1);
        let (a, b) = if src_is_a { (src, dst) } else { (dst, src) };
        let key = ConnKey {
            interface: interface.to_owned(),
            proto,
            a,
            b,
        };
        (key, src_is_a)
    }

    /// The key of a packet's connection, with its conntrack ports.
    pub fn of(interface: &str, header: &Packet, ports: (u16, u16)) -> (ConnKey, bool) {
        ConnKey::new(
            interface,
            header.proto,
            (header.src, ports.0),
            (header.dst, ports.1),
        )
    }
}

impl fmt::Display for ConnKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ep = |f: &mut fmt::Formatter<'_>, (addr, port): (IpAddr, u16)| match addr {
            IpAddr::V4(a) => write!(f, "{a}:{port}"),
            IpAddr::V6(a) => write!(f, "[{a}]:{port}"),
        };
        write!(f, "{} proto {} ", self.interface, self.proto)?;
        ep(f, self.a)?;
        f.write_str(" <-> ")?;
        ep(f, self.b)
    }
}

/// The address as the number the kernel compares (`u128` of the 16-byte
/// big-endian field; IPv4 sits in the first four bytes). Only addresses of
/// one family are ever compared.
fn addr_number(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Connection states (SPEC §3.1), each with its own timeout. TCP: a SYN
/// (without ACK) creates `TcpSyn`, the first packet from the other side makes
/// it `TcpEstablished`, an RST, or a FIN once both sides have sent one,
/// `TcpClosing` (half-closed keeps its state); a first SYN with RST creates
/// `TcpClosing`, a SYN-ACK `TcpEstablished`. UDP is `Udp` until the other
/// side answers, then `UdpStream`. An entry idle past its state's timeout
/// counts as absent and is removed when next looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnState {
    TcpSyn,
    TcpEstablished,
    TcpClosing,
    /// UDP seen in one direction.
    Udp,
    /// UDP seen in both directions.
    UdpStream,
    Icmp,
    Other,
}

impl ConnState {
    /// The kernel's `CT_*` value.
    pub fn ct_state(self) -> u8 {
        match self {
            ConnState::TcpSyn => CT_TCP_SYN,
            ConnState::TcpEstablished => CT_TCP_ESTABLISHED,
            ConnState::TcpClosing => CT_TCP_CLOSING,
            ConnState::Udp => CT_UDP,
            ConnState::UdpStream => CT_UDP_STREAM,
            ConnState::Icmp => CT_ICMP,
            ConnState::Other => CT_OTHER,
        }
    }

    /// The state of a `CT_*` value.
    pub fn from_ct_state(state: u8) -> Option<ConnState> {
        Some(match state {
            CT_TCP_SYN => ConnState::TcpSyn,
            CT_TCP_ESTABLISHED => ConnState::TcpEstablished,
            CT_TCP_CLOSING => ConnState::TcpClosing,
            CT_UDP => ConnState::Udp,
            CT_UDP_STREAM => ConnState::UdpStream,
            CT_ICMP => ConnState::Icmp,
            CT_OTHER => ConnState::Other,
            _ => return None,
        })
    }

    /// The idle timeout of this state under `cfg`, in nanoseconds, from
    /// the state table the kernel uses ([`GenConfig::timeout_ns`]).
    pub fn timeout_ns(self, cfg: &ConntrackConfig) -> u64 {
        GenConfig::timeout_ns(Some(&cfg.gen_config()), self.ct_state())
    }

    /// The state's name (`tcp_established`, ...).
    pub fn name(self) -> &'static str {
        ct_state_name(self.ct_state())
    }
}

/// One tracked connection (the kernel's `CtEntry`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conn {
    pub state: ConnState,
    /// ENI direction of the first packet.
    pub orig_direction: Direction,
    /// Whether the first packet's source is endpoint `a` of the key.
    pub orig_src_is_a: bool,
    /// What admitted the connection (or last revalidated it): a rule,
    /// `inner-accept:<sg>` or `default-accept`.
    pub reason: Reason,
    /// The generation that admitted or last revalidated it (under
    /// `on_change: keep`, the last generation that let a packet through).
    pub generation: u32,
    /// The generation whose rules `reason` names: the one that admitted or
    /// last revalidated the connection. Under `keep` it stays behind
    /// [`Conn::generation`] (the kernel keeps the admitting rule's counter
    /// slot then, a number of that generation).
    pub reason_generation: u32,
    pub created_ns: u64,
    pub last_seen_ns: u64,
    /// Per direction: `[original, reply]`.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// OR of the TCP flags seen.
    pub tcp_flags: u8,
    /// The same per direction: `[original, reply]`.
    pub dir_tcp_flags: [u8; 2],
    /// The kernel's `ct_flags`: `CT_FLAG_FIN_*` per direction that sent a
    /// FIN, `CT_FLAG_ECHO` when an echo request opened the entry.
    pub ct_flags: u8,
}

impl Conn {
    /// Whether the entry is idle past its state's timeout at `now_ns`.
    pub fn expired(&self, cfg: &ConntrackConfig, now_ns: u64) -> bool {
        now_ns.saturating_sub(self.last_seen_ns) > self.state.timeout_ns(cfg)
    }

    /// Whether this entry tracks `header` travelling the `reply` way:
    /// [`meets`].
    pub fn meets(&self, header: &Packet, reply: bool) -> bool {
        meets(self.ct_flags, header, reply)
    }
}

/// Whether an entry with `ct_flags` (the kernel's `CtEntry::ct_flags`)
/// tracks `header` travelling the `reply` way (SPEC §3.1): an echo entry
/// only echo requests the original way and echo replies the other (a far
/// side's request reusing the id is a first packet of its own); an entry
/// by address pair no echo message; no entry an ICMP error, which is at
/// most related.
pub fn meets(ct_flags: u8, header: &Packet, reply: bool) -> bool {
    if !is_icmp(header) {
        return true;
    }
    if is_icmp_error(header) {
        return false;
    }
    let echo_entry = ct_flags & CT_FLAG_ECHO != 0;
    if is_echo(header) {
        echo_entry && reply == is_echo_reply_type(header.is_v6(), header.icmp_type)
    } else {
        !echo_entry
    }
}

/// The datagram a fragment belongs to (the kernel's `FragKey`). Source and
/// destination are not ordered: the fragments of one datagram all travel
/// the same way.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct FragKey {
    interface: String,
    proto: u8,
    id: u32,
    src: IpAddr,
    dst: IpAddr,
}

/// The remembered verdict of a first fragment (the kernel's `FragEntry`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct FragHead {
    decision: Decision,
    /// The first fragment's conntrack ports, so later fragments count to
    /// its connection.
    ports: (u16, u16),
    seen_ns: u64,
}

/// The state of the data plane that outlives one packet: the connection
/// table and the fragment memory.
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    conns: BTreeMap<ConnKey, Conn>,
    frags: HashMap<FragKey, FragHead>,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// The decision on `d` arriving at ENI `eni` of `rs` (the running rule
    /// set, generation `generation`) in `direction`, at time `now_ns`.
    pub fn process(
        &mut self,
        rs: &Ruleset,
        generation: u32,
        eni: EniIdx,
        direction: Direction,
        d: &Datagram,
        now_ns: u64,
    ) -> Decision {
        self.process_detailed(rs, generation, eni, direction, d, now_ns)
            .decision
    }

    /// [`Tracker::process`], with the path the packet took.
    pub fn process_detailed(
        &mut self,
        rs: &Ruleset,
        generation: u32,
        eni: EniIdx,
        direction: Direction,
        d: &Datagram,
        now_ns: u64,
    ) -> Outcome {
        let later = matches!(d.fragment, Fragment::Later { .. });
        // SPEC §3 step 1: neighbour discovery passes before anything else.
        // A later fragment has no ICMP header to say so.
        if !later && d.header.is_neighbour_discovery() {
            return Outcome::new(Step::PassNeighbourDiscovery, Verdict::Accept, Reason::Pass);
        }
        let interface = rs.enis[eni].interface.as_str();
        let frag_key = |id: u32| FragKey {
            interface: interface.to_owned(),
            proto: d.fragment_proto,
            id,
            src: d.header.src,
            dst: d.header.dst,
        };
        match d.fragment {
            // SPEC §3.1: later fragments follow the first fragment's verdict.
            Fragment::Later { id } => self.follow_fragment(rs, interface, &frag_key(id), d, now_ns),
            Fragment::First { id } => {
                let out = self.decide(rs, generation, eni, direction, d, now_ns);
                // Every verdict of a first fragment is remembered, drops too:
                // the later fragments of a dropped datagram drop with it.
                self.frags.insert(
                    frag_key(id),
                    FragHead {
                        decision: out.decision.clone(),
                        ports: d.ct_ports(),
                        seen_ns: now_ns,
                    },
                );
                out
            }
            Fragment::None => self.decide(rs, generation, eni, direction, d, now_ns),
        }
    }

    /// Every connection in the table, expired ones that were not looked up
    /// since included (as in the kernel map).
    pub fn connections(&self) -> &BTreeMap<ConnKey, Conn> {
        &self.conns
    }

    /// The connections not idle past their timeout under `cfg` at `now_ns`.
    pub fn live_connections<'a>(
        &'a self,
        cfg: &'a ConntrackConfig,
        now_ns: u64,
    ) -> impl Iterator<Item = (&'a ConnKey, &'a Conn)> + 'a {
        self.conns
            .iter()
            .filter(move |(_, c)| !c.expired(cfg, now_ns))
    }

    pub fn get(&self, key: &ConnKey) -> Option<&Conn> {
        self.conns.get(key)
    }

    /// A later fragment: the remembered verdict of its first fragment.
    fn follow_fragment(
        &mut self,
        rs: &Ruleset,
        interface: &str,
        key: &FragKey,
        d: &Datagram,
        now_ns: u64,
    ) -> Outcome {
        let head = self
            .frags
            .get(key)
            .filter(|h| now_ns.saturating_sub(h.seen_ns) <= FRAGMENT_TIMEOUT_NS)
            .cloned();
        let Some(head) = head else {
            // Never classified (lost, reordered, forgotten): nothing says
            // these bytes are allowed.
            return Outcome::new(
                Step::DropFragmentWithoutHead,
                Verdict::Drop,
                Reason::DefaultDeny,
            );
        };
        if head.decision.verdict == Verdict::Drop {
            return Outcome::from(Step::DropFragment, &head.decision);
        }
        // Count the bytes to the first fragment's connection (its key uses
        // the fragment protocol: see `Datagram::fragment_proto`). A later
        // fragment carries no TCP flags.
        let (ct_key, src_is_a) = ConnKey::new(
            interface,
            key.proto,
            (d.header.src, head.ports.0),
            (d.header.dst, head.ports.1),
        );
        if let Some(conn) = self.live(&ct_key, &rs.conntrack, now_ns) {
            let reply = src_is_a != conn.orig_src_is_a;
            account(conn, key.proto, 0, reply, d.len, now_ns);
        }
        Outcome::from(Step::AcceptFragment, &head.decision)
    }

    /// Everything after the fragment check for a whole datagram or a first
    /// fragment.
    fn decide(
        &mut self,
        rs: &Ruleset,
        generation: u32,
        eni: EniIdx,
        direction: Direction,
        d: &Datagram,
        now_ns: u64,
    ) -> Outcome {
        let interface = rs.enis[eni].interface.as_str();
        let header = &d.header;

        // SPEC §3 step 2: on ingress the NACL comes first, for every packet
        // (it is stateless: tracked packets meet it too).
        if direction == Direction::Ingress {
            if let Some(drop) = nacl_drop(rs, eni, direction, header) {
                return Outcome::from(Step::DropNacl, &drop);
            }
        }

        let (key, src_is_a) = ConnKey::of(interface, header, d.ct_ports());
        let mut tracked_reply = None;
        // An entry the packet does not meet (an echo request the reply way,
        // an ICMP error) leaves it a first packet.
        let tracked = self
            .live(&key, &rs.conntrack, now_ns)
            .filter(|conn| conn.meets(header, src_is_a != conn.orig_src_is_a));
        let out = if let Some(conn) = tracked {
            // SPEC §3 step 4: a packet of a tracked connection, either
            // direction, skips the security groups...
            let reply = src_is_a != conn.orig_src_is_a;
            if conn.generation != generation {
                // ...unless the rules changed since it was admitted (SPEC
                // §3.1 "rule changes reach existing connections").
                if rs.conntrack.revalidate {
                    // The connection's first packet, under the new rules:
                    // the original orientation and direction.
                    let orig = if reply { reversed(header) } else { *header };
                    let sg = evaluate_sg(rs, eni, conn.orig_direction, &orig);
                    let decision = sg.decision().clone();
                    if decision.verdict == Verdict::Drop {
                        self.conns.remove(&key);
                        return Outcome::from(Step::DropRevalidated, &decision);
                    }
                    conn.reason = decision.reason;
                    conn.reason_generation = generation;
                }
                conn.generation = generation;
            }
            tracked_reply = Some(reply);
            Outcome::new(Step::AcceptTracked, Verdict::Accept, Reason::Tracked)
        } else if is_icmp_error(header) && self.related(rs, interface, d, now_ns) {
            // SPEC §3.1: an ICMP error about a tracked connection.
            Outcome::new(Step::AcceptRelated, Verdict::Accept, Reason::Tracked)
        } else {
            // SPEC §3 step 5: the first packet meets the security groups.
            let sg = evaluate_sg(rs, eni, direction, header);
            let step = match (&sg, sg.decision().verdict) {
                (_, Verdict::Accept) => Step::AcceptNew,
                (SgOutcome::NoMatch { .. }, Verdict::Drop) => Step::DropDefault,
                (_, Verdict::Drop) => Step::DropSgRule,
            };
            let out = Outcome::from(step, sg.decision());
            if step != Step::AcceptNew {
                return out;
            }
            out
        };

        // SPEC §3 step 2: on egress the NACL comes last, tracked packets
        // included.
        if direction == Direction::Egress {
            if let Some(drop) = nacl_drop(rs, eni, direction, header) {
                return Outcome::from(Step::DropNacl, &drop);
            }
        }

        // The final verdict is accept: account the connection, or create it
        // (only now, so an egress NACL drop leaves no entry behind).
        if let Some(reply) = tracked_reply {
            if let Some(conn) = self.conns.get_mut(&key) {
                account(conn, header.proto, d.tcp_flags, reply, d.len, now_ns);
            }
        } else if out.step == Step::AcceptNew
            && opens(header, d.tcp_flags)
            // A live entry the packet does not meet keeps its key (the
            // kernel inserts with BPF_NOEXIST).
            && !self.conns.contains_key(&key)
        {
            let conn = Conn {
                state: first_state(header, d.tcp_flags),
                orig_direction: direction,
                orig_src_is_a: src_is_a,
                reason: out.decision.reason.clone(),
                generation,
                reason_generation: generation,
                created_ns: now_ns,
                last_seen_ns: now_ns,
                packets: [1, 0],
                bytes: [u64::from(d.len), 0],
                tcp_flags: d.tcp_flags,
                dir_tcp_flags: [d.tcp_flags, 0],
                ct_flags: first_ct_flags(header, d.tcp_flags),
            };
            self.conns.insert(key, conn);
        }
        out
    }

    /// Whether the ICMP error `d` quotes a live tracked connection. The
    /// quoted datagram must be of the error's family and come from the
    /// error's destination: an error travels back to the source of the
    /// datagram it is about, so one naming a connection between other hosts
    /// is not related to it.
    fn related(&mut self, rs: &Ruleset, interface: &str, d: &Datagram, now_ns: u64) -> bool {
        let Some(quote) = &d.quote else {
            return false;
        };
        let inner = &quote.header;
        if inner.is_v6() != d.header.is_v6() || inner.src != d.header.dst {
            return false;
        }
        let (key, _) = ConnKey::of(interface, inner, ct_ports(inner, quote.icmp_id));
        self.live(&key, &rs.conntrack, now_ns).is_some()
    }

    /// The live entry of `key`; an entry idle past its timeout is removed
    /// and counts as absent (SPEC §3.1 "idle entries expire").
    fn live(&mut self, key: &ConnKey, cfg: &ConntrackConfig, now_ns: u64) -> Option<&mut Conn> {
        if self.conns.get(key)?.expired(cfg, now_ns) {
            self.conns.remove(key);
            return None;
        }
        self.conns.get_mut(key)
    }
}

/// The NACL step's decision when it drops; `None` when it accepts or is
/// skipped (no ACL, or the remote address inside the vSwitch).
fn nacl_drop(rs: &Ruleset, eni: EniIdx, direction: Direction, header: &Packet) -> Option<Decision> {
    evaluate_nacl(rs, eni, direction, header)
        .decision()
        .filter(|d| d.verdict == Verdict::Drop)
        .cloned()
}

/// Whether the packet is ICMP of its own family (ICMP in IPv4, ICMPv6 in
/// IPv6): only then is there an ICMP header.
fn is_icmp(header: &Packet) -> bool {
    if header.is_v6() {
        header.proto == PROTO_ICMPV6
    } else {
        header.proto == PROTO_ICMP
    }
}

/// ICMP echo request or reply, which conntrack keys by identifier.
fn is_echo(header: &Packet) -> bool {
    is_icmp(header)
        && if header.is_v6() {
            matches!(header.icmp_type, 128 | 129)
        } else {
            matches!(header.icmp_type, 0 | 8)
        }
}

/// ICMP errors that quote the datagram they are about (SPEC §3.1): v4
/// destination unreachable, time exceeded, parameter problem; v6
/// destination unreachable, packet too big, time exceeded, parameter
/// problem.
pub fn is_icmp_error(header: &Packet) -> bool {
    is_icmp(header)
        && if header.is_v6() {
            (1..=4).contains(&header.icmp_type)
        } else {
            matches!(header.icmp_type, 3 | 11 | 12)
        }
}

/// Conntrack ports of a header: TCP/UDP ports, the echo id in both for ICMP
/// echo, 0 otherwise.
fn ct_ports(header: &Packet, icmp_id: u16) -> (u16, u16) {
    if is_echo(header) {
        (icmp_id, icmp_id)
    } else if matches!(header.proto, PROTO_TCP | PROTO_UDP) {
        (header.src_port, header.dst_port)
    } else {
        (0, 0)
    }
}

/// The same packet travelling the other way.
fn reversed(header: &Packet) -> Packet {
    Packet {
        src: header.dst,
        dst: header.src,
        src_port: header.dst_port,
        dst_port: header.src_port,
        ..*header
    }
}

/// Whether an accepted packet that no entry tracks opens a connection: any
/// but TCP, ICMP errors and echo replies (they answer something: the
/// instance sending one must not let the far side in), and TCP only with
/// SYN (no pickup mid-stream: ARCHITECTURE.md "Connection tracking").
fn opens(header: &Packet, flags: u8) -> bool {
    if is_icmp(header) {
        let echo_reply = is_echo(header) && is_echo_reply_type(header.is_v6(), header.icmp_type);
        return !(is_icmp_error(header) || echo_reply);
    }
    header.proto != PROTO_TCP || flags & tcp_flags::SYN != 0
}

/// `Conn::ct_flags` of a new connection: a FIN of its first packet, or an
/// echo entry.
fn first_ct_flags(header: &Packet, flags: u8) -> u8 {
    if header.proto == PROTO_TCP && flags & tcp_flags::FIN != 0 {
        ct_fin_flag(false)
    } else if is_echo(header) {
        CT_FLAG_ECHO
    } else {
        0
    }
}

/// State of a new connection from its accepted first packet.
fn first_state(header: &Packet, flags: u8) -> ConnState {
    match header.proto {
        // A FIN is half a close (`account`).
        PROTO_TCP if flags & tcp_flags::RST != 0 => ConnState::TcpClosing,
        PROTO_TCP if flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN => {
            ConnState::TcpSyn
        }
        // A SYN-ACK whose SYN is no longer tracked: the rules accepted it,
        // so it is established.
        PROTO_TCP => ConnState::TcpEstablished,
        PROTO_UDP => ConnState::Udp,
        _ if is_icmp(header) => ConnState::Icmp,
        _ => ConnState::Other,
    }
}

/// Accounts an accepted packet of a tracked connection and moves its state:
/// an RST, or a FIN once both ways have sent one → closing (a half-closed
/// connection keeps its timeout); a SYN answered by the other side →
/// established; UDP seen both ways → stream.
fn account(conn: &mut Conn, proto: u8, flags: u8, reply: bool, len: u32, now_ns: u64) {
    let dir = usize::from(reply);
    conn.packets[dir] += 1;
    conn.bytes[dir] += u64::from(len);
    conn.last_seen_ns = now_ns;
    conn.tcp_flags |= flags;
    conn.dir_tcp_flags[dir] |= flags;
    if proto == PROTO_TCP && flags & tcp_flags::FIN != 0 {
        conn.ct_flags |= ct_fin_flag(reply);
    }
    let both_fins = conn.ct_flags & CT_FLAG_FIN_BOTH == CT_FLAG_FIN_BOTH;
    conn.state = match (proto, conn.state) {
        (PROTO_TCP, _) if flags & tcp_flags::RST != 0 || both_fins => ConnState::TcpClosing,
        (PROTO_TCP, ConnState::TcpSyn) if reply => ConnState::TcpEstablished,
        (PROTO_UDP, ConnState::Udp) if reply => ConnState::UdpStream,
        (_, state) => state,
    };
}
