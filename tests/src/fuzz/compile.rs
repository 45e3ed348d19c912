//! Target `compile`: a document built from the bytes ([`super::gen`]) is
//! validated, then compiled as two generations in a row the way the daemon
//! applies (one slot table); each compile succeeds or refuses with an
//! error, never panics, and a compiled generation keeps every ENI
//! and names a reason for every fresh counter slot.
use arbitrary::Unstructured;
use filter::compile::{compile as compile_ruleset, SlotTable};

use super::gen;

pub fn compile(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Some((_, rs)) = gen::ruleset(&mut u) else {
        return;
    };
    let mut slots = SlotTable::default();
    for generation in [1, 2] {
        match compile_ruleset(&rs, generation, &gen::ifindex_of, &mut slots) {
            Ok(c) => {
                assert_eq!(c.generation, generation);
                assert_eq!(c.interfaces.len(), rs.enis.len(), "an ENI went missing");
                for slot in &c.fresh_slots {
                    assert!(
                        c.slot_reasons.contains_key(slot),
                        "fresh slot {slot} stands for no reason"
                    );
                }
            }
            Err(e) => drop(e.to_string()),
        }
    }
}
