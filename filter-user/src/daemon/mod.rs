//! `filterd`: the daemon that orchestrates the rest (SPEC §4, §5). It
//! decides what to enforce and when; the evaluator, the compiler, the data
//! plane and the flow log do the work.
//!
//! - [`Daemon`]: the running generation, the state directory and the
//!   [`Enforcer`]; one file per API call (`apply.rs`, `rollback.rs`,
//!   `status.rs`, `explain.rs`, `counters.rs`, `detach.rs`, `flows.rs`) and
//!   start-up (`restore.rs`); interfaces that come and go (`links.rs`).
//!   Applies are serialized and all-or-nothing.
//! - [`server::serve`]: the socket server; callable from tests with any
//!   listener and any shutdown future.
//! - [`store`]: saved generations; [`lock`]: the directory locks;
//!   [`socket`]: creating the socket; [`auth`]: who may change things.
//! - [`enforcer`]: the trait over the data plane
//!   ([`crate::dataplane::KernelEnforcer`] implements it).
//! - [`validator`]: document → rule set; [`library`]: the real one.
mod apply;
pub mod auth;
mod counters;
mod detach;
pub mod enforcer;
mod explain;
pub mod fd_limit;
mod flows;
pub mod library;
mod links;
pub mod lock;
mod memory;
mod restore;
mod rollback;
pub mod server;
mod slots;
pub mod socket;
mod source;
mod status;
pub mod store;
pub mod validator;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, RwLock},
    time::{Duration, Instant},
};

use thiserror::Error;

pub use self::{
    apply::{next_generation, summarize},
    enforcer::{Compiled, DataplaneStatus, EnforceError, Enforcer, ReasonCounter},
    lock::{DirLocks, LockError},
    restore::conntrack_size_at_start,
    server::{serve, ServerConfig, DEFAULT_MAX_CLIENTS},
    store::{GenerationRecord, Origin, StateStore, StoreError},
    validator::Validator,
};
use crate::{
    api::{ApiError, ErrorCode},
    clock::unix_now,
    compile::SlotTable,
    flowlog::{FlowNames, FlowSource},
    ruleset::Ruleset,
};

/// How many applied generations the state directory keeps (SPEC §4).
pub const KEEP_GENERATIONS: usize = 10;

/// Where the daemon keeps things, and the flow-log settings (SPEC §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    pub state_dir: PathBuf,
    pub pin_dir: PathBuf,
    /// The flow-log file (`crate::flowlog`, which `filterd` wires in with
    /// [`Daemon::with_flow_source`]).
    pub flow_log: PathBuf,
    pub capture_window: Duration,
    pub keep_generations: usize,
}

impl DaemonConfig {
    pub fn new(state_dir: impl Into<PathBuf>, pin_dir: impl Into<PathBuf>) -> Self {
        DaemonConfig {
            state_dir: state_dir.into(),
            pin_dir: pin_dir.into(),
            flow_log: PathBuf::from("/var/log/filterd/flows.log"),
            capture_window: Duration::from_secs(60),
            keep_generations: KEEP_GENERATIONS,
        }
    }
}

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The document was rejected: every error, one per entry.
    #[error("the document was rejected with {} error(s); nothing changed", .0.len())]
    Invalid(Vec<String>),
    #[error("{0}")]
    Enforce(#[from] EnforceError),
    #[error("state directory: {0}")]
    Store(#[from] StoreError),
    /// Saving a new generation's record failed (a full disk, a read-only
    /// state directory): nothing was enforced, and no part of the record
    /// stays to be restored.
    #[error(
        "saving generation {generation} in the state directory failed, so it was not enforced \
         ({}): {source}",
        .running.map_or("nothing runs".to_owned(), |g| format!("generation {g} keeps running"))
    )]
    Save {
        generation: u32,
        running: Option<u32>,
        source: StoreError,
    },
    #[error("no generation is running (nothing applied yet, or detached)")]
    NoGeneration,
    #[error("generation {generation} is not saved; saved generations: {saved:?}")]
    NotSaved { generation: u32, saved: Vec<u32> },
    #[error("no saved generation to roll back to")]
    NothingToRollBack,
    #[error("{0}")]
    Params(String),
    #[error(
        "generation {expected} is not the one enforced ({}); nothing changed",
        .running.map_or("none".to_owned(), |g| format!("generation {g}"))
    )]
    GenerationMismatch { expected: u32, running: Option<u32> },
    #[error("{0}")]
    NotImplemented(String),
    /// `apply` or `rollback` while documents come from elsewhere.
    #[error(
        "this daemon takes its rules from etcd at {0}; apply and rollback are refused here \
         (change the keys, e.g. with `filterctl fleet put`)"
    )]
    ExternalSource(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<DaemonError> for ApiError {
    fn from(e: DaemonError) -> ApiError {
        let code = match &e {
            DaemonError::Invalid(errors) => {
                return ApiError::new(ErrorCode::InvalidDocument, e.to_string())
                    .with_details(errors.clone());
            }
            DaemonError::Enforce(_) => ErrorCode::EnforcementFailed,
            DaemonError::Store(_) | DaemonError::Save { .. } => ErrorCode::StateFailed,
            DaemonError::NoGeneration => ErrorCode::NoGeneration,
            DaemonError::NotSaved { .. } | DaemonError::NothingToRollBack => ErrorCode::NotFound,
            DaemonError::Params(_) => ErrorCode::InvalidParams,
            DaemonError::GenerationMismatch { .. } => ErrorCode::GenerationMismatch,
            DaemonError::NotImplemented(_) => ErrorCode::NotImplemented,
            DaemonError::ExternalSource(_) => ErrorCode::ExternalSource,
            DaemonError::Lock(_) | DaemonError::Internal(_) => ErrorCode::Internal,
        };
        ApiError::new(code, e.to_string())
    }
}

/// How an apply or a rollback ended, for an [`ApplyObserver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    Ok,
    /// The document was invalid; nothing changed.
    Rejected,
    /// Anything else failed (the data plane, the state directory).
    Failed,
}

/// Hears about every apply and rollback that was meant to change
/// something (not dry runs): `crate::metrics` counts and times them.
pub trait ApplyObserver: Send + Sync + 'static {
    fn applied(&self, outcome: ApplyOutcome, took: Duration);
}

/// The generation being enforced.
#[derive(Debug)]
pub struct Running {
    pub generation: u32,
    /// Unix seconds.
    pub applied_at: u64,
    /// [`crate::digest::document_digest`] of the document, computed once:
    /// `status` shows it on every call. The text itself is not kept: `get`
    /// reads it from the generation's saved record.
    pub digest: Option<String>,
    pub ruleset: Arc<Ruleset>,
}

impl Running {
    pub fn new(
        generation: u32,
        applied_at: u64,
        digest: Option<String>,
        ruleset: Ruleset,
    ) -> Running {
        Running {
            generation,
            applied_at,
            digest,
            ruleset: Arc::new(ruleset),
        }
    }
}

/// A document's text and its digest, taken once per apply: the audit line
/// and `status` both show it, and at 100k rules a digest costs 0.15 s.
#[derive(Clone, Debug)]
pub struct Document {
    pub text: String,
    /// [`crate::digest::document_digest`] of `text`.
    pub digest: Option<String>,
}

impl Document {
    pub fn new(text: String) -> Document {
        Document {
            digest: crate::digest::document_digest(&text),
            text,
        }
    }
}

/// What [`Daemon::start`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Started {
    /// `--ruleset` was applied as this generation.
    Applied(u32),
    /// The saved generation runs in the data plane already and was taken
    /// over as it is.
    Adopted(u32),
    /// The saved generation `from` was applied again as `generation`.
    Restored { from: u32, generation: u32 },
    /// The saved generation could not be restored (see `status`).
    RestoreFailed(String),
    /// Nothing saved, or detached.
    Nothing,
}

/// The parts only one apply at a time may touch.
struct Core<E> {
    enforcer: E,
    store: StateStore,
    /// The slot table of the newest saved generation.
    slots: SlotTable,
}

pub struct Daemon<E: Enforcer> {
    config: DaemonConfig,
    validator: Arc<dyn Validator>,
    flow_source: Option<Arc<dyn FlowSource>>,
    apply_observer: Option<Arc<dyn ApplyObserver>>,
    core: Mutex<Core<E>>,
    /// The saved records, read without the core's lock (`get`).
    records: StateStore,
    running: RwLock<Option<Arc<Running>>>,
    restore_error: RwLock<Option<String>>,
    /// The data-plane read that concurrent `status` calls share.
    status_read: status::SharedRead,
    /// Set when documents come from etcd ([`source`]).
    external_source: Option<String>,
    started_at: u64,
    _locks: DirLocks,
}

impl<E: Enforcer> Daemon<E> {
    /// A daemon over `enforcer`, holding `locks` (on `config.state_dir` and
    /// `config.pin_dir`) for as long as it lives. Nothing is enforced until
    /// [`Daemon::start`].
    pub fn open(
        config: DaemonConfig,
        locks: DirLocks,
        enforcer: E,
        validator: Arc<dyn Validator>,
    ) -> Result<Self, DaemonError> {
        let store = StateStore::open(&config.state_dir)?;
        let (newest, _) = store.newest()?;
        let slots = newest.map(|r| r.slots).unwrap_or_default();
        Ok(Daemon {
            config,
            validator,
            flow_source: None,
            apply_observer: None,
            records: store.clone(),
            core: Mutex::new(Core {
                enforcer,
                store,
                slots,
            }),
            running: RwLock::new(None),
            restore_error: RwLock::new(None),
            status_read: status::SharedRead::default(),
            external_source: None,
            started_at: unix_now(),
            _locks: locks,
        })
    }

    /// Where `flows` gets its records, and what hears about each running
    /// generation ([`crate::flowlog::FlowLog`]).
    pub fn with_flow_source(mut self, source: Arc<dyn FlowSource>) -> Self {
        self.flow_source = Some(source);
        self
    }

    /// Who hears how each apply and rollback ended ([`ApplyObserver`]).
    pub fn with_apply_observer(mut self, observer: Arc<dyn ApplyObserver>) -> Self {
        self.apply_observer = Some(observer);
        self
    }

    /// Tells the apply observer how a call that began at `started` ended.
    pub(crate) fn observe_apply<T>(&self, result: &Result<T, DaemonError>, started: Instant) {
        let Some(observer) = &self.apply_observer else {
            return;
        };
        let outcome = match result {
            Ok(_) => ApplyOutcome::Ok,
            Err(DaemonError::Invalid(_)) => ApplyOutcome::Rejected,
            Err(_) => ApplyOutcome::Failed,
        };
        observer.applied(outcome, started.elapsed());
    }

    /// Tells the flow source what runs now (and hands it the event ring
    /// buffer of a data plane loaded since the last time).
    fn publish_flows(&self, core: &mut Core<E>) {
        let Some(source) = &self.flow_source else {
            return;
        };
        if let Some(ring) = core.enforcer.take_flow_events() {
            source.events(ring);
        }
        let reasons = core.enforcer.slot_reasons();
        let names = self
            .running()
            .map(|r| FlowNames::new(r.generation, &r.ruleset, &reasons));
        source.generation(names);
    }

    pub fn config(&self) -> &DaemonConfig {
        &self.config
    }

    fn core(&self) -> MutexGuard<'_, Core<E>> {
        // A panic in the middle of an apply leaves the enforcer in a state
        // the next apply will reconcile (it diffs attachments and writes a
        // whole generation), so go on rather than wedge the daemon.
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The running generation, if any.
    pub fn running(&self) -> Option<Arc<Running>> {
        self.running
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_running(&self, running: Option<Arc<Running>>) {
        *self.running.write().unwrap_or_else(|p| p.into_inner()) = running;
    }

    /// Runs `f` on a blocking thread (validation, compilation and map
    /// access can take a while; the async workers keep serving).
    async fn blocking<T, F>(self: &Arc<Self>, f: F) -> Result<T, DaemonError>
    where
        F: FnOnce(&Daemon<E>) -> Result<T, DaemonError> + Send + 'static,
        T: Send + 'static,
    {
        let daemon = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&daemon))
            .await
            .map_err(|e| DaemonError::Internal(format!("a worker failed: {e}")))?
    }
}

/// The shortest and longest `--capture-window` (SPEC §4, §7).
pub const CAPTURE_WINDOW_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(600));

/// Parses `--capture-window`: `60s`, `1m`, `1m30s`, `90` (seconds), within
/// [`CAPTURE_WINDOW_RANGE`].
pub fn parse_capture_window(text: &str) -> Result<Duration, String> {
    let window = crate::config::parse_duration(text)?;
    let (min, max) = CAPTURE_WINDOW_RANGE;
    if window < min || window > max {
        return Err(format!(
            "{text:?}: the capture window must be between {}s and {}s",
            min.as_secs(),
            max.as_secs()
        ));
    }
    Ok(window)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_windows() {
        let ok = |s: &str| parse_capture_window(s).map(|d| d.as_secs());
        assert_eq!(ok("60s"), Ok(60));
        assert_eq!(ok("1m"), Ok(60));
        assert_eq!(ok("1m30s"), Ok(90));
        assert_eq!(ok("1s"), Ok(1));
        assert_eq!(ok("45"), Ok(45));
        assert_eq!(ok("10m"), Ok(600));
        for bad in ["", "0s", "500ms", "11m", "1h", "s", "1x", "1m30", "-1s"] {
            assert!(parse_capture_window(bad).is_err(), "{bad}");
        }
    }
}
