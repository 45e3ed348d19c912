//! `FILTER_CT` keys seen from user space: the evaluator's [`ConnKey`] and
//! the kernel's [`CtKey`] name one connection, and these two functions are
//! the only translation between them (the kernel builds its keys in
//! `filter-ebpf/src/conntrack.rs`, `make_key`, with the same endpoint
//! order: the smaller address as a big-endian number, then port, is `a`).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use filter_common::{CtKey, FAMILY_V4};

use crate::{compile::prefix::left_aligned, eval::conntrack::ConnKey};

/// The kernel's key of connection `key` at interface index `ifindex`.
pub fn kernel_key(ifindex: u32, key: &ConnKey) -> CtKey {
    let (family, a) = left_aligned(key.a.0);
    let (_, b) = left_aligned(key.b.0);
    CtKey {
        ifindex,
        family,
        proto: key.proto,
        _pad: 0,
        addr_a: a.to_be_bytes(),
        addr_b: b.to_be_bytes(),
        port_a: key.a.1,
        port_b: key.b.1,
    }
}

/// The connection a kernel key names, at `interface`.
pub fn conn_key(interface: &str, key: &CtKey) -> ConnKey {
    let addr = |b: &[u8; 16]| -> IpAddr {
        if key.family == FAMILY_V4 {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(*b))
        }
    };
    ConnKey {
        interface: interface.to_owned(),
        proto: key.proto,
        a: (addr(&key.addr_a), key.port_a),
        b: (addr(&key.addr_b), key.port_b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_meet_from_both_directions_and_read_back() {
        let client = (IpAddr::from([198, 51, 100, 7]), 40000);
        let server = (IpAddr::from([192, 0, 2, 10]), 80);
        let (request, _) = ConnKey::new("tap0", 6, client, server);
        let (reply, _) = ConnKey::new("tap0", 6, server, client);
        let (a, b) = (kernel_key(3, &request), kernel_key(3, &reply));
        assert_eq!(a, b);
        assert_eq!(a.addr_a[..4], [192, 0, 2, 10]);
        assert_eq!((a.port_a, a.port_b), (80, 40000));
        assert_eq!(a.family, FAMILY_V4);
        assert_eq!(conn_key("tap0", &a), request);
        let v6 = (IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]), 53);
        let v6b = (IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 2]), 5353);
        let (k, _) = ConnKey::new("tap0", 17, v6b, v6);
        assert_eq!(conn_key("tap0", &kernel_key(9, &k)), k);
    }
}
