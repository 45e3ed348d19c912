//! The rule compiler: `Ruleset` → the contents of the data plane maps, laid
//! out so that a first packet costs a handful of lookups whatever the rule
//! count (ARCHITECTURE.md, "Classifying a packet against a table").
//!
//! - [`compile`] builds a [`Compiled`] generation; [`SlotTable`] keeps rule
//!   counter slots and ENI indices stable across generations.
//! - [`model`] performs exactly the kernel's lookups on a [`Compiled`], so
//!   the compiled form is tested against `crate::eval` without a kernel.
//! - [`shadow`] finds rules that can never decide anything.
mod classes;
mod emit;
mod fast_hash;
pub mod layout;
pub mod model;
mod port_cover;
pub(crate) mod prefix;
mod push_down;
mod rules;
pub mod shadow;
mod slots;
mod stats;
pub mod synthetic;
mod tables;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use filter_common::{
    generation_slot, AddrKeyData, CellKey, EniConfig, EniKey, GenConfig, PortKeyData, RuleHit,
    TableMeta, HOT_RULE_SLOTS, ID_NONE, MAX_ENIS, MAX_RULE_SLOTS, MAX_TABLES, MODE_NIC, MODE_TAP,
    RULE_SLOT_FIRST_DYNAMIC, SLOT_ID_BIT,
};
pub use shadow::{shadow_warnings, ShadowKind, ShadowWarning};
pub use slots::{fixed_slots, SlotTable, StableIds};
pub use stats::CompileStats;

pub use self::layout::{Layout, LayoutError, Prefixes};
use self::{
    emit::{half, inner_hit, Emitter},
    tables::SlotRef,
};
use crate::{
    ruleset::{AttachMode, HookChoice, Ruleset},
    verdict::Reason,
};

/// One entry of a prefix table, in the shape of an LPM trie entry (aya's
/// `lpm_trie::Key { prefix_len, data }` and the value). `prefix_len` counts
/// the fixed fields of the key too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LpmEntry<K, V> {
    pub prefix_len: u32,
    pub key: K,
    pub value: V,
}

/// One generation, ready to be written into its slot of the maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    pub generation: u32,
    /// `FILTER_CONFIG[generation & 1]`.
    pub config: GenConfig,
    /// The ENIs whose interface exists now, by its index.
    pub enis: Vec<(EniKey, EniConfig)>,
    /// Every ENI's interface, pending ENIs (no such interface yet, SPEC
    /// §2.4) included: what is written and attached when it appears.
    pub interfaces: Vec<EniInterface>,
    pub tables: Vec<(u32, TableMeta)>,
    pub dport: Vec<LpmEntry<PortKeyData, u32>>,
    pub sport: Vec<LpmEntry<PortKeyData, u32>>,
    pub local: Vec<LpmEntry<AddrKeyData, u32>>,
    pub cells: Vec<(CellKey, u32)>,
    pub rules: Vec<LpmEntry<AddrKeyData, RuleHit>>,
    pub inner: Vec<LpmEntry<AddrKeyData, RuleHit>>,
    /// Every counter slot this generation can count into (the fixed
    /// `RULE_SLOT_*` ones included) and the reason it stands for.
    pub slot_reasons: BTreeMap<u32, Reason>,
    /// Slots given to a reason that did not have one before: zero their
    /// `FILTER_RSTATS` counters before the generation goes live (a reused
    /// slot still holds the counts of its previous reason).
    pub fresh_slots: Vec<u32>,
    /// `EniConfig::eni_index` → ENI id, for flow logs and counters.
    pub eni_index: Vec<(u32, String)>,
    /// Table id → what it is and which ENIs use it (debugging, `status`).
    pub table_labels: Vec<(u32, String)>,
    /// How many distinct rule sets there are (ids `0..rule_sets` of the
    /// slot).
    pub rule_sets: usize,
    /// The prefix tables above as the kernel searches them: what
    /// `FILTER_TABLES`, `FILTER_RULE_SETS` and `FILTER_BOUNDS` get.
    pub layout: Layout,
}

impl Compiled {
    /// Frees the prefix tables (`dport`, `sport`, `local`, `rules`,
    /// `inner`): the layout was made from them, and [`model`] reads them,
    /// but the data plane writes only the layout. [`Compiled::stats`] then
    /// counts them as empty.
    pub fn drop_prefixes(&mut self) {
        self.dport = Vec::new();
        self.sport = Vec::new();
        self.local = Vec::new();
        self.rules = Vec::new();
        self.inner = Vec::new();
    }
}

/// An ENI's interface as the data plane guards it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EniInterface {
    pub name: String,
    /// The ingress hook the document asks for.
    pub hook: HookChoice,
    /// Its `FILTER_ENIS` value.
    pub config: EniConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("enis: {eni} and {other} are the same interface (ifindex {ifindex})")]
    SameInterface {
        eni: String,
        other: String,
        ifindex: u32,
    },
    #[error(
        "{table}: needs more than {limit} entries in {map} (each generation may use half of the map, \
         since two live side by side during an apply)"
    )]
    MapFull {
        map: &'static str,
        limit: usize,
        table: String,
    },
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("{what}: {count} is more than the {limit} one generation may use")]
    TooMany {
        what: &'static str,
        count: usize,
        limit: usize,
    },
    #[error(
        "rule counter slots: the generation being replaced still holds some, and together they pass \
         {limit}; apply a smaller rule set first"
    )]
    SlotsExhausted { limit: u32 },
}

/// Compiles generation `generation` of `rs` into its slot (`generation & 1`).
///
/// `ifindex_of` resolves interface names (an ENI whose interface is missing
/// is an error). `slots` gives every rule its stable counter slot and every
/// ENI its stable index; it is updated only when the compile succeeds. A
/// daemon that then fails to write the generation should restore its copy
/// (the slots handed out would otherwise only be wasted, never wrong).
pub fn compile(
    rs: &Ruleset,
    generation: u32,
    ifindex_of: &dyn Fn(&str) -> Option<u32>,
    slots: &mut SlotTable,
) -> Result<Compiled, CompileError> {
    let (compiled, next) = compile_from(rs, generation, ifindex_of, slots)?;
    *slots = next;
    Ok(compiled)
}

/// [`compile`], leaving `slots` as it is and returning the table after the
/// compile: a caller that keeps the old table until the generation runs
/// needs no copy of it (100k rules: 10 MB).
pub fn compile_from(
    rs: &Ruleset,
    generation: u32,
    ifindex_of: &dyn Fn(&str) -> Option<u32>,
    slots: &SlotTable,
) -> Result<(Compiled, SlotTable), CompileError> {
    let slot = generation_slot(generation);
    let slot_bit = slot * SLOT_ID_BIT;

    let ifindexes = resolve_interfaces(rs, ifindex_of)?;
    limit("ENIs", rs.enis.len(), half(MAX_ENIS))?;
    let mut plan = tables::plan(rs);
    limit(
        "tables (security-group sets and NACL directions in use)",
        plan.tables.len(),
        half(MAX_TABLES),
    )?;
    limit(
        "rule counter slots (a FILTER_RSTATS or FILTER_RSHARED counter per rule and NACL entry)",
        plan.reasons.len(),
        half(MAX_RULE_SLOTS - RULE_SLOT_FIRST_DYNAMIC),
    )?;

    // The reasons' names only for the slot plan (which keeps its own).
    let rule_plan = {
        let reason_texts: Vec<String> = plan.reasons.iter().map(Reason::to_string).collect();
        let reason_names: Vec<&str> = reason_texts.iter().map(String::as_str).collect();
        slots
            .rules
            .plan_preferring(&reason_names, HOT_RULE_SLOTS, slots::RULE_SLOT_LIMIT)
            .ok_or(CompileError::SlotsExhausted {
                limit: MAX_RULE_SLOTS,
            })?
    };
    let eni_names: Vec<&str> = rs.enis.iter().map(|e| e.id.as_str()).collect();
    let eni_plan =
        slots
            .enis
            .plan(&eni_names, slots::ENI_INDEX_LIMIT)
            .ok_or(CompileError::TooMany {
                what: "ENI indices",
                count: rs.enis.len(),
                limit: half(MAX_ENIS),
            })?;
    let reason_slot = &rule_plan.ids;
    let resolve = |slot: SlotRef| match slot {
        SlotRef::Fixed(slot) => slot,
        SlotRef::Reason(i) => reason_slot[i],
    };
    for (rule, slot) in plan.boxes.iter_mut().zip(&plan.box_slots) {
        rule.hit.slot = resolve(*slot);
    }

    let mut emitter = Emitter::new(&plan.boxes, slot_bit);
    let table_id = |index: usize| slot_bit | index as u32;
    let mut table_labels = Vec::with_capacity(plan.tables.len());
    for (index, spec) in plan.tables.iter().enumerate() {
        let inner_hits: Vec<RuleHit> = spec
            .inner_slots
            .iter()
            .map(|s| inner_hit(resolve(*s)))
            .collect();
        emitter.table(
            table_id(index),
            spec,
            &inner_hits,
            resolve(spec.default_slot),
        )?;
        table_labels.push((table_id(index), spec.label.clone()));
    }

    let mut enis = Vec::with_capacity(rs.enis.len());
    let mut interfaces = Vec::with_capacity(rs.enis.len());
    let mut eni_index = Vec::with_capacity(rs.enis.len());
    for (((eni, tables), ifindex), &index) in rs
        .enis
        .iter()
        .zip(&plan.eni_tables)
        .zip(&ifindexes)
        .zip(&eni_plan.ids)
    {
        let config = EniConfig {
            eni_index: index,
            mode: match eni.mode {
                AttachMode::Tap => MODE_TAP,
                AttachMode::Nic => MODE_NIC,
            },
            live: 0,
            _pad: [0; 2],
            sg_table: tables.sg.map(table_id),
            nacl_table: tables.nacl.map_or([ID_NONE; 2], |t| t.map(table_id)),
        };
        if let Some(ifindex) = *ifindex {
            enis.push((EniKey { slot, ifindex }, config));
        }
        interfaces.push(EniInterface {
            name: eni.interface.clone(),
            hook: eni.hook,
            config,
        });
        eni_index.push((index, eni.id.clone()));
    }

    let mut slot_reasons: BTreeMap<u32, Reason> = fixed_slots().into_iter().collect();
    slot_reasons.extend(
        reason_slot
            .iter()
            .copied()
            .zip(std::mem::take(&mut plan.reasons)),
    );
    // The layout needs the entries alone: the emitter's rule-set interner
    // and the planned tables go before it is built (at 100k rules, the
    // peak of an apply is here).
    let (entries, rule_sets) = emitter.finish();
    drop(plan);
    let layout = Layout::build(
        &Prefixes {
            tables: &entries.tables,
            rule_sets,
            dport: &entries.dport,
            sport: &entries.sport,
            local: &entries.local,
            rules: &entries.rules,
            inner: &entries.inner,
        },
        slot,
    )?;
    let next = SlotTable {
        rules: rule_plan.next_state,
        enis: eni_plan.next_state,
    };
    let compiled = Compiled {
        generation,
        config: rs.conntrack.gen_config(),
        enis,
        interfaces,
        tables: entries.tables,
        dport: entries.dport,
        sport: entries.sport,
        local: entries.local,
        cells: entries.cells,
        rules: entries.rules,
        inner: entries.inner,
        slot_reasons,
        fresh_slots: rule_plan.fresh,
        eni_index,
        table_labels,
        rule_sets,
        layout,
    };
    Ok((compiled, next))
}

fn limit(what: &'static str, count: usize, limit: usize) -> Result<(), CompileError> {
    if count > limit {
        return Err(CompileError::TooMany { what, count, limit });
    }
    Ok(())
}

/// The index of every ENI's interface, `None` for one that does not exist
/// (the ENI is pending). Two ENIs on one interface are an error.
fn resolve_interfaces(
    rs: &Ruleset,
    ifindex_of: &dyn Fn(&str) -> Option<u32>,
) -> Result<Vec<Option<u32>>, CompileError> {
    let mut seen: HashMap<u32, &str> = HashMap::new();
    let mut out = Vec::with_capacity(rs.enis.len());
    for eni in &rs.enis {
        let ifindex = ifindex_of(&eni.interface);
        if let Some(ifindex) = ifindex {
            if let Some(other) = seen.insert(ifindex, &eni.id) {
                return Err(CompileError::SameInterface {
                    eni: eni.id.clone(),
                    other: other.to_string(),
                    ifindex,
                });
            }
        }
        out.push(ifindex);
    }
    Ok(out)
}
