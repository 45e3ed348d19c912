//! `filter-demo`: the demo that `cargo xtask demo` builds and runs (as root).
//!
//! 1. Builds a small cloud in network namespaces ([`filter_tests::cloud`]):
//!    a host namespace with a bridge for the vSwitch fabric; instances
//!    `web1`, `web2` (vSwitch `vsw-web`) and `db1` (`vsw-db`) behind tap
//!    ports; outside hosts `admin` and `client`.
//! 2. Starts `filterd` in the host namespace with directories of its own
//!    and applies `examples/demo.json` (see `examples/README.md`).
//! 3. Drives a short script of connections, allowed and denied, and prints
//!    each result next to what `filterctl explain` says about it.
//! 4. Tails `filterctl flows --follow` (with a little background traffic)
//!    until Ctrl-C; `--no-follow` (or `FILTER_DEMO_NO_FOLLOW=1`) skips that.
//! 5. Removes everything it made, also on Ctrl-C or a failure, and checks
//!    that nothing is left.
//!
//! Exit status: 0 when every connection did what the script expects and
//! nothing is left behind; 1 otherwise; 130 when interrupted before the
//! end of the script.
use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use filter_tests::{
    cloud::{Cloud, Family, Node, NodeKind, Vpc},
    daemon::{DaemonGuard, DaemonOptions, DaemonPaths},
    id::TestId,
    traffic::{explain, probe, Check, CheckResult, Expect, Service, FAIL_WAIT},
};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// Set by SIGINT / SIGTERM.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The error for "stopped by Ctrl-C".
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

fn stop_if_interrupted() -> Result<()> {
    if interrupted() {
        return Err(Interrupted.into());
    }
    Ok(())
}

struct Options {
    follow: bool,
    document: PathBuf,
}

fn usage() -> &'static str {
    "usage: filter-demo [--no-follow] [--document FILE]\n\
     \n\
     A small cloud in network namespaces guarded by filterd (run as root;\n\
     `cargo xtask demo` builds and runs this). --no-follow (or\n\
     FILTER_DEMO_NO_FOLLOW=1) ends after the script instead of tailing the\n\
     flow log until Ctrl-C."
}

fn options() -> Result<Options> {
    let mut opts = Options {
        follow: std::env::var_os("FILTER_DEMO_NO_FOLLOW").is_none_or(|v| v.is_empty() || v == "0"),
        document: Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo.json"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-follow" => opts.follow = false,
            "--document" => {
                opts.document = args
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| anyhow!("--document needs a file"))?;
            }
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{}", usage()),
        }
    }
    Ok(opts)
}

fn main() -> ExitCode {
    let handler = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        if let Err(e) = unsafe { sigaction(signal, &handler) } {
            eprintln!("demo: cannot handle {signal}: {e}");
        }
    }
    let opts = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("demo: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = filter_tests::require_root() {
        eprintln!("demo: {e:#}");
        return ExitCode::FAILURE;
    }

    let id = TestId::new("demo");
    sweep_stale_run_dirs();
    let outcome = run(&id, &opts);
    // Every guard has dropped: check, as a user would, that nothing is left.
    let left = leftovers(&id);
    println!();
    match &left {
        Ok(left) if left.is_empty() => println!(
            "demo: cleaned up, nothing left behind (namespaces, interfaces, pins, daemon \
             directories of {})",
            id.netns_prefix().trim_end_matches('-')
        ),
        Ok(left) => println!("demo: LEFT BEHIND:\n  {}", left.join("\n  ")),
        Err(e) => println!("demo: could not check what is left: {e:#}"),
    }
    let clean = left.is_ok_and(|l| l.is_empty());
    match outcome {
        Ok(0) if clean => ExitCode::SUCCESS,
        Ok(0) => ExitCode::FAILURE,
        Ok(unexpected) => {
            println!("demo: {unexpected} connection(s) did not do what the script expects");
            ExitCode::FAILURE
        }
        // Ctrl-C reaches the whole process group: filterd may have stopped
        // under a step, which then failed for that reason.
        Err(e) if e.is::<Interrupted>() || interrupted() => {
            println!("demo: interrupted");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("demo: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The whole demo; its guards drop (and clean up) on the way out, whatever
/// happens. The number of unexpected results.
fn run(id: &TestId, opts: &Options) -> Result<usize> {
    let document = fs::read_to_string(&opts.document)
        .with_context(|| format!("reading {}", opts.document.display()))?;
    section("1. A small cloud in network namespaces");
    let cloud = build_cloud(id)?;
    print_topology(&cloud);
    stop_if_interrupted()?;

    section("2. filterd guards the instances' tap ports");
    // Declared after the cloud: the daemon stops (and detaches) first.
    let daemon = DaemonGuard::start_with(
        id,
        cloud.host(),
        DaemonOptions {
            args: vec!["--capture-window".into(), "5s".into()],
            ..DaemonOptions::default()
        },
    )?;
    let paths = daemon.paths();
    println!(
        "filterd {} in {}: socket {}, state {}, pins {}",
        daemon.pid().unwrap_or_default(),
        cloud.host().name(),
        paths.socket.display(),
        paths.state_dir.display(),
        paths.pin_dir.display()
    );
    let doc_path = daemon.write_file("demo", &document)?;
    let shown = fs::canonicalize(&opts.document).unwrap_or_else(|_| opts.document.clone());
    println!("$ filterctl apply {}", shown.display());
    let applied = daemon.ctl_json(&["apply", &doc_path.to_string_lossy()])?;
    println!("  {}", apply_summary(&applied));
    for w in applied["warnings"].as_array().into_iter().flatten() {
        println!("  warning: {}", w.as_str().unwrap_or_default());
    }
    println!("$ filterctl status");
    let status = daemon.ctl_ok(&["status"])?;
    let enis: Vec<&str> = status
        .lines()
        .skip_while(|l| !l.starts_with("ENI"))
        .take_while(|l| !l.is_empty())
        .collect();
    print!("{}", indent(&enis.join("\n")));
    stop_if_interrupted()?;

    section("3. Traffic, allowed and denied, and why (filterctl explain)");
    let unexpected = script(&cloud, &daemon)?;

    section("4. Counters per rule (filterctl counters)");
    let counters = daemon.ctl_ok(&["counters"])?;
    print!("{}", indent(&busy_counters(&counters)));
    stop_if_interrupted()?;

    section("5. Flow logs (filterctl flows)");
    follow(&cloud, &daemon, opts)?;
    Ok(unexpected)
}

/// The demo's cloud; the addresses are the document's (examples/demo.json).
fn build_cloud(id: &TestId) -> Result<Cloud> {
    let mut cloud = Cloud::new(
        id,
        Vpc {
            id: "vpc-demo".into(),
            cidr: "192.0.2.0/24".parse()?,
            ipv6_cidr: "fd00:1::/48".parse()?,
        },
    )?;
    cloud.vswitch("vsw-web", "192.0.2.0/26", "fd00:1:0:1::/64")?;
    cloud.vswitch("vsw-db", "192.0.2.64/26", "fd00:1:0:2::/64")?;
    let web1 = cloud.instance("web1", "192.0.2.10", "fd00:1:0:1::10")?;
    let web2 = cloud.instance("web2", "192.0.2.11", "fd00:1:0:1::11")?;
    let db1 = cloud.instance("db1", "192.0.2.70", "fd00:1:0:2::70")?;
    let admin = cloud.outside("admin", "203.0.113.7/24", "2001:db8:ad::7/64")?;
    let client = cloud.outside("client", "198.51.100.20/24", "2001:db8:c::20/64")?;
    for web in [&web1, &web2] {
        cloud.serve(web, &[22, 80, 443, 8080], &[443])?;
    }
    cloud.serve(&db1, &[22, 3306], &[])?;
    // admin keeps the backups (rsync); client doubles as the update mirror.
    cloud.serve(&admin, &[873], &[])?;
    cloud.serve(&client, &[80, 443], &[])?;
    cloud.check_fabric()?;
    Ok(cloud)
}

fn print_topology(cloud: &Cloud) {
    println!(
        "host namespace {}: bridge `fabric` (the vSwitch fabric), routes between subnets",
        cloud.host().name()
    );
    println!(
        "VPC {}: {} and {}",
        cloud.vpc.id, cloud.vpc.cidr, cloud.vpc.ipv6_cidr
    );
    for v in cloud.vswitches() {
        println!(
            "  vSwitch {:<8} {:<15} {}",
            v.id,
            v.cidr.to_string(),
            v.ipv6_cidr
        );
    }
    println!();
    println!(
        "  {:<7} {:<9} {:<13} {:<16} {:<10} namespace",
        "node", "kind", "IPv4", "IPv6", "port"
    );
    for n in cloud.nodes() {
        let kind = match n.kind {
            NodeKind::Instance => n.vswitch.clone().unwrap_or_default(),
            NodeKind::Outside => "outside".into(),
        };
        println!(
            "  {:<7} {:<9} {:<13} {:<16} {:<10} {}",
            n.name,
            kind,
            n.v4.to_string(),
            n.v6.to_string(),
            n.port,
            n.netns.name()
        );
    }
    println!();
    println!("(the tap-* ports are the ENIs filterd guards; wan-* are not guarded)");
}

/// One attempt of the script.
struct Step {
    from: &'static str,
    to: &'static str,
    service: Service,
    family: Family,
    expect: Expect,
    what: &'static str,
}

const fn step(
    from: &'static str,
    to: &'static str,
    service: Service,
    family: Family,
    expect: Expect,
    what: &'static str,
) -> Step {
    Step {
        from,
        to,
        service,
        family,
        expect,
        what,
    }
}

const V4: Family = Family::V4;
const V6: Family = Family::V6;
const WORKS: Expect = Expect::Works;
const FAILS: Expect = Expect::Fails;

const SCRIPT: &[(&str, &[Step])] = &[
    (
        "the web tier: sg-web (web from anywhere) and sg-mgmt (admin only) on web1 and web2",
        &[
            step(
                "client",
                "web1",
                Service::Tcp(80),
                V4,
                WORKS,
                "HTTP from the Internet",
            ),
            step(
                "client",
                "web2",
                Service::Tcp(443),
                V6,
                WORKS,
                "HTTPS over IPv6",
            ),
            step(
                "client",
                "web1",
                Service::Udp(443),
                V4,
                WORKS,
                "HTTP/3 (QUIC, UDP)",
            ),
            step(
                "client",
                "web1",
                Service::Tcp(22),
                V4,
                FAILS,
                "SSH from the Internet",
            ),
            step(
                "admin",
                "web1",
                Service::Tcp(22),
                V6,
                WORKS,
                "SSH from the admin host",
            ),
            step(
                "client",
                "web2",
                Service::Ping,
                V4,
                FAILS,
                "ping from the Internet",
            ),
            step(
                "admin",
                "web2",
                Service::Ping,
                V4,
                WORKS,
                "ping from the admin host",
            ),
            step(
                "web1",
                "web2",
                Service::Tcp(8080),
                V4,
                WORKS,
                "inside sg-web: inner access",
            ),
        ],
    ),
    (
        "the database: sg-db (MySQL from the web group) on db1, network ACL acl-db on vsw-db",
        &[
            step(
                "web1",
                "db1",
                Service::Tcp(3306),
                V4,
                WORKS,
                "MySQL from a web server",
            ),
            step(
                "web2",
                "db1",
                Service::Tcp(3306),
                V6,
                WORKS,
                "MySQL from a web server, IPv6",
            ),
            step(
                "client",
                "db1",
                Service::Tcp(3306),
                V4,
                FAILS,
                "MySQL from the Internet",
            ),
            step(
                "admin",
                "db1",
                Service::Tcp(3306),
                V4,
                FAILS,
                "MySQL from admin: the ACL lets it in",
            ),
            step(
                "admin",
                "db1",
                Service::Ping,
                V6,
                WORKS,
                "ping from the admin host",
            ),
            step(
                "web1",
                "db1",
                Service::Tcp(22),
                V4,
                FAILS,
                "SSH from a web server",
            ),
        ],
    ),
    (
        "db1's outbound whitelist: drop all at priority 2, two destinations at priority 1",
        &[
            step(
                "db1",
                "admin",
                Service::Tcp(873),
                V4,
                WORKS,
                "backups to the admin host",
            ),
            step(
                "db1",
                "client",
                Service::Tcp(443),
                V6,
                WORKS,
                "updates from the mirror",
            ),
            step(
                "db1",
                "client",
                Service::Tcp(80),
                V4,
                FAILS,
                "plain HTTP to the mirror",
            ),
            step(
                "db1",
                "web1",
                Service::Tcp(80),
                V4,
                FAILS,
                "even inside the VPC",
            ),
        ],
    ),
];

/// Runs the script; the number of attempts that did not do what it says.
fn script(cloud: &Cloud, daemon: &DaemonGuard) -> Result<usize> {
    println!("Each attempt is a real connection (echo servers answer on every node); a");
    println!(
        "denied one gets {:.1}s to stay silent. `why` is `filterctl explain` for its",
        FAIL_WAIT.as_secs_f64()
    );
    println!("first packet at each guarded ENI on the way.");
    let mut unexpected = 0;
    let mut n = 0;
    for (title, steps) in SCRIPT {
        println!();
        println!("-- {title}");
        for s in *steps {
            stop_if_interrupted()?;
            n += 1;
            let check = Check {
                from: cloud.node(s.from)?.clone(),
                to: cloud.node(s.to)?.clone(),
                family: s.family,
                service: s.service,
                expect: s.expect,
            };
            let result = check.run();
            let why = explain(daemon, &check)?
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            print_attempt(n, s, &result, &why);
            if !result.ok {
                unexpected += 1;
            }
        }
    }
    Ok(unexpected)
}

fn print_attempt(n: usize, s: &Step, r: &CheckResult, why: &str) {
    let attempt = format!(
        "{} -> {} {} {}",
        s.from,
        s.to,
        s.service,
        match s.family {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    );
    let result = match (r.worked(), r.ok) {
        (true, true) => "allowed",
        (false, true) => "denied",
        (true, false) => "ALLOWED (UNEXPECTED)",
        (false, false) => "DENIED (UNEXPECTED)",
    };
    println!("{n:>3}. {attempt:<28} {:<38} {result}", s.what);
    println!("       why: {why}");
    if !r.ok {
        println!("       got: {}", r.outcome);
    }
}

/// `generation 1 enforced (was none); added: 1 VPC, 2 vSwitches, ...`.
fn apply_summary(result: &serde_json::Value) -> String {
    const SECTIONS: [(&str, &str, &str); 7] = [
        ("vpcs", "VPC", "VPCs"),
        ("vswitches", "vSwitch", "vSwitches"),
        ("prefix_lists", "prefix list", "prefix lists"),
        ("groups", "security group", "security groups"),
        ("rules", "rule", "rules"),
        ("network_acls", "network ACL", "network ACLs"),
        ("enis", "ENI", "ENIs"),
    ];
    let added: Vec<String> = SECTIONS
        .iter()
        .filter_map(|(key, one, many)| {
            let n = result["changes"][*key]["added"]
                .as_array()
                .map_or(0, Vec::len);
            (n > 0).then(|| format!("{n} {}", if n == 1 { one } else { many }))
        })
        .collect();
    let previous = result["previous"]
        .as_u64()
        .map_or("none".to_owned(), |p| p.to_string());
    format!(
        "generation {} enforced (was {previous}); added: {}",
        result["generation"],
        added.join(", ")
    )
}

/// The counters table without the rules that never counted anything.
fn busy_counters(table: &str) -> String {
    table
        .lines()
        .enumerate()
        .filter(|(i, l)| *i == 0 || l.split_whitespace().nth(1).is_none_or(|p| p != "0"))
        .map(|(_, l)| format!("{l}\n"))
        .collect()
}

/// Tails the flow log until Ctrl-C (or shows what it has, with
/// `--no-follow`).
fn follow(cloud: &Cloud, daemon: &DaemonGuard, opts: &Options) -> Result<()> {
    let probe_out = daemon.ctl(&["flows", "--format", "text"])?;
    if !probe_out.status.success() {
        bail!(
            "filterctl flows: {}",
            String::from_utf8_lossy(&probe_out.stderr).trim()
        );
    }
    if !opts.follow {
        {
            let text = String::from_utf8_lossy(&probe_out.stdout).into_owned();
            let lines: Vec<&str> = text.lines().collect();
            println!(
                "$ filterctl flows --format text   (the last {} of {} records)",
                lines.len().min(12),
                lines.len()
            );
            for l in &lines[lines.len().saturating_sub(12)..] {
                println!("  {l}");
            }
        }
        println!("--no-follow: not tailing; cleaning up");
        return Ok(());
    }

    println!("Background traffic: client -> web1 HTTP every 2 s, client -> db1 MySQL (denied)");
    println!("every 5 s. In another terminal, e.g.:");
    if let (Ok(client), Ok(web1)) = (cloud.node("client"), cloud.node("web1")) {
        println!(
            "  ip netns exec {} nc -v {} 80",
            client.netns.name(),
            web1.v4
        );
    }
    println!("  filterctl --socket {} status", daemon.socket().display());
    println!("Ctrl-C ends the demo and removes everything.");
    println!();
    let background = Background::start(cloud)?;
    println!("$ filterctl flows --follow --format text   (NODATA records not shown)");
    let result = tail_flows(daemon);
    drop(background);
    match result {
        Err(_) if interrupted() => Ok(()),
        other => other,
    }
}

/// `filterctl flows --follow --format text`, its lines printed as they
/// come, until Ctrl-C.
fn tail_flows(daemon: &DaemonGuard) -> Result<()> {
    let mut child: Child = Command::new(&daemon.bins().filterctl)
        .arg("--socket")
        .arg(daemon.socket())
        .args(["flows", "--follow", "--format", "text"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting `filterctl flows --follow`")?;
    if let Some(stdout) = child.stdout.take() {
        thread::spawn(move || {
            // NODATA records (an ENI without traffic in a window) would
            // drown the rest every few seconds.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !line.contains(" NODATA ") {
                    println!("  {line}");
                }
            }
        });
    }
    let result = loop {
        if interrupted() {
            break Ok(());
        }
        if let Some(status) = child.try_wait()? {
            break if interrupted() {
                Ok(())
            } else {
                Err(anyhow!("`filterctl flows --follow` ended ({status})"))
            };
        }
        thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// A little traffic while the flow log is tailed.
struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Background {
    fn start(cloud: &Cloud) -> Result<Background> {
        let client = cloud.node("client")?.clone();
        let web1 = cloud.node("web1")?.clone();
        let db1 = cloud.node("db1")?.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || background(&client, &web1, &db1, &flag));
        Ok(Background {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn background(client: &Node, web1: &Node, db1: &Node, stop: &AtomicBool) {
    let mut tick = 0u32;
    while !stop.load(Ordering::SeqCst) && !interrupted() {
        let _ = probe(
            client,
            web1.addr(Family::V4),
            Service::Tcp(80),
            Duration::from_secs(1),
        );
        if tick.is_multiple_of(5) {
            let _ = probe(
                client,
                db1.addr(Family::V4),
                Service::Tcp(3306),
                Duration::from_millis(300),
            );
        }
        tick += 1;
        for _ in 0..20 {
            if stop.load(Ordering::SeqCst) || interrupted() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

fn section(title: &str) {
    println!();
    println!("== {title}");
    println!();
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// What this demo made that still exists: namespaces, pins, the daemon's
/// directory.
fn leftovers(id: &TestId) -> Result<Vec<String>> {
    let mut left = id.leftovers()?;
    let run_dir = DaemonPaths::new(id).run_dir;
    if run_dir.exists() {
        left.push(format!("daemon directory {}", run_dir.display()));
    }
    Ok(left)
}

/// Daemon directories of demos that were killed (`kill -9`) before they
/// could clean up; their namespaces and pins are swept by the cloud.
fn sweep_stale_run_dirs() {
    let tmp = std::env::temp_dir();
    let Ok(entries) = fs::read_dir(&tmp) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("filter-test-demo-") else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new("/proc").join(p.to_string()).exists()) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
