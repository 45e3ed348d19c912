//! The daemon's view of the kernel side: [`Enforcer`].
//!
//! The daemon decides *what* to enforce and *in which order* (validate,
//! compile, attach the new interfaces, switch generations, detach the
//! interfaces that left, roll back on failure: see `apply.rs`). An
//! [`Enforcer`] does each step. [`kernel::KernelEnforcer`](super::kernel)
//! does them with the eBPF data plane; [`MemoryEnforcer`] does them in
//! memory, for the daemon's tests and for running the daemon unprivileged.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, MutexGuard},
};

use serde_json::Value;
use thiserror::Error;

use crate::{
    api::{MapFill, RuleCounter, StatCounter, TrackedConnection},
    ruleset::{Direction, Ruleset},
    verdict::Packet,
};

/// Why an enforcer step failed. The message carries the underlying error
/// (for a load failure, the verifier log).
#[derive(Debug, Error)]
pub enum EnforceError {
    /// The rule set does not compile for the data plane (say, it would not
    /// fit the maps). Nothing was touched.
    #[error("compiling generation {generation}: {message}")]
    Compile { generation: u32, message: String },
    #[error("attaching to {interface}: {message}")]
    Attach { interface: String, message: String },
    #[error("detaching from {interface}: {message}")]
    Detach { interface: String, message: String },
    /// Writing a generation or switching to it failed; the previous
    /// generation is still the one packets see.
    #[error("writing generation {generation}: {message}")]
    Write { generation: u32, message: String },
    /// Loading the programs or adopting the pinned maps failed.
    #[error("loading the data plane: {0}")]
    Load(String),
    /// Reading the data plane (counters, conntrack) failed.
    #[error("reading the data plane: {0}")]
    Read(String),
}

/// A generation compiled for the data plane, and the slot table to save
/// with it so the next generation gives the same rules the same counter
/// slots.
pub struct Compiled<P> {
    pub plan: P,
    /// The enforcer's own state to persist with the generation (for the
    /// kernel enforcer: `compile::SlotTable` as JSON).
    pub slots: Value,
}

/// What `status` needs from the data plane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataplaneStatus {
    /// Interface → the hooks a program is attached at (`xdp`, `tc`).
    pub hooks: BTreeMap<String, Vec<String>>,
    pub conntrack: MapFill,
    /// Every verdict counter (`FILTER_STATS`), summed over CPUs.
    pub stats: Vec<StatCounter>,
}

/// The kernel side of the daemon. Every method may block (map writes,
/// netlink): the daemon calls them from blocking threads, one at a time.
pub trait Enforcer: Send + 'static {
    /// A compiled generation, ready to write.
    type Plan: Send + 'static;

    /// The generation the data plane runs now, if any; after a restart,
    /// the one the pinned maps hold. A new generation never goes into the
    /// slot (`generation & 1`) of this one, so an enforcer whose fresh maps
    /// reserve slot 0 says `Some(0)`.
    fn running_generation(&self) -> Option<u32>;

    /// The interfaces the programs are attached to now (after a restart,
    /// the pinned attachments).
    fn attached(&self) -> BTreeSet<String>;

    /// Compiles `ruleset` as `generation`, starting from the slot table
    /// saved with the previous generation (`Value::Null` for none). Touches
    /// nothing in the kernel: an error here leaves everything as it was.
    fn compile(
        &self,
        generation: u32,
        ruleset: &Ruleset,
        slots: &Value,
    ) -> Result<Compiled<Self::Plan>, EnforceError>;

    /// Attaches the programs to `interface` (XDP and TC), pinned. Attaching
    /// an interface that is already attached succeeds.
    fn attach(&mut self, interface: &str) -> Result<(), EnforceError>;

    /// Removes the programs from `interface` and their pins.
    fn detach(&mut self, interface: &str) -> Result<(), EnforceError>;

    /// Writes `plan` into its generation slot and switches to it with one
    /// write. On error the running generation is unchanged.
    fn activate(&mut self, plan: &Self::Plan) -> Result<(), EnforceError>;

    /// Takes over `plan`'s generation, which the data plane already runs
    /// (a restarted daemon): nothing is rewritten and tracked connections
    /// stay; the enforcer only learns what the generation's slots mean.
    /// Fails, changing nothing, when the data plane does not run `plan` as
    /// compiled (an interface was made again with a new index): the caller
    /// then applies it as a new generation.
    fn adopt(&mut self, plan: &Self::Plan) -> Result<(), EnforceError>;

    fn status(&self) -> Result<DataplaneStatus, EnforceError>;

    /// Per-rule counters of the running generation's rules and of the fixed
    /// slots (`default-deny`, `default-accept`, `tracked`, ...).
    fn counters(&self) -> Result<Vec<RuleCounter>, EnforceError>;

    /// The tracked connection `packet` belongs to at `interface`, if any
    /// (either direction of the connection).
    fn tracked(
        &self,
        interface: &str,
        direction: Direction,
        packet: &Packet,
    ) -> Result<Option<TrackedConnection>, EnforceError>;

    /// Detaches from every interface and removes every pin; returns the
    /// interfaces it detached from.
    fn detach_all(&mut self) -> Result<Vec<String>, EnforceError>;

    /// Flow logs: the event ring buffer of a data plane loaded since the
    /// last call (each one is handed out once), if the enforcer has one.
    fn take_flow_events(&mut self) -> Option<aya::maps::Map> {
        None
    }

    /// Flow logs: counter slot → reason text of the running generation.
    fn slot_reasons(&self) -> BTreeMap<u32, String> {
        BTreeMap::new()
    }
}

/// The counter names a rule set can produce: every rule, NACL entry and
/// inner-accept group, and the fixed reasons.
pub fn reason_names(ruleset: &Ruleset) -> Vec<String> {
    let mut names = vec![
        "default-deny".to_owned(),
        "default-accept".to_owned(),
        "tracked".to_owned(),
    ];
    for group in &ruleset.groups {
        if group.inner_accept {
            names.push(format!("inner-accept:{}", group.id));
        }
        names.extend(group.rules.iter().map(|r| r.id.clone()));
    }
    for acl in &ruleset.acls {
        for entry in acl.ingress.iter().chain(&acl.egress) {
            names.push(format!("nacl:{}/{}", acl.id, entry.name));
        }
        names.push(format!("nacl:{}/default-deny", acl.id));
    }
    names
}

/// The state of a [`MemoryEnforcer`]'s pretend data plane. It outlives the
/// enforcer (as pins outlive a daemon), so a test can restart a daemon on
/// the same data plane, look at what it did, and make steps fail.
#[derive(Debug, Default)]
pub struct MemoryDataplane {
    pub generation: Option<u32>,
    pub attached: BTreeSet<String>,
    /// The counter names of the running generation.
    pub rules: Vec<String>,
    /// Hits to report, by counter name.
    pub hits: BTreeMap<String, RuleCounter>,
    /// Tracked connections: interface, the first packet, the entry.
    pub connections: Vec<(String, Packet, TrackedConnection)>,
    pub conntrack_size: u64,
    /// Every step, in order: `attach tap0`, `activate 3`, `detach tap1`,
    /// `adopt 3`, `detach-all`.
    pub log: Vec<String>,
    /// Attaching to these interfaces fails.
    pub fail_attach: BTreeSet<String>,
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
    pub rules: Vec<String>,
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
        slots: &Value,
    ) -> Result<Compiled<MemoryPlan>, EnforceError> {
        if let Some(message) = self.dataplane().fail_compile.clone() {
            return Err(EnforceError::Compile {
                generation,
                message,
            });
        }
        // Like `compile::SlotTable`: a name keeps its slot across
        // generations; new names get the next free one.
        let mut table: BTreeMap<String, u64> =
            serde_json::from_value(slots.clone()).unwrap_or_default();
        let rules = reason_names(ruleset);
        for name in &rules {
            let next = table.values().max().map_or(0, |m| m + 1);
            table.entry(name.clone()).or_insert(next);
        }
        Ok(Compiled {
            plan: MemoryPlan { generation, rules },
            slots: serde_json::to_value(table).unwrap_or(Value::Null),
        })
    }

    fn attach(&mut self, interface: &str) -> Result<(), EnforceError> {
        let mut dp = self.dataplane();
        if dp.fail_attach.contains(interface) {
            return Err(EnforceError::Attach {
                interface: interface.to_owned(),
                message: "injected failure".to_owned(),
            });
        }
        dp.log.push(format!("attach {interface}"));
        dp.attached.insert(interface.to_owned());
        Ok(())
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

    fn counters(&self) -> Result<Vec<RuleCounter>, EnforceError> {
        let dp = self.dataplane();
        Ok(dp
            .rules
            .iter()
            .map(|name| {
                dp.hits.get(name).cloned().unwrap_or(RuleCounter {
                    rule: name.clone(),
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
