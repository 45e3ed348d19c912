//! `filterd`: the daemon that owns the kernel side (SPEC §4, §5).
//!
//! - [`Daemon`]: the running generation, the state directory and the
//!   [`Enforcer`], and one method per API call. Applies are serialized and
//!   all-or-nothing (`apply.rs`).
//! - [`server::serve`]: the socket server; callable from tests with any
//!   listener and any shutdown future.
//! - [`store`]: saved generations; [`lock`]: the directory locks;
//!   [`socket`]: creating the socket; [`auth`]: who may change things.
//! - [`enforcer`]: the trait over the data plane, and an in-memory one;
//!   [`kernel`]: the one over the eBPF data plane.
//! - [`validator`]: document → rule set; [`library`]: the real one.
//! - [`flows`]: the hook for flow logs ([`crate::flowlog`]).
mod apply;
pub mod auth;
pub mod enforcer;
pub mod flows;
pub mod kernel;
pub mod library;
pub mod lock;
pub mod server;
pub mod socket;
pub mod store;
pub mod validator;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use thiserror::Error;

pub use self::{
    apply::{next_generation, summarize},
    enforcer::{Compiled, DataplaneStatus, EnforceError, Enforcer, MemoryEnforcer},
    flows::{FlowError, FlowSource},
    lock::{DirLocks, LockError},
    server::{serve, ServerConfig},
    store::{GenerationRecord, Origin, StateStore, StoreError},
    validator::Validator,
};
use crate::{
    api::{
        ApiError, ApplyParams, ApplyResult, CountersParams, CountersResult, DaemonInfo,
        DetachResult, EniStatus, ErrorCode, ExplainParams, ExplainResult, FlowsParams, FlowsResult,
        GetResult, Method, RollbackParams, StatusResult, VersionResult, PROTOCOL_VERSION,
    },
    eval,
    ruleset::Ruleset,
    verdict::Verdict,
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
    #[error("no generation is running (nothing applied yet, or detached)")]
    NoGeneration,
    #[error("generation {generation} is not saved; saved generations: {saved:?}")]
    NotSaved { generation: u32, saved: Vec<u32> },
    #[error("no saved generation to roll back to")]
    NothingToRollBack,
    #[error("{0}")]
    Params(String),
    #[error("{0}")]
    NotImplemented(String),
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
            DaemonError::Store(_) => ErrorCode::StateFailed,
            DaemonError::NoGeneration => ErrorCode::NoGeneration,
            DaemonError::NotSaved { .. } | DaemonError::NothingToRollBack => ErrorCode::NotFound,
            DaemonError::Params(_) => ErrorCode::InvalidParams,
            DaemonError::NotImplemented(_) => ErrorCode::NotImplemented,
            DaemonError::Lock(_) | DaemonError::Internal(_) => ErrorCode::Internal,
        };
        ApiError::new(code, e.to_string())
    }
}

/// The generation being enforced.
#[derive(Debug)]
pub struct Running {
    pub generation: u32,
    /// Unix seconds.
    pub applied_at: u64,
    pub document: String,
    pub ruleset: Arc<Ruleset>,
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
    slots: Value,
}

pub struct Daemon<E: Enforcer> {
    config: DaemonConfig,
    validator: Arc<dyn Validator>,
    flow_source: Option<Arc<dyn FlowSource>>,
    core: Mutex<Core<E>>,
    running: RwLock<Option<Arc<Running>>>,
    restore_error: RwLock<Option<String>>,
    started_at: u64,
    _locks: DirLocks,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
        let slots = newest.map(|r| r.slots).unwrap_or(Value::Null);
        Ok(Daemon {
            config,
            validator,
            flow_source: None,
            core: Mutex::new(Core {
                enforcer,
                store,
                slots,
            }),
            running: RwLock::new(None),
            restore_error: RwLock::new(None),
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

    /// Tells the flow source what runs now (and hands it the event ring
    /// buffer of a data plane loaded since the last time).
    fn publish_flows(&self, core: &mut Core<E>) {
        let Some(source) = &self.flow_source else {
            return;
        };
        if let Some(ring) = core.enforcer.take_flow_events() {
            source.events(ring);
        }
        let names = self
            .running()
            .map(|r| flows::names(&r, core.enforcer.slot_reasons()));
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

    /// Brings enforcement up at start (blocking): applies `ruleset` (the
    /// text of `--ruleset`) when given; otherwise restores the newest saved
    /// generation, taking it over as it is when the pinned data plane still
    /// runs it, so tracked connections survive a restart.
    ///
    /// Only a rejected or failing `--ruleset` is an error: a saved
    /// generation that no longer restores (an interface went away) is
    /// logged and shown by `status`, and the daemon serves anyway.
    pub fn start(&self, ruleset: Option<String>) -> Result<Started, DaemonError> {
        if let Some(document) = ruleset {
            let parsed = self
                .validator
                .load(&document)
                .map_err(DaemonError::Invalid)?;
            let result = self.commit(&mut self.core(), document, parsed, false, Origin::Startup)?;
            return Ok(Started::Applied(result.generation));
        }
        match self.restore() {
            Ok(started) => Ok(started),
            Err(e) => {
                let message = match &e {
                    DaemonError::Invalid(errors) => format!("{e}: {}", errors.join("; ")),
                    _ => e.to_string(),
                };
                tracing::error!("restoring the saved generation failed: {message}");
                *self
                    .restore_error
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = Some(message.clone());
                Ok(Started::RestoreFailed(message))
            }
        }
    }

    /// Enforces a saved document again, as a new generation: the data plane
    /// does not run it (fresh maps), or not as the interfaces are now.
    fn restore_as_new(
        &self,
        core: &mut Core<E>,
        record: GenerationRecord,
        ruleset: Ruleset,
    ) -> Result<Started, DaemonError> {
        let from = record.generation;
        let result = self.commit(
            core,
            record.document,
            ruleset,
            false,
            Origin::Restore { from },
        )?;
        Ok(Started::Restored {
            from,
            generation: result.generation,
        })
    }

    fn restore(&self) -> Result<Started, DaemonError> {
        let mut core = self.core();
        if core.store.is_detached() {
            return Ok(Started::Nothing);
        }
        let (newest, skipped) = core.store.newest()?;
        for e in skipped {
            tracing::warn!("skipping an unreadable saved generation: {e}");
        }
        let Some(record) = newest else {
            return Ok(Started::Nothing);
        };
        let ruleset = self
            .validator
            .load(&record.document)
            .map_err(DaemonError::Invalid)?;
        if core.enforcer.running_generation() != Some(record.generation) {
            return self.restore_as_new(&mut core, record, ruleset);
        }
        // The data plane runs this very generation: take it over.
        let compiled = core
            .enforcer
            .compile(record.generation, &ruleset, &record.slots)?;
        let wanted = apply::interfaces(&ruleset);
        let attached = core.enforcer.attached();
        for interface in &wanted {
            // Takes over the pinned links (and puts back any that went
            // missing while the daemon was away).
            core.enforcer.attach(interface)?;
        }
        if let Err(e) = core.enforcer.adopt(&compiled.plan) {
            // The pinned generation does not guard the interfaces as they
            // are now (one was made again, with a new index, while the
            // daemon was away): enforce the document again, as a new
            // generation, rather than leave an interface unguarded.
            tracing::warn!("not taking over generation {}: {e}", record.generation);
            return self.restore_as_new(&mut core, record, ruleset);
        }
        for interface in attached.difference(&wanted) {
            if let Err(e) = core.enforcer.detach(interface) {
                tracing::warn!("{e}");
            }
        }
        // The slot table as saved: compiling the same generation again
        // gives every rule the slot it has.
        core.slots = record.slots;
        self.set_running(Some(Arc::new(Running {
            generation: record.generation,
            applied_at: record.applied_at,
            document: record.document,
            ruleset: Arc::new(ruleset),
        })));
        self.publish_flows(&mut core);
        Ok(Started::Adopted(record.generation))
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

    /// `apply`: validate, compile, enforce (SPEC §4: all or nothing).
    pub async fn apply(self: &Arc<Self>, params: ApplyParams) -> Result<ApplyResult, DaemonError> {
        self.blocking(move |d| {
            let ruleset = d
                .validator
                .load(&params.document)
                .map_err(DaemonError::Invalid)?;
            d.commit(
                &mut d.core(),
                params.document,
                ruleset,
                params.dry_run,
                Origin::Apply,
            )
        })
        .await
    }

    /// `rollback`: re-apply a saved generation as a new one.
    pub async fn rollback(
        self: &Arc<Self>,
        params: RollbackParams,
    ) -> Result<ApplyResult, DaemonError> {
        self.blocking(move |d| {
            let mut core = d.core();
            let saved = core.store.generations()?;
            let running = d.running().map(|r| r.generation);
            let target = match params.to {
                Some(to) if saved.contains(&to) => to,
                Some(to) => {
                    return Err(DaemonError::NotSaved {
                        generation: to,
                        saved,
                    })
                }
                None => saved
                    .iter()
                    .rev()
                    .copied()
                    .find(|g| running.is_none_or(|r| *g < r))
                    .ok_or(DaemonError::NothingToRollBack)?,
            };
            let record = core.store.load(target)?.ok_or(DaemonError::NotSaved {
                generation: target,
                saved: saved.clone(),
            })?;
            let ruleset = d
                .validator
                .load(&record.document)
                .map_err(DaemonError::Invalid)?;
            let mut result = d.commit(
                &mut core,
                record.document,
                ruleset,
                false,
                Origin::Rollback { from: target },
            )?;
            result.rolled_back_to = Some(target);
            Ok(result)
        })
        .await
    }

    /// `get`: the running document.
    pub fn get(&self) -> Result<GetResult, DaemonError> {
        let running = self.running().ok_or(DaemonError::NoGeneration)?;
        Ok(GetResult {
            generation: running.generation,
            applied_at: running.applied_at,
            document: running.document.clone(),
        })
    }

    /// `status`.
    pub async fn status(self: &Arc<Self>) -> Result<StatusResult, DaemonError> {
        let dataplane = self.blocking(|d| Ok(d.core().enforcer.status()?)).await?;
        let running = self.running();
        let enis = running
            .as_ref()
            .map(|r| {
                r.ruleset
                    .enis
                    .iter()
                    .map(|eni| EniStatus {
                        id: eni.id.clone(),
                        interface: eni.interface.clone(),
                        attach_mode: eni.mode,
                        vswitch: r
                            .ruleset
                            .vswitches
                            .get(eni.vswitch)
                            .map(|v| v.id.clone())
                            .unwrap_or_default(),
                        hooks: dataplane
                            .hooks
                            .get(&eni.interface)
                            .cloned()
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(StatusResult {
            generation: running.as_ref().map(|r| r.generation),
            applied_at: running.as_ref().map(|r| r.applied_at),
            enis,
            conntrack: dataplane.conntrack,
            stats: dataplane.stats,
            daemon: DaemonInfo {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                pid: std::process::id(),
                started_at: self.started_at,
                state_dir: self.config.state_dir.display().to_string(),
                pin_dir: self.config.pin_dir.display().to_string(),
            },
            restore_error: self
                .restore_error
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        })
    }

    /// `explain`: the reference evaluator on the running generation, and the
    /// data plane's tracked connection for the packet.
    pub async fn explain(
        self: &Arc<Self>,
        params: ExplainParams,
    ) -> Result<ExplainResult, DaemonError> {
        let running = self.running().ok_or(DaemonError::NoGeneration)?;
        let rs = &running.ruleset;
        let Some(eni) = rs.eni_by_id(&params.eni) else {
            let known: Vec<&str> = rs.enis.iter().map(|e| e.id.as_str()).collect();
            return Err(DaemonError::Params(format!(
                "no ENI {:?} in generation {}; ENIs: {}",
                params.eni,
                running.generation,
                known.join(", ")
            )));
        };
        let packet = params
            .packet()
            .map_err(|e| DaemonError::Params(e.message))?;
        let direction = params.direction;
        let evaluation = eval::evaluate(rs, eni, direction, &packet);
        let interface = rs.enis[eni].interface.clone();
        let lookup = interface.clone();
        let tracked = self
            .blocking(move |d| Ok(d.core().enforcer.tracked(&lookup, direction, &packet)?))
            .await?;
        // A tracked connection skips the security groups but not the NACL,
        // which is stateless (SPEC §3 steps 3 and 4).
        let admitted_by = match &tracked {
            Some(conn)
                if eval::evaluate_nacl(rs, eni, direction, &packet)
                    .decision()
                    .is_none_or(|d| d.verdict == Verdict::Accept) =>
            {
                Some(conn.rule.clone())
            }
            _ if evaluation.decision.verdict == Verdict::Accept => {
                Some(evaluation.decision.reason.to_string())
            }
            _ => None,
        };
        Ok(ExplainResult {
            generation: running.generation,
            eni: params.eni,
            interface,
            direction,
            packet,
            decision: evaluation.decision.clone(),
            reason: evaluation.decision.reason.to_string(),
            evaluation,
            tracked,
            admitted_by,
        })
    }

    /// `counters`: every counter, or those that can decide for one ENI.
    pub async fn counters(
        self: &Arc<Self>,
        params: CountersParams,
    ) -> Result<CountersResult, DaemonError> {
        let running = self.running();
        let only = match (&params.eni, &running) {
            (None, _) => None,
            (Some(id), Some(r)) => {
                let eni = r.ruleset.eni_by_id(id).ok_or_else(|| {
                    DaemonError::Params(format!("no ENI {id:?} in generation {}", r.generation))
                })?;
                Some(apply::eni_reasons(&r.ruleset, eni))
            }
            (Some(_), None) => return Err(DaemonError::NoGeneration),
        };
        let mut rules = self.blocking(|d| Ok(d.core().enforcer.counters()?)).await?;
        if let Some(only) = only {
            rules.retain(|c| only.contains(&c.rule));
        }
        Ok(CountersResult {
            generation: running.map(|r| r.generation),
            eni: params.eni,
            rules,
        })
    }

    /// `detach`: stop enforcing on every interface and remove every pin.
    pub async fn detach(self: &Arc<Self>) -> Result<DetachResult, DaemonError> {
        self.blocking(|d| {
            let mut core = d.core();
            let previous = d.running().map(|r| r.generation);
            let interfaces = core.enforcer.detach_all()?;
            d.set_running(None);
            d.publish_flows(&mut core);
            if let Err(e) = core.store.set_detached(true) {
                tracing::warn!(
                    "detached, but a restarted daemon will restore generation {previous:?}: {e}"
                );
            }
            Ok(DetachResult {
                previous,
                interfaces,
            })
        })
        .await
    }

    fn flow_source(&self) -> Result<Arc<dyn FlowSource>, DaemonError> {
        self.flow_source
            .clone()
            .ok_or_else(|| DaemonError::NotImplemented("this filterd has no flow log".to_owned()))
    }

    /// `flows`: the newest matching records of the flow-log file. (A
    /// `follow` request is a stream, which the server runs with
    /// [`Daemon::follow_flows`].)
    pub async fn flows(self: &Arc<Self>, params: FlowsParams) -> Result<FlowsResult, DaemonError> {
        let source = self.flow_source()?;
        let records = tokio::task::spawn_blocking(move || source.flows(&params))
            .await
            .map_err(|e| DaemonError::Internal(format!("a worker failed: {e}")))?
            .map_err(flow_error)?;
        Ok(FlowsResult { records })
    }

    /// `flows` with `follow`: the requested history, and a subscription to
    /// every window's matching records from now on. The subscription is
    /// made first, so no window falls between the two (one may be in
    /// both).
    pub async fn follow_flows(
        self: &Arc<Self>,
        params: FlowsParams,
    ) -> Result<(FlowsResult, crate::flowlog::Subscription), DaemonError> {
        let source = self.flow_source()?;
        let subscription = source.follow(&params).map_err(flow_error)?;
        let history = self.flows(params).await?;
        Ok((history, subscription))
    }

    /// `version`.
    pub fn version(&self) -> VersionResult {
        VersionResult {
            daemon: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: PROTOCOL_VERSION,
            methods: Method::ALL.iter().map(|m| m.as_str().to_owned()).collect(),
        }
    }
}

fn flow_error(e: FlowError) -> DaemonError {
    match e {
        FlowError::InvalidParams(m) => DaemonError::Params(m),
        FlowError::Failed(m) => DaemonError::Internal(m),
    }
}

/// The shortest and longest `--capture-window` (SPEC §4, §7).
pub const CAPTURE_WINDOW_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(600));

/// Parses `--capture-window`: `60s`, `1m`, `1m30s`, `90` (seconds), within
/// [`CAPTURE_WINDOW_RANGE`].
pub fn parse_capture_window(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 60s, 1m or 1m30s");
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut saw_unit = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        digits.clear();
        saw_unit = true;
    }
    if !digits.is_empty() {
        if saw_unit {
            return Err(bad());
        }
        total = digits.parse().map_err(|_| bad())?;
    } else if !saw_unit {
        return Err(bad());
    }
    let window = Duration::from_secs(total);
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
