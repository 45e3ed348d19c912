//! The reference evaluator: SPEC §3 written plainly. The oracle for every other test.
