//! `filterctl` commands against a daemon: what they print and how they
//! exit.
mod daemon_support;

use clap::Parser;
use daemon_support::*;
use filter::cli::{self, Cli};
use serde_json::Value;

struct Run {
    code: u8,
    stdout: String,
    stderr: String,
}

async fn filterctl(d: &TestDaemon, args: &[&str]) -> Result<Run, Box<dyn std::error::Error>> {
    let socket = d.dirs.socket();
    filterctl_at(socket.to_str().ok_or("socket path")?, args).await
}

/// `filterctl` with `args` and no daemon behind `--socket`.
async fn filterctl_offline(args: &[&str]) -> Result<Run, Box<dyn std::error::Error>> {
    filterctl_at("/nonexistent/filterd.sock", args).await
}

async fn filterctl_at(socket: &str, args: &[&str]) -> Result<Run, Box<dyn std::error::Error>> {
    let mut argv = vec!["filterctl", "--socket", socket];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv)?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::run(cli, &mut out, &mut err).await;
    Ok(Run {
        code,
        stdout: String::from_utf8(out)?,
        stderr: String::from_utf8(err)?,
    })
}

/// Whether a table in `text` has a row with exactly these cells.
fn has_row(text: &str, cells: &[&str]) -> bool {
    text.lines()
        .any(|l| l.split_whitespace().eq(cells.iter().copied()))
}

#[tokio::test]
async fn apply_status_get_counters_explain() -> TestResult {
    let (tmp, d) = TestDaemon::fresh().await?;
    let file = tmp.path().join("rules.json");
    std::fs::write(&file, base())?;
    let file = file.to_str().ok_or("path")?;

    let r = filterctl(&d, &["apply", file, "--dry-run"]).await?;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .starts_with("dry run: the document is valid and would be enforced as generation 1"),
        "{}",
        r.stdout
    );

    let r = filterctl(&d, &["apply", file]).await?;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with("generation 1 enforced (was none)"),
        "{}",
        r.stdout
    );
    assert!(
        has_row(&r.stdout, &["added", "rules", "sg-web/http"]),
        "{}",
        r.stdout
    );

    let r = filterctl(&d, &["status"]).await?;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with("generation  1 (applied "),
        "{}",
        r.stdout
    );
    assert!(
        has_row(&r.stdout, &["ENI", "INTERFACE", "MODE", "VSWITCH", "HOOKS"]),
        "{}",
        r.stdout
    );
    assert!(
        has_row(
            &r.stdout,
            &["eni-web1", "tap-web1", "tap", "vsw-web", "xdp,tc"]
        ),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("drop_nacl"), "{}", r.stdout);

    let r = filterctl(&d, &["get"]).await?;
    assert_eq!((r.code, r.stdout.as_str()), (0, base().as_str()));

    let r = filterctl(&d, &["counters", "--eni", "eni-web1"]).await?;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("RULE"), "{}", r.stdout);
    assert!(
        r.stdout.contains("sg-web/http") && r.stdout.contains("never"),
        "{}",
        r.stdout
    );

    let args = [
        "explain",
        "--eni",
        "eni-web1",
        "--direction",
        "ingress",
        "--proto",
        "tcp",
        "--src",
        "198.51.100.7:40000",
        "--dst",
        "10.0.1.10:80",
    ];
    let r = filterctl(&d, &args).await?;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("verdict     ACCEPT by sg-web/http"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("tracked     no tracked connection"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("DECIDED"), "{}", r.stdout);
    Ok(())
}

#[tokio::test]
async fn a_rejected_document_prints_every_error_one_per_line() -> TestResult {
    let (tmp, d) = TestDaemon::fresh().await?;
    let file = tmp.path().join("broken.json");
    std::fs::write(&file, broken())?;
    let r = filterctl(&d, &["apply", file.to_str().ok_or("path")?]).await?;
    assert_eq!(r.code, 1);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{}", r.stderr);
    assert!(
        lines[0].contains("rejected with 3 error(s)"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1..]
            .iter()
            .any(|l| l.starts_with("security_groups[0].rules[3].source_cidr_ip: ")),
        "{}",
        r.stderr
    );

    // With --json, the error object on stdout too.
    let r = filterctl(&d, &["--json", "apply", file.to_str().ok_or("path")?]).await?;
    assert_eq!(r.code, 1);
    let v: Value = serde_json::from_str(&r.stdout)?;
    assert_eq!(v["error"]["code"], "invalid_document");
    assert_eq!(v["error"]["details"].as_array().map(Vec::len), Some(3));
    Ok(())
}

#[tokio::test]
async fn json_output_is_the_result() -> TestResult {
    let (tmp, d) = TestDaemon::fresh().await?;
    let file = tmp.path().join("rules.json");
    std::fs::write(&file, base())?;
    let r = filterctl(&d, &["--json", "apply", file.to_str().ok_or("path")?]).await?;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout)?;
    assert_eq!(v["generation"], 1);
    let r = filterctl(&d, &["status", "--json"]).await?;
    let v: Value = serde_json::from_str(&r.stdout)?;
    assert_eq!(v["generation"], 1);
    assert_eq!(v["enis"][0]["hooks"][0], "xdp");
    Ok(())
}

#[tokio::test]
async fn failures_exit_non_zero_with_a_reason() -> TestResult {
    let (tmp, d) = TestDaemon::fresh().await?;
    // Nothing applied yet.
    let r = filterctl(&d, &["get"]).await?;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("no generation is running"),
        "{}",
        r.stderr
    );
    // This daemon has no flow log: nothing to follow.
    let r = filterctl(
        &d,
        &[
            "flows", "--follow", "--action", "REJECT", "--format", "text",
        ],
    )
    .await?;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("not_implemented"), "{}", r.stderr);
    // A missing file.
    let r = filterctl(&d, &["apply", "/nonexistent/rules.json"]).await?;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("/nonexistent/rules.json"), "{}", r.stderr);
    // A bad packet is caught before asking.
    let r = filterctl(
        &d,
        &[
            "explain",
            "--eni",
            "e",
            "--direction",
            "ingress",
            "--proto",
            "tcp",
            "--src",
            "1.2.3.4",
            "--dst",
            "5.6.7.8:80",
        ],
    )
    .await?;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("needs a port"), "{}", r.stderr);
    // No daemon there.
    let (dirs, _) = d.stop().await;
    let cli = Cli::try_parse_from([
        "filterctl",
        "--socket",
        dirs.socket().to_str().ok_or("path")?,
        "status",
    ])?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(cli::run(cli, &mut out, &mut err).await, 1);
    assert!(String::from_utf8(err)?.contains("cannot connect to filterd"));
    drop(tmp);
    Ok(())
}

#[test]
fn usage_errors_are_clap_errors() {
    assert!(Cli::try_parse_from([
        "filterctl",
        "explain",
        "--eni",
        "e",
        "--direction",
        "sideways",
        "--proto",
        "tcp",
        "--src",
        "a",
        "--dst",
        "b"
    ])
    .is_err());
    assert!(Cli::try_parse_from(["filterctl", "flows", "--action", "MAYBE"]).is_err());
    assert!(Cli::try_parse_from(["filterctl", "rollback", "--to", "x"]).is_err());
    assert!(Cli::try_parse_from(["filterctl", "rollback", "--to", "3", "--json"]).is_ok());
}

/// SPEC §11: `validate` and `diff` need no daemon; 0 valid / no change,
/// 1 invalid / changed.
#[tokio::test]
async fn validate_and_diff_run_without_a_daemon() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let write = |name: &str, text: String| -> Result<String, Box<dyn std::error::Error>> {
        let path = tmp.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path.to_str().ok_or("path")?.to_owned())
    };
    let (base, grown, broken) = (
        write("base.json", base())?,
        write("grown.json", grown())?,
        write("broken.json", broken())?,
    );

    let r = filterctl_offline(&["validate", &base]).await?;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, format!("{base}: valid\n").as_str()),
        "{}",
        r.stderr
    );
    // The host has no tap-web1: an apply here would say it is pending.
    let r = filterctl_offline(&["validate", &base, "--interfaces", "host"]).await?;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("notice: eni-web1: interface tap-web1 does not exist yet"),
        "{}",
        r.stdout
    );
    let r = filterctl_offline(&["validate", &broken]).await?;
    assert_eq!(r.code, 1);
    // Every error with its JSON path, after the one-line summary.
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{}", r.stderr);
    assert!(
        lines[0].contains("is not a valid rule set (3 errors)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("security_groups[0].rules[3]"),
        "{}",
        r.stderr
    );

    let r = filterctl_offline(&["diff", &base, &base]).await?;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "no changes\n"),
        "{}",
        r.stderr
    );
    let r = filterctl_offline(&["diff", &base, &grown]).await?;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        has_row(&r.stdout, &["added", "rules", "sg-web/https"]),
        "{}",
        r.stdout
    );
    assert!(
        has_row(&r.stdout, &["added", "enis", "eni-web2"]),
        "{}",
        r.stdout
    );
    let r = filterctl_offline(&["--json", "diff", &base, &grown]).await?;
    let json: Value = serde_json::from_str(&r.stdout)?;
    assert_eq!(json["changed"], Value::Bool(true), "{}", r.stdout);
    let r = filterctl_offline(&["diff", &base, &broken]).await?;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(&format!("{broken}: security_groups[0]")),
        "{}",
        r.stderr
    );
    Ok(())
}

/// SPEC §11: `status` shows the enforced document's digest, and `apply
/// --if-generation N` is refused unless N is enforced.
#[tokio::test]
async fn status_digest_and_apply_if_generation() -> TestResult {
    let (tmp, d) = TestDaemon::fresh().await?;
    let (file, next) = (tmp.path().join("rules.json"), tmp.path().join("next.json"));
    std::fs::write(&file, base())?;
    std::fs::write(&next, grown())?;
    let (file, next) = (file.to_str().ok_or("path")?, next.to_str().ok_or("path")?);

    let r = filterctl(&d, &["apply", file, "--if-generation", "1"]).await?;
    assert_eq!(r.code, 1, "nothing runs yet: {}", r.stdout);
    assert!(r.stderr.contains("generation_mismatch"), "{}", r.stderr);
    let r = filterctl(&d, &["apply", file]).await?;
    assert_eq!(r.code, 0, "{}", r.stderr);

    let digest = filter::digest::document_digest(&base()).ok_or("digest")?;
    let r = filterctl(&d, &["status"]).await?;
    assert!(
        r.stdout.contains(&format!("digest      {digest}\n")),
        "{}",
        r.stdout
    );
    let r = filterctl(&d, &["--json", "status"]).await?;
    let json: Value = serde_json::from_str(&r.stdout)?;
    assert_eq!(json["digest"], Value::String(digest));

    let r = filterctl(&d, &["apply", next, "--if-generation", "7"]).await?;
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stderr
            .contains("generation 7 is not the one enforced (generation 1)"),
        "{}",
        r.stderr
    );
    let r = filterctl(&d, &["apply", next, "--if-generation", "1"]).await?;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with("generation 2 enforced"),
        "{}",
        r.stdout
    );
    Ok(())
}

/// Every flag and argument of every command says what it is for.
#[test]
fn every_flag_has_help() {
    use clap::CommandFactory;
    let mut missing = Vec::new();
    for command in Cli::command().get_subcommands() {
        for arg in command.get_arguments() {
            if arg.get_help().is_none() && arg.get_id() != "help" {
                missing.push(format!("{} --{}", command.get_name(), arg.get_id()));
            }
        }
    }
    assert!(missing.is_empty(), "without help: {missing:?}");
}

/// `version` with no daemon: this side's version, and where it asked.
#[tokio::test]
async fn version_without_a_daemon_says_what_it_can() -> TestResult {
    let r = filterctl_offline(&["version"]).await?;
    assert_eq!(r.code, 1);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines[0], format!("filterctl {}", env!("CARGO_PKG_VERSION")));
    assert!(
        lines[1].starts_with("filterd did not answer at /nonexistent/filterd.sock: "),
        "{}",
        r.stderr
    );
    Ok(())
}

/// Explain checks the packet before asking: a port-less protocol takes a
/// bare address, and an ICMP type goes with ICMP only.
#[tokio::test]
async fn explain_checks_the_options_before_asking() -> TestResult {
    let explain = |proto: &'static str, src: &'static str, extra: &'static [&'static str]| {
        let dst = if proto == "tcp" {
            "10.0.1.10:80"
        } else {
            "10.0.1.10"
        };
        let mut args = vec![
            "explain",
            "--eni",
            "e",
            "--direction",
            "ingress",
            "--proto",
            proto,
            "--src",
            src,
            "--dst",
            dst,
        ];
        args.extend_from_slice(extra);
        args
    };
    let r = filterctl_offline(&explain("tcp", "1.2.3.4:5", &["--icmp-type", "3"])).await?;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("an ICMP type applies to icmp and icmpv6 only, not tcp"),
        "{}",
        r.stderr
    );
    // Valid: it gets as far as the (absent) daemon.
    let r = filterctl_offline(&explain("gre", "1.2.3.4", &[])).await?;
    assert!(
        r.stderr.contains("cannot connect to filterd"),
        "{}",
        r.stderr
    );
    let r = filterctl_offline(&explain("icmp", "1.2.3.4", &["--icmp-type", "0"])).await?;
    assert!(
        r.stderr.contains("cannot connect to filterd"),
        "{}",
        r.stderr
    );
    Ok(())
}

/// A packet of a tracked connection is accepted whatever the rules say of
/// a first packet: `explain` leads with that verdict.
#[tokio::test]
async fn explain_leads_with_the_verdict_the_packet_gets() -> TestResult {
    let (tmp, d) = TestDaemon::fresh().await?;
    let file = tmp.path().join("rules.json");
    std::fs::write(&file, base())?;
    let r = filterctl(&d, &["apply", file.to_str().ok_or("path")?]).await?;
    assert_eq!(r.code, 0, "{}", r.stderr);
    d.enforcer.dataplane().connections.push((
        "tap-web1".into(),
        filter::verdict::Packet {
            src: "10.0.1.10".parse()?,
            dst: "198.51.100.7".parse()?,
            proto: 6,
            src_port: 8080,
            dst_port: 40000,
            icmp_type: 0,
        },
        filter::api::TrackedConnection {
            state: "tcp_established".into(),
            rule: "sg-web/http".into(),
            generation: 1,
            packets: 12,
            bytes: 3400,
        },
    ));
    let args = |src: &'static str| {
        [
            "explain",
            "--eni",
            "eni-web1",
            "--direction",
            "ingress",
            "--proto",
            "tcp",
            "--src",
            src,
            "--dst",
            "10.0.1.10:8080",
        ]
    };
    let r = filterctl(&d, &args("198.51.100.7:40000")).await?;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[1..3],
        [
            "verdict     ACCEPT by tracked (connection admitted by sg-web/http)",
            "rules       DROP by default-deny (as the first packet of a connection)",
        ],
        "{}",
        r.stdout
    );
    // Not tracked: the rules' verdict.
    let r = filterctl(&d, &args("198.51.100.8:40000")).await?;
    assert_eq!(
        r.stdout.lines().nth(1),
        Some("verdict     DROP by default-deny"),
        "{}",
        r.stdout
    );
    Ok(())
}
