//! The probing task: follows the monitor's snapshots for the pod set, probes every pod once per
//! interval (phases spread over the interval, new pods at once), re-checks failures quickly, and
//! sends each pod's state to the monitor after every round.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tracing::debug;

use super::driver::{PodNetwork, PodRound, RoundResult};
use super::plan::{PlannedProbe, plan};
use super::report::{DestState, PodProbes};
use super::target::{Direction, Gateways, HOST_TO_POD_TARGET, Protocol, Target};
use crate::metrics::ProbeMetrics;
use crate::snapshot::Snapshot;

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
}

#[derive(Debug)]
struct Pod {
    netnsid: Option<i32>,
    peer_index: Option<u32>,
    ips: Vec<IpAddr>,
    /// Next round (a re-check comes before the regular schedule).
    due: Instant,
    /// The pod's regular schedule: its phase plus whole intervals.
    regular: Instant,
    in_flight: bool,
    state: PodProbes,
}

/// Probes every pod of the latest snapshot.
#[derive(Debug)]
pub struct Prober<N> {
    net: Arc<N>,
    config: ProberConfig,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    sink: mpsc::UnboundedSender<PodProbes>,
    metrics: ProbeMetrics,
    pods: HashMap<String, Pod>,
    node_ips: Vec<IpAddr>,
    spread_done: bool,
}

type Done = (String, Vec<PlannedProbe>, RoundResult);

impl<N: PodNetwork> Prober<N> {
    /// A prober over `net`; results go to `sink` (the monitor).
    pub fn new(
        net: N,
        config: ProberConfig,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        sink: mpsc::UnboundedSender<PodProbes>,
        metrics: ProbeMetrics,
    ) -> Self {
        for t in &config.targets {
            metrics.register_target(&t.name, t.protocol, Direction::PodToTarget);
        }
        metrics.register_target(HOST_TO_POD_TARGET, Protocol::Icmp, Direction::HostToPod);
        Prober {
            net: Arc::new(net),
            config,
            snapshots,
            sink,
            metrics,
            pods: HashMap::new(),
            node_ips: Vec::new(),
            spread_done: false,
        }
    }

    /// Run until `shutdown` completes or the monitor goes away.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut in_flight: JoinSet<Done> = JoinSet::new();
        self.reconcile();
        loop {
            self.start_due(&mut in_flight);
            let next = self
                .pods
                .values()
                .filter(|p| !p.in_flight)
                .map(|p| p.due)
                .min();
            let can_start = in_flight.len() < self.config.concurrency.max(1);
            tokio::select! {
                () = &mut shutdown => break,
                changed = self.snapshots.changed() => {
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
        let snap = Arc::clone(&self.snapshots.borrow_and_update());
        if !snap.synced {
            return;
        }
        self.node_ips.clone_from(&snap.node_ips);
        let now = Instant::now();
        let spread = !self.spread_done;
        self.spread_done = true;
        let interval = self.config.interval;
        let mut seen = Vec::with_capacity(snap.verdicts.pods.len());
        for pv in &snap.verdicts.pods {
            if pv.pod.ips.is_empty() {
                continue;
            }
            let key = pv.pod.interface.clone();
            let (netnsid, peer_index) = pv.link.map_or((None, None), |l| (l.netnsid, l.peer_index));
            seen.push(key.clone());
            let first = if spread {
                now + phase(&key, interval)
            } else {
                now
            };
            let pod = self.pods.entry(key.clone()).or_insert_with(|| Pod {
                netnsid,
                peer_index,
                ips: pv.pod.ips.clone(),
                due: first,
                regular: first,
                in_flight: false,
                state: PodProbes {
                    interface: key.clone(),
                    pod_side: None,
                    dests: Vec::new(),
                    error: None,
                },
            });
            if pod.netnsid != netnsid || pod.peer_index != peer_index || pod.ips != pv.pod.ips {
                // Re-wired or re-addressed: probe the new wiring now.
                pod.netnsid = netnsid;
                pod.peer_index = peer_index;
                pod.ips.clone_from(&pv.pod.ips);
                pod.due = now;
            }
        }
        let seen: std::collections::HashSet<String> = seen.into_iter().collect();
        self.pods.retain(|k, _| seen.contains(k));
    }

    fn start_due(&mut self, in_flight: &mut JoinSet<Done>) {
        let now = Instant::now();
        while in_flight.len() < self.config.concurrency.max(1) {
            let Some((key, pod)) = self
                .pods
                .iter_mut()
                .filter(|(_, p)| !p.in_flight && p.due <= now)
                .min_by_key(|(_, p)| p.due)
            else {
                return;
            };
            pod.in_flight = true;
            let probes = plan(
                &pod.ips,
                &self.node_ips,
                &self.config.targets,
                &self.config.gateways,
                pod.peer_index.filter(|_| pod.netnsid.is_some()),
            );
            let round = PodRound {
                interface: key.clone(),
                netnsid: pod.netnsid,
                peer_index: pod.peer_index,
                probes: probes.clone(),
                timeout: self.config.timeout,
            };
            let net = Arc::clone(&self.net);
            let key = key.clone();
            in_flight.spawn(async move {
                let result = net.round(round).await;
                (key, probes, result)
            });
        }
    }

    fn finish(&mut self, (key, probes, result): Done) {
        let Some(pod) = self.pods.get_mut(&key) else {
            return; // The pod went away while it was probed.
        };
        pod.in_flight = false;
        pod.state.pod_side = result.pod_side;
        pod.state.error = result.error;
        let mut dests = Vec::with_capacity(probes.len());
        for (p, obs) in probes.iter().zip(&result.observations) {
            let port = (p.address.port() != 0).then_some(p.address.port());
            let mut d = pod
                .state
                .dests
                .iter()
                .find(|d| d.target == p.target && d.address == p.address.ip() && d.port == port)
                .cloned()
                .unwrap_or_else(|| {
                    DestState::new(&p.target, p.protocol, p.direction, p.address.ip(), port)
                });
            d.record(obs);
            self.metrics.observe(p, obs);
            dests.push(d);
        }
        pod.state.dests = dests;
        let threshold = self.config.failure_threshold.max(1);
        let unconfirmed = pod
            .state
            .dests
            .iter()
            .any(|d| d.last.is_failure() && d.consecutive_failures < threshold);
        let now = Instant::now();
        let interval = self.config.interval.max(Duration::from_millis(100));
        while pod.regular <= now {
            pod.regular += interval;
        }
        pod.due = if unconfirmed {
            (now + self.config.recheck).min(pod.regular)
        } else {
            pod.regular
        };
        debug!(interface = %key, unconfirmed, "probe round done");
        let _ = self.sink.send(pod.state.clone());
    }
}

/// A stable offset within the interval, so pods present at start are spread over it.
fn phase(key: &str, interval: Duration) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let nanos = interval.as_nanos().max(1) as u64;
    Duration::from_nanos(h.finish() % nanos)
}

#[cfg(test)]
mod tests;
