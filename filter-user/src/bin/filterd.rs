//! `filterd`: the daemon (SPEC §4). Everything but the flags and the
//! signals lives in `filter::daemon`.
use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{bail, Context};
use clap::Parser;
use filter::{
    api::DEFAULT_SOCKET,
    daemon::{
        auth::Access, library::LibraryValidator, parse_capture_window, serve, socket, Daemon,
        DaemonConfig, DaemonError, DirLocks, ServerConfig, Started,
    },
    dataplane::KernelEnforcer,
    flowlog::{FlowLog, FlowLogConfig, DEFAULT_KEEP_FILES},
};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::watch,
};

#[derive(Debug, Parser)]
#[command(
    name = "filterd",
    version,
    about = "The filter daemon: enforces security groups and network ACLs with eBPF"
)]
struct Args {
    /// The API socket (created fresh, mode 0660).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Where applied generations are saved (the last 10 are kept).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/filterd")]
    state_dir: PathBuf,
    /// Where programs, links and maps are pinned (in bpffs).
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/filterd")]
    pin_dir: PathBuf,
    /// The flow-log file.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/log/filterd/flows.log"
    )]
    flow_log: PathBuf,
    /// Flow-log capture window: 60s, 1m, ... (1s to 10m). A document's
    /// flow_log.capture_window_s wins.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_capture_window)]
    capture_window: Duration,
    /// Rotate the flow-log file when it would grow past this size (bytes,
    /// or with a K, M or G suffix).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    flow_log_max_size: u64,
    /// How many rotated flow-log files to keep (FILE.1 is the newest).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KEEP_FILES)]
    flow_log_keep: usize,
    /// The group (name or gid) that owns the socket; its members may apply,
    /// roll back and detach, as root may.
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,
    /// Apply this document at start instead of restoring the saved
    /// generation.
    #[arg(long, value_name = "FILE")]
    ruleset: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let gid = args
        .socket_group
        .as_deref()
        .map(socket::resolve_group)
        .transpose()?;
    let ruleset = args
        .ruleset
        .as_ref()
        .map(|path| {
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --ruleset {}", path.display()))
        })
        .transpose()?;

    // The data plane locks the pin directory itself when it loads (and
    // mounts bpffs first if needed).
    let locks = DirLocks::state_only(&args.state_dir)?;
    let enforcer = KernelEnforcer::load(&args.pin_dir)?;
    let bound = socket::bind(&args.socket, gid)?;
    let config = DaemonConfig {
        flow_log: args.flow_log,
        capture_window: args.capture_window,
        ..DaemonConfig::new(&args.state_dir, &args.pin_dir)
    };
    let mut flow_config = FlowLogConfig::new(&args.pin_dir, &config.flow_log);
    flow_config.capture_window = config.capture_window;
    flow_config.file.max_bytes = args.flow_log_max_size;
    flow_config.file.keep = args.flow_log_keep;
    let (flow_log, collector) = FlowLog::new(flow_config);
    let daemon = Daemon::open(config, locks, enforcer, Arc::new(LibraryValidator::host()))?
        .with_flow_source(flow_log);
    match daemon.start(ruleset) {
        Ok(Started::Applied(g)) => tracing::info!("--ruleset enforced as generation {g}"),
        Ok(Started::Adopted(g)) => {
            tracing::info!("took over generation {g} from the pinned data plane")
        }
        Ok(Started::Restored { from, generation }) => {
            tracing::info!("restored saved generation {from} as generation {generation}")
        }
        Ok(Started::RestoreFailed(e)) => {
            tracing::error!("serving without a restored generation: {e}")
        }
        Ok(Started::Nothing) => tracing::info!("nothing to restore; waiting for an apply"),
        Err(DaemonError::Invalid(errors)) => bail!(
            "--ruleset {} was rejected:\n{}",
            args.ruleset.unwrap_or_default().display(),
            errors.join("\n")
        ),
        Err(e) => return Err(e).context("applying --ruleset"),
    }

    let listener = tokio::net::UnixListener::from_std(bound.try_clone_listener()?)?;
    tracing::info!("serving on {}", bound.path().display());
    let server = ServerConfig {
        access: Access::new(gid),
        ..ServerConfig::default()
    };
    // The flow log runs until the server has stopped, then closes the open
    // capture window so what was counted until then reaches the file.
    let (stop_flows, mut flows_stopped) = watch::channel(false);
    let collector = tokio::spawn(collector.run(async move {
        let _ = flows_stopped.wait_for(|stop| *stop).await;
    }));
    serve(listener, Arc::new(daemon), server, shutdown_signal()).await;
    let _ = stop_flows.send(true);
    if let Err(e) = collector.await {
        tracing::error!("the flow-log collector failed: {e}");
    }
    // Enforcement stays in place (pinned); only the socket goes.
    drop(bound);
    tracing::info!("stopped; the pinned data plane keeps enforcing");
    Ok(())
}

/// `--flow-log-max-size`: bytes, or with a K, M or G suffix (powers of
/// 1024).
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_uppercase()),
        _ => (t, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(format!("{text:?}: the unit must be K, M or G")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 4096, 512K or 64M"))?;
    match n.checked_mul(1 << shift) {
        Some(0) => Err("the size must be above 0".to_owned()),
        Some(v) => Ok(v),
        None => Err(format!("{text:?} is too large")),
    }
}

async fn shutdown_signal() {
    let (term, int) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::warn!("cannot listen for SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
