//! Interfaces that come and go (SPEC §2.4): an ENI's interface that
//! appears, is made again, renamed back or moved into this namespace is
//! guarded as soon as the kernel announces it, without an apply; one that
//! goes leaves its ENI pending. Netlink may drop events under load, so every
//! ENI's interface is also checked every [`RECONCILE_EVERY`].
use std::{future::Future, sync::Arc, time::Duration};

use super::{Daemon, DaemonError, Enforcer};
use crate::dataplane::{LinkEvent, LinkEvents};

/// How often every ENI's interface is checked without an event.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(5);

impl<E: Enforcer> Daemon<E> {
    /// Follows `events` until `shutdown`. Subscribe before [`Daemon::start`]
    /// so that no interface appears unseen between the start and this.
    pub async fn follow_links(self: Arc<Self>, mut events: LinkEvents, shutdown: impl Future) {
        let mut tick = tokio::time::interval(RECONCILE_EVERY);
        tokio::pin!(shutdown);
        let mut open = true;
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                event = events.next(), if open => match event {
                    Some(event) => self.on_link(event).await,
                    None => {
                        tracing::error!(
                            "the kernel's link events stopped; interfaces are checked every {}s only",
                            RECONCILE_EVERY.as_secs()
                        );
                        open = false;
                    }
                },
                _ = tick.tick() => {
                    if let Err(e) = self.reconcile().await {
                        tracing::warn!("checking the ENIs' interfaces: {e}");
                    }
                }
            }
        }
    }

    async fn on_link(self: &Arc<Self>, event: LinkEvent) {
        let name = match &event {
            LinkEvent::Present { name, .. } | LinkEvent::Gone { name, .. } => name.clone(),
        };
        let Some(eni) = self.running().and_then(|r| {
            let rs = &r.ruleset;
            rs.enis
                .iter()
                .find(|e| e.interface == name)
                .map(|e| e.id.clone())
        }) else {
            return;
        };
        let result = self
            .blocking(move |d| {
                let mut core = d.core();
                let changed = match event {
                    LinkEvent::Present { name, .. } => core.enforcer.guard(&name)?,
                    LinkEvent::Gone { name, ifindex } => {
                        core.enforcer.forget(&name, ifindex)?;
                        true
                    }
                };
                if changed {
                    d.publish_flows(&mut core);
                }
                Ok(changed)
            })
            .await;
        match result {
            Ok(true) => tracing::info!("{eni}: interface {name} changed; its guard follows"),
            Ok(false) => {}
            Err(e) => tracing::error!("{eni}: guarding interface {name}: {e}"),
        }
    }

    /// Guards every ENI interface of the running generation that exists
    /// and is not guarded under its index now.
    pub async fn reconcile(self: &Arc<Self>) -> Result<(), DaemonError> {
        let Some(running) = self.running() else {
            return Ok(());
        };
        self.blocking(move |d| {
            let mut core = d.core();
            let wanted: Vec<String> = running
                .ruleset
                .enis
                .iter()
                .map(|e| e.interface.clone())
                .collect();
            let guarded = core.enforcer.reconcile(&wanted)?;
            if !guarded.is_empty() {
                tracing::warn!("guarded {guarded:?}, whose link events were missed");
                d.publish_flows(&mut core);
            }
            Ok(())
        })
        .await
    }
}
