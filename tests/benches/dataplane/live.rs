//! Live frames on a veth pair: BPF_PROG_TEST_RUN with
//! `BPF_F_TEST_XDP_LIVE_FRAMES` (aya has no flag for it, so a raw `bpf()`
//! call) runs a generator of `filter-ebpf/src/bench/live.rs` on one end of
//! the pair, whose `XDP_TX` sends every run's frame out to the other,
//! guarded end. One CPU makes the frames and, in the same softirq, runs the
//! guarded end's NAPI: what the guarded end costs shows as frames per
//! second.
//!
//! The guarded end needs NAPI to take redirected frames: an XDP program
//! gives it, otherwise [`enable_napi`] turns GRO on.
use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::PerCpuArray,
    programs::{xdp::XdpLinkId, Xdp, XdpMode},
    Ebpf,
};
use filter_tests::{
    netns::Netns,
    packet::{tcp_flags::SYN, Ipv4, Pkt, Tcp, Udp},
};
use serde_json::Value;

use crate::testrun::as_xdp;

const TX: &str = "filter_live_tx";
const TX_RANDOM: &str = "filter_live_tx_random";
const SINK: &str = "filter_live_sink";
const SEEN: &str = "FILTER_LIVE_SEEN";

/// The frames' size: Ethernet header to the end of the payload (a veth
/// has no FCS); 64 bytes, the minimum Ethernet frame.
pub const FRAME_LEN: usize = 64;
/// Frames per BPF_PROG_TEST_RUN call: from the first, doubled while a
/// call takes less than [`CALL_TIME`], up to the last; calls repeat until
/// the time is up. A slow guarded end (a linear iptables chain drops a few
/// thousand frames a second) then never overruns the time by much.
const REPEAT_FIRST: u32 = 1 << 10;
const REPEAT_MAX: u32 = 1 << 20;
const CALL_TIME: Duration = Duration::from_millis(50);

/// Which tuples the frames carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tuples {
    /// The template as it is, every frame.
    Repeated,
    /// A random low half of the source address and a random source port
    /// per frame (a flood of new tuples).
    Random,
}

/// What one [`LiveFrames::send`] measured, frames per second.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    /// Frames the generator made.
    pub made: f64,
    /// Frames the guarded end's counter saw.
    pub seen: f64,
}

/// The generators and the sink, loaded from the benchmark's object.
pub struct LiveFrames {
    ebpf: Ebpf,
}

impl LiveFrames {
    pub fn load() -> Result<Self> {
        let mut ebpf = crate::testrun::load_mapless()?;
        for name in [TX, TX_RANDOM, SINK] {
            as_xdp(ebpf.program_mut(name), name)?
                .load()
                .with_context(|| format!("loading {name}"))?;
        }
        Ok(Self { ebpf })
    }

    fn prog(&mut self, name: &str) -> Result<&mut Xdp> {
        as_xdp(self.ebpf.program_mut(name), name)
    }

    fn prog_fd(&self, name: &str) -> Result<i32> {
        let prog: &Xdp = self
            .ebpf
            .program(name)
            .ok_or_else(|| anyhow!("the object has no {name}"))?
            .try_into()?;
        Ok(prog.fd()?.as_fd().as_raw_fd())
    }

    /// Sends [`FRAME_LEN`]-byte frames of `template` (IPv4 without
    /// options, TCP or UDP) for `seconds` from `sender_if` in `sender`, the
    /// peer of a guarded veth end; returns the frames per second made and
    /// those `seen` (a counter at the guarded end, read before and after)
    /// counted. The sending thread is pinned to the last CPU. Frames the
    /// guarded end's IP stack must take (iptables) need its MAC ([`mac`]) as
    /// their destination.
    pub fn send(
        &self,
        sender: &Netns,
        sender_if: &str,
        template: &[u8],
        tuples: Tuples,
        seconds: f64,
        seen: &mut dyn FnMut() -> Result<u64>,
    ) -> Result<Rate> {
        if template.len() != FRAME_LEN {
            bail!(
                "a live-frames template has {FRAME_LEN} bytes, not {}",
                template.len()
            );
        }
        let name = match tuples {
            Tuples::Repeated => TX,
            Tuples::Random => TX_RANDOM,
        };
        let fd = self.prog_fd(name)?;
        let ifname = sender_if.to_owned();
        let time = Duration::from_secs_f64(seconds);
        let before = seen()?;
        let (made, elapsed) = sender.run(move || -> Result<(u64, Duration)> {
            pin_to_last_cpu()?;
            let ifindex = nix::net::if_::if_nametoindex(ifname.as_str())
                .with_context(|| format!("{ifname}: no such interface"))?;
            let start = Instant::now();
            let mut made = 0u64;
            let mut repeat = REPEAT_FIRST;
            while start.elapsed() < time {
                let call = Instant::now();
                test_run_live(fd, template, ifindex, repeat)
                    .with_context(|| format!("live frames out of {ifname}"))?;
                made += u64::from(repeat);
                if call.elapsed() < CALL_TIME && repeat < REPEAT_MAX {
                    repeat *= 2;
                }
            }
            Ok((made, start.elapsed()))
        })??;
        let after = seen()?;
        let secs = elapsed.as_secs_f64();
        Ok(Rate {
            made: made as f64 / secs,
            seen: after.saturating_sub(before) as f64 / secs,
        })
    }

    /// Attaches the sink (count and drop: the ceiling) to `iface` in `ns`.
    pub fn attach_sink(&mut self, ns: &Netns, iface: &str) -> Result<XdpLinkId> {
        let prog = self.prog(SINK)?;
        ns.run(|| prog.attach(iface, XdpMode::default()))?
            .with_context(|| format!("attaching {SINK} to {iface}"))
    }

    pub fn detach_sink(&mut self, link: XdpLinkId) -> Result<()> {
        Ok(self.prog(SINK)?.detach(link)?)
    }

    /// Frames the sink has counted (all CPUs).
    pub fn sink_seen(&self) -> Result<u64> {
        let map = self
            .ebpf
            .map(SEEN)
            .ok_or_else(|| anyhow!("the benchmark's object has no {SEEN}"))?;
        let counts = PerCpuArray::<_, u64>::try_from(map)?.get(&0, 0)?;
        Ok(counts.iter().sum())
    }
}

/// A 64-byte UDP datagram from `src:40000` to `dst:dport`.
pub fn udp_frame(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    const HEADERS: usize = 14 + 20 + 8;
    Pkt::eth()
        .push(Ipv4::new(src, dst))
        .push(Udp::new(40000, dport))
        .payload(&[0x5a; FRAME_LEN - HEADERS])
        .build()
        .bytes
}

/// A 64-byte TCP SYN from `src:40000` to `dst:dport` (the payload pads it:
/// a SYN with data, which the filters classify like any SYN).
pub fn syn_frame(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    const HEADERS: usize = 14 + 20 + 20;
    Pkt::eth()
        .push(Ipv4::new(src, dst))
        .push(Tcp::new(40000, dport).flags(SYN))
        .payload(&[0x5a; FRAME_LEN - HEADERS])
        .build()
        .bytes
}

/// The MAC address of `iface` in `ns`.
pub fn mac(ns: &Netns, iface: &str) -> Result<[u8; 6]> {
    let out = ns.ip(&["-j", "link", "show", "dev", iface])?;
    let json: Value = serde_json::from_str(&out).context("parsing `ip -j link`")?;
    let text = json[0]["address"]
        .as_str()
        .ok_or_else(|| anyhow!("`ip -j link show {iface}` has no address"))?;
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts
            .next()
            .ok_or_else(|| anyhow!("{iface}: bad MAC {text}"))?;
        *byte = u8::from_str_radix(part, 16).with_context(|| format!("{iface}: bad MAC {text}"))?;
    }
    Ok(mac)
}

/// Turns GRO on at `iface`, which gives a veth end NAPI without an XDP
/// program, so it takes redirected frames.
pub fn enable_napi(ns: &Netns, iface: &str) -> Result<()> {
    ns.run_ok(&["ethtool", "-K", iface, "gro", "on"])?;
    Ok(())
}

fn pin_to_last_cpu() -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut set = nix::sched::CpuSet::new();
    set.set(cpus - 1)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .context("pinning the sending thread")?;
    Ok(())
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// The `test` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// `struct xdp_md`: where the frame arrives.
#[repr(C)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// `repeat` live runs of `prog_fd` on `frame`, arriving on `ifindex` (of
/// the calling thread's namespace), queue 0.
fn test_run_live(prog_fd: i32, frame: &[u8], ifindex: u32, repeat: u32) -> Result<()> {
    let len = u32::try_from(frame.len())?;
    let ctx = XdpMd {
        data: 0,
        data_end: len,
        data_meta: 0,
        ingress_ifindex: ifindex,
        rx_queue_index: 0,
        egress_ifindex: 0,
    };
    let mut attr = TestAttr {
        prog_fd: u32::try_from(prog_fd)?,
        data_size_in: len,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
        ctx_in: &ctx as *const XdpMd as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix for BPF_PROG_TEST_RUN; the
    // pointers in it (frame, ctx) outlive the call; nothing is written out.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestAttr,
            std::mem::size_of::<TestAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context("BPF_PROG_TEST_RUN (live frames)");
    }
    Ok(())
}
