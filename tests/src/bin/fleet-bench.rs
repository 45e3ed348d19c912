//! `cargo xtask bench`, the fleet part (SPEC §10, docs/FLEET.md "Scale"):
//! convergence time (a `shared` put → every host enforcing it) for 1, 10
//! and 50 hosts, and the revisions per second one host keeps up with.
//!
//! A real etcd on loopback and the real agent (`filter::fleet::Agent`:
//! watch, build, membership, validate, compile). The hosts share this
//! process as agents without a data plane: their target validates and
//! compiles each document with the library, and records the revision.
use std::{
    sync::{
        atomic::{AtomicI64, AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use etcd_client::Client;
use filter::{
    compile::{self, SlotTable},
    digest::document_digest,
    fleet::{Agent, Enforced, EtcdConfig, Keys, Target},
    validate,
};
use filter_tests::etcd::EtcdGuard;
use serde_json::{json, Value};
use tokio::sync::watch;

const ROUNDS: usize = 20;
const BURST: i64 = 500;

/// Validates and compiles like the daemon, without a data plane.
#[derive(Clone, Default)]
struct CompileOnly(Arc<Inner>);

#[derive(Default)]
struct Inner {
    running: Mutex<Option<Enforced>>,
    slots: Mutex<SlotTable>,
    generation: AtomicU32,
    revision: AtomicI64,
    builds: AtomicU32,
}

impl Target for CompileOnly {
    fn enforced(&self) -> Option<Enforced> {
        self.0.running.lock().ok()?.clone()
    }

    async fn enforce(&self, document: String, revision: i64) -> Result<Enforced, Vec<String>> {
        let rs = validate::load(&document)
            .map_err(|e| e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
        let generation = self.0.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let ifindex = |name: &str| {
            let i = rs.enis.iter().position(|e| e.interface == name)?;
            u32::try_from(i + 1).ok()
        };
        let mut slots = self.0.slots.lock().map_err(|e| vec![e.to_string()])?;
        compile::compile(&rs, generation, &ifindex, &mut slots).map_err(|e| vec![e.to_string()])?;
        let enforced = Enforced {
            generation,
            digest: document_digest(&document).unwrap_or_default(),
        };
        if let Ok(mut running) = self.0.running.lock() {
            *running = Some(enforced.clone());
        }
        self.0.builds.fetch_add(1, Ordering::Relaxed);
        self.0.revision.store(revision, Ordering::Release);
        Ok(enforced)
    }
}

/// `shared` whose rule admits `port` (each round changes it).
fn shared(port: u16) -> String {
    json!({
        "vpcs": [{"id": "vpc-1", "cidr": "192.0.2.0/24"}],
        "vswitches": [{"id": "vsw-1", "vpc_id": "vpc-1", "cidr": "192.0.2.0/24"}],
        "security_groups": [{"id": "sg-app", "vpc_id": "vpc-1", "type": "basic", "rules": [
            {"direction": "ingress", "policy": "accept", "ip_protocol": "tcp",
             "port_range": format!("{port}/{port}"), "source_group_id": "sg-app"}]}]
    })
    .to_string()
}

fn enis(host: usize) -> String {
    let eni: Value = json!({"id": format!("eni-{host}"), "interface": format!("tap{host}"),
        "vswitch_id": "vsw-1", "ips": [format!("192.0.2.{}", host + 1)],
        "security_group_ids": ["sg-app"]});
    json!([eni]).to_string()
}

/// Waits until every target has enforced `revision`; how long that took.
async fn converge(targets: &[CompileOnly], revision: i64, since: Instant) -> Result<Duration> {
    while targets
        .iter()
        .any(|t| t.0.revision.load(Ordering::Acquire) < revision)
    {
        if since.elapsed() > Duration::from_secs(60) {
            bail!("hosts did not reach revision {revision} within 60 s");
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    Ok(since.elapsed())
}

async fn put(client: &mut Client, key: String, value: String) -> Result<i64> {
    let response = client.put(key, value, None).await?;
    Ok(response.header().map_or(0, |h| h.revision()))
}

/// One row of the convergence table; with one host, also the burst
/// result, returned for after the table.
async fn fleet(
    client: &mut Client,
    config: &EtcdConfig,
    hosts: usize,
    port: &mut u16,
) -> Result<Option<String>> {
    let keys = config.keys.clone();
    let mut revision = 0;
    for h in 0..hosts {
        revision = put(client, keys.host_enis(&format!("h{h}")), enis(h)).await?;
    }
    let (stop, stopped) = watch::channel(false);
    let targets: Vec<CompileOnly> = (0..hosts).map(|_| CompileOnly::default()).collect();
    let tasks: Vec<_> = targets
        .iter()
        .enumerate()
        .map(|(h, target)| {
            let mut stopped = stopped.clone();
            let agent = Agent::new(config.clone(), format!("h{h}"), target.clone());
            tokio::spawn(agent.run(async move {
                let _ = stopped.wait_for(|s| *s).await;
            }))
        })
        .collect();
    converge(&targets, revision, Instant::now()).await?;
    let mut times = Vec::new();
    for _ in 0..ROUNDS {
        *port += 1;
        let since = Instant::now();
        let revision = put(client, keys.shared(), shared(*port)).await?;
        times.push(converge(&targets, revision, since).await?);
    }
    times.sort();
    let pct = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
    println!(
        "| {hosts} | {:.1} | {:.1} | {:.1} |",
        pct(50).as_secs_f64() * 1e3,
        pct(99).as_secs_f64() * 1e3,
        pct(100).as_secs_f64() * 1e3
    );
    let mut burst = None;
    if hosts == 1 {
        // A burst of revisions, back to back: how fast one host follows.
        let since = Instant::now();
        let mut last = 0;
        for _ in 0..BURST {
            *port += 1;
            last = put(client, keys.shared(), shared(*port)).await?;
        }
        let took = converge(&targets, last, since).await?;
        burst = Some(format!(
            "one host followed {BURST} revisions put back to back in {took:.2?}: {:.0} \
             revisions/s, in {} builds",
            BURST as f64 / took.as_secs_f64(),
            targets[0].0.builds.load(Ordering::Relaxed)
        ));
    }
    let _ = stop.send(true);
    for task in tasks {
        task.await?;
    }
    for h in 0..hosts {
        client
            .delete(keys.host_enis(&format!("h{h}")), None)
            .await?;
    }
    Ok(burst)
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("filter-fleet-bench-{}", std::process::id()));
    let etcd = EtcdGuard::start(None, "127.0.0.1".parse()?, &dir, None)?;
    let config = EtcdConfig {
        endpoints: vec![etcd.endpoint()],
        keys: Keys::new("/bench")?,
        tls: None,
    };
    let mut client = Client::connect([etcd.endpoint()], None).await?;
    let mut port = 1000;
    put(&mut client, config.keys.shared(), shared(port)).await?;
    println!(
        "fleet: convergence from a `shared` put to every host enforcing it ({ROUNDS} puts; \
         goal: 50 hosts within 1 s at p99)\n\n| hosts | p50 ms | p99 ms | max ms |\n|---|---|---|---|"
    );
    let mut bursts = Vec::new();
    for hosts in [1, 10, 50] {
        bursts.extend(fleet(&mut client, &config, hosts, &mut port).await?);
    }
    for line in bursts {
        println!("\n{line}");
    }
    Ok(())
}
