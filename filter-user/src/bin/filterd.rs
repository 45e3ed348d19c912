//! `filterd`: the daemon (SPEC §4, §8). The flags and the configuration
//! file are `filter::config`; everything else but the signals lives in
//! `filter::daemon`. Exit codes: 0 clean stop, 2 usage or configuration
//! error, 1 anything else.
use std::{io::IsTerminal, process::ExitCode, sync::Arc};

use anyhow::{bail, Context};
use filter::{
    config::{self, Command, LogFormat, Settings, EXIT_USAGE},
    daemon::{
        auth::Access, conntrack_size_at_start, fd_limit, library::LibraryValidator, serve, socket,
        Daemon, DaemonConfig, DaemonError, DirLocks, ServerConfig, Started,
    },
    dataplane::{detach_all_pinned, KernelEnforcer, LinkEvents, MapSizes},
    fleet::{self, EtcdConfig},
    flowlog::{FlowLog, FlowLogConfig},
    metrics::{self, Exporter, Metrics},
    systemd,
};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::watch,
};

fn main() -> ExitCode {
    one_heap_arena();
    let (args, matches) = match config::parse_args() {
        Ok(parsed) => parsed,
        // --help and --version exit 0, usage errors 2.
        Err(e) => e.exit(),
    };
    let settings = match config::load(&args, &matches) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("filterd: configuration error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if !settings.etcd_endpoints.is_empty() && settings.ruleset.is_some() {
        eprintln!(
            "filterd: configuration error: --ruleset and --etcd-endpoints are two sources of \
             rules; give one"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    if args.print_config {
        return match config::to_toml(&settings) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("filterd: {e}");
                ExitCode::from(EXIT_USAGE)
            }
        };
    }
    init_logging(settings.log_format);
    let result = match args.command {
        Some(Command::Cleanup { pin_dir }) => cleanup(&pin_dir.unwrap_or(settings.pin_dir)),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
            .and_then(|runtime| runtime.block_on(run(settings))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs on stderr: colour only when stderr is a terminal; `json` writes
/// one object per line. `RUST_LOG` filters (default `info`).
fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `filterd cleanup`: removes every pinned link, program and map (SPEC §8).
fn cleanup(pin_dir: &std::path::Path) -> anyhow::Result<()> {
    let report = detach_all_pinned(pin_dir)
        .with_context(|| format!("removing what is pinned in {}", pin_dir.display()))?;
    for link in &report.links {
        tracing::info!("detached {}", link.display());
    }
    if report.removed_dir {
        tracing::info!(
            "removed {} ({} links); nothing filterd pinned is left",
            pin_dir.display(),
            report.links.len()
        );
    } else {
        tracing::info!("{} does not exist; nothing to remove", pin_dir.display());
    }
    Ok(())
}

async fn run(args: Settings) -> anyhow::Result<()> {
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

    // SPEC §10: with etcd endpoints, etcd is the one source of rules.
    let etcd = EtcdConfig::from_settings(&args)?;
    let host_id = etcd
        .as_ref()
        .map(|_| fleet::client::host_id(&args))
        .transpose()?;

    // The data plane locks the pin directory itself when it loads (and
    // mounts bpffs first if needed).
    let locks = DirLocks::state_only(&args.state_dir)?;
    // Maps made now get the size of the document the start applies or
    // restores (SPEC §3.1); pinned ones keep theirs.
    let ct_entries = conntrack_size_at_start(&args.state_dir, ruleset.as_deref());
    let enforcer = KernelEnforcer::load(
        &args.pin_dir,
        ct_entries,
        MapSizes {
            bounds: args.bounds_entries,
            cells: args.cells_entries,
        },
    )?;
    let bound = socket::bind(&args.socket, gid)?;
    let config = DaemonConfig {
        flow_log: args.flow_log,
        capture_window: args.capture_window,
        ..DaemonConfig::new(&args.state_dir, &args.pin_dir)
    };
    let mut flow_config = FlowLogConfig::new(&args.pin_dir, &config.flow_log);
    flow_config.capture_window = config.capture_window;
    flow_config.file.max_bytes = args.flow_log_max_size.0;
    flow_config.file.keep = args.flow_log_keep;
    flow_config.reported = Some(args.state_dir.join(filter::flowlog::reported::FILE_NAME));
    let (flow_log, collector) = FlowLog::new(flow_config);
    let mut daemon = Daemon::open(config, locks, enforcer, Arc::new(LibraryValidator::host()))?;
    // Bound before anything is enforced: a port in use stops the start
    // (exit 1) instead of running without the metrics asked for.
    let metrics = match args.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| metrics::MetricsError::Bind { addr, source })?;
            let registry = Arc::new(Metrics::new(args.metrics_max_rule_series));
            flow_log.observe(Arc::new(Arc::clone(&registry)));
            daemon = daemon.with_apply_observer(registry.clone());
            Some((listener, registry))
        }
        None => None,
    };
    let mut daemon = daemon.with_flow_source(flow_log);
    if let Some(etcd) = &etcd {
        daemon = daemon.with_external_source(etcd.describe());
    }
    // Before the start, so that no interface appears unseen in between
    // (SPEC §2.4: pending ENIs are guarded as their interfaces appear).
    let links = LinkEvents::subscribe().context("subscribing to the kernel's link events")?;
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
        max_request_bytes: usize::try_from(args.max_request_size.0).unwrap_or(usize::MAX),
        max_clients: args.max_clients,
        ..ServerConfig::default()
    };
    match fd_limit::raise_open_file_limit(server.max_clients) {
        Ok(limit) if limit.fits() => {
            tracing::debug!("open-file limit {} (hard {})", limit.soft, limit.hard)
        }
        Ok(limit) => tracing::warn!(
            "the open-file limit is {} (hard limit {}), below the {} that {} clients need: \
             raise LimitNOFILE= or lower max_clients",
            limit.soft,
            limit.hard,
            limit.needed,
            server.max_clients
        ),
        Err(e) => tracing::warn!("reading or raising the open-file limit: {e}"),
    }
    // The flow log runs until the server has stopped, then closes the open
    // capture window so what was counted until then reaches the file.
    let (stop_flows, mut flows_stopped) = watch::channel(false);
    let collector = tokio::spawn(collector.run(async move {
        let _ = flows_stopped.wait_for(|stop| *stop).await;
    }));
    // Enforcing (or waiting for a first apply) and bound: the socket
    // queues connections from here on.
    let daemon = Arc::new(daemon);
    let mut links_stopped = stop_flows.subscribe();
    let links = tokio::spawn(Arc::clone(&daemon).follow_links(links, async move {
        let _ = links_stopped.wait_for(|stop| *stop).await;
    }));
    // The fleet agent starts after the restored generation runs, so a host
    // that cannot reach etcd enforces what it last had (SPEC §10).
    let (stop_fleet, mut fleet_stopped) = watch::channel(false);
    let agent = etcd.zip(host_id).map(|(etcd, host)| {
        tracing::info!("taking rules from etcd {} as host {host}", etcd.describe());
        let agent = fleet::Agent::new(etcd, host, Arc::clone(&daemon));
        tokio::spawn(agent.run(async move {
            let _ = fleet_stopped.wait_for(|stop| *stop).await;
        }))
    });
    let (stop_metrics, mut metrics_stopped) = watch::channel(false);
    let metrics_server = metrics.map(|(listener, registry)| {
        tracing::info!(
            "metrics at http://{}/metrics",
            listener
                .local_addr()
                .map_or_else(|_| "?".to_owned(), |a| a.to_string())
        );
        let exporter = Exporter::new(
            registry,
            Box::new(Arc::clone(&daemon)),
            metrics::DEFAULT_REFRESH,
        );
        tokio::spawn(metrics::http::serve(
            listener,
            Arc::new(exporter),
            async move {
                let _ = metrics_stopped.wait_for(|stop| *stop).await;
            },
        ))
    });
    systemd::ready(daemon.running().map(|r| r.generation));
    serve(listener, daemon, server, async {
        shutdown_signal().await;
        systemd::stopping();
    })
    .await;
    let _ = stop_fleet.send(true);
    if let Some(agent) = agent {
        if let Err(e) = agent.await {
            tracing::error!("the etcd agent failed: {e}");
        }
    }
    let _ = stop_metrics.send(true);
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    let _ = stop_flows.send(true);
    if let Err(e) = links.await {
        tracing::error!("following the interfaces failed: {e}");
    }
    if let Err(e) = collector.await {
        tracing::error!("the flow-log collector failed: {e}");
    }
    // Enforcement stays in place (pinned); only the socket goes.
    drop(bound);
    tracing::info!("stopped; the pinned data plane keeps enforcing");
    Ok(())
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

/// One glibc arena for every thread. An apply's document arrives on a
/// runtime worker and is compiled on a blocking one; with an arena per
/// thread, memory one frees the other cannot reuse, and the daemon's peak
/// at 100k rules was half as high again (ARCHITECTURE.md, "Memory of an
/// apply"). Outside applies the daemon allocates little, so threads seldom
/// meet in the allocator.
fn one_heap_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
