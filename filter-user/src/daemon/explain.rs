//! `explain`: the evaluator on the running generation, with the data
//! plane's tracked connection for the packet.
use std::sync::Arc;

use super::{Daemon, DaemonError, Enforcer};
use crate::{
    api::{ExplainParams, ExplainResult},
    eval,
};

impl<E: Enforcer> Daemon<E> {
    /// `explain`.
    pub async fn explain(
        self: &Arc<Self>,
        params: ExplainParams,
    ) -> Result<ExplainResult, DaemonError> {
        let running = self.running().ok_or(DaemonError::NoGeneration)?;
        let rs = &running.ruleset;
        let Some(eni) = rs.eni_by_id(&params.eni) else {
            let known: Vec<&str> = rs.enis.iter().map(|e| e.id.as_str()).collect();
            return Err(DaemonError::Params(format!(
                "no ENI {:?} in generation {}; ENIs: {}",
                params.eni,
                running.generation,
                known.join(", ")
            )));
        };
        let packet = params
            .packet()
            .map_err(|e| DaemonError::Params(e.message))?;
        let direction = params.direction;
        let interface = rs.enis[eni].interface.clone();
        let tracked = self
            .blocking(move |d| Ok(d.core().enforcer.tracked(&interface, direction, &packet)?))
            .await?;
        Ok(eval::explain(
            rs,
            running.generation,
            eni,
            direction,
            packet,
            tracked,
        ))
    }
}
