//! The kernel's side of `filter_common::search`: the run's bounds are in
//! `FILTER_BOUNDS` (ARCHITECTURE.md "Sorted ranges").
use filter_common::{Bound, Run};

use crate::maps::FILTER_BOUNDS;

/// The bound of the range of `run` that holds key `(hi, lo)`
/// (`filter_common::search`). Every read is an array lookup, which the
/// verifier inlines.
#[inline(always)]
pub fn find(run: Run, hi: u64, lo: u64) -> Option<&'static Bound> {
    filter_common::search(run, (hi, lo), |i| FILTER_BOUNDS.get(i))
}
