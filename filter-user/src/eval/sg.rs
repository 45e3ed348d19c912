//! SPEC §3 step 5: the security groups of the ENI.
use std::net::IpAddr;

use super::{
    matching::{net_contains, remote_addr, rule_matches},
    verdict_of, LossReason, SgOutcome, TraceEntry, TraceItem, TraceStatus,
};
use crate::{
    ruleset::{Action, Direction, EniIdx, GroupIdx, GroupKind, Ruleset, SecurityGroup, SgRule},
    verdict::{Decision, Packet, Reason, Verdict},
};

/// The security-group step alone, for the first packet of a connection at
/// ENI `eni` in `direction`. Also the question a tracked connection is asked
/// again after an apply (§3.1 "rule changes reach existing connections").
pub fn evaluate_sg(rs: &Ruleset, eni: EniIdx, direction: Direction, pkt: &Packet) -> SgOutcome {
    evaluate_traced(rs, eni, direction, pkt).0
}

/// A rule of one of the ENI's groups that matched the packet.
struct Hit<'a> {
    group: GroupIdx,
    index: usize,
    rule: &'a SgRule,
}

impl Hit<'_> {
    fn reason(&self) -> Reason {
        Reason::Rule {
            id: self.rule.id.clone(),
        }
    }

    fn trace(&self, status: TraceStatus) -> TraceEntry {
        TraceEntry {
            item: TraceItem::SgRule {
                group: self.group,
                rule: self.index,
                priority: self.rule.priority,
                reason: self.reason(),
            },
            action: self.rule.action,
            status,
        }
    }
}

/// The security-group step, with a trace entry for every inner-accept group
/// and rule that matched.
pub(super) fn evaluate_traced(
    rs: &Ruleset,
    eni: EniIdx,
    direction: Direction,
    pkt: &Packet,
) -> (SgOutcome, Vec<TraceEntry>) {
    let groups = &rs.enis[eni].groups;
    let remote = remote_addr(direction, pkt);

    // §3 step 5.1: the basic groups of the ENI with inner accept that count
    // the remote address among their members, in group order.
    let inner: Vec<GroupIdx> = groups
        .iter()
        .copied()
        .filter(|&g| inner_accepts(&rs.groups[g], remote))
        .collect();

    // §3 step 5.2: every rule of every group of the ENI, with the packet's
    // direction, that matches; in group order, then rule order.
    let hits: Vec<Hit<'_>> = groups
        .iter()
        .flat_map(|&g| {
            rs.groups[g]
                .rules
                .iter()
                .enumerate()
                .map(move |(index, rule)| Hit {
                    group: g,
                    index,
                    rule,
                })
        })
        .filter(|hit| rule_matches(rs, hit.rule, direction, pkt))
        .collect();

    // §3 step 5.1: inner accept wins over every custom rule, both
    // directions. The first such group names the verdict (module docs).
    if let Some(&group) = inner.first() {
        let decision = Decision {
            verdict: Verdict::Accept,
            reason: inner_reason(rs, group),
        };
        let mut trace: Vec<TraceEntry> = inner
            .iter()
            .map(|&g| TraceEntry {
                item: TraceItem::InnerAccept {
                    group: g,
                    reason: inner_reason(rs, g),
                },
                action: Action::Accept,
                status: if g == group {
                    TraceStatus::Decided
                } else {
                    TraceStatus::Lost {
                        why: LossReason::TieBreak,
                        winner: decision.reason.clone(),
                    }
                },
            })
            .collect();
        trace.extend(hits.iter().map(|hit| {
            hit.trace(TraceStatus::Lost {
                why: LossReason::OverriddenByInnerAccept,
                winner: decision.reason.clone(),
            })
        }));
        return (SgOutcome::InnerAccept { group, decision }, trace);
    }

    // §3 step 5.2: the smallest priority wins; at that priority a drop beats
    // an accept (deny wins on a tie). `min_by_key` returns the first of
    // several equal minima, so among rules of the same priority and action
    // the first in group order, then rule order, names the verdict.
    let Some(winner) = hits
        .iter()
        .min_by_key(|hit| (hit.rule.priority, drop_first(hit.rule.action)))
    else {
        // §3 step 5.3: no rule matches.
        let decision = default_decision(rs, eni, direction);
        return (SgOutcome::NoMatch { decision }, Vec::new());
    };

    let decision = Decision {
        verdict: verdict_of(winner.rule.action),
        reason: winner.reason(),
    };
    let trace = hits
        .iter()
        .map(|hit| {
            let status = if hit.group == winner.group && hit.index == winner.index {
                TraceStatus::Decided
            } else {
                let why = if hit.rule.priority > winner.rule.priority {
                    LossReason::WeakerPriority
                } else if hit.rule.action != winner.rule.action {
                    // Same priority, different action: the winner is the
                    // drop, this is an accept.
                    LossReason::DropWinsTie
                } else {
                    LossReason::TieBreak
                };
                TraceStatus::Lost {
                    why,
                    winner: decision.reason.clone(),
                }
            };
            hit.trace(status)
        })
        .collect();
    let outcome = SgOutcome::Matched {
        group: winner.group,
        rule: winner.index,
        priority: winner.rule.priority,
        action: winner.rule.action,
        decision,
    };
    (outcome, trace)
}

/// §3 step 5.1: `group` is a basic group with `inner_access_policy:
/// accept` and `remote` is one of its members (host prefixes: local ENI IPs
/// and `member_ips`, §2.1).
fn inner_accepts(group: &SecurityGroup, remote: IpAddr) -> bool {
    group.kind == GroupKind::Basic
        && group.inner_accept
        && group
            .members
            .iter()
            .any(|member| net_contains(member, remote))
}

fn inner_reason(rs: &Ruleset, group: GroupIdx) -> Reason {
    Reason::InnerAccept {
        group: rs.groups[group].id.clone(),
    }
}

/// Sort key for the tie at the winning priority: drop before accept (§3
/// step 5.2, deny wins on a tie).
fn drop_first(action: Action) -> u8 {
    match action {
        Action::Drop => 0,
        Action::Accept => 1,
    }
}

/// §3 step 5.3: no rule matches. Ingress drops (default-deny inbound);
/// egress is accepted for basic groups and dropped for advanced ones. An
/// ENI's groups are all of one kind (§2.4); should that ever not hold, any
/// advanced group makes egress default-deny (the stricter reading).
fn default_decision(rs: &Ruleset, eni: EniIdx, direction: Direction) -> Decision {
    let all_basic = rs.enis[eni]
        .groups
        .iter()
        .all(|&g| rs.groups[g].kind == GroupKind::Basic);
    match direction {
        Direction::Egress if all_basic => Decision {
            verdict: Verdict::Accept,
            reason: Reason::DefaultAccept,
        },
        Direction::Ingress | Direction::Egress => Decision {
            verdict: Verdict::Drop,
            reason: Reason::DefaultDeny,
        },
    }
}
