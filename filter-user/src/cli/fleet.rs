//! `filterctl fleet` (SPEC §10): talks to etcd directly, no daemon needed.
//! Endpoints, prefix and TLS files come from the flags, else from
//! filterd's configuration file (`/etc/filterd/filterd.toml`).
use std::{io::Write, path::PathBuf};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{pretty, read_document, render, EXIT_FAILURE};
use crate::{
    clock::unix_now,
    config::{self, Settings, DEFAULT_CONFIG},
    fleet::{
        admin::{self, FleetView},
        client::connect,
        EtcdConfig, FleetError,
    },
};

#[derive(Debug, Args)]
pub struct FleetArgs {
    /// etcd endpoints (comma-separated URLs); else `etcd_endpoints` of the
    /// configuration file.
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// The key prefix; else `etcd_prefix` of the configuration file.
    #[arg(long, value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// The CA certificate (PEM) that signed etcd's certificate.
    #[arg(long, value_name = "FILE")]
    pub etcd_cacert: Option<PathBuf>,
    /// The client certificate (PEM) for etcd.
    #[arg(long, value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,
    /// The key (PEM) of --etcd-cert.
    #[arg(long, value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
    /// filterd's configuration file, for whatever is not given here.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Every host's status: generation, revision, digest, errors.
    Status,
    /// Validate a document or an ENI list, then write it.
    Put {
        #[command(subcommand)]
        what: PutWhat,
    },
}

#[derive(Debug, Subcommand)]
pub enum PutWhat {
    /// PREFIX/v1/shared: a document without `enis`.
    Shared {
        /// The document; `-` reads standard input.
        file: PathBuf,
        /// Write only if the key was last changed at revision N (0: only
        /// if it does not exist yet).
        #[arg(long, value_name = "N")]
        if_revision: Option<i64>,
    },
    /// PREFIX/v1/hosts/HOST/enis: the JSON array of HOST's ENIs.
    Host {
        host: String,
        file: PathBuf,
        #[arg(long, value_name = "N")]
        if_revision: Option<i64>,
    },
}

/// Runs one `fleet` command; the exit code.
pub async fn run(args: &FleetArgs, json: bool, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match execute(args).await {
        Ok((value, text)) => {
            let text = if json { pretty(&value) } else { text };
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => 0,
                Err(_) => EXIT_FAILURE,
            }
        }
        Err(lines) => {
            for line in lines {
                let _ = writeln!(err, "{line}");
            }
            EXIT_FAILURE
        }
    }
}

async fn execute(args: &FleetArgs) -> Result<(Value, String), Vec<String>> {
    let etcd = etcd_config(args).map_err(|e| vec![format!("filterctl: {e}")])?;
    let document = match &args.command {
        FleetCommand::Put {
            what: PutWhat::Shared { file, .. } | PutWhat::Host { file, .. },
        } => Some(read_document(file).map_err(|f| f.lines)?),
        FleetCommand::Status => None,
    };
    let failed = |e: FleetError| match e {
        FleetError::Invalid(errors) => {
            let mut lines = vec![format!(
                "filterctl: rejected with {} error(s); nothing was written",
                errors.len()
            )];
            lines.extend(errors);
            lines
        }
        e => vec![format!("filterctl: etcd {}: {e}", etcd.describe())],
    };
    let mut client = connect(&etcd).await.map_err(failed)?;
    let keys = &etcd.keys;
    let text = document.unwrap_or_default();
    match &args.command {
        FleetCommand::Status => {
            let view = admin::view(&mut client, keys).await.map_err(failed)?;
            let value = serde_json::to_value(&view).unwrap_or(Value::Null);
            Ok((value, status_text(&view)))
        }
        FleetCommand::Put { what } => {
            let (key, revision) = match what {
                PutWhat::Shared { if_revision, .. } => (
                    keys.shared(),
                    admin::put_shared(&mut client, keys, &text, *if_revision).await,
                ),
                PutWhat::Host {
                    host, if_revision, ..
                } => (
                    keys.host_enis(host),
                    admin::put_host(&mut client, keys, host, &text, *if_revision).await,
                ),
            };
            let revision = revision.map_err(failed)?;
            Ok((
                json!({"key": key, "revision": revision}),
                format!("wrote {key} at revision {revision}\n"),
            ))
        }
    }
}

/// The flags over the configuration file. A missing file is fine when it
/// is the default one or the flags name the endpoints.
fn etcd_config(args: &FleetArgs) -> Result<EtcdConfig, String> {
    let mut settings = match config::from_file(&args.config) {
        Ok(settings) => settings,
        Err(config::ConfigError::Read { error, .. })
            if error.kind() == std::io::ErrorKind::NotFound
                && (args.config.as_os_str() == DEFAULT_CONFIG
                    || !args.etcd_endpoints.is_empty()) =>
        {
            default_settings()?
        }
        Err(e) => return Err(e.to_string()),
    };
    if !args.etcd_endpoints.is_empty() {
        settings.etcd_endpoints = args.etcd_endpoints.clone();
    }
    if let Some(prefix) = &args.etcd_prefix {
        settings.etcd_prefix = prefix.clone();
    }
    for (flag, setting) in [
        (&args.etcd_cacert, &mut settings.etcd_cacert),
        (&args.etcd_cert, &mut settings.etcd_cert),
        (&args.etcd_key, &mut settings.etcd_key),
    ] {
        if flag.is_some() {
            setting.clone_from(flag);
        }
    }
    EtcdConfig::from_settings(&settings)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "no etcd endpoints: give --etcd-endpoints or set etcd_endpoints in {}",
                args.config.display()
            )
        })
}

fn default_settings() -> Result<Settings, String> {
    use clap::Parser;
    config::Args::try_parse_from(["filterd"])
        .map(|a| a.settings)
        .map_err(|e| e.to_string())
}

/// One row per host, then each host's errors indented under a heading.
fn status_text(view: &FleetView) -> String {
    let dash = || "-".to_owned();
    let now = unix_now();
    let mut text = format!(
        "etcd revision {}; shared {}\n",
        view.revision,
        view.shared_revision
            .map_or("does not exist".to_owned(), |r| format!(
                "changed at revision {r}"
            ))
    );
    let rows: Vec<Vec<String>> = view
        .hosts
        .iter()
        .map(|(host, h)| {
            let Some(s) = &h.status else {
                let state = match &h.unreadable {
                    Some(e) => format!("unreadable status: {e}"),
                    None => "no status (down?)".to_owned(),
                };
                return vec![host.clone(), dash(), dash(), dash(), dash(), dash(), state];
            };
            let state = match s.errors.len() {
                0 => "ok".to_owned(),
                n => format!("revision {} rejected: {n} error(s)", s.revision),
            };
            vec![
                host.clone(),
                s.generation.map_or_else(dash, |g| g.to_string()),
                s.revision.to_string(),
                s.enforced_revision.map_or_else(dash, |r| r.to_string()),
                s.digest
                    .as_deref()
                    .map_or_else(dash, |d| d.chars().take(12).collect()),
                render::ago(s.updated_at, now),
                state,
            ]
        })
        .collect();
    text.push_str(&render::table(
        &[
            "HOST",
            "GENERATION",
            "REVISION",
            "ENFORCED",
            "DIGEST",
            "REPORTED",
            "STATE",
        ],
        &rows,
    ));
    for (host, h) in &view.hosts {
        let Some(s) = &h.status else { continue };
        if !s.errors.is_empty() || !s.ignored.is_empty() {
            text.push_str(&format!("\n{host}:\n"));
            for line in s.errors.iter().chain(&s.ignored) {
                text.push_str(&format!("  {line}\n"));
            }
        }
    }
    text
}
