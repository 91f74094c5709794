//! Orchestration (the layer above the verdicts, below the exporters). The event loop: keep
//! [`HostState`] current from kernel events, re-dump when events cannot be trusted (overrun,
//! link down) and periodically, judge the pods after every batch of changes and publish a
//! [`Snapshot`] (and the prober's [`PodSet`]).
//!
//! No check waits for a timer when the kernel told us something changed: every batch of events
//! is followed by an evaluation, within the same wake-up.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::{MissedTickBehavior, interval, interval_at, sleep};
use tracing::{debug, info, warn};

use crate::Error;
use crate::host::{EventReceiver, HostNetwork, HostState, KernelEvent, Link, ResyncCause};
use crate::kube::KubeView;
use crate::model::{
    BlockMap, ControlPlaneView, Felix, MonitorMetrics, PeerView, PodSet, WorkerGuard,
};
use crate::pods::ExpectedPod;
use crate::probe::report::PodProbes;
use crate::snapshot::Snapshot;
use crate::util::backoff::Backoff;
use crate::verdict::{
    BlockProblem, ProbeView, calico_node_stale, evaluate, judge_peers, unanswered_connects,
    unanswered_dropped,
};

mod block_cache;
mod changes;
mod controlplane;
mod discipline;
mod peers;
mod route_history;
mod source;

use block_cache::BlockCache;
use changes::log_changes;
use discipline::{LogLimiter, ResyncSchedule};
use peers::log_peer_changes;
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

/// The watched sources the event loop wakes on besides kernel events and probes.
struct Watched<'a> {
    kube: &'a mut Option<watch::Receiver<Arc<KubeView>>>,
    blocks: &'a mut Option<watch::Receiver<Arc<BlockMap>>>,
    felix: &'a mut Option<watch::Receiver<crate::model::FelixStatus>>,
    control_plane: &'a mut Option<watch::Receiver<Arc<ControlPlaneView>>>,
    services: &'a mut Option<watch::Receiver<Arc<crate::model::ServiceMap>>>,
    peers: &'a mut Option<watch::Receiver<Arc<PeerView>>>,
}

/// Why the event loop returned.
enum LoopEnd {
    /// The subscription ended.
    Closed,
    /// The kernel dropped notifications: the subscription's backlog is stale.
    Overrun,
}

/// What a batch of events asks for once it is applied.
#[derive(Debug, Default)]
struct Followups {
    resync: Option<ResyncCause>,
    peers: HashSet<i32>,
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

    async fn run_forever(&mut self) {
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let (_, idle) = mpsc::unbounded_channel();
        let mut probes = self.probe_rx.take().unwrap_or(idle);
        let mut blocks = self.config.remote_blocks.clone();
        let mut felix = self.config.felix.as_ref().map(Felix::subscribe);
        let mut control_plane = self.config.control_plane.clone();
        let mut services = self.config.services.as_ref().map(|s| s.map.clone());
        let mut peers = self.peers.clone();
        let mut kube = match &self.config.pods {
            PodSource::Kubernetes { view, .. } => Some(view.clone()),
            PodSource::Links { .. } => None,
        };
        let mut overrun = false;
        loop {
            let mut events = match self.host.subscribe().await {
                Ok(rx) => rx,
                Err(e) => {
                    warn!(error = %e, "cannot subscribe to kernel events; retrying");
                    sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            self.beat();
            let cause = if self.last_full_sync.is_none() {
                ResyncCause::Startup
            } else if overrun {
                ResyncCause::Overrun
            } else {
                ResyncCause::Error
            };
            self.schedule.started_now(tokio::time::Instant::now());
            if let Err(e) = self.resync(cause).await {
                warn!(error = %e, "full read of the node's network state failed; retrying");
                sleep(backoff.next_delay()).await;
                continue;
            }
            backoff.reset();
            self.schedule.succeeded();
            self.publish();
            let mut watched = Watched {
                kube: &mut kube,
                blocks: &mut blocks,
                felix: &mut felix,
                control_plane: &mut control_plane,
                services: &mut services,
                peers: &mut peers,
            };
            overrun = match self
                .event_loop(&mut events, &mut probes, &mut watched)
                .await
            {
                LoopEnd::Overrun => {
                    debug!("kernel events lost; subscribing afresh and re-reading");
                    true
                }
                LoopEnd::Closed => {
                    warn!("kernel event subscription ended; subscribing again");
                    false
                }
            };
        }
    }

    /// Returns when the event stream ends, or when the kernel lost events: what is still
    /// queued on that subscription predates the loss, and applied after a re-read it would
    /// undo the re-read (a route deleted and re-added, the re-add lost: the stale deletion
    /// would be reported until the next periodic re-sync). The caller drops the subscription
    /// with its backlog, subscribes afresh and re-reads, as at startup.
    async fn event_loop(
        &mut self,
        events: &mut EventReceiver,
        probes: &mut mpsc::UnboundedReceiver<PodProbes>,
        watched: &mut Watched<'_>,
    ) -> LoopEnd {
        let Watched {
            kube,
            blocks,
            felix,
            control_plane,
            services,
            peers,
        } = watched;
        let period = self.config.resync_interval;
        let mut periodic = interval_at(tokio::time::Instant::now() + period, period);
        periodic.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut retry = interval(PEER_RETRY);
        retry.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Probe results arrive one pod at a time; they are folded into the published verdicts
        // at most every PROBE_FLUSH, not once per pod (which would be quadratic in pods).
        let mut flush_at: Option<tokio::time::Instant> = None;
        let mut last_kube: Option<tokio::time::Instant> = None;
        loop {
            self.beat();
            let mut follow = Followups::default();
            let resync_due = self.schedule.due();
            let deadline = self
                .expected
                .as_ref()
                .and_then(|e| e.next_deadline)
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { return LoopEnd::Closed };
                    let mut n = 1;
                    self.apply(ev, &mut follow);
                    while n < MAX_BATCH {
                        let Ok(ev) = events.try_recv() else { break };
                        self.apply(ev, &mut follow);
                        n += 1;
                    }
                    self.metrics.events_applied(n as u64);
                }
                Some(report) = probes.recv() => {
                    self.probe_reports.insert(report.interface.clone(), report);
                    while let Ok(r) = probes.try_recv() {
                        self.probe_reports.insert(r.interface.clone(), r);
                    }
                    flush_at.get_or_insert_with(|| tokio::time::Instant::now() + PROBE_FLUSH);
                    continue;
                }
                () = tokio::time::sleep_until(flush_at.unwrap_or_else(tokio::time::Instant::now)), if flush_at.is_some() => {}
                changed = changed_or_pending(kube) => {
                    if changed.is_err() {
                        **kube = None; // The watch is gone; keep the last view.
                    }
                    self.expected = None;
                    // The API's changes come in bursts (a re-list, thousands of pods
                    // rescheduled): after a quiet spell published at once, then folded in at
                    // most every KUBE_FLUSH, not evaluated once each (quadratic in pods).
                    // Kernel events still publish at once.
                    let now = tokio::time::Instant::now();
                    match last_kube {
                        Some(last) if now < last + KUBE_FLUSH => {
                            let at = last + KUBE_FLUSH;
                            flush_at = Some(flush_at.map_or(at, |f| f.min(at)));
                            continue;
                        }
                        _ => last_kube = Some(now),
                    }
                }
                changed = changed_or_pending(blocks) => {
                    if changed.is_err() {
                        **blocks = None; // The watch is gone; keep the last map.
                    }
                }
                changed = changed_or_pending(felix) => {
                    if changed.is_err() {
                        **felix = None;
                    }
                }
                changed = changed_or_pending(control_plane) => {
                    if changed.is_err() {
                        **control_plane = None; // The source is gone; keep its last view.
                    }
                }
                // A Service target resolved anew: `/status` and the gauges say so at once.
                changed = changed_or_pending(services) => {
                    if changed.is_err() {
                        **services = None;
                    }
                }
                changed = changed_or_pending(peers) => {
                    if changed.is_err() {
                        **peers = None; // The prober is gone; keep its last view.
                    }
                }
                () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    self.expected = None;
                }
                _ = periodic.tick() => follow.resync = Some(ResyncCause::Periodic),
                () = tokio::time::sleep_until(resync_due.unwrap_or_else(tokio::time::Instant::now)), if resync_due.is_some() => {}
                _ = retry.tick(), if !self.unresolved.is_empty() => {
                    follow.peers = self.unresolved.keys().copied().collect();
                }
            }
            if follow.resync == Some(ResyncCause::Overrun) {
                return LoopEnd::Overrun;
            }
            if let Some(cause) = follow.resync {
                self.schedule.request(cause);
            }
            let now = tokio::time::Instant::now();
            if let Some(cause) = self.schedule.start(now) {
                match self.resync(cause).await {
                    Ok(()) => self.schedule.succeeded(),
                    Err(e) => {
                        let delay = self.schedule.failed(cause, now);
                        warn!(error = %e, cause = cause.as_str(), retry_in_ms = delay.as_millis() as u64, "re-sync failed; retrying with backoff");
                    }
                }
            } else if !follow.peers.is_empty() {
                self.read_peers(follow.peers).await;
            }
            flush_at = None;
            self.publish();
        }
    }

    fn is_pod_link(&self, link: &Link) -> bool {
        self.config
            .pods
            .link_prefix()
            .is_some_and(|p| link.name.starts_with(p) && link.is_veth_to_other_netns())
    }

    /// Apply one event and note what it asks for.
    fn apply(&mut self, ev: KernelEvent, follow: &mut Followups) {
        let before = match &ev {
            KernelEvent::LinkChanged(l) => self.state.link(l.index).cloned(),
            _ => None,
        };
        self.expected = None;
        match self.state.apply(&ev) {
            // An overrun outranks every other cause: it also discards the subscription.
            Some(ResyncCause::Overrun) => follow.resync = Some(ResyncCause::Overrun),
            Some(cause) => {
                follow.resync.get_or_insert(cause);
            }
            None => {}
        }
        match &ev {
            KernelEvent::LinkChanged(l) if self.is_pod_link(l) => {
                let Some(nsid) = l.peer_netnsid else { return };
                // New pod, or its link changed state: its namespace's addresses may be new.
                let changed = before.is_none_or(|b| {
                    b.oper != l.oper || b.admin_up != l.admin_up || b.peer_netnsid != l.peer_netnsid
                });
                if changed || self.state.peer_addresses(nsid).is_none() {
                    follow.peers.insert(nsid);
                }
            }
            KernelEvent::RouteAdded(r) => {
                // A route to an address we do not know on a pod link: the pod's addresses
                // were added after we last read them.
                let Some(link) = r.oif.and_then(|i| self.state.link(i)) else {
                    return;
                };
                if !self.is_pod_link(link) || r.dst.prefix_len() != r.dst.max_prefix_len() {
                    return;
                }
                let Some(nsid) = link.peer_netnsid else {
                    return;
                };
                let known = self
                    .state
                    .peer_addresses(nsid)
                    .is_some_and(|a| a.iter().any(|a| a.ip == r.dst.addr()));
                if !known {
                    follow.peers.insert(nsid);
                }
            }
            _ => {}
        }
    }

    /// Re-read everything, then the addresses of every pod namespace.
    async fn resync(&mut self, cause: ResyncCause) -> Result<(), Error> {
        let started = Instant::now();
        let dump = match self.host.dump().await {
            Ok(d) => d,
            Err(e) => {
                self.metrics.resync_failed();
                return Err(e);
            }
        };
        let peers = self.state.take_peers();
        self.state = HostState::from_dump(dump, peers);
        self.block_cache.new_state();
        self.expected = None;
        let nsids: HashSet<i32> = self
            .state
            .links()
            .filter(|l| self.is_pod_link(l))
            .filter_map(|l| l.peer_netnsid)
            .collect();
        self.read_peers(nsids).await;
        let took = started.elapsed();
        self.metrics.resynced(cause, took.as_secs_f64());
        self.last_full_sync = Some(SystemTime::now());
        debug!(
            cause = cause.as_str(),
            ms = took.as_secs_f64() * 1e3,
            routes = self.state.route_count(),
            "full re-sync done"
        );
        Ok(())
    }

    /// Read the addresses inside these pod namespaces, one after another: the kernel runs one
    /// dump at a time per netlink socket and answers a concurrent one with EBUSY.
    async fn read_peers(&mut self, nsids: HashSet<i32>) {
        self.expected = None;
        for nsid in nsids {
            match self.host.peer_addresses(nsid).await {
                Ok(addrs) if addrs.iter().any(|a| a.is_global()) => {
                    self.unresolved.remove(&nsid);
                    self.state.set_peer_addresses(nsid, addrs);
                }
                other => {
                    if let Err(e) = &other {
                        debug!(nsid, error = %e, "cannot read a pod namespace's addresses");
                    }
                    self.state
                        .set_peer_addresses(nsid, other.unwrap_or_default());
                    let tries = self.unresolved.entry(nsid).or_insert(0);
                    *tries += 1;
                    if *tries > PEER_RETRY_LIMIT {
                        self.unresolved.remove(&nsid);
                    }
                }
            }
        }
        // Forget namespaces whose pod is gone.
        let live: HashSet<i32> = self.state.links().filter_map(|l| l.peer_netnsid).collect();
        self.unresolved.retain(|nsid, _| live.contains(nsid));
    }

    /// Judge the pods and publish a new snapshot; log what changed.
    fn publish(&mut self) {
        let expectation = self.expected.get_or_insert_with(|| {
            self.source_state
                .expect(&self.config.pods, &self.state, Instant::now())
        });
        let pods: &[ExpectedPod] = &expectation.pods;
        // Reports of pods that went away must not come back with a new pod of the same name.
        let live: HashSet<&str> = pods.iter().map(|p| p.interface.as_str()).collect();
        self.probe_reports.retain(|k, _| live.contains(k.as_str()));
        let view = self.config.probes.as_ref().map(|p| ProbeView {
            reports: &self.probe_reports,
            failure_threshold: p.failure_threshold,
            policy_engine: p.policy_engine,
        });
        let mut verdicts = evaluate(&self.config.cni, pods, &self.state, view.as_ref());
        verdicts
            .node
            .extend(expectation.node_problems.iter().cloned());
        let removed = self.route_history.observe(&verdicts.pods, Instant::now());
        self.metrics.pod_routes_removed(removed);
        // Read once: the verdict and the exported reading are the same one.
        let felix = self.config.felix.as_ref().map(Felix::get);
        if let (Some(felix), PodSource::Kubernetes { .. }) = (&felix, &self.config.pods) {
            let vanished = self.route_history.vanished();
            let calico_node = expectation
                .kube
                .as_ref()
                .and_then(|k| k.calico_node.as_ref());
            verdicts.node.extend(calico_node_stale(
                felix,
                &verdicts.pods,
                &vanished,
                calico_node,
            ));
        }
        if let Some(n) = self.logs.roll(tokio::time::Instant::now()) {
            warn!(
                suppressed = n,
                "problem-change log lines suppressed by the rate limit in the last window"
            );
        }
        // Up to date on every publish, so on every route event, like the pods' routes (judged
        // again only when a covering route or the map changed).
        let (remote_blocks, remote_blocks_checked) = match &self.config.remote_blocks {
            Some(rx) => {
                let map = Arc::clone(&rx.borrow());
                self.block_cache
                    .judge(&self.config.node_name, &map, &self.state)
            }
            None => Default::default(),
        };
        if !Arc::ptr_eq(&self.last.remote_blocks, &remote_blocks) {
            log_block_changes(&self.last.remote_blocks, &remote_blocks);
        }
        let peers = self.peers.as_ref().map(|rx| {
            let status = judge_peers(&rx.borrow(), &remote_blocks);
            verdicts.node.extend(status.node_problem.clone());
            log_peer_changes(self.last.peers.as_ref(), &status);
            status
        });
        let suppressed = log_changes(
            &self.last.verdicts,
            &verdicts,
            !self.last.synced,
            &mut self.logs,
            &self.metrics,
        );
        self.metrics.log_lines_suppressed(suppressed);
        let unanswered_connects = self.config.probes.as_ref().map_or_else(Vec::new, |p| {
            unanswered_connects(&verdicts.pods, &self.probe_reports, &p.networks)
        });
        let unanswered_dropped = unanswered_dropped(&verdicts.pods, &self.probe_reports);
        let snap = Arc::new(Snapshot {
            node: self.config.node_name.clone(),
            pod_source: expectation.source_name,
            kube: expectation.kube.clone(),
            synced: true,
            last_full_sync: self.last_full_sync,
            generation: self.last.generation + 1,
            links: self.state.links().count(),
            routes: self.state.route_count(),
            node_ips: self.state.node_addresses(),
            probe_targets: self
                .config
                .probes
                .as_ref()
                .map(|p| p.targets.clone())
                .unwrap_or_default(),
            control_plane: self.control_plane_status(&verdicts, &remote_blocks),
            verdicts,
            remote_blocks,
            remote_blocks_checked,
            unanswered_connects,
            unanswered_dropped,
            felix,
            service_targets: self
                .config
                .services
                .as_ref()
                .map_or_else(Vec::new, crate::model::ServiceTargets::status),
            peers,
        });
        if !self.last.synced {
            info!(
                pods = snap.verdicts.pods.len(),
                pods_with_problems = snap.verdicts.pods_with_problems(),
                routes = snap.routes,
                "initial sync complete"
            );
        }
        let pod_set = snap.pod_set();
        self.pod_set.send_if_modified(|current| {
            if **current == pod_set {
                false
            } else {
                *current = Arc::new(pod_set);
                true
            }
        });
        self.publisher.send_replace(Arc::clone(&snap));
        self.last = snap;
    }
}

/// The next change of an optional watch; never, without one.
async fn changed_or_pending<T>(
    rx: &mut Option<watch::Receiver<T>>,
) -> Result<(), watch::error::RecvError> {
    match rx.as_mut() {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

/// One line per remote block that starts or stops failing (bounded by the block count).
fn log_block_changes(old: &[BlockProblem], new: &[BlockProblem]) {
    for p in new.iter().filter(|p| !old.contains(p)) {
        warn!(block = %p.block, node = %p.node, reason = p.reason.as_str(), detail = %p.detail, "remote block route problem");
    }
    for p in old
        .iter()
        .filter(|o| !new.iter().any(|n| n.block == o.block))
    {
        info!(block = %p.block, node = %p.node, "remote block route repaired");
    }
}

#[cfg(test)]
mod tests;
