//! Flow logs (SPEC §7, `docs/FLOWLOGS.md`): one record per (ENI,
//! direction, protocol, endpoints, action) per capture window, with exact
//! packet and byte counts, to a rotated JSON-lines file and to every
//! `filterctl flows --follow` client.
//!
//! ```text
//!  data plane ──FILTER_EVENTS (ring buffer, AsyncFd)──▶ Collector ──▶ FlowTable
//!     FILTER_CT / FILTER_REJECTS / FILTER_FLOWLOSS ──scan at each boundary──┘
//!                                                            │ window records
//!                                     FileSink (rotated) ◀───┴───▶ Fanout ──▶ --follow clients
//! ```
//!
//! - [`window`]: the flows known and the records of one window (pure).
//! - [`catalog`]: names for interface indexes and counter slots.
//! - [`collector`]: the task that ties them together.
//! - [`sink`]: the file, its rotation, reading it back.
//! - [`fanout`]: the bounded broadcast to `--follow` clients.
//! - [`record`]: the text form, JSON lines and the `flows` filters.
//! - [`reported`]: what was reported, saved for the next start.
//!
//! [`FlowLog`] is the daemon's [`FlowSource`]: the daemon tells it about
//! each running generation and each new ring buffer, and asks it for
//! history and subscriptions.
pub mod catalog;
pub mod collector;
pub mod fanout;
pub mod monitor;
pub mod record;
pub mod reported;
pub mod sink;
pub mod window;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use thiserror::Error;
use tokio::sync::Notify;

pub use self::{
    catalog::{Catalog, EniMeta, FlowNames},
    collector::Collector,
    fanout::{Fanout, Subscription},
    monitor::{Monitor, MonitorFilter, MonitorSubscription},
    record::FlowFilter,
    sink::{FileConfig, FileSink},
};
use crate::{
    api::{FlowRecord, FlowsParams, MonitorParams},
    dataplane::FlowEvents,
};

#[derive(Debug, Error)]
pub enum FlowError {
    /// A filter does not parse (`action`, `proto`).
    #[error("{0}")]
    InvalidParams(String),
    #[error("{0}")]
    Failed(String),
}

/// Where the daemon's `flows` answers come from, and what it tells the
/// flow log. [`FlowLog`] is the real one; a daemon without one answers
/// `flows` with [`ErrorCode::NotImplemented`](crate::api::ErrorCode).
pub trait FlowSource: Send + Sync + 'static {
    /// The newest records of the file that match `query` (`limit` of them),
    /// oldest first. Blocking (reads files).
    fn flows(&self, query: &FlowsParams) -> Result<Vec<FlowRecord>, FlowError>;

    /// A subscription to the records of every window from now on that
    /// match `query`.
    fn follow(&self, query: &FlowsParams) -> Result<Subscription, FlowError>;

    /// A subscription to verdict events as they happen (`monitor`). A
    /// source without them says so.
    fn monitor(&self, _query: &MonitorParams) -> Result<MonitorSubscription, FlowError> {
        Err(FlowError::Failed(
            "this flow source has no live events".to_owned(),
        ))
    }

    /// The running generation changed (`None`: nothing runs any more).
    fn generation(&self, _names: Option<FlowNames>) {}

    /// A data plane was loaded: its event ring buffer.
    fn events(&self, _events: FlowEvents) {}
}

/// Hears every window's records as the collector closes it, and how many
/// records slow `--follow` clients missed of it (`crate::metrics`).
/// Called on the collector's task: it must not block.
pub trait WindowObserver: Send + Sync + 'static {
    fn window(&self, records: &[Arc<FlowRecord>], slow_reader_lost: u64);
}

/// The default size at which the flow-log file is rotated.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// The default number of rotated files kept.
pub const DEFAULT_KEEP_FILES: usize = 5;
/// How many windows a `--follow` client may fall behind before it misses
/// records (and is told so).
pub const DEFAULT_FOLLOW_QUEUE: usize = 8;

/// Settings of the flow log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowLogConfig {
    /// Where the data plane's maps are pinned.
    pub pin_dir: PathBuf,
    pub file: FileConfig,
    /// `--capture-window`; a document's `flow_log.capture_window_s` wins.
    pub capture_window: Duration,
    /// Windows a `--follow` client may fall behind.
    pub follow_queue: usize,
    /// Where what was reported is saved at every window boundary, for the
    /// next start (`reported`); `None` saves nothing.
    pub reported: Option<PathBuf>,
}

impl FlowLogConfig {
    pub fn new(pin_dir: impl Into<PathBuf>, path: impl Into<PathBuf>) -> Self {
        FlowLogConfig {
            pin_dir: pin_dir.into(),
            file: FileConfig {
                path: path.into(),
                max_bytes: DEFAULT_MAX_FILE_BYTES,
                keep: DEFAULT_KEEP_FILES,
            },
            capture_window: Duration::from_secs(60),
            follow_queue: DEFAULT_FOLLOW_QUEUE,
            reported: None,
        }
    }
}

/// What the service and its collector share.
pub(crate) struct Shared {
    config: FlowLogConfig,
    catalog: Mutex<Catalog>,
    /// A ring buffer handed over by the daemon, for the collector to take.
    ring: Mutex<Option<FlowEvents>>,
    ring_ready: Notify,
    fanout: Fanout,
    monitor: Monitor,
    observers: Mutex<Vec<Arc<dyn WindowObserver>>>,
    /// Serializes file rotation with history reads.
    rotation: Arc<Mutex<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn catalog(&self) -> MutexGuard<'_, Catalog> {
        lock(&self.catalog)
    }

    fn take_ring(&self) -> Option<FlowEvents> {
        lock(&self.ring).take()
    }

    fn observers(&self) -> Vec<Arc<dyn WindowObserver>> {
        lock(&self.observers).clone()
    }
}

/// The flow log of one daemon (see the module docs).
pub struct FlowLog {
    shared: Arc<Shared>,
}

impl FlowLog {
    /// The service, and its collector to run (`tokio::spawn(collector.run(
    /// shutdown))`).
    pub fn new(config: FlowLogConfig) -> (Arc<FlowLog>, Collector) {
        let rotation = Arc::new(Mutex::new(()));
        let sink = FileSink::new(config.file.clone(), Arc::clone(&rotation));
        let shared = Arc::new(Shared {
            fanout: Fanout::new(config.follow_queue),
            config,
            catalog: Mutex::new(Catalog::default()),
            ring: Mutex::new(None),
            ring_ready: Notify::new(),
            monitor: Monitor::default(),
            observers: Mutex::new(Vec::new()),
            rotation,
        });
        let collector = Collector::new(Arc::clone(&shared), sink);
        (Arc::new(FlowLog { shared }), collector)
    }

    /// Adds an observer of every window's records.
    pub fn observe(&self, observer: Arc<dyn WindowObserver>) {
        lock(&self.shared.observers).push(observer);
    }

    /// How many `--follow` clients are subscribed.
    pub fn followers(&self) -> usize {
        self.shared.fanout.len()
    }
}

impl FlowSource for FlowLog {
    fn flows(&self, query: &FlowsParams) -> Result<Vec<FlowRecord>, FlowError> {
        let filter = FlowFilter::new(query).map_err(|e| FlowError::InvalidParams(e.message))?;
        let limit = query.limit.unwrap_or(if query.follow {
            0
        } else {
            crate::api::DEFAULT_FLOWS_LIMIT
        });
        sink::history(
            &self.shared.config.file,
            &self.shared.rotation,
            &filter,
            limit,
        )
        .map_err(|e| {
            FlowError::Failed(format!(
                "reading {}: {e}",
                self.shared.config.file.path.display()
            ))
        })
    }

    fn follow(&self, query: &FlowsParams) -> Result<Subscription, FlowError> {
        let filter = FlowFilter::new(query).map_err(|e| FlowError::InvalidParams(e.message))?;
        Ok(self.shared.fanout.subscribe(filter))
    }

    fn monitor(&self, query: &MonitorParams) -> Result<MonitorSubscription, FlowError> {
        let filter = MonitorFilter::new(query).map_err(|e| FlowError::InvalidParams(e.message))?;
        Ok(self.shared.monitor.subscribe(filter))
    }

    fn generation(&self, names: Option<FlowNames>) {
        self.shared.catalog().update(names.as_ref());
    }

    fn events(&self, events: FlowEvents) {
        *lock(&self.shared.ring) = Some(events);
        self.shared.ring_ready.notify_one();
    }
}
