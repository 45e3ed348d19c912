//! The server's client slots, and which connection gives its slot up when
//! they are all taken.
//!
//! A connection holds one slot while it lives. When every slot is taken, a
//! new connection takes the slot of the connection that has waited longest
//! for a request (idle, or stalled half way through one), the way a web
//! server reuses idle keep-alive connections: a fresh `filterctl status` is
//! answered even when forgotten or stuck clients fill the daemon. A
//! connection at work (a request being answered, a `flows --follow` or
//! `monitor` stream) is never asked to leave (docs/API.md, "Clients").
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use tokio::{
    sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore},
    time::timeout,
};

/// The slots of one server.
#[derive(Debug)]
pub struct Slots {
    permits: Arc<Semaphore>,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    holders: HashMap<u64, Holder>,
}

#[derive(Debug)]
struct Holder {
    /// Since when it waits for a request; `None` while it works.
    waiting_since: Option<Instant>,
    evict: Arc<Notify>,
    /// The connection its slot goes to once it has closed.
    heir: Option<oneshot::Sender<OwnedSemaphorePermit>>,
}

impl Slots {
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            permits: Arc::new(Semaphore::new(max)),
            table: Mutex::new(Table::default()),
        })
    }

    /// A free slot, if there is one.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let permit = Arc::clone(&self.permits).try_acquire_owned().ok()?;
        Some(self.register(permit))
    }

    /// Asks the connection that has waited longest for a request, at least
    /// `min_wait`, to close and hand its slot to the caller. `None` when no
    /// connection qualifies.
    pub fn evict_one(self: &Arc<Self>, min_wait: Duration) -> Option<Heir> {
        let now = Instant::now();
        let mut table = self.lock();
        let oldest = table
            .holders
            .values_mut()
            .filter_map(|h| {
                let since = h.waiting_since?;
                (now.saturating_duration_since(since) >= min_wait).then_some((since, h))
            })
            .min_by_key(|(since, _)| *since);
        let (_, holder) = oldest?;
        // Not picked twice: it counts as working until it is gone.
        holder.waiting_since = None;
        // Handed over rather than released: a slot released to the
        // semaphore could go to the next connection accepted instead.
        let (tx, rx) = oneshot::channel();
        holder.heir = Some(tx);
        holder.evict.notify_one();
        Some(Heir {
            permit: rx,
            slots: Arc::clone(self),
        })
    }

    fn register(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Slot {
        let evict = Arc::new(Notify::new());
        let mut table = self.lock();
        let id = table.next;
        table.next += 1;
        table.holders.insert(
            id,
            Holder {
                waiting_since: None,
                evict: Arc::clone(&evict),
                heir: None,
            },
        );
        Slot {
            id,
            slots: Arc::clone(self),
            evict,
            permit: Some(permit),
        }
    }

    fn set_waiting(&self, id: u64, since: Option<Instant>) {
        if let Some(holder) = self.lock().holders.get_mut(&id) {
            holder.waiting_since = since;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection waiting for the slot of one that was asked to close.
#[derive(Debug)]
pub struct Heir {
    permit: oneshot::Receiver<OwnedSemaphorePermit>,
    slots: Arc<Slots>,
}

impl Heir {
    /// The slot, once its holder has closed (within `wait`).
    pub async fn slot(self, wait: Duration) -> Option<Slot> {
        let permit = timeout(wait, self.permit).await.ok()?.ok()?;
        Some(self.slots.register(permit))
    }
}

/// One connection's slot; dropping it frees the slot, or hands it to the
/// connection it was promised to.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    slots: Arc<Slots>,
    evict: Arc<Notify>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Slot {
    /// The connection waits for a request from now on: it may be asked to
    /// give its slot up.
    pub fn waiting(&self) {
        self.slots.set_waiting(self.id, Some(Instant::now()));
    }

    /// The connection works (answers a request, streams).
    pub fn working(&self) {
        self.slots.set_waiting(self.id, None);
    }

    /// Completes when another connection needs this slot.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let heir = self
            .slots
            .lock()
            .holders
            .remove(&self.id)
            .and_then(|h| h.heir);
        if let (Some(heir), Some(permit)) = (heir, self.permit.take()) {
            // An heir that gave up returns the permit, which then drops.
            let _ = heir.send(permit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_longest_waiting_connection_gives_its_slot_up() {
        let slots = Slots::new(2);
        let (Some(a), Some(b)) = (slots.try_take(), slots.try_take()) else {
            panic!("two free slots");
        };
        assert!(slots.try_take().is_none());
        // Neither waits for a request: nobody is asked to leave.
        assert!(slots.evict_one(Duration::ZERO).is_none());
        b.waiting();
        tokio::time::sleep(Duration::from_millis(5)).await;
        a.waiting();
        // Not long enough.
        assert!(slots.evict_one(Duration::from_secs(60)).is_none());
        let Some(b_heir) = slots.evict_one(Duration::ZERO) else {
            panic!("b waits");
        };
        timeout(Duration::from_secs(1), b.evicted())
            .await
            .unwrap_or_else(|_| panic!("b waited longest"));
        // b is not picked twice; a is next.
        let Some(a_heir) = slots.evict_one(Duration::ZERO) else {
            panic!("a waits");
        };
        timeout(Duration::from_secs(1), a.evicted())
            .await
            .unwrap_or_else(|_| panic!("a is next"));
        assert!(slots.evict_one(Duration::ZERO).is_none());
        // b's slot passes to its heir, not to whoever asks first.
        drop(b);
        assert!(slots.try_take().is_none());
        let b_next = b_heir.slot(Duration::from_secs(1)).await;
        assert!(b_next.is_some());
        // An heir that gave up: the slot goes back.
        drop(a_heir);
        drop(a);
        assert!(slots.try_take().is_some());
    }
}
