//! Sizes of a compiled generation: entry counts per map and the memory they
//! take, for the benchmark and `filterctl status`.
use std::mem::size_of;

use filter_common::{AddrKeyData, CellKey, EniConfig, EniKey, PortKeyData, RuleHit, TableMeta};

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
    /// Bytes of keys (with their 4-byte prefix length) and values.
    pub key_value_bytes: usize,
    /// Estimated kernel memory: every LPM entry is a trie node (40-byte
    /// header, key data and value, rounded up to its kmalloc size) plus at
    /// most one intermediate node (header and key data); every hash entry an
    /// `htab_elem` (48-byte header, key, value).
    pub kernel_bytes: usize,
}

/// kmalloc size classes up to 256 bytes (enough for these nodes).
fn kmalloc(size: usize) -> usize {
    [32, 64, 96, 128, 192, 256]
        .into_iter()
        .find(|&c| c >= size)
        .unwrap_or(size.next_multiple_of(64))
}

fn lpm_bytes(entries: usize, data: usize, value: usize) -> (usize, usize) {
    const NODE_HEADER: usize = 40;
    let kv = entries * (4 + data + value);
    let kernel = entries * (kmalloc(NODE_HEADER + data + value) + kmalloc(NODE_HEADER + data));
    (kv, kernel)
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
            hash_bytes(self.tables.len(), 4, size_of::<TableMeta>()),
            lpm_bytes(self.dport.len(), size_of::<PortKeyData>(), 4),
            lpm_bytes(self.sport.len(), size_of::<PortKeyData>(), 4),
            lpm_bytes(self.local.len(), size_of::<AddrKeyData>(), 4),
            hash_bytes(self.cells.len(), size_of::<CellKey>(), 4),
            lpm_bytes(
                self.rules.len(),
                size_of::<AddrKeyData>(),
                size_of::<RuleHit>(),
            ),
            lpm_bytes(
                self.inner.len(),
                size_of::<AddrKeyData>(),
                size_of::<RuleHit>(),
            ),
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
            key_value_bytes: parts.iter().map(|p| p.0).sum(),
            kernel_bytes: parts.iter().map(|p| p.1).sum(),
        }
    }
}
