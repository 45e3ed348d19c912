//! `flows` on the socket, without privileges: a daemon on the in-memory
//! enforcer whose flow source is a fan-out this test publishes to. The
//! stream protocol (history first, then one line per window), filters, a
//! bad request that leaves the connection usable, and a client that stops
//! reading: it gets `SKIPDATA` records whose counts add up to exactly what
//! it missed, while the daemon keeps answering others. (The real flow log
//! in namespaces: `tests/tests/flowlog_e2e.rs`.)
mod daemon_support;

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use daemon_support::MemoryEnforcer;
use filter::{
    api::{
        client::{Client, ClientError},
        ErrorCode, FlowAction, FlowRecord, FlowsParams, FlowsResult, LogStatus, Method, NoParams,
        SkipReason, FLOW_RECORD_VERSION,
    },
    daemon::{library::LibraryValidator, serve, Daemon, DaemonConfig, DirLocks, ServerConfig},
    flowlog::{
        fanout::{Batch, Fanout, Subscription},
        record::FlowFilter,
        window::Window,
        FlowError, FlowNames, FlowSource,
    },
    ruleset::Direction,
};
use tokio::{net::UnixListener, sync::oneshot, time::timeout};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A flow source whose records the test publishes.
struct Stub {
    history: Vec<FlowRecord>,
    fanout: Fanout,
    generations: Mutex<Vec<Option<u32>>>,
}

impl FlowSource for Stub {
    fn flows(&self, query: &FlowsParams) -> Result<Vec<FlowRecord>, FlowError> {
        let filter = FlowFilter::new(query).map_err(|e| FlowError::InvalidParams(e.message))?;
        let limit = query.limit.unwrap_or(if query.follow { 0 } else { 1000 });
        let mut out: Vec<FlowRecord> = self
            .history
            .iter()
            .filter(|r| filter.matches(r))
            .cloned()
            .collect();
        out.drain(..out.len().saturating_sub(limit));
        Ok(out)
    }

    fn follow(&self, query: &FlowsParams) -> Result<Subscription, FlowError> {
        let filter = FlowFilter::new(query).map_err(|e| FlowError::InvalidParams(e.message))?;
        Ok(self.fanout.subscribe(filter))
    }

    fn generation(&self, names: Option<FlowNames>) {
        self.generations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(names.map(|n| n.generation));
    }
}

fn record(n: u16, action: FlowAction, window: u64) -> FlowRecord {
    let addr = |s: &str| s.parse::<IpAddr>().ok();
    FlowRecord {
        version: FLOW_RECORD_VERSION,
        eni_id: "eni-web1".into(),
        vswitch_id: Some("vsw-web".into()),
        vpc_id: Some("vpc-prod".into()),
        direction: Some(Direction::Ingress),
        srcaddr: addr("198.51.100.7"),
        srcport: Some(40_000 + n),
        dstaddr: addr("192.0.2.10"),
        dstport: Some(80),
        protocol: Some(6),
        packets: Some(1),
        bytes: Some(60),
        start: window,
        end: window + 1,
        action: Some(action),
        log_status: LogStatus::Ok,
        tcp_flags: Some(2),
        rule_id: Some("sg-web/http".into()),
        generation: Some(1),
        skipped: None,
        skip_reason: None,
    }
}

fn batch(window: u64, records: Vec<FlowRecord>) -> Batch {
    Batch {
        window: Window {
            start: window,
            end: window + 1,
        },
        records: records.into_iter().map(Arc::new).collect(),
    }
}

struct Running {
    _tmp: tempfile::TempDir,
    socket: std::path::PathBuf,
    stub: Arc<Stub>,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

async fn start(
    history: Vec<FlowRecord>,
    queue: usize,
) -> Result<Running, Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let (state, pins, socket) = (
        tmp.path().join("state"),
        tmp.path().join("pins"),
        tmp.path().join("filterd.sock"),
    );
    let stub = Arc::new(Stub {
        history,
        fanout: Fanout::new(queue),
        generations: Mutex::new(Vec::new()),
    });
    let daemon = Daemon::open(
        DaemonConfig::new(&state, &pins),
        DirLocks::acquire(&state, &pins)?,
        MemoryEnforcer::new(),
        Arc::new(LibraryValidator::any_interface()),
    )?
    .with_flow_source(Arc::clone(&stub) as Arc<dyn FlowSource>);
    daemon.start(None)?;
    let bound = filter::daemon::socket::bind(&socket, None)?;
    let listener = UnixListener::from_std(bound.try_clone_listener()?)?;
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _bound = bound;
        serve(
            listener,
            Arc::new(daemon),
            ServerConfig::default(),
            async move {
                let _ = rx.await;
            },
        )
        .await;
    });
    Ok(Running {
        _tmp: tmp,
        socket,
        stub,
        stop: Some(tx),
        server,
    })
}

impl Running {
    async fn stop(mut self) -> TestResult {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        timeout(Duration::from_secs(10), &mut self.server).await??;
        Ok(())
    }
}

async fn next(c: &mut Client) -> Result<Vec<FlowRecord>, Box<dyn std::error::Error>> {
    let value = timeout(Duration::from_secs(10), c.next_in_stream())
        .await??
        .ok_or("the stream ended")?;
    Ok(serde_json::from_value::<FlowsResult>(value)?.records)
}

#[tokio::test]
async fn history_then_windows_with_filters() -> TestResult {
    let history = vec![
        record(1, FlowAction::Accept, 100),
        record(2, FlowAction::Reject, 100),
        record(3, FlowAction::Reject, 101),
    ];
    let d = start(history, 8).await?;
    // Without follow: the newest matching records, oldest first.
    let mut c = Client::connect(&d.socket).await?;
    let r: FlowsResult = c
        .call_as(
            Method::Flows,
            FlowsParams {
                action: Some("REJECT".into()),
                ..FlowsParams::default()
            },
        )
        .await?;
    let ports: Vec<_> = r.records.iter().map(|r| r.srcport).collect();
    assert_eq!(ports, vec![Some(40_002), Some(40_003)]);

    // With follow: the history asked for, then each window's matches.
    let mut f = Client::connect(&d.socket).await?;
    let first = f
        .stream(
            Method::Flows,
            FlowsParams {
                follow: true,
                action: Some("REJECT".into()),
                limit: Some(1),
                ..FlowsParams::default()
            },
        )
        .await?
        .ok_or("no first line")?;
    let first: FlowsResult = serde_json::from_value(first)?;
    assert_eq!(first.records.len(), 1);
    assert_eq!(first.records[0].srcport, Some(40_003));
    d.stub.fanout.publish(&batch(
        102,
        vec![
            record(4, FlowAction::Accept, 102),
            record(5, FlowAction::Reject, 102),
        ],
    ));
    // A window with nothing for this client sends nothing.
    d.stub
        .fanout
        .publish(&batch(103, vec![record(6, FlowAction::Accept, 103)]));
    d.stub
        .fanout
        .publish(&batch(104, vec![record(7, FlowAction::Reject, 104)]));
    let w = next(&mut f).await?;
    assert_eq!(w.len(), 1);
    assert_eq!((w[0].srcport, w[0].start), (Some(40_005), 102));
    let w = next(&mut f).await?;
    assert_eq!((w[0].srcport, w[0].start), (Some(40_007), 104));

    // The other client's connection was never disturbed.
    let v: serde_json::Value = c.call(Method::Version, NoParams {}).await?;
    assert_eq!(v["protocol"], 1);
    drop(f);
    d.stop().await
}

#[tokio::test]
async fn a_bad_follow_request_is_answered_and_the_connection_goes_on() -> TestResult {
    let d = start(Vec::new(), 8).await?;
    let mut c = Client::connect(&d.socket).await?;
    let bad = c
        .stream(
            Method::Flows,
            FlowsParams {
                follow: true,
                proto: Some("nope".into()),
                ..FlowsParams::default()
            },
        )
        .await;
    match bad {
        Err(ClientError::Api(e)) => assert_eq!(e.code, ErrorCode::InvalidParams, "{e}"),
        other => panic!("expected invalid_params, got {other:?}"),
    }
    let v: serde_json::Value = c.call(Method::Version, NoParams {}).await?;
    assert_eq!(v["protocol"], 1);
    d.stop().await
}

#[tokio::test]
async fn a_client_that_stops_reading_gets_exact_skipdata_and_stalls_no_one() -> TestResult {
    // A queue of one window: the client falls behind fast.
    let d = start(Vec::new(), 1).await?;
    let mut slow = Client::connect(&d.socket).await?;
    slow.stream(
        Method::Flows,
        FlowsParams {
            follow: true,
            ..FlowsParams::default()
        },
    )
    .await?;
    let mut fast = Client::connect(&d.socket).await?;
    fast.stream(
        Method::Flows,
        FlowsParams {
            follow: true,
            ..FlowsParams::default()
        },
    )
    .await?;
    // 40 windows of 500 records (about 180 KB each): far more than the
    // socket buffers and the queue hold, while `slow` reads nothing.
    let windows = 40u64;
    let per_window = 500u16;
    for w in 0..windows {
        let records = (0..per_window)
            .map(|n| record(n, FlowAction::Accept, 1000 + w))
            .collect();
        d.stub.fanout.publish(&batch(1000 + w, records));
        // The fast client keeps up; publishing never waited for `slow`.
        let got = next(&mut fast).await?;
        assert_eq!(got.len(), usize::from(per_window));
        assert!(got.iter().all(|r| r.start == 1000 + w));
    }
    // The daemon answers while `slow` is stuck.
    let mut other = Client::connect(&d.socket).await?;
    timeout(
        Duration::from_secs(5),
        other.call(Method::Version, NoParams {}),
    )
    .await??;

    // `slow` reads again: what it got plus what SKIPDATA says it missed is
    // everything, per window.
    let mut received: std::collections::BTreeMap<u64, u64> = Default::default();
    let mut skipped: std::collections::BTreeMap<u64, u64> = Default::default();
    while received.values().sum::<u64>() + skipped.values().sum::<u64>()
        < windows * u64::from(per_window)
    {
        for r in next(&mut slow).await? {
            match r.log_status {
                LogStatus::Ok => *received.entry(r.start).or_default() += 1,
                LogStatus::Skipdata => {
                    assert_eq!(r.skip_reason, Some(SkipReason::SlowReader), "{r:?}");
                    assert_eq!(r.eni_id, "eni-web1");
                    assert_eq!(r.end, r.start + 1, "the window's bounds: {r:?}");
                    *skipped.entry(r.start).or_default() += r.skipped.unwrap_or(0);
                }
                LogStatus::Nodata => panic!("{r:?}"),
            }
        }
    }
    assert!(!skipped.is_empty(), "nothing was skipped");
    for w in 0..windows {
        let (got, lost) = (
            received.get(&(1000 + w)).copied().unwrap_or(0),
            skipped.get(&(1000 + w)).copied().unwrap_or(0),
        );
        assert_eq!(got + lost, u64::from(per_window), "window {w}");
        assert!(
            got == 0 || lost == 0,
            "a window is sent whole or not at all"
        );
    }
    // Caught up: the next window comes through whole.
    d.stub
        .fanout
        .publish(&batch(2000, vec![record(1, FlowAction::Accept, 2000)]));
    assert_eq!(next(&mut slow).await?[0].start, 2000);
    d.stop().await
}

#[tokio::test]
async fn the_flow_source_hears_about_generations() -> TestResult {
    let d = start(Vec::new(), 8).await?;
    let mut c = Client::connect(&d.socket).await?;
    let doc = serde_json::json!({
        "vpcs": [{"id": "vpc-a", "cidr": "192.0.2.0/24"}],
        "vswitches": [{"id": "vsw-a", "vpc_id": "vpc-a", "cidr": "192.0.2.0/25"}],
        "security_groups": [{"id": "sg-a", "vpc_id": "vpc-a", "type": "basic", "rules": []}],
        "enis": [{"id": "eni-a", "interface": "tap-a", "vswitch_id": "vsw-a",
                  "ips": ["192.0.2.10"], "security_group_ids": ["sg-a"]}]
    });
    c.call(
        Method::Apply,
        filter::api::ApplyParams {
            document: doc.to_string(),
            dry_run: false,
            if_generation: None,
        },
    )
    .await?;
    c.call(Method::Detach, NoParams {}).await?;
    let seen = d
        .stub
        .generations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    assert_eq!(seen, vec![Some(1), None]);
    d.stop().await
}
