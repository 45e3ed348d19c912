//! The watch loop of one host (SPEC §10): list `PREFIX/v1/`, build and
//! enforce this host's document, report, then watch from the next
//! revision. On any error: back off and reconnect, resuming the watch
//! where it stopped; when etcd compacted that revision away, list again.
//!
//! Nothing here ever clears what runs: while etcd is away, or a revision
//! does not build or validate, the last good generation keeps enforcing.
use std::{future::Future, time::Duration};

use etcd_client::{Client, EventType, GetOptions, LeaseKeepAliveStream, LeaseKeeper, WatchOptions};
use tokio::time::{interval, MissedTickBehavior};

use super::{
    backoff::Backoff,
    client::{connect, within, EtcdConfig},
    document::{build, Snapshot},
    status::{HostStatus, Reporter, KEEP_ALIVE_EVERY},
    target::{Enforced, Target},
    FleetError,
};
use crate::clock::unix_now;

/// How often a host retries a document that failed for a reason that may
/// pass without a new revision (an interface not there yet).
const RETRY_REJECTED: Duration = Duration::from_secs(10);
/// The most watch responses folded into one build (at high revision rates
/// the host builds once per batch, not once per revision).
const MAX_BATCH: usize = 1024;

/// One host's agent: the keys it has seen, what it enforces, its status.
pub struct Agent<T> {
    etcd: EtcdConfig,
    host: String,
    target: T,
    snapshot: Snapshot,
    /// The revision `snapshot` is as of (0: nothing listed yet).
    revision: i64,
    /// The digest of the last document that failed, so a revision that
    /// changes nothing here does not validate it again.
    rejected_digest: Option<String>,
    status: HostStatus,
    /// The last client and lease, to end the lease on a clean stop.
    session: Option<(Client, Reporter)>,
}

impl<T: Target> Agent<T> {
    pub fn new(etcd: EtcdConfig, host: String, target: T) -> Self {
        let status = HostStatus {
            host: host.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..HostStatus::default()
        };
        Agent {
            etcd,
            host,
            target,
            snapshot: Snapshot::default(),
            revision: 0,
            rejected_digest: None,
            status,
            session: None,
        }
    }

    /// Runs until `shutdown`; then ends the status lease (best effort).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = Backoff::default();
        loop {
            let error = tokio::select! {
                () = &mut shutdown => break,
                error = self.session(&mut backoff) => error,
            };
            let delay = match error {
                // Not a fault: list again at once.
                FleetError::Compacted { .. } => Duration::ZERO,
                _ => backoff.next_delay(),
            };
            tracing::warn!(
                "etcd {}: {error}; enforcing generation {:?} of revision {:?} meanwhile, \
                 retrying in {delay:?}",
                self.etcd.describe(),
                self.status.generation,
                self.status.enforced_revision
            );
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
        if let Some((mut client, reporter)) = self.session.take() {
            if let Err(e) = reporter.revoke(&mut client).await {
                tracing::debug!("ending the status lease: {e}");
            }
        }
    }

    /// One connection, until it fails (it never ends otherwise).
    async fn session(&mut self, backoff: &mut Backoff) -> FleetError {
        match self.session_inner(backoff).await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn session_inner(
        &mut self,
        backoff: &mut Backoff,
    ) -> Result<std::convert::Infallible, FleetError> {
        let mut client = connect(&self.etcd).await?;
        let reporter = Reporter::grant(&mut client, &self.etcd.keys, &self.host).await?;
        let (mut keeper, mut kept) = within(
            "keeping the status lease",
            client.lease_keep_alive(reporter.lease()),
        )
        .await?;
        self.session = Some((client.clone(), reporter));
        if self.revision == 0 {
            self.list(&mut client).await?;
        }
        let (start, end) = self.etcd.keys.watched();
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(self.revision + 1);
        let mut watch = within("watching", client.watch(start, Some(options))).await?;
        self.report(&mut client).await?;
        let mut ticks = interval(KEEP_ALIVE_EVERY);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_retry = tokio::time::Instant::now();
        let mut watching = false;
        loop {
            tokio::select! {
                message = watch.message() => {
                    let mut batch = vec![message?.ok_or(FleetError::WatchEnded)?];
                    // Whatever else has arrived already joins this build.
                    while batch.len() < MAX_BATCH {
                        tokio::select! {
                            biased;
                            message = watch.message() => {
                                batch.push(message?.ok_or(FleetError::WatchEnded)?)
                            }
                            () = std::future::ready(()) => break,
                        }
                    }
                    if self.absorb(batch)? {
                        self.reconcile().await;
                        self.report(&mut client).await?;
                    }
                    if !watching {
                        // The watch is up (past any compaction): this
                        // connection works.
                        watching = true;
                        backoff.reset();
                    }
                }
                _ = ticks.tick() => {
                    keep_alive(&mut keeper, &mut kept).await?;
                    if !self.status.errors.is_empty() && last_retry.elapsed() >= RETRY_REJECTED {
                        last_retry = tokio::time::Instant::now();
                        self.rejected_digest = None;
                        self.reconcile().await;
                        self.report(&mut client).await?;
                    }
                }
            }
        }
    }

    /// Lists every key under the prefix: the snapshot anew, then builds.
    async fn list(&mut self, client: &mut Client) -> Result<(), FleetError> {
        let (start, end) = self.etcd.keys.watched();
        let options = GetOptions::new().with_range(end);
        let response = within("listing the keys", client.get(start, Some(options))).await?;
        let mut snapshot = Snapshot::default();
        for kv in response.kvs() {
            if let Some(key) = self.etcd.keys.parse(kv.key()) {
                snapshot.put(key, kv.value());
            }
        }
        self.snapshot = snapshot;
        self.revision = response.header().map(|h| h.revision()).unwrap_or(0);
        tracing::info!(
            "etcd: listed {} keys at revision {}",
            response.kvs().len(),
            self.revision
        );
        self.reconcile().await;
        Ok(())
    }

    /// Applies the events of `batch` to the snapshot; whether any touched
    /// a key this host's document is built from.
    fn absorb(&mut self, batch: Vec<etcd_client::WatchResponse>) -> Result<bool, FleetError> {
        let mut changed = false;
        for response in batch {
            if response.canceled() {
                if response.compact_revision() > 0 {
                    // The revision we would resume from is gone: list again.
                    self.revision = 0;
                    return Err(FleetError::Compacted {
                        revision: response.compact_revision(),
                    });
                }
                return Err(FleetError::WatchCanceled(
                    response.cancel_reason().to_owned(),
                ));
            }

            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let Some(key) = self.etcd.keys.parse(kv.key()) else {
                    continue;
                };
                match event.event_type() {
                    EventType::Put => self.snapshot.put(key, kv.value()),
                    EventType::Delete => self.snapshot.delete(key),
                }
                changed = true;
                // Resume from events only: a header may run ahead of the
                // events a catching-up watch has still to send.
                self.revision = self.revision.max(kv.mod_revision());
            }
        }
        Ok(changed)
    }

    /// Builds this host's document as of `self.revision` and enforces it
    /// unless it is what runs already. Updates the status either way.
    async fn reconcile(&mut self) {
        self.status.revision = self.revision;
        let built = match build(&self.snapshot, &self.host, &self.etcd.keys) {
            Ok(built) => built,
            Err(errors) => return self.rejected(errors),
        };
        self.status.ignored = built.ignored.clone();
        let running = self.target.enforced();
        if running.as_ref().is_some_and(|r| r.digest == built.digest) {
            return self.enforced(running);
        }
        if self.rejected_digest.as_ref() == Some(&built.digest) {
            // The same document failed already; keep its errors.
            return;
        }
        match self.target.enforce(built.document, self.revision).await {
            Ok(enforced) => {
                tracing::info!(
                    "etcd revision {} enforced as generation {}",
                    self.revision,
                    enforced.generation
                );
                self.enforced(Some(enforced));
            }
            Err(errors) => {
                self.rejected_digest = Some(built.digest);
                self.rejected(errors);
            }
        }
    }

    fn enforced(&mut self, running: Option<Enforced>) {
        self.rejected_digest = None;
        self.status.generation = running.as_ref().map(|r| r.generation);
        self.status.digest = running.map(|r| r.digest);
        self.status.enforced_revision = Some(self.revision);
        self.status.errors.clear();
    }

    fn rejected(&mut self, errors: Vec<String>) {
        tracing::error!(
            "etcd revision {} not enforced ({} errors); the running generation stays: {}",
            self.revision,
            errors.len(),
            errors.join("; ")
        );
        let running = self.target.enforced();
        self.status.generation = running.as_ref().map(|r| r.generation);
        self.status.digest = running.map(|r| r.digest);
        self.status.errors = errors;
    }

    async fn report(&mut self, client: &mut Client) -> Result<(), FleetError> {
        self.status.updated_at = unix_now();
        match &self.session {
            Some((_, reporter)) => reporter.put(client, &self.status).await,
            None => Ok(()),
        }
    }
}

/// Renews the lease; an answer with no time left means etcd ended it.
async fn keep_alive(
    keeper: &mut LeaseKeeper,
    kept: &mut LeaseKeepAliveStream,
) -> Result<(), FleetError> {
    within("renewing the status lease", keeper.keep_alive()).await?;
    match within("renewing the status lease", kept.message()).await? {
        Some(answer) if answer.ttl() > 0 => Ok(()),
        _ => Err(FleetError::LeaseExpired),
    }
}
