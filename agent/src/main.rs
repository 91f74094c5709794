//! podnet-agent: wiring only. Configuration, logging, the runtime, the HTTP server and
//! signals; the logic lives in `podnet_probe`.

mod auth;
mod caps;
mod config;
mod http;
mod memory;
mod scoping;
mod server;
mod source;
mod supervise;
mod tls;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Parser;
use clap::error::ErrorKind;
use podnet_probe::host::netlink::NetlinkHost;
use podnet_probe::metrics::Metrics;
use podnet_probe::model::Workers;
use podnet_probe::monitor::{Monitor, MonitorConfig, ProbeSettings};
use podnet_probe::probe::target::Gateways;
use podnet_probe::probe::{NetnsDriver, Prober, ProberConfig};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::{Args, LogFormat};
use crate::supervise::{SHUTDOWN_DEADLINE, spawn_worker};

fn main() -> ExitCode {
    let args = match Args::try_parse() {
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
fn one_line(rendered: &str) -> String {
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

fn node_name(args: &Args) -> String {
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
    let (felix, felix_task) =
        start_felix(&args, &mut metrics, &workers, stopped(stop_rx.clone())).unzip();
    let (pods, watch_task) = source::start(
        choice,
        &args,
        &node,
        &mut metrics,
        &workers,
        stopped(stop_rx.clone()),
    )
    .await?;
    let blocks = source::start_blocks(&args, &workers, stopped(stop_rx.clone())).await?;
    let (remote_blocks, blocks_task) = blocks.unzip();
    let host = NetlinkHost::new().context("opening netlink")?;
    let config = MonitorConfig {
        node_name: node,
        pods,
        resync_interval: args.resync_interval,
        probes: (!args.no_probes).then(|| ProbeSettings {
            failure_threshold: args.probe_failures,
            targets: probing.target_names(),
            policy_engine: probing.policy_engine,
        }),
        cni: args.cni.clone(),
        remote_blocks,
        felix,
    };
    let (monitor, snapshots) = Monitor::new(host, config, metrics.monitor());
    metrics.serve_snapshots_capped(snapshots.clone(), args.max_pod_series as usize);
    let prober = if args.no_probes {
        None
    } else {
        let driver = NetnsDriver::with_worker(workers.register("netns"))
            .context("starting the prober")?
            .with_dns_question(probing.dns.clone())
            .with_tls(probing.tls.clone());
        let config = ProberConfig {
            targets: probing.targets,
            gateways: Gateways::default(),
            interval: args.probe_interval,
            timeout: args.probe_timeout,
            failure_threshold: args.probe_failures,
            recheck: Duration::from_secs(1).min(args.probe_interval),
            concurrency: args.probe_concurrency as usize,
            scope: probing.scope,
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
    tasks.extend(watch_task.map(|t| ("watch", t)));
    tasks.extend(blocks_task.map(|t| ("blocks", t)));
    tasks.extend(felix_task.map(|t| ("felix", t)));
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

/// With `--cni calico` and an endpoint to read, read felix on this node and export it.
fn start_felix(
    args: &Args,
    metrics: &mut Metrics,
    workers: &Workers,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Option<(podnet_probe::model::Felix, tokio::task::JoinHandle<()>)> {
    let config = podnet_probe::felix::FelixConfig {
        health: args.calico_felix_health.0,
        metrics: args.calico_felix_metrics.0,
        interval: args.calico_felix_interval,
        timeout: FELIX_TIMEOUT,
    };
    let calico = matches!(args.cni, podnet_probe::cni::Cni::Calico);
    if !calico || (config.health.is_none() && config.metrics.is_none()) {
        return None;
    }
    let felix = podnet_probe::model::Felix::default();
    metrics.watch_felix(felix.clone());
    info!(health = ?config.health, metrics = ?config.metrics, "reading calico-node's felix");
    let reader = felix.clone();
    let task = spawn_worker(workers, "felix", |guard| async move {
        // The guard lives as long as the reader: dropping it marks the worker stopped.
        let _guard = guard;
        podnet_probe::felix::run(config, reader, shutdown).await;
    });
    Some((felix, task))
}
