//! The daemon's side of flow logs (SPEC §7): a [`FlowSource`] answers
//! `flows` (history from the file, and `follow` subscriptions) and learns
//! about every running generation and every new event ring buffer. The
//! implementation is [`crate::flowlog::FlowLog`]; a daemon without one
//! answers `flows` with
//! [`ErrorCode::NotImplemented`](crate::api::ErrorCode::NotImplemented).
use std::{collections::BTreeMap, time::Duration};

use thiserror::Error;

use super::Running;
use crate::{
    api::{FlowRecord, FlowsParams},
    flowlog::{EniMeta, FlowNames, Subscription},
};

#[derive(Debug, Error)]
pub enum FlowError {
    /// A filter does not parse (`action`, `proto`).
    #[error("{0}")]
    InvalidParams(String),
    #[error("{0}")]
    Failed(String),
}

/// Where flow-log records come from.
pub trait FlowSource: Send + Sync + 'static {
    /// The newest records of the file that match `query` (`limit` of them),
    /// oldest first. Blocking (reads files).
    fn flows(&self, query: &FlowsParams) -> Result<Vec<FlowRecord>, FlowError>;

    /// A subscription to the records of every window from now on that
    /// match `query`.
    fn follow(&self, query: &FlowsParams) -> Result<Subscription, FlowError>;

    /// The running generation changed (`None`: nothing runs any more).
    fn generation(&self, _names: Option<FlowNames>) {}

    /// A data plane was loaded: its event ring buffer.
    fn events(&self, _ring: aya::maps::Map) {}
}

/// What flow records need to know of `running`: its ENIs (with their
/// interface indexes on this host, their vSwitch and VPC), what each
/// counter slot stands for, and its capture window.
pub fn names(running: &Running, reasons: BTreeMap<u32, String>) -> FlowNames {
    let rs = &running.ruleset;
    let enis = rs
        .enis
        .iter()
        .map(|eni| {
            let vswitch = rs.vswitches.get(eni.vswitch);
            let vpc = vswitch.and_then(|v| rs.vpcs.get(v.vpc));
            let ifindex = nix::net::if_::if_nametoindex(eni.interface.as_str()).ok();
            (
                ifindex,
                EniMeta {
                    id: eni.id.clone(),
                    vswitch_id: vswitch.map(|v| v.id.clone()),
                    vpc_id: vpc.map(|v| v.id.clone()),
                },
            )
        })
        .collect();
    FlowNames {
        generation: running.generation,
        enis,
        reasons,
        capture_window: rs
            .flow_log
            .capture_window_s
            .map(|s| Duration::from_secs(u64::from(s))),
    }
}
