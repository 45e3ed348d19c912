//! `explain` (SPEC §6): the evaluator's answer on one packet, told as the
//! API carries it, and what a tracked connection changes: its packets skip
//! the security groups but not the NACL, which is stateless (§3 steps 3, 4).
use super::{
    evaluate, evaluate_nacl, LossReason, NaclOutcome, SgOutcome, TraceEntry, TraceItem, TraceStatus,
};
use crate::{
    api::{ExplainResult, GroupStep, Lost, NaclStep, TraceRow, TraceStep, TrackedConnection},
    ruleset::{Direction, EniIdx, Ruleset},
    verdict::{Packet, Verdict},
};

/// Explains `packet` at ENI `eni` of generation `generation` of `rs`, where
/// the data plane tracks it as `tracked`.
pub fn explain(
    rs: &Ruleset,
    generation: u32,
    eni: EniIdx,
    direction: Direction,
    packet: Packet,
    tracked: Option<TrackedConnection>,
) -> ExplainResult {
    let evaluation = evaluate(rs, eni, direction, &packet);
    let decision = evaluation.decision.clone();
    let admitted_by = match &tracked {
        Some(conn) => {
            // The NACL as evaluated, or (not reached: the groups dropped
            // first on egress) evaluated now, once.
            let nacl = evaluation
                .nacl
                .clone()
                .unwrap_or_else(|| evaluate_nacl(rs, eni, direction, &packet));
            let nacl_passes = nacl.decision().is_none_or(|d| d.verdict == Verdict::Accept);
            nacl_passes.then(|| conn.rule.clone())
        }
        None => None,
    }
    .or_else(|| (decision.verdict == Verdict::Accept).then(|| decision.reason.to_string()));
    let e = &rs.enis[eni];
    ExplainResult {
        generation,
        eni: e.id.clone(),
        interface: e.interface.clone(),
        direction,
        packet,
        reason: decision.reason.to_string(),
        decision,
        nacl: nacl_step(evaluation.nacl),
        groups: group_step(evaluation.sg),
        trace: evaluation.trace.into_iter().map(trace_row).collect(),
        tracked,
        admitted_by,
    }
}

fn nacl_step(outcome: Option<NaclOutcome>) -> NaclStep {
    match outcome {
        None => NaclStep::NotReached,
        Some(NaclOutcome::NoAcl) => NaclStep::NoAcl,
        Some(NaclOutcome::InsideVswitch { cidr }) => NaclStep::InsideVswitch { cidr },
        Some(NaclOutcome::Matched { decision, .. }) => NaclStep::Matched { decision },
        Some(NaclOutcome::NoMatch { decision, .. }) => NaclStep::NoMatch { decision },
    }
}

fn group_step(outcome: Option<SgOutcome>) -> GroupStep {
    match outcome {
        None => GroupStep::NotReached,
        Some(SgOutcome::NoMatch { decision }) => GroupStep::NoMatch { decision },
        Some(SgOutcome::InnerAccept { decision, .. } | SgOutcome::Matched { decision, .. }) => {
            GroupStep::Matched { decision }
        }
    }
}

fn trace_row(t: TraceEntry) -> TraceRow {
    let step = match &t.item {
        TraceItem::NaclEntry { entry, .. } => TraceStep::Nacl { entry: entry + 1 },
        TraceItem::InnerAccept { .. } => TraceStep::InnerAccept,
        TraceItem::SgRule { priority, .. } => TraceStep::Rule {
            priority: *priority,
        },
    };
    let lost = match t.status {
        TraceStatus::Decided => None,
        TraceStatus::Lost { why, winner } => Some(Lost {
            winner,
            why: loss_text(why).to_owned(),
        }),
    };
    TraceRow {
        step,
        reason: t.item.reason().clone(),
        action: t.action,
        lost,
    }
}

fn loss_text(why: LossReason) -> &'static str {
    match why {
        LossReason::LaterNaclEntry => "an earlier entry matched first",
        LossReason::OverriddenByInnerAccept => "inner access decides first",
        LossReason::WeakerPriority => "a stronger priority matched",
        LossReason::DropWinsTie => "a drop at the same priority wins",
        LossReason::TieBreak => "same verdict, an earlier rule names it",
    }
}
