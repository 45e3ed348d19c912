//! Table-driven tests of the reference evaluator, one or more per clause
//! of SPEC §2.2–§2.5 and §3 that concerns evaluation. Rule sets are built
//! directly as typed [`crate::ruleset::Ruleset`]s by [`builder`].
mod builder;
mod conntrack;
mod nacl;
mod pipeline;
mod sg;
