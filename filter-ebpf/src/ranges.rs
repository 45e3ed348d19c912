//! Finding the range that holds a key in a run of sorted ranges
//! (`filter_common::ranges`, ARCHITECTURE.md "Sorted ranges").
use filter_common::{Bound, Run, SEARCH_STEPS};

use crate::maps::FILTER_BOUNDS;

/// The bound of the range of `run` that holds key `(hi, lo)`: the last
/// bound whose key is not greater. None for an empty run (or one that
/// points past the array, which the compiler never writes).
///
/// The run's first bound starts at key 0, so once the run is not empty the
/// answer exists; each step halves the bounds left, and `SEARCH_STEPS`
/// halvings bring the longest run a generation may hold down to one. Every
/// read is an array lookup, which the verifier inlines.
#[inline(always)]
pub fn find(run: Run, hi: u64, lo: u64) -> Option<&'static Bound> {
    if run.len == 0 {
        return None;
    }
    let mut base = run.start;
    let mut left = run.len;
    for _ in 0..SEARCH_STEPS {
        if left <= 1 {
            break;
        }
        let half = left / 2;
        let mid = FILTER_BOUNDS.get(base + half)?;
        if mid.hi < hi || (mid.hi == hi && mid.lo <= lo) {
            base += half;
        }
        left -= half;
    }
    FILTER_BOUNDS.get(base)
}
