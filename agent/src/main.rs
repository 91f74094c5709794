//! podnet-agent: wiring only. Configuration, logging, the runtime, the HTTP server and
//! signals; the logic lives in `podnet_probe`.

mod auth;
mod caps;
mod config;
mod http;
mod memory;
mod server;
mod source;
mod tls;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Parser;
use clap::error::ErrorKind;
use podnet_probe::host::netlink::NetlinkHost;
use podnet_probe::metrics::Metrics;
use podnet_probe::monitor::{Monitor, MonitorConfig, ProbeSettings};
use podnet_probe::probe::target::{
    Gateways, HOST_TO_POD_TARGET, Target, check_unique, parse_probe_file,
};
use podnet_probe::probe::{NetnsDriver, Prober, ProberConfig};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::{Args, LogFormat};

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line, not clap's usage block: this is read in `kubectl logs`.
            let rendered = e.render().to_string();
            eprintln!(
                "podnet-agent: {}",
                rendered.lines().next().unwrap_or("invalid arguments")
            );
            return ExitCode::from(2);
        }
    };
    let checked = args
        .check_http()
        .and_then(|()| probe_targets(&args))
        .and_then(|t| Ok((t, source::choose(&args)?)));
    let (targets, choice) = match checked {
        Ok(c) => c,
        Err(e) => {
            eprintln!("podnet-agent: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&args);
    match run(args, targets, choice) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("podnet-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(args: &Args) {
    let filter = tracing_subscriber::EnvFilter::new(&args.log_level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match args.log_format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Built-in targets, then `--probe`, then `--probe-file`; names must be unique.
fn probe_targets(args: &Args) -> Result<Vec<Target>, String> {
    let mut targets = Target::defaults().to_vec();
    targets.extend(args.probes.iter().cloned());
    if let Some(path) = &args.probe_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--probe-file {}: {e}", path.display()))?;
        targets.extend(
            parse_probe_file(&text).map_err(|e| format!("--probe-file {}: {e}", path.display()))?,
        );
    }
    check_unique(&targets)?;
    Ok(targets)
}

fn node_name(args: &Args) -> String {
    args.node_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    })
}

fn run(args: Args, targets: Vec<Target>, choice: source::Choice) -> anyhow::Result<()> {
    // One runtime thread is plenty for this load; namespace work runs on its own thread. Fewer
    // threads also means fewer malloc arenas, i.e. a smaller resident set.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(args, targets, choice))
}

/// How often freed heap is returned to the kernel (see `memory`); each call costs well under a
/// millisecond.
const MALLOC_TRIM_EVERY: Duration = Duration::from_secs(10);

async fn serve(args: Args, targets: Vec<Target>, choice: source::Choice) -> anyhow::Result<()> {
    let node = node_name(&args);
    info!(
        version = env!("CARGO_PKG_VERSION"),
        node = %node,
        listen = %args.listen,
        pod_source = ?choice,
        "podnet-agent starting"
    );
    log_missing_privileges(!args.no_probes);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut metrics = Metrics::new(env!("CARGO_PKG_VERSION"));
    let (pods, watch_task) =
        source::start(choice, &args, &node, &mut metrics, stopped(stop_rx.clone())).await?;
    let host = NetlinkHost::new().context("opening netlink")?;
    let config = MonitorConfig {
        node_name: node,
        pods,
        resync_interval: args.resync_interval,
        probes: (!args.no_probes).then(|| ProbeSettings {
            failure_threshold: args.probe_failures,
            targets: targets
                .iter()
                .map(|t| t.name.clone())
                .chain([HOST_TO_POD_TARGET.to_owned()])
                .collect(),
        }),
    };
    let (monitor, snapshots) = Monitor::new(host, config, metrics.monitor());
    metrics.serve_snapshots(snapshots.clone());
    let prober = if args.no_probes {
        None
    } else {
        let driver = NetnsDriver::new().context("starting the prober")?;
        let config = ProberConfig {
            targets,
            gateways: Gateways::default(),
            interval: args.probe_interval,
            timeout: args.probe_timeout,
            failure_threshold: args.probe_failures,
            recheck: Duration::from_secs(1).min(args.probe_interval),
            concurrency: args.probe_concurrency as usize,
        };
        Some(Prober::new(
            driver,
            config,
            monitor.pod_set(),
            monitor.probe_sink(),
            metrics.probe(),
        ))
    };

    let listeners = server::bind_all(args.listeners(secure_metrics(&args).await?))?;
    let state = Arc::new(http::AppState {
        metrics,
        snapshots,
        started: SystemTime::now(),
        max_sync_age: args.resync_interval * 3 + Duration::from_secs(30),
        monitor_alive: AtomicBool::new(true),
        status: http::StatusCache::default(),
    });

    let monitor_task = {
        let state = Arc::clone(&state);
        let shutdown = stopped(stop_rx.clone());
        tokio::spawn(async move {
            monitor.run(shutdown).await;
            state.monitor_alive.store(false, Ordering::Relaxed);
        })
    };
    let prober_task = prober.map(|p| tokio::spawn(p.run(stopped(stop_rx.clone()))));
    tokio::spawn(memory::trim_forever(
        MALLOC_TRIM_EVERY,
        state.snapshots.clone(),
    ));
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let http_tasks: Vec<_> = listeners
        .into_iter()
        .map(|l| l.spawn(Arc::clone(&state), stopped(stop_rx.clone())))
        .collect();
    for t in http_tasks {
        t.await.context("HTTP server task")?;
    }
    monitor_task.await.context("monitor task")?;
    if let Some(t) = prober_task {
        t.await.context("prober task")?;
    }
    if let Some(t) = watch_task {
        t.await.context("Kubernetes watch task")?;
    }
    info!("stopped");
    Ok(())
}

/// One line per check the agent's privileges rule out.
fn log_missing_privileges(probes: bool) {
    match caps::Privileges::read() {
        Some(p) => {
            for line in caps::missing_checks(p, probes) {
                warn!("{line}");
            }
        }
        None => warn!("cannot read CapEff from /proc/self/status: privileges unchecked"),
    }
}

/// For `--secure-metrics`: the authorizer (TokenReview + SubjectAccessReview) and TLS.
async fn secure_metrics(
    args: &Args,
) -> anyhow::Result<Option<(Arc<auth::Authorizer>, tokio_rustls::TlsAcceptor)>> {
    if !args.secure_metrics {
        return Ok(None);
    }
    let client = podnet_probe::kube::client(args.kubeconfig.as_deref())
        .await
        .context("connecting to the Kubernetes API for --secure-metrics")?;
    let reviewer = auth::KubeReviewer::new(client);
    let files = args
        .tls_cert_file
        .as_deref()
        .zip(args.tls_key_file.as_deref());
    let names = vec!["localhost".to_owned(), args.listen.ip().to_string()];
    let tls = tls::acceptor(files, names).context("--secure-metrics TLS")?;
    info!(
        self_signed = files.is_none(),
        "secure metrics: TLS, bearer tokens checked with TokenReview and SubjectAccessReview"
    );
    Ok(Some((
        Arc::new(auth::Authorizer::new(Box::new(reviewer))),
        tls,
    )))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers; SIGTERM will kill the agent uncleanly");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
