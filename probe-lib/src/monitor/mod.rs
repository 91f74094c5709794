//! Orchestration (the layer above the verdicts, below the exporters). The event loop: keep
//! [`HostState`] current from kernel events, re-dump when events cannot be trusted (overrun,
//! link down) and periodically, judge the pods after every batch of changes and publish a
//! [`Snapshot`] (and the prober's [`PodSet`]).
//!
//! No check waits for a timer when the kernel told us something changed: every batch of events
//! is followed by an evaluation, within the same wake-up.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tracing::debug;

use crate::host::{HostNetwork, HostState};
use crate::model::{
    BlockMap, ControlPlaneView, Felix, MonitorMetrics, PeerView, PodSet, WorkerGuard,
};
use crate::probe::report::PodProbes;
use crate::snapshot::Snapshot;

mod block_cache;
mod changes;
mod controlplane;
mod discipline;
mod event_loop;
mod peers;
mod publish;
mod resync;
mod route_history;
mod source;

use block_cache::BlockCache;
use discipline::{LogLimiter, ResyncSchedule};
use route_history::RouteHistory;
pub use source::PodSource;
use source::{Expectation, SourceState};

/// Events applied before the verdicts are recomputed, at most; a longer burst is split so
/// the published state never lags far behind.
const MAX_BATCH: usize = 4096;
/// How often namespaces whose pod addresses were not readable yet are read again.
const PEER_RETRY: Duration = Duration::from_millis(500);
/// Probe results are folded into the verdicts at most this often.
const PROBE_FLUSH: Duration = Duration::from_secs(1);
/// Changes of the API's pod set are published at most this often (see the event loop).
const KUBE_FLUSH: Duration = Duration::from_millis(100);
/// After this many fruitless reads, leave a namespace to the periodic re-sync.
const PEER_RETRY_LIMIT: u32 = 20;
/// Retries of a failed subscription or dump: from 100 ms to 30 s.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Silence beyond the re-sync interval after which the monitor counts as hung (a re-sync's
/// dumps time out well within it).
const WORKER_SILENCE_MARGIN: Duration = Duration::from_secs(60);

/// How probe results are judged (present when probes run).
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    /// Consecutive failures before a destination counts as failing.
    pub failure_threshold: u32,
    /// Every target name, for the gauges that are always present.
    pub targets: Vec<String>,
    /// The cluster's networks, to classify pods' unanswered connects.
    pub networks: crate::verdict::ConnectNets,
    /// The node's network policy engine, if any (policy-aware diagnosis).
    pub policy_engine: Option<crate::verdict::PolicyEngine>,
}

/// Monitor settings.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Node name, for `/status` and logs.
    pub node_name: String,
    /// Where expected pods come from.
    pub pods: PodSource,
    /// Full re-dump period, the safety net behind kernel events.
    pub resync_interval: Duration,
    /// Probe judgement, when probes run.
    pub probes: Option<ProbeSettings>,
    /// The node's CNI: the wiring profile pods are judged by.
    pub cni: crate::cni::Cni,
    /// The cluster's pod blocks, when their routes are checked (`--remote-blocks`).
    pub remote_blocks: Option<watch::Receiver<Arc<BlockMap>>>,
    /// calico-node's felix as last read (`--cni calico`), for `calico_node_stale`.
    pub felix: Option<Felix>,
    /// The control-plane source's view (`--control-plane-checks`), judged on every publish.
    pub control_plane: Option<watch::Receiver<Arc<ControlPlaneView>>>,
    /// Targets named by Service and the Service watch's map, reported on every publish.
    pub services: Option<crate::model::ServiceTargets>,
}

/// Keeps the node's state and verdicts current. Create with [`Monitor::new`], drive with
/// [`Monitor::run`].
#[derive(Debug)]
pub struct Monitor<H> {
    host: H,
    config: MonitorConfig,
    metrics: MonitorMetrics,
    state: HostState,
    publisher: watch::Sender<Arc<Snapshot>>,
    last: Arc<Snapshot>,
    last_full_sync: Option<SystemTime>,
    /// Pod namespaces with no global address yet, and how often we looked.
    unresolved: HashMap<i32, u32>,
    /// Pending, spaced and retried re-syncs.
    schedule: ResyncSchedule,
    /// Rate limit of problem-change log lines.
    logs: LogLimiter,
    /// Liveness in the agent's worker registry, if it keeps one.
    worker: Option<WorkerGuard>,
    /// Latest probe round per pod, by host interface.
    probe_reports: HashMap<String, PodProbes>,
    probe_tx: mpsc::UnboundedSender<PodProbes>,
    probe_rx: Option<mpsc::UnboundedReceiver<PodProbes>>,
    pod_set: watch::Sender<Arc<PodSet>>,
    /// Expected pods as of the last change (probe results alone do not change them).
    expected: Option<Expectation>,
    source_state: SourceState,
    /// Pod routes that appeared and were removed while their pods lived.
    route_history: RouteHistory,
    /// The remote block verdicts, judged again only when they can change.
    block_cache: BlockCache,
    /// The cross-node probe's views (`--peer-probes`), judged on every publish.
    peers: Option<watch::Receiver<Arc<PeerView>>>,
}

impl<H: HostNetwork> Monitor<H> {
    /// A monitor over `host`, and the receiver its snapshots are published on.
    pub fn new(
        host: H,
        config: MonitorConfig,
        metrics: MonitorMetrics,
    ) -> (Self, watch::Receiver<Arc<Snapshot>>) {
        let initial = Arc::new(Snapshot::initial(
            config.node_name.clone(),
            config.pods.name(),
        ));
        let (publisher, rx) = watch::channel(Arc::clone(&initial));
        let (probe_tx, probe_rx) = mpsc::unbounded_channel();
        let (pod_set, _) = watch::channel(Arc::new(PodSet::default()));
        let monitor = Monitor {
            host,
            config,
            metrics,
            state: HostState::default(),
            publisher,
            last: initial,
            last_full_sync: None,
            unresolved: HashMap::new(),
            schedule: ResyncSchedule::default(),
            logs: LogLimiter::default(),
            worker: None,
            probe_reports: HashMap::new(),
            probe_tx,
            probe_rx: Some(probe_rx),
            pod_set,
            expected: None,
            source_state: SourceState::default(),
            route_history: RouteHistory::default(),
            block_cache: BlockCache::default(),
            peers: None,
        };
        (monitor, rx)
    }

    /// Report liveness through `guard`: it beats on every wake-up (at least every
    /// re-sync interval) and ends, stopped or panicked, with the monitor.
    pub fn with_worker(mut self, guard: WorkerGuard) -> Self {
        guard.expect_beats(self.config.resync_interval + WORKER_SILENCE_MARGIN);
        self.worker = Some(guard);
        self
    }

    fn beat(&self) {
        if let Some(w) = &self.worker {
            w.beat();
        }
    }

    /// The node's name.
    pub fn node_name(&self) -> &str {
        &self.config.node_name
    }

    /// Judge the cross-node probe's views from `peers` too.
    pub fn with_peers(mut self, peers: watch::Receiver<Arc<PeerView>>) -> Self {
        self.peers = Some(peers);
        self
    }

    /// The pods to probe, updated only when they change.
    pub fn pod_set(&self) -> watch::Receiver<Arc<PodSet>> {
        self.pod_set.subscribe()
    }

    /// Where the prober sends each pod's latest round.
    pub fn probe_sink(&self) -> mpsc::UnboundedSender<PodProbes> {
        self.probe_tx.clone()
    }

    /// Run until `shutdown` completes. Kernel and socket errors are retried with backoff; the
    /// monitor never gives up on its own.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::select! {
            () = shutdown => debug!("monitor stopping"),
            () = self.run_forever() => {}
        }
    }
}

#[cfg(test)]
mod tests;
