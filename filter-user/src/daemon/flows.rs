//! `flows`, with and without `follow`, and `monitor`: the flow log's
//! answers (SPEC §7, §9).
use std::sync::Arc;

use super::{Daemon, DaemonError, Enforcer};
use crate::{
    api::{FlowsParams, FlowsResult, MonitorParams},
    flowlog::{FlowError, FlowSource, MonitorSubscription},
};

impl<E: Enforcer> Daemon<E> {
    fn flow_source(&self) -> Result<Arc<dyn FlowSource>, DaemonError> {
        self.flow_source
            .clone()
            .ok_or_else(|| DaemonError::NotImplemented("this filterd has no flow log".to_owned()))
    }

    /// `flows`: the newest matching records of the flow-log file. (A
    /// `follow` request is a stream, which the server runs with
    /// [`Daemon::follow_flows`].)
    pub async fn flows(self: &Arc<Self>, params: FlowsParams) -> Result<FlowsResult, DaemonError> {
        let source = self.flow_source()?;
        let records = tokio::task::spawn_blocking(move || source.flows(&params))
            .await
            .map_err(|e| DaemonError::Internal(format!("a worker failed: {e}")))?
            .map_err(flow_error)?;
        Ok(FlowsResult { records })
    }

    /// `flows` with `follow`: the requested history, and a subscription to
    /// every window's matching records from now on. The subscription is
    /// made first, so no window falls between the two (one may be in
    /// both).
    pub async fn follow_flows(
        self: &Arc<Self>,
        params: FlowsParams,
    ) -> Result<(FlowsResult, crate::flowlog::Subscription), DaemonError> {
        let source = self.flow_source()?;
        let subscription = source.follow(&params).map_err(flow_error)?;
        let history = self.flows(params).await?;
        Ok((history, subscription))
    }

    /// `monitor`: a subscription to verdict events as they happen (a
    /// stream, which the server runs).
    pub fn monitor(&self, params: &MonitorParams) -> Result<MonitorSubscription, DaemonError> {
        self.flow_source()?.monitor(params).map_err(flow_error)
    }
}

fn flow_error(e: FlowError) -> DaemonError {
    match e {
        FlowError::InvalidParams(m) => DaemonError::Params(m),
        FlowError::Failed(m) => DaemonError::Internal(m),
    }
}
