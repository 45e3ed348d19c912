//! A VM's tap, played by the test: `/dev/net/tun` opened in a namespace
//! makes the interface (it goes when the value drops), and the test reads
//! the frames the host sends towards the "VM" and writes the frames the VM
//! would send. Two taps [`relay`]ed make a VM's link without a VM: the
//! benchmark's TCP through a tap.
use std::{
    fs::{File, OpenOptions},
    io::{self, Read as _, Write as _},
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt as _},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};

use crate::netns::Netns;

/// `TUNSETIFF`, `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// `TUNSETOFFLOAD`, `_IOW('T', 208, unsigned int)`.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`.
const TUN_OFFLOADS: libc::c_ulong = 0x01 | 0x02 | 0x04;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// A tap interface and the VM end of it.
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Makes tap `name` in `ns`, with this process as its VM.
    pub fn create(ns: &Netns, name: &str) -> Result<Tap> {
        Self::open(ns, name, false)
    }

    /// [`Tap::create`] as a virtio NIC's backend: each frame behind a
    /// `virtio_net_hdr`, checksum and TSO offloads on, so TCP crosses it
    /// in segments of up to 64 KiB as it does to a vhost guest.
    pub fn create_offloading(ns: &Netns, name: &str) -> Result<Tap> {
        Self::open(ns, name, true)
    }

    fn open(ns: &Netns, name: &str, offloads: bool) -> Result<Tap> {
        ensure!(
            name.len() < libc::IFNAMSIZ,
            "{name}: too long for an interface"
        );
        let owned = name.to_owned();
        let file = ns.run(move || -> io::Result<File> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open("/dev/net/tun")?;
            let vnet = if offloads { IFF_VNET_HDR } else { 0 };
            let mut req = IfReq {
                name: [0; libc::IFNAMSIZ],
                flags: IFF_TAP | IFF_NO_PI | vnet,
                _pad: [0; 22],
            };
            req.name[..owned.len()].copy_from_slice(owned.as_bytes());
            // SAFETY: TUNSETIFF reads an `ifreq`, which `req` is laid out as.
            let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            if offloads {
                // SAFETY: TUNSETOFFLOAD takes its flags by value.
                let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETOFFLOAD, TUN_OFFLOADS) };
                if rc < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(file)
        })??;
        Ok(Tap {
            file,
            name: name.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every frame the host sent towards the VM within `wait`.
    pub fn frames(&mut self, wait: Duration) -> Result<Vec<Vec<u8>>> {
        let start = Instant::now();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        while start.elapsed() < wait {
            match self.file.read(&mut buf) {
                Ok(n) => out.push(buf[..n].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e).with_context(|| format!("reading {}", self.name)),
            }
        }
        Ok(out)
    }
}

/// Two taps' VM ends joined: each frame one sends is written to the
/// other, as read (headers included), on a thread per direction, until
/// the value drops. Frames a full or downed tap refuses are counted.
pub struct Relay {
    stop: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
    _taps: [Arc<Tap>; 2],
}

/// Joins `a` and `b` (both made the same way, so their frame headers
/// match).
pub fn relay(a: Tap, b: Tap) -> Result<Relay> {
    let (a, b) = (Arc::new(a), Arc::new(b));
    let stop = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for (from, to) in [(&a, &b), (&b, &a)] {
        let (from, to) = (Arc::clone(from), Arc::clone(to));
        let (stop, dropped) = (Arc::clone(&stop), Arc::clone(&dropped));
        let name = format!("relay-{}", from.name);
        threads.push(
            std::thread::Builder::new()
                .name(name)
                .spawn(move || copy_frames(&from.file, &to.file, &stop, &dropped))?,
        );
    }
    Ok(Relay {
        stop,
        dropped,
        threads,
        _taps: [a, b],
    })
}

impl Relay {
    /// Frames read that the other tap refused.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One direction of [`relay`]: waits up to 100 ms at a time, so a stop is
/// seen within that.
fn copy_frames(mut from: &File, mut to: &File, stop: &AtomicBool, dropped: &AtomicU64) {
    // A 64 KiB segment, its Ethernet header and its `virtio_net_hdr`.
    let mut buf = vec![0u8; 96 << 10];
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: from.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid `pollfd`, for the duration of the call.
        if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
            continue;
        }
        loop {
            match from.read(&mut buf) {
                Ok(n) => {
                    if to.write(&buf[..n]).is_err() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

/// The IPv4 TCP SYNs among `frames`, as (source, destination port).
pub fn tcp_syns(frames: &[Vec<u8>]) -> Vec<(std::net::Ipv4Addr, u16)> {
    frames
        .iter()
        .filter_map(|f| {
            // Ethernet, IPv4 without options (what the host's stack sends).
            let is_ipv4 = f.get(12..14)? == [0x08, 0x00];
            let ip = f.get(14..34).filter(|ip| ip[0] == 0x45)?;
            let tcp = f.get(34..48)?;
            let syn = tcp[13] & 0x12 == 0x02;
            (is_ipv4 && ip[9] == 6 && syn).then(|| {
                (
                    std::net::Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
                    u16::from_be_bytes([tcp[2], tcp[3]]),
                )
            })
        })
        .collect()
}
