//! Whether one rule or one NACL entry matches a packet (SPEC §2.2, §2.3).
use std::net::IpAddr;

use ipnet::IpNet;

use crate::{
    ruleset::{AclEntry, Direction, Ruleset, SgRule},
    verdict::Packet,
};

/// The other endpoint (SPEC §3): the source of an ingress packet, the
/// destination of an egress packet.
pub fn remote_addr(direction: Direction, pkt: &Packet) -> IpAddr {
    match direction {
        Direction::Ingress => pkt.src,
        Direction::Egress => pkt.dst,
    }
}

/// The ENI's own endpoint: the destination of an ingress packet, the source
/// of an egress packet (SPEC §2.2 "local").
pub fn local_addr(direction: Direction, pkt: &Packet) -> IpAddr {
    match direction {
        Direction::Ingress => pkt.dst,
        Direction::Egress => pkt.src,
    }
}

/// Whether `addr` lies in `net`. SPEC §2.2: an IPv4 net matches only IPv4
/// addresses and an IPv6 net only IPv6 addresses, so `0.0.0.0/0` does not
/// contain `::1` nor `::/0` contain `192.0.2.1`.
pub fn net_contains(net: &IpNet, addr: IpAddr) -> bool {
    match (net, addr) {
        (IpNet::V4(net), IpAddr::V4(addr)) => net.contains(&addr),
        (IpNet::V6(net), IpAddr::V6(addr)) => net.contains(&addr),
        (IpNet::V4(_), IpAddr::V6(_)) | (IpNet::V6(_), IpAddr::V4(_)) => false,
    }
}

/// Whether security-group rule `rule` matches `pkt` travelling in
/// `direction` (SPEC §2.2).
pub fn rule_matches(rs: &Ruleset, rule: &SgRule, direction: Direction, pkt: &Packet) -> bool {
    // §3 step 5.2: only the rules of the packet's direction.
    rule.direction == direction
        // §2.2 `ip_protocol`: `icmp` is IPv4 only, `icmpv6` IPv6 only, `all`
        // matches every protocol number.
        && rule.protocol.matches(pkt.proto, pkt.is_v6())
        // §2.2 `port_range`: destination ports. Portless protocols carry
        // port 0 and their rules `PortRange::ANY`.
        && rule.dst_ports.contains(pkt.dst_port)
        // §2.2 `source_port_range`: a quintuple rule; `ANY` when not given.
        && rule.src_ports.contains(pkt.src_port)
        // §2.2 peer: the remote address lies in one of the peer's nets (a
        // CIDR, a group's members, a prefix list's entries), same family.
        && rs
            .peer_nets(&rule.remote)
            .iter()
            .any(|net| net_contains(net, remote_addr(direction, pkt)))
        // §2.2 local, optional: the ENI's own address lies in it.
        && rule
            .local
            .as_ref()
            .is_none_or(|net| net_contains(net, local_addr(direction, pkt)))
}

/// Whether NACL entry `entry`, from the list for `direction`, matches `pkt`
/// (SPEC §2.3: protocol, destination ports, the remote CIDR).
pub fn acl_entry_matches(entry: &AclEntry, direction: Direction, pkt: &Packet) -> bool {
    entry.protocol.matches(pkt.proto, pkt.is_v6())
        && entry.dst_ports.contains(pkt.dst_port)
        // §2.3: `source_cidr_ip` for ingress, `destination_cidr_ip` for
        // egress: the remote endpoint either way.
        && net_contains(&entry.remote, remote_addr(direction, pkt))
}
