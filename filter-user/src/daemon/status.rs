//! `status`, `get` and `version`: what runs, read-only.
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OnceCell;

use super::{Daemon, DaemonError, DataplaneStatus, Enforcer};
use crate::api::{
    DaemonInfo, EniState, EniStatus, GetResult, Method, StatusResult, VersionResult,
    PROTOCOL_VERSION,
};

impl<E: Enforcer> Daemon<E> {
    /// `get`: the running document, read from its saved record (the
    /// daemon does not keep the text: at 100k rules it is 19 MB).
    pub async fn get(self: &Arc<Self>) -> Result<GetResult, DaemonError> {
        self.blocking(|d| {
            // An apply prunes records only once its generation runs, so the
            // running one's is there.
            let running = d.running().ok_or(DaemonError::NoGeneration)?;
            let Some(record) = d.records.load(running.generation)? else {
                return Err(DaemonError::NotSaved {
                    generation: running.generation,
                    saved: d.records.generations()?,
                });
            };
            Ok(GetResult {
                generation: running.generation,
                applied_at: running.applied_at,
                document: record.document,
            })
        })
        .await
    }

    /// `status`.
    pub async fn status(self: &Arc<Self>) -> Result<StatusResult, DaemonError> {
        let (dataplane, kernel) = self.read_dataplane().await?;
        let running = self.running();
        // What the kernel enforces, when the daemon does not run it (0:
        // nothing written into these maps yet).
        let kernel_generation =
            kernel.filter(|g| *g != 0 && Some(*g) != running.as_ref().map(|r| r.generation));
        let enis = running
            .as_ref()
            .map(|r| {
                r.ruleset
                    .enis
                    .iter()
                    .map(|eni| {
                        let hooks = dataplane
                            .hooks
                            .get(&eni.interface)
                            .cloned()
                            .unwrap_or_default();
                        EniStatus {
                            id: eni.id.clone(),
                            interface: eni.interface.clone(),
                            attach_mode: eni.mode,
                            vswitch: r
                                .ruleset
                                .vswitches
                                .get(eni.vswitch)
                                .map(|v| v.id.clone())
                                .unwrap_or_default(),
                            state: if hooks.is_empty() {
                                EniState::Pending
                            } else {
                                EniState::Attached
                            },
                            hooks,
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let restore_error = self
            .restore_error
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(StatusResult {
            degraded: restore_error.is_some() || enis.iter().any(|e| e.state == EniState::Pending),
            generation: running.as_ref().map(|r| r.generation),
            applied_at: running.as_ref().map(|r| r.applied_at),
            digest: running.as_ref().and_then(|r| r.digest.clone()),
            enis,
            conntrack: dataplane.conntrack,
            ranges: dataplane.ranges,
            cells: dataplane.cells,
            stats: dataplane.stats,
            daemon: DaemonInfo {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                pid: std::process::id(),
                started_at: self.started_at,
                state_dir: self.config.state_dir.display().to_string(),
                pin_dir: self.config.pin_dir.display().to_string(),
            },
            restore_error,
            kernel_generation,
        })
    }

    /// What the data plane says, read once for every `status` call that
    /// comes while a read is under way: a burst of clients asking at once
    /// costs one read, not one each in turn behind the core lock. A read
    /// under way holds that lock, so no apply can have finished between its
    /// start and a caller joining it: the answer is as fresh as a read of
    /// the caller's own.
    async fn read_dataplane(self: &Arc<Self>) -> Result<Snapshot, DaemonError> {
        let read = {
            let mut current = self
                .status_read
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match &*current {
                Some(read) if !read.initialized() => Arc::clone(read),
                _ => {
                    let read = Arc::new(OnceCell::new());
                    *current = Some(Arc::clone(&read));
                    read
                }
            }
        };
        read.get_or_init(|| async {
            self.blocking(|d| {
                let core = d.core();
                Ok((core.enforcer.status()?, core.enforcer.running_generation()))
            })
            .await
            .map_err(|e| e.to_string())
        })
        .await
        .clone()
        .map_err(DaemonError::Internal)
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

/// The data plane's status and the generation its maps hold.
type Snapshot = (DataplaneStatus, Option<u32>);

/// One data-plane read: its result once done, for everyone who joined it.
type Read = OnceCell<Result<Snapshot, String>>;

/// The data-plane read under way, if any ([`Daemon::read_dataplane`]).
#[derive(Debug, Default)]
pub(super) struct SharedRead(Mutex<Option<Arc<Read>>>);
