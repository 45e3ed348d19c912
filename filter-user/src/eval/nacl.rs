//! SPEC §3 step 3: the network ACL of the ENI's vSwitch.
use super::{
    matching::{acl_entry_matches, net_contains, remote_addr},
    verdict_of, LossReason, NaclOutcome, TraceEntry, TraceItem, TraceStatus,
};
use crate::{
    ruleset::{Direction, EniIdx, Ruleset},
    verdict::{Decision, Packet, Reason, Verdict},
};

/// The NACL step alone, for a packet at ENI `eni` in `direction`.
pub fn evaluate_nacl(rs: &Ruleset, eni: EniIdx, direction: Direction, pkt: &Packet) -> NaclOutcome {
    evaluate_traced(rs, eni, direction, pkt).0
}

/// The NACL step, with a trace entry for every entry that matched.
pub(super) fn evaluate_traced(
    rs: &Ruleset,
    eni: EniIdx,
    direction: Direction,
    pkt: &Packet,
) -> (NaclOutcome, Vec<TraceEntry>) {
    // §3 step 3: skipped when the vSwitch has no ACL.
    let Some(acl_idx) = rs.eni_acl(eni) else {
        return (NaclOutcome::NoAcl, Vec::new());
    };

    // §3 step 3: skipped when the remote address lies inside the vSwitch
    // CIDR (any of them: IPv4 and IPv6); traffic inside one vSwitch is not
    // filtered.
    let remote = remote_addr(direction, pkt);
    let vswitch = &rs.vswitches[rs.enis[eni].vswitch];
    if let Some(cidr) = vswitch.cidrs.iter().find(|cidr| net_contains(cidr, remote)) {
        return (NaclOutcome::InsideVswitch { cidr: *cidr }, Vec::new());
    }

    // §2.3 / §3 step 3: the list of this direction, in order.
    let acl = &rs.acls[acl_idx];
    let entries = acl.entries(direction);
    let matching: Vec<usize> = (0..entries.len())
        .filter(|&i| acl_entry_matches(&entries[i], direction, pkt))
        .collect();
    let reason_of = |i: usize| Reason::Nacl {
        acl: acl.id.clone(),
        entry: entries[i].name.clone(),
    };

    // §3 step 3: no entry matches (an empty list included): drop.
    let Some(&first) = matching.first() else {
        let outcome = NaclOutcome::NoMatch {
            acl: acl_idx,
            decision: Decision {
                verdict: Verdict::Drop,
                reason: Reason::NaclDefault {
                    acl: acl.id.clone(),
                },
            },
        };
        return (outcome, Vec::new());
    };

    // §2.3: the first matching entry is the strongest and decides; every
    // later matching entry is traced as a loser.
    let outcome = NaclOutcome::Matched {
        acl: acl_idx,
        entry: first,
        action: entries[first].action,
        decision: Decision {
            verdict: verdict_of(entries[first].action),
            reason: reason_of(first),
        },
    };
    let trace = matching
        .iter()
        .map(|&i| TraceEntry {
            item: TraceItem::NaclEntry {
                acl: acl_idx,
                entry: i,
                reason: reason_of(i),
            },
            action: entries[i].action,
            status: if i == first {
                TraceStatus::Decided
            } else {
                TraceStatus::Lost {
                    why: LossReason::LaterNaclEntry,
                    winner: reason_of(first),
                }
            },
        })
        .collect();
    (outcome, trace)
}
