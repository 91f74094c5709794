//! The cross-node probe (`--peer-probes k`): every interval, k other nodes' pod-network-side
//! addresses ([`super::peers`]) are pinged from one local pod (a different one each round)
//! and from the host, and each peer's sample is recorded. Publishes a [`PeerView`] after
//! every round; `verdict/peers.rs` judges it.
//!
//! Cost per node: k pod-side and k host-side echoes per interval, whatever the cluster's
//! size; the node list is the remote block watch's (`--remote-blocks`), so no extra API
//! request.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{MissedTickBehavior, interval};
use tracing::debug;

use super::driver::{PodNetwork, PodRound};
use super::peers::{Rotation, peer_order};
use super::plan::PlannedProbe;
use super::scope::ProbeScope;
use super::target::{Direction, Protocol};
use crate::model::{BlockMap, NodeName, PEER_HISTORY, PeerState, PeerView, PodEntry, PodSet};

/// The target name of peer probes (in logs and `/status`).
pub const PEER_TARGET: &str = "peer";

/// Settings of the cross-node probe.
#[derive(Debug, Clone)]
pub struct PeerProberConfig {
    /// This node's name (left out of the peers, and the seed of its rotation order).
    pub node: String,
    /// Peers probed per round: k.
    pub per_round: usize,
    /// One round per interval.
    pub interval: Duration,
    /// Per-probe timeout.
    pub timeout: Duration,
    /// Which pods may probe: a pod opted out of probing, or of the `peer` target, is never
    /// the source of a round (`podnet.io/probes`, `--probe-exclude-namespaces`).
    pub scope: ProbeScope,
}

/// A node list, its peers in rotation order, and how many were left out.
type Order = (Arc<BlockMap>, Vec<(NodeName, IpAddr)>, usize);

/// Probes a rotating sample of the other nodes.
pub struct PeerProber<N> {
    net: Arc<N>,
    config: PeerProberConfig,
    nodes: watch::Receiver<Arc<BlockMap>>,
    pod_set: watch::Receiver<Arc<PodSet>>,
    tx: watch::Sender<Arc<PeerView>>,
    rotation: Rotation,
    /// The node list the order was made from, and the order (re-made when the list changes).
    order: Option<Order>,
    pod_turn: usize,
    /// By name: published in this order.
    states: BTreeMap<NodeName, PeerState>,
    rounds: u64,
    heartbeat: Option<Box<dyn Fn() + Send + Sync>>,
}

impl<N> std::fmt::Debug for PeerProber<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerProber")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<N: PodNetwork> PeerProber<N> {
    /// A prober over `net` (shared with the pod prober), following the node list `nodes`
    /// and the local pods `pod_set`; and the receiver of its views.
    pub fn new(
        net: Arc<N>,
        config: PeerProberConfig,
        nodes: watch::Receiver<Arc<BlockMap>>,
        pod_set: watch::Receiver<Arc<PodSet>>,
    ) -> (Self, watch::Receiver<Arc<PeerView>>) {
        let (tx, rx) = watch::channel(Arc::new(PeerView::default()));
        let p = PeerProber {
            net,
            config,
            nodes,
            pod_set,
            tx,
            rotation: Rotation::default(),
            order: None,
            pod_turn: 0,
            states: BTreeMap::new(),
            rounds: 0,
            heartbeat: None,
        };
        (p, rx)
    }

    /// The longest a running prober goes without calling its heartbeat, for an interval
    /// of `interval` and a probe timeout of `timeout`.
    pub fn max_silence(interval: Duration, timeout: Duration) -> Duration {
        interval + round_limit(timeout) + Duration::from_secs(10)
    }

    /// Call `beat` once per round; dropped when the prober ends.
    #[must_use]
    pub fn with_heartbeat(mut self, beat: impl Fn() + Send + Sync + 'static) -> Self {
        self.heartbeat = Some(Box::new(beat));
        self
    }

    /// Run a round every interval until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = interval(self.config.interval.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            if let Some(beat) = &self.heartbeat {
                beat();
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = self.round() => {}
            }
        }
    }

    /// One round: the next k peers, from the next pod and from the host.
    async fn round(&mut self) {
        let map = Arc::clone(&self.nodes.borrow_and_update());
        if !map.synced {
            return;
        }
        self.refresh_order(&map);
        let Some((_, order, ignored)) = &self.order else {
            return;
        };
        let ignored = *ignored;
        let chosen: Vec<(NodeName, IpAddr)> = self
            .rotation
            .next(order.len(), self.config.per_round)
            .into_iter()
            .map(|i| order[i].clone())
            .collect();
        let known = order.len();
        let pod = self.next_pod();
        let round = plan_round(pod.as_ref(), &chosen, self.config.timeout);
        let result = if round.probes.is_empty() {
            None
        } else {
            let limit = round_limit(self.config.timeout);
            tokio::time::timeout(limit, self.net.round(round.clone()))
                .await
                .ok()
        };
        self.rounds += 1;
        if let Some(result) = &result {
            // A pod whose namespace could not be entered says nothing about the peers.
            let pod_usable = result.error.is_none();
            for (node, ip) in &chosen {
                let answered = |dir: Direction| {
                    round
                        .probes
                        .iter()
                        .zip(&result.observations)
                        .find(|(p, _)| p.direction == dir && p.address.ip() == *ip)
                        .map(|(_, o)| !o.result.is_failure())
                };
                let from_pod = answered(Direction::PodToTarget).filter(|_| pod_usable);
                let from_host = answered(Direction::HostToPod);
                self.record(node, *ip, from_pod, from_host);
            }
        }
        self.publish(known, ignored);
    }

    fn refresh_order(&mut self, map: &Arc<BlockMap>) {
        if let Some((m, _, _)) = &self.order
            && Arc::ptr_eq(m, map)
        {
            return;
        }
        let (order, ignored) = peer_order(&self.config.node, map);
        let current: HashMap<&NodeName, IpAddr> = order.iter().map(|(n, ip)| (n, *ip)).collect();
        // Peers that left the list (or changed address) are forgotten.
        self.states
            .retain(|n, s| current.get(n).is_some_and(|ip| *ip == s.address));
        self.order = Some((Arc::clone(map), order, ignored));
    }

    /// The next local pod whose namespace can be entered and that may probe, in turn.
    fn next_pod(&mut self) -> Option<PodEntry> {
        let set = Arc::clone(&self.pod_set.borrow());
        let mut pods: Vec<&PodEntry> = set
            .pods
            .iter()
            .filter(|p| p.netnsid.is_some() && p.peer_index.is_some())
            .filter(|p| {
                let scope = self.config.scope.for_pod(p, &[PEER_TARGET]);
                scope.probes(PEER_TARGET)
            })
            .collect();
        if pods.is_empty() {
            return None;
        }
        pods.sort_by(|a, b| a.interface.cmp(&b.interface));
        let pod = pods[self.pod_turn % pods.len()].clone();
        self.pod_turn = self.pod_turn.wrapping_add(1);
        Some(pod)
    }

    fn record(&mut self, node: &NodeName, ip: IpAddr, pod: Option<bool>, host: Option<bool>) {
        let answers = [pod, host];
        let taken: Vec<bool> = answers.iter().flatten().copied().collect();
        if taken.is_empty() {
            return;
        }
        let failed = taken.iter().all(|ok| !ok);
        let s = self.states.entry(node.clone()).or_insert(PeerState {
            node: node.clone(),
            address: ip,
            failures: 0,
            samples: 0,
            last_round: 0,
            from_pod: None,
            from_host: None,
        });
        s.failures = (s.failures << 1) | u8::from(failed);
        s.samples = (s.samples + 1).min(PEER_HISTORY);
        s.last_round = self.rounds;
        s.from_pod = pod;
        s.from_host = host;
        if failed {
            debug!(peer = %node, address = %ip, "peer sample failed");
        }
    }

    fn publish(&self, known: usize, ignored: usize) {
        let peers: Vec<PeerState> = self.states.values().cloned().collect();
        self.tx.send_replace(Arc::new(PeerView {
            known,
            ignored,
            per_round: self.config.per_round,
            rounds: self.rounds,
            peers,
        }));
    }
}

/// A round may take its probes' timeout plus the pod namespace visit (bounded by the same
/// timeout): beyond this it is abandoned.
fn round_limit(timeout: Duration) -> Duration {
    timeout.saturating_mul(3) + Duration::from_secs(1)
}

/// The round's probes: each peer from `pod` (if it has an address of the peer's family) and
/// from the host.
fn plan_round(pod: Option<&PodEntry>, peers: &[(NodeName, IpAddr)], timeout: Duration) -> PodRound {
    let probe = |ip: IpAddr, direction| PlannedProbe {
        target: PEER_TARGET.to_owned(),
        protocol: Protocol::Icmp,
        direction,
        gateway: false,
        address: SocketAddr::new(ip, 0),
        http: None,
    };
    let mut probes = Vec::with_capacity(2 * peers.len());
    for (_, ip) in peers {
        let family = |p: &&PodEntry| p.ips.iter().any(|a| a.is_ipv4() == ip.is_ipv4());
        if pod.filter(family).is_some() {
            probes.push(probe(*ip, Direction::PodToTarget));
        }
        probes.push(probe(*ip, Direction::HostToPod));
    }
    PodRound {
        interface: pod.map_or_else(|| "host".to_owned(), |p| p.interface.clone()),
        netnsid: pod.and_then(|p| p.netnsid),
        peer_index: pod.and_then(|p| p.peer_index),
        probes,
        timeout,
        read_pod_side: false,
        syn_sent: false,
        retrans_before: None,
        dump_always: false,
        hints: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
