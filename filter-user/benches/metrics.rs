//! Scrape benchmark (`cargo xtask bench`, or `cargo bench -p filter-user
//! --bench metrics`): a host whose 100k rules all counted in one capture
//! window, on 16 ENIs, both directions.
//!
//! Measures what the collector pays to add a window's records to the
//! verdict families, and what one scrape costs (rendering every family
//! from memory, the status read stubbed: it is one `status` call, whatever
//! the rule count), with the default cap of 10,000 rule series and without
//! one. No privileges needed.
use std::{
    future::Future,
    hint::black_box,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use filter::{
    api::{FlowAction, FlowRecord, LogStatus, StatusResult, FLOW_RECORD_VERSION},
    metrics::{Exporter, Metrics, StatusSource, DEFAULT_MAX_RULE_SERIES},
    ruleset::Direction,
};

const RULES: usize = 100_000;
const ENIS: usize = 16;

/// One record per rule: each on one ENI, both directions by turns.
fn window() -> Vec<Arc<FlowRecord>> {
    (0..RULES)
        .map(|i| {
            Arc::new(FlowRecord {
                version: FLOW_RECORD_VERSION,
                eni_id: format!("eni-{}", i % ENIS),
                vswitch_id: None,
                vpc_id: None,
                direction: Some(if i % 2 == 0 {
                    Direction::Ingress
                } else {
                    Direction::Egress
                }),
                srcaddr: Some([198, 51, 100, 7].into()),
                srcport: Some(40_000),
                dstaddr: Some([192, 0, 2, 10].into()),
                dstport: Some(80),
                protocol: Some(6),
                packets: Some(1 + (i as u64 * 7919) % 1000),
                bytes: Some(1500),
                start: 0,
                end: 60,
                action: Some(if i % 10 == 0 {
                    FlowAction::Reject
                } else {
                    FlowAction::Accept
                }),
                log_status: LogStatus::Ok,
                tcp_flags: Some(18),
                rule_id: Some(format!("sg-{}/rule-{i}", i % 10)),
                generation: Some(1),
                skipped: None,
                skip_reason: None,
            })
        })
        .collect()
}

struct Stub(StatusResult);

impl StatusSource for Stub {
    fn status(&self) -> Pin<Box<dyn Future<Output = Result<StatusResult, String>> + Send + '_>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

fn status() -> StatusResult {
    serde_json::from_value(serde_json::json!({
        "generation": 1, "applied_at": 0,
        "enis": (0..ENIS).map(|i| serde_json::json!({"id": format!("eni-{i}"),
            "interface": format!("tap{i}"), "attach_mode": "tap", "vswitch": "vsw",
            "hooks": ["tc", "tcx-egress"]})).collect::<Vec<_>>(),
        "conntrack": {"used": 1000, "size": 262_144}, "stats": [],
        "daemon": {"version": "", "pid": 1, "started_at": 0, "state_dir": "", "pin_dir": ""}
    }))
    .unwrap_or_else(|e| panic!("a status: {e}"))
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let out = black_box(f());
        best = best.min(t.elapsed());
        last = Some(out);
    }
    match last {
        Some(out) => (best, out),
        None => panic!("no runs"),
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("a runtime: {e}"));
    let records = window();
    println!("scrape at {RULES} rules on {ENIS} ENIs, every rule counted (best of 5)");
    println!("| rule series cap | add a window | scrape | body | series |");
    println!("|---|---|---|---|---|");
    for cap in [DEFAULT_MAX_RULE_SERIES, RULES] {
        let metrics = Arc::new(Metrics::new(cap));
        let (add, ()) = best_of(5, || metrics.add_window(&records, 0));
        let exporter = Exporter::new(
            Arc::clone(&metrics),
            Box::new(Stub(status())),
            Duration::ZERO,
        );
        let (scrape, body) = best_of(5, || {
            runtime
                .block_on(exporter.scrape())
                .unwrap_or_else(|e| panic!("a scrape: {e}"))
        });
        let series = body.lines().filter(|l| !l.starts_with('#')).count();
        println!(
            "| {cap} | {:.1} ms | {:.1} ms | {:.1} MiB | {series} |",
            add.as_secs_f64() * 1e3,
            scrape.as_secs_f64() * 1e3,
            body.len() as f64 / (1 << 20) as f64
        );
    }
}
