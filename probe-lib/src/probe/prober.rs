//! The probing task: follows the monitor's pod set, probes every pod once per
//! interval (phases spread over the interval, new pods at once), re-checks failures quickly, and
//! sends each pod's state to the monitor after every round.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tracing::warn;

use super::driver::{PodNetwork, PodRound, RoundResult};
use super::hints::ClientHint;
use super::plan::{PlannedProbe, plan};
use super::report::PodProbes;
use super::scope::{PodScope, ProbeScope};
use super::services::resolve_targets;
use super::target::{Direction, Gateways, HOST_TO_POD_TARGET, Protocol, Target};
use super::unanswered::{Unanswered, UnansweredConfig};
use crate::model::{PodEntry, PodIpOwner, PodIpOwners, PodSet, ProbeMetrics, ServiceMap};

/// Prober settings.
#[derive(Debug, Clone)]
pub struct ProberConfig {
    /// Targets probed from every pod (the defaults plus configured ones).
    pub targets: Vec<Target>,
    /// The CNI's gateway addresses inside pods.
    pub gateways: Gateways,
    /// Each pod is probed once per interval.
    pub interval: Duration,
    /// Per-probe timeout.
    pub timeout: Duration,
    /// Consecutive failures before a destination counts as failing.
    pub failure_threshold: u32,
    /// Delay before re-checking a failure that is not confirmed yet.
    pub recheck: Duration,
    /// Pods probed at the same time, at most.
    pub concurrency: usize,
    /// Watch pods' failing connects (`SYN_SENT` dumps), and when they count.
    pub unanswered: Option<UnansweredConfig>,
    /// Asked whose an unanswered address in `pod_networks` is (not this node's pods').
    pub owners: Option<Arc<dyn PodIpOwners>>,
    /// The cluster's pod networks: unanswered addresses there are looked up in `owners`.
    pub pod_networks: Vec<ipnet::IpNet>,
    /// Client kinds asked why they are stale, in a pod with unanswered destinations that
    /// [`ClientHint::applies`] to.
    pub hints: Vec<Arc<dyn ClientHint>>,
    /// Which pods are probed against which targets.
    pub scope: ProbeScope,
    /// The Service watch's map, when targets are named by Service: resolved before every round.
    pub services: Option<watch::Receiver<Arc<ServiceMap>>>,
}

/// Unanswered destinations kept per node (all pods together), at most.
pub const MAX_NODE_UNANSWERED: usize = 256;
/// Addresses looked up per pod round, at most (the source rate-limits and caches too).
const LOOKUPS_PER_ROUND: usize = 4;
/// Longest all lookups of one round may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// The pod's side is read at least every this many rounds.
const POD_SIDE_EVERY: u32 = 6;

#[derive(Debug)]
struct Pod {
    netnsid: Option<i32>,
    peer_index: Option<u32>,
    ips: Vec<IpAddr>,
    /// The gateways the CNI gave this pod, where not the configured ones (ptp, bridge).
    gateways: Vec<IpAddr>,
    /// Next round (a re-check comes before the regular schedule).
    due: Instant,
    /// The pod's regular schedule: its phase plus whole intervals.
    regular: Instant,
    in_flight: bool,
    /// Rounds since the pod's side was last read.
    since_pod_side: u32,
    /// Consecutive reads of the pod's side showing a problem. A problem is published only
    /// once seen `failure_threshold` times in a row (re-read after `recheck`), like a probe
    /// failure: a pod caught mid-wiring (host side not up yet, so its eth0 has no carrier)
    /// must not be reported until the next regular read.
    pod_side_problems: u32,
    unanswered: Unanswered,
    /// Its namespace's TCP retransmissions (`TcpRetransSegs`) after the last round.
    tcp_retrans: Option<u64>,
    /// The client kinds it may be (by its labels and images), asked while it is tracking.
    hints: Vec<Arc<dyn ClientHint>>,
    /// Which of the targets it is probed against (none when skipped).
    scope: PodScope,
    state: PodProbes,
}

impl Pod {
    /// A pod first seen, due at `first`; not queued yet.
    fn new(entry: &PodEntry, first: Instant) -> Self {
        Pod {
            netnsid: entry.netnsid,
            peer_index: entry.peer_index,
            ips: entry.ips.clone(),
            gateways: entry.gateways.clone(),
            due: first,
            regular: first,
            in_flight: false,
            since_pod_side: u32::MAX - 1,
            pod_side_problems: 0,
            scope: PodScope::default(),
            unanswered: Unanswered::default(),
            tcp_retrans: None,
            hints: Vec::new(),
            state: PodProbes {
                interface: entry.interface.clone(),
                pod_side: None,
                dests: Vec::new(),
                error: None,
                unanswered: Vec::new(),
                unanswered_dropped: 0,
                client_hint: None,
                path_mtu: Vec::new(),
                skipped: None,
            },
        }
    }
}

/// Probes every pod of the latest snapshot.
#[derive(Debug)]
pub struct Prober<N> {
    net: Arc<N>,
    config: ProberConfig,
    pod_set: watch::Receiver<Arc<PodSet>>,
    sink: mpsc::UnboundedSender<PodProbes>,
    metrics: ProbeMetrics,
    pods: HashMap<String, Pod>,
    /// Pods not in flight, by due time.
    queue: BTreeSet<(Instant, String)>,
    node_ips: Vec<IpAddr>,
    spread_done: bool,
}

/// A finished round: the pod, its probes and their results, and owners of addresses it
/// failed to connect to.
type Done = (
    String,
    Vec<PlannedProbe>,
    RoundResult,
    HashMap<IpAddr, PodIpOwner>,
);

impl<N: PodNetwork> Prober<N> {
    /// A prober over `net` for the pods of `pod_set`; results go to `sink` (the monitor).
    pub fn new(
        net: N,
        config: ProberConfig,
        pod_set: watch::Receiver<Arc<PodSet>>,
        sink: mpsc::UnboundedSender<PodProbes>,
        metrics: ProbeMetrics,
    ) -> Self {
        for t in &config.targets {
            metrics.register_target(&t.name, t.protocol, Direction::PodToTarget);
        }
        if config.scope.host_to_pod {
            metrics.register_target(HOST_TO_POD_TARGET, Protocol::Icmp, Direction::HostToPod);
        }
        Prober {
            net: Arc::new(net),
            config,
            pod_set,
            sink,
            metrics,
            pods: HashMap::new(),
            queue: BTreeSet::new(),
            node_ips: Vec::new(),
            spread_done: false,
        }
    }

    /// Which pods are probed against which targets.
    pub fn scope(&self) -> &ProbeScope {
        &self.config.scope
    }

    /// The network it probes through, to share with the cross-node probe.
    pub fn network(&self) -> Arc<N> {
        Arc::clone(&self.net)
    }

    /// Run until `shutdown` completes or the monitor goes away.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut in_flight: JoinSet<Done> = JoinSet::new();
        self.reconcile();
        loop {
            self.start_due(&mut in_flight);
            let next = self.queue.first().map(|(due, _)| *due);
            let can_start = in_flight.len() < self.config.concurrency.max(1);
            tokio::select! {
                () = &mut shutdown => break,
                changed = self.pod_set.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.reconcile();
                }
                Some(done) = in_flight.join_next() => {
                    if let Ok(done) = done {
                        self.finish(done);
                    }
                }
                () = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() && can_start => {}
            }
        }
        in_flight.shutdown().await;
    }

    /// Follow the pod set: new pods are probed at once (at start, spread over one interval).
    fn reconcile(&mut self) {
        let set = Arc::clone(&self.pod_set.borrow_and_update());
        if !set.synced {
            return;
        }
        self.node_ips.clone_from(&set.node_ips);
        let now = Instant::now();
        let spread = !self.spread_done;
        self.spread_done = true;
        let interval = self.config.interval;
        let names: Vec<&str> = self
            .config
            .targets
            .iter()
            .map(|t| t.name.as_str())
            .chain([HOST_TO_POD_TARGET])
            .collect();
        for entry in &set.pods {
            let scope = self.config.scope.for_pod(entry, &names);
            let first = if spread {
                now + phase(&entry.interface, interval)
            } else {
                now
            };
            let key = entry.interface.clone();
            let (pod, new) = match self.pods.entry(key.clone()) {
                Entry::Occupied(o) => (o.into_mut(), false),
                Entry::Vacant(v) => (v.insert(Pod::new(entry, first)), true),
            };
            let rewired = !new
                && (pod.netnsid != entry.netnsid
                    || pod.peer_index != entry.peer_index
                    || pod.ips != entry.ips
                    || pod.gateways != entry.gateways);
            if rewired {
                // Re-wired or re-addressed: probe the new wiring now.
                pod.netnsid = entry.netnsid;
                pod.peer_index = entry.peer_index;
                pod.ips.clone_from(&entry.ips);
                pod.gateways.clone_from(&entry.gateways);
            }
            // Labels and images may change without re-wiring: which client kinds it may be.
            pod.hints = (self.config.hints.iter())
                .filter(|h| h.applies(&entry.meta))
                .cloned()
                .collect();
            if !new && !rewired && pod.scope == scope {
                continue;
            }
            for (why, text) in scope
                .ignored
                .iter()
                .filter(|i| !pod.scope.ignored.contains(i))
            {
                self.metrics.scope_ignored(*why);
                warn!(interface = %key, namespace = %entry.namespace, reason = why.as_str(),
                      value = %text, "ignoring a pod's probe label or annotation");
            }
            let was_active = !new && pod.scope.skipped.is_none();
            pod.scope = scope;
            let queued = !new && was_active && !pod.in_flight;
            if let Some(why) = pod.scope.skipped {
                // Opted out: out of the queue, and the monitor learns it is not probed.
                if queued {
                    self.queue.remove(&(pod.due, key.clone()));
                }
                pod.state.skipped = Some(why);
                pod.state.dests.clear();
                pod.state.pod_side = None;
                pod.state.error = None;
                let _ = self.sink.send(pod.state.clone());
                continue;
            }
            pod.state.skipped = None;
            let due = if new { first } else { now };
            if queued {
                // Re-wired or re-scoped: probe now.
                self.queue.remove(&(pod.due, key.clone()));
            }
            if !pod.in_flight {
                self.queue.insert((due, key));
            }
            pod.due = due;
            if !was_active {
                pod.regular = due;
            }
        }
        let seen: HashSet<&str> = set.pods.iter().map(|p| p.interface.as_str()).collect();
        let queue = &mut self.queue;
        self.pods.retain(|k, p| {
            let keep = seen.contains(k.as_str());
            if !keep && !p.in_flight {
                queue.remove(&(p.due, k.clone()));
            }
            keep
        });
    }

    fn start_due(&mut self, in_flight: &mut JoinSet<Done>) {
        let now = Instant::now();
        while in_flight.len() < self.config.concurrency.max(1) {
            match self.queue.first() {
                Some((due, _)) if *due <= now => {}
                _ => return,
            }
            let Some((_, key)) = self.queue.pop_first() else {
                return;
            };
            let Some(pod) = self.pods.get_mut(&key) else {
                continue;
            };
            pod.in_flight = true;
            // Services as the API has them now: a changed ClusterIP is probed from this round.
            let services = self
                .config
                .services
                .as_ref()
                .map(|rx| Arc::clone(&rx.borrow()));
            let targets: Vec<Target> = resolve_targets(
                self.config
                    .targets
                    .iter()
                    .filter(|t| pod.scope.probes(&t.name)),
                services.as_deref(),
            );
            let probes = plan(
                &pod.ips,
                &self.node_ips,
                &targets,
                &self.config.gateways.with(&pod.gateways),
                pod.peer_index.filter(|_| pod.netnsid.is_some()),
                pod.scope.probes(HOST_TO_POD_TARGET),
            );
            // The pod's own routes rarely change: read them every few rounds, and whenever the
            // last round failed, so a failure is diagnosed before it is confirmed.
            let failed_last = pod.state.dests.iter().any(|d| d.last.is_failure())
                || pod.pod_side_problems > 0
                || pod.state.path_mtu.iter().any(|m| m.last.is_failure());
            let read_pod_side = failed_last || pod.since_pod_side >= POD_SIDE_EVERY - 1;
            pod.since_pod_side = if read_pod_side {
                0
            } else {
                pod.since_pod_side + 1
            };
            let round = PodRound {
                interface: key.clone(),
                netnsid: pod.netnsid,
                peer_index: pod.peer_index,
                probes: probes.clone(),
                timeout: self.config.timeout,
                read_pod_side,
                syn_sent: self.config.unanswered.is_some(),
                retrans_before: pod.tcp_retrans,
                dump_always: pod.unanswered.is_tracking(),
                hints: if pod.unanswered.is_tracking() {
                    pod.hints.clone()
                } else {
                    Vec::new()
                },
            };
            let net = Arc::clone(&self.net);
            let lookup = self.lookup_plan();
            in_flight.spawn(async move {
                let result = net.round(round).await;
                let owners = match (&result.syn_sent, lookup) {
                    (Some(dump), Some(l)) => l.run(dump).await,
                    _ => HashMap::new(),
                };
                (key, probes, result, owners)
            });
        }
    }
}

/// A stable offset within the interval, so pods present at start are spread over it.
fn phase(key: &str, interval: Duration) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let nanos = interval.as_nanos().max(1) as u64;
    Duration::from_nanos(h.finish() % nanos)
}

mod finish;
mod lookup;

#[cfg(test)]
mod tests;
