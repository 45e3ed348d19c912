//! Connection tracking (SPEC §3.1) on top of the stateless evaluator: the
//! reference model of the whole per-packet pipeline, state included.
//!
//! [`evaluate`](super::evaluate) answers for the first packet of a
//! connection. A [`Tracker`] answers for a *sequence* of packets: it keeps
//! the connection table and the fragment memory the data plane keeps, with
//! an explicit clock, so that the kernel (`filter-ebpf`) can be checked
//! against it packet by packet, and its `FILTER_CT` against
//! [`Tracker::connections`].
//!
//! It follows the pipeline of `docs/ARCHITECTURE.md` ("Pipeline",
//! "Connection tracking"), one step per line of [`Tracker::process`]:
//!
//! ```text
//! IPv6 neighbour discovery              → pass
//! later fragment                        → the first fragment's verdict (none: drop)
//! ingress: NACL                         drop → drop
//! tracked (either direction)            → accept (tracked)
//!     generation changed, on_change: revalidate → security groups in the
//!     connection's original orientation: drop cuts the entry and drops,
//!     accept records the new rule and generation; keep → new generation
//! ICMP error quoting a tracked connection → accept (related)
//! security groups                       drop → drop
//! egress: NACL                          drop → drop
//! accept → account the tracked connection, or create its entry
//! first fragment → remember the verdict for the later ones
//! ```
//!
//! # Keys
//!
//! One table per interface (the kernel keys by ifindex: [`ConnKey::interface`]
//! is the ENI's `interface`, which stays the same across generations while
//! the ENI's index in the rule set need not). Within it a connection is its
//! protocol and its two endpoints, the smaller one (address as a number, then
//! port) first, so both directions meet (`CtKey`). Ports are the TCP or UDP
//! ports, the identifier (in both) for ICMP echo requests and replies, and 0
//! for everything else: all other ICMP messages, GRE and other protocols
//! between two addresses share one entry.
//!
//! # States
//!
//! TCP: a SYN (without ACK) creates `SYN`; the first packet from the other
//! side makes it `ESTABLISHED`; a FIN or RST (either side, from any state)
//! makes it `CLOSING`. Only a segment with SYN opens a connection: one
//! without SYN that no entry tracks is passed or dropped by the rules like a
//! first packet but creates no entry (no pickup mid-stream, so a connection
//! cut by a revalidation cannot come back in the other orientation when its
//! other end sends). A first SYN with FIN or RST creates `CLOSING`, a
//! SYN-ACK `ESTABLISHED`. UDP: one-way
//! until the other side answers, then a stream. ICMP and the rest have one
//! state each. Each state has its idle timeout from the running rule set's
//! `conntrack` section (a timeout of 0 means the SPEC default, as in the
//! kernel); an entry idle past it counts as absent and is removed when next
//! looked up. There is no size limit here: the model never evicts.
//!
//! # Not modelled
//!
//! Frames that are not IP (they pass before anything here), malformed
//! packets (the parser's business, SPEC §3.2), interfaces that are not
//! guarded, and the LRU eviction of a full table.
use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::IpAddr,
};

pub use filter_common::NS_PER_S;
use filter_common::{
    ct_state_name, GenConfig, CT_ICMP, CT_OTHER, CT_TCP_CLOSING, CT_TCP_ESTABLISHED, CT_TCP_SYN,
    CT_UDP, CT_UDP_STREAM, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, STAT_ACCEPT_FRAGMENT,
    STAT_ACCEPT_NEW, STAT_ACCEPT_RELATED, STAT_ACCEPT_TRACKED, STAT_DROP_DEFAULT,
    STAT_DROP_FRAGMENT, STAT_DROP_FRAG_NO_HEAD, STAT_DROP_NACL, STAT_DROP_REVALIDATE,
    STAT_DROP_SG_RULE, STAT_PASS_ND,
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

    /// The conntrack ports: see the module docs ("Keys").
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

/// A connection's key: see the module docs ("Keys").
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

/// Connection states (SPEC §3.1), each with its own timeout.
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
}

impl Conn {
    /// Whether the entry is idle past its state's timeout at `now_ns`.
    pub fn expired(&self, cfg: &ConntrackConfig, now_ns: u64) -> bool {
        now_ns.saturating_sub(self.last_seen_ns) > self.state.timeout_ns(cfg)
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
        let out = if let Some(conn) = self.live(&key, &rs.conntrack, now_ns) {
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
        } else if out.step == Step::AcceptNew && opens(header.proto, d.tcp_flags) {
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
/// but TCP, and TCP only with SYN (see the module docs).
fn opens(proto: u8, flags: u8) -> bool {
    proto != PROTO_TCP || flags & tcp_flags::SYN != 0
}

/// State of a new connection from its accepted first packet.
fn first_state(header: &Packet, flags: u8) -> ConnState {
    match header.proto {
        PROTO_TCP if flags & (tcp_flags::FIN | tcp_flags::RST) != 0 => ConnState::TcpClosing,
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
/// FIN or RST → closing; a SYN answered by the other side → established;
/// UDP seen both ways → stream.
fn account(conn: &mut Conn, proto: u8, flags: u8, reply: bool, len: u32, now_ns: u64) {
    let dir = usize::from(reply);
    conn.packets[dir] += 1;
    conn.bytes[dir] += u64::from(len);
    conn.last_seen_ns = now_ns;
    conn.tcp_flags |= flags;
    conn.dir_tcp_flags[dir] |= flags;
    conn.state = match (proto, conn.state) {
        (PROTO_TCP, _) if flags & (tcp_flags::FIN | tcp_flags::RST) != 0 => ConnState::TcpClosing,
        (PROTO_TCP, ConnState::TcpSyn) if reply => ConnState::TcpEstablished,
        (PROTO_UDP, ConnState::Udp) if reply => ConnState::UdpStream,
        (_, state) => state,
    };
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "test code")]
mod tests {
    //! One test per clause of SPEC §3.1 (and the pipeline order around it).
    //! Rule sets are documents, validated as `filterd` would; the world is
    //! one VPC `192.0.2.0/24` and `2001:db8::/48`, one vSwitch `192.0.2.0/25`
    //! and `2001:db8:0:1::/64`, one ENI `192.0.2.10` / `2001:db8:0:1::10` on
    //! interface `tap0`. Remotes are outside the vSwitch (`198.51.100.0/24`,
    //! `203.0.113.0/24`, `2001:db8:ff::/64`) unless a test says otherwise.
    use std::net::{IpAddr, SocketAddr};

    use serde_json::{json, Value};

    use super::*;
    use crate::{
        eval::evaluate,
        validate::{load, AnyInterface},
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
        load(&doc.to_string(), &AnyInterface)
            .unwrap_or_else(|e| panic!("test document: {e:?}\n{doc:#}"))
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
        assert_eq!(t.get(&key).unwrap().state, ConnState::TcpClosing);

        // Closing lasts tcp_closing_s (10 s) of idleness, then the reply is a
        // first packet again, and inbound is default-deny.
        let ack = tcp("198.51.100.1:80", "192.0.2.10:40000", tcp_flags::ACK);
        expect(
            &run(&mut t, &rs, IN, &ack, 13 * S),
            Step::AcceptTracked,
            &Reason::Tracked,
        );
        expect(
            &run(&mut t, &rs, IN, &ack, 23 * S + 1),
            Step::DropDefault,
            &Reason::DefaultDeny,
        );
        assert!(
            t.get(&key).is_none(),
            "the expired entry is removed when looked up"
        );
    }

    #[test]
    fn reply_without_a_flow_drops_on_ingress() {
        let rs = web_client();
        let mut t = Tracker::new();
        let synack = tcp(
            "198.51.100.1:80",
            "192.0.2.10:40000",
            tcp_flags::SYN | tcp_flags::ACK,
        );
        expect(
            &run(&mut t, &rs, IN, &synack, 0),
            Step::DropDefault,
            &Reason::DefaultDeny,
        );
        // A flow to another port does not make this one tracked.
        let syn = tcp("192.0.2.10:40001", "198.51.100.1:80", tcp_flags::SYN);
        run(&mut t, &rs, OUT, &syn, 0);
        expect(
            &run(&mut t, &rs, IN, &synack, 0),
            Step::DropDefault,
            &Reason::DefaultDeny,
        );
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
        let reply_head =
            udp("192.0.2.10:53", "198.51.100.1:4000").fragment(Fragment::First { id: 12 });
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
}
