//! Live records for `filterctl flows --follow`: a bounded broadcast.
//!
//! Each subscriber has its own queue of at most `capacity` windows. The
//! collector never waits for a subscriber: a window that does not fit in
//! a full queue is dropped for that subscriber alone, counted per (ENI,
//! window), and the subscriber gets `SKIPDATA` records saying how many of
//! its records it missed as soon as it reads again. Slow subscribers slow
//! down nobody: not the data plane, not the file, not other subscribers.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::sync::mpsc;

use super::{
    catalog::EniMeta,
    record::FlowFilter,
    window::{skipdata, Window},
};
use crate::api::{FlowRecord, SkipReason};

/// One window's records, shared by every subscriber.
#[derive(Clone, Debug)]
pub struct Batch {
    pub window: Window,
    pub records: Arc<[Arc<FlowRecord>]>,
}

/// (ENI, vSwitch, VPC, window start, window end) of lost records.
type LostKey = (String, Option<String>, Option<String>, u64, u64);

/// Records a subscriber missed, by (ENI, window).
type Lost = Arc<Mutex<BTreeMap<LostKey, u64>>>;

/// The fan-out's end of a subscription (the sender lives only here, so
/// the subscriber sees the end of the stream when the fan-out goes).
struct Subscriber {
    filter: FlowFilter,
    tx: mpsc::Sender<Vec<Arc<FlowRecord>>>,
    lost: Lost,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The subscribers.
pub struct Fanout {
    capacity: usize,
    subscribers: Mutex<Vec<Subscriber>>,
}

impl Fanout {
    /// A fan-out whose subscribers may fall `capacity` windows behind.
    pub fn new(capacity: usize) -> Self {
        Fanout {
            capacity: capacity.max(1),
            subscribers: Mutex::new(Vec::new()),
        }
    }

    /// A new subscriber to the records that pass `filter`.
    pub fn subscribe(&self, filter: FlowFilter) -> Subscription {
        let (tx, rx) = mpsc::channel(self.capacity);
        let lost = Lost::default();
        lock(&self.subscribers).push(Subscriber {
            filter,
            tx,
            lost: Arc::clone(&lost),
        });
        Subscription { rx, lost }
    }

    /// How many subscribers are connected.
    pub fn len(&self) -> usize {
        lock(&self.subscribers).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offers one window's records to every subscriber, without waiting;
    /// returns how many records subscribers missed (their queue was full).
    pub fn publish(&self, batch: &Batch) -> u64 {
        let mut missed = 0;
        let mut subscribers = lock(&self.subscribers);
        subscribers.retain(|sub| {
            let mine: Vec<Arc<FlowRecord>> = batch
                .records
                .iter()
                .filter(|r| sub.filter.matches(r))
                .cloned()
                .collect();
            if mine.is_empty() {
                return !sub.tx.is_closed();
            }
            match sub.tx.try_send(mine) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(mine)) => {
                    missed += mine.len() as u64;
                    let mut lost = lock(&sub.lost);
                    for r in mine {
                        let key = (
                            r.eni_id.clone(),
                            r.vswitch_id.clone(),
                            r.vpc_id.clone(),
                            batch.window.start,
                            batch.window.end,
                        );
                        *lost.entry(key).or_default() += 1;
                    }
                    true
                }
                // The subscriber is gone.
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        missed
    }
}

/// A subscriber's end: the windows of records meant for it.
pub struct Subscription {
    rx: mpsc::Receiver<Vec<Arc<FlowRecord>>>,
    lost: Lost,
}

impl Subscription {
    /// The next records: a queued window, then (once the subscriber has
    /// caught up) `SKIPDATA` records for whatever it missed, one per ENI
    /// and window. `None` once the flow log has stopped.
    pub async fn next(&mut self) -> Option<Vec<FlowRecord>> {
        if let Ok(batch) = self.rx.try_recv() {
            return Some(batch.iter().map(|r| (**r).clone()).collect());
        }
        let lost = self.take_lost();
        if !lost.is_empty() {
            return Some(lost);
        }
        let batch = self.rx.recv().await?;
        Some(batch.iter().map(|r| (**r).clone()).collect())
    }

    /// `SKIPDATA` records for the records this subscriber missed.
    fn take_lost(&self) -> Vec<FlowRecord> {
        let lost = std::mem::take(&mut *lock(&self.lost));
        lost.into_iter()
            .map(|((eni_id, vswitch_id, vpc_id, start, end), n)| {
                let eni = EniMeta {
                    id: eni_id,
                    vswitch_id,
                    vpc_id,
                };
                skipdata(&eni, Window { start, end }, SkipReason::SlowReader, n)
            })
            .collect()
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;
    use crate::{
        api::{FlowAction, FlowsParams, LogStatus},
        flowlog::record::tests::tcp_record,
    };

    fn batch(window: u64, enis: &[&str], action: FlowAction) -> Batch {
        let records = enis
            .iter()
            .map(|e| {
                Arc::new(FlowRecord {
                    eni_id: (*e).into(),
                    // Within the window, not its bounds.
                    start: window + 1,
                    end: window + 1,
                    action: Some(action),
                    ..tcp_record()
                })
            })
            .collect::<Vec<_>>()
            .into();
        Batch {
            window: Window {
                start: window,
                end: window + 2,
            },
            records,
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_gets_skipdata_and_slows_no_one() {
        let fanout = Fanout::new(2);
        let mut slow = fanout.subscribe(FlowFilter::default());
        let mut fast = fanout.subscribe(FlowFilter::default());
        let rejects = FlowFilter::new(&FlowsParams {
            action: Some("REJECT".into()),
            ..FlowsParams::default()
        })
        .unwrap();
        let mut filtered = fanout.subscribe(rejects);
        for w in 0..5 {
            fanout.publish(&batch(w, &["eni-a", "eni-a", "eni-b"], FlowAction::Accept));
            // The fast one keeps up; publishing never waited.
            let got = fast.next().await.unwrap();
            assert_eq!(got.len(), 3);
            assert!(got.iter().all(|r| r.start == w + 1));
        }
        // The slow one: the two windows that fit, then what it missed.
        for w in 0..2 {
            let got = slow.next().await.unwrap();
            assert_eq!(got.len(), 3);
            assert_eq!(got[0].start, w + 1);
        }
        let skip = slow.next().await.unwrap();
        assert_eq!(skip.len(), 6, "{skip:#?}");
        assert!(skip.iter().all(|r| r.log_status == LogStatus::Skipdata
            && r.skip_reason == Some(SkipReason::SlowReader)));
        // Per ENI and window (the window's bounds), how many.
        let a: Vec<(u64, u64, Option<u64>)> = skip
            .iter()
            .filter(|r| r.eni_id == "eni-a")
            .map(|r| (r.start, r.end, r.skipped))
            .collect();
        assert_eq!(a, vec![(2, 4, Some(2)), (3, 5, Some(2)), (4, 6, Some(2))]);
        assert!(skip
            .iter()
            .filter(|r| r.eni_id == "eni-b")
            .all(|r| r.skipped == Some(1)));
        // Caught up: the next window comes through.
        fanout.publish(&batch(5, &["eni-a"], FlowAction::Accept));
        assert_eq!(slow.next().await.unwrap()[0].start, 6);
        // The filtered subscriber matched nothing, so it missed nothing.
        fanout.publish(&batch(6, &["eni-a"], FlowAction::Reject));
        let got = filtered.next().await.unwrap();
        assert_eq!((got.len(), got[0].start), (1, 7));
    }

    #[tokio::test]
    async fn gone_subscribers_are_dropped_and_a_gone_fanout_ends_streams() {
        let fanout = Fanout::new(4);
        let sub = fanout.subscribe(FlowFilter::default());
        let mut keep = fanout.subscribe(FlowFilter::default());
        assert_eq!(fanout.len(), 2);
        drop(sub);
        fanout.publish(&batch(0, &["eni-a"], FlowAction::Accept));
        assert_eq!(fanout.len(), 1);
        drop(fanout);
        assert_eq!(keep.next().await.map(|b| b.len()), Some(1));
        assert!(keep.next().await.is_none());
    }
}
