//! The daemon's view of the kernel side: [`Enforcer`].
//!
//! The daemon decides *what* to enforce and *in which order* (validate,
//! compile, attach the new interfaces, switch generations, detach the
//! interfaces that left, roll back on failure: see `apply.rs`). An
//! [`Enforcer`] does each step:
//! [`KernelEnforcer`](crate::dataplane::KernelEnforcer) with the eBPF data
//! plane, the tests' in-memory one without privileges.
use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::{
    api::{MapFill, StatCounter, TrackedConnection},
    compile::SlotTable,
    dataplane::FlowEvents,
    ruleset::{Direction, HookChoice, Ruleset},
    verdict::{Packet, Reason},
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
    pub slots: SlotTable,
}

/// The counters of one reason (a rule, a NACL entry, a fixed reason).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReasonCounter {
    pub reason: Reason,
    pub packets: u64,
    pub bytes: u64,
    /// Unix seconds of the latest hit.
    pub last_hit: Option<u64>,
}

/// What `status` needs from the data plane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataplaneStatus {
    /// Interface → the hooks a program is attached at (`xdp`, `tc`).
    pub hooks: BTreeMap<String, Vec<String>>,
    pub conntrack: MapFill,
    /// The running generation's share of the maps that grow.
    pub ranges: MapFill,
    pub cells: MapFill,
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
    /// saved with the previous generation. Touches nothing in the kernel:
    /// an error here leaves everything as it was.
    fn compile(
        &self,
        generation: u32,
        ruleset: &Ruleset,
        slots: &SlotTable,
    ) -> Result<Compiled<Self::Plan>, EnforceError>;

    /// Attaches the programs to `interface` (`hook` on its ingress, tcx on
    /// its egress), pinned. Attaching
    /// an interface that is already attached succeeds. `false`: there is no
    /// such interface (yet); its ENI is pending (SPEC §2.4).
    fn attach(&mut self, interface: &str, hook: HookChoice) -> Result<bool, EnforceError>;

    /// `interface` appeared or was made again (a link event): when it is
    /// the interface of an ENI of the running generation, guard it under
    /// its index now (the ENI's entry first, then the programs). `false`:
    /// not an ENI's interface, or gone again.
    fn guard(&mut self, interface: &str) -> Result<bool, EnforceError>;

    /// `interface`, which had index `ifindex`, is gone: forget its ENI entry
    /// and its dead links. Its ENI is pending until it comes back.
    fn forget(&mut self, interface: &str, ifindex: u32) -> Result<(), EnforceError>;

    /// [`Enforcer::guard`]s every interface of `wanted` that exists and is
    /// not guarded under its index now; returns those it guarded.
    fn reconcile(&mut self, wanted: &[String]) -> Result<Vec<String>, EnforceError>;

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
    fn counters(&self) -> Result<Vec<ReasonCounter>, EnforceError>;

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
    fn take_flow_events(&mut self) -> Option<FlowEvents> {
        None
    }

    /// Flow logs: counter slot → reason of the running generation.
    fn slot_reasons(&self) -> BTreeMap<u32, Reason> {
        BTreeMap::new()
    }

    /// The live connection table's size, when the enforcer has one.
    fn conntrack_size(&self) -> Option<u32> {
        None
    }

    /// The size a connection table created from now on gets (SPEC §3.1
    /// `conntrack.max_entries`); one that exists keeps its own.
    fn set_conntrack_size(&mut self, _entries: u32) {}
}
