//! Metrics end to end (SPEC §9, issue 19): the real `filterd` with
//! `--metrics-listen` in a namespace, scraped from inside it.
//!
//! - `a_scrape_counts_known_traffic_exactly`: UDP datagrams of known size
//!   accepted by a rule, dropped by a rule on ingress and dropped by a rule
//!   on egress move `filter_packets_total` and `filter_bytes_total` of
//!   exactly their (ENI, direction, action, reason) by exactly what was
//!   sent; applies are counted by result; the scrape passes `promtool check
//!   metrics`; no label value is an address; and every metric the Grafana
//!   dashboard (`contrib/grafana/filter.json`) refers to is in the scrape.
//!
//! Addresses are RFC 5737 only. Everything is removed at the end.
use std::{
    collections::{BTreeSet, HashMap},
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use filter_tests::{
    daemon::{DaemonGuard, DaemonOptions},
    id::TestId,
    instance::HostAndInstance,
    netns::Netns,
};
use serde_json::{json, Value};

const HOST: &str = "192.0.2.1";
const VM: &str = "192.0.2.10";
/// Inside the test's host namespace: no other test shares its ports.
const METRICS: &str = "127.0.0.1:9464";
const PAYLOAD: usize = 100;
/// IP-layer bytes of one datagram: payload, UDP and IPv4 headers.
const DATAGRAM_BYTES: u64 = PAYLOAD as u64 + 8 + 20;

fn setup(id: &TestId) -> Result<HostAndInstance> {
    HostAndInstance::new(id, &format!("{HOST}/24"), &format!("{VM}/24"))
}

/// UDP 5353 in is accepted by a rule, 5354 in and 9 out dropped by rules.
fn document(tap: &str) -> Value {
    json!({
        "vpcs": [{"id": "vpc-met", "cidr": "192.0.2.0/24"}],
        "vswitches": [{"id": "vsw-met", "vpc_id": "vpc-met", "cidr": "192.0.2.0/25"}],
        "security_groups": [{
            "id": "sg-met", "vpc_id": "vpc-met", "type": "basic", "inner_access_policy": "drop",
            "rules": [
                {"id": "udp-in", "direction": "ingress", "policy": "accept", "priority": 1,
                 "ip_protocol": "udp", "port_range": "5353/5353", "source_cidr_ip": "0.0.0.0/0"},
                {"id": "deny-5354", "direction": "ingress", "policy": "drop", "priority": 1,
                 "ip_protocol": "udp", "port_range": "5354/5354", "source_cidr_ip": "0.0.0.0/0"},
                {"id": "block-9", "direction": "egress", "policy": "drop", "priority": 1,
                 "ip_protocol": "udp", "port_range": "9/9", "dest_cidr_ip": "0.0.0.0/0"}
            ]}],
        "enis": [{"id": "eni-met", "interface": tap, "attach_mode": "tap",
                  "vswitch_id": "vsw-met", "ips": [VM], "security_group_ids": ["sg-met"]}]
    })
}

// ---------------------------------------------------------------------------
// Scraping
// ---------------------------------------------------------------------------

/// `GET /metrics` from inside `ns`: the body.
fn scrape(ns: &Netns) -> Result<String> {
    let addr: SocketAddr = METRICS.parse()?;
    let text = ns.run(move || -> Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: filterd\r\nConnection: close\r\n\r\n")?;
        let mut response = String::new();
        s.read_to_string(&mut response)?;
        Ok(response)
    })??;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("not an HTTP response: {text:?}"))?;
    ensure!(head.starts_with("HTTP/1.1 200"), "scrape failed: {head}");
    ensure!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "not the text format: {head}"
    );
    Ok(body.to_owned())
}

/// Samples by `name{labels}` as written.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// The label values of every sample.
fn label_values(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, rest)) = line.split_once('{') else {
            continue;
        };
        let Some((labels, _)) = rest.rsplit_once('}') else {
            continue;
        };
        for pair in labels.split("\",") {
            if let Some((_, v)) = pair.split_once("=\"") {
                out.push(v.trim_end_matches('"').to_owned());
            }
        }
    }
    out
}

fn promtool(text: &str) -> Result<()> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running promtool (cargo xtask setup installs Debian's prometheus)")?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Every `filter_*` name the dashboard's expressions use.
fn dashboard_metrics() -> Result<BTreeSet<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/grafana/filter.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let panels = dashboard["panels"]
        .as_array()
        .ok_or_else(|| anyhow!("no panels"))?;
    let mut names = BTreeSet::new();
    for target in panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
    {
        let expr = target["expr"]
            .as_str()
            .ok_or_else(|| anyhow!("a target without expr: {target}"))?;
        let mut rest = expr;
        while let Some(at) = rest.find("filter_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
    }
    ensure!(names.len() >= 8, "the dashboard names only {names:?}");
    Ok(names)
}

// ---------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------

/// `count` datagrams of [`PAYLOAD`] bytes from `ns` to `to`.
fn send(ns: &Netns, from: &str, to: &str, port: u16, count: usize) -> Result<()> {
    let to: SocketAddr = (to.parse::<IpAddr>()?, port).into();
    let socket = ns.run(|| UdpSocket::bind((from, 0)))??;
    for _ in 0..count {
        ensure!(
            socket.send_to(&[0x5a; PAYLOAD], to)? == PAYLOAD,
            "short send"
        );
    }
    Ok(())
}

#[test]
fn a_scrape_counts_known_traffic_exactly() -> Result<()> {
    let id = TestId::new("metrics_scrape");
    scenario(&id)?;
    id.assert_nothing_left()
}

fn scenario(id: &TestId) -> Result<()> {
    let s = setup(id)?;
    let doc = document(&s.tap);
    let daemon = DaemonGuard::start_with(
        id,
        &s.host,
        DaemonOptions {
            ruleset: Some(doc.clone()),
            args: vec![
                "--capture-window".into(),
                "1s".into(),
                "--metrics-listen".into(),
                METRICS.into(),
            ],
            ..DaemonOptions::default()
        },
    )?;
    // The instance takes what is let in (no port unreachable errors back).
    let _sinks = [5353u16, 5354].map(|p| s.vm.run(|| UdpSocket::bind((VM, p))));
    // One apply that works and one that is rejected.
    daemon.apply(&doc)?;
    let bad = daemon.write_file("bad", r#"{"vpcs": [{"id": "v", "cidr": "10.0.0.1/8"}]}"#)?;
    let (error, _) = daemon.ctl_json_err(&["apply", &bad.to_string_lossy()])?;
    ensure!(error["code"] == "invalid_document", "{error}");
    let generation = daemon
        .generation()?
        .ok_or_else(|| anyhow!("nothing runs"))?;

    let before = samples(&scrape(&s.host)?);
    let eni = ("eni", "eni-met");
    let watched = [
        (("ingress", "ACCEPT", "sg-met/udp-in"), 37usize),
        (("ingress", "REJECT", "sg-met/deny-5354"), 23),
        (("egress", "REJECT", "sg-met/block-9"), 11),
    ];
    send(&s.host, HOST, VM, 5353, watched[0].1)?;
    send(&s.host, HOST, VM, 5354, watched[1].1)?;
    send(&s.vm, VM, HOST, 9, watched[2].1)?;

    let key = |family: &str, (dir, action, reason): (&str, &str, &str)| {
        series(
            family,
            &[
                eni,
                ("direction", dir),
                ("action", action),
                ("reason", reason),
            ],
        )
    };
    let delta = |now: &HashMap<String, f64>, k: &str| {
        now.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0)
    };
    // The counters move when the flow log closes a window (1 s here) and a
    // scrape renders anew (at most once a second).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = samples(&scrape(&s.host)?);
        let arrived = watched
            .iter()
            .all(|(k, n)| delta(&now, &key("filter_packets_total", *k)) >= *n as f64);
        if arrived {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the counters did not move within 20 s:\n{}",
                scrape(&s.host)?
            );
        }
        thread::sleep(Duration::from_millis(250));
    }
    // Two more windows and a fresh render: nothing more may come.
    thread::sleep(Duration::from_millis(2500));
    let text = scrape(&s.host)?;
    let now = samples(&text);
    for (k, n) in watched {
        let packets = delta(&now, &key("filter_packets_total", k));
        let bytes = delta(&now, &key("filter_bytes_total", k));
        ensure!(
            (packets, bytes) == (n as f64, n as f64 * DATAGRAM_BYTES as f64),
            "{k:?}: {packets} packets, {bytes} bytes; sent {n} datagrams:\n{text}"
        );
    }

    let get = |k: &str| now.get(k).copied();
    ensure!(
        get("filter_generation") == Some(generation as f64),
        "{text}"
    );
    ensure!(
        get(&series("filter_applies_total", &[("result", "ok")])) == Some(1.0),
        "{text}"
    );
    ensure!(
        get(&series("filter_applies_total", &[("result", "rejected")])) == Some(1.0),
        "{text}"
    );
    ensure!(
        get("filter_apply_duration_seconds_count") == Some(2.0),
        "{text}"
    );
    ensure!(
        get("filter_conntrack_capacity").is_some_and(|c| c > 0.0),
        "{text}"
    );
    let bounds = |family| get(&series(family, &[("map", "FILTER_BOUNDS")]));
    ensure!(
        bounds("filter_map_entries").is_some_and(|n| n > 0.0)
            && bounds("filter_map_capacity") == Some(f64::from(filter_common::INITIAL_BOUNDS)),
        "the running generation's ranges and FILTER_BOUNDS' size:\n{text}"
    );
    ensure!(
        get("filter_flowlog_records_total").is_some_and(|c| c > 0.0),
        "{text}"
    );
    let attached = now
        .iter()
        .filter(|(k, v)| k.starts_with("filter_interface_attached{eni=\"eni-met\"") && **v == 1.0)
        .count();
    ensure!(attached >= 2, "both hooks of the tap are attached:\n{text}");
    ensure!(
        text.lines()
            .any(|l| l.starts_with("filter_malformed_packets_total{kind=\"truncated_ipv4\"}")),
        "{text}"
    );

    // Label values come from the document, never from packets.
    for value in label_values(&text) {
        ensure!(
            value.parse::<IpAddr>().is_err() && value.parse::<SocketAddr>().is_err(),
            "an address as a label value: {value}"
        );
    }
    promtool(&text)?;
    for name in dashboard_metrics()? {
        ensure!(
            now.keys()
                .any(|k| k == &name || k.starts_with(&format!("{name}{{"))),
            "the dashboard uses {name}, which the scrape lacks:\n{text}"
        );
    }
    Ok(())
}
