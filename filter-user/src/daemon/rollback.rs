//! `rollback`: a saved generation applied again, as a new one (SPEC §4).
use std::sync::Arc;

use super::{Daemon, DaemonError, Document, Enforcer, Origin};
use crate::api::{ApplyResult, RollbackParams};

impl<E: Enforcer> Daemon<E> {
    /// `rollback`: re-apply a saved generation as a new one.
    pub async fn rollback(
        self: &Arc<Self>,
        params: RollbackParams,
    ) -> Result<ApplyResult, DaemonError> {
        self.local_changes_allowed()?;
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
                Document::new(record.document),
                ruleset,
                false,
                Origin::Rollback { from: target },
            )?;
            result.rolled_back_to = Some(target);
            Ok(result)
        })
        .await
    }
}
