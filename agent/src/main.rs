//! podnet-agent: wiring only. Configuration, logging, the runtime, the HTTP server and
//! signals; the logic lives in `podnet_probe`.

mod auth;
mod caps;
mod check;
mod config;
mod engine;
mod http;
mod memory;
mod notify;
mod scoping;
mod server;
mod services;
mod source;
mod supervise;
mod tls;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Parser;
use clap::error::ErrorKind;
use podnet_probe::metrics::Metrics;
use podnet_probe::model::Workers;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::{Args, LogFormat};
use crate::supervise::{SHUTDOWN_DEADLINE, spawn_worker};

fn main() -> ExitCode {
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "check") {
        argv.remove(1);
        return check::main(argv);
    }
    let args = match Args::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line, not clap's usage block: this is read in `kubectl logs`. The lines
            // before the usage hint stay (e.g. `[possible values: …]`), joined.
            eprintln!("podnet-agent: {}", one_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    let checked = args
        .check_http()
        .and_then(|()| args.check_probes())
        .and_then(|()| scoping::probing(&args))
        .and_then(|t| Ok((t, source::choose(&args)?)));
    let (probing, choice) = match checked {
        Ok(c) => c,
        Err(e) => {
            eprintln!("podnet-agent: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&args);
    match run(args, probing, choice) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("podnet-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// clap's message in one line: every line up to the usage block or the `--help` hint.
pub(crate) fn one_line(rendered: &str) -> String {
    let parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    if parts.is_empty() {
        "invalid arguments".to_owned()
    } else {
        parts.join(" ")
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

pub(crate) fn node_name(args: &Args) -> String {
    args.node_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    })
}

fn run(args: Args, probing: scoping::Probing, choice: source::Choice) -> anyhow::Result<()> {
    // One runtime thread is plenty for this load; namespace work runs on its own thread. Fewer
    // threads also means fewer malloc arenas, i.e. a smaller resident set.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = runtime.block_on(serve(args, probing, choice));
    // Do not wait for blocking-pool work that may hang: the deadline is already spent.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

/// How often freed heap is returned to the kernel (see `memory`); each call costs well under a
/// millisecond.
const MALLOC_TRIM_EVERY: Duration = Duration::from_secs(10);

/// How long one read of felix may take (connect and answer).
const FELIX_TIMEOUT: Duration = Duration::from_secs(2);

/// Worker names of the HTTP accept loops, in `Args::listeners` order (--listen, then
/// --status-listen).
const HTTP_WORKERS: [&str; 2] = ["http", "http-status"];

async fn serve(
    args: Args,
    probing: scoping::Probing,
    choice: source::Choice,
) -> anyhow::Result<()> {
    let node = node_name(&args);
    info!(
        version = env!("CARGO_PKG_VERSION"),
        node = %node,
        listen = %args.listen,
        pod_source = choice.kind(),
        prefix = choice.prefix(),
        cni = args.cni.as_str(),
        "podnet-agent starting"
    );
    log_missing_privileges(!args.no_probes);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let workers = Workers::default();
    if let Some(f) = &args.test_fault {
        warn!(worker = %f.worker, fault = ?f.fault, "test fault injection enabled (--test-fault)");
        workers.inject_fault(&f.worker, f.fault);
    }
    let mut metrics = Metrics::with_revision(env!("CARGO_PKG_VERSION"), env!("PODNET_REVISION"));
    metrics.watch_workers(workers.clone());
    let kube_mode = matches!(choice, source::Choice::Kubernetes(_));
    let config_node = node.clone();
    let engine::Engine {
        monitor,
        prober,
        snapshots,
        tasks: source_tasks,
    } = engine::build(&args, probing, choice, node, &mut metrics, &workers, || {
        stopped(stop_rx.clone())
    })
    .await?;
    metrics.serve_snapshots_capped(snapshots.clone(), args.max_pod_series as usize);
    if felix_configured(&args) {
        metrics.watch_felix(snapshots.clone());
    }
    let notify_task = notify::start(
        &args,
        &config_node,
        kube_mode,
        snapshots.clone(),
        &mut metrics,
        &workers,
        stopped(stop_rx.clone()),
    )
    .await?;

    let listeners = server::bind_all(args.listeners(secure_metrics(&args).await?))?;
    let state = Arc::new(http::AppState {
        metrics,
        snapshots,
        started: SystemTime::now(),
        max_sync_age: args.resync_interval * 3 + Duration::from_secs(30),
        workers: workers.clone(),
        status: http::StatusCache::default(),
    });

    let monitor_task = {
        let shutdown = stopped(stop_rx.clone());
        spawn_worker(&workers, "monitor", |guard| {
            monitor.with_worker(guard).run(shutdown)
        })
    };
    let prober_task = prober.map(|p| {
        let shutdown = stopped(stop_rx.clone());
        spawn_worker(&workers, "prober", |guard| async move {
            let _guard = guard;
            p.run(shutdown).await;
        })
    });
    tokio::spawn(memory::trim_forever(
        MALLOC_TRIM_EVERY,
        state.snapshots.clone(),
    ));
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down");
        supervise::start_watchdog();
        let _ = stop_tx.send(true);
    });
    let http_tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let task = l.spawn(Arc::clone(&state), stopped(stop_rx.clone()));
            let name = HTTP_WORKERS.get(i).copied().unwrap_or("http-other");
            (name, supervise::watch_task(&workers, name, task))
        })
        .collect();
    let mut tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)> = http_tasks;
    tasks.push(("monitor", monitor_task));
    tasks.extend(prober_task.map(|t| ("prober", t)));
    tasks.extend(source_tasks);
    tasks.extend(notify_task.map(|t| ("notify", t)));
    let deadline = async {
        stopped(stop_rx.clone()).await;
        tokio::time::sleep(SHUTDOWN_DEADLINE).await;
    };
    let joined = {
        let join_all = async {
            for (name, t) in tasks.iter_mut() {
                t.await.with_context(|| format!("{name} task"))?;
            }
            anyhow::Ok(())
        };
        tokio::select! {
            r = join_all => Some(r),
            () = deadline => None,
        }
    };
    if joined.is_none() {
        let stuck: Vec<&str> = tasks
            .iter()
            .filter(|(_, t)| !t.is_finished())
            .map(|(n, _)| *n)
            .collect();
        anyhow::bail!(
            "shutdown deadline of {SHUTDOWN_DEADLINE:?} passed; exiting without waiting for: {}",
            stuck.join(", ")
        );
    }
    joined.into_iter().try_for_each(|r| r)?;
    info!("stopped");
    Ok(())
}

/// One line per check the agent's privileges rule out.
fn log_missing_privileges(probes: bool) {
    match caps::Privileges::read() {
        Some(p) => {
            for line in caps::missing_checks(p, probes) {
                // The base DaemonSet runs without the fallback on purpose: not a warning.
                if line == caps::PROC_FALLBACK_OFF {
                    info!("{line}");
                } else {
                    warn!("{line}");
                }
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

/// Whether felix is read: `--cni calico` and at least one of its endpoints.
fn felix_configured(args: &Args) -> bool {
    matches!(args.cni, podnet_probe::cni::Cni::Calico)
        && (args.calico_felix_health.0.is_some() || args.calico_felix_metrics.0.is_some())
}

/// With `--cni calico` and an endpoint to read, read felix on this node (exported from the
/// snapshots, see [`Metrics::watch_felix`]).
pub(crate) fn start_felix(
    args: &Args,
    workers: &Workers,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Option<(podnet_probe::model::Felix, tokio::task::JoinHandle<()>)> {
    let config = podnet_probe::felix::FelixConfig {
        health: args.calico_felix_health.0,
        metrics: args.calico_felix_metrics.0,
        interval: args.calico_felix_interval,
        timeout: FELIX_TIMEOUT,
    };
    if !felix_configured(args) {
        return None;
    }
    let felix = podnet_probe::model::Felix::default();
    info!(health = ?config.health, metrics = ?config.metrics, "reading calico-node's felix");
    let reader = felix.clone();
    let task = spawn_worker(workers, "felix", |guard| async move {
        // The guard lives as long as the reader: dropping it marks the worker stopped; a
        // reader that stops reading goes silent and shows as stalled.
        guard.expect_beats(podnet_probe::felix::max_silence(&config));
        podnet_probe::felix::run(config, reader, || guard.beat(), shutdown).await;
    });
    Some((felix, task))
}
