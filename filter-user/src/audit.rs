//! The audit log (SPEC §8): every apply, rollback and detach, with the
//! caller's uid and pid, the resulting generation and the digest of the
//! document ([`crate::digest`]), as one `info` event of target
//! `filterd::audit`. The server calls [`Audit`] where it dispatches.
use std::sync::Arc;

use crate::{
    api::{ApplyResult, DetachResult},
    daemon::{auth::PeerIdentity, DaemonError, Running},
    systemd,
};

/// One mutating call, from before it runs until [`Audit::record`].
#[derive(Debug)]
pub struct Audit {
    action: &'static str,
    uid: Option<u32>,
    pid: Option<i32>,
    /// The document's digest when known before the call (apply: the
    /// document sent; detach: the one that was running).
    digest: Option<String>,
}

/// What a call's result says about the generation it left running.
pub trait Outcome {
    /// The generation running after the call (`None` after a detach).
    fn generation(&self) -> Option<u32>;
    /// The call changed nothing (a dry run).
    fn dry_run(&self) -> bool {
        false
    }
}

impl Outcome for ApplyResult {
    fn generation(&self) -> Option<u32> {
        Some(self.generation)
    }

    fn dry_run(&self) -> bool {
        self.dry_run
    }
}

impl Outcome for DetachResult {
    fn generation(&self) -> Option<u32> {
        None
    }
}

impl Audit {
    /// `digest`: the applied document's ([`crate::digest::document_digest`]).
    pub fn apply(peer: Result<&PeerIdentity, &String>, digest: Option<String>) -> Audit {
        Audit::new("apply", peer, digest)
    }

    pub fn rollback(peer: Result<&PeerIdentity, &String>) -> Audit {
        Audit::new("rollback", peer, None)
    }

    /// `running`: the generation before the detach.
    pub fn detach(peer: Result<&PeerIdentity, &String>, running: Option<Arc<Running>>) -> Audit {
        let digest = running.and_then(|r| r.digest.clone());
        Audit::new("detach", peer, digest)
    }

    fn new(
        action: &'static str,
        peer: Result<&PeerIdentity, &String>,
        digest: Option<String>,
    ) -> Audit {
        let (uid, pid) = match peer {
            Ok(p) => (Some(p.uid), p.pid),
            Err(_) => (None, None),
        };
        Audit {
            action,
            uid,
            pid,
            digest,
        }
    }

    /// Logs the call's result and hands it back. `running`: the generation
    /// running now, whose document a rollback re-applied.
    pub fn record<T: Outcome>(
        self,
        result: Result<T, DaemonError>,
        running: Option<Arc<Running>>,
    ) -> Result<T, DaemonError> {
        let Audit {
            action,
            uid,
            pid,
            digest,
        } = self;
        let who = format!(
            "uid {} pid {}",
            uid.map_or_else(|| "unknown".to_owned(), |u| u.to_string()),
            pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
        );
        match &result {
            Ok(outcome) => {
                let generation = outcome.generation();
                let digest = digest.or_else(|| {
                    running
                        .filter(|r| Some(r.generation) == generation)
                        .and_then(|r| r.digest.clone())
                });
                tracing::info!(
                    target: "filterd::audit",
                    action,
                    uid,
                    pid,
                    generation,
                    digest = digest.as_deref().unwrap_or("none"),
                    dry_run = outcome.dry_run(),
                    outcome = "ok",
                    "{action} by {who}: {}",
                    systemd::status_line(generation),
                );
                if !outcome.dry_run() {
                    systemd::status(generation);
                }
            }
            Err(e) => {
                let outcome = match e {
                    DaemonError::Invalid(_) => "rejected",
                    _ => "failed",
                };
                tracing::info!(
                    target: "filterd::audit",
                    action,
                    uid,
                    pid,
                    digest = digest.as_deref().unwrap_or("none"),
                    outcome,
                    error = %e,
                    "{action} by {who} {outcome}: {e}",
                );
            }
        }
        result
    }
}
