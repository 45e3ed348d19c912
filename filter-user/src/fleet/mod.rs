//! A fleet of hosts (SPEC §10): `filterd` takes its rules from etcd.
//!
//! - [`keys`]: the key layout under the prefix.
//! - [`document`]: this host's document from `shared`, its ENIs and the
//!   other hosts' ENIs (fleet-wide membership).
//! - [`agent`]: list, watch, build, enforce, report; backoff
//!   ([`backoff`]) and compaction.
//! - [`status`]: the status key under a lease.
//! - [`client`]: endpoints, prefix, TLS.
//! - [`target`]: what the agent drives (the daemon, or a compile-only
//!   stand-in for the benchmark).
//! - [`admin`]: what `filterctl fleet` does: read statuses, validated
//!   compare-and-swap writes.
//!
//! docs/FLEET.md has the design, the walk-through and the faults.
pub mod admin;
pub mod agent;
pub mod backoff;
pub mod client;
pub mod document;
pub mod keys;
pub mod status;
pub mod target;

use std::{io, path::PathBuf};

use thiserror::Error;

pub use self::{
    agent::Agent,
    client::{EtcdConfig, TlsFiles},
    keys::{Key, KeyError, Keys},
    status::HostStatus,
    target::{Enforced, Target},
};

#[derive(Debug, Error)]
pub enum FleetError {
    #[error("{0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("{what}: no answer within {}s", client::REQUEST_TIMEOUT.as_secs())]
    Timeout { what: &'static str },
    #[error(
        "the watched revision was compacted (etcd keeps revisions from {revision}); listing again"
    )]
    Compacted { revision: i64 },
    #[error("etcd ended the watch")]
    WatchEnded,
    #[error("etcd canceled the watch: {0}")]
    WatchCanceled(String),
    #[error("the status lease expired")]
    LeaseExpired,
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("{0}")]
    Config(String),
    /// `--if-revision` did not match.
    #[error("{key} was last changed at revision {actual}, not {expected}; nothing was written")]
    Conflict {
        key: String,
        expected: i64,
        actual: i64,
    },
    /// A document or ENI list that does not validate; every error.
    #[error("{} error(s); nothing was written", .0.len())]
    Invalid(Vec<String>),
}
