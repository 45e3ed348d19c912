//! The hook for flow logs (SPEC §7, issue 6): the daemon answers `flows`
//! from a [`FlowSource`] when it has one, and with
//! [`ErrorCode::NotImplemented`](crate::api::ErrorCode::NotImplemented)
//! until then.
use thiserror::Error;

use crate::api::{FlowRecord, FlowsParams};

#[derive(Debug, Error)]
#[error("{0}")]
pub struct FlowError(pub String);

/// Where flow-log records come from (the ring-buffer reader and the
/// flow-log file, in issue 6).
pub trait FlowSource: Send + Sync + 'static {
    /// The records that match `query` (its `follow` flag aside: following
    /// is a stream, which issue 6 adds to the server).
    fn flows(&self, query: &FlowsParams) -> Result<Vec<FlowRecord>, FlowError>;
}
