//! A host's report under `PREFIX/v1/status/<host>` (SPEC §10), written
//! under a lease the host keeps alive: when the host dies the lease ends
//! and etcd deletes the key.
use std::time::Duration;

use etcd_client::{Client, PutOptions};
use serde::{Deserialize, Serialize};

use super::{client::within, keys::Keys, FleetError};

/// How long a status key outlives its host's last keep-alive.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the lease is renewed (a third of its life).
pub const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(3);

/// What one host enforces, as it reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    pub host: String,
    /// The generation this host's data plane runs, if any.
    pub generation: Option<u32>,
    /// The digest of the document it runs (SPEC §11).
    pub digest: Option<String>,
    /// The newest etcd revision this host has handled.
    pub revision: i64,
    /// The newest revision whose document is the one running: equal to
    /// `revision` unless that one was rejected.
    pub enforced_revision: Option<i64>,
    /// Why `revision` is not enforced, every error (empty when it is).
    #[serde(default)]
    pub errors: Vec<String>,
    /// Other hosts' ENI lists that could not be read (their ENIs count as
    /// members of no group here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
    /// Unix seconds of this report.
    pub updated_at: u64,
    /// The `filterd` version.
    pub version: String,
}

/// A granted lease and the key it keeps.
pub struct Reporter {
    key: String,
    lease: i64,
}

impl Reporter {
    /// Grants a lease of [`LEASE_TTL`] for `host`'s status key.
    pub async fn grant(
        client: &mut Client,
        keys: &Keys,
        host: &str,
    ) -> Result<Reporter, FleetError> {
        let ttl = i64::try_from(LEASE_TTL.as_secs()).unwrap_or(i64::MAX);
        let lease = within("granting the status lease", client.lease_grant(ttl, None)).await?;
        Ok(Reporter {
            key: keys.status(host),
            lease: lease.id(),
        })
    }

    pub fn lease(&self) -> i64 {
        self.lease
    }

    pub async fn put(&self, client: &mut Client, status: &HostStatus) -> Result<(), FleetError> {
        let value = serde_json::to_string(status).map_err(|e| FleetError::Config(e.to_string()))?;
        let options = PutOptions::new().with_lease(self.lease);
        within(
            "writing the status",
            client.put(self.key.as_str(), value, Some(options)),
        )
        .await?;
        Ok(())
    }

    /// Ends the lease now: the status key goes at once (a clean stop).
    pub async fn revoke(&self, client: &mut Client) -> Result<(), FleetError> {
        within("revoking the status lease", client.lease_revoke(self.lease)).await?;
        Ok(())
    }
}
