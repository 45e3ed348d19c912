//! Address prefixes in the one integer form the compiler works with, and
//! their `AddrKeyData` keys.
//!
//! An address is left-aligned in a `u128` (IPv4 in the top 32 bits), so that
//! sorting prefixes by `(family, addr, len)` walks every family's prefix tree
//! in pre-order: a prefix comes before everything it contains, and what it
//! contains follows it without a gap. The push-down and the local-class walk
//! rely on that order.
use std::net::IpAddr;

use filter_common::{AddrKeyData, ADDR_KEY_FIXED_BITS, FAMILY_V4, FAMILY_V6};
use ipnet::IpNet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Prefix {
    pub family: u8,
    /// Left-aligned, host bits zero.
    pub addr: u128,
    /// CIDR length (0–32 for IPv4, 0–128 for IPv6).
    pub len: u8,
}

/// `addr` with everything after the first `len` bits cleared.
pub(crate) fn mask(addr: u128, len: u8) -> u128 {
    match len {
        0 => 0,
        128.. => addr,
        _ => addr & (u128::MAX << (128 - u32::from(len))),
    }
}

impl Prefix {
    /// The prefix of a CIDR, host bits cleared (validation rejects them, but
    /// the key must never carry them whatever the input).
    pub fn from_net(net: &IpNet) -> Prefix {
        let (family, addr) = left_aligned(net.addr());
        let len = net.prefix_len();
        Prefix {
            family,
            addr: mask(addr, len),
            len,
        }
    }

    /// Whether every address of `other` lies in `self`.
    pub fn contains(&self, other: &Prefix) -> bool {
        self.family == other.family
            && self.len <= other.len
            && mask(other.addr, self.len) == self.addr
    }

    /// The `/0` of a family.
    pub fn everything(family: u8) -> Prefix {
        Prefix {
            family,
            addr: 0,
            len: 0,
        }
    }

    /// The longest prefix that contains both `self` and `other` (of the
    /// same family).
    pub fn join(&self, other: &Prefix) -> Prefix {
        let differ = (self.addr ^ other.addr).leading_zeros();
        let len = self.len.min(other.len).min(differ.min(128) as u8);
        Prefix {
            family: self.family,
            addr: mask(self.addr, len),
            len,
        }
    }

    /// The LPM key of this prefix under table or rule-set `id`.
    pub fn key(&self, id: u32) -> (u32, AddrKeyData) {
        let key = AddrKeyData {
            id,
            family: self.family,
            _pad: [0; 3],
            addr: self.addr.to_be_bytes(),
        };
        (ADDR_KEY_FIXED_BITS + u32::from(self.len), key)
    }

    /// The first address of the prefix, as an `IpAddr` (witness packets).
    pub fn first_addr(&self) -> IpAddr {
        if self.family == FAMILY_V4 {
            IpAddr::from(((self.addr >> 96) as u32).to_be_bytes())
        } else {
            IpAddr::from(self.addr.to_be_bytes())
        }
    }
}

/// The family tag and left-aligned integer of an address.
pub(crate) fn left_aligned(ip: IpAddr) -> (u8, u128) {
    match ip {
        IpAddr::V4(v4) => (FAMILY_V4, u128::from(u32::from(v4)) << 96),
        IpAddr::V6(v6) => (FAMILY_V6, u128::from(v6)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        Prefix::from_net(&s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
    }

    #[test]
    fn containment_respects_family_and_length() {
        assert!(p("10.0.0.0/8").contains(&p("10.1.2.0/24")));
        assert!(p("10.1.2.0/24").contains(&p("10.1.2.0/24")));
        assert!(!p("10.1.2.0/24").contains(&p("10.0.0.0/8")));
        assert!(!p("0.0.0.0/0").contains(&p("::/128")));
        assert!(!p("::/0").contains(&p("0.0.0.0/32")));
        assert!(p("::/0").contains(&p("2001:db8::/32")));
    }

    #[test]
    fn host_bits_are_cleared_and_v4_sits_in_the_first_bytes() {
        let net = IpNet::V4(ipnet::Ipv4Net::new_assert([192, 0, 2, 77].into(), 24));
        let prefix = Prefix::from_net(&net);
        let (len, key) = prefix.key(7);
        assert_eq!(len, ADDR_KEY_FIXED_BITS + 24);
        assert_eq!(key.addr[..4], [192, 0, 2, 0]);
        assert!(key.addr[4..].iter().all(|b| *b == 0));
        assert_eq!(prefix.first_addr(), IpAddr::from([192, 0, 2, 0]));
    }

    #[test]
    fn sorted_order_is_pre_order() {
        let mut v = vec![
            p("10.0.1.0/24"),
            p("10.0.0.0/16"),
            p("10.0.0.0/24"),
            p("10.0.0.128/25"),
            p("0.0.0.0/0"),
        ];
        v.sort();
        assert_eq!(
            v,
            vec![
                p("0.0.0.0/0"),
                p("10.0.0.0/16"),
                p("10.0.0.0/24"),
                p("10.0.0.128/25"),
                p("10.0.1.0/24")
            ]
        );
    }

    #[test]
    fn join_is_the_longest_common_cover() {
        assert_eq!(
            p("192.0.2.10/32").join(&p("192.0.2.11/32")),
            p("192.0.2.10/31")
        );
        assert_eq!(
            p("192.0.2.10/32").join(&p("192.0.2.10/32")),
            p("192.0.2.10/32")
        );
        assert_eq!(p("10.0.0.0/8").join(&p("10.1.2.3/32")), p("10.0.0.0/8"));
        assert_eq!(p("10.0.0.0/8").join(&p("192.0.2.0/24")), p("0.0.0.0/0"));
        assert_eq!(
            p("2001:db8::1/128").join(&p("2001:db8::2/128")),
            p("2001:db8::/126")
        );
    }
}
