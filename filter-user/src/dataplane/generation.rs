//! Writing a compiled generation into its slot and switching to it
//! (`docs/ARCHITECTURE.md`, "Atomic generations").
use aya::{
    maps::{lpm_trie::Key, HashMap, LpmTrie, MapData, MapError},
    Pod,
};
use filter_common::{
    generation_slot, names, AddrKeyData, CellKey, EniConfig, EniKey, GenConfig, PortKeyData,
    RuleHit, TableMeta, ADDR_KEY_FIXED_BITS, FAMILY_V4, FAMILY_V6, PORT_KEY_FIXED_BITS,
    SLOT_ID_BIT,
};

use super::{
    error::{DataplaneError, Result},
    maps::Maps,
    sys,
};

/// One entry of an LPM trie, as the compiler produces it.
pub use crate::compile::LpmEntry;

/// The contents of one generation's slot, borrowed from the compiler's
/// output (`compile::Compiled`). Every key must carry the generation's slot
/// (`EniKey.slot`, or [`SLOT_ID_BIT`] in table and rule-set ids).
#[derive(Clone, Copy, Debug)]
pub struct GenerationMaps<'a> {
    pub generation: u32,
    pub config: &'a GenConfig,
    pub enis: &'a [(EniKey, EniConfig)],
    pub tables: &'a [(u32, TableMeta)],
    pub dport: &'a [LpmEntry<PortKeyData, u32>],
    pub sport: &'a [LpmEntry<PortKeyData, u32>],
    pub local: &'a [LpmEntry<AddrKeyData, u32>],
    pub cells: &'a [(CellKey, u32)],
    pub rules: &'a [LpmEntry<AddrKeyData, RuleHit>],
    pub inner: &'a [LpmEntry<AddrKeyData, RuleHit>],
}

impl<'a> From<&'a crate::compile::Compiled> for GenerationMaps<'a> {
    /// The compiler's output, borrowed as it is: nothing is copied.
    fn from(c: &'a crate::compile::Compiled) -> Self {
        GenerationMaps {
            generation: c.generation,
            config: &c.config,
            enis: &c.enis,
            tables: &c.tables,
            dport: &c.dport,
            sport: &c.sport,
            local: &c.local,
            cells: &c.cells,
            rules: &c.rules,
            inner: &c.inner,
        }
    }
}

impl GenerationMaps<'_> {
    /// Number of map entries the generation writes (the config included).
    pub fn entry_count(&self) -> usize {
        1 + self.enis.len()
            + self.tables.len()
            + self.dport.len()
            + self.sport.len()
            + self.local.len()
            + self.cells.len()
            + self.rules.len()
            + self.inner.len()
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotContents {
    pub config: GenConfig,
    pub enis: Vec<(EniKey, EniConfig)>,
    pub tables: Vec<(u32, TableMeta)>,
    pub dport: Vec<LpmEntry<PortKeyData, u32>>,
    pub sport: Vec<LpmEntry<PortKeyData, u32>>,
    pub local: Vec<LpmEntry<AddrKeyData, u32>>,
    pub cells: Vec<(CellKey, u32)>,
    pub rules: Vec<LpmEntry<AddrKeyData, RuleHit>>,
    pub inner: Vec<LpmEntry<AddrKeyData, RuleHit>>,
}

impl SlotContents {
    /// The same entries as `g`, sorted the way [`SlotContents`] is.
    pub fn from_generation(g: &GenerationMaps<'_>) -> Self {
        fn sorted_pairs<K: Ord + Copy, V: Copy>(v: &[(K, V)]) -> Vec<(K, V)> {
            let mut v = v.to_vec();
            v.sort_by_key(|(k, _)| *k);
            v
        }
        fn sorted_lpm<K: Ord + Copy, V: Copy>(v: &[LpmEntry<K, V>]) -> Vec<LpmEntry<K, V>> {
            let mut v = v.to_vec();
            v.sort_by_key(|e| (e.key, e.prefix_len));
            v
        }
        Self {
            config: *g.config,
            enis: sorted_pairs(g.enis),
            tables: sorted_pairs(g.tables),
            dport: sorted_lpm(g.dport),
            sport: sorted_lpm(g.sport),
            local: sorted_lpm(g.local),
            cells: sorted_pairs(g.cells),
            rules: sorted_lpm(g.rules),
            inner: sorted_lpm(g.inner),
        }
    }

    /// Whether the slot holds no entries (the config aside).
    pub fn is_empty(&self) -> bool {
        self.enis.is_empty()
            && self.tables.is_empty()
            && self.dport.is_empty()
            && self.sport.is_empty()
            && self.local.is_empty()
            && self.cells.is_empty()
            && self.rules.is_empty()
            && self.inner.is_empty()
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

/// `FILTER_TABLES` is keyed by the table id itself.
impl SlotKey for u32 {
    fn slot(&self) -> u32 {
        id_slot(*self)
    }
}

impl SlotKey for PortKeyData {
    fn slot(&self) -> u32 {
        id_slot(self.table)
    }
}

impl SlotKey for AddrKeyData {
    fn slot(&self) -> u32 {
        id_slot(self.id)
    }
}

impl SlotKey for CellKey {
    fn slot(&self) -> u32 {
        id_slot(self.table)
    }
}

impl<K: Pod + SlotKey> SlotKey for Key<K> {
    fn slot(&self) -> u32 {
        self.data().slot()
    }
}

/// Longest meaningful prefix of an address key of a family.
const fn addr_key_bits(family: u8) -> Option<u32> {
    match family {
        FAMILY_V4 => Some(ADDR_KEY_FIXED_BITS + 32),
        FAMILY_V6 => Some(ADDR_KEY_FIXED_BITS + 128),
        _ => None,
    }
}

/// Checks that every key of `maps` lies in `slot` and that every LPM prefix
/// covers the key's exact-match fields (a shorter prefix would match ids of
/// the other slot, i.e. the running generation).
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
    fn port_prefixes(
        map: &str,
        entries: &[LpmEntry<PortKeyData, u32>],
    ) -> std::result::Result<(), String> {
        match entries
            .iter()
            .find(|e| !(PORT_KEY_FIXED_BITS..=PORT_KEY_FIXED_BITS + 16).contains(&e.prefix_len))
        {
            Some(e) => Err(format!(
                "{map} entry {e:?} has a prefix length outside {PORT_KEY_FIXED_BITS}..=64"
            )),
            None => Ok(()),
        }
    }
    fn addr_prefixes<V: std::fmt::Debug>(
        map: &str,
        entries: &[LpmEntry<AddrKeyData, V>],
    ) -> std::result::Result<(), String> {
        for e in entries {
            let Some(max) = addr_key_bits(e.key.family) else {
                return Err(format!("{map} entry {e:?} has an unknown address family"));
            };
            if !(ADDR_KEY_FIXED_BITS..=max).contains(&e.prefix_len) {
                return Err(format!(
                    "{map} entry {e:?} has a prefix length outside {ADDR_KEY_FIXED_BITS}..={max}"
                ));
            }
        }
        Ok(())
    }
    keys(names::ENIS, maps.enis.iter().map(|(k, _)| k), slot)?;
    keys(names::TABLES, maps.tables.iter().map(|(k, _)| k), slot)?;
    keys(names::DPORT, maps.dport.iter().map(|e| &e.key), slot)?;
    keys(names::SPORT, maps.sport.iter().map(|e| &e.key), slot)?;
    keys(names::LOCAL, maps.local.iter().map(|e| &e.key), slot)?;
    keys(names::CELLS, maps.cells.iter().map(|(k, _)| k), slot)?;
    keys(names::RULES, maps.rules.iter().map(|e| &e.key), slot)?;
    keys(names::INNER, maps.inner.iter().map(|e| &e.key), slot)?;
    port_prefixes(names::DPORT, maps.dport)?;
    port_prefixes(names::SPORT, maps.sport)?;
    addr_prefixes(names::LOCAL, maps.local)?;
    addr_prefixes(names::RULES, maps.rules)?;
    addr_prefixes(names::INNER, maps.inner)?;
    Ok(())
}

fn is_enoent(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Deletes every key of `slot` from a hash map. Keys are collected first:
/// deleting while walking a hash map can restart the walk.
fn purge_hash<K: Pod + SlotKey, V: Pod>(
    name: &'static str,
    map: &mut HashMap<MapData, K, V>,
    slot: u32,
) -> Result<usize> {
    let keys = map
        .keys()
        .filter(|k| k.as_ref().map_or(true, |k| k.slot() == slot))
        .collect::<std::result::Result<Vec<K>, _>>()
        .map_err(|e| DataplaneError::map(name, "listing keys", e))?;
    let mut deleted = 0;
    for key in &keys {
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

/// [`purge_hash`] for an LPM trie.
fn purge_lpm<K: Pod + SlotKey, V: Pod>(
    name: &'static str,
    map: &mut LpmTrie<MapData, K, V>,
    slot: u32,
) -> Result<usize> {
    let keys = map
        .keys()
        .filter(|k| k.as_ref().map_or(true, |k| k.slot() == slot))
        .collect::<std::result::Result<Vec<Key<K>>, _>>()
        .map_err(|e| DataplaneError::map(name, "listing keys", e))?;
    let mut deleted = 0;
    for key in &keys {
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

fn read_lpm<K: Pod + SlotKey + Ord, V: Pod>(
    name: &'static str,
    map: &LpmTrie<MapData, K, V>,
    slot: u32,
) -> Result<Vec<LpmEntry<K, V>>> {
    let mut out = Vec::new();
    for item in map.iter() {
        let (k, value) = item.map_err(|e| DataplaneError::map(name, "reading", e))?;
        if k.slot() == slot {
            out.push(LpmEntry {
                prefix_len: k.prefix_len(),
                key: k.data(),
                value,
            });
        }
    }
    out.sort_by_key(|e| (e.key, e.prefix_len));
    Ok(out)
}

impl Maps {
    /// Reads back everything `slot` holds.
    pub(crate) fn read_slot(&self, slot: u32) -> Result<SlotContents> {
        Ok(SlotContents {
            config: self
                .config
                .get(&slot, 0)
                .map_err(|e| DataplaneError::map(names::CONFIG, "reading", e))?,
            enis: read_hash(names::ENIS, &self.enis, slot)?,
            tables: read_hash(names::TABLES, &self.tables, slot)?,
            dport: read_lpm(names::DPORT, &self.dport, slot)?,
            sport: read_lpm(names::SPORT, &self.sport, slot)?,
            local: read_lpm(names::LOCAL, &self.local, slot)?,
            cells: read_hash(names::CELLS, &self.cells, slot)?,
            rules: read_lpm(names::RULES, &self.rules, slot)?,
            inner: read_lpm(names::INNER, &self.inner, slot)?,
        })
    }

    /// `FILTER_ACTIVE[0]`: the running generation (0: none yet).
    pub(crate) fn active_generation(&self) -> Result<u32> {
        self.active
            .get(&0, 0)
            .map_err(|e| DataplaneError::map(names::ACTIVE, "reading the running generation", e))
    }

    /// Deletes every entry of `slot` from every per-generation map and
    /// zeroes its config. Returns the number of entries deleted.
    pub(crate) fn purge_slot(&mut self, slot: u32) -> Result<usize> {
        // Only a slot that no program run uses is ever purged, so the order
        // does not matter.
        let mut n = 0;
        n += purge_hash(names::ENIS, &mut self.enis, slot)?;
        n += purge_hash(names::TABLES, &mut self.tables, slot)?;
        n += purge_lpm(names::DPORT, &mut self.dport, slot)?;
        n += purge_lpm(names::SPORT, &mut self.sport, slot)?;
        n += purge_lpm(names::LOCAL, &mut self.local, slot)?;
        n += purge_hash(names::CELLS, &mut self.cells, slot)?;
        n += purge_lpm(names::RULES, &mut self.rules, slot)?;
        n += purge_lpm(names::INNER, &mut self.inner, slot)?;
        self.config
            .set(slot, GenConfig::default(), 0)
            .map_err(|e| DataplaneError::map(names::CONFIG, "clearing the old slot", e))?;
        Ok(n)
    }

    /// Writes every entry of `g` into `slot`, which must be empty.
    fn fill_slot(&mut self, g: &GenerationMaps<'_>, slot: u32) -> Result<usize> {
        fn lpm<K: Pod, V: Pod>(
            name: &'static str,
            map: &mut LpmTrie<MapData, K, V>,
            entries: &[LpmEntry<K, V>],
        ) -> Result<usize> {
            for e in entries {
                map.insert(&Key::new(e.prefix_len, e.key), e.value, 0)
                    .map_err(|err| DataplaneError::map(name, "writing the new slot", err))?;
            }
            Ok(entries.len())
        }
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
        self.config
            .set(slot, g.config, 0)
            .map_err(|e| DataplaneError::map(names::CONFIG, "writing the new slot", e))?;
        let mut n = 1;
        // Lookup order, leaves first: the ENIs, which make the rest
        // reachable, last.
        n += lpm(names::RULES, &mut self.rules, g.rules)?;
        n += lpm(names::INNER, &mut self.inner, g.inner)?;
        n += hash(names::CELLS, &mut self.cells, g.cells)?;
        n += lpm(names::LOCAL, &mut self.local, g.local)?;
        n += lpm(names::SPORT, &mut self.sport, g.sport)?;
        n += lpm(names::DPORT, &mut self.dport, g.dport)?;
        n += hash(names::TABLES, &mut self.tables, g.tables)?;
        n += hash(names::ENIS, &mut self.enis, g.enis)?;
        Ok(n)
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

        // Leftovers of an apply that was interrupted (the process died
        // between writing and cleaning up) must not mix into this one.
        let stale_removed = if self.known_empty.take() == Some(slot) {
            0
        } else {
            self.purge_slot(slot)?
        };

        let written = match self.fill_slot(g, slot) {
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

        let (deleted, cleanup_error) = match self.purge_slot(old_slot) {
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
    use super::*;

    fn addr(id: u32, family: u8) -> AddrKeyData {
        AddrKeyData {
            id,
            family,
            ..Default::default()
        }
    }

    #[test]
    fn id_slot_follows_the_top_bit() {
        assert_eq!(id_slot(0), 0);
        assert_eq!(id_slot(7), 0);
        assert_eq!(id_slot(SLOT_ID_BIT), 1);
        assert_eq!(id_slot(SLOT_ID_BIT | 7), 1);
    }

    #[test]
    fn validate_rejects_keys_of_the_other_slot_and_bad_prefixes() {
        let config = GenConfig::default();
        let tables = [(SLOT_ID_BIT | 1, TableMeta::default())];
        let rules_ok = [LpmEntry {
            prefix_len: ADDR_KEY_FIXED_BITS + 24,
            key: addr(SLOT_ID_BIT | 2, FAMILY_V4),
            value: RuleHit::default(),
        }];
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
            tables: &tables,
            dport: &[],
            sport: &[],
            local: &[],
            cells: &[],
            rules: &rules_ok,
            inner: &[],
        };
        assert_eq!(validate(&g, 1), Ok(()));
        assert!(validate(&g, 0).is_err());

        let too_short = [LpmEntry {
            prefix_len: 31,
            ..rules_ok[0]
        }];
        assert!(validate(
            &GenerationMaps {
                rules: &too_short,
                ..g
            },
            1
        )
        .is_err());
        let too_long = [LpmEntry {
            prefix_len: ADDR_KEY_FIXED_BITS + 33,
            ..rules_ok[0]
        }];
        assert!(validate(
            &GenerationMaps {
                rules: &too_long,
                ..g
            },
            1
        )
        .is_err());
        let v6 = [LpmEntry {
            prefix_len: ADDR_KEY_FIXED_BITS + 128,
            key: addr(SLOT_ID_BIT | 2, FAMILY_V6),
            ..rules_ok[0]
        }];
        assert_eq!(validate(&GenerationMaps { rules: &v6, ..g }, 1), Ok(()));
        let port = [LpmEntry {
            prefix_len: PORT_KEY_FIXED_BITS - 1,
            key: PortKeyData {
                table: SLOT_ID_BIT | 1,
                ..Default::default()
            },
            value: 0,
        }];
        assert!(validate(&GenerationMaps { dport: &port, ..g }, 1).is_err());
    }
}
