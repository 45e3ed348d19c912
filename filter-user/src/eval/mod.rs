//! The reference evaluator: SPEC §3 written plainly. The oracle for every
//! other test, and the engine behind `filterctl explain`.
//!
//! Everything here is a linear scan over the rules of a [`Ruleset`], in the
//! order SPEC §3 gives. Nothing is indexed, cached or precomputed: the
//! compiled kernel lookups are checked against this code, so this code must
//! be readable next to the SPEC, clause by clause.
//!
//! - [`evaluate`]: the stateless verdict for the first packet of a
//!   connection (§3 steps 1, 2, 3, 5, 6), with a [`TraceEntry`] for every
//!   NACL entry, inner-accept group and security-group rule that matched.
//! - [`evaluate_nacl`]: §3 step 3 alone.
//! - [`evaluate_sg`]: §3 step 5 alone (also what revalidating a tracked
//!   connection asks, §3.1).
//! - [`evaluate_non_ip`]: §3 step 1 for frames that are not IP.
//!
//! # Tie-break among equals
//!
//! §3 step 5.2 says which *verdict* wins among the matching rules (smallest
//! priority, then drop before accept) but not which rule *names* it when
//! several rules give that same verdict at that same priority. This
//! evaluator names the first of them in evaluation order: the ENI's groups in
//! the order of its `security_group_ids`, and within a group the rules in
//! document order. The others are traced as [`LossReason::TieBreak`]. The
//! same order picks among several inner-accept groups (§3 step 5.1).
pub mod conntrack;
mod explain;
mod matching;
mod nacl;
mod reasons;
mod sg;

#[cfg(test)]
mod tests;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use self::explain::explain;
pub use self::matching::{acl_entry_matches, local_addr, net_contains, remote_addr, rule_matches};
pub use self::nacl::evaluate_nacl;
pub use self::reasons::reasons;
pub use self::sg::evaluate_sg;
use crate::{
    ruleset::{AclIdx, Action, Direction, EniIdx, GroupIdx, Ruleset},
    verdict::{Decision, Packet, Reason, Verdict},
};

/// The verdict on one packet, how each step reached it, and every rule that
/// matched on the way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The final verdict and its reason (§3 step 6).
    pub decision: Decision,
    /// The NACL step; `None` when it was not reached (neighbour discovery, or
    /// an egress packet the security groups already dropped).
    pub nacl: Option<NaclOutcome>,
    /// The security-group step; `None` when it was not reached (neighbour
    /// discovery, or an ingress packet the NACL already dropped).
    pub sg: Option<SgOutcome>,
    /// Every NACL entry, inner-accept group and rule that matched, in
    /// evaluation order, each marked as deciding or losing.
    pub trace: Vec<TraceEntry>,
}

/// The outcome of the NACL step (§3 step 3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum NaclOutcome {
    /// The ENI's vSwitch has no network ACL: the step is skipped.
    NoAcl,
    /// The remote address lies inside `cidr`, one of the vSwitch's CIDRs:
    /// traffic inside one vSwitch is not filtered, the step is skipped.
    InsideVswitch { cidr: IpNet },
    /// Entry `entry` of the ACL's list for this direction was the first to
    /// match, and decided.
    Matched {
        acl: AclIdx,
        entry: usize,
        action: Action,
        decision: Decision,
    },
    /// No entry matched: the packet drops (`nacl:<acl>/default-deny`).
    NoMatch { acl: AclIdx, decision: Decision },
}

impl NaclOutcome {
    /// What the step decided; `None` when it was skipped.
    pub fn decision(&self) -> Option<&Decision> {
        match self {
            NaclOutcome::NoAcl | NaclOutcome::InsideVswitch { .. } => None,
            NaclOutcome::Matched { decision, .. } | NaclOutcome::NoMatch { decision, .. } => {
                Some(decision)
            }
        }
    }
}

/// The outcome of the security-group step (§3 step 5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SgOutcome {
    /// §3 step 5.1: the remote address is a member of `group`, a basic group
    /// of the ENI with `inner_access_policy: accept`.
    InnerAccept { group: GroupIdx, decision: Decision },
    /// §3 step 5.2: `groups[group].rules[rule]` decided: the strongest
    /// matching rule, a drop when there is one at that priority.
    Matched {
        group: GroupIdx,
        rule: usize,
        priority: u8,
        action: Action,
        decision: Decision,
    },
    /// §3 step 5.3: no rule matched: `default-deny`, or `default-accept` for
    /// egress through basic groups.
    NoMatch { decision: Decision },
}

impl SgOutcome {
    pub fn decision(&self) -> &Decision {
        match self {
            SgOutcome::InnerAccept { decision, .. }
            | SgOutcome::Matched { decision, .. }
            | SgOutcome::NoMatch { decision } => decision,
        }
    }
}

/// One thing that matched the packet, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEntry {
    pub item: TraceItem,
    /// What the item would do on its own.
    pub action: Action,
    pub status: TraceStatus,
}

/// What matched. `reason` is the reason the item gives when it decides
/// (`nacl:acl-web/web`, `sg-web/http`, `inner-accept:sg-web`), so a trace
/// prints without the rule set at hand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TraceItem {
    /// Entry `entry` of the ACL's list for the packet's direction.
    NaclEntry {
        acl: AclIdx,
        entry: usize,
        reason: Reason,
    },
    /// A basic group with inner accept that the remote address is a member
    /// of.
    InnerAccept { group: GroupIdx, reason: Reason },
    /// `groups[group].rules[rule]`.
    SgRule {
        group: GroupIdx,
        rule: usize,
        priority: u8,
        reason: Reason,
    },
}

impl TraceItem {
    pub fn reason(&self) -> &Reason {
        match self {
            TraceItem::NaclEntry { reason, .. }
            | TraceItem::InnerAccept { reason, .. }
            | TraceItem::SgRule { reason, .. } => reason,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TraceStatus {
    /// This item decided its step.
    Decided,
    /// This item matched but `winner` decided its step.
    Lost { why: LossReason, winner: Reason },
}

/// Why a matching item did not decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossReason {
    /// §2.3: an earlier entry of the same NACL list matched first.
    LaterNaclEntry,
    /// §3 step 5.1: inner accept decides before any custom rule.
    OverriddenByInnerAccept,
    /// §3 step 5.2: a matching rule with a smaller (stronger) priority.
    WeakerPriority,
    /// §3 step 5.2: an accept at the deciding priority, where a drop matched
    /// too (deny wins on a tie).
    DropWinsTie,
    /// Same verdict at the same rank as the winner, which comes first in
    /// group order then rule order (see the module docs).
    TieBreak,
}

fn verdict_of(action: Action) -> Verdict {
    match action {
        Action::Accept => Verdict::Accept,
        Action::Drop => Verdict::Drop,
    }
}

/// The stateless verdict on the first packet of a connection at ENI `eni`
/// in `direction` (§3 steps 1, 2, 3, 5 and 6; conntrack, step 4, is the
/// data plane's business).
pub fn evaluate(rs: &Ruleset, eni: EniIdx, direction: Direction, pkt: &Packet) -> Evaluation {
    // §3 step 1: IPv6 neighbour discovery passes, before any rule.
    if pkt.is_neighbour_discovery() {
        return Evaluation {
            decision: pass(),
            nacl: None,
            sg: None,
            trace: Vec::new(),
        };
    }

    let mut trace = Vec::new();
    match direction {
        // §3 step 2, ingress: the NACL, then the security groups. A NACL drop
        // ends it (§3 step 3) and names the reason.
        Direction::Ingress => {
            let (nacl, nacl_trace) = nacl::evaluate_traced(rs, eni, direction, pkt);
            trace.extend(nacl_trace);
            if let Some(dropped) = nacl.decision().filter(|d| d.verdict == Verdict::Drop) {
                return Evaluation {
                    decision: dropped.clone(),
                    nacl: Some(nacl),
                    sg: None,
                    trace,
                };
            }
            let (sg, sg_trace) = sg::evaluate_traced(rs, eni, direction, pkt);
            trace.extend(sg_trace);
            // Both accepted, or the groups dropped: the groups name the
            // reason either way (§3 step 6).
            Evaluation {
                decision: sg.decision().clone(),
                nacl: Some(nacl),
                sg: Some(sg),
                trace,
            }
        }
        // §3 step 2, egress: the security groups, then the NACL. A group
        // drop ends it.
        Direction::Egress => {
            let (sg, sg_trace) = sg::evaluate_traced(rs, eni, direction, pkt);
            trace.extend(sg_trace);
            if sg.decision().verdict == Verdict::Drop {
                return Evaluation {
                    decision: sg.decision().clone(),
                    nacl: None,
                    sg: Some(sg),
                    trace,
                };
            }
            let (nacl, nacl_trace) = nacl::evaluate_traced(rs, eni, direction, pkt);
            trace.extend(nacl_trace);
            // A NACL drop names the NACL; when both accept, the groups name
            // the reason (§3 step 6).
            let decision = match nacl.decision() {
                Some(d) if d.verdict == Verdict::Drop => d.clone(),
                _ => sg.decision().clone(),
            };
            Evaluation {
                decision,
                nacl: Some(nacl),
                sg: Some(sg),
                trace,
            }
        }
    }
}

/// §3 step 1: frames that are not IP (ARP) pass. They never become a
/// [`Packet`]; this is here so every branch of §3 has its line.
pub fn evaluate_non_ip() -> Decision {
    pass()
}

fn pass() -> Decision {
    Decision {
        verdict: Verdict::Accept,
        reason: Reason::Pass,
    }
}
