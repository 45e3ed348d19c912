//! Real traffic across the veth pair, counted where the server's stack
//! receives it.
//!
//! Three loads, each sent from the client namespace for a warm-up and then
//! a measured interval:
//!
//! - **new flows**: UDP datagrams to the server's port, every one from a
//!   new (source address, source port) of `192.0.2.0/24` (raw socket,
//!   `sendmmsg` batches), so every packet is the first of its connection
//!   for every filter: a conntrack entry is created for each.
//! - **established flow**: one UDP flow the server has answered, the same
//!   datagram over and over (`sendmmsg` on a connected socket).
//! - **TCP stream**: one connection, the client writing 128 KiB buffers.
//!
//! Datagrams are counted from the server namespace's UDP statistics
//! (`InDatagrams + InErrors`: what the stack delivered to the socket or
//! found its buffer full for), so a slow reader never makes a filter look
//! slow; a reader thread drains the socket all the same. TCP is counted in
//! bytes the server read.
use std::{
    io::{Read, Write},
    mem,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};

use filter_tests::netns::Netns;

use crate::rules::{BENCH_PORT, CLIENT_V4, ENI_V4};

/// Warm-up and measured interval, and how many times each load is
/// measured (the median is reported).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub warmup: Duration,
    pub measure: Duration,
    pub repeats: u32,
}

/// The next new-flow tuple, for the whole run: the data plane's
/// connection table outlives a pair of namespaces (and interface indices
/// repeat in fresh namespaces), so a tuple is never sent twice.
static NEXT_TUPLE: AtomicU64 = AtomicU64::new(0);

/// The UDP statistics of a namespace that matter here.
#[derive(Clone, Copy, Debug, Default)]
pub struct UdpStats {
    pub in_datagrams: u64,
    pub no_ports: u64,
    pub in_errors: u64,
}

impl UdpStats {
    pub fn read(ns: &Netns) -> Result<Self> {
        let snmp = ns.run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))??;
        let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            bail!("no Udp lines in /proc/net/snmp");
        };
        let mut out = Self::default();
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            let value: u64 = value.parse().unwrap_or(0);
            match name {
                "InDatagrams" => out.in_datagrams = value,
                "NoPorts" => out.no_ports = value,
                "InErrors" => out.in_errors = value,
                _ => {}
            }
        }
        Ok(out)
    }

    /// Datagrams that reached a socket (queued or found its buffer full).
    pub fn delivered(&self) -> u64 {
        self.in_datagrams + self.in_errors
    }
}

/// The server's UDP socket on the bench port and a thread draining it.
pub struct Sink {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Sink {
    /// Binds the port; when `answer_first` the first datagram is answered
    /// (so the flow it belongs to counts as established everywhere).
    pub fn start(server: &Netns, answer_first: bool) -> Result<Self> {
        let sock = server.run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, BENCH_PORT)))??;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut answered = !answer_first;
            while !flag.load(Ordering::Relaxed) {
                if let Ok((_, from)) = sock.recv_from(&mut buf) {
                    if !answered {
                        answered = sock.send_to(b"hello", from).is_ok();
                    }
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Packets per second the server's stack delivered while `send` ran in the
/// client namespace.
fn udp_rate(
    client: &Netns,
    server: &Netns,
    timing: Timing,
    send: impl FnOnce(&AtomicBool) -> Result<u64> + Send,
) -> Result<f64> {
    let stop = AtomicBool::new(false);
    thread::scope(|s| -> Result<f64> {
        let sender = s.spawn(|| -> Result<u64> { client.run(|| send(&stop))? });
        let measured = per_second(timing, || Ok(UdpStats::read(server)?.delivered()));
        stop.store(true, Ordering::Relaxed);
        let sent = match sender.join() {
            Ok(r) => r?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        if sent == 0 {
            bail!("the sender sent nothing");
        }
        measured
    })
}

/// How fast `count` grows over the measured interval, after the warm-up.
fn per_second(timing: Timing, count: impl Fn() -> Result<u64>) -> Result<f64> {
    thread::sleep(timing.warmup);
    let (t0, a) = (Instant::now(), count()?);
    thread::sleep(timing.measure);
    let (t1, b) = (Instant::now(), count()?);
    Ok(b.saturating_sub(a) as f64 / (t1 - t0).as_secs_f64())
}

/// New flows per second (see the module comment).
pub fn new_flows(client: &Netns, server: &Netns, timing: Timing) -> Result<f64> {
    let _sink = Sink::start(server, false)?;
    udp_rate(client, server, timing, |stop| {
        // SAFETY: plain socket(2); the fd is owned at once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("raw socket");
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        connect(&fd, ENI_V4, 0)?;
        let mut batch = Batch::new(|_| udp4_datagram(CLIENT_V4, 1024, ENI_V4, BENCH_PORT, 32));
        // Every datagram from a new (address, port): addresses .16 to .250
        // of the client's /24, ports 1024 and up; 15 million tuples.
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let first = NEXT_TUPLE.fetch_add(BATCH as u64, Ordering::Relaxed);
            for (next, packet) in (first..).zip(batch.packets.iter_mut()) {
                let host = 16 + (next % 235) as u8;
                let port = 1024 + ((next / 235) % 64_512) as u16;
                packet[15] = host;
                packet[20..22].copy_from_slice(&port.to_be_bytes());
            }
            sent += batch.send(&fd)?;
        }
        if NEXT_TUPLE.load(Ordering::Relaxed) > 235 * 64_512 {
            eprintln!("WARNING: new-flow tuples wrapped around; later new flows may be tracked");
        }
        Ok(sent)
    })
}

/// Packets per second of one established UDP flow.
pub fn established(client: &Netns, server: &Netns, timing: Timing) -> Result<f64> {
    let _sink = Sink::start(server, true)?;
    let sock = client.run(|| UdpSocket::bind((CLIENT_V4, 0)))??;
    sock.connect((ENI_V4, BENCH_PORT))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    // The server answers the first datagram: the flow is established.
    let mut buf = [0u8; 64];
    let mut answered = false;
    for _ in 0..5 {
        sock.send(b"hello")?;
        if sock.recv(&mut buf).is_ok() {
            answered = true;
            break;
        }
    }
    if !answered {
        bail!("the server never answered: the established flow is not allowed");
    }
    udp_rate(client, server, timing, |stop| {
        let payload = vec![0x5au8; 32];
        let mut batch = Batch::new(|_| payload.clone());
        let fd = sock.as_raw_fd();
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            sent += batch.send_raw(fd)?;
        }
        Ok(sent)
    })
}

/// Gbit/s of one TCP stream from the client to the server.
pub fn tcp_stream(client: &Netns, server: &Netns, timing: Timing) -> Result<f64> {
    tcp_stream_to(client, server, ENI_V4, timing)
}

/// Gbit/s of one TCP stream from the client to `to`, an address of the
/// server.
pub fn tcp_stream_to(client: &Netns, server: &Netns, to: Ipv4Addr, timing: Timing) -> Result<f64> {
    let listener = server.run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, BENCH_PORT)))??;
    let received = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    thread::scope(|s| -> Result<f64> {
        let reader = s.spawn(|| -> Result<()> {
            let (mut conn, _) = listener.accept()?;
            conn.set_read_timeout(Some(Duration::from_millis(200)))?;
            let mut buf = vec![0u8; 256 << 10];
            while !stop.load(Ordering::Relaxed) {
                match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        received.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        });
        let writer = s.spawn(|| -> Result<()> {
            let addr = SocketAddr::V4(SocketAddrV4::new(to, BENCH_PORT));
            let mut conn =
                client.run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(5)))??;
            conn.set_write_timeout(Some(Duration::from_millis(200)))?;
            let buf = vec![0x5au8; 128 << 10];
            while !stop.load(Ordering::Relaxed) {
                match conn.write(&buf) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    // The measurement is over and the reader closed first,
                    // with data still unread: its kernel answers with a
                    // reset. That ends the stream; it is not a failure.
                    Err(e)
                        if stop.load(Ordering::Relaxed)
                            && matches!(
                                e.kind(),
                                std::io::ErrorKind::ConnectionReset
                                    | std::io::ErrorKind::BrokenPipe
                            ) =>
                    {
                        break
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        });
        let measured = per_second(timing, || Ok(received.load(Ordering::Relaxed)))
            .map(|bytes| bytes * 8.0 / 1e9);
        stop.store(true, Ordering::Relaxed);
        for handle in [writer, reader] {
            match handle.join() {
                Ok(r) => r?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        measured
    })
}

/// Whether datagrams to a port no rule opens get through: sends `count`
/// and returns how many reached the server's stack (it has no socket on
/// that port, so each one that passed counts as `NoPorts`).
pub fn closed_port_passes(client: &Netns, server: &Netns, count: u64) -> Result<u64> {
    let before = UdpStats::read(server)?;
    let sock = client.run(|| UdpSocket::bind((CLIENT_V4, 0)))??;
    for _ in 0..count {
        sock.send_to(b"closed", (ENI_V4, BENCH_PORT + 1))?;
    }
    thread::sleep(Duration::from_millis(200));
    let after = UdpStats::read(server)?;
    Ok(after.no_ports - before.no_ports)
}

/// A raw IPv4 + UDP datagram (IP checksum left to the kernel, no UDP
/// checksum).
fn udp4_datagram(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: usize) -> Vec<u8> {
    let total = 20 + 8 + payload;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend(std::iter::repeat_n(0x5a, payload));
    p
}

fn connect(fd: &OwnedFd, addr: Ipv4Addr, port: u16) -> Result<()> {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a valid sockaddr_in of the size given.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&sin as *const libc::sockaddr_in).cast(),
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("connecting the raw socket");
    }
    Ok(())
}

/// 64 packets sent with one `sendmmsg`.
struct Batch {
    packets: Vec<Vec<u8>>,
}

const BATCH: usize = 64;

impl Batch {
    fn new(make: impl FnMut(usize) -> Vec<u8>) -> Self {
        Self {
            packets: (0..BATCH).map(make).collect(),
        }
    }

    fn send(&mut self, fd: &OwnedFd) -> Result<u64> {
        self.send_raw(fd.as_raw_fd())
    }

    /// Sends the batch on a connected socket; how many left.
    fn send_raw(&mut self, fd: i32) -> Result<u64> {
        let mut iov: Vec<libc::iovec> = self
            .packets
            .iter_mut()
            .map(|p| libc::iovec {
                iov_base: p.as_mut_ptr().cast(),
                iov_len: p.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: all-zero is a valid msghdr (no name, no control).
                let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: `msgs` points at `BATCH` headers whose iovecs point into
        // `self.packets`, all alive for the call.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as u32, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            // A full queue somewhere on the way: the packets are lost,
            // which the receiver's count shows.
            if matches!(e.raw_os_error(), Some(libc::ENOBUFS) | Some(libc::EAGAIN)) {
                return Ok(0);
            }
            return Err(anyhow!(e)).context("sendmmsg");
        }
        Ok(n as u64)
    }
}
