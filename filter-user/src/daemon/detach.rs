//! `detach`: stop enforcing everywhere and remove every pin (SPEC §4).
use std::sync::Arc;

use super::{Daemon, DaemonError, Enforcer};
use crate::api::DetachResult;

impl<E: Enforcer> Daemon<E> {
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
}
