//! `filter_packets_total` and `filter_bytes_total`: the flow log's window
//! records added up by (ENI, direction, action, reason).
//!
//! The records are the exact source: every packet on a guarded ENI counts
//! into exactly one flow, and the flow log reports each flow's packets once
//! per window (`docs/METRICS.md`). Rule series are capped: a rule gets a
//! series of its own the first window it counts while fewer than the cap
//! have one (the most active of a window first), and keeps it, so no
//! counter ever moves between series and every series only grows. The
//! rest add up under `reason="other-rules"`.
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use super::label::LabelValue;
use crate::{
    api::{FlowAction, FlowRecord, LogStatus},
    ruleset::Direction,
    verdict::Reason,
};

/// The reason rules over the cap are counted under.
pub const OTHER_RULES: &str = "other-rules";
/// The reason of a flow no rule decided (an untracked accept without a
/// rule slot).
const NO_REASON: &str = "none";

/// The labels of a verdict series: all bounded by the document.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct VerdictLabels {
    pub eni: LabelValue,
    pub direction: LabelValue,
    pub action: LabelValue,
    pub reason: LabelValue,
}

/// The two verdict families and which rules have series.
#[derive(Debug)]
pub struct Verdicts {
    max_rules: usize,
    /// Reasons that do not count against the cap (`default-deny`, ...).
    fixed: HashSet<String>,
    admitted: Mutex<HashSet<String>>,
    packets: Family<VerdictLabels, Counter>,
    bytes: Family<VerdictLabels, Counter>,
}

impl Verdicts {
    /// The families, registered in `registry`; at most `max_rules` rules
    /// get series of their own.
    pub fn new(registry: &mut Registry, max_rules: usize) -> Self {
        let v = Verdicts {
            max_rules,
            fixed: [Reason::DefaultDeny, Reason::DefaultAccept, Reason::Tracked]
                .iter()
                .map(ToString::to_string)
                .chain([OTHER_RULES.to_owned(), NO_REASON.to_owned()])
                .collect(),
            admitted: Mutex::new(HashSet::new()),
            packets: Family::default(),
            bytes: Family::default(),
        };
        registry.register(
            "filter_packets",
            "Packets on guarded ENIs by verdict reason (from the flow log's records)",
            v.packets.clone(),
        );
        registry.register(
            "filter_bytes",
            "IP-layer bytes on guarded ENIs by verdict reason (from the flow log's records)",
            v.bytes.clone(),
        );
        v
    }

    /// Adds one window's records.
    pub fn add(&self, records: &[Arc<FlowRecord>]) {
        // Summed under borrowed keys first: a window may hold a record per
        // flow, and most share their labels.
        type Key<'a> = (&'a str, Direction, FlowAction, &'a str);
        let mut sums: HashMap<Key<'_>, (u64, u64)> = HashMap::new();
        for r in records.iter().filter(|r| r.log_status == LogStatus::Ok) {
            let (Some(direction), Some(action)) = (r.direction, r.action) else {
                continue;
            };
            let reason = r.rule_id.as_deref().unwrap_or(NO_REASON);
            let sum = sums
                .entry((r.eni_id.as_str(), direction, action, reason))
                .or_default();
            // Saturating: a record's counts come from the kernel, and no
            // sum of them may panic the daemon (the `writers` fuzz target).
            sum.0 = sum.0.saturating_add(r.packets.unwrap_or(0));
            sum.1 = sum.1.saturating_add(r.bytes.unwrap_or(0));
        }
        let mut new: HashMap<&str, u64> = HashMap::new();
        {
            let admitted = self.admitted();
            for ((_, _, _, reason), (packets, _)) in &sums {
                if !self.fixed.contains(*reason) && !admitted.contains(*reason) {
                    let n = new.entry(reason).or_default();
                    *n = n.saturating_add(*packets);
                }
            }
        }
        let admitted = self.admit(new);
        for ((eni, direction, action, reason), (packets, bytes)) in sums {
            let own = self.fixed.contains(reason) || admitted.contains(reason);
            let labels = VerdictLabels {
                eni: eni.into(),
                direction: direction.as_str().into(),
                action: action.as_str().into(),
                reason: if own { reason } else { OTHER_RULES }.into(),
            };
            self.packets.get_or_create(&labels).inc_by(packets);
            self.bytes.get_or_create(&labels).inc_by(bytes);
        }
    }

    fn admitted(&self) -> MutexGuard<'_, HashSet<String>> {
        self.admitted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits `new` rules (with their packets this window), the most active
    /// first, while there is room; returns the admitted set.
    fn admit(&self, new: HashMap<&str, u64>) -> MutexGuard<'_, HashSet<String>> {
        let mut admitted = self.admitted();
        let room = self.max_rules.saturating_sub(admitted.len());
        let mut new: Vec<(&str, u64)> = new.into_iter().collect();
        if new.len() > room {
            // Most packets first; ties by name, so the choice is
            // reproducible.
            new.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            new.truncate(room);
        }
        admitted.extend(new.into_iter().map(|(reason, _)| reason.to_owned()));
        admitted
    }

    /// How many rules have series of their own.
    pub fn rule_series(&self) -> usize {
        self.admitted().len()
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;
    use crate::flowlog::record::tests::tcp_record;

    fn record(eni: &str, rule: &str, packets: u64, action: FlowAction) -> Arc<FlowRecord> {
        Arc::new(FlowRecord {
            eni_id: eni.into(),
            rule_id: Some(rule.into()),
            packets: Some(packets),
            bytes: Some(packets * 100),
            action: Some(action),
            ..tcp_record()
        })
    }

    fn get(v: &Verdicts, eni: &str, reason: &str, action: FlowAction) -> (u64, u64) {
        let labels = VerdictLabels {
            eni: eni.into(),
            direction: "ingress".into(),
            action: action.as_str().into(),
            reason: reason.into(),
        };
        let p = v.packets.get(&labels).map_or(0, |c| c.get());
        let b = v.bytes.get(&labels).map_or(0, |c| c.get());
        (p, b)
    }

    #[test]
    fn records_add_up_by_eni_direction_action_and_reason() {
        let mut registry = Registry::default();
        let v = Verdicts::new(&mut registry, 10);
        v.add(&[
            record("eni-a", "http", 3, FlowAction::Accept),
            record("eni-a", "http", 4, FlowAction::Accept),
            record("eni-b", "http", 5, FlowAction::Accept),
            record("eni-a", "default-deny", 2, FlowAction::Reject),
            Arc::new(FlowRecord {
                log_status: LogStatus::Nodata,
                ..tcp_record()
            }),
        ]);
        v.add(&[record("eni-a", "http", 1, FlowAction::Accept)]);
        assert_eq!(get(&v, "eni-a", "http", FlowAction::Accept), (8, 800));
        assert_eq!(get(&v, "eni-b", "http", FlowAction::Accept), (5, 500));
        assert_eq!(
            get(&v, "eni-a", "default-deny", FlowAction::Reject),
            (2, 200)
        );
        assert_eq!(v.rule_series(), 1, "default-deny is not a rule");
    }

    #[test]
    fn rules_over_the_cap_add_up_under_other_rules_and_never_move() {
        let mut registry = Registry::default();
        let v = Verdicts::new(&mut registry, 2);
        // The two busiest of the first window get series.
        v.add(&[
            record("eni-a", "r1", 1, FlowAction::Accept),
            record("eni-a", "r2", 9, FlowAction::Accept),
            record("eni-a", "r3", 5, FlowAction::Accept),
            record("eni-a", "tracked", 7, FlowAction::Accept),
        ]);
        assert_eq!(get(&v, "eni-a", "r2", FlowAction::Accept).0, 9);
        assert_eq!(get(&v, "eni-a", "r3", FlowAction::Accept).0, 5);
        assert_eq!(get(&v, "eni-a", "r1", FlowAction::Accept).0, 0);
        assert_eq!(get(&v, "eni-a", OTHER_RULES, FlowAction::Accept).0, 1);
        assert_eq!(get(&v, "eni-a", "tracked", FlowAction::Accept).0, 7);
        // r1 grows busy later: it stays in other-rules (no series moves).
        v.add(&[record("eni-a", "r1", 100, FlowAction::Accept)]);
        assert_eq!(get(&v, "eni-a", OTHER_RULES, FlowAction::Accept).0, 101);
        assert_eq!(v.rule_series(), 2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains(
            r#"filter_packets_total{eni="eni-a",direction="ingress",action="ACCEPT",reason="other-rules"} 101"#
        ), "{text}");
    }
}
