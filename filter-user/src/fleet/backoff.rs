//! Retry delays while etcd is unreachable: doubling from [`FIRST`] up to
//! [`MAX`], each with up to a quarter taken off at random, so a thousand
//! hosts that lost etcd at once do not come back in lock step.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const FIRST: Duration = Duration::from_millis(200);
pub const MAX: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST }
    }
}

impl Backoff {
    /// The delay before the next try.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX);
        delay - jitter(delay / 4)
    }

    /// After a session that got as far as watching.
    pub fn reset(&mut self) {
        self.next = FIRST;
    }
}

/// A pseudo-random duration up to `max` (the clock's nanoseconds are
/// random enough to spread retries; nothing depends on their quality).
fn jitter(max: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let max_nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX).max(1);
    Duration::from_nanos(u64::from(nanos) % max_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] <= FIRST && delays[0] >= FIRST * 3 / 4);
        assert!(delays[1] <= FIRST * 2 && delays[1] >= FIRST * 3 / 2);
        assert!(delays.iter().all(|d| *d <= MAX));
        assert!(delays[9] >= MAX * 3 / 4);
        b.reset();
        assert!(b.next_delay() <= FIRST);
    }
}
