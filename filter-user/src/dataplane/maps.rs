//! Typed handles on the data plane's maps, taken out of the loaded object
//! once and checked against the layouts in `filter-common`.
use std::mem::size_of;

use aya::{
    maps::{Array, HashMap, Map, MapData, MapType, PerCpuArray},
    Ebpf, Pod,
};
use filter_common::{
    names, Bound, CellKey, ClockConfig, CtEntry, CtKey, EniConfig, EniKey, FlowLoss, FragEntry,
    FragKey, GenConfig, RejectEntry, RejectKey, RuleSetRuns, RuleStats, TableMeta, HOT_RULE_SLOTS,
    MAX_RULE_SETS, MAX_RULE_SLOTS, MAX_TABLES,
};

use super::{
    error::{DataplaneError, Result},
    MapSizes,
};

/// Maps that hold state a restarted daemon must find again: pinned by name.
/// The flow-log collector (`crate::flowlog`) reads `FILTER_CT`,
/// `FILTER_REJECTS`, `FILTER_FLOWLOSS` and `FILTER_ENIS` through these pins.
/// (The flow-log ring buffer is deliberately not here: a new daemon reads
/// from a new one, pinned for this process alone; see `open`.)
pub(crate) const PINNED_MAPS: &[&str] = &[
    names::ACTIVE,
    names::CLOCK,
    names::CONFIG,
    names::ENIS,
    names::ENIS_DIRECT,
    names::TABLES,
    names::CELLS,
    names::RULE_SETS,
    names::BOUNDS,
    names::CT,
    names::FRAGS,
    names::STATS,
    names::RULE_STATS,
    names::RULE_STATS_SHARED,
    names::REJECTS,
    names::FLOWLOSS,
];

pub(crate) struct Maps {
    pub active: Array<MapData, u32>,
    pub clock: Array<MapData, ClockConfig>,
    pub config: Array<MapData, GenConfig>,
    pub enis: HashMap<MapData, EniKey, EniConfig>,
    pub enis_direct: Array<MapData, EniConfig>,
    pub tables: Array<MapData, TableMeta>,
    pub cells: HashMap<MapData, CellKey, u32>,
    pub rule_sets: Array<MapData, RuleSetRuns>,
    pub bounds: Array<MapData, Bound>,
    /// The sizes of `FILTER_BOUNDS` and `FILTER_CELLS`: any, since they
    /// grow to the need.
    pub sizes: MapSizes,
    pub ct: HashMap<MapData, CtKey, CtEntry>,
    pub stats: PerCpuArray<MapData, u64>,
    /// Rule slots below `HOT_RULE_SLOTS`, per CPU.
    pub rule_stats: PerCpuArray<MapData, RuleStats>,
    /// The others, at `slot - HOT_RULE_SLOTS`, shared by all CPUs.
    pub rule_stats_shared: Array<MapData, RuleStats>,
    /// A slot this process emptied itself (the previous generation's, after
    /// a switch): the next apply into it can skip the scan for leftovers.
    /// Only this process writes the maps (the pin directory is locked).
    pub known_empty: Option<u32>,
    /// Per slot, the `FILTER_TABLES` and `FILTER_RULE_SETS` indexes this
    /// process wrote into it: clearing them needs no walk of the arrays.
    /// None: unknown (written by an earlier process, or partly).
    pub written: [Option<WrittenIndexes>; 2],
}

/// The array entries one generation's write made live.
#[derive(Clone, Debug, Default)]
pub(crate) struct WrittenIndexes {
    pub tables: Vec<u32>,
    pub rule_sets: Vec<u32>,
}

impl Maps {
    /// Checks every map's kernel layout, then takes the ones user space
    /// reads or writes out of `ebpf`.
    pub(crate) fn take(ebpf: &mut Ebpf) -> Result<Self> {
        check::<EniKey, EniConfig>(ebpf, names::ENIS, false)?;
        check::<u32, EniConfig>(ebpf, names::ENIS_DIRECT, false)?;
        check::<u32, u32>(ebpf, names::ACTIVE, false)?;
        check::<u32, ClockConfig>(ebpf, names::CLOCK, false)?;
        check::<u32, GenConfig>(ebpf, names::CONFIG, false)?;
        check::<u32, TableMeta>(ebpf, names::TABLES, false)?;
        // Arrays the compiler fills up to a size from filter-common: a pin
        // made by a build with smaller ones would refuse its writes.
        check_entries(ebpf, names::TABLES, MAX_TABLES)?;
        check_entries(ebpf, names::RULE_SETS, MAX_RULE_SETS)?;
        check_entries(ebpf, names::RULE_STATS, HOT_RULE_SLOTS)?;
        check_entries(
            ebpf,
            names::RULE_STATS_SHARED,
            MAX_RULE_SLOTS - HOT_RULE_SLOTS,
        )?;
        check::<CellKey, u32>(ebpf, names::CELLS, false)?;
        check::<u32, RuleSetRuns>(ebpf, names::RULE_SETS, false)?;
        check::<u32, Bound>(ebpf, names::BOUNDS, false)?;
        check::<CtKey, CtEntry>(ebpf, names::CT, false)?;
        check::<FragKey, FragEntry>(ebpf, names::FRAGS, false)?;
        check::<u32, u64>(ebpf, names::STATS, true)?;
        check::<u32, RuleStats>(ebpf, names::RULE_STATS, true)?;
        check::<u32, RuleStats>(ebpf, names::RULE_STATS_SHARED, false)?;
        check::<RejectKey, RejectEntry>(ebpf, names::REJECTS, false)?;
        check::<u32, FlowLoss>(ebpf, names::FLOWLOSS, true)?;
        let sizes = MapSizes {
            bounds: max_entries(ebpf, names::BOUNDS)?,
            cells: max_entries(ebpf, names::CELLS)?,
        };
        Ok(Self {
            active: typed(ebpf, names::ACTIVE)?,
            clock: typed(ebpf, names::CLOCK)?,
            config: typed(ebpf, names::CONFIG)?,
            enis: typed(ebpf, names::ENIS)?,
            enis_direct: typed(ebpf, names::ENIS_DIRECT)?,
            tables: typed(ebpf, names::TABLES)?,
            cells: typed(ebpf, names::CELLS)?,
            rule_sets: typed(ebpf, names::RULE_SETS)?,
            bounds: typed(ebpf, names::BOUNDS)?,
            sizes,
            ct: typed(ebpf, names::CT)?,
            stats: typed(ebpf, names::STATS)?,
            rule_stats: typed(ebpf, names::RULE_STATS)?,
            rule_stats_shared: typed(ebpf, names::RULE_STATS_SHARED)?,
            known_empty: None,
            written: [None, None],
        })
    }
}

/// Takes a map out of the object as its typed handle; aya checks the
/// object's declared type and key/value sizes here.
fn typed<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(DataplaneError::MissingMap(name))?;
    T::try_from(map)
        .map_err(|e| DataplaneError::map(name, "checking its type against filter-common", e))
}

/// A map's size as the kernel made it (a pinned map keeps its own).
fn max_entries(ebpf: &Ebpf, name: &'static str) -> Result<u32> {
    let map = ebpf.map(name).ok_or(DataplaneError::MissingMap(name))?;
    let (data, _) = data_and_type(map).ok_or(DataplaneError::MissingMap(name))?;
    Ok(data
        .info()
        .map_err(|e| DataplaneError::map(name, "reading its kernel info", e))?
        .max_entries())
}

/// The map's data and the kernel type its object definition asks for.
fn data_and_type(map: &Map) -> Option<(&MapData, MapType)> {
    Some(match map {
        Map::Array(d) => (d, MapType::Array),
        Map::HashMap(d) => (d, MapType::Hash),
        Map::LruHashMap(d) => (d, MapType::LruHash),
        Map::LpmTrie(d) => (d, MapType::LpmTrie),
        Map::PerCpuArray(d) => (d, MapType::PerCpuArray),
        Map::PerCpuHashMap(d) => (d, MapType::PerCpuHash),
        Map::PerCpuLruHashMap(d) => (d, MapType::LruPerCpuHash),
        _ => return None,
    })
}

/// Checks the kernel's view of a map (which, for a map adopted from a pin,
/// was made by whichever build created it) against this build's types.
fn check<K: Pod, V: Pod>(ebpf: &Ebpf, name: &'static str, per_cpu: bool) -> Result<()> {
    let map = ebpf.map(name).ok_or(DataplaneError::MissingMap(name))?;
    let Some((data, wanted_type)) = data_and_type(map) else {
        return Err(DataplaneError::PinnedLayout {
            name,
            what: "type",
            found: "an unexpected map type".to_owned(),
            expected: "a hash, LRU hash, LPM trie or (per-CPU) array".to_owned(),
        });
    };
    let info = data
        .info()
        .map_err(|e| DataplaneError::map(name, "reading its kernel info", e))?;
    let found_type = info
        .map_type()
        .map_err(|e| DataplaneError::map(name, "reading its kernel type", e))?;
    if found_type != wanted_type {
        return Err(DataplaneError::PinnedLayout {
            name,
            what: "type",
            found: format!("{found_type:?}"),
            expected: format!("{wanted_type:?}"),
        });
    }
    if per_cpu
        != matches!(
            wanted_type,
            MapType::PerCpuArray | MapType::PerCpuHash | MapType::LruPerCpuHash
        )
    {
        return Err(DataplaneError::PinnedLayout {
            name,
            what: "type",
            found: format!("{found_type:?}"),
            expected: if per_cpu {
                "a per-CPU map"
            } else {
                "a shared map"
            }
            .to_owned(),
        });
    }
    let sizes = [
        ("key size", info.key_size(), size_of::<K>()),
        ("value size", info.value_size(), size_of::<V>()),
    ];
    for (what, found, expected) in sizes {
        if usize::try_from(found).ok() != Some(expected) {
            return Err(DataplaneError::PinnedLayout {
                name,
                what,
                found: found.to_string(),
                expected: expected.to_string(),
            });
        }
    }
    Ok(())
}

/// Checks that a map has the number of entries this build sizes it with.
/// A pin of another size (made by an older build) is refused by name: the
/// size of a map is fixed when it is created (docs/OPERATIONS.md, "Upgrade").
fn check_entries(ebpf: &Ebpf, name: &'static str, expected: u32) -> Result<()> {
    let found = max_entries(ebpf, name)?;
    if found != expected {
        return Err(DataplaneError::PinnedLayout {
            name,
            what: "max entries",
            found: found.to_string(),
            expected: expected.to_string(),
        });
    }
    Ok(())
}
