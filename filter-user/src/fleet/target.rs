//! What the agent drives: [`Target`]. `filterd`'s is its [`Daemon`] (the
//! real data plane); the fleet benchmark's validates and compiles only.
use std::{future::Future, sync::Arc};

use crate::{
    daemon::{Daemon, DaemonError, Enforcer, Origin},
    digest::document_digest,
};

/// A generation that runs, and the digest of its document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enforced {
    pub generation: u32,
    pub digest: String,
}

pub trait Target: Send + Sync + 'static {
    /// What runs now (after a restart: what was restored).
    fn enforced(&self) -> Option<Enforced>;

    /// Validates, compiles and enforces `document` (built from etcd as of
    /// `revision`), all or nothing. On failure, every error.
    fn enforce(
        &self,
        document: String,
        revision: i64,
    ) -> impl Future<Output = Result<Enforced, Vec<String>>> + Send;
}

impl<E: Enforcer> Target for Arc<Daemon<E>> {
    fn enforced(&self) -> Option<Enforced> {
        let running = self.running()?;
        Some(Enforced {
            generation: running.generation,
            digest: running.digest.clone()?,
        })
    }

    async fn enforce(&self, document: String, revision: i64) -> Result<Enforced, Vec<String>> {
        let digest = document_digest(&document).unwrap_or_default();
        match self.apply_from(document, Origin::Fleet { revision }).await {
            Ok(result) => Ok(Enforced {
                generation: result.generation,
                digest,
            }),
            Err(DaemonError::Invalid(errors)) => Err(errors),
            Err(e) => Err(vec![e.to_string()]),
        }
    }
}
