//! Every clock `filter` reads, in one place.
//!
//! The data plane stamps packets on the `CLOCK_MONOTONIC` time line to one
//! timer tick (jiffies scaled by a calibrated tick, ARCHITECTURE.md
//! "Clock"; the calibration itself is `dataplane::calibrate`). User space
//! compares those stamps with [`ktime_now`] and turns them into wall time
//! with a [`KtimeClock`]; records and answers carry Unix seconds
//! ([`unix_now`]).
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time since the Unix epoch (zero before it).
pub fn unix_time() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    unix_time().as_secs()
}

/// The data plane's time line now, read on `CLOCK_MONOTONIC_COARSE`: the
/// kernel advances it and jiffies off the same tick, so an entry stamped
/// after this call never carries an earlier time (the flow log's "created
/// meanwhile" check and its baseline rely on that). `CLOCK_MONOTONIC`
/// runs up to a tick ahead of the stamps.
pub fn ktime_now() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_MONOTONIC_COARSE)).unwrap_or(0)
}

/// Converts the data plane's time stamps (`CLOCK_MONOTONIC`, which stops
/// while the machine is suspended) into wall-clock times, with one offset
/// sampled when the value is made. Use one clock per batch of readings.
#[derive(Clone, Copy, Debug)]
pub struct KtimeClock {
    realtime_minus_monotonic_ns: i128,
}

impl KtimeClock {
    /// Samples the current `CLOCK_REALTIME - CLOCK_MONOTONIC` offset, with
    /// the realtime read between two monotonic ones so the skew is at most
    /// half the time the three reads take.
    pub fn now() -> Self {
        let m1 = clock_ns(libc::CLOCK_MONOTONIC);
        let r = clock_ns(libc::CLOCK_REALTIME);
        let m2 = clock_ns(libc::CLOCK_MONOTONIC);
        Self {
            realtime_minus_monotonic_ns: r - (m1 + m2) / 2,
        }
    }

    /// The wall-clock time of a kernel time stamp; `None` for 0 ("never").
    pub fn to_system_time(&self, ktime_ns: u64) -> Option<SystemTime> {
        if ktime_ns == 0 {
            return None;
        }
        let unix_ns = i128::from(ktime_ns) + self.realtime_minus_monotonic_ns;
        let unix_ns = u64::try_from(unix_ns).ok()?;
        UNIX_EPOCH.checked_add(Duration::from_nanos(unix_ns))
    }

    /// The Unix second of a kernel time stamp; `None` for 0 ("never").
    pub fn unix_secs(&self, ktime_ns: u64) -> Option<u64> {
        let t = self.to_system_time(ktime_ns)?;
        t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
    }

    /// How long ago a kernel time stamp was (zero for one in the future).
    pub fn age(&self, ktime_ns: u64) -> Duration {
        self.to_system_time(ktime_ns)
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default()
    }
}

/// Nanoseconds on one clock.
fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out pointer; the clocks used here always exist
    // on Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;

    #[test]
    fn ktime_zero_is_never() {
        assert_eq!(KtimeClock::now().to_system_time(0), None);
    }

    #[test]
    fn ktime_now_is_about_now() {
        let wall = KtimeClock::now().to_system_time(ktime_now()).unwrap();
        let skew = match SystemTime::now().duration_since(wall) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        assert!(skew < Duration::from_millis(100), "skew {skew:?}");
    }
}
