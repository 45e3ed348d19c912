//! Probes: one UDP datagram each, from a fresh socket bound to one of
//! [`SOURCE_PORTS`], from one probed node to another's `PORTS`. Receivers
//! on every probed node note which probe arrived and when.
//!
//! Why a few source ports: filterd mirrors every flow the kernel's maps
//! hold (conntrack entries, and rejected flows until the LRU map evicts
//! them), so its memory follows the number of distinct flows seen. A
//! bounded set of flows saturates during the warm-up; growth after it is
//! a leak. A flow used again under a later generation is revalidated
//! (`conntrack.on_change: revalidate`), so its verdict is still the one
//! the evaluator gives a first packet.
//!
//! Why the verdict check is exact: the soak sends a round of probes only
//! after an apply has returned, and starts the next apply only once every
//! probe the enforced document accepts has arrived (or [`ARRIVAL_WAIT`]
//! has passed). So each probe is sent, and the ones that must arrive are
//! seen, while one generation is enforced. A probe that arrives although
//! that generation drops it is a wrong verdict unless it arrived later,
//! when a document that accepts it may have been enforced: it is judged
//! against every document enforced between its send and its arrival.
use std::{
    collections::HashMap,
    io,
    net::{Ipv6Addr, SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use filter_tests::cloud::{Family, Node};

use crate::site::PORTS;

/// The source ports probes are sent from (never one of `PORTS`, so no
/// probe is the reverse of another).
pub const SOURCE_PORTS: std::ops::Range<u16> = 40000..40004;

/// How long a probe the enforced document accepts may take to arrive.
pub const ARRIVAL_WAIT: Duration = Duration::from_secs(2);

/// One kind of probe: who sends, to whom, which family and port.
#[derive(Clone, Debug)]
pub struct Kind {
    pub from: Node,
    pub to: Node,
    pub family: Family,
    pub port: u16,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -> {} udp/{} {}",
            self.from, self.to, self.port, self.family
        )
    }
}

/// Every kind between the probed nodes.
pub fn kinds(nodes: &[Node]) -> Vec<Kind> {
    let mut out = Vec::new();
    for from in nodes {
        for to in nodes.iter().filter(|n| n.name != from.name) {
            for family in Family::BOTH {
                for port in PORTS {
                    out.push(Kind {
                        from: from.clone(),
                        to: to.clone(),
                        family,
                        port,
                    });
                }
            }
        }
    }
    out
}

/// When each probe arrived, by probe number.
#[derive(Clone, Default)]
pub struct Arrivals(Arc<Mutex<HashMap<u64, Instant>>>);

impl Arrivals {
    pub fn get(&self, probe: u64) -> Option<Instant> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&probe)
            .copied()
    }

    fn note(&self, probe: u64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(probe)
            .or_insert_with(Instant::now);
    }
}

/// The receivers on every probed node; they stop when dropped.
pub struct Receivers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub arrivals: Arrivals,
}

impl Receivers {
    pub fn start(nodes: &[Node]) -> Result<Receivers> {
        let mut receivers = Receivers {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            arrivals: Arrivals::default(),
        };
        for node in nodes {
            // One dual-stack socket per port, bound in the node's namespace.
            let sockets = node
                .netns
                .run(|| -> io::Result<Vec<UdpSocket>> {
                    PORTS
                        .iter()
                        .map(|&p| UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, p))))
                        .collect()
                })?
                .with_context(|| format!("receivers on {node}"))?;
            for socket in sockets {
                socket.set_read_timeout(Some(Duration::from_millis(100)))?;
                let (stop, arrivals) = (Arc::clone(&receivers.stop), receivers.arrivals.clone());
                receivers
                    .threads
                    .push(thread::spawn(move || receive(&socket, &stop, &arrivals)));
            }
        }
        Ok(receivers)
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn receive(socket: &UdpSocket, stop: &AtomicBool, arrivals: &Arrivals) {
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::SeqCst) {
        if let Ok(n) = socket.recv(&mut buf) {
            let probe = std::str::from_utf8(&buf[..n])
                .ok()
                .and_then(|t| t.strip_prefix("soak "))
                .and_then(|n| n.parse().ok());
            if let Some(probe) = probe {
                arrivals.note(probe);
            }
        }
    }
}

/// Binds a probe's socket to `local`. Ports repeat every few probes, and
/// a process the churn spawns holds a copy of every open socket from its
/// fork to its exec: an earlier probe's port may stay taken for that
/// long (a CI run failed on it), so a taken port is waited for, briefly.
fn bind(local: SocketAddr) -> io::Result<UdpSocket> {
    let mut waited = 0;
    loop {
        match UdpSocket::bind(local) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && waited < 100 => {
                waited += 1;
                thread::sleep(Duration::from_millis(2));
            }
            bound => return bound,
        }
    }
}

/// Sends probe `n` of each kind in `round` (`(number, kind)`), each from a
/// fresh socket in its sender's namespace: the source port of each, by
/// probe number.
pub fn send(round: &[(u64, &Kind)]) -> Result<HashMap<u64, u16>> {
    let mut ports = HashMap::new();
    let mut by_sender: HashMap<&str, Vec<(u64, &Kind)>> = HashMap::new();
    for &(n, kind) in round {
        by_sender
            .entry(&kind.from.name)
            .or_default()
            .push((n, kind));
    }
    for probes in by_sender.values() {
        let from = &probes[0].1.from;
        let sent = from
            .netns
            .run(|| -> io::Result<Vec<(u64, u16)>> {
                let mut sent = Vec::new();
                for (n, kind) in probes {
                    let to = SocketAddr::new(kind.to.addr(kind.family), kind.port);
                    let len = u64::from(SOURCE_PORTS.end - SOURCE_PORTS.start);
                    let port = SOURCE_PORTS.start + u16::try_from(n % len).unwrap_or(0);
                    let local: SocketAddr = match kind.family {
                        Family::V4 => (std::net::Ipv4Addr::UNSPECIFIED, port).into(),
                        Family::V6 => (Ipv6Addr::UNSPECIFIED, port).into(),
                    };
                    let socket = bind(local)?;
                    socket.send_to(format!("soak {n}").as_bytes(), to)?;
                    sent.push((*n, socket.local_addr()?.port()));
                }
                Ok(sent)
            })?
            .with_context(|| format!("sending probes from {from}"))?;
        ports.extend(sent);
    }
    Ok(ports)
}
