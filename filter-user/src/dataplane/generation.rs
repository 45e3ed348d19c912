//! Writing a compiled generation into its slot and switching to it
//! (`docs/ARCHITECTURE.md`, "Atomic generations").
use std::os::fd::AsFd as _;

use aya::maps::IterableMap as _;

use aya::{
    maps::{Array, HashMap, MapData, MapError},
    Pod,
};
use filter_common::{
    eni_direct_index, generation_slot, names, Bound, CellKey, EniConfig, EniKey, GenConfig,
    RuleSetRuns, Run, TableMeta, ENI_DIRECT_IFINDEXES, MAX_BOUNDS, MAX_RULE_SETS, MAX_TABLES,
    SLOT_ID_BIT, TABLE_LIVE,
};

use super::{
    error::{DataplaneError, Result},
    maps::{Maps, WrittenIndexes},
    sys,
};
use crate::compile::Layout;
pub use crate::compile::LpmEntry;

/// The contents of one generation's slot, borrowed from the compiler's
/// output (`compile::Compiled`). Every key must carry the generation's slot
/// (`EniKey.slot`, or [`SLOT_ID_BIT`] in table and rule-set ids), and every
/// run must lie within the layout's bounds (the writer places them).
#[derive(Clone, Copy, Debug)]
pub struct GenerationMaps<'a> {
    pub generation: u32,
    pub config: &'a GenConfig,
    pub enis: &'a [(EniKey, EniConfig)],
    pub cells: &'a [(CellKey, u32)],
    /// `FILTER_TABLES`, `FILTER_RULE_SETS` and `FILTER_BOUNDS`.
    pub layout: &'a Layout,
}

impl<'a> From<&'a crate::compile::Compiled> for GenerationMaps<'a> {
    /// The compiler's output, borrowed as it is: nothing is copied.
    fn from(c: &'a crate::compile::Compiled) -> Self {
        GenerationMaps {
            generation: c.generation,
            config: &c.config,
            enis: &c.enis,
            cells: &c.cells,
            layout: &c.layout,
        }
    }
}

impl GenerationMaps<'_> {
    /// Number of map entries the generation writes (the config included).
    pub fn entry_count(&self) -> usize {
        1 + self.enis.len()
            + self.cells.len()
            + self.layout.tables.len()
            + self.layout.rule_sets.len()
            + self.layout.bounds.len()
    }
}

/// What an apply did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteSummary {
    /// The generation now running.
    pub generation: u32,
    /// Entries written into the new slot.
    pub written: usize,
    /// Entries of the previous generation deleted after the switch.
    pub deleted: usize,
    /// Entries left over from an interrupted earlier apply, removed from
    /// the new slot before writing.
    pub stale_removed: usize,
    /// Set when deleting the old slot failed after the switch. The new
    /// generation runs regardless; the leftovers are invisible to the
    /// programs and the next apply removes them before it writes.
    pub cleanup_error: Option<String>,
}

/// What one slot of the maps holds, read back (entries sorted by key).
/// Of the arrays, what the slot can reach: live tables, rule sets with a
/// range, and the bounds their runs name. Runs are relative to the
/// generation's bounds, and `config.bounds` and `config.cells` are left
/// out, as the compiler made them: where the bounds lie is
/// [`super::Dataplane::bounds_region`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotContents {
    pub config: GenConfig,
    pub enis: Vec<(EniKey, EniConfig)>,
    /// `FILTER_ENIS_DIRECT`: `(index, ENI)`, the live entries of the slot.
    pub enis_direct: Vec<(u32, EniConfig)>,
    pub cells: Vec<(CellKey, u32)>,
    pub tables: Vec<(u32, TableMeta)>,
    pub rule_sets: Vec<(u32, RuleSetRuns)>,
    /// The generation's bounds up to the end of its last run.
    pub bounds: Vec<Bound>,
}

/// The runs a slot's tables and rule sets name.
fn runs<'a>(
    tables: &'a [(u32, TableMeta)],
    rule_sets: &'a [(u32, RuleSetRuns)],
) -> impl Iterator<Item = Run> + 'a {
    tables
        .iter()
        .flat_map(|(_, t)| {
            t.dport
                .into_iter()
                .chain(t.sport)
                .chain(t.local)
                .chain(t.members)
        })
        .chain(rule_sets.iter().flat_map(|(_, r)| [r.v4, r.v6]))
        .filter(|r| r.len > 0)
}

/// Whether a rule set has any range (a cleared entry has none).
fn rule_set_live(r: &RuleSetRuns) -> bool {
    r.v4.len > 0 || r.v6.len > 0
}

impl SlotContents {
    /// The same entries as `g`, sorted the way [`SlotContents`] is.
    pub fn from_generation(g: &GenerationMaps<'_>) -> Self {
        fn sorted_pairs<K: Ord + Copy, V: Copy>(v: &[(K, V)]) -> Vec<(K, V)> {
            let mut v = v.to_vec();
            v.sort_by_key(|(k, _)| *k);
            v
        }
        let rule_sets: Vec<(u32, RuleSetRuns)> = sorted_pairs(&g.layout.rule_sets)
            .into_iter()
            .filter(|(_, r)| rule_set_live(r))
            .collect();
        let tables = sorted_pairs(&g.layout.tables);
        let end = runs(&tables, &rule_sets)
            .map(|r| r.start + r.len)
            .max()
            .unwrap_or(0);
        Self {
            config: *g.config,
            enis: sorted_pairs(g.enis),
            enis_direct: direct_enis(g.enis),
            cells: sorted_pairs(g.cells),
            bounds: g.layout.bounds.iter().take(end as usize).copied().collect(),
            tables,
            rule_sets,
        }
    }

    /// Whether the slot holds no entries (the config aside).
    pub fn is_empty(&self) -> bool {
        self.enis.is_empty()
            && self.enis_direct.is_empty()
            && self.cells.is_empty()
            && self.tables.is_empty()
            && self.rule_sets.is_empty()
    }
}

/// The slot an id (table or rule-set) belongs to.
pub(crate) const fn id_slot(id: u32) -> u32 {
    (id & SLOT_ID_BIT != 0) as u32
}

/// A map key that belongs to one generation slot.
pub(crate) trait SlotKey {
    fn slot(&self) -> u32;
}

impl SlotKey for EniKey {
    fn slot(&self) -> u32 {
        self.slot
    }
}

/// Table and rule-set ids.
impl SlotKey for u32 {
    fn slot(&self) -> u32 {
        id_slot(*self)
    }
}

impl SlotKey for CellKey {
    fn slot(&self) -> u32 {
        id_slot(self.table)
    }
}

/// Checks that every key and id of `maps` lies in `slot`, and every run in
/// the slot's half of `FILTER_BOUNDS`, within what the layout holds (a run
/// elsewhere would read the running generation's ranges).
fn validate(maps: &GenerationMaps<'_>, slot: u32) -> std::result::Result<(), String> {
    fn keys<'k, K: SlotKey + std::fmt::Debug + 'k>(
        map: &str,
        keys: impl IntoIterator<Item = &'k K>,
        slot: u32,
    ) -> std::result::Result<(), String> {
        match keys.into_iter().find(|k| k.slot() != slot) {
            Some(k) => Err(format!("{map} key {k:?} is not in slot {slot}")),
            None => Ok(()),
        }
    }
    let layout = maps.layout;
    keys(names::ENIS, maps.enis.iter().map(|(k, _)| k), slot)?;
    keys(names::CELLS, maps.cells.iter().map(|(k, _)| k), slot)?;
    keys(names::TABLES, layout.tables.iter().map(|(k, _)| k), slot)?;
    keys(
        names::RULE_SETS,
        layout.rule_sets.iter().map(|(k, _)| k),
        slot,
    )?;
    // An index past the slot's half would land in the other slot's.
    fn within<'k, V: 'k>(
        map: &str,
        entries: &'k [(u32, V)],
        capacity: u32,
    ) -> std::result::Result<(), String> {
        match entries
            .iter()
            .find(|(id, _)| id & !SLOT_ID_BIT >= capacity / 2)
        {
            Some((id, _)) => Err(format!(
                "{map} id {id:#x} is past its slot's {} entries",
                capacity / 2
            )),
            None => Ok(()),
        }
    }
    within(names::TABLES, &layout.tables, MAX_TABLES)?;
    within(names::RULE_SETS, &layout.rule_sets, MAX_RULE_SETS)?;
    // Each generation gets at most half of the largest array, so that the
    // running one and the next always fit side by side.
    if layout.bounds.len() > (MAX_BOUNDS / 2) as usize {
        return Err(format!(
            "{} bounds are more than the {} one generation may use in {}",
            layout.bounds.len(),
            MAX_BOUNDS / 2,
            names::BOUNDS
        ));
    }
    let end = layout.bounds.len() as u64;
    if let Some(run) = runs(&layout.tables, &layout.rule_sets)
        .find(|r| u64::from(r.start) + u64::from(r.len) > end)
    {
        return Err(format!("run {run:?} is past the {end} bounds written"));
    }
    Ok(())
}

/// What a generation takes of the maps that grow to the need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Need {
    pub bounds: u32,
    pub cells: u32,
}

impl Need {
    pub(crate) fn of(g: &GenerationMaps<'_>) -> Self {
        // (`validate` refuses more bounds than a u32 holds.)
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Need {
            bounds: count(g.layout.bounds.len()),
            cells: count(g.cells.len()),
        }
    }
}

/// Where a generation of `len` bounds goes in a `FILTER_BOUNDS` of
/// `capacity` entries, beside the running generation's `running`: before
/// it when it fits there, else after it. None when the array is too small:
/// it has to grow ([`super::Dataplane::write_generation`]).
pub(crate) fn place(running: Run, len: u32, capacity: u32) -> Option<u32> {
    if len <= running.start {
        return Some(0);
    }
    let after = running.start.saturating_add(running.len);
    (u64::from(after) + u64::from(len) <= u64::from(capacity)).then_some(after)
}

/// Whether `need` more cells fit in a `FILTER_CELLS` of `capacity`
/// entries beside the running generation's `running`.
pub(crate) fn cells_fit(running: u32, need: u32, capacity: u32) -> bool {
    u64::from(running) + u64::from(need) <= u64::from(capacity)
}

/// A run whose start `to` maps (an empty run stays empty, at 0): into
/// `FILTER_BOUNDS` when written, back to the generation's own indexes when
/// read.
fn moved(run: Run, to: impl Fn(u32) -> u32) -> Run {
    if run.len == 0 {
        return run;
    }
    Run {
        start: to(run.start),
        ..run
    }
}

/// Every run of a table, [`moved`].
fn table_moved(t: TableMeta, to: impl Fn(u32) -> u32 + Copy) -> TableMeta {
    TableMeta {
        dport: t.dport.map(|r| moved(r, to)),
        sport: t.sport.map(|r| moved(r, to)),
        local: t.local.map(|r| moved(r, to)),
        members: t.members.map(|r| moved(r, to)),
        ..t
    }
}

/// Both runs of a rule set, [`moved`].
fn rule_set_moved(r: RuleSetRuns, to: impl Fn(u32) -> u32 + Copy) -> RuleSetRuns {
    RuleSetRuns {
        v4: moved(r.v4, to),
        v6: moved(r.v6, to),
    }
}

fn is_enoent(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Deletes every key of `slot` from a hash map.
fn purge_hash<K: Pod + SlotKey, V: Pod>(
    name: &'static str,
    map: &mut HashMap<MapData, K, V>,
    slot: u32,
) -> Result<usize> {
    let keys = slot_keys(name, map, slot)?;
    delete_keys(name, map, &keys)
}

/// The keys of `slot` in a hash map, collected before any is deleted:
/// deleting while walking a hash map can restart the walk.
fn slot_keys<K: Pod + SlotKey, V: Pod>(
    name: &'static str,
    map: &HashMap<MapData, K, V>,
    slot: u32,
) -> Result<Vec<K>> {
    map.keys()
        .filter(|k| k.as_ref().map_or(true, |k| k.slot() == slot))
        .collect::<std::result::Result<Vec<K>, _>>()
        .map_err(|e| DataplaneError::map(name, "listing keys", e))
}

/// Deletes `keys` from a hash map; returns how many were there.
fn delete_keys<K: Pod, V: Pod>(
    name: &'static str,
    map: &mut HashMap<MapData, K, V>,
    keys: &[K],
) -> Result<usize> {
    let mut deleted = 0;
    for key in keys {
        match map.remove(key) {
            Ok(()) => deleted += 1,
            Err(e) if is_enoent(&e) => {}
            Err(e) => {
                return Err(DataplaneError::map(
                    name,
                    "deleting an entry of the old slot",
                    e,
                ))
            }
        }
    }
    Ok(deleted)
}

/// A failed batch call as aya reports failed map calls.
pub(crate) fn batch_error(io_error: std::io::Error) -> MapError {
    MapError::SyscallError(aya::sys::SyscallError {
        call: "bpf_map_*_batch",
        io_error,
    })
}

/// The entries of an array that `live` picks among `indexes`, as `(index,
/// value)`, read in one batched walk.
fn live_entries<T: Pod>(
    name: &'static str,
    map: &Array<MapData, T>,
    indexes: std::ops::Range<u32>,
    live: impl Fn(&T) -> bool,
) -> Result<Vec<(u32, T)>> {
    let mut out = Vec::new();
    sys::array_for_each_in(map.map().fd().as_fd(), indexes, |index, value: T| {
        if live(&value) {
            out.push((index, value));
        }
    })
    .map_err(|e| DataplaneError::map(name, "reading", batch_error(e)))?;
    Ok(out)
}

/// Clears the entries of an array that `live` picks among `indexes`.
fn purge_array<T: Pod + Default>(
    name: &'static str,
    map: &Array<MapData, T>,
    indexes: std::ops::Range<u32>,
    live: impl Fn(&T) -> bool,
) -> Result<usize> {
    let found: Vec<u32> = live_entries(name, map, indexes, live)?
        .into_iter()
        .map(|(index, _)| index)
        .collect();
    clear_array(name, map, &found)
}

/// Clears the entries of an array at `indexes`.
fn clear_array<T: Pod + Default>(
    name: &'static str,
    map: &Array<MapData, T>,
    indexes: &[u32],
) -> Result<usize> {
    write_array(map, indexes.iter().map(|&i| (i, T::default())))
        .map_err(|e| DataplaneError::map(name, "clearing an entry of the old slot", e))
}

/// Writes entries at their array indexes; consecutive ones (the compiler's
/// ids are) go in one batch. Returns how many were written.
fn write_array<T: Pod>(
    map: &Array<MapData, T>,
    entries: impl IntoIterator<Item = (u32, T)>,
) -> std::result::Result<usize, MapError> {
    let mut n = 0;
    let mut pending: Vec<T> = Vec::new();
    let mut first = 0;
    let flush = |first: u32, pending: &mut Vec<T>| {
        let written = pending.len();
        let r = sys::array_update_batch(map.map().fd().as_fd(), first, pending);
        pending.clear();
        r.map(|()| written).map_err(batch_error)
    };
    for (index, value) in entries {
        if index != first + pending.len() as u32 && !pending.is_empty() {
            n += flush(first, &mut pending)?;
        }
        if pending.is_empty() {
            first = index;
        }
        pending.push(value);
    }
    if !pending.is_empty() {
        n += flush(first, &mut pending)?;
    }
    Ok(n)
}

/// The entries of `slot`'s half of an array of `capacity` entries that
/// `live` picks, as `(id, value)` sorted by id.
fn read_array<T: Pod>(
    name: &'static str,
    map: &Array<MapData, T>,
    slot: u32,
    capacity: u32,
    live: impl Fn(&T) -> bool,
) -> Result<Vec<(u32, T)>> {
    let (indexes, id) = half(slot, capacity);
    let mut out: Vec<(u32, T)> = live_entries(name, map, indexes, live)?
        .into_iter()
        .map(|(index, value)| (id(index), value))
        .collect();
    out.sort_by_key(|(id, _)| *id);
    Ok(out)
}

/// The indexes of a slot's half of an array of `capacity` entries, and the
/// id each stands for.
fn half(slot: u32, capacity: u32) -> (std::ops::Range<u32>, impl Fn(u32) -> u32) {
    let half = capacity / 2;
    (slot * half..(slot + 1) * half, move |index: u32| {
        (index - slot * half) | (slot * SLOT_ID_BIT)
    })
}

fn read_hash<K: Pod + SlotKey + Ord + Copy, V: Pod>(
    name: &'static str,
    map: &HashMap<MapData, K, V>,
    slot: u32,
) -> Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    for item in map.iter() {
        let (k, v) = item.map_err(|e| DataplaneError::map(name, "reading", e))?;
        if k.slot() == slot {
            out.push((k, v));
        }
    }
    out.sort_by_key(|(k, _)| *k);
    Ok(out)
}

impl Maps {
    /// Reads back everything `slot` holds.
    pub(crate) fn read_slot(&self, slot: u32) -> Result<SlotContents> {
        let config = self.slot_config(slot)?;
        let region = config.bounds;
        // Back to the generation's own indexes (leftovers of an interrupted
        // apply may not lie in the region: wrapped, not a panic).
        let back = |start: u32| start.wrapping_sub(region.start);
        let tables: Vec<(u32, TableMeta)> =
            read_array(names::TABLES, &self.tables, slot, MAX_TABLES, |t| {
                t.flags & TABLE_LIVE != 0
            })?
            .into_iter()
            .map(|(id, t)| (id, table_moved(t, back)))
            .collect();
        let rule_sets: Vec<(u32, RuleSetRuns)> = read_array(
            names::RULE_SETS,
            &self.rule_sets,
            slot,
            MAX_RULE_SETS,
            rule_set_live,
        )?
        .into_iter()
        .map(|(id, r)| (id, rule_set_moved(r, back)))
        .collect();
        let end = runs(&tables, &rule_sets)
            .map(|r| r.start.saturating_add(r.len))
            .max()
            .unwrap_or(0)
            .min(region.len);
        let bounds = (region.start..region.start + end)
            .map(|i| {
                self.bounds
                    .get(&i, 0)
                    .map_err(|e| DataplaneError::map(names::BOUNDS, "reading", e))
            })
            .collect::<Result<Vec<Bound>>>()?;
        Ok(SlotContents {
            config: GenConfig {
                bounds: Run::default(),
                cells: 0,
                ..config
            },
            enis: self.read_enis(slot)?,
            enis_direct: live_entries(
                names::ENIS_DIRECT,
                &self.enis_direct,
                half(slot, 2 * ENI_DIRECT_IFINDEXES).0,
                |e| e.live != 0,
            )?,
            cells: self.read_cells(slot)?,
            tables,
            rule_sets,
            bounds,
        })
    }

    /// `FILTER_CONFIG[slot]`.
    pub(crate) fn slot_config(&self, slot: u32) -> Result<GenConfig> {
        self.config
            .get(&slot, 0)
            .map_err(|e| DataplaneError::map(names::CONFIG, "reading", e))
    }

    /// The cells of `slot`.
    pub(crate) fn read_cells(&self, slot: u32) -> Result<Vec<(CellKey, u32)>> {
        read_hash(names::CELLS, &self.cells, slot)
    }

    /// The ENIs `slot` guards.
    pub(crate) fn read_enis(&self, slot: u32) -> Result<Vec<(EniKey, EniConfig)>> {
        read_hash(names::ENIS, &self.enis, slot)
    }

    /// Writes the `FILTER_ENIS_DIRECT` copy of every ENI in `FILTER_ENIS`,
    /// in both slots. On maps this build wrote it changes nothing (the
    /// same bytes, so a program reading meanwhile sees the same entry);
    /// over the pins of a build from before the array, which the loader has
    /// just created empty, it keeps the running generation's interfaces
    /// guarded once this build's programs run (ARCHITECTURE.md, "ENI
    /// lookup"). The twin rule of `purge_slot` holds: every entry written
    /// has its hash twin.
    pub(crate) fn restore_direct_enis(&mut self) -> Result<()> {
        for slot in 0..2 {
            write_array(&self.enis_direct, direct_enis(&self.read_enis(slot)?)).map_err(|e| {
                DataplaneError::map(names::ENIS_DIRECT, "copying the ENIs of FILTER_ENIS", e)
            })?;
        }
        Ok(())
    }

    /// `FILTER_ACTIVE[0]`: the running generation (0: none yet).
    pub(crate) fn active_generation(&self) -> Result<u32> {
        self.active
            .get(&0, 0)
            .map_err(|e| DataplaneError::map(names::ACTIVE, "reading the running generation", e))
    }

    /// Deletes every entry of `slot` from every per-generation map, clears
    /// its tables, rule sets and direct ENIs, and zeroes its config. Returns the number
    /// of entries deleted or cleared. Its bounds stay: nothing reaches them
    /// without a table or rule set.
    pub(crate) fn purge_slot(&mut self, slot: u32) -> Result<usize> {
        // Only a slot that no program run uses is ever purged, so the order
        // does not matter to packets; it does to a process that dies here.
        let mut n = 0;
        // The direct ENIs first, found through their `FILTER_ENIS` twins
        // (no walk of the 3 MiB array): the writer writes the hash first
        // and this clears the array first, so every live array entry keeps
        // its twin even when a process dies midway. Copies, not counted.
        let enis = slot_keys(names::ENIS, &self.enis, slot)?;
        let direct: Vec<u32> = enis.iter().filter_map(direct_index).collect();
        clear_array(names::ENIS_DIRECT, &self.enis_direct, &direct)?;
        n += delete_keys(names::ENIS, &mut self.enis, &enis)?;
        n += purge_hash(names::CELLS, &mut self.cells, slot)?;
        // What this process wrote is cleared by index; anything else is
        // found by a walk of the arrays.
        match self.written.get_mut(slot as usize).and_then(Option::take) {
            Some(w) => {
                n += clear_array(names::TABLES, &self.tables, &w.tables)?;
                n += clear_array(names::RULE_SETS, &self.rule_sets, &w.rule_sets)?;
            }
            None => {
                n += purge_array(names::TABLES, &self.tables, half(slot, MAX_TABLES).0, |t| {
                    t.flags & TABLE_LIVE != 0
                })?;
                n += purge_array(
                    names::RULE_SETS,
                    &self.rule_sets,
                    half(slot, MAX_RULE_SETS).0,
                    rule_set_live,
                )?;
            }
        }
        self.config
            .set(slot, GenConfig::default(), 0)
            .map_err(|e| DataplaneError::map(names::CONFIG, "clearing the old slot", e))?;
        Ok(n)
    }

    /// Writes every entry of `g` into `slot`, which must be empty, its
    /// bounds from `FILTER_BOUNDS[base]` on.
    fn fill_slot(&mut self, g: &GenerationMaps<'_>, slot: u32, base: u32) -> Result<usize> {
        fn hash<K: Pod, V: Pod>(
            name: &'static str,
            map: &mut HashMap<MapData, K, V>,
            entries: &[(K, V)],
        ) -> Result<usize> {
            for (k, v) in entries {
                map.insert(k, v, 0)
                    .map_err(|err| DataplaneError::map(name, "writing the new slot", err))?;
            }
            Ok(entries.len())
        }
        fn array<T: Pod>(
            name: &'static str,
            map: &Array<MapData, T>,
            entries: impl IntoIterator<Item = (u32, T)>,
        ) -> Result<usize> {
            write_array(map, entries)
                .map_err(|e| DataplaneError::map(name, "writing the new slot", e))
        }
        let layout = g.layout;
        let need = Need::of(g);
        let config = GenConfig {
            bounds: Run {
                start: base,
                len: need.bounds,
            },
            cells: need.cells,
            ..*g.config
        };
        self.config
            .set(slot, config, 0)
            .map_err(|e| DataplaneError::map(names::CONFIG, "writing the new slot", e))?;
        let mut n = 1;
        let to = |start: u32| start + base;
        // Lookup order, leaves first: the ENIs, which make the rest
        // reachable, last.
        n += array(
            names::BOUNDS,
            &self.bounds,
            (base..).zip(layout.bounds.iter().copied()),
        )?;
        n += array(
            names::RULE_SETS,
            &self.rule_sets,
            layout
                .rule_sets
                .iter()
                .map(|&(id, r)| (Layout::rule_set_index(id), rule_set_moved(r, to))),
        )?;
        n += hash(names::CELLS, &mut self.cells, g.cells)?;
        n += array(
            names::TABLES,
            &self.tables,
            layout
                .tables
                .iter()
                .map(|&(id, t)| (Layout::table_index(id), table_moved(t, to))),
        )?;
        n += hash(names::ENIS, &mut self.enis, g.enis)?;
        // The array copies of the same ENIs (not counted again), after
        // them (see `purge_slot`).
        array(names::ENIS_DIRECT, &self.enis_direct, direct_enis(g.enis))?;
        if let Some(w) = self.written.get_mut(slot as usize) {
            *w = Some(WrittenIndexes {
                tables: layout
                    .tables
                    .iter()
                    .map(|&(id, _)| Layout::table_index(id))
                    .collect(),
                rule_sets: layout
                    .rule_sets
                    .iter()
                    .map(|&(id, _)| Layout::rule_set_index(id))
                    .collect(),
            });
        }
        Ok(n)
    }

    /// Guards one more interface under the running generation: a pending
    /// ENI's interface appeared, or one was made again with a new index
    /// (SPEC §2.4). `FILTER_ENIS` first, then its array copy, as
    /// `fill_slot` writes them.
    pub(crate) fn add_eni(&mut self, key: EniKey, config: EniConfig) -> Result<()> {
        self.enis
            .insert(key, config, 0)
            .map_err(|e| DataplaneError::map(names::ENIS, "adding an interface", e))?;
        if let Some(index) = direct_index(&key) {
            let live = EniConfig { live: 1, ..config };
            write_array(&self.enis_direct, [(index, live)])
                .map_err(|e| DataplaneError::map(names::ENIS_DIRECT, "adding an interface", e))?;
        }
        Ok(())
    }

    /// Forgets the ENI entry of an interface index that is gone: the array
    /// copy first, then the entry (as `purge_slot` does), so a packet never
    /// finds a copy without its twin.
    pub(crate) fn remove_eni(&mut self, key: EniKey) -> Result<()> {
        if let Some(index) = direct_index(&key) {
            clear_array(names::ENIS_DIRECT, &self.enis_direct, &[index])?;
        }
        delete_keys(names::ENIS, &mut self.enis, &[key]).map(drop)
    }

    /// The whole apply: check, clean the target slot, write it, switch,
    /// wait for running programs, delete the old slot.
    pub(crate) fn write_generation(&mut self, g: &GenerationMaps<'_>) -> Result<WriteSummary> {
        let generation = g.generation;
        let bad = |reason: String| DataplaneError::BadGeneration { generation, reason };
        let active = self.active_generation()?;
        if generation == 0 {
            return Err(bad(
                "generation 0 is reserved for \"no rules yet\"".to_owned()
            ));
        }
        let slot = generation_slot(generation);
        let old_slot = generation_slot(active);
        if slot == old_slot {
            return Err(bad(format!(
                "it would be written into slot {slot}, which the running generation {active} uses; \
                 the next generation must be {}",
                active.wrapping_add(1)
            )));
        }
        validate(g, slot).map_err(bad)?;
        let need = Need::of(g);
        let running = self.running_config()?;
        let full = |map, needed, capacity| DataplaneError::Full {
            map,
            needed,
            capacity,
            why: "the data plane did not grow it",
        };
        let base = place(running.bounds, need.bounds, self.sizes.bounds)
            .ok_or_else(|| full(names::BOUNDS, need.bounds, self.sizes.bounds))?;
        if !cells_fit(running.cells, need.cells, self.sizes.cells) {
            return Err(full(names::CELLS, need.cells, self.sizes.cells));
        }

        // Leftovers of an apply that was interrupted (the process died
        // between writing and cleaning up) must not mix into this one.
        let stale_removed = if self.known_empty.take() == Some(slot) {
            0
        } else {
            self.purge_slot(slot)?
        };

        let written = match self.fill_slot(g, slot, base) {
            Ok(n) => n,
            Err(e) => {
                self.discard_slot(slot, generation);
                return Err(e);
            }
        };

        // The switch: one u32 store that every program run reads once.
        if let Err(e) = self.active.set(0, generation, 0) {
            self.discard_slot(slot, generation);
            return Err(DataplaneError::map(
                names::ACTIVE,
                "switching to the new generation",
                e,
            ));
        }

        sys::wait_for_program_runs();

        // Generation 0 is never written (refused above): while the maps
        // ran it, no apply wrote its slot, so there is nothing to delete.
        // A daemon's first apply on fresh maps skips that walk.
        let purged = if active == 0 {
            Ok(0)
        } else {
            self.purge_slot(old_slot)
        };
        let (deleted, cleanup_error) = match purged {
            Ok(n) => {
                self.known_empty = Some(old_slot);
                (n, None)
            }
            Err(e) => {
                tracing::warn!(
                    generation,
                    "generation {generation} is running, but deleting the previous one's entries failed: {e}"
                );
                (0, Some(error_chain(&e)))
            }
        };
        Ok(WriteSummary {
            generation,
            written,
            deleted,
            stale_removed,
            cleanup_error,
        })
    }

    /// The running generation's config (all zero before the first): where
    /// its bounds lie, how many cells it has.
    pub(crate) fn running_config(&self) -> Result<GenConfig> {
        match self.active_generation()? {
            0 => Ok(GenConfig::default()),
            active => self.slot_config(generation_slot(active)),
        }
    }

    /// Undoes a partial write. The slot is invisible to the programs, so a
    /// failure here only leaves garbage that the next apply removes.
    fn discard_slot(&mut self, slot: u32, generation: u32) {
        if let Err(e) = self.purge_slot(slot) {
            tracing::warn!(
                generation,
                "removing the partly written generation {generation} failed: {e}"
            );
        }
    }
}

/// Where an ENI's copy goes in `FILTER_ENIS_DIRECT`, if its interface is
/// below `ENI_DIRECT_IFINDEXES`.
fn direct_index(k: &EniKey) -> Option<u32> {
    (k.ifindex < ENI_DIRECT_IFINDEXES).then(|| eni_direct_index(k.slot, k.ifindex))
}

/// The `FILTER_ENIS_DIRECT` entries of `enis`, marked live, in index order
/// (so that neighbours go in one batch).
fn direct_enis(enis: &[(EniKey, EniConfig)]) -> Vec<(u32, EniConfig)> {
    let mut direct: Vec<(u32, EniConfig)> = enis
        .iter()
        .filter_map(|(k, v)| Some((direct_index(k)?, EniConfig { live: 1, ..*v })))
        .collect();
    direct.sort_by_key(|&(index, _)| index);
    direct
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use filter_common::{AddrKeyData, RuleHit, ADDR_KEY_FIXED_BITS, FAMILY_V4};

    use super::*;
    use crate::compile::Prefixes;

    #[test]
    fn id_slot_follows_the_top_bit() {
        assert_eq!(id_slot(0), 0);
        assert_eq!(id_slot(7), 0);
        assert_eq!(id_slot(SLOT_ID_BIT), 1);
        assert_eq!(id_slot(SLOT_ID_BIT | 7), 1);
    }

    #[test]
    fn validate_rejects_ids_of_the_other_slot_and_runs_outside_its_bounds() {
        let config = GenConfig::default();
        let tables = [(SLOT_ID_BIT, TableMeta::default())];
        let rules = [LpmEntry {
            prefix_len: ADDR_KEY_FIXED_BITS + 24,
            key: AddrKeyData {
                id: SLOT_ID_BIT,
                family: FAMILY_V4,
                ..Default::default()
            },
            value: RuleHit::default(),
        }];
        let prefixes = Prefixes {
            tables: &tables,
            rule_sets: 1,
            dport: &[],
            sport: &[],
            local: &[],
            rules: &rules,
            inner: &[],
        };
        let layout = Layout::build(&prefixes, 1).unwrap_or_else(|e| panic!("{e}"));
        let g = GenerationMaps {
            generation: 3,
            config: &config,
            enis: &[(
                EniKey {
                    slot: 1,
                    ifindex: 1,
                },
                EniConfig::default(),
            )],
            cells: &[],
            layout: &layout,
        };
        assert_eq!(validate(&g, 1), Ok(()));
        assert!(validate(&g, 0).is_err());

        // A run past the bounds written.
        let mut short = layout.clone();
        short.bounds.pop();
        assert!(validate(
            &GenerationMaps {
                layout: &short,
                ..g
            },
            1
        )
        .is_err());
    }

    #[test]
    fn a_generation_goes_before_the_running_one_or_after_it() {
        let running = Run { start: 10, len: 5 };
        assert_eq!(place(Run::default(), 100, 100), Some(0), "nothing runs");
        assert_eq!(place(Run::default(), 101, 100), None);
        assert_eq!(place(running, 10, 100), Some(0), "room before");
        assert_eq!(place(running, 11, 100), Some(15), "else after");
        assert_eq!(place(running, 85, 100), Some(15));
        assert_eq!(place(running, 86, 100), None, "it must grow");
    }
}
