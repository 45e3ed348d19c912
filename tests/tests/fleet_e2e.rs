//! A fleet of hosts taking their rules from a real etcd (SPEC §10).
//!
//! The network: one namespace `hub` holds a bridge (198.51.100.1/24) and
//! the etcd server, listening on that address; every host is a namespace
//! with a veth onto the bridge (198.51.100.1K/24) running the real
//! `filterd` (`nsenter --net`). So each daemon reaches etcd over a link of
//! its own, and a test cuts one host off by taking its link down.
//! Instances are namespaces behind a veth whose host end is the ENI's tap;
//! routing is Calico's: the instance has a /32 and a device default route,
//! the host answers ARP for it (proxy ARP) and routes /32s to its taps, the
//! hub routes each instance's /32 to its host. Instance addresses are in
//! 192.0.2.0/24; `filterctl fleet` and `etcdctl` run in the hub.
use std::{
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use filter_tests::{
    daemon::{output_within, Binaries, DaemonGuard, DaemonOptions, CTL_TIMEOUT},
    etcd::{EtcdGuard, Tls},
    id::TestId,
    netns::{Iface, Netns, TestNet},
};
use serde_json::{json, Value};

const HUB: &str = "198.51.100.1";
const PREFIX: &str = "/filter";
/// How long a change may take to reach every host (2 shared cores).
const CONVERGE: Duration = Duration::from_secs(30);
const DB: u16 = 5432;
const ADMIN: u16 = 5433;

/// An instance: its namespace, its address, and the host end of its link.
struct Instance {
    name: String,
    netns: Netns,
    ip: IpAddr,
    tap: String,
}

/// Hosts, instances, etcd and daemons of one test. Fields drop in order:
/// listeners and daemons before etcd, everything before the namespaces.
struct Fleet {
    listeners: Vec<TcpListener>,
    daemons: Vec<Option<DaemonGuard>>,
    etcd: EtcdGuard,
    hub: Netns,
    hosts: Vec<(Netns, Iface)>,
    daemon_ids: Vec<TestId>,
    net: TestNet,
}

impl Fleet {
    fn new(test: &str, hosts: usize, tls: bool) -> Result<Fleet> {
        let id = TestId::new(test);
        let mut net = TestNet::new(&id)?;
        let hub = net.netns("hub")?;
        hub.ip(&["link", "add", "br0", "type", "bridge"])?;
        hub.ip(&["link", "set", "br0", "up"])?;
        let bridge = Iface {
            netns: hub.clone(),
            name: "br0".into(),
        };
        net.addr(&bridge, &format!("{HUB}/24"))?;
        hub.run_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let mut host_list = Vec::new();
        for k in 1..=hosts {
            let host = net.netns(&format!("h{k}"))?;
            let link = net.veth(&host, &hub)?;
            hub.ip(&["link", "set", &link.b.name, "master", "br0"])?;
            net.addr(&link.a, &format!("198.51.100.{}/24", 10 + k))?;
            host.ip(&["route", "add", "default", "via", HUB])?;
            host.run_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
            host_list.push((host, link.a));
        }
        let dir = std::env::temp_dir().join(format!("{}etcd", id.netns_prefix()));
        let tls = tls
            .then(|| Tls::generate(&dir.join("tls"), HUB.parse()?))
            .transpose()?;
        let etcd = EtcdGuard::start(Some(&hub), HUB.parse()?, &dir, tls)?;
        let daemon_ids = (1..=hosts)
            .map(|k| TestId::new(&format!("{test}_h{k}")))
            .collect();
        Ok(Fleet {
            listeners: Vec::new(),
            daemons: (0..hosts).map(|_| None).collect(),
            etcd,
            hub,
            hosts: host_list,
            daemon_ids,
            net,
        })
    }

    fn host_id(k: usize) -> String {
        format!("h{}", k + 1)
    }

    /// An instance at `ip` behind host `k`, listening on [`DB`] and [`ADMIN`].
    fn instance(&mut self, name: &str, k: usize, ip: &str) -> Result<Instance> {
        let netns = self.net.netns(name)?;
        let mut instance = Instance {
            name: name.to_owned(),
            netns,
            ip: ip.parse()?,
            tap: String::new(),
        };
        self.plug(&mut instance, k)?;
        for port in [DB, ADMIN] {
            let addr = SocketAddr::new(instance.ip, port);
            let listener = instance.netns.run(move || TcpListener::bind(addr))??;
            self.listeners.push(listener);
        }
        Ok(instance)
    }

    /// Links `instance` to host `k` (a new veth) and routes to it there.
    fn plug(&mut self, instance: &mut Instance, k: usize) -> Result<()> {
        let (host, uplink) = &self.hosts[k];
        let (host, uplink) = (host.clone(), uplink.clone());
        let link = self.net.veth(&instance.netns, &host)?;
        self.net.addr(&link.a, &format!("{}/32", instance.ip))?;
        instance
            .netns
            .ip(&["route", "add", "default", "dev", &link.a.name])?;
        host.run_ok(&[
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.{}.proxy_arp=1", link.b.name),
        ])?;
        let ip = instance.ip.to_string();
        host.ip(&["route", "add", &format!("{ip}/32"), "dev", &link.b.name])?;
        let via = self.hub_route_via(&uplink)?;
        self.hub
            .ip(&["route", "replace", &format!("{ip}/32"), "via", &via])?;
        instance.tap = link.b.name;
        Ok(())
    }

    fn hub_route_via(&self, uplink: &Iface) -> Result<String> {
        let out = uplink
            .netns
            .ip(&["-4", "-o", "addr", "show", "dev", &uplink.name])?;
        let cidr = out
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .ok_or_else(|| anyhow!("no address on {}: {out}", uplink.name))?;
        Ok(cidr.split('/').next().unwrap_or(cidr).to_owned())
    }

    /// Moves `instance` to host `k`: its old link goes, a new one comes.
    fn move_instance(&mut self, instance: &mut Instance, k: usize) -> Result<()> {
        instance
            .netns
            .ip(&["link", "del", &instance.name_in_ns()?])?;
        self.plug(instance, k)
    }

    fn daemon_args(&self, k: usize) -> Vec<String> {
        let mut args = vec![
            "--etcd-endpoints".to_owned(),
            self.etcd.endpoint(),
            "--etcd-prefix".to_owned(),
            PREFIX.to_owned(),
            "--host-id".to_owned(),
            Self::host_id(k),
        ];
        args.extend(self.tls_args(false));
        args
    }

    fn tls_args(&self, stranger: bool) -> Vec<String> {
        let Some(tls) = self.etcd.tls() else {
            return Vec::new();
        };
        let (cert, key) = if stranger {
            (&tls.stranger_cert, &tls.stranger_key)
        } else {
            (&tls.client_cert, &tls.client_key)
        };
        [
            ("--etcd-cacert", &tls.ca),
            ("--etcd-cert", cert),
            ("--etcd-key", key),
        ]
        .iter()
        .flat_map(|(flag, path)| [(*flag).to_owned(), path.display().to_string()])
        .collect()
    }

    fn start_daemon(&mut self, k: usize) -> Result<()> {
        let options = DaemonOptions {
            args: self.daemon_args(k),
            ..DaemonOptions::default()
        };
        let daemon = DaemonGuard::start_with(&self.daemon_ids[k], &self.hosts[k].0, options)?;
        self.daemons[k] = Some(daemon);
        Ok(())
    }

    fn daemon(&mut self, k: usize) -> Result<&mut DaemonGuard> {
        self.daemons[k]
            .as_mut()
            .ok_or_else(|| anyhow!("host {k} has no daemon"))
    }

    /// `filterctl [--json] fleet --etcd-endpoints … <args>` in the hub.
    fn fleet_ctl(&self, json: bool, args: &[&str], stranger: bool) -> Result<std::process::Output> {
        let bins = Binaries::locate()?;
        let mut cmd = self.hub.cmd(&bins.filterctl.to_string_lossy());
        if json {
            cmd.arg("--json");
        }
        cmd.args(["fleet", "--etcd-endpoints", &self.etcd.endpoint()])
            .args(["--etcd-prefix", PREFIX, "--config", "/nonexistent.toml"])
            .args(self.tls_args(stranger));
        // `put` reads its file: make the subcommand come after the flags.
        cmd.args(args);
        output_within(&mut cmd, CTL_TIMEOUT)
    }

    /// `filterctl --json fleet put …` of `value` (written to a file): the
    /// revision of the write.
    fn put(&self, what: &[&str], value: &Value) -> Result<i64> {
        let path = self.file(&value.to_string())?;
        let mut args = vec!["put"];
        args.extend_from_slice(what);
        let path = path.to_string_lossy().into_owned();
        args.push(&path);
        let out = self.fleet_ctl(true, &args, false)?;
        ensure!(
            out.status.success(),
            "filterctl fleet {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout)?;
        v["revision"]
            .as_i64()
            .ok_or_else(|| anyhow!("no revision: {v}"))
    }

    /// A file in the etcd guard's directory (removed with it).
    fn file(&self, text: &str) -> Result<PathBuf> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = self.etcd.dir().join(format!("doc-{n}.json"));
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// Host `k`'s status key, if there is one.
    fn status(&self, k: usize) -> Result<Option<Value>> {
        let key = format!("{PREFIX}/v1/status/{}", Self::host_id(k));
        self.etcd
            .get(&key)?
            .map(|text| serde_json::from_str(&text).context("a status key"))
            .transpose()
    }

    /// Waits until every host in `hosts` reports `revision` (or later)
    /// enforced without errors; the time that took.
    fn converged(&self, hosts: &[usize], revision: i64) -> Result<Duration> {
        let start = Instant::now();
        wait_for(
            &format!("hosts {hosts:?} enforcing revision {revision}"),
            || {
                for &k in hosts {
                    let Some(s) = self.status(k)? else {
                        return Ok(false);
                    };
                    if s["errors"] != json!([]) || s["enforced_revision"].as_i64() < Some(revision)
                    {
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        )?;
        Ok(start.elapsed())
    }
}

impl Instance {
    /// The name of its end of the link (the one in its own namespace).
    fn name_in_ns(&self) -> Result<String> {
        let out = self.netns.ip(&["-o", "link", "show", "type", "veth"])?;
        out.split(": ")
            .nth(1)
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .ok_or_else(|| anyhow!("{}: no veth: {out}", self.name))
    }

    fn eni(&self, groups: &[&str]) -> Value {
        json!({"id": format!("eni-{}", self.name), "interface": self.tap,
               "vswitch_id": "vsw-1", "ips": [self.ip.to_string()],
               "security_group_ids": groups})
    }
}

/// Whether a TCP connection from `from` to `to`:`port` opens.
fn connects(from: &Instance, to: &Instance, port: u16) -> Result<bool> {
    let addr = SocketAddr::new(to.ip, port);
    from.netns.run(move || {
        // Two tries: the first packet may wait for ARP on a loaded machine.
        (0..2).any(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(1500)).is_ok())
    })
}

/// Asserts each `(from, to, port, works)`.
fn verdicts(checks: &[(&Instance, &Instance, u16, bool)]) -> Result<()> {
    for (from, to, port, works) in checks {
        let got = connects(from, to, *port)?;
        ensure!(
            got == *works,
            "{} -> {}:{port}: expected {}, got {}",
            from.name,
            to.name,
            if *works { "open" } else { "dropped" },
            if got { "open" } else { "dropped" }
        );
    }
    Ok(())
}

fn wait_for(what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        if done()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// sg-db admits [`DB`] from sg-app; with `admin`, [`ADMIN`] from sg-other.
fn shared(admin: bool) -> Value {
    let mut db_rules = vec![json!({"direction": "ingress", "policy": "accept",
        "ip_protocol": "tcp", "port_range": "5432/5432", "source_group_id": "sg-app"})];
    if admin {
        db_rules.push(json!({"direction": "ingress", "policy": "accept",
            "ip_protocol": "tcp", "port_range": "5433/5433", "source_group_id": "sg-other"}));
    }
    let group = |id: &str, rules: Vec<Value>| {
        json!({"id": id, "vpc_id": "vpc-1", "type": "basic",
               "inner_access_policy": "drop", "rules": rules})
    };
    json!({
        "vpcs": [{"id": "vpc-1", "cidr": "192.0.2.0/24"}],
        "vswitches": [{"id": "vsw-1", "vpc_id": "vpc-1", "cidr": "192.0.2.0/24"}],
        "security_groups": [group("sg-db", db_rules), group("sg-app", vec![]),
                            group("sg-other", vec![])]
    })
}

/// Three hosts: membership across hosts, a new shared document, a bad
/// revision, an ENI moving hosts in one transaction, local apply refused,
/// a killed daemon.
#[test]
fn three_hosts_share_groups_through_etcd() -> Result<()> {
    let mut fleet = Fleet::new("fleet_three", 3, false)?;
    let a = fleet.instance("a", 0, "192.0.2.10")?;
    let mut b = fleet.instance("b", 1, "192.0.2.20")?;
    let c = fleet.instance("c", 2, "192.0.2.30")?;
    for k in 0..3 {
        fleet.start_daemon(k)?;
    }
    fleet.put(&["shared"], &shared(false))?;
    fleet.put(&["host", "h1"], &json!([a.eni(&["sg-db"])]))?;
    fleet.put(&["host", "h2"], &json!([b.eni(&["sg-app"])]))?;
    let rev = fleet.put(&["host", "h3"], &json!([c.eni(&["sg-other"])]))?;
    fleet.converged(&[0, 1, 2], rev)?;
    // b is on another host than a, and a member of sg-app there.
    verdicts(&[
        (&b, &a, DB, true),
        (&c, &a, DB, false),
        (&c, &a, ADMIN, false),
    ])?;

    // With etcd as the source, a local apply is refused, naming etcd.
    let doc = fleet
        .daemon(0)?
        .write_file("local", &shared(true).to_string())?;
    let (error, _) = fleet
        .daemon(0)?
        .ctl_json_err(&["apply", &doc.to_string_lossy()])?;
    assert_eq!(error["code"], "external_source", "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains(&fleet.etcd.endpoint()), "{message}");

    // A new shared document: time until the last host enforces it.
    let rev = fleet.put(&["shared"], &shared(true))?;
    let took = fleet.converged(&[0, 1, 2], rev)?;
    println!("fleet_e2e: `fleet put shared` enforced by all 3 hosts within {took:?}");
    verdicts(&[(&c, &a, ADMIN, true), (&b, &a, ADMIN, false)])?;
    let generations: Vec<Value> = (0..3)
        .map(|k| Ok(fleet.status(k)?.unwrap_or_default()["generation"].clone()))
        .collect::<Result<_>>()?;

    // A revision that does not validate: every host says why, and keeps
    // enforcing the last good one.
    let mut bad = shared(true);
    bad["vswitches"][0]["cidr"] = json!("192.0.2.1/24");
    let bad_rev = fleet
        .etcd
        .put(&format!("{PREFIX}/v1/shared"), &bad.to_string())?;
    wait_for("every host to report the bad revision", || {
        (0..3).try_fold(true, |all, k| {
            let s = fleet.status(k)?.unwrap_or_default();
            Ok(all && s["revision"].as_i64() >= Some(bad_rev) && s["errors"] != json!([]))
        })
    })
    .with_context(|| {
        format!(
            "bad revision {bad_rev}: {:?}",
            (0..3).map(|k| fleet.status(k)).collect::<Vec<_>>()
        )
    })?;
    for (k, generation) in generations.iter().enumerate() {
        let s = fleet.status(k)?.unwrap_or_default();
        let errors = s["errors"].to_string();
        assert!(errors.contains("host bits"), "host {k}: {errors}");
        assert_eq!(s["generation"], *generation, "host {k} changed generation");
    }
    verdicts(&[
        (&b, &a, DB, true),
        (&c, &a, ADMIN, true),
        (&b, &a, ADMIN, false),
    ])?;
    let rev = fleet.put(&["shared"], &shared(true))?;
    fleet.converged(&[0, 1, 2], rev)?;

    // b moves from h2 to h3; both ENI lists change in one transaction.
    fleet.move_instance(&mut b, 2)?;
    let h1_generation = fleet.status(0)?.unwrap_or_default()["generation"].clone();
    let txn = format!(
        "\nput {PREFIX}/v1/hosts/h2/enis {:?}\nput {PREFIX}/v1/hosts/h3/enis {:?}\n\n\n",
        json!([]).to_string(),
        json!([c.eni(&["sg-other"]), b.eni(&["sg-app"])]).to_string()
    );
    let rev = fleet.etcd.txn(&txn)?;
    fleet.converged(&[0, 1, 2], rev)?;
    // Membership is fleet-wide: a's host sees the same members, so it made
    // no new generation; b's traffic is guarded on h3 now.
    assert_eq!(
        fleet.status(0)?.unwrap_or_default()["generation"],
        h1_generation
    );
    verdicts(&[
        (&b, &a, DB, true),
        (&b, &a, ADMIN, false),
        (&c, &a, ADMIN, true),
    ])?;

    // A killed daemon's status goes with its lease; its interfaces stay
    // guarded by the pinned programs.
    fleet.daemon(0)?.kill9()?;
    wait_for("h1's status key to expire", || {
        Ok(fleet.status(0)?.is_none())
    })?;
    verdicts(&[(&b, &a, DB, true), (&b, &a, ADMIN, false)])?;
    let status = fleet.fleet_ctl(false, &["status"], false)?;
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("no status"), "{text}");
    drop(fleet);
    Ok(())
}

/// etcd goes away and comes back; a host is cut off while etcd compacts
/// the revision it watched from; a daemon restarts without etcd.
#[test]
fn hosts_ride_out_etcd_faults() -> Result<()> {
    let mut fleet = Fleet::new("fleet_faults", 2, false)?;
    let a = fleet.instance("a", 0, "192.0.2.10")?;
    let b = fleet.instance("b", 1, "192.0.2.20")?;
    fleet.start_daemon(0)?;
    fleet.start_daemon(1)?;
    fleet.put(&["shared"], &shared(false))?;
    fleet.put(&["host", "h1"], &json!([a.eni(&["sg-db"])]))?;
    let rev = fleet.put(&["host", "h2"], &json!([b.eni(&["sg-other"])]))?;
    fleet.converged(&[0, 1], rev)?;
    let before = [(&b, &a, DB, false), (&b, &a, ADMIN, false)];
    verdicts(&before)?;

    // etcd stops: verdicts stay; a daemon restarted meanwhile restores its
    // last generation from the state dir.
    fleet.etcd.stop();
    verdicts(&before)?;
    fleet.daemon(0)?.restart()?;
    verdicts(&before)?;
    assert!(fleet.daemon(0)?.generation()?.is_some());

    // etcd is back: a change reaches both hosts.
    fleet.etcd.resume()?;
    let rev = fleet.put(&["shared"], &shared(true))?;
    fleet.converged(&[0, 1], rev)?;
    verdicts(&[(&b, &a, ADMIN, true), (&b, &a, DB, false)])?;

    // h1 is cut off; it notices, the rules change twice and etcd compacts
    // past what h1 watched from; its link comes back and it catches up.
    let uplink = fleet.hosts[0].1.clone();
    let retries = |fleet: &mut Fleet| -> Result<usize> {
        Ok(fleet.daemon(0)?.log().matches("retrying in").count())
    };
    let before = retries(&mut fleet)?;
    uplink.netns.ip(&["link", "set", &uplink.name, "down"])?;
    wait_for("h1 to notice etcd is gone", || {
        Ok(retries(&mut fleet)? > before)
    })?;
    fleet.put(&["shared"], &shared(false))?;
    let rev = fleet.put(&["host", "h2"], &json!([b.eni(&["sg-app"])]))?;
    fleet.etcd.ctl(&["compact", &rev.to_string()])?;
    uplink.netns.ip(&["link", "set", &uplink.name, "up"])?;
    // Taking the link down took its default route with it.
    uplink
        .netns
        .ip(&["route", "replace", "default", "via", HUB])?;
    fleet.converged(&[0, 1], rev)?;
    assert!(
        fleet.daemon(0)?.log().contains("compacted"),
        "h1 should have listed again after the compaction:\n{}",
        fleet.daemon(0)?.log()
    );
    verdicts(&[(&b, &a, DB, true), (&b, &a, ADMIN, false)])?;
    drop(fleet);
    Ok(())
}

/// etcd that requires client certificates: the daemon and `filterctl
/// fleet` with the test CA's certificate get through; one from another CA
/// does not.
#[test]
fn etcd_over_tls_with_client_certificates() -> Result<()> {
    let mut fleet = Fleet::new("fleet_tls", 1, true)?;
    let a = fleet.instance("a", 0, "192.0.2.10")?;
    fleet.start_daemon(0)?;
    fleet.put(&["shared"], &shared(false))?;
    let rev = fleet.put(&["host", "h1"], &json!([a.eni(&["sg-db"])]))?;
    fleet.converged(&[0], rev)?;
    assert!(fleet.etcd.endpoint().starts_with("https://"));
    let refused = fleet.fleet_ctl(false, &["status"], true)?;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let ok = fleet.fleet_ctl(false, &["status"], false)?;
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success() && text.contains("h1"), "{text}");
    drop(fleet);
    Ok(())
}
