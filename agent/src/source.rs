//! Wiring of the pod source (the node's own interfaces, or a Kubernetes watch) and of the
//! remote block watch.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use podnet_probe::controlplane::{ControlPlaneConfig, ControlPlaneWatcher, Mode};
use podnet_probe::kube::{
    BlockSource, BlockWatchConfig, BlockWatcher, KubeWatcher, PodIpLookup, WatchConfig, in_cluster,
};
use podnet_probe::metrics::Metrics;
use podnet_probe::model::{BlockMap, ControlPlaneView, PodIpOwners, Workers};
use podnet_probe::monitor::PodSource;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::{Args, ControlPlaneChecksArg, PodSourceArg, RemoteBlocksArg};
use crate::supervise::spawn_worker;

/// The pod source the flags ask for, checked before anything starts.
#[derive(Debug)]
pub enum Choice {
    /// Node mode with this interface prefix.
    Node(String),
    /// The API, through this kubeconfig or in-cluster.
    Kubernetes(Option<PathBuf>),
}

impl Choice {
    /// `node` or `kubernetes`, as `--pod-source` spells it (for logs).
    pub fn kind(&self) -> &'static str {
        match self {
            Choice::Node(_) => "node",
            Choice::Kubernetes(_) => "kubernetes",
        }
    }

    /// The interface prefix in node mode.
    pub fn prefix(&self) -> Option<&str> {
        match self {
            Choice::Node(p) => Some(p),
            Choice::Kubernetes(_) => None,
        }
    }
}

/// Whether the flags ask for pods from the API (explicitly, or `auto` with a kubeconfig or
/// in a cluster).
pub fn wants_kube(args: &Args) -> bool {
    match args.pod_source {
        PodSourceArg::Kubernetes => true,
        PodSourceArg::Node => false,
        PodSourceArg::Auto => args.kubeconfig.is_some() || in_cluster(),
    }
}

/// Decide, or explain in one line why the flags do not work together.
pub fn choose(args: &Args) -> Result<Choice, String> {
    let kube = wants_kube(args);
    if !kube && args.remote_blocks != RemoteBlocksArg::Off {
        return Err("--remote-blocks needs the Kubernetes pod source".into());
    }
    if !kube && args.control_plane_checks != ControlPlaneChecksArg::Off {
        return Err("--control-plane-checks needs the Kubernetes pod source".into());
    }
    if kube {
        if args.kubeconfig.is_none() && !in_cluster() {
            return Err(
                "--pod-source kubernetes needs --kubeconfig or an in-cluster service account"
                    .into(),
            );
        }
        if let Some(path) = &args.kubeconfig {
            // A bad file is bad input: say so now, in one line.
            kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
        }
        return Ok(Choice::Kubernetes(args.kubeconfig.clone()));
    }
    let prefix = args
        .interface_prefix
        .clone()
        .or_else(|| args.cni.interface_prefix().map(str::to_owned))
        .ok_or("node mode needs --interface-prefix with --cni ptp, bridge or generic")?;
    Ok(Choice::Node(prefix))
}

/// Build the source; for the API, start the watch (stopped by `shutdown`).
pub async fn start(
    choice: Choice,
    args: &Args,
    node: &str,
    metrics: &mut Metrics,
    workers: &Workers,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(PodSource, Option<JoinHandle<()>>)> {
    match choice {
        Choice::Node(prefix) => Ok((PodSource::Links { prefix }, None)),
        Choice::Kubernetes(kubeconfig) => {
            let client = podnet_probe::kube::client(kubeconfig.as_deref())
                .await
                .context("connecting to the Kubernetes API")?;
            let config = WatchConfig {
                node: node.to_owned(),
                watch_timeout: args.kube_watch_timeout,
                page_size: 100,
            };
            let (watcher, view) = KubeWatcher::new(client, config, metrics.kube());
            info!(node, "watching this node's pods in the Kubernetes API");
            let task = spawn_worker(workers, "watch", |guard| async move {
                // The watcher beats through backoff waits and quiet watches; silence beyond
                // MAX_SILENCE is a hang, and the guard (owned by the watcher) marks the worker
                // stopped or panicked when the watcher ends.
                guard.expect_beats(KubeWatcher::MAX_SILENCE);
                let watcher = watcher.with_heartbeat(move || guard.beat());
                watcher.run(shutdown).await;
            });
            Ok((
                PodSource::Kubernetes {
                    view,
                    cni: args.cni.clone(),
                    prefix: args.interface_prefix.clone(),
                    grace: args.wiring_grace,
                    unhealthy_after: args.kube_unhealthy_threshold,
                },
                Some(task),
            ))
        }
    }
}

/// Objects per list page of the block watch: a page is decoded whole before it is reduced to
/// the kept fields, so smaller pages keep the transient heap (and what fragmentation retains of
/// it) small; 5,000 blocks are 50 requests, made at start and after a 410 only.
const BLOCK_PAGE: u32 = 100;

/// Start the remote block watch if `--remote-blocks` asks for it (stopped by `shutdown`).
pub async fn start_blocks(
    args: &Args,
    workers: &Workers,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Option<(watch::Receiver<Arc<BlockMap>>, JoinHandle<()>)>> {
    let source = match args.remote_blocks {
        RemoteBlocksArg::Off => return Ok(None),
        RemoteBlocksArg::Calico => BlockSource::Calico,
        RemoteBlocksArg::PodCidrs => BlockSource::PodCidrs,
    };
    let client = podnet_probe::kube::client(args.kubeconfig.as_deref())
        .await
        .context("connecting to the Kubernetes API")?;
    let config = BlockWatchConfig {
        source,
        watch_timeout: args.kube_watch_timeout,
        page_size: BLOCK_PAGE,
    };
    let (watcher, rx) = BlockWatcher::new(client, config);
    info!(?source, "watching the cluster's pod blocks");
    let task = spawn_worker(workers, "blocks", |guard| async move {
        // The guard lives as long as the watcher: dropping it marks the worker stopped; a
        // watcher that stops working goes silent and shows as stalled.
        guard.expect_beats(BlockWatcher::MAX_SILENCE);
        watcher
            .with_heartbeat(move || guard.beat())
            .run(shutdown)
            .await;
    });
    Ok(Some((rx, task)))
}

/// Start the control-plane check if `--control-plane-checks` asks for it (stopped by
/// `shutdown`).
pub async fn start_control_plane(
    args: &Args,
    node: &str,
    workers: &Workers,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Option<(watch::Receiver<Arc<ControlPlaneView>>, JoinHandle<()>)>> {
    let mode = match args.control_plane_checks {
        ControlPlaneChecksArg::Off => return Ok(None),
        ControlPlaneChecksArg::Auto => Mode::Auto,
        ControlPlaneChecksArg::On => Mode::On,
    };
    let client = podnet_probe::kube::client(args.kubeconfig.as_deref())
        .await
        .context("connecting to the Kubernetes API")?;
    let config = ControlPlaneConfig {
        node: node.to_owned(),
        mode,
        relist: args.control_plane_relist,
        interval: args.probe_interval,
        timeout: args.probe_timeout,
        concurrency: args.probe_concurrency as usize,
    };
    let (watcher, rx) = ControlPlaneWatcher::new(client, config);
    info!(?mode, "control-plane checks enabled");
    let task = spawn_worker(workers, "controlplane", |guard| async move {
        guard.expect_beats(ControlPlaneWatcher::MAX_SILENCE);
        let watcher = watcher.with_heartbeat(move || guard.beat());
        watcher.run(shutdown).await;
    });
    Ok(Some((rx, task)))
}

/// Who owns an address pods fail to connect to: asked of the API when pods come from it and
/// the connect watch is on (`--no-connect-watch` or `--no-probes`: not at all).
pub async fn pod_ip_owners(
    args: &Args,
    pods: &PodSource,
) -> anyhow::Result<Option<Arc<dyn PodIpOwners>>> {
    if args.no_probes || args.no_connect_watch || !matches!(pods, PodSource::Kubernetes { .. }) {
        return Ok(None);
    }
    let client = podnet_probe::kube::client(args.kubeconfig.as_deref())
        .await
        .context("connecting to the Kubernetes API")?;
    Ok(Some(Arc::new(PodIpLookup::new(client))))
}
