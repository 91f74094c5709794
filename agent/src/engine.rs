//! The checking engine as both the agent and `podnet-agent check` run it: the pod source,
//! felix, the remote block watch, the control-plane check, the API look-up of pod IPs for
//! unanswered connects, the monitor over netlink and the prober. Built here once so the
//! one-shot check judges with exactly the agent's code.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use podnet_probe::host::netlink::NetlinkHost;
use podnet_probe::metrics::Metrics;
use podnet_probe::model::{BlockMap, Workers};
use podnet_probe::monitor::{Monitor, MonitorConfig, PodSource, ProbeSettings};
use podnet_probe::probe::hints::ClientHint;
use podnet_probe::probe::hints::kong::{Kong, KongPods};
use podnet_probe::probe::target::Gateways;
use podnet_probe::probe::unanswered::UnansweredConfig;
use podnet_probe::probe::{NetnsDriver, PeerProber, PeerProberConfig, Prober, ProberConfig};
use podnet_probe::snapshot::Snapshot;
use podnet_probe::verdict::ConnectNets;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Args;
use crate::scoping::Probing;
use crate::source;
use crate::supervise::spawn_worker;

/// The engine, built but not yet running.
pub struct Engine {
    /// Judges the node; run it with [`Monitor::run`].
    pub monitor: Monitor<NetlinkHost>,
    /// Probes the pods, unless `--no-probes`.
    pub prober: Option<Prober<NetnsDriver>>,
    /// The monitor's snapshots.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Background sources already running, by worker name.
    pub tasks: Vec<(&'static str, JoinHandle<()>)>,
}

/// Start the sources and build the monitor and prober. `stopped()` completes on shutdown.
pub async fn build<S, F>(
    args: &Args,
    probing: Probing,
    choice: source::Choice,
    node: String,
    metrics: &mut Metrics,
    workers: &Workers,
    stopped: S,
) -> anyhow::Result<Engine>
where
    S: Fn() -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let (felix, felix_task) = crate::start_felix(args, workers, stopped()).unzip();
    let (pods, watch_task) =
        source::start(choice, args, &node, metrics, workers, stopped()).await?;
    let blocks = source::start_blocks(args, workers, stopped()).await?;
    let (remote_blocks, blocks_task) = blocks.unzip();
    let blocks_rx = remote_blocks.clone();
    let control_plane = source::start_control_plane(args, &node, workers, stopped()).await?;
    let (control_plane, control_plane_task) = control_plane.unzip();
    let services = crate::services::start(args, &probing.targets, workers, stopped()).await?;
    let (services, services_task) = services.unzip();
    let host = NetlinkHost::new().context("opening netlink")?;
    let owners = source::pod_ip_owners(args, &pods).await?;
    let from_api = matches!(pods, PodSource::Kubernetes { .. });
    let config = MonitorConfig {
        node_name: node,
        pods,
        resync_interval: args.resync_interval,
        probes: (!args.no_probes).then(|| ProbeSettings {
            failure_threshold: args.probe_failures,
            targets: probing.target_names(),
            policy_engine: probing.policy_engine,
            networks: ConnectNets {
                pods: args.cluster_pod_cidrs.clone(),
                services: args.service_cidrs.clone(),
            },
        }),
        cni: args.cni.clone(),
        remote_blocks,
        felix,
        control_plane,
        services: services.clone(),
    };
    let (monitor, snapshots) = Monitor::new(host, config, metrics.monitor());
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
            unanswered: (!args.no_connect_watch).then(|| UnansweredConfig {
                rounds: args.connect_rounds,
                ..UnansweredConfig::default()
            }),
            owners,
            pod_networks: args.cluster_pod_cidrs.clone(),
            hints: client_hints(args, from_api),
            services: services.map(|s| s.map),
        };
        Some(Prober::new(
            driver,
            config,
            monitor.pod_set(),
            monitor.probe_sink(),
            metrics.probe(),
        ))
    };
    let mut tasks = Vec::new();
    let (monitor, peers_task) = start_peers(
        args,
        monitor,
        prober.as_ref(),
        &blocks_rx,
        workers,
        stopped(),
    );
    tasks.extend(peers_task.map(|t| ("peers", t)));
    tasks.extend(watch_task.map(|t| ("watch", t)));
    tasks.extend(blocks_task.map(|t| ("blocks", t)));
    tasks.extend(felix_task.map(|t| ("felix", t)));
    tasks.extend(control_plane_task.map(|t| ("controlplane", t)));
    tasks.extend(services_task.map(|t| ("services", t)));
    Ok(Engine {
        monitor,
        prober,
        snapshots,
        tasks,
    })
}

/// Start the cross-node probe (`--peer-probes`) when probes run and the node list is
/// followed (`--remote-blocks`); it shares the prober's namespace thread and host sockets,
/// and the monitor judges its views.
fn start_peers<F>(
    args: &Args,
    monitor: Monitor<NetlinkHost>,
    prober: Option<&Prober<NetnsDriver>>,
    nodes: &Option<watch::Receiver<Arc<BlockMap>>>,
    workers: &Workers,
    stopped: F,
) -> (Monitor<NetlinkHost>, Option<JoinHandle<()>>)
where
    F: Future<Output = ()> + Send + 'static,
{
    let (Some(prober), Some(nodes), true) = (prober, nodes, args.peer_probes > 0) else {
        if args.peer_probes > 0 && prober.is_some() {
            tracing::info!(
                "cross-node probe off: --peer-probes needs --remote-blocks (its node list)"
            );
        }
        return (monitor, None);
    };
    let config = PeerProberConfig {
        node: monitor.node_name().to_owned(),
        per_round: args.peer_probes as usize,
        interval: args.probe_interval,
        timeout: args.probe_timeout,
        scope: prober.scope().clone(),
    };
    let (peers, rx) = PeerProber::new(prober.network(), config, nodes.clone(), monitor.pod_set());
    let silence = PeerProber::<NetnsDriver>::max_silence(args.probe_interval, args.probe_timeout);
    let task = spawn_worker(workers, "peers", move |guard| async move {
        guard.expect_beats(silence);
        peers
            .with_heartbeat(move || guard.beat())
            .run(stopped)
            .await;
    });
    (monitor.with_peers(rx), Some(task))
}

/// The client kinds asked why they are stale (one entry per `probe/hints/*.rs`). `kube`:
/// pods come from the API, so their labels and images say which kind they are; in node mode
/// every pod is asked and the answer's shape decides.
fn client_hints(args: &Args, kube: bool) -> Vec<Arc<dyn ClientHint>> {
    let mut hints: Vec<Arc<dyn ClientHint>> = Vec::new();
    if args.kong_admin_port != 0 || args.kong_admin_tls_port != 0 {
        let pods = match (&args.kong_selector, kube) {
            (_, false) => KongPods::Any,
            (Some(s), true) => KongPods::Selector(s.clone()),
            (None, true) => KongPods::Charts,
        };
        hints.push(Arc::new(Kong {
            admin_port: args.kong_admin_port,
            tls_port: args.kong_admin_tls_port,
            pods,
        }));
    }
    hints
}
