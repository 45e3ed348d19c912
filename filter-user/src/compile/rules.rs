//! Rules flattened into the boxes the classifier cuts: protocol classes,
//! destination and source port ranges, an optional local prefix and the
//! remote prefixes (a group or prefix-list peer is one prefix per address).
//!
//! Security-group rules and NACL entries become the same [`RuleBox`]; a
//! table is a list of them in strength order (see `tables`).
use std::rc::Rc;

use filter_common::{
    RuleHit, FAMILY_V4, FAMILY_V6, PROTO_GRE, PROTO_ICMP, PROTO_ICMPV6, PROTO_OTHER, PROTO_TCP,
    PROTO_UDP,
};
use ipnet::IpNet;

use super::prefix::Prefix;
use crate::ruleset::{PortRange, Protocol};

/// Every protocol class a key can carry, in a fixed order (bit `i` of a
/// [`ProtoSet`] is `PROTO_CLASSES[i]`).
pub(crate) const PROTO_CLASSES: [u8; 6] = [
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    PROTO_GRE,
    PROTO_ICMPV6,
    PROTO_OTHER,
];

/// A set of protocol classes, one bit per entry of [`PROTO_CLASSES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ProtoSet(u8);

impl ProtoSet {
    /// The classes a rule's protocol matches. `all` matches every class,
    /// [`PROTO_OTHER`] included (SPEC §2.2: every protocol).
    pub fn of(protocol: Protocol) -> ProtoSet {
        let class = match protocol {
            Protocol::All => return ProtoSet(0b11_1111),
            Protocol::Icmp => PROTO_ICMP,
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
            Protocol::Gre => PROTO_GRE,
            Protocol::Icmpv6 => PROTO_ICMPV6,
        };
        ProtoSet(1 << class_bit(class))
    }

    pub fn contains(self, class: u8) -> bool {
        self.0 & (1 << class_bit(class)) != 0
    }
}

fn class_bit(class: u8) -> usize {
    PROTO_CLASSES
        .iter()
        .position(|c| *c == class)
        .unwrap_or(PROTO_CLASSES.len() - 1)
}

/// The address family a protocol restricts its peers to: `icmp` is IPv4
/// only and `icmpv6` IPv6 only (SPEC §2.2), so the other family's prefixes of
/// such a rule can never match and are not stored.
pub(crate) fn protocol_family(protocol: Protocol) -> Option<u8> {
    match protocol {
        Protocol::Icmp => Some(FAMILY_V4),
        Protocol::Icmpv6 => Some(FAMILY_V6),
        _ => None,
    }
}

/// One rule as the classifier sees it.
#[derive(Clone, Debug)]
pub(crate) struct RuleBox {
    /// What the kernel stores when this rule is the strongest match.
    pub hit: RuleHit,
    pub protos: ProtoSet,
    pub dst: PortRange,
    pub src: PortRange,
    pub local: Option<Prefix>,
    /// Sorted, deduplicated, host bits cleared, only families the rule can
    /// match. Shared: a rule in several tables keeps one copy.
    pub remote: Rc<[Prefix]>,
}

impl RuleBox {
    pub fn new(
        hit: RuleHit,
        protocol: Protocol,
        dst: PortRange,
        src: PortRange,
        local: Option<&IpNet>,
        remote: &[IpNet],
    ) -> RuleBox {
        let local = local.map(Prefix::from_net);
        // A packet has one family, so a remote prefix of another family than
        // the protocol's or the local prefix's can never match with it.
        // (A rule whose protocol and local prefix disagree matches nothing.)
        let by_protocol = protocol_family(protocol);
        let by_local = local.map(|l| l.family);
        let mut remote: Vec<Prefix> = remote
            .iter()
            .map(Prefix::from_net)
            .filter(|p| {
                by_protocol.is_none_or(|f| p.family == f) && by_local.is_none_or(|f| p.family == f)
            })
            .collect();
        remote.sort_unstable();
        remote.dedup();
        RuleBox {
            hit,
            protos: ProtoSet::of(protocol),
            dst,
            src,
            local,
            remote: remote.into(),
        }
    }
}
