//! Calibrating the data plane's clock (ARCHITECTURE.md, "Clock"): once per
//! boot, `FILTER_CLOCK` learns how many nanoseconds a jiffy is and where
//! jiffies sit on the `CLOCK_MONOTONIC` time line. Reading the clock is
//! `crate::clock`.
use std::time::{Duration, Instant};

use aya::{
    maps::{Array, MapData},
    programs::{SchedClassifier, TestRun as _, TestRunOptions},
    Ebpf,
};
use filter_common::{names, ClockConfig};

use super::error::{DataplaneError, Result};

/// `TICK_NSEC` for the `HZ` values Linux is built with.
const TICKS_NS: [u64; 4] = [
    1_000_000,  // HZ=1000
    3_333_333,  // HZ=300
    4_000_000,  // HZ=250
    10_000_000, // HZ=100
];

/// Jiffies between the two samples the tick is measured over: both
/// clocks move in whole ticks, so the estimate is within 1/20 of the tick.
const SPAN_JIFFIES: u64 = 20;

/// Longest wait for that span (HZ=100 needs 200 ms).
const SPAN_LIMIT: Duration = Duration::from_millis(600);

/// One reading of the two kernel clocks, taken back to back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sample {
    jiffies: u64,
    coarse_ns: u64,
}

/// Writes `FILTER_CLOCK` unless it is set already (pinned maps of this
/// boot, which running programs read: they are never rewritten). Before any
/// program of this build runs, so no packet sees it half written. When the
/// tick cannot be told (or this fails, which the caller only logs), the
/// entry stays zero and the programs read the coarse clock: slower, never
/// wrong.
pub(crate) fn calibrate(ebpf: &mut Ebpf, clock: &mut Array<MapData, ClockConfig>) -> Result<()> {
    let current = clock
        .get(&0, 0)
        .map_err(|e| DataplaneError::map(names::CLOCK, "reading", e))?;
    if current.tick_ns != 0 {
        return Ok(());
    }
    let prog = super::load_tc(ebpf, names::PROG_CLOCK)?;
    let first = sample(prog)?;
    let started = Instant::now();
    let mut last = first;
    while last.jiffies.wrapping_sub(first.jiffies) < SPAN_JIFFIES && started.elapsed() < SPAN_LIMIT
    {
        std::thread::sleep(Duration::from_millis(5));
        last = sample(prog)?;
    }
    match config(first, last) {
        Some(c) => clock
            .set(0, c, 0)
            .map_err(|e| DataplaneError::map(names::CLOCK, "writing", e)),
        None => {
            tracing::warn!(
                "the jiffy could not be told from {first:?} and {last:?}; the data plane reads \
                 the coarse clock instead"
            );
            Ok(())
        }
    }
}

/// One run of the sampling program.
fn sample(prog: &SchedClassifier) -> Result<Sample> {
    // The smallest frame a TC test run takes, with room for the sample.
    let data_in = [0u8; 64];
    let mut data_out = [0u8; 64];
    prog.test_run(TestRunOptions {
        data_in: Some(&data_in),
        data_out: Some(&mut data_out),
        ..Default::default()
    })
    .map_err(|e| DataplaneError::program(names::PROG_CLOCK, "running", e))?;
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&data_out[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(b)
    };
    Ok(Sample {
        jiffies: word(0),
        coarse_ns: word(1),
    })
}

/// The clock that two samples imply: the tick is the known `TICK_NSEC`
/// nearest to what they measured, within a tenth of it; the offset puts
/// the later sample's jiffies on its coarse time.
fn config(first: Sample, last: Sample) -> Option<ClockConfig> {
    let jiffies = last.jiffies.checked_sub(first.jiffies)?;
    let ns = last.coarse_ns.checked_sub(first.coarse_ns)?;
    if jiffies < SPAN_JIFFIES / 2 {
        return None;
    }
    let measured = ns / jiffies;
    let tick_ns = TICKS_NS
        .into_iter()
        .find(|&t| measured.abs_diff(t) <= t / 10)?;
    Some(ClockConfig {
        tick_ns,
        offset_ns: last
            .coarse_ns
            .wrapping_sub(last.jiffies.wrapping_mul(tick_ns)),
    })
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;

    fn at(jiffies: u64, coarse_ns: u64) -> Sample {
        Sample { jiffies, coarse_ns }
    }

    #[test]
    fn the_tick_is_the_nearest_known_one() {
        // HZ=250 from jiffies near the kernel's start value, 20 ticks
        // apart, the coarse clock one tick behind at the second sample.
        let j0 = 4_294_892_296;
        let c = config(at(j0, 1_000_000_000), at(j0 + 20, 1_076_000_000)).unwrap();
        assert_eq!(c.tick_ns, 4_000_000);
        assert_eq!(
            (j0 + 20).wrapping_mul(c.tick_ns).wrapping_add(c.offset_ns),
            1_076_000_000
        );
        let c = config(at(10, 0), at(40, 300_000_000)).unwrap();
        assert_eq!(c.tick_ns, 10_000_000);
        let c = config(at(10, 0), at(40, 100_000_000)).unwrap();
        assert_eq!(c.tick_ns, 3_333_333);
    }

    #[test]
    fn no_tick_from_too_short_a_span_or_an_unknown_rate() {
        assert_eq!(config(at(10, 0), at(12, 8_000_000)), None);
        assert_eq!(config(at(10, 0), at(40, 60_000_000)), None);
        // A clock that went backwards.
        assert_eq!(config(at(40, 0), at(10, 60_000_000)), None);
    }
}
