//! Sizes of a compiled generation: entry counts per map and the memory they
//! take, for the benchmark and `filterctl status`.
use std::mem::size_of;

use filter_common::{Bound, CellKey, EniConfig, EniKey, RuleSetRuns, TableMeta};

use super::Compiled;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompileStats {
    pub enis: usize,
    pub tables: usize,
    pub dport: usize,
    pub sport: usize,
    pub local: usize,
    pub cells: usize,
    pub rules: usize,
    pub inner: usize,
    pub rule_sets: usize,
    /// Sorted-range bounds (`FILTER_BOUNDS` entries) the prefix tables above
    /// became.
    pub bounds: usize,
    /// Bytes of keys and values written.
    pub key_value_bytes: usize,
    /// Kernel memory the generation fills: array entries as they are, every
    /// hash entry an `htab_elem` (48-byte header, key, value). The arrays
    /// themselves are allocated whole when the maps are created.
    pub kernel_bytes: usize,
}

fn array_bytes(entries: usize, value: usize) -> (usize, usize) {
    (entries * value, entries * value)
}

fn hash_bytes(entries: usize, key: usize, value: usize) -> (usize, usize) {
    const ELEM_HEADER: usize = 48;
    (
        entries * (key + value),
        entries * (ELEM_HEADER + key.next_multiple_of(8) + value.next_multiple_of(8)),
    )
}

impl Compiled {
    pub fn stats(&self) -> CompileStats {
        let parts = [
            hash_bytes(self.enis.len(), size_of::<EniKey>(), size_of::<EniConfig>()),
            array_bytes(self.layout.tables.len(), size_of::<TableMeta>()),
            hash_bytes(self.cells.len(), size_of::<CellKey>(), 4),
            array_bytes(self.layout.rule_sets.len(), size_of::<RuleSetRuns>()),
            array_bytes(self.layout.bounds.len(), size_of::<Bound>()),
        ];
        CompileStats {
            enis: self.enis.len(),
            tables: self.tables.len(),
            dport: self.dport.len(),
            sport: self.sport.len(),
            local: self.local.len(),
            cells: self.cells.len(),
            rules: self.rules.len(),
            inner: self.inner.len(),
            rule_sets: self.rule_sets,
            bounds: self.layout.bounds.len(),
            key_value_bytes: parts.iter().map(|p| p.0).sum(),
            kernel_bytes: parts.iter().map(|p| p.1).sum(),
        }
    }
}
