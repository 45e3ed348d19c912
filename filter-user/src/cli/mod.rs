//! `filterctl` (SPEC §6): the commands, as a library so tests can run them
//! against a daemon in the same process and read what they print.
//!
//! Tables by default, the daemon's result as JSON with `--json`. Exit code
//! 0 only on success; 1 when the daemon refused or failed (a rejected
//! document prints every error on stderr, one per line), or it could not
//! be reached; 2 for usage errors (clap).
pub mod fleet;
mod offline;
pub mod render;

use std::{
    io::{IsTerminal, Read, Write},
    net::IpAddr,
    path::PathBuf,
    time::Duration,
};

use clap::{Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use crate::{
    api::{
        client::{Client, ClientError},
        ApplyParams, ApplyResult, CountersParams, CountersResult, DetachResult, ErrorCode,
        ExplainParams, ExplainResult, FlowRecord, FlowsParams, FlowsResult, GetResult, Method,
        MonitorParams, MonitorResult, NoParams, RollbackParams, StatusResult, VersionResult,
        DEFAULT_SOCKET,
    },
    ruleset::Direction,
};

/// Exit code of a command that failed.
pub const EXIT_FAILURE: u8 = 1;
/// `filterctl status` on a degraded host (SPEC §8).
pub const EXIT_DEGRADED: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "filterctl",
    version,
    about = "Control filterd, the host packet filter"
)]
pub struct Cli {
    /// The daemon's socket.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print results as JSON (stable, for scripts) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

fn parse_direction(s: &str) -> Result<Direction, String> {
    match s {
        "ingress" => Ok(Direction::Ingress),
        "egress" => Ok(Direction::Egress),
        _ => Err(format!("{s:?} is not ingress or egress")),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FlowAction {
    #[value(name = "ACCEPT", alias = "accept")]
    Accept,
    #[value(name = "REJECT", alias = "reject")]
    Reject,
}

/// Which interfaces `validate` takes to exist (SPEC §2.4 pending ENIs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Interfaces {
    /// This host's: an ENI whose interface is missing gets a notice.
    Host,
    /// Any name exists: the document alone is checked.
    #[default]
    Any,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum FlowFormat {
    Table,
    #[default]
    Json,
    Text,
}

/// The filters `flows` and `monitor` share.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct FlowFilterArgs {
    /// Only this ENI (its id in the document).
    #[arg(long, value_name = "ID")]
    pub eni: Option<String>,
    /// Only accepted (ACCEPT) or only rejected (REJECT) traffic.
    #[arg(long, value_enum)]
    pub action: Option<FlowAction>,
    /// Source or destination address.
    #[arg(long, value_name = "IP")]
    pub addr: Option<IpAddr>,
    /// Source or destination port.
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// tcp, udp, icmp, icmpv6, gre or a protocol number.
    #[arg(long, value_name = "P")]
    pub proto: Option<String>,
    /// Only traffic arriving at (ingress) or sent by (egress) the ENI.
    #[arg(long, value_parser = parse_direction, value_name = "ingress|egress")]
    pub direction: Option<Direction>,
}

impl FlowFilterArgs {
    /// The filters as `flows` parameters.
    fn params(&self) -> FlowsParams {
        FlowsParams {
            eni: self.eni.clone(),
            action: self.action.map(|a| match a {
                FlowAction::Accept => "ACCEPT".to_owned(),
                FlowAction::Reject => "REJECT".to_owned(),
            }),
            addr: self.addr,
            port: self.port,
            proto: self.proto.clone(),
            direction: self.direction,
            ..FlowsParams::default()
        }
    }

    /// A bad `--proto` is worth a quick answer without a daemon.
    fn check(&self) -> Result<(), Failure> {
        match &self.proto {
            Some(proto) => crate::api::parse_proto(proto)
                .map(|_| ())
                .map_err(|e| Failure::local("invalid_params", e.message)),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a rule-set document and enforce it (all of it or none).
    Apply {
        /// The document; `-` reads standard input.
        file: PathBuf,
        /// Validate and compile, show what would change, enforce nothing.
        #[arg(long)]
        dry_run: bool,
        /// Refuse unless generation N is the one enforced (see `status`):
        /// two automations cannot overwrite each other unseen.
        #[arg(long, value_name = "N")]
        if_generation: Option<u32>,
    },
    /// Print the running document.
    Get,
    /// Enforce a saved generation's document again, as a new generation.
    Rollback {
        /// The saved generation (default: the one before the running one).
        #[arg(long, value_name = "N")]
        to: Option<u32>,
    },
    /// The running generation, the guarded interfaces, conntrack fill, drops.
    Status,
    /// What the running rules decide about one packet, and why.
    Explain {
        /// The ENI (its id in the document) the packet meets.
        #[arg(long, value_name = "ID")]
        eni: String,
        /// ingress: the packet arrives at the ENI; egress: the ENI sends it.
        #[arg(long, value_parser = parse_direction, value_name = "ingress|egress")]
        direction: Direction,
        /// tcp, udp, icmp, icmpv6, gre or a protocol number.
        #[arg(long, value_name = "P")]
        proto: String,
        /// The source, IP[:PORT]; IPv6 with a port as [ADDR]:PORT. The
        /// port is required for tcp and udp and refused for the others.
        #[arg(long, value_name = "IP[:PORT]")]
        src: String,
        /// The destination, as --src.
        #[arg(long, value_name = "IP[:PORT]")]
        dst: String,
        /// ICMP type, icmp and icmpv6 only (default: echo request).
        #[arg(long, value_name = "TYPE")]
        icmp_type: Option<u8>,
    },
    /// Flow-log records (SPEC §7): the newest from the flow-log file, or
    /// with --follow each capture window's records as it closes.
    Flows {
        /// Keep printing records as each capture window closes (Ctrl-C
        /// stops).
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        filters: FlowFilterArgs,
        /// Only records of windows that ended this long ago or later: 30s,
        /// 5m, 2h, 1d.
        #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
        since: Option<Duration>,
        /// How many of the newest records from the file to print first
        /// (default: 1000, or none with --follow).
        #[arg(short = 'n', long, value_name = "N")]
        limit: Option<usize>,
        /// table (local times; the default on a terminal), json (one JSON
        /// object per line; the default otherwise, and with --json) or text
        /// (the space-separated form of SPEC §7).
        #[arg(long, value_enum)]
        format: Option<FlowFormat>,
    },
    /// Verdict events as they happen (SPEC §9): connections admitted (by
    /// which rule), first rejected packets of flows (for which reason),
    /// connections cut by revalidation. Ctrl-C stops.
    Monitor {
        #[command(flatten)]
        filters: FlowFilterArgs,
        /// The source address lies in this prefix.
        #[arg(long, value_name = "CIDR")]
        src: Option<IpNet>,
        /// The destination address lies in this prefix.
        #[arg(long, value_name = "CIDR")]
        dst: Option<IpNet>,
        /// Only events of this reason (a rule id, default-deny, ...).
        #[arg(long, value_name = "ID")]
        rule: Option<String>,
    },
    /// Per-rule packets, bytes and last hit.
    Counters {
        /// Only the rules that can decide for this ENI.
        #[arg(long, value_name = "ID")]
        eni: Option<String>,
    },
    /// Stop enforcing everywhere and remove the pinned programs and maps.
    Detach,
    /// The versions of filterctl and filterd.
    Version,
    /// A fleet of hosts in etcd (SPEC §10): status, and validated writes.
    /// Talks to etcd, not to the daemon.
    Fleet(fleet::FleetArgs),
    /// Check a rule-set document without a daemon: every error with its
    /// path (exit 1), or valid (exit 0).
    Validate {
        /// The document; `-` reads standard input.
        file: PathBuf,
        /// host: also a notice per ENI whose interface this host lacks
        /// (what an apply here would say); any: the document alone.
        #[arg(long, value_enum, default_value_t)]
        interfaces: Interfaces,
    },
    /// What applying NEW over OLD would change, as `apply` prints it,
    /// without a daemon: exit 0 no change, 1 changed (or invalid).
    Diff {
        /// The document enforced now.
        old: PathBuf,
        /// The document to compare it with.
        new: PathBuf,
    },
}

/// Why a command failed, already worded for stderr.
struct Failure {
    lines: Vec<String>,
    json: Value,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        match e {
            ClientError::Api(api) => {
                let mut lines = vec![format!("filterctl: {} ({})", api.message, api.code)];
                if api.code == ErrorCode::InvalidDocument {
                    // Every error, one per line, nothing else on the line.
                    lines.extend(api.details.iter().cloned());
                } else {
                    lines.extend(api.details.iter().map(|d| format!("  {d}")));
                }
                Failure {
                    lines,
                    json: serde_json::json!({ "error": api }),
                }
            }
            other => Failure::local("unreachable", other.to_string()),
        }
    }
}

impl Failure {
    fn local(code: &str, message: String) -> Failure {
        Failure {
            lines: vec![format!("filterctl: {message}")],
            json: serde_json::json!({ "error": { "code": code, "message": message } }),
        }
    }

    /// Prints the failure (JSON on stdout with `--json`, the lines on
    /// stderr); the exit code.
    fn report(&self, json: bool, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
        if json {
            let _ = out.write_all(pretty(&self.json).as_bytes());
        }
        for line in &self.lines {
            let _ = writeln!(err, "{line}");
        }
        EXIT_FAILURE
    }
}

/// Runs one command; returns the process exit code.
pub async fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match &cli.command {
        Command::Flows { .. } => return flows(&cli, out, err).await,
        Command::Monitor { .. } => return monitor(&cli, out, err).await,
        _ => {}
    }
    if let Command::Fleet(args) = &cli.command {
        return fleet::run(args, cli.json, out, err).await;
    }
    if let Command::Validate { .. } | Command::Diff { .. } = &cli.command {
        return offline::run(&cli, out, err);
    }
    match execute(&cli).await {
        Ok((json, human)) => {
            let text = if cli.json { pretty(&json) } else { human };
            // SPEC §8: a degraded host (a pending ENI, a failed restore).
            let degraded = matches!(cli.command, Command::Status)
                && json.get("degraded") == Some(&Value::Bool(true));
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) if degraded => EXIT_DEGRADED,
                Ok(()) => 0,
                Err(_) => EXIT_FAILURE,
            }
        }
        Err(failure) => failure.report(cli.json, out, err),
    }
}

fn pretty(value: &Value) -> String {
    let mut s = serde_json::to_string_pretty(value).unwrap_or_default();
    s.push('\n');
    s
}

async fn call<P: Serialize, T: DeserializeOwned + Serialize>(
    client: &mut Client,
    method: Method,
    params: P,
) -> Result<(Value, T), Failure> {
    let value = client.call(method, params).await?;
    let typed = serde_json::from_value(value.clone()).map_err(|e| {
        Failure::local(
            "protocol",
            format!("unexpected {method} result from filterd: {e}"),
        )
    })?;
    Ok((value, typed))
}

fn read_document(file: &PathBuf) -> Result<String, Failure> {
    let mut text = String::new();
    let read = if file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(file).map(|t| text = t)
    };
    read.map_err(|e| Failure::local("file", format!("{}: {e}", file.display())))?;
    Ok(text)
}

/// The result as JSON and as text.
async fn execute(cli: &Cli) -> Result<(Value, String), Failure> {
    // Read the document before connecting: a missing file is not the
    // daemon's business.
    let document = match &cli.command {
        Command::Apply { file, .. } => Some(read_document(file)?),
        _ => None,
    };
    if let Command::Explain {
        eni,
        direction,
        proto,
        src,
        dst,
        icmp_type,
    } = &cli.command
    {
        // Check the packet here too, for a quick answer without a daemon.
        let params = explain_params(eni, *direction, proto, src, dst, *icmp_type);
        params
            .packet()
            .map_err(|e| Failure::local("invalid_params", e.message))?;
    }
    let mut client = match Client::connect(&cli.socket).await {
        Ok(client) => client,
        // `version` still tells what it can: this side's version.
        Err(e) if matches!(cli.command, Command::Version) => {
            let client = env!("CARGO_PKG_VERSION");
            let message = format!("filterd did not answer at {}: {e}", cli.socket.display());
            return Err(Failure {
                lines: vec![format!("filterctl {client}"), message.clone()],
                json: serde_json::json!({
                    "client": client,
                    "error": { "code": "unreachable", "message": message },
                }),
            });
        }
        Err(e) => return Err(e.into()),
    };
    Ok(match &cli.command {
        Command::Apply {
            dry_run,
            if_generation,
            ..
        } => {
            let params = ApplyParams {
                document: document.unwrap_or_default(),
                dry_run: *dry_run,
                if_generation: *if_generation,
            };
            let (json, r) = call::<_, ApplyResult>(&mut client, Method::Apply, params).await?;
            (json, render::apply(&r))
        }
        Command::Get => {
            let (json, r) = call::<_, GetResult>(&mut client, Method::Get, NoParams {}).await?;
            (json, render::get(&r))
        }
        Command::Rollback { to } => {
            let (json, r) =
                call::<_, ApplyResult>(&mut client, Method::Rollback, RollbackParams { to: *to })
                    .await?;
            (json, render::apply(&r))
        }
        Command::Status => {
            let (json, r) =
                call::<_, StatusResult>(&mut client, Method::Status, NoParams {}).await?;
            (json, render::status(&r))
        }
        Command::Explain {
            eni,
            direction,
            proto,
            src,
            dst,
            icmp_type,
        } => {
            let params = explain_params(eni, *direction, proto, src, dst, *icmp_type);
            let (json, r) = call::<_, ExplainResult>(&mut client, Method::Explain, params).await?;
            (json, render::explain(&r))
        }
        // Streams and lines, run by `flows` and `monitor`.
        Command::Flows { .. } | Command::Monitor { .. } => {
            return Err(Failure::local("internal", "not a one-shot command".into()))
        }
        Command::Counters { eni } => {
            let (json, r) = call::<_, CountersResult>(
                &mut client,
                Method::Counters,
                CountersParams { eni: eni.clone() },
            )
            .await?;
            (json, render::counters(&r, crate::clock::unix_now()))
        }
        Command::Detach => {
            let (json, r) =
                call::<_, DetachResult>(&mut client, Method::Detach, NoParams {}).await?;
            (json, render::detach(&r))
        }
        Command::Version => {
            let (json, r) =
                call::<_, VersionResult>(&mut client, Method::Version, NoParams {}).await?;
            (json, render::version(env!("CARGO_PKG_VERSION"), &r))
        }
        // `run` sends these to etcd before a daemon is ever asked.
        Command::Fleet(_) => {
            return Err(Failure::local(
                "usage",
                "fleet commands talk to etcd".to_owned(),
            ))
        }
        Command::Validate { .. } | Command::Diff { .. } => {
            return Err(Failure::local(
                "internal",
                "validate and diff run without a daemon".to_owned(),
            ))
        }
    })
}

/// The `flows` parameters of a `flows` command.
fn flows_params(command: &Command) -> FlowsParams {
    let Command::Flows {
        follow,
        filters,
        since,
        limit,
        ..
    } = command
    else {
        return FlowsParams::default();
    };
    FlowsParams {
        follow: *follow,
        since: since.map(|d| crate::clock::unix_now().saturating_sub(d.as_secs())),
        limit: *limit,
        ..filters.params()
    }
}

/// Records in `format`: a table, or one per line.
fn flow_lines(records: &[FlowRecord], format: FlowFormat) -> String {
    if format == FlowFormat::Table {
        return if records.is_empty() {
            String::new()
        } else {
            render::flow_table(records)
        };
    }
    let mut text = String::new();
    for record in records {
        match format {
            FlowFormat::Text => text.push_str(&render::flow_text(record)),
            _ => text.push_str(&crate::flowlog::record::json(record)),
        }
        text.push('\n');
    }
    text
}

fn fail(err: &mut dyn Write, failure: Failure) -> u8 {
    for line in &failure.lines {
        let _ = writeln!(err, "{line}");
    }
    EXIT_FAILURE
}

/// `flows`, with or without `--follow`: records as they come, in the
/// format asked for (JSON lines with `--json`; a table on a terminal).
async fn flows(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let Command::Flows {
        format,
        filters,
        follow,
        ..
    } = &cli.command
    else {
        return EXIT_FAILURE;
    };
    let format = match (cli.json, format) {
        (true, _) => FlowFormat::Json,
        (false, Some(format)) => *format,
        (false, None) if std::io::stdout().is_terminal() => FlowFormat::Table,
        (false, None) => FlowFormat::Json,
    };
    if let Err(failure) = filters.check() {
        return fail(err, failure);
    }
    let params = flows_params(&cli.command);
    let once = !*follow;
    stream_lines(
        cli,
        Method::Flows,
        params,
        once,
        out,
        err,
        |r: FlowsResult| flow_lines(&r.records, format),
    )
    .await
}

/// `monitor`: one line per event (JSON lines with `--json`); what a slow
/// reader missed goes to stderr (a `{"missed":N}` line with `--json`).
async fn monitor(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let Command::Monitor {
        filters,
        src,
        dst,
        rule,
    } = &cli.command
    else {
        return EXIT_FAILURE;
    };
    if let Err(failure) = filters.check() {
        return fail(err, failure);
    }
    let params = MonitorParams::new(filters.params(), *src, *dst, rule.clone());
    let json = cli.json;
    stream_lines(
        cli,
        Method::Monitor,
        params,
        false,
        out,
        err,
        |r: MonitorResult| {
            let mut text = String::new();
            for e in &r.events {
                if json {
                    text.push_str(&serde_json::to_string(e).unwrap_or_default());
                } else {
                    text.push_str(&render::monitor_event(e));
                }
                text.push('\n');
            }
            if r.missed > 0 {
                if json {
                    text.push_str(&format!("{{\"missed\":{}}}\n", r.missed));
                } else {
                    eprintln!("filterctl: missed {} events (reading too slowly)", r.missed);
                }
            }
            text
        },
    )
    .await
}

/// Calls `method` and prints each result of its stream (only the first
/// with `once`) as `render` words it, until the daemon ends the stream or
/// stdout goes away.
async fn stream_lines<P: Serialize, T: DeserializeOwned>(
    cli: &Cli,
    method: Method,
    params: P,
    once: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
    mut render: impl FnMut(T) -> String,
) -> u8 {
    let mut client = match Client::connect(&cli.socket).await {
        Ok(c) => c,
        Err(e) => return fail(err, e.into()),
    };
    let mut next = if once {
        client.call(method, params).await.map(Some)
    } else {
        client.stream(method, params).await
    };
    loop {
        let value = match next {
            Ok(Some(value)) => value,
            // The daemon ended the stream (it is shutting down).
            Ok(None) => return 0,
            Err(e) => return fail(err, e.into()),
        };
        let result: T = match serde_json::from_value(value) {
            Ok(r) => r,
            Err(e) => {
                return fail(
                    err,
                    Failure::local("protocol", format!("unexpected {method} result: {e}")),
                )
            }
        };
        let text = render(result);
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => {}
            // `filterctl flows -f | head`: the reader is gone, we are done.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return 0,
            Err(_) => return EXIT_FAILURE,
        }
        if once {
            return 0;
        }
        next = client.next_in_stream().await;
    }
}

fn explain_params(
    eni: &str,
    direction: Direction,
    proto: &str,
    src: &str,
    dst: &str,
    icmp_type: Option<u8>,
) -> ExplainParams {
    ExplainParams {
        eni: eni.to_owned(),
        direction,
        proto: proto.to_owned(),
        src: src.to_owned(),
        dst: dst.to_owned(),
        icmp_type,
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;
    use crate::flowlog::record::tests::tcp_record;

    #[test]
    fn flows_prints_json_lines_or_a_table() {
        let records = vec![tcp_record(), tcp_record()];
        let json = flow_lines(&records, FlowFormat::Json);
        assert_eq!(json.lines().count(), 2);
        for line in json.lines() {
            let r: FlowRecord = serde_json::from_str(line).unwrap();
            assert_eq!(r, tcp_record());
        }
        let table = flow_lines(&records, FlowFormat::Table);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("START "), "{table}");
        assert!(lines[1].contains("198.51.100.7:40000") && lines[1].contains("ACCEPT"));
        assert_eq!(flow_lines(&[], FlowFormat::Table), "");
    }

    #[test]
    fn flags_become_parameters() {
        let cli = Cli::try_parse_from([
            "filterctl",
            "flows",
            "--since",
            "10m",
            "--proto",
            "udp",
            "-n",
            "5",
        ])
        .unwrap();
        let p = flows_params(&cli.command);
        let since = p.since.unwrap();
        assert!((crate::clock::unix_now() - since).abs_diff(600) <= 1);
        assert_eq!((p.proto.as_deref(), p.limit), (Some("udp"), Some(5)));
        let cli = Cli::try_parse_from([
            "filterctl",
            "monitor",
            "--action",
            "reject",
            "--src",
            "192.0.2.0/24",
            "--rule",
            "default-deny",
        ])
        .unwrap();
        let Command::Monitor {
            filters,
            src,
            dst,
            rule,
        } = cli.command
        else {
            panic!("not monitor");
        };
        let p = MonitorParams::new(filters.params(), src, dst, rule);
        assert_eq!(p.action.as_deref(), Some("REJECT"));
        assert_eq!(p.src, Some("192.0.2.0/24".parse().unwrap()));
        assert_eq!(p.rule.as_deref(), Some("default-deny"));
        assert!(Cli::try_parse_from(["filterctl", "flows", "--since", "soon"]).is_err());
    }
}
