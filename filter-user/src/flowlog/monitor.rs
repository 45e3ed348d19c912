//! `filterctl monitor` (SPEC §9): each flow's first verdict as the
//! collector reads it from the ring buffer, to every subscriber whose
//! filters it passes, without waiting for a capture window.
//!
//! Bounded like [`super::fanout`]: each subscriber has a queue of
//! [`QUEUE_EVENTS`]; an event that does not fit is dropped for that
//! subscriber alone and counted, and the subscriber's next line says how
//! many it missed. The collector never waits for anyone, and while nobody
//! subscribes it does not even name the events.
use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use filter_common::{ACTION_ACCEPT, PROTO_TCP, PROTO_UDP, RULE_SLOT_NONE};
use ipnet::IpNet;
use tokio::sync::mpsc;

use super::{
    catalog::Catalog,
    record::{Flow, FlowFilter},
    window::{ct_way, direction, eni_meta, ip, rule_name, End},
};
use crate::{
    api::{ApiError, FlowAction, MonitorEvent, MonitorKind, MonitorParams, MonitorResult},
    clock::KtimeClock,
    dataplane::Event,
};

/// Events a subscriber may fall behind before it misses some.
pub const QUEUE_EVENTS: usize = 4096;
/// At most this many events go in one line of the stream.
const LINE_EVENTS: usize = 256;

/// The filters of a `monitor` request, parsed once.
#[derive(Clone, Debug, Default)]
pub struct MonitorFilter {
    flow: FlowFilter,
    src: Option<IpNet>,
    dst: Option<IpNet>,
    rule: Option<String>,
}

impl MonitorFilter {
    pub fn new(params: &MonitorParams) -> Result<MonitorFilter, ApiError> {
        Ok(MonitorFilter {
            flow: FlowFilter::new(&params.flow_filters())?,
            src: params.src,
            dst: params.dst,
            rule: params.rule.clone(),
        })
    }

    pub fn matches(&self, e: &MonitorEvent) -> bool {
        let flow = Flow {
            eni: &e.eni_id,
            action: Some(e.action),
            direction: Some(e.direction),
            proto: Some(e.protocol),
            src: (Some(e.srcaddr), e.srcport),
            dst: (Some(e.dstaddr), e.dstport),
        };
        self.flow.matches_flow(&flow)
            && self.src.is_none_or(|n| n.contains(&e.srcaddr))
            && self.dst.is_none_or(|n| n.contains(&e.dstaddr))
            && self
                .rule
                .as_ref()
                .is_none_or(|r| e.rule_id.as_ref() == Some(r))
    }
}

struct Subscriber {
    filter: MonitorFilter,
    tx: mpsc::Sender<Arc<MonitorEvent>>,
    missed: Arc<AtomicU64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The subscribers.
#[derive(Default)]
pub struct Monitor {
    subscribers: Mutex<Vec<Subscriber>>,
    count: AtomicUsize,
}

impl Monitor {
    pub fn subscribe(&self, filter: MonitorFilter) -> MonitorSubscription {
        let (tx, rx) = mpsc::channel(QUEUE_EVENTS);
        let missed = Arc::new(AtomicU64::new(0));
        let mut subscribers = lock(&self.subscribers);
        subscribers.push(Subscriber {
            filter,
            tx,
            missed: Arc::clone(&missed),
        });
        self.count.store(subscribers.len(), Ordering::Relaxed);
        MonitorSubscription { rx, missed }
    }

    /// Whether anyone listens (the collector names events only then).
    pub fn is_active(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// Offers one event to every subscriber, without waiting.
    pub fn publish(&self, event: MonitorEvent) {
        let event = Arc::new(event);
        let mut subscribers = lock(&self.subscribers);
        subscribers.retain(|sub| {
            if !sub.filter.matches(&event) {
                return !sub.tx.is_closed();
            }
            match sub.tx.try_send(Arc::clone(&event)) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    sub.missed.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        self.count.store(subscribers.len(), Ordering::Relaxed);
    }
}

/// A subscriber's end of the stream.
pub struct MonitorSubscription {
    rx: mpsc::Receiver<Arc<MonitorEvent>>,
    missed: Arc<AtomicU64>,
}

impl MonitorSubscription {
    /// The next line: the events queued (at least one, or a count of
    /// missed ones). `None` once the flow log has stopped.
    pub async fn next(&mut self) -> Option<MonitorResult> {
        let mut events = Vec::new();
        self.take_queued(&mut events);
        if events.is_empty() && self.missed.load(Ordering::Relaxed) == 0 {
            events.push((*self.rx.recv().await?).clone());
            self.take_queued(&mut events);
        }
        Some(MonitorResult {
            events,
            missed: self.missed.swap(0, Ordering::Relaxed),
        })
    }

    fn take_queued(&mut self, events: &mut Vec<MonitorEvent>) {
        while events.len() < LINE_EVENTS {
            match self.rx.try_recv() {
                Ok(e) => events.push((*e).clone()),
                Err(_) => break,
            }
        }
    }
}

/// An event's facts, before naming.
struct Seen {
    kind: MonitorKind,
    action: FlowAction,
    ifindex: u32,
    family: u8,
    proto: u8,
    src: End,
    dst: End,
    dir: u8,
    slot: u32,
    generation: u32,
    at_ns: u64,
}

/// What `event` means to a reader; `None` for what `monitor` does not show
/// (an idle connection's end).
pub fn describe(event: &Event, catalog: &Catalog, clock: &KtimeClock) -> Option<MonitorEvent> {
    let seen = match event {
        Event::CtNew(k, e) | Event::CtCut(k, e) => {
            let (src, dst, dir) = ct_way(k, e.orig_src_is_a != 0, e.orig_dir, false);
            let (kind, at_ns) = match event {
                Event::CtNew(..) => (MonitorKind::Admitted, e.created_ns),
                _ => (MonitorKind::Cut, e.last_seen_ns),
            };
            Seen {
                kind,
                action: FlowAction::Accept,
                ifindex: k.ifindex,
                family: k.family,
                proto: k.proto,
                src,
                dst,
                dir,
                slot: e.rule_slot,
                generation: e.generation,
                at_ns,
            }
        }
        Event::RejectNew(k, e) => {
            let (kind, action) = if k.action == ACTION_ACCEPT {
                (MonitorKind::Admitted, FlowAction::Accept)
            } else {
                (MonitorKind::Rejected, FlowAction::Reject)
            };
            Seen {
                kind,
                action,
                ifindex: k.ifindex,
                family: k.family,
                proto: k.proto,
                src: (k.src, k.sport),
                dst: (k.dst, k.dport),
                dir: k.dir,
                slot: e.rule_slot,
                generation: e.generation,
                at_ns: e.first_ns,
            }
        }
        Event::CtEnd(..) => return None,
    };
    let unix_ms = clock
        .to_system_time(seen.at_ns)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let ports = seen.proto == PROTO_TCP || seen.proto == PROTO_UDP;
    let addr = |end: &End| -> IpAddr { ip(seen.family, &end.0) };
    Some(MonitorEvent {
        time_ms: unix_ms,
        event: seen.kind,
        eni_id: eni_meta(catalog, seen.ifindex).id.clone(),
        direction: direction(seen.dir),
        srcaddr: addr(&seen.src),
        srcport: ports.then_some(seen.src.1),
        dstaddr: addr(&seen.dst),
        dstport: ports.then_some(seen.dst.1),
        protocol: seen.proto,
        action: seen.action,
        rule_id: (seen.slot != RULE_SLOT_NONE)
            .then(|| rule_name(catalog, seen.generation, seen.slot).to_string()),
        generation: seen.generation,
    })
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;
    use crate::ruleset::Direction;

    fn event(n: u16, rule: &str, action: FlowAction) -> MonitorEvent {
        MonitorEvent {
            time_ms: 1,
            event: MonitorKind::Admitted,
            eni_id: "eni-a".into(),
            direction: Direction::Ingress,
            srcaddr: "198.51.100.7".parse().unwrap(),
            srcport: Some(40000 + n),
            dstaddr: "192.0.2.10".parse().unwrap(),
            dstport: Some(80),
            protocol: 6,
            action,
            rule_id: Some(rule.into()),
            generation: 1,
        }
    }

    #[test]
    fn filters_match_prefixes_rules_and_the_flows_filters() {
        let f = |p: MonitorParams| MonitorFilter::new(&p).unwrap();
        let e = event(0, "http", FlowAction::Accept);
        assert!(f(MonitorParams::default()).matches(&e));
        let src = Some("198.51.100.0/24".parse().unwrap());
        assert!(f(MonitorParams {
            src,
            ..MonitorParams::default()
        })
        .matches(&e));
        let dst = Some("198.51.100.0/24".parse().unwrap());
        assert!(!f(MonitorParams {
            dst,
            ..MonitorParams::default()
        })
        .matches(&e));
        let rule = Some("http".to_owned());
        assert!(f(MonitorParams {
            rule,
            ..MonitorParams::default()
        })
        .matches(&e));
        let rule = Some("ssh".to_owned());
        assert!(!f(MonitorParams {
            rule,
            ..MonitorParams::default()
        })
        .matches(&e));
        let action = Some("REJECT".to_owned());
        assert!(!f(MonitorParams {
            action,
            ..MonitorParams::default()
        })
        .matches(&e));
        assert!(MonitorFilter::new(&MonitorParams {
            proto: Some("nope".into()),
            ..MonitorParams::default()
        })
        .is_err());
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_what_it_missed_and_slows_no_one() {
        let monitor = Monitor::default();
        assert!(!monitor.is_active());
        let mut slow = monitor.subscribe(MonitorFilter::default());
        let mut fast = monitor.subscribe(MonitorFilter::default());
        let rejects = MonitorFilter::new(&MonitorParams {
            action: Some("REJECT".into()),
            ..MonitorParams::default()
        })
        .unwrap();
        let mut filtered = monitor.subscribe(rejects);
        let extra = 10u16;
        let total = QUEUE_EVENTS as u16 + extra;
        let mut fast_got = 0;
        for n in 0..total {
            monitor.publish(event(n, "http", FlowAction::Accept));
            while let Ok(Some(line)) =
                tokio::time::timeout(std::time::Duration::ZERO, fast.next()).await
            {
                fast_got += line.events.len();
            }
        }
        assert_eq!(fast_got, usize::from(total));
        let mut got = 0;
        let mut missed = 0;
        while got + missed < usize::from(total) {
            let line = slow.next().await.unwrap();
            got += line.events.len();
            missed += usize::try_from(line.missed).unwrap();
        }
        assert_eq!((got, missed), (QUEUE_EVENTS, usize::from(extra)));
        monitor.publish(event(0, "default-deny", FlowAction::Reject));
        let line = filtered.next().await.unwrap();
        assert_eq!((line.events.len(), line.missed), (1, 0));
        drop(fast);
        drop(slow);
        drop(filtered);
        monitor.publish(event(1, "http", FlowAction::Accept));
        assert!(!monitor.is_active());
    }
}
