//! `counters`: every reason's counters, or those that can decide at one
//! ENI.
use std::sync::Arc;

use super::{Daemon, DaemonError, Enforcer};
use crate::{
    api::{CountersParams, CountersResult, RuleCounter},
    eval,
};

impl<E: Enforcer> Daemon<E> {
    /// `counters`.
    pub async fn counters(
        self: &Arc<Self>,
        params: CountersParams,
    ) -> Result<CountersResult, DaemonError> {
        let running = self.running();
        let only = match (&params.eni, &running) {
            (None, _) => None,
            (Some(id), Some(r)) => {
                let eni = r.ruleset.eni_by_id(id).ok_or_else(|| {
                    DaemonError::Params(format!("no ENI {id:?} in generation {}", r.generation))
                })?;
                Some(eval::reasons(&r.ruleset, Some(eni)))
            }
            (Some(_), None) => return Err(DaemonError::NoGeneration),
        };
        let counters = self.blocking(|d| Ok(d.core().enforcer.counters()?)).await?;
        let rules = counters
            .into_iter()
            .filter(|c| only.as_ref().is_none_or(|only| only.contains(&c.reason)))
            .map(|c| RuleCounter {
                rule: c.reason.to_string(),
                packets: c.packets,
                bytes: c.bytes,
                last_hit: c.last_hit,
            })
            .collect();
        Ok(CountersResult {
            generation: running.map(|r| r.generation),
            eni: params.eni,
            rules,
        })
    }
}
