//! Packet access. Every read of packet bytes goes through [`Frame::load`],
//! which copies a header out of the packet after checking it lies inside.
//!
//! Reads are direct (`data..data_end`, checked against `data_end` the way the
//! verifier wants to see it) because a load-bytes helper call costs tens of
//! nanoseconds each, several times per packet. On TC the linear part of an
//! skb may end before the headers do (GSO, some drivers): a read past it
//! falls back to `bpf_skb_load_bytes`, which also reads the paged part, so no
//! `bpf_skb_pull_data` (which would linearise and copy the packet) is needed.
//! An XDP program without the frags flag always sees a linear buffer.
use core::mem::{size_of, MaybeUninit};

use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_get_buff_len},
};

/// Largest offset a direct read starts at. The verifier only lets a bounded
/// scalar move a packet pointer; every header the parser reads starts well
/// below this in any frame XDP sees (one page); TC reads further out, as
/// the quote in an ICMP error behind long extension chains, through the
/// helper fallback.
const MAX_DIRECT_OFF: u32 = 0x7fff;

/// Copies a `T` at `off` out of `data..end`, or `None` when it does not fit.
#[inline(always)]
fn load_direct<T: Copy>(data: usize, end: usize, off: u32) -> Option<T> {
    // The explicit bound is for the verifier (and harmless for us: no frame
    // is that long before its headers end).
    if off > MAX_DIRECT_OFF {
        return None;
    }
    let start = data + off as usize;
    if start + size_of::<T>() > end {
        return None;
    }
    // SAFETY: `start..start + size_of::<T>()` lies inside the packet, checked
    // just above; `T` is plain bytes, read unaligned.
    Some(unsafe { core::ptr::read_unaligned(start as *const T) })
}

/// Read access to one packet, starting at the Ethernet header.
pub trait Frame: Copy {
    /// Length of the frame in bytes, from the Ethernet header on.
    fn len(self) -> u32;

    /// Whether the frame is at least `end` bytes long: `end <= len()`,
    /// which the parser asks of every packet, where it needs the length
    /// itself only for the rare packet that leaves it to the frame.
    #[inline(always)]
    fn covers(self, end: u32) -> bool {
        end <= self.len()
    }

    /// Copies `size_of::<T>()` bytes at `off` out of the packet, or `None`
    /// when any of them lies past the end of the frame.
    ///
    /// `T` must be plain bytes (`[u8; N]`, or a `repr(C)` struct of byte
    /// arrays): alignment 1, every bit pattern valid.
    fn load<T: Copy>(self, off: u32) -> Option<T>;
}

/// An XDP packet (`struct xdp_md`).
#[derive(Clone, Copy)]
pub struct XdpFrame(pub *mut xdp_md);

impl Frame for XdpFrame {
    #[inline(always)]
    fn len(self) -> u32 {
        // `data_end - data` would be pointer arithmetic on `pkt_end`, which
        // the verifier rejects; the helper also counts XDP fragments.
        // SAFETY: `self.0` is the context the kernel passed to the program.
        let len = unsafe { bpf_xdp_get_buff_len(self.0) };
        u32::try_from(len).unwrap_or(u32::MAX)
    }

    /// Without the helper call (5-10 ns, every packet): without the frags
    /// flag the frame is `data..data_end`, and comparing a bounded offset
    /// from `data` with `data_end` is what the verifier allows (where
    /// `data_end - data` is not).
    #[inline(always)]
    fn covers(self, end: u32) -> bool {
        if end > MAX_DIRECT_OFF {
            return end <= self.len();
        }
        // SAFETY: the kernel's context, as in `load`.
        let (data, data_end) = unsafe { ((*self.0).data as usize, (*self.0).data_end as usize) };
        data + end as usize <= data_end
    }

    #[inline(always)]
    fn load<T: Copy>(self, off: u32) -> Option<T> {
        // SAFETY: the kernel's context; `data` and `data_end` are the packet
        // bounds (the verifier turns these loads into packet pointers).
        let (data, end) = unsafe { ((*self.0).data as usize, (*self.0).data_end as usize) };
        load_direct(data, end, off)
    }
}

/// A TC packet (`struct __sk_buff`).
#[derive(Clone, Copy)]
pub struct TcFrame(pub *mut __sk_buff);

impl Frame for TcFrame {
    #[inline(always)]
    fn len(self) -> u32 {
        // SAFETY: `self.0` is the context the kernel passed to the program;
        // `len` is a plain scalar field of it (linear and paged data).
        unsafe { (*self.0).len }
    }

    #[inline(always)]
    fn load<T: Copy>(self, off: u32) -> Option<T> {
        // SAFETY: the kernel's context; `data` and `data_end` bound the
        // linear part of the skb.
        let (data, end) = unsafe { ((*self.0).data as usize, (*self.0).data_end as usize) };
        if let Some(v) = load_direct(data, end, off) {
            return Some(v);
        }
        // Past the linear part: the helper reads paged data too, and fails
        // only past the end of the packet.
        let mut out = MaybeUninit::<T>::uninit();
        // SAFETY: the helper writes exactly `size_of::<T>()` bytes into `out`
        // or fails without writing.
        let ret = unsafe {
            bpf_skb_load_bytes(
                self.0.cast_const().cast(),
                off,
                out.as_mut_ptr().cast(),
                size_of::<T>() as u32,
            )
        };
        if ret == 0 {
            // SAFETY: fully written by the helper; `T` is plain bytes.
            Some(unsafe { out.assume_init() })
        } else {
            None
        }
    }
}
