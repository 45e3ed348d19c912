//! Prometheus metrics (SPEC §9, `docs/METRICS.md`) at `/metrics` on
//! `--metrics-listen`.
//!
//! - [`verdicts`]: packets and bytes by (ENI, direction, action, reason),
//!   added up from the flow log's window records, rule series capped.
//! - [`status`]: conntrack fill, the generation, attachments and malformed
//!   drops, from a `status` snapshot.
//! - [`http`]: the HTTP server.
//! - `label`: label values escaped for the text format.
//!
//! [`Metrics`] hears about applies ([`ApplyObserver`]) and flow-log windows
//! ([`WindowObserver`]); [`Exporter`] renders a scrape. A scrape never
//! touches the data plane itself: it reads `status` (which the daemon
//! serves like any client's) at most once per [`Exporter`] refresh
//! interval, one scrape at a time, and renders from memory.
pub mod http;
mod label;
pub mod status;
pub mod verdicts;

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};
use thiserror::Error;

pub use self::{
    label::LabelValue,
    status::{Snapshot, StatusFamilies},
    verdicts::{Verdicts, OTHER_RULES},
};
use crate::{
    api::{FlowRecord, LogStatus, SkipReason, StatusResult},
    daemon::{ApplyObserver, ApplyOutcome, Daemon, Enforcer},
    flowlog::WindowObserver,
};

/// `--metrics-max-rule-series`'s default (SPEC §9).
pub const DEFAULT_MAX_RULE_SERIES: usize = 10_000;
/// How old a rendered scrape may be before the next scrape renders anew.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(1);
/// How long a scrape waits for the daemon's `status` before it renders
/// the previous snapshot (an apply holds the data plane meanwhile).
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("--metrics-listen {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("encoding the metrics: {0}")]
    Encode(#[from] std::fmt::Error),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Every family, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    verdicts: Verdicts,
    status: Arc<StatusFamilies>,
    applies: Family<ResultLabel, Counter>,
    apply_seconds: Histogram,
    records: Counter,
    lost: Family<ReasonLabel, Counter>,
}

impl Metrics {
    /// The families, with at most `max_rule_series` rules of their own.
    pub fn new(max_rule_series: usize) -> Metrics {
        let mut registry = Registry::default();
        let verdicts = Verdicts::new(&mut registry, max_rule_series);
        let status = Arc::new(StatusFamilies::default());
        registry.register_collector(Box::new(SharedStatus(Arc::clone(&status))));
        let applies = Family::<ResultLabel, Counter>::default();
        registry.register(
            "filter_applies",
            "Applies and rollbacks by result (ok, rejected: the document, failed: the data plane)",
            applies.clone(),
        );
        // 1 ms to about 65 s.
        let apply_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register(
            "filter_apply_duration_seconds",
            "How long applies and rollbacks took, validation to switch",
            apply_seconds.clone(),
        );
        let records = Counter::default();
        registry.register(
            "filter_flowlog_records",
            "Flow-log records written (OK, NODATA and SKIPDATA)",
            records.clone(),
        );
        let lost = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "filter_flowlog_lost",
            "What the flow log lost, by reason: events, packets, evicted flows, records a slow --follow client missed",
            lost.clone(),
        );
        // Every result and reason from the start, so rate() sees the first.
        for result in ["ok", "rejected", "failed"] {
            drop(applies.get_or_create(&ResultLabel { result }));
        }
        for reason in [
            SkipReason::EventsLost,
            SkipReason::PacketsLost,
            SkipReason::Evicted,
            SkipReason::SlowReader,
        ] {
            drop(lost.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            }));
        }
        Metrics {
            registry,
            verdicts,
            status,
            applies,
            apply_seconds,
            records,
            lost,
        }
    }

    /// Replaces the snapshot families with what `status` said.
    pub fn set_status(&self, status: &StatusResult) {
        self.status.set(Snapshot::from(status));
    }

    /// The Prometheus text exposition (0.0.4) of every family.
    pub fn encode(&self) -> Result<String, MetricsError> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(openmetrics_to_text(&text))
    }

    /// The verdict families (benchmarks, tests).
    pub fn verdicts(&self) -> &Verdicts {
        &self.verdicts
    }
}

/// prometheus-client writes OpenMetrics, where a counter family `x` has
/// samples `x_total`; the Prometheus text format (what `promtool check
/// metrics` and every scraper read) names the family `x_total` too, and
/// has no `# EOF`.
fn openmetrics_to_text(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len() + 64 * counters.len());
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{prefix}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The registry owns its collectors: this one shares the snapshot.
#[derive(Debug)]
struct SharedStatus(Arc<StatusFamilies>);

impl prometheus_client::collector::Collector for SharedStatus {
    fn encode(
        &self,
        encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}

impl ApplyObserver for Metrics {
    fn applied(&self, outcome: ApplyOutcome, took: Duration) {
        let result = match outcome {
            ApplyOutcome::Ok => "ok",
            ApplyOutcome::Rejected => "rejected",
            ApplyOutcome::Failed => "failed",
        };
        self.applies.get_or_create(&ResultLabel { result }).inc();
        self.apply_seconds.observe(took.as_secs_f64());
    }
}

impl Metrics {
    /// Adds one window's records and losses (see [`WindowObserver`]).
    pub fn add_window(&self, records: &[Arc<FlowRecord>], slow_reader_lost: u64) {
        self.verdicts.add(records);
        self.records.inc_by(records.len() as u64);
        for r in records {
            if let (LogStatus::Skipdata, Some(reason), Some(n)) =
                (r.log_status, r.skip_reason, r.skipped)
            {
                self.lost
                    .get_or_create(&ReasonLabel {
                        reason: reason.as_str(),
                    })
                    .inc_by(n);
            }
        }
        if slow_reader_lost > 0 {
            self.lost
                .get_or_create(&ReasonLabel {
                    reason: SkipReason::SlowReader.as_str(),
                })
                .inc_by(slow_reader_lost);
        }
    }
}

/// The collector calls this on its task: the adding (half a second for a
/// window of 100k flows, `cargo xtask bench`) runs on a blocking thread.
impl WindowObserver for Arc<Metrics> {
    fn window(&self, records: &[Arc<FlowRecord>], slow_reader_lost: u64) {
        let (metrics, records) = (Arc::clone(self), records.to_vec());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || metrics.add_window(&records, slow_reader_lost));
            }
            Err(_) => metrics.add_window(&records, slow_reader_lost),
        }
    }
}

/// Where a scrape reads `status` from: the daemon, or a stand-in in tests.
pub trait StatusSource: Send + Sync + 'static {
    fn status(&self) -> Pin<Box<dyn Future<Output = Result<StatusResult, String>> + Send + '_>>;
}

impl<E: Enforcer> StatusSource for Arc<Daemon<E>> {
    fn status(&self) -> Pin<Box<dyn Future<Output = Result<StatusResult, String>> + Send + '_>> {
        Box::pin(async move { Daemon::status(self).await.map_err(|e| e.to_string()) })
    }
}

/// Renders scrapes: one at a time, at most one per refresh interval (a
/// scrape within it gets the previous text).
pub struct Exporter {
    metrics: Arc<Metrics>,
    source: Box<dyn StatusSource>,
    refresh: Duration,
    last: tokio::sync::Mutex<Option<(Instant, Arc<str>)>>,
}

impl Exporter {
    pub fn new(metrics: Arc<Metrics>, source: Box<dyn StatusSource>, refresh: Duration) -> Self {
        Exporter {
            metrics,
            source,
            refresh,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The text of a scrape.
    pub async fn scrape(&self) -> Result<Arc<str>, MetricsError> {
        let mut last = self.last.lock().await;
        if let Some((at, text)) = &*last {
            if at.elapsed() < self.refresh {
                return Ok(Arc::clone(text));
            }
        }
        match tokio::time::timeout(STATUS_TIMEOUT, self.source.status()).await {
            Ok(Ok(status)) => self.metrics.set_status(&status),
            Ok(Err(e)) => tracing::warn!("metrics: reading the status: {e}"),
            Err(_) => tracing::warn!(
                "metrics: the status took over {STATUS_TIMEOUT:?}; serving the previous one"
            ),
        }
        let text: Arc<str> = Arc::from(self.metrics.encode()?);
        *last = Some((Instant::now(), Arc::clone(&text)));
        Ok(text)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;
    use crate::{api::FlowAction, flowlog::record::tests::tcp_record};

    /// Every family of SPEC §9 is in a scrape, under its name.
    #[test]
    fn a_scrape_has_every_family_of_the_spec() {
        let metrics = Metrics::new(10);
        metrics.add_window(
            &[Arc::new(FlowRecord {
                action: Some(FlowAction::Accept),
                rule_id: Some("sg/http".into()),
                ..tcp_record()
            })],
            2,
        );
        metrics.applied(ApplyOutcome::Ok, Duration::from_millis(20));
        let status: StatusResult = serde_json::from_value(serde_json::json!({
            "generation": 3, "applied_at": 1, "enis": [], "conntrack": {"used": 1, "size": 8},
            "stats": [{"name": "drop_bad_ihl", "packets": 4, "drop": true}],
            "daemon": {"version": "", "pid": 1, "started_at": 0, "state_dir": "", "pin_dir": ""}
        }))
        .unwrap();
        metrics.set_status(&status);
        let text = metrics.encode().unwrap();
        if let Ok(path) = std::env::var("FILTER_METRICS_SAMPLE") {
            std::fs::write(path, &text).unwrap();
        }
        for line in [
            r#"filter_packets_total{eni="eni-web1",direction="ingress",action="ACCEPT",reason="sg/http"} 5"#,
            "# TYPE filter_bytes_total counter",
            "filter_conntrack_entries 1",
            "filter_conntrack_capacity 8",
            "filter_generation 3",
            r#"filter_applies_total{result="ok"} 1"#,
            r#"filter_applies_total{result="rejected"} 0"#,
            "filter_apply_duration_seconds_count 1",
            "filter_flowlog_records_total 1",
            r#"filter_flowlog_lost_total{reason="slow_reader"} 2"#,
            "# TYPE filter_interface_attached gauge",
            r#"filter_malformed_packets_total{kind="bad_ihl"} 4"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
    }
}
