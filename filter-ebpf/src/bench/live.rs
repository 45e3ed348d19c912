//! Live frames for the drop-rate benchmark (`tests/benches/dataplane/live.rs`).
//!
//! BPF_PROG_TEST_RUN with `BPF_F_TEST_XDP_LIVE_FRAMES` runs a generator
//! below on one end of a veth pair: its `XDP_TX` becomes a redirect out of
//! that end, so every run puts one real frame on the wire towards the
//! guarded end. The sink is the ceiling: the cheapest program that still
//! counts what it drops.
use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::bpf_get_prandom_u32,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};

/// Frames the sink saw, one per-CPU counter.
#[map]
static FILTER_LIVE_SEEN: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Offsets in an Ethernet + IPv4 (no options) frame.
const IP_PROTO: usize = 23;
const IP_CSUM: usize = 24;
/// The low half of the source address.
const IP_SRC_LOW: usize = 28;
const L4_SPORT: usize = 34;
const TCP_CSUM: usize = 50;
const UDP_CSUM: usize = 40;
/// Bytes the random generator touches (through the TCP checksum).
const TOUCHED: usize = TCP_CSUM + 2;

/// Sends the template as it is: one repeated tuple.
#[xdp]
pub fn filter_live_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

/// Sends the template with a random low half of the source address and a
/// random source port (checksums kept right): every frame a new tuple, as
/// in a SYN flood. The template must be IPv4 without options, TCP or UDP.
#[xdp]
pub fn filter_live_tx_random(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + TOUCHED > end {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: a helper without arguments.
    let random = unsafe { bpf_get_prandom_u32() };
    let p = start as *mut u8;
    // SAFETY: every offset below is under TOUCHED, checked against data_end.
    unsafe {
        let l4_csum = match *p.add(IP_PROTO) {
            6 => TCP_CSUM,
            17 => UDP_CSUM,
            _ => return xdp_action::XDP_ABORTED,
        };
        let old_addr = read16(p, IP_SRC_LOW);
        let old_port = read16(p, L4_SPORT);
        let (addr, port) = (random as u16, (random >> 16) as u16);
        write16(p, IP_SRC_LOW, addr);
        write16(p, L4_SPORT, port);
        write16(p, IP_CSUM, csum_replace(read16(p, IP_CSUM), old_addr, addr));
        // A zero UDP checksum means none; the TCP one covers the source
        // address (pseudo-header) and the port.
        let csum = read16(p, l4_csum);
        if csum != 0 || l4_csum == TCP_CSUM {
            let csum = csum_replace(csum_replace(csum, old_addr, addr), old_port, port);
            write16(p, l4_csum, csum);
        }
    }
    xdp_action::XDP_TX
}

/// The ceiling: counts the frame and drops it.
#[xdp]
pub fn filter_live_sink(_ctx: XdpContext) -> u32 {
    if let Some(seen) = FILTER_LIVE_SEEN.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; nothing else writes it meanwhile.
        unsafe { *seen += 1 };
    }
    xdp_action::XDP_DROP
}

/// A 16-bit field in network order, as a number.
///
/// # Safety
/// `p + at + 2` must be inside the frame.
unsafe fn read16(p: *mut u8, at: usize) -> u16 {
    // SAFETY: the caller's bounds.
    unsafe { u16::from_be_bytes([*p.add(at), *p.add(at + 1)]) }
}

/// # Safety
/// As [`read16`].
unsafe fn write16(p: *mut u8, at: usize, value: u16) {
    let [hi, lo] = value.to_be_bytes();
    // SAFETY: the caller's bounds.
    unsafe {
        *p.add(at) = hi;
        *p.add(at + 1) = lo;
    }
}

/// An Internet checksum after one 16-bit word of what it covers changed
/// from `old` to `new` (RFC 1624, eqn. 3).
fn csum_replace(csum: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!csum) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
