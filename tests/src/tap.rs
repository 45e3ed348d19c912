//! A VM's tap, played by the test: `/dev/net/tun` opened in a namespace
//! makes the interface (it goes when the value drops), and the test reads
//! the frames the host sends towards the "VM" and writes the frames the VM
//! would send.
use std::{
    fs::{File, OpenOptions},
    io::{self, Read as _},
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt as _},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};

use crate::netns::Netns;

/// `TUNSETIFF`, `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

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
            let mut req = IfReq {
                name: [0; libc::IFNAMSIZ],
                flags: IFF_TAP | IFF_NO_PI,
                _pad: [0; 22],
            };
            req.name[..owned.len()].copy_from_slice(owned.as_bytes());
            // SAFETY: TUNSETIFF reads an `ifreq`, which `req` is laid out as.
            let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
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
