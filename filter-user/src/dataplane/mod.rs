//! The kernel side seen from user space: load the eBPF object, pin, attach,
//! and write compiled generations into its maps.
//!
//! ```text
//! Dataplane::load(Some(pin_dir))   maps adopted from / pinned to pin_dir, programs loaded
//!   .write_generation(&maps)       new slot written, FILTER_ACTIVE switched, old slot deleted
//!   .attach("tap-web1")            XDP + TC egress, links pinned (enforcement outlives us)
//!   .stats() / .all_rule_stats() / .conntrack_entries()
//! detach_all_pinned(pin_dir)       `filterctl detach`: links, maps, the directory
//! ```
//!
//! The pin layout is described in [`pins`]; the apply protocol in
//! [`Dataplane::write_generation`] and `docs/ARCHITECTURE.md` ("Atomic
//! generations").
mod attach;
mod calibrate;
pub mod conntrack;
mod counters;
mod enforcer;
mod error;
mod flows;
mod generation;
mod grow;
pub mod hooks;
mod links;
mod maps;
pub mod object;
pub mod pins;
pub(crate) mod sys;

use std::{collections::BTreeMap, ops::RangeInclusive, path::Path};

use aya::{
    maps::{Map, MapData},
    programs::{SchedClassifier, Xdp},
    Ebpf, EbpfLoader,
};
use filter_common::{
    names, CtEntry, CtKey, EniConfig, EniKey, Run, DEFAULT_CT_ENTRIES, INITIAL_BOUNDS,
    INITIAL_CELLS, MAX_BOUNDS, MAX_CELLS, STAT_COUNT,
};

pub use attach::{Attachment, IngressHook};
pub use counters::RuleCounters;
pub use enforcer::KernelEnforcer;
pub use error::{DataplaneError, Result};
pub use flows::{decode, scan_flow_maps, Event, FlowEvents, FlowScan};
use generation::Need;
pub use generation::{GenerationMaps, LpmEntry, SlotContents, WriteSummary};
pub use links::{LinkEvent, LinkEvents};
pub use pins::{detach_all_pinned, ensure_bpffs, DetachReport};

use attach::IfaceLinks;
use maps::{Maps, PINNED_MAPS};
use pins::PinDir;

/// The loaded data plane: the programs, typed handles on the maps, and the
/// links this process holds.
pub struct Dataplane {
    /// Declared before `ebpf` so the links go before the programs.
    links: BTreeMap<String, IfaceLinks>,
    maps: Maps,
    ebpf: Ebpf,
    /// Declared last: the directory stays locked until everything else is
    /// closed.
    pins: Option<PinDir>,
    /// Set while an upgrade over another layout waits for its first
    /// generation (see [`Dataplane::load_object`]).
    upgrade: Option<Upgrade>,
    /// The object the programs came from: growing the maps loads them
    /// again ([`Dataplane::grow_for`]).
    object: &'static [u8],
    /// Interfaces whose pinned links still run the programs of the maps
    /// before they grew: no generation is written until they are moved.
    unmoved: Vec<(String, Attachment)>,
}

/// An upgrade over pinned maps of another layout, until the first
/// generation is written.
#[derive(Debug, Default)]
struct Upgrade {
    /// Interfaces whose pinned links still run the old programs, and the
    /// ingress hook this build attaches them with.
    held_back: Vec<(String, IngressHook)>,
}

/// The sizes of the maps that grow to the need, `FILTER_BOUNDS` and
/// `FILTER_CELLS` (ARCHITECTURE.md, "Growing the maps"), in entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSizes {
    pub bounds: u32,
    pub cells: u32,
}

impl MapSizes {
    /// What fresh maps are made with by default.
    pub const INITIAL: Self = Self {
        bounds: INITIAL_BOUNDS,
        cells: INITIAL_CELLS,
    };

    /// Each map's name, size, and the sizes it may have.
    fn each(self) -> [(&'static str, u32, RangeInclusive<u32>); 2] {
        [
            (names::BOUNDS, self.bounds, 2..=MAX_BOUNDS),
            (names::CELLS, self.cells, 1..=MAX_CELLS),
        ]
    }
}

/// How [`open`] gets the maps that grow.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Sizing {
    /// The pinned ones, at their own sizes; else new ones of these, pinned.
    Adopt(MapSizes),
    /// New ones of these sizes, not pinned yet ([`Dataplane::grow_for`]
    /// pins them once they hold the running generation).
    Grown(MapSizes),
}

/// Opens the object: maps pinned under `pin_dir` adopted (checked against
/// this build's layouts) or created and pinned.
///
/// The flow-log ring buffer is pinned too, but only for this process: a
/// new process starts on a new ring (`Sizing::Adopt` removes the pin), and
/// its programs reloaded on grown maps write into the ring its reader
/// already holds.
pub(crate) fn open(
    object: &[u8],
    pin_dir: Option<&PinDir>,
    ct_entries: u32,
    sizing: Sizing,
) -> Result<(Ebpf, Maps)> {
    let mut loader = EbpfLoader::new();
    // Only a map this load creates takes it; aya reuses a pin as it is.
    loader.map_max_entries(names::CT, ct_entries);
    let (sizes, adopt) = match sizing {
        Sizing::Adopt(sizes) => (sizes, true),
        Sizing::Grown(sizes) => (sizes, false),
    };
    let growing = sizes.each().map(|(name, _, _)| name);
    for (map, wanted, allowed) in sizes.each() {
        let entries = pin_dir
            .filter(|_| adopt)
            .and_then(|dir| MapData::from_pin(dir.root().join(map)).ok())
            .and_then(|pinned| pinned.info().ok())
            .map_or(wanted, |info| info.max_entries());
        if !allowed.contains(&entries) {
            return Err(DataplaneError::MapSize {
                map,
                entries,
                min: *allowed.start(),
                max: *allowed.end(),
            });
        }
        // aya checks indexes against the object's size: it must be the
        // map's.
        loader.map_max_entries(map, entries);
    }
    if let Some(dir) = pin_dir {
        for name in PINNED_MAPS {
            if adopt || !growing.contains(name) {
                loader.map_pin_path(name, dir.root().join(name));
            }
        }
        let events = dir.root().join(names::EVENTS);
        if adopt {
            pins::remove_stale_pin(&events)?;
        }
        loader.map_pin_path(names::EVENTS, events);
    }
    let mut ebpf = loader.load(object).map_err(DataplaneError::Load)?;
    let maps = Maps::take(&mut ebpf)?;
    Ok((ebpf, maps))
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("pin_dir", &self.pin_dir())
            .field("attached", &self.links.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Dataplane {
    /// Loads the data plane.
    ///
    /// With `pins`, bpffs is mounted at `/sys/fs/bpf` if needed, the
    /// directory is created and locked, and every state map is pinned there
    /// by name, or adopted when an earlier process pinned it (checked
    /// against this build's layouts): a restarted daemon keeps the running
    /// generation and the tracked connections (SPEC §4). The programs are
    /// pinned under `progs/`. Without `pins` the maps are private to this
    /// value (tests).
    ///
    /// A program the verifier rejects fails with
    /// [`DataplaneError::Verifier`], which carries the verifier log.
    pub fn load(pins: Option<&Path>) -> Result<Self> {
        Self::load_sized(pins, DEFAULT_CT_ENTRIES, MapSizes::INITIAL)
    }

    /// [`Self::load`] with a connection table of `ct_entries` entries
    /// (`conntrack.max_entries`, SPEC §3.1) and the maps that grow made
    /// at `sizes`, if this load creates them. Pinned maps keep the size
    /// they were made with: [`Self::conntrack_capacity`] and
    /// [`Self::map_sizes`] say which.
    pub fn load_sized(pins: Option<&Path>, ct_entries: u32, sizes: MapSizes) -> Result<Self> {
        Self::load_object_sized(object::object()?, pins, ct_entries, sizes)
    }

    /// [`Self::load`] from another build of the object: the benchmark's
    /// ([`object::bench_object`]), whose extra programs share these maps.
    ///
    /// Pinned maps of another build's layout (an upgrade, SPEC §8) are
    /// retired rather than refused: this build starts on new maps while
    /// the old programs go on enforcing with the old ones, and the pinned
    /// links are moved to this build's programs only once a first
    /// generation is written ([`Self::write_generation`]): no moment
    /// unguarded. Tracked connections do not carry over.
    pub fn load_object(object: &'static [u8], pins: Option<&Path>) -> Result<Self> {
        Self::load_object_sized(object, pins, DEFAULT_CT_ENTRIES, MapSizes::INITIAL)
    }

    fn load_object_sized(
        object: &'static [u8],
        pins: Option<&Path>,
        ct_entries: u32,
        sizes: MapSizes,
    ) -> Result<Self> {
        let pin_dir = pins.map(PinDir::open).transpose()?;
        let sizing = Sizing::Adopt(sizes);
        let (ebpf, maps, upgrade) = match open(object, pin_dir.as_ref(), ct_entries, sizing) {
            Ok((ebpf, maps)) => (ebpf, maps, None),
            Err(e @ (DataplaneError::PinnedLayout { .. } | DataplaneError::Load(_))) => {
                let Some(dir) = &pin_dir else {
                    return Err(e);
                };
                if !pins::retire_maps(dir.root(), PINNED_MAPS)? {
                    return Err(e);
                }
                tracing::warn!(
                    "the pinned maps in {} are of another build's layout ({e}); starting on new \
                     maps, the old programs keep enforcing until the first generation is written; \
                     tracked connections cannot be carried over",
                    dir.root().display()
                );
                let (ebpf, maps) = open(object, Some(dir), ct_entries, sizing)?;
                (ebpf, maps, Some(Upgrade::default()))
            }
            Err(e) => return Err(e),
        };
        let mut dataplane = Self {
            links: BTreeMap::new(),
            maps,
            ebpf,
            pins: pin_dir,
            upgrade,
            object,
            unmoved: Vec::new(),
        };
        dataplane.prepare()?;
        Ok(dataplane)
    }

    /// This build's steps on freshly opened maps, before any of its
    /// programs runs.
    fn prepare(&mut self) -> Result<()> {
        self.maps.restore_direct_enis()?;
        // A failed calibration costs speed, not correctness: the programs
        // fall back to the coarse clock.
        if let Err(e) = calibrate::calibrate(&mut self.ebpf, &mut self.maps.clock) {
            tracing::warn!(
                "calibrating the data plane's clock failed ({e}); it reads the coarse clock"
            );
        }
        load_programs(&mut self.ebpf, self.pins.as_ref())
    }

    /// Moves the interfaces held back by an upgrade to this build's
    /// programs, now that their maps hold a generation, and lets the old
    /// maps go.
    fn finish_upgrade(&mut self) {
        let Some(upgrade) = self.upgrade.take() else {
            return;
        };
        for (ifname, ingress) in upgrade.held_back {
            match self.attach_with(&ifname, ingress) {
                Ok(_) => tracing::info!("{ifname}: now on this build's programs"),
                Err(e) => tracing::error!(
                    "{ifname}: moving to this build's programs failed, the old ones keep \
                     enforcing the old rules: {e}"
                ),
            }
        }
        if let Some(dir) = self.pin_dir() {
            if let Err(e) = pins::remove_retired(dir) {
                tracing::warn!("{e}");
            }
        }
    }

    /// The pin directory, when loaded with one.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pins.as_ref().map(PinDir::root)
    }

    /// Writes generation `maps.generation` and switches to it, all or
    /// nothing:
    ///
    /// 1. checks that every key lies in the generation's slot and that the
    ///    slot is not the running one (the generation must have the other
    ///    parity than [`Self::active_generation`]: use `active + 1`);
    /// 2. removes leftovers of an interrupted earlier apply from the slot;
    /// 3. writes config, rules, classes, tables and, last, the ENIs; on any
    ///    failure deletes what it wrote and returns the error, and the
    ///    running generation never noticed;
    /// 4. `FILTER_ACTIVE[0] = generation`: the one write that switches;
    /// 5. waits one RCU grace period (`membarrier`; programs read the
    ///    generation once per run, inside an RCU read-side section), so no
    ///    program run still uses the old slot;
    /// 6. deletes every entry of the old slot.
    ///
    /// A failure in step 6 does not undo the switch: it is reported in
    /// [`WriteSummary::cleanup_error`] and the leftovers, invisible to the
    /// programs, are removed by the next apply (step 2).
    ///
    /// Before step 1, when `FILTER_BOUNDS` or `FILTER_CELLS` has no room
    /// for the generation beside the running one, they grow
    /// ([`Self::grow_for`]).
    pub fn write_generation(&mut self, maps: &GenerationMaps<'_>) -> Result<WriteSummary> {
        self.move_links()?;
        self.grow_for(Need::of(maps))?;
        let summary = self.maps.write_generation(maps)?;
        self.finish_upgrade();
        Ok(summary)
    }

    /// The sizes of the maps that grow, now.
    pub fn map_sizes(&self) -> MapSizes {
        self.maps.sizes
    }

    /// What the running generation takes of the maps that grow (zero
    /// before the first).
    pub fn map_use(&self) -> Result<MapSizes> {
        let running = self.maps.running_config()?;
        Ok(MapSizes {
            bounds: running.bounds.len,
            cells: running.cells,
        })
    }

    /// Where slot `slot`'s generation has its ranges in `FILTER_BOUNDS`.
    pub fn bounds_region(&self, slot: u32) -> Result<Run> {
        Ok(self.maps.slot_config(slot)?.bounds)
    }

    /// Reads back what slot `slot` (0 or 1) of the maps holds: the running
    /// generation's is `generation_slot(active_generation())`. For tests
    /// and debugging dumps.
    pub fn read_slot(&self, slot: u32) -> Result<SlotContents> {
        self.maps.read_slot(slot)
    }

    /// The ENIs slot `slot` guards: their keys and configs.
    pub fn read_enis(&self, slot: u32) -> Result<Vec<(EniKey, EniConfig)>> {
        self.maps.read_enis(slot)
    }

    /// Adds one ENI entry to a slot (the running one: an interface that
    /// appeared after the apply).
    pub fn add_eni(&mut self, key: EniKey, config: EniConfig) -> Result<()> {
        self.maps.add_eni(key, config)
    }

    /// Removes one ENI entry (an interface that is gone).
    pub fn remove_eni(&mut self, key: EniKey) -> Result<()> {
        self.maps.remove_eni(key)
    }

    /// The running generation, `FILTER_ACTIVE[0]` (0: none written yet).
    pub fn active_generation(&self) -> Result<u32> {
        self.maps.active_generation()
    }

    /// `FILTER_CLOCK[0]`: how the programs stamp time (all zero: with the
    /// coarse clock, not calibrated).
    pub fn clock(&self) -> Result<filter_common::ClockConfig> {
        self.maps
            .clock
            .get(&0, 0)
            .map_err(|e| DataplaneError::map(filter_common::names::CLOCK, "reading", e))
    }

    /// `FILTER_STATS`, summed over CPUs, indexed by `STAT_*`.
    pub fn stats(&self) -> Result<[u64; STAT_COUNT as usize]> {
        self.maps.stats()
    }

    /// The counters of one rule slot.
    pub fn rule_stats(&self, slot: u32) -> Result<RuleCounters> {
        self.maps.rule_stats(slot)
    }

    /// Every rule slot below `upto` that counted something (the per-CPU
    /// slots are read whole, the shared ones only up to `upto`).
    pub fn all_rule_stats(&self, upto: u32) -> Result<Vec<(u32, RuleCounters)>> {
        self.maps.all_rule_stats(upto)
    }

    /// Zeroes a rule slot's counters, for a slot given to a new rule.
    pub fn reset_rule_stats(&mut self, slot: u32) -> Result<()> {
        self.maps.reset_rule_stats(slot)
    }

    /// [`Self::reset_rule_stats`] of many slots, in a few batched calls.
    pub fn reset_rule_stats_of(&mut self, slots: &[u32]) -> Result<()> {
        self.maps.reset_rule_stats_of(slots)
    }

    /// Every conntrack entry (timestamps are `bpf_ktime_get_ns`; see
    /// [`KtimeClock`](crate::clock::KtimeClock)). Expired entries that the kernel has not evicted are
    /// included; compare `last_seen_ns` with the timeouts to hide them.
    pub fn conntrack_entries(&self) -> Result<Vec<(CtKey, CtEntry)>> {
        self.maps.conntrack_entries()
    }

    /// Number of entries in the conntrack table.
    pub fn conntrack_count(&self) -> Result<usize> {
        self.maps.conntrack_count()
    }

    /// The conntrack table's size (what `conntrack_count` is out of).
    pub fn conntrack_capacity(&self) -> Result<u32> {
        self.maps.conntrack_capacity()
    }

    /// Forgets every tracked connection: a test that runs unrelated
    /// packet sequences through one loaded object starts each from an
    /// empty table (the packet fuzz target, docs/FUZZING.md).
    pub fn clear_conntrack(&mut self) -> Result<()> {
        self.maps.clear_conntrack()
    }

    pub fn lookup_conntrack(&self, key: &CtKey) -> Result<Option<CtEntry>> {
        self.maps.lookup_conntrack(key)
    }

    /// A map user space does not otherwise use (a flow-log ring buffer), to
    /// read from elsewhere. `None` when absent or already taken.
    pub fn take_map(&mut self, name: &str) -> Option<Map> {
        self.ebpf.take_map(name)
    }

    /// The event ring buffer of the flow log, handed out once per load
    /// (`None` the second time).
    pub fn take_flow_events(&mut self) -> Result<Option<FlowEvents>> {
        let Some(map) = self.ebpf.take_map(names::EVENTS) else {
            return Ok(None);
        };
        FlowEvents::new(map)
            .map(Some)
            .map_err(|e| DataplaneError::map(names::EVENTS, "opening", e))
    }

    /// The loaded programs, for BPF_PROG_TEST_RUN in tests and benchmarks.
    pub fn xdp_program(&mut self) -> Result<&mut Xdp> {
        self.ebpf
            .program_mut(names::PROG_XDP)
            .ok_or(DataplaneError::MissingProgram(names::PROG_XDP))?
            .try_into()
            .map_err(|e| DataplaneError::program(names::PROG_XDP, "expecting an XDP program", e))
    }

    /// See [`Self::xdp_program`].
    pub fn tc_program(&mut self) -> Result<&mut SchedClassifier> {
        self.classifier(names::PROG_TC)
    }

    /// See [`Self::xdp_program`]: the interface's ingress on tcx.
    pub fn tc_ingress_program(&mut self) -> Result<&mut SchedClassifier> {
        self.classifier(names::PROG_TC_INGRESS)
    }

    fn classifier(&mut self, name: &'static str) -> Result<&mut SchedClassifier> {
        self.ebpf
            .program_mut(name)
            .ok_or(DataplaneError::MissingProgram(name))?
            .try_into()
            .map_err(|e| DataplaneError::program(name, "expecting a TC classifier", e))
    }

    /// Another program of the object, by name, on this data plane's maps:
    /// the benchmark's variants (`filter-ebpf/src/bench/unaccounted.rs`). Not
    /// loaded until the caller loads it.
    pub fn program_mut(&mut self, name: &str) -> Option<&mut aya::programs::Program> {
        self.ebpf.program_mut(name)
    }

    /// `filterctl detach` from inside the daemon that owns the pin
    /// directory: detaches every interface, then removes maps, programs and
    /// the directory. Without a pin directory it only detaches.
    pub fn destroy(mut self) -> Result<DetachReport> {
        let Some(dir) = &self.pins else {
            self.detach_all()?;
            return Ok(DetachReport::default());
        };
        // Closing our fds leaves the pinned links attached; removing the pin
        // directory then detaches every one of them and reports it.
        self.links.clear();
        pins::remove_pin_dir(dir.root())
    }
}

/// Loads both programs (the verifier runs here) and, in pinned mode, pins
/// them under `progs/`, replacing the pins of an earlier process.
pub(crate) fn load_programs(ebpf: &mut Ebpf, pins: Option<&PinDir>) -> Result<()> {
    load_xdp(ebpf, names::PROG_XDP)?;
    load_tc(ebpf, names::PROG_TC)?;
    load_tc(ebpf, names::PROG_TC_INGRESS)?;
    let Some(pins) = pins else {
        return Ok(());
    };
    for name in [names::PROG_XDP, names::PROG_TC, names::PROG_TC_INGRESS] {
        let path = pins.root().join(pins::PROGS_DIR).join(name);
        // An earlier process's program: its links keep it alive until
        // they are updated.
        pins::remove_stale_pin(&path)?;
        ebpf.program_mut(name)
            .ok_or(DataplaneError::MissingProgram(name))?
            .pin(&path)
            .map_err(|source| DataplaneError::Pin { path, source })?;
    }
    Ok(())
}

/// Program `name` of the object, an XDP program, loaded into the kernel.
fn load_xdp<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(DataplaneError::MissingProgram(name))?
        .try_into()
        .map_err(|e| DataplaneError::program(name, "expecting an XDP program", e))?;
    prog.load()
        .map_err(|e| DataplaneError::program(name, "loading", e))?;
    Ok(prog)
}

/// Program `name` of the object, a TC classifier, loaded into the kernel.
fn load_tc<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut SchedClassifier> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or(DataplaneError::MissingProgram(name))?
        .try_into()
        .map_err(|e| DataplaneError::program(name, "expecting a TC classifier", e))?;
    prog.load()
        .map_err(|e| DataplaneError::program(name, "loading", e))?;
    Ok(prog)
}

/// The daemon moves the data plane between threads.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Dataplane>();
};
