//! An [`Enforcer`] that keeps its data plane in memory: the daemon's
//! tests run on it without privileges, and make its steps fail.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, MutexGuard},
};

use filter::{
    api::{MapFill, StatCounter, TrackedConnection},
    compile::SlotTable,
    daemon::{Compiled, DataplaneStatus, EnforceError, Enforcer, ReasonCounter},
    eval,
    ruleset::{Direction, HookChoice, Ruleset},
    verdict::{Packet, Reason},
};

/// The state of a [`MemoryEnforcer`]'s pretend data plane. It outlives the
/// enforcer (as pins outlive a daemon), so a test can restart a daemon on
/// the same data plane, look at what it did, and make steps fail.
#[derive(Debug, Default)]
pub struct MemoryDataplane {
    pub generation: Option<u32>,
    pub attached: BTreeSet<String>,
    /// The reasons the running generation counts.
    pub rules: Vec<Reason>,
    /// Hits to report, by reason.
    pub hits: BTreeMap<Reason, ReasonCounter>,
    /// Tracked connections: interface, the first packet, the entry.
    pub connections: Vec<(String, Packet, TrackedConnection)>,
    pub conntrack_size: u64,
    /// Every step, in order: `attach tap0`, `activate 3`, `detach tap1`,
    /// `adopt 3`, `detach-all`.
    pub log: Vec<String>,
    /// Attaching to these interfaces fails.
    pub fail_attach: BTreeSet<String>,
    /// These interfaces do not exist: their ENIs are pending.
    pub missing: BTreeSet<String>,
    /// Detaching from these interfaces fails.
    pub fail_detach: BTreeSet<String>,
    /// `activate` fails.
    pub fail_activate: bool,
    /// `compile` fails with this message.
    pub fail_compile: Option<String>,
}

/// A plan of the [`MemoryEnforcer`].
#[derive(Clone, Debug)]
pub struct MemoryPlan {
    pub generation: u32,
    pub rules: Vec<Reason>,
}

/// An [`Enforcer`] that keeps its data plane in memory. Cloning it gives
/// another handle on the same data plane.
#[derive(Clone, Debug, Default)]
pub struct MemoryEnforcer {
    dataplane: Arc<Mutex<MemoryDataplane>>,
}

impl MemoryEnforcer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The pretend data plane, to inspect or to set up failures and hits.
    pub fn dataplane(&self) -> MutexGuard<'_, MemoryDataplane> {
        self.dataplane
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Enforcer for MemoryEnforcer {
    type Plan = MemoryPlan;

    fn running_generation(&self) -> Option<u32> {
        self.dataplane().generation
    }

    fn attached(&self) -> BTreeSet<String> {
        self.dataplane().attached.clone()
    }

    fn compile(
        &self,
        generation: u32,
        ruleset: &Ruleset,
        slots: &SlotTable,
    ) -> Result<Compiled<MemoryPlan>, EnforceError> {
        if let Some(message) = self.dataplane().fail_compile.clone() {
            return Err(EnforceError::Compile {
                generation,
                message,
            });
        }
        // The slot table passes through: this enforcer counts by reason.
        Ok(Compiled {
            plan: MemoryPlan {
                generation,
                rules: eval::reasons(ruleset, None).into_iter().collect(),
            },
            slots: slots.clone(),
        })
    }

    fn attach(&mut self, interface: &str, _hook: HookChoice) -> Result<bool, EnforceError> {
        let mut dp = self.dataplane();
        if dp.fail_attach.contains(interface) {
            return Err(EnforceError::Attach {
                interface: interface.to_owned(),
                message: "injected failure".to_owned(),
            });
        }
        if dp.missing.contains(interface) {
            return Ok(false);
        }
        dp.log.push(format!("attach {interface}"));
        dp.attached.insert(interface.to_owned());
        Ok(true)
    }

    fn guard(&mut self, interface: &str) -> Result<bool, EnforceError> {
        self.attach(interface, HookChoice::Auto)
    }

    fn forget(&mut self, interface: &str, _ifindex: u32) -> Result<(), EnforceError> {
        let mut dp = self.dataplane();
        dp.log.push(format!("forget {interface}"));
        dp.attached.remove(interface);
        Ok(())
    }

    fn reconcile(&mut self, wanted: &[String]) -> Result<Vec<String>, EnforceError> {
        let unguarded: Vec<String> = {
            let dp = self.dataplane();
            wanted
                .iter()
                .filter(|i| !dp.attached.contains(*i) && !dp.missing.contains(*i))
                .cloned()
                .collect()
        };
        for interface in &unguarded {
            self.attach(interface, HookChoice::Auto)?;
        }
        Ok(unguarded)
    }

    fn detach(&mut self, interface: &str) -> Result<(), EnforceError> {
        let mut dp = self.dataplane();
        if dp.fail_detach.contains(interface) {
            return Err(EnforceError::Detach {
                interface: interface.to_owned(),
                message: "injected failure".to_owned(),
            });
        }
        dp.log.push(format!("detach {interface}"));
        dp.attached.remove(interface);
        Ok(())
    }

    fn activate(&mut self, plan: &MemoryPlan) -> Result<(), EnforceError> {
        let mut dp = self.dataplane();
        if dp.fail_activate {
            return Err(EnforceError::Write {
                generation: plan.generation,
                message: "injected failure".to_owned(),
            });
        }
        if dp.generation.is_some_and(|g| g & 1 == plan.generation & 1) {
            // The kernel enforcer would be overwriting the running slot.
            return Err(EnforceError::Write {
                generation: plan.generation,
                message: format!("generation {} is in the running slot", plan.generation),
            });
        }
        dp.log.push(format!("activate {}", plan.generation));
        dp.generation = Some(plan.generation);
        dp.rules = plan.rules.clone();
        Ok(())
    }

    fn adopt(&mut self, plan: &MemoryPlan) -> Result<(), EnforceError> {
        let mut dp = self.dataplane();
        dp.log.push(format!("adopt {}", plan.generation));
        dp.rules = plan.rules.clone();
        Ok(())
    }

    fn status(&self) -> Result<DataplaneStatus, EnforceError> {
        let dp = self.dataplane();
        Ok(DataplaneStatus {
            hooks: dp
                .attached
                .iter()
                .map(|i| (i.clone(), vec!["xdp".to_owned(), "tc".to_owned()]))
                .collect(),
            conntrack: MapFill {
                used: dp.connections.len() as u64,
                size: if dp.conntrack_size == 0 {
                    u64::from(filter_common::DEFAULT_CT_ENTRIES)
                } else {
                    dp.conntrack_size
                },
            },
            // No maps that grow in memory.
            ranges: MapFill::default(),
            cells: MapFill::default(),
            stats: filter_common::STAT_LABELS
                .iter()
                .map(|(index, label)| StatCounter {
                    name: (*label).to_owned(),
                    packets: 0,
                    drop: filter_common::stat_is_drop(*index),
                })
                .collect(),
        })
    }

    fn counters(&self) -> Result<Vec<ReasonCounter>, EnforceError> {
        let dp = self.dataplane();
        Ok(dp
            .rules
            .iter()
            .map(|reason| {
                dp.hits.get(reason).cloned().unwrap_or(ReasonCounter {
                    reason: reason.clone(),
                    packets: 0,
                    bytes: 0,
                    last_hit: None,
                })
            })
            .collect())
    }

    fn tracked(
        &self,
        interface: &str,
        _direction: Direction,
        packet: &Packet,
    ) -> Result<Option<TrackedConnection>, EnforceError> {
        let dp = self.dataplane();
        Ok(dp
            .connections
            .iter()
            .find(|(i, first, _)| i == interface && same_connection(first, packet))
            .map(|(_, _, c)| c.clone()))
    }

    fn detach_all(&mut self) -> Result<Vec<String>, EnforceError> {
        let mut dp = self.dataplane();
        dp.log.push("detach-all".to_owned());
        dp.generation = None;
        dp.rules.clear();
        dp.connections.clear();
        Ok(std::mem::take(&mut dp.attached).into_iter().collect())
    }
}

/// Whether two packets belong to one connection, in either direction.
fn same_connection(a: &Packet, b: &Packet) -> bool {
    let ends = |p: &Packet| {
        let (x, y) = ((p.src, p.src_port), (p.dst, p.dst_port));
        if x <= y {
            (x, y)
        } else {
            (y, x)
        }
    };
    a.proto == b.proto && ends(a) == ends(b)
}
