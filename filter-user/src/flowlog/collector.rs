//! The collector task: reads the ring buffer with `AsyncFd`, scans the
//! maps at every capture-window boundary, and hands each window's records
//! to the file and to the `--follow` subscribers.
use std::{future::Future, sync::Arc, time::Duration};

use tokio::io::{unix::AsyncFd, Interest};

use super::{
    fanout::Batch,
    monitor,
    reported::Reported,
    sink::FileSink,
    window::{FlowTable, Origin, Window},
    Shared,
};
use crate::{
    api::FlowRecord,
    clock::{ktime_now, unix_time, KtimeClock},
    dataplane::{scan_flow_maps, Event, FlowEvents, FlowScan},
};

/// At most this many events are taken in one go before the task yields.
const DRAIN_BATCH: usize = 65_536;

type Ring = AsyncFd<FlowEvents>;

/// The collector of one daemon; run it with [`Collector::run`].
pub struct Collector {
    shared: Arc<Shared>,
    table: FlowTable,
    sink: Option<FileSink>,
    ring: Option<Ring>,
    /// Unix second the open window started at.
    window_start: u64,
    /// The save of what was reported being written, if any.
    saving: Option<tokio::task::JoinHandle<()>>,
    /// A window's save was skipped (the previous one was still being
    /// written): the shutdown saves once more.
    unsaved: bool,
}

/// The first multiple of `window` after `now` (windows line up on the
/// clock: with 60 s, on whole minutes).
pub(super) fn next_boundary(now: Duration, window: Duration) -> u64 {
    let w = window.as_secs().max(1);
    (now.as_secs() / w + 1) * w
}

impl Collector {
    pub(super) fn new(shared: Arc<Shared>, sink: FileSink) -> Self {
        Collector {
            shared,
            table: FlowTable::new(),
            sink: Some(sink),
            ring: None,
            window_start: unix_time().as_secs(),
            saving: None,
            unsaved: false,
        }
    }

    fn window_len(&self) -> Duration {
        self.shared
            .catalog()
            .capture_window()
            .unwrap_or(self.shared.config.capture_window)
    }

    /// Runs until `shutdown` completes, then closes the open window (so
    /// what was counted until then reaches the file) and returns.
    pub async fn run(mut self, shutdown: impl Future) {
        // What the previous daemon reported, if it said: the rest is ours to
        // report. Else the baseline: what the maps counted before this
        // daemon started is not reported.
        let baseline = if self.restore().await {
            None
        } else {
            Some(ktime_now())
        };
        self.take_ring();
        self.scan(baseline).await;
        tokio::pin!(shutdown);
        loop {
            let boundary = next_boundary(unix_time(), self.window_len());
            let wait = Duration::from_secs(boundary).saturating_sub(unix_time());
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                // Biased, the boundary before the events: a flood of events
                // never holds a window open.
                tokio::select! {
                    biased;
                    _ = &mut shutdown => {
                        let end = unix_time().as_secs().max(self.window_start);
                        self.close(end).await;
                        self.finish_saving().await;
                        return;
                    }
                    () = &mut sleep => break,
                    () = self.shared.ring_ready.notified() => self.take_ring(),
                    () = pump(&mut self.ring, &mut self.table, &self.shared) => {}
                }
            }
            self.close(boundary).await;
        }
    }

    /// Reads what the previous daemon reported (`reported`); true when
    /// there was something to go on from.
    async fn restore(&mut self) -> bool {
        let Some(path) = self.shared.config.reported.clone() else {
            return false;
        };
        match tokio::task::spawn_blocking(move || Reported::load(&path)).await {
            Ok(Ok(Some(reported))) => {
                self.table.restore(reported);
                true
            }
            Ok(Ok(None)) => false,
            Ok(Err(e)) => {
                tracing::warn!(
                    "flow log: ignoring what the previous daemon reported ({e}); what was \
                     counted before this start is not reported"
                );
                false
            }
            Err(e) => {
                tracing::error!("flow log: reading what was reported: {e}");
                false
            }
        }
    }

    /// Saves what the records so far reported, for the next start, on a
    /// blocking thread the collector does not wait for (an fsync must not
    /// hold up the events). One save at a time: while one is being
    /// written, the next window's save includes this one's.
    fn save_reported(&mut self) {
        let Some(path) = self.shared.config.reported.clone() else {
            return;
        };
        if self.saving.as_ref().is_some_and(|h| !h.is_finished()) {
            self.unsaved = true;
            return;
        }
        self.unsaved = false;
        let reported = self.table.reported();
        self.saving = Some(tokio::task::spawn_blocking(move || {
            if let Err(e) = reported.save(&path) {
                tracing::warn!(
                    "flow log: saving what was reported ({e}): a start after a crash may \
                     report the last windows again"
                );
            }
        }));
    }

    /// Waits for the save being written, and saves what it left out.
    async fn finish_saving(&mut self) {
        if let Some(h) = self.saving.take() {
            if let Err(e) = h.await {
                tracing::error!("flow log: saving what was reported: {e}");
            }
        }
        if self.unsaved {
            self.save_reported();
            if let Some(h) = self.saving.take() {
                let _ = h.await;
            }
        }
    }

    /// Takes a ring buffer the daemon handed over (a data plane was
    /// loaded), after draining the old one.
    fn take_ring(&mut self) {
        let Some(events) = self.shared.take_ring() else {
            return;
        };
        drain(&mut self.ring, &mut self.table, &self.shared);
        // SAFETY: the ring buffer owns its map's fd, which stays open (and
        // is what `as_raw_fd` returns) for as long as the `FlowEvents`, and
        // so the `AsyncFd`, lives.
        match unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) } {
            Ok(ring) => self.ring = Some(ring),
            Err(e) => {
                tracing::error!("flow log: cannot read the event ring buffer: {e}");
                self.ring = None;
            }
        }
    }

    /// Scans the maps (on a blocking thread, the ring buffer still read
    /// meanwhile), takes in every event sent until the scan ended, then the
    /// scan.
    async fn scan(&mut self, baseline: Option<u64>) {
        let pin_dir = self.shared.config.pin_dir.clone();
        let task = tokio::task::spawn_blocking(move || scan_flow_maps(&pin_dir));
        tokio::pin!(task);
        let result = loop {
            tokio::select! {
                biased;
                r = &mut task => break r,
                () = pump(&mut self.ring, &mut self.table, &self.shared) => {}
            }
        };
        // An entry the data plane removed before the scan missed it sent
        // its event before: take every event in now.
        drain(&mut self.ring, &mut self.table, &self.shared);
        let scan: Option<FlowScan> = match result {
            Ok(Ok(scan)) => scan,
            Ok(Err(e)) => {
                tracing::warn!("flow log: reading the data plane's maps: {e}");
                self.table.scan_failed(&self.shared.catalog());
                return;
            }
            Err(e) => {
                tracing::error!("flow log: the scan failed: {e}");
                self.table.scan_failed(&self.shared.catalog());
                return;
            }
        };
        match scan {
            Some(scan) => {
                let mut catalog = self.shared.catalog();
                self.table.scan(&scan, baseline, &mut catalog);
            }
            None => self.table.maps_gone(),
        }
    }

    /// Closes the window ending at Unix second `end`: scan, records, file,
    /// subscribers.
    async fn close(&mut self, end: u64) {
        self.scan(None).await;
        let window = Window {
            start: self.window_start.min(end),
            end,
        };
        self.window_start = end;
        let clock = KtimeClock::now();
        let unix = |ns: u64| clock.unix_secs(ns).unwrap_or(0);
        let records = {
            let catalog = self.shared.catalog();
            self.table.close(window, &catalog, &unix)
        };
        if records.is_empty() {
            return;
        }
        self.publish(window, records).await;
        self.save_reported();
    }

    /// The file, then the subscribers and observers.
    async fn publish(&mut self, window: Window, records: Vec<FlowRecord>) {
        let batch = Batch {
            window,
            records: records.into_iter().map(Arc::new).collect(),
        };
        // The file first (one write per window), on a blocking thread.
        if let Some(mut sink) = self.sink.take() {
            let records = Arc::clone(&batch.records);
            match tokio::task::spawn_blocking(move || {
                let result = sink.write(records.iter().map(|r| &**r));
                (sink, result)
            })
            .await
            {
                Ok((sink, result)) => {
                    if let Err(e) = result {
                        tracing::error!(
                            "flow log: writing {}: {e}",
                            self.shared.config.file.path.display()
                        );
                        self.table.unwritten(batch.records.iter().map(|r| &**r));
                    }
                    self.sink = Some(sink);
                }
                Err(e) => {
                    tracing::error!("flow log: the file writer failed: {e}");
                    self.table.unwritten(batch.records.iter().map(|r| &**r));
                }
            }
        } else {
            // The writer was lost to a panic: the file gets nothing more,
            // and every window says how much.
            self.table.unwritten(batch.records.iter().map(|r| &**r));
        }
        let slow_reader_lost = self.shared.fanout.publish(&batch);
        for observer in self.shared.observers() {
            observer.window(&batch.records, slow_reader_lost);
        }
    }
}

/// Waits until the ring buffer has data (never, without one), then takes
/// up to [`DRAIN_BATCH`] events into `table`. Readiness is cleared only
/// once the ring is empty, so an event that came meanwhile wakes us again.
async fn pump(ring: &mut Option<Ring>, table: &mut FlowTable, shared: &Shared) {
    let Some(ring) = ring else {
        return std::future::pending::<()>().await;
    };
    let mut guard = match ring.readable_mut().await {
        Ok(guard) => guard,
        Err(e) => {
            tracing::error!("flow log: polling the ring buffer: {e}");
            return std::future::pending::<()>().await;
        }
    };
    if take(guard.get_inner_mut(), table, shared, DRAIN_BATCH) {
        guard.clear_ready();
    }
}

/// Takes every event there is into `table`, without waiting.
fn drain(ring: &mut Option<Ring>, table: &mut FlowTable, shared: &Shared) {
    if let Some(ring) = ring {
        take(ring.get_mut(), table, shared, usize::MAX);
    }
}

/// Takes up to `max` events, and shows them to `monitor` subscribers if
/// there are any; true when the ring is empty.
fn take(events: &mut FlowEvents, table: &mut FlowTable, shared: &Shared, max: usize) -> bool {
    let clock = shared.monitor.is_active().then(KtimeClock::now);
    for _ in 0..max {
        let event = match events.take() {
            None => return true,
            Some(None) => {
                tracing::debug!("flow log: skipping an unknown event");
                continue;
            }
            Some(Some(event)) => event,
        };
        match &event {
            Event::CtNew(k, e) => table.ct(k, e, Origin::Created),
            Event::CtEnd(k, e) | Event::CtCut(k, e) => table.ct(k, e, Origin::Ended),
            Event::RejectNew(k, e) => table.reject(k, e, Origin::Created),
        }
        if let Some(clock) = &clock {
            if let Some(seen) = monitor::describe(&event, &shared.catalog(), clock) {
                shared.monitor.publish(seen);
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_line_up_on_the_clock() {
        let w = Duration::from_secs(60);
        assert_eq!(next_boundary(Duration::from_secs(120), w), 180);
        assert_eq!(next_boundary(Duration::from_millis(179_999), w), 180);
        assert_eq!(
            next_boundary(Duration::from_secs(1), Duration::from_secs(1)),
            2
        );
        assert_eq!(
            next_boundary(Duration::from_millis(1500), Duration::from_secs(1)),
            2
        );
        // A zero window (never configured so) still moves on.
        assert_eq!(next_boundary(Duration::from_secs(5), Duration::ZERO), 6);
    }
}
