//! Which program filters an interface's ingress (SPEC §2.4 `hook`). XDP on
//! a virtual device takes GSO/TSO away from the sender (about two thirds of
//! a veth's TCP throughput, measured), where tcx ingress costs nothing
//! measurable; on a NIC native XDP drops before the stack allocates
//! anything. `auto` tells the two apart by the driver: a device without a
//! bus (veth, tun/tap, bridges, tunnels, dummies) is virtual.
use std::{io, os::fd::AsRawFd};

use super::attach::IngressHook;
use crate::ruleset::HookChoice;

/// The ingress hook for `ifname` under `choice`.
pub fn resolve(ifname: &str, choice: HookChoice) -> IngressHook {
    match choice {
        HookChoice::Xdp => IngressHook::Xdp,
        HookChoice::Tc => IngressHook::Tc,
        HookChoice::Auto => match driver(ifname) {
            Ok(d) if !d.is_virtual() => IngressHook::Xdp,
            Ok(_) => IngressHook::Tc,
            Err(e) => {
                tracing::debug!("{ifname}: no driver information ({e}); taking it as virtual");
                IngressHook::Tc
            }
        },
    }
}

/// What `ETHTOOL_GDRVINFO` says of a device.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Driver {
    name: String,
    bus: String,
}

impl Driver {
    fn is_virtual(&self) -> bool {
        self.bus.is_empty() || matches!(self.name.as_str(), "veth" | "tun" | "netkit")
    }
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GDRVINFO: u32 = 0x3;

/// `struct ethtool_drvinfo`.
#[repr(C)]
struct DrvInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// `struct ifreq` with `ifr_data`.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut DrvInfo,
    _pad: [u8; 16],
}

fn driver(ifname: &str) -> io::Result<Driver> {
    if ifname.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: a plain socket call; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        version: [0; 32],
        fw_version: [0; 32],
        bus_info: [0; 32],
        erom_version: [0; 32],
        reserved2: [0; 12],
        n_priv_flags: 0,
        n_stats: 0,
        testinfo_len: 0,
        eedump_len: 0,
        regdump_len: 0,
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut info,
        _pad: [0; 16],
    };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: SIOCETHTOOL reads the name and writes through `data`, which
    // points at `info`, alive for the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let text = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    Ok(Driver {
        name: text(&info.driver),
        bus: text(&info.bus_info),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_choices_are_kept() {
        assert_eq!(resolve("anything0", HookChoice::Xdp), IngressHook::Xdp);
        assert_eq!(resolve("anything0", HookChoice::Tc), IngressHook::Tc);
    }

    #[test]
    fn virtual_devices_get_tc() {
        let veth = Driver {
            name: "veth".into(),
            bus: String::new(),
        };
        let tap = Driver {
            name: "tun".into(),
            bus: "tap".into(),
        };
        let nic = Driver {
            name: "virtio_net".into(),
            bus: "0000:00:05.0".into(),
        };
        assert!(veth.is_virtual() && tap.is_virtual() && !nic.is_virtual());
        // `lo` has no ethtool driver information: virtual.
        assert_eq!(resolve("lo", HookChoice::Auto), IngressHook::Tc);
    }
}
