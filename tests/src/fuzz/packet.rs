//! Target `packet` (root): a document built from the bytes is compiled
//! and written into the real eBPF object, then a short sequence of frames,
//! also from the bytes, runs through `filter_xdp` and `filter_tc` with
//! BPF_PROG_TEST_RUN, each checked against the reference evaluator
//! (`filter::eval::conntrack`, as `tests/differential.rs` does): the same
//! verdict, and exactly the `FILTER_STATS` counter the model names moves,
//! by one. The last frame may be mutated (cut short, bytes overwritten);
//! the model cannot read such a frame, so it only has to get a verdict and
//! exactly one counter, and the sequence ends there.
//!
//! The object is loaded once per process; each input starts from an empty
//! conntrack table and a fresh model, so an input replays the same way on
//! its own (a corpus file, a crash).
use std::{
    net::IpAddr,
    sync::{Mutex, PoisonError},
    time::Instant,
};

use arbitrary::{Result, Unstructured};
use filter::{
    compile::{compile, Compiled, SlotTable},
    dataplane::{Dataplane, GenerationMaps},
    eval::conntrack::{Datagram, Tracker},
    verdict::{Packet, Verdict},
};
use filter_common::{PROTO_GRE, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, STAT_COUNT};

use super::gen;
use crate::{
    bpf::{stat_label, Prog, Verdict as ProgVerdict},
    packet::{Gre, Icmp, Ipv4, Ipv6, Layer, Pkt, Tcp, Udp},
};

/// Frames per input at most.
const MAX_FRAMES: usize = 8;

struct Kernel {
    dp: Dataplane,
    slots: SlotTable,
    generation: u32,
}

static KERNEL: Mutex<Option<Kernel>> = Mutex::new(None);

impl Kernel {
    fn load() -> Kernel {
        Kernel {
            dp: match Dataplane::load(None) {
                Ok(dp) => dp,
                Err(e) => panic!("loading the data plane (root?): {e}"),
            },
            slots: SlotTable::default(),
            generation: 0,
        }
    }
}

/// Loads the object now (the verifier takes seconds), so that the first
/// input is timed like the others.
pub fn packet_init() {
    let mut kernel = KERNEL.lock().unwrap_or_else(PoisonError::into_inner);
    kernel.get_or_insert_with(Kernel::load);
}

pub fn packet(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Some((doc, rs)) = gen::ruleset(&mut u) else {
        return;
    };
    let mut kernel = KERNEL.lock().unwrap_or_else(PoisonError::into_inner);
    let kernel = kernel.get_or_insert_with(Kernel::load);
    let generation = kernel.generation + 1;
    let Ok(c) = compile(&rs, generation, &gen::ifindex_of, &mut kernel.slots) else {
        return;
    };
    kernel.generation = generation;
    if let Err(e) = write(&mut kernel.dp, &c) {
        panic!("writing generation {generation}: {e}");
    }
    if let Err(e) = kernel.dp.clear_conntrack() {
        panic!("clearing the conntrack table: {e}");
    }
    let mut tracker = Tracker::new();
    let start = Instant::now();
    for _ in 0..MAX_FRAMES {
        let Ok(frame) = Frame::arbitrary(&mut u) else {
            return;
        };
        let dir = frame.hook.direction(rs.enis[0].mode);
        let Some(bytes) = frame.bytes() else {
            return;
        };
        let before = stats(&kernel.dp);
        let Some(got) = run(&mut kernel.dp, frame.hook, &bytes) else {
            // Refused before the program ran (a frame too short for the
            // kernel to hand over).
            return;
        };
        let moved: Vec<u32> = (0..STAT_COUNT)
            .filter(|&i| stats(&kernel.dp)[i as usize] != before[i as usize])
            .collect();
        let after = stats(&kernel.dp);
        let only_one =
            moved.len() == 1 && after[moved[0] as usize] == before[moved[0] as usize] + 1;
        let moved_text = moved
            .iter()
            .map(|&i| stat_label(i))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(
            matches!(got, ProgVerdict::Pass | ProgVerdict::Drop),
            "{} returned {got} for {frame:?}",
            frame.hook
        );
        assert!(
            only_one,
            "{}: counters moved [{moved_text}] for {frame:?}",
            frame.hook
        );
        if frame.mutation.is_some() {
            return;
        }
        let now = start.elapsed().as_nanos() as u64;
        let d = frame.datagram(bytes.len());
        let want = tracker.process_detailed(&rs, generation, 0, dir, &d, now);
        let want_verdict = match want.decision.verdict {
            Verdict::Accept => ProgVerdict::Pass,
            Verdict::Drop => ProgVerdict::Drop,
        };
        assert_eq!(
            (got, moved_text.as_str()),
            (want_verdict, stat_label(want.step.stat()).as_str()),
            "{} {dir:?}: kernel and model differ on {frame:?} (model: {}) under\n{doc:#}",
            frame.hook,
            want.decision.reason
        );
    }
}

fn write(dp: &mut Dataplane, c: &Compiled) -> filter::dataplane::Result<()> {
    for slot in &c.fresh_slots {
        dp.reset_rule_stats(*slot)?;
    }
    let summary = dp.write_generation(&GenerationMaps::from(c))?;
    if let Some(e) = summary.cleanup_error {
        panic!("generation {}: cleanup failed: {e}", c.generation);
    }
    Ok(())
}

fn stats(dp: &Dataplane) -> [u64; STAT_COUNT as usize] {
    match dp.stats() {
        Ok(stats) => stats,
        Err(e) => panic!("reading FILTER_STATS: {e}"),
    }
}

/// One test run; `None` when the kernel refuses the frame.
fn run(dp: &mut Dataplane, prog: Prog, frame: &[u8]) -> Option<ProgVerdict> {
    prog.test_run(dp, frame).ok()
}

/// The transport part of a frame.
#[derive(Debug)]
enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// Echo request or reply.
    Echo {
        icmp_type: u8,
        id: u16,
    },
    /// Any other ICMP type, with a body that quotes nothing readable.
    Icmp {
        icmp_type: u8,
    },
    Gre,
    /// A protocol the parser does not read.
    Other(u8),
}

/// How the finished frame is damaged.
#[derive(Debug)]
enum Mutation {
    Cut(usize),
    Overwrite(Vec<(usize, u8)>),
}

#[derive(Debug)]
struct Frame {
    hook: Prog,
    src: IpAddr,
    dst: IpAddr,
    l4: L4,
    mutation: Option<Mutation>,
}

impl Frame {
    fn arbitrary(u: &mut Unstructured<'_>) -> Result<Frame> {
        let hook = if u.arbitrary()? { Prog::Xdp } else { Prog::Tc };
        let v6: bool = u.arbitrary()?;
        let addr = |u: &mut Unstructured<'_>| -> Result<IpAddr> {
            loop {
                let a: IpAddr = gen::address(u)?
                    .parse()
                    .map_err(|_| arbitrary::Error::IncorrectFormat)?;
                if a.is_ipv6() == v6 {
                    return Ok(a);
                }
                if u.is_empty() {
                    return Err(arbitrary::Error::NotEnoughData);
                }
            }
        };
        let (src, dst) = (addr(u)?, addr(u)?);
        let l4 = match u.int_in_range(0..=9)? {
            0..=2 => L4::Tcp {
                sport: gen::port(u)?,
                dport: gen::port(u)?,
                flags: *gen::pick(u, &[0x02, 0x12, 0x10, 0x18, 0x11, 0x04, 0x14, 0x00])?,
            },
            3..=4 => L4::Udp {
                sport: gen::port(u)?,
                dport: gen::port(u)?,
            },
            5..=6 => L4::Echo {
                icmp_type: *gen::pick(u, if v6 { &[128, 129] } else { &[8, 0] })?,
                id: u.arbitrary()?,
            },
            7 => L4::Icmp {
                icmp_type: *gen::pick(
                    u,
                    if v6 {
                        &[1, 2, 3, 4, 130, 133, 134, 135, 136, 137, 138][..]
                    } else {
                        &[3, 5, 9, 11, 12, 13][..]
                    },
                )?,
            },
            8 => L4::Gre,
            _ => L4::Other(*gen::pick(
                u,
                &[if v6 { PROTO_ICMP } else { PROTO_ICMPV6 }, 132, 253, 50],
            )?),
        };
        let mutation = match u.int_in_range(0..=7)? {
            0 => Some(Mutation::Cut(u.int_in_range(14..=120)?)),
            1 => Some(Mutation::Overwrite(
                (0..u.int_in_range(1..=4)?)
                    .map(|_| Ok((u.int_in_range(0..=90)?, u.arbitrary()?)))
                    .collect::<Result<_>>()?,
            )),
            _ => None,
        };
        Ok(Frame {
            hook,
            src,
            dst,
            l4,
            mutation,
        })
    }

    fn proto(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => PROTO_TCP,
            L4::Udp { .. } => PROTO_UDP,
            L4::Echo { .. } | L4::Icmp { .. } if self.dst.is_ipv6() => PROTO_ICMPV6,
            L4::Echo { .. } | L4::Icmp { .. } => PROTO_ICMP,
            L4::Gre => PROTO_GRE,
            L4::Other(p) => p,
        }
    }

    /// The frame's bytes, mutated; `None` when a mutation misses it.
    fn bytes(&self) -> Option<Vec<u8>> {
        let v6 = self.dst.is_ipv6();
        let (ip, raw): (Layer, bool) = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut h = Ipv4::new(s.octets(), d.octets());
                let raw = matches!(self.l4, L4::Other(_));
                if raw {
                    h = h.proto(self.proto());
                }
                (h.into(), raw)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut h = Ipv6::new(s.octets(), d.octets());
                let raw = matches!(self.l4, L4::Other(_));
                if raw {
                    h = h.next_header(self.proto());
                }
                (h.into(), raw)
            }
            _ => return None,
        };
        let l4: Layer = match self.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => Tcp::new(sport, dport).flags(flags).into(),
            L4::Udp { sport, dport } => Udp::new(sport, dport).into(),
            L4::Echo { icmp_type, id } => {
                let mut m = if v6 {
                    Icmp::v6_echo_request(id, 1)
                } else {
                    Icmp::echo_request(id, 1)
                };
                m.icmp_type = icmp_type;
                m.into()
            }
            L4::Icmp { icmp_type } => {
                let m = if v6 {
                    Icmp::v6(icmp_type, 0)
                } else {
                    Icmp::v4(icmp_type, 0)
                };
                m.body(&[0x5a; 8]).into()
            }
            L4::Gre => Gre::default().into(),
            L4::Other(_) => Layer::Raw(vec![0xa5; 8]),
        };
        debug_assert!(raw == matches!(l4, Layer::Raw(_)));
        let mut bytes = Pkt::eth()
            .push(ip)
            .push(l4)
            .payload(&[0x42; 6])
            .build()
            .bytes;
        match &self.mutation {
            None => {}
            Some(Mutation::Cut(len)) => {
                if *len >= bytes.len() {
                    return None;
                }
                bytes.truncate(*len);
            }
            Some(Mutation::Overwrite(writes)) => {
                for (at, value) in writes {
                    *bytes.get_mut(*at)? = *value;
                }
            }
        }
        Some(bytes)
    }

    /// What the model reads of the (unmutated) frame.
    fn datagram(&self, frame_len: usize) -> Datagram {
        let mut header = Packet {
            src: self.src,
            dst: self.dst,
            proto: self.proto(),
            src_port: 0,
            dst_port: 0,
            icmp_type: 0,
        };
        let mut d = Datagram::new(header);
        match self.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                (header.src_port, header.dst_port) = (sport, dport);
                d = Datagram::new(header).tcp_flags(flags & 0x3f);
            }
            L4::Udp { sport, dport } => {
                (header.src_port, header.dst_port) = (sport, dport);
                d = Datagram::new(header);
            }
            L4::Echo { icmp_type, id } => {
                header.icmp_type = icmp_type;
                d = Datagram::new(header).echo_id(id);
            }
            L4::Icmp { icmp_type } => {
                header.icmp_type = icmp_type;
                d = Datagram::new(header);
            }
            L4::Gre | L4::Other(_) => {}
        }
        // IP-layer bytes: the frame less its Ethernet header.
        d.bytes((frame_len - 14) as u32)
    }
}
