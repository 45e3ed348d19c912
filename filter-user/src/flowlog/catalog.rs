//! Names for what the kernel reports by number: an interface index is an
//! ENI (with its vSwitch and VPC), a counter slot of a generation is a
//! reason (`rule_id`).
//!
//! The daemon sends a [`FlowNames`] whenever the running generation
//! changes. Names are kept after they leave the running generation: a
//! connection admitted by generation 3 may still send packets under
//! generation 5, and an ENI that left still has flows to report.
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use filter_common::RULE_SLOT_TRACKED;

use crate::{ruleset::Ruleset, verdict::Reason};

/// An ENI as flow records name it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EniMeta {
    pub id: String,
    pub vswitch_id: Option<String>,
    pub vpc_id: Option<String>,
}

/// What the daemon tells the flow log about the running generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowNames {
    pub generation: u32,
    /// Every ENI with its interface index on this host (`None`: the
    /// interface is gone).
    pub enis: Vec<(Option<u32>, EniMeta)>,
    /// Counter slot → reason text (`http`, `default-deny`, `nacl:acl/web`,
    /// `inner-accept:sg`, `tracked`, ...).
    pub reasons: BTreeMap<u32, String>,
    /// The document's `flow_log.capture_window_s`, if set.
    pub capture_window: Option<Duration>,
}

impl FlowNames {
    /// The names of generation `generation` of `rs`, whose counter slots
    /// stand for `reasons`; interface indexes as they are on this host now.
    pub fn new(generation: u32, rs: &Ruleset, reasons: &BTreeMap<u32, Reason>) -> FlowNames {
        let enis = rs
            .enis
            .iter()
            .map(|eni| {
                let vswitch = rs.vswitches.get(eni.vswitch);
                let vpc = vswitch.and_then(|v| rs.vpcs.get(v.vpc));
                let ifindex = nix::net::if_::if_nametoindex(eni.interface.as_str()).ok();
                let meta = EniMeta {
                    id: eni.id.clone(),
                    vswitch_id: vswitch.map(|v| v.id.clone()),
                    vpc_id: vpc.map(|v| v.id.clone()),
                };
                (ifindex, meta)
            })
            .collect();
        FlowNames {
            generation,
            enis,
            reasons: reasons
                .iter()
                .map(|(slot, reason)| (*slot, reason.to_string()))
                .collect(),
            capture_window: rs
                .flow_log
                .capture_window_s
                .map(|s| Duration::from_secs(u64::from(s))),
        }
    }
}

/// The names the collector has learnt so far.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Interface index → ENI, newest generation first to win.
    enis: HashMap<u32, Arc<EniMeta>>,
    /// The ENIs of the running generation (they get `NODATA` records).
    current: Vec<(u32, Arc<EniMeta>)>,
    /// Slot → (first generation with this name, name), in generation
    /// order; a slot changes name only when a generation reuses it.
    reasons: HashMap<u32, Vec<(u32, Arc<str>)>>,
    /// The running generation, when there is one.
    generation: Option<u32>,
    capture_window: Option<Duration>,
    /// `EniConfig::eni_index` → interface index (from `FILTER_ENIS`), to
    /// put the data plane's per-ENI loss counters on an ENI.
    eni_index: HashMap<u32, u32>,
}

impl Catalog {
    /// Learns the names of a new running generation; `None`: nothing runs
    /// any more (detached).
    pub fn update(&mut self, names: Option<&FlowNames>) {
        let Some(names) = names else {
            self.generation = None;
            self.current.clear();
            self.capture_window = None;
            return;
        };
        self.generation = Some(names.generation);
        self.capture_window = names.capture_window;
        self.current.clear();
        for (ifindex, meta) in &names.enis {
            let Some(ifindex) = ifindex else { continue };
            let meta = Arc::new(meta.clone());
            self.enis.insert(*ifindex, Arc::clone(&meta));
            self.current.push((*ifindex, meta));
        }
        for (slot, reason) in &names.reasons {
            let history = self.reasons.entry(*slot).or_default();
            if history.last().is_none_or(|(_, r)| **r != **reason) {
                history.push((names.generation, Arc::from(reason.as_str())));
            }
        }
    }

    /// Records which interface each ENI index is (`FILTER_ENIS`).
    pub fn set_eni_indexes(&mut self, pairs: impl IntoIterator<Item = (u32, u32)>) {
        for (ifindex, eni_index) in pairs {
            self.eni_index.insert(eni_index, ifindex);
        }
    }

    /// The interface of ENI index `eni_index`.
    pub fn ifindex_of_eni_index(&self, eni_index: u32) -> Option<u32> {
        self.eni_index.get(&eni_index).copied()
    }

    /// The ENI on interface `ifindex`, if any generation named it.
    pub fn eni(&self, ifindex: u32) -> Option<&Arc<EniMeta>> {
        self.enis.get(&ifindex)
    }

    /// The running generation's ENIs, by interface index.
    pub fn current_enis(&self) -> &[(u32, Arc<EniMeta>)] {
        &self.current
    }

    pub fn generation(&self) -> Option<u32> {
        self.generation
    }

    /// The document's capture window, if it sets one.
    pub fn capture_window(&self) -> Option<Duration> {
        self.capture_window
    }

    /// The reason counter slot `slot` stood for in generation `generation`:
    /// the name it had in the newest generation not after `generation`
    /// (or, for an entry older than anything learnt, its oldest name).
    pub fn reason(&self, generation: u32, slot: u32) -> Option<Arc<str>> {
        let history = self.reasons.get(&slot)?;
        history
            .iter()
            .rev()
            .find(|(from, _)| *from <= generation)
            .or_else(|| history.first())
            .map(|(_, r)| Arc::clone(r))
    }

    /// The `tracked` reason (replies of a connection).
    pub fn tracked(&self) -> Arc<str> {
        self.reasons
            .get(&RULE_SLOT_TRACKED)
            .and_then(|h| h.last())
            .map_or_else(|| Arc::from("tracked"), |(_, r)| Arc::clone(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(generation: u32, enis: &[(u32, &str)], reasons: &[(u32, &str)]) -> FlowNames {
        FlowNames {
            generation,
            enis: enis
                .iter()
                .map(|(i, id)| {
                    (
                        Some(*i),
                        EniMeta {
                            id: (*id).into(),
                            ..EniMeta::default()
                        },
                    )
                })
                .collect(),
            reasons: reasons.iter().map(|(s, r)| (*s, (*r).to_owned())).collect(),
            capture_window: None,
        }
    }

    #[test]
    fn reasons_are_named_by_the_generation_that_used_them() {
        let mut c = Catalog::default();
        c.update(Some(&names(
            1,
            &[(5, "eni-a")],
            &[(16, "http"), (2, "tracked")],
        )));
        c.update(Some(&names(2, &[(6, "eni-b")], &[(17, "ssh")])));
        // Generation 4 gives slot 16 (unused since 2) to another rule.
        c.update(Some(&names(4, &[(6, "eni-b")], &[(16, "dns")])));
        assert_eq!(c.reason(1, 16).as_deref(), Some("http"));
        assert_eq!(c.reason(3, 16).as_deref(), Some("http"));
        assert_eq!(c.reason(4, 16).as_deref(), Some("dns"));
        assert_eq!(c.reason(9, 17).as_deref(), Some("ssh"));
        // Older than anything learnt (a restarted daemon): the oldest name.
        assert_eq!(c.reason(0, 16).as_deref(), Some("http"));
        assert_eq!(c.reason(4, 99), None);
        assert_eq!(&*c.tracked(), "tracked");
        // The ENI that left keeps its name; only the running ones get NODATA.
        assert_eq!(c.eni(5).map(|e| e.id.as_str()), Some("eni-a"));
        assert_eq!(c.current_enis().len(), 1);
        assert_eq!(c.current_enis()[0].0, 6);
        c.update(None);
        assert!(c.current_enis().is_empty());
        assert_eq!(c.generation(), None);
        assert_eq!(c.eni(6).map(|e| e.id.as_str()), Some("eni-b"));
    }
}
