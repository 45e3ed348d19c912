//! The result of `explain` as it travels: what the evaluator found, in
//! terms a client prints without the rule set or the evaluator at hand
//! (built by `crate::eval::explain`).
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::TrackedConnection;
use crate::{
    ruleset::{Action, Direction},
    verdict::{Decision, Packet, Reason},
};

/// The result of `explain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainResult {
    /// The generation that answered.
    pub generation: u32,
    pub eni: String,
    pub interface: String,
    pub direction: Direction,
    pub packet: Packet,
    /// What the rules decide for this packet as the first of a connection.
    pub decision: Decision,
    /// `decision.reason` as text (`sg-web/http`, `default-deny`).
    pub reason: String,
    /// The NACL step (SPEC §3 step 3).
    pub nacl: NaclStep,
    /// The security-group step (SPEC §3 step 5).
    pub groups: GroupStep,
    /// Every NACL entry, inner-accept group and rule that matched, in
    /// evaluation order, each deciding or losing.
    pub trace: Vec<TraceRow>,
    /// The tracked connection this packet belongs to, if the data plane has
    /// one: its packets are accepted without security-group evaluation.
    pub tracked: Option<TrackedConnection>,
    /// The rule that admits this packet: the tracked connection's rule, or
    /// the deciding rule when the rules accept it; `None` when it drops.
    pub admitted_by: Option<String>,
}

/// The NACL step of an explanation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum NaclStep {
    /// Not reached (neighbour discovery, or an egress packet the security
    /// groups dropped).
    NotReached,
    /// The vSwitch has no network ACL.
    NoAcl,
    /// The remote address is inside the vSwitch (`cidr`): not filtered.
    InsideVswitch { cidr: IpNet },
    /// An entry matched and decided.
    Matched { decision: Decision },
    /// No entry matched: the ACL's default drops.
    NoMatch { decision: Decision },
}

/// The security-group step of an explanation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum GroupStep {
    /// Not reached (neighbour discovery, or an ingress packet the NACL
    /// dropped).
    NotReached,
    /// A rule or an inner-accept group decided.
    Matched { decision: Decision },
    /// No rule matched: the default for the direction and group type.
    NoMatch { decision: Decision },
}

/// What matched, and how it fared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRow {
    pub step: TraceStep,
    /// The reason the item gives when it decides.
    pub reason: Reason,
    /// What the item would do on its own.
    pub action: Action,
    /// `None` when this item decided.
    pub lost: Option<Lost>,
}

/// The kind of a matching item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TraceStep {
    /// NACL entry number `entry` (from 1).
    Nacl { entry: usize },
    /// A basic group with inner accept that the remote address is in.
    InnerAccept,
    /// A security-group rule.
    Rule { priority: u8 },
}

/// Why a matching item did not decide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    /// The reason that decided instead.
    pub winner: Reason,
    /// Why it won, in words (`a stronger priority matched`).
    pub why: String,
}
