//! The frames the BPF_PROG_TEST_RUN benchmark sends: Ethernet, IPv4, TCP,
//! well formed (lengths and checksums right).
use std::net::Ipv4Addr;

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;

/// An Ethernet frame carrying IPv4 and TCP with `payload` bytes of data.
pub fn tcp4(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
    payload: usize,
) -> Vec<u8> {
    let total = 20 + 20 + payload;
    let mut f = Vec::with_capacity(14 + total);
    // Ethernet: locally administered addresses, IPv4.
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x0b]);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x0a]);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    // IPv4.
    let ip = f.len();
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&(total as u16).to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0]); // id 1, DF
    f.extend_from_slice(&[64, 6, 0, 0]); // TTL, TCP, checksum below
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    let sum = checksum(&f[ip..ip + 20], 0);
    f[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
    // TCP.
    let tcp = f.len();
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&1000u32.to_be_bytes());
    f.extend_from_slice(&(if flags & ACK != 0 { 2000u32 } else { 0 }).to_be_bytes());
    f.extend_from_slice(&[5 << 4, flags]);
    f.extend_from_slice(&65535u16.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    f.extend(std::iter::repeat_n(0x5a, payload));
    let mut pseudo = 0u32;
    for pair in src.octets().chunks(2).chain(dst.octets().chunks(2)) {
        pseudo += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    pseudo += 6 + (20 + payload) as u32;
    let sum = checksum(&f[tcp..], pseudo);
    f[tcp + 16..tcp + 18].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The Internet checksum of `bytes`, starting from `sum`.
fn checksum(bytes: &[u8], mut sum: u32) -> u16 {
    for pair in bytes.chunks(2) {
        let hi = pair[0];
        let lo = pair.get(1).copied().unwrap_or(0);
        sum += u32::from(u16::from_be_bytes([hi, lo]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
