//! What a packet looks like to the rules, and what they decide about it.
//!
//! Shared by the reference evaluator (`crate::eval`), the user-space model of
//! the kernel lookups (`crate::compile::model`) and `filterctl explain`, so
//! that the three can be compared value for value.
use std::{fmt, net::IpAddr};

use serde::{Deserialize, Serialize};

/// The fields of an IP packet that rules look at. Ports are 0 for protocols
/// without ports; `icmp_type` is 0 for anything but ICMP and ICMPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IANA protocol number.
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub icmp_type: u8,
}

impl Packet {
    pub fn is_v6(&self) -> bool {
        self.dst.is_ipv6()
    }

    /// IPv6 neighbour discovery (ICMPv6 types 133–137) always passes
    /// (SPEC §3 step 1).
    pub fn is_neighbour_discovery(&self) -> bool {
        self.is_v6()
            && self.proto == filter_common::PROTO_ICMPV6
            && (133..=137).contains(&self.icmp_type)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accept,
    Drop,
}

/// Why a verdict was reached (SPEC §3 step 6). `Display` gives the text that
/// `filterctl explain` and flow logs print.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// A security-group rule, by its qualified id (`SgRule::id`).
    Rule {
        id: String,
    },
    /// A NACL entry: `nacl:<acl>/<entry name>`.
    Nacl {
        acl: String,
        entry: String,
    },
    /// No NACL entry matched: `nacl:<acl>/default-deny`.
    NaclDefault {
        acl: String,
    },
    /// `inner-accept:<sg>`.
    InnerAccept {
        group: String,
    },
    DefaultDeny,
    DefaultAccept,
    Tracked,
    /// Not subject to rules: not IP, or IPv6 neighbour discovery.
    Pass,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Rule { id } => f.write_str(id),
            Reason::Nacl { acl, entry } => write!(f, "nacl:{acl}/{entry}"),
            Reason::NaclDefault { acl } => write!(f, "nacl:{acl}/default-deny"),
            Reason::InnerAccept { group } => write!(f, "inner-accept:{group}"),
            Reason::DefaultDeny => f.write_str("default-deny"),
            Reason::DefaultAccept => f.write_str("default-accept"),
            Reason::Tracked => f.write_str("tracked"),
            Reason::Pass => f.write_str("pass"),
        }
    }
}

/// A verdict and the reason for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: Reason,
}
