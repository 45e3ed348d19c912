//! Apply time and `filterd`'s peak RSS per rule count (issue 18): the
//! diverse generator's document through `filterctl apply`, a fresh daemon
//! per size guarding one veth end; and the realistic host, 200 ENIs on
//! veth ends (this kernel has no dummy driver) in 20 shared groups of 500 rules.
//!
//! Apply time is the wall time of `filterctl apply` (sending, validating,
//! compiling, writing the maps, attaching, answering); peak RSS is the
//! daemon's `VmHWM` after it.
use std::{fs, time::Instant};

use anyhow::{anyhow, ensure, Context as _, Result};
use filter::compile::synthetic::Generator;
use filter_tests::{
    daemon::DaemonGuard,
    id::TestId,
    netns::{Netns, TestNet},
};
use serde_json::{json, Value};

/// One measured apply.
#[derive(Clone, Debug)]
pub struct Point {
    pub what: String,
    pub rules: usize,
    pub apply_s: f64,
    /// The next apply: the same document with one rule more (the
    /// interfaces attached already).
    pub reapply_s: f64,
    /// The daemon's peak RSS after the apply, and before it (started,
    /// nothing applied), KiB.
    pub peak_kib: u64,
    pub idle_kib: u64,
}

/// The realistic host: ENIs, groups, rules per group.
const HOST_ENIS: usize = 200;
const HOST_GROUPS: usize = 20;
const HOST_GROUP_RULES: usize = 500;

pub fn run(sizes: &[usize]) -> Result<Vec<Point>> {
    println!("## Apply time and filterd's peak RSS\n");
    println!(
        "`filterctl apply` of a document to a fresh `filterd` (release build), its wall time \
         (the first apply attaches the interfaces; the next one adds a rule); the daemon's peak \
         RSS (`VmHWM`) after both. Diverse generator, one ENI on a veth end; then \
         200 ENIs (veth ends, `tc` hook) in 20 groups of 500 rules shared by 10 \
         ENIs each.\n"
    );
    println!(
        "| document | rules | first apply | next apply | peak RSS | RSS idle | peak KiB per rule |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut points = Vec::new();
    for &n in sizes {
        let doc = Generator::Diverse.document(n, "bench0");
        let point = measure(
            &format!("diverse, {}", crate::thousands(n)),
            n,
            &doc,
            &["bench0".into()],
        )?;
        print_point(&point);
        points.push(point);
    }
    let (doc, ifaces) = host();
    let point = measure(
        "200 ENIs, 20 groups",
        HOST_GROUPS * HOST_GROUP_RULES,
        &doc,
        &ifaces,
    )?;
    print_point(&point);
    points.push(point);
    println!();
    Ok(points)
}

fn print_point(p: &Point) {
    println!(
        "| {} | {} | {} | {} | {:.0} MiB | {:.0} MiB | {:.2} |",
        p.what,
        crate::thousands(p.rules),
        crate::seconds(p.apply_s),
        crate::seconds(p.reapply_s),
        p.peak_kib as f64 / 1024.0,
        p.idle_kib as f64 / 1024.0,
        p.peak_kib as f64 / p.rules as f64
    );
}

/// Applies `doc` to a fresh daemon in a namespace with interfaces
/// `ifaces`; checks that it was applied.
fn measure(what: &str, rules: usize, doc: &Value, ifaces: &[String]) -> Result<Point> {
    let id = TestId::new("bench");
    let mut net = TestNet::new(&id)?;
    let ns = net.netns("apply")?;
    interfaces(&ns, ifaces)?;
    let daemon = DaemonGuard::start(&id, &ns)?;
    let pid = daemon.pid().ok_or_else(|| anyhow!("filterd has no pid"))?;
    let idle_kib = hwm_kib(pid)?;
    let path = daemon.write_file("doc", &doc.to_string())?;
    let start = Instant::now();
    let answer = daemon.ctl_json(&["apply", &path.to_string_lossy()])?;
    let apply_s = start.elapsed().as_secs_f64();
    ensure!(
        daemon.generation()?.is_some(),
        "{what}: nothing applied: {answer}"
    );
    let mut changed = doc.clone();
    if let Some(rules) = changed["security_groups"][0]["rules"].as_array_mut() {
        rules.push(
            json!({"direction": "ingress", "policy": "accept", "priority": 1,
                          "ip_protocol": "tcp", "port_range": "65000/65000",
                          "source_cidr_ip": "198.51.100.0/24"}),
        );
    }
    let path = daemon.write_file("doc", &changed.to_string())?;
    let start = Instant::now();
    daemon.ctl_json(&["apply", &path.to_string_lossy()])?;
    let reapply_s = start.elapsed().as_secs_f64();
    let peak_kib = hwm_kib(pid)?;
    ensure!(
        daemon.generation()? == Some(2),
        "{what}: the second apply did not make generation 2"
    );
    drop(daemon);
    drop(net);
    Ok(Point {
        what: what.to_owned(),
        rules,
        apply_s,
        reapply_s,
        peak_kib,
        idle_kib,
    })
}

/// Creates the interfaces, up, in one `ip -batch`: veth pairs (`<name>`
/// and `<name>p`), as the kernel here has no dummy driver.
fn interfaces(ns: &Netns, names: &[String]) -> Result<()> {
    let batch: String = names
        .iter()
        .map(|n| {
            format!("link add {n} type veth peer name {n}p\nlink set {n} up\nlink set {n}p up\n")
        })
        .collect();
    let file = std::env::temp_dir().join(format!("{}-ifaces", ns.name()));
    fs::write(&file, batch).with_context(|| format!("writing {}", file.display()))?;
    let done = ns.ip(&["-batch", &file.to_string_lossy()]);
    let _ = fs::remove_file(&file);
    done.map(drop)
}

/// The daemon's peak RSS, KiB.
fn hwm_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmHWM in /proc/{pid}/status"))
}

/// The realistic host's document: the diverse generator's rules cut into
/// 20 groups of 500, ENI `i` on veth end `h<i>` in group `i % 20`.
fn host() -> (Value, Vec<String>) {
    let mut doc = Generator::Diverse.document(HOST_GROUPS * HOST_GROUP_RULES, "h0");
    let rules: Vec<Value> = doc["security_groups"]
        .as_array()
        .map(|groups| {
            groups
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                // Ids are unique per group only: the new groups number
                // their rules themselves.
                .map(|mut r| {
                    if let Some(r) = r.as_object_mut() {
                        r.remove("id");
                    }
                    r
                })
                .collect()
        })
        .unwrap_or_default();
    let groups: Vec<Value> = rules
        .chunks(HOST_GROUP_RULES)
        .take(HOST_GROUPS)
        .enumerate()
        .map(|(g, rules)| {
            json!({"id": format!("sg-host-{g}"), "vpc_id": "vpc-bench", "type": "basic",
                   "rules": rules})
        })
        .collect();
    let ifaces: Vec<String> = (0..HOST_ENIS).map(|i| format!("h{i}")).collect();
    let enis: Vec<Value> = ifaces
        .iter()
        .enumerate()
        .map(|(i, iface)| {
            json!({"id": format!("eni-{i}"), "interface": iface, "vswitch_id": "vsw-bench",
                   "ips": [format!("10.0.1.{}", 20 + i)],
                   "security_group_ids": [format!("sg-host-{}", i % HOST_GROUPS)]})
        })
        .collect();
    doc["security_groups"] = json!(groups);
    doc["enis"] = json!(enis);
    (doc, ifaces)
}
