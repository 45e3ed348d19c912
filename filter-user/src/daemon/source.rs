//! Where documents come from: `apply` on the local socket, or an external
//! source (etcd, SPEC §10) that hands the daemon whole documents. With an
//! external source, local `apply` and `rollback` are refused: one source of
//! truth.
use std::sync::Arc;

use super::{Daemon, DaemonError, Document, Enforcer, Origin};
use crate::api::ApplyResult;

impl<E: Enforcer> Daemon<E> {
    /// Documents come from `source` (described for the refusal message,
    /// e.g. the etcd endpoints and prefix) through [`Daemon::apply_from`].
    pub fn with_external_source(mut self, source: impl Into<String>) -> Self {
        self.external_source = Some(source.into());
        self
    }

    /// Refuses a local change while an external source rules.
    pub(super) fn local_changes_allowed(&self) -> Result<(), DaemonError> {
        match &self.external_source {
            Some(source) => Err(DaemonError::ExternalSource(source.clone())),
            None => Ok(()),
        }
    }

    /// Validates and enforces a document of the external source, as
    /// `apply` does (all or nothing), recording `origin`.
    pub async fn apply_from(
        self: &Arc<Self>,
        document: String,
        origin: Origin,
    ) -> Result<ApplyResult, DaemonError> {
        self.blocking(move |d| {
            let ruleset = d.validator.load(&document).map_err(DaemonError::Invalid)?;
            d.commit(
                &mut d.core(),
                Document::new(document),
                ruleset,
                false,
                origin,
            )
        })
        .await
    }
}
