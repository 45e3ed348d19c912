//! Tests of the compiler as a whole: hand-written rule sets through
//! `compile` and the lookup model, and (in `agreement`) random rule sets
//! against the reference evaluator.
mod agreement;
mod compile;
pub(crate) mod fixtures;
mod random;
mod shadow;
