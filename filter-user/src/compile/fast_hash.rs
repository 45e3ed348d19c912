//! A fast non-cryptographic hasher (FNV-1a, 64 bit) for the compiler's own
//! maps. The default SipHash guards against hash flooding from untrusted
//! keys; the compiler's keys come from the administrator's own document, and
//! SipHash was a tenth of the compile time at 100k rules.
use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

#[derive(Clone, Copy, Debug)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    // Whole integers at once: rule sets are long lists of u32.
    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x0100_0000_01b3);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x0100_0000_01b3);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

pub type FastBuild = BuildHasherDefault<Fnv1a>;
pub type FastMap<K, V> = HashMap<K, V, FastBuild>;
