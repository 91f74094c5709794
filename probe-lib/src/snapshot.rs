//! What the monitor publishes after every change: the node's verdicts plus enough context to
//! serve `/status`, `/readyz`, `/healthz` and the metrics, all from one consistent view.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::model::{FelixStatus, KubeStatus, PodEntry, PodSet, ServiceTargetStatus, SourceName};
use crate::verdict::{BlockProblem, ConnectVerdict, ControlPlaneStatus, PeerStatus, Verdicts};

/// One consistent view of the node, replaced (never mutated) on every change.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Node name.
    pub node: String,
    /// Where the expected pods come from (`node`: the node's own interfaces; `kubernetes`).
    pub pod_source: SourceName,
    /// The Kubernetes watch, when pods come from the API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kube: Option<KubeStatus>,
    /// A full dump has been read: verdicts mean something.
    pub synced: bool,
    /// When the last full re-sync completed.
    #[serde(serialize_with = "crate::util::clock::serialize_unix_seconds")]
    pub last_full_sync: Option<SystemTime>,
    /// Increases with every published snapshot.
    pub generation: u64,
    /// Links on the host.
    pub links: usize,
    /// Main-table routes on the host.
    pub routes: usize,
    /// The node's own addresses (the "node" probe target), one per family at most.
    pub node_ips: Vec<std::net::IpAddr>,
    /// Names of every probe target, for gauges that are always present; empty without probes.
    pub probe_targets: Vec<String>,
    /// Per-pod and node-level verdicts.
    #[serde(flatten)]
    pub verdicts: Verdicts,
    /// Other nodes' pod blocks not routed toward their node (only the failing ones). Shared
    /// between snapshots while unchanged: in a BGP outage all 5,000 may fail, and copying them
    /// per route event would cost milliseconds.
    #[serde(
        skip_serializing_if = "block_list_is_empty",
        serialize_with = "serialize_block_list"
    )]
    pub remote_blocks: std::sync::Arc<Vec<BlockProblem>>,
    /// Other nodes' blocks judged (none before the block map's first list, or when off).
    pub remote_blocks_checked: usize,
    /// Destinations pods keep failing to connect to, classified (when probes run).
    pub unanswered_connects: Vec<ConnectVerdict>,
    /// Unanswered destinations (or, where a pod's dump was cut short, sockets) left out of
    /// `unanswered_connects` by the per-pod and per-node bounds, over all pods.
    pub unanswered_dropped: u64,
    /// On control-plane nodes: the Services kube-apiserver calls, judged; `None` when the
    /// check is off or idle (not a control-plane node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlaneStatus>,
    /// calico-node's felix as read when these verdicts were made (`--cni calico` with a felix
    /// endpoint): exported from here, so one scrape never shows felix unreadable beside a
    /// verdict that was made while it was readable.
    #[serde(skip)]
    pub felix: Option<FelixStatus>,
    /// Targets named by Service (and the `dns` target from the `kube-dns` Service): where pods
    /// probe them now, or why they are not probed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub service_targets: Vec<ServiceTargetStatus>,
    /// The cross-node probe's verdicts (`--peer-probes`); `None` when it is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<PeerStatus>,
}

fn block_list_is_empty(l: &std::sync::Arc<Vec<BlockProblem>>) -> bool {
    l.is_empty()
}

fn serialize_block_list<S: serde::Serializer>(
    l: &std::sync::Arc<Vec<BlockProblem>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(l.iter())
}

impl Snapshot {
    /// The state before the first sync.
    pub fn initial(node: String, pod_source: SourceName) -> Self {
        Snapshot {
            node,
            pod_source,
            kube: None,
            synced: false,
            last_full_sync: None,
            generation: 0,
            links: 0,
            routes: 0,
            node_ips: Vec::new(),
            probe_targets: Vec::new(),
            verdicts: Verdicts::default(),
            remote_blocks: std::sync::Arc::default(),
            remote_blocks_checked: 0,
            unanswered_connects: Vec::new(),
            unanswered_dropped: 0,
            control_plane: None,
            felix: None,
            service_targets: Vec::new(),
            peers: None,
        }
    }

    /// Liveness: a full re-sync succeeded within `max_age`, or the process started less than
    /// `max_age` ago and is still on its first one.
    pub fn is_live(&self, now: SystemTime, started: SystemTime, max_age: Duration) -> bool {
        let recent = |t: SystemTime| now.duration_since(t).map_or(true, |age| age <= max_age);
        match self.last_full_sync {
            Some(t) => recent(t),
            None => recent(started),
        }
    }

    /// What the prober gets from this snapshot.
    pub fn pod_set(&self) -> PodSet {
        PodSet {
            synced: self.synced,
            node_ips: self.node_ips.clone(),
            pods: self
                .verdicts
                .pods
                .iter()
                .filter(|p| !p.pod.ips.is_empty() && !p.pod.interface.is_empty())
                .map(|p| PodEntry {
                    interface: p.pod.interface.clone(),
                    ips: p.pod.ips.clone(),
                    netnsid: p.link.and_then(|l| l.netnsid),
                    peer_index: p.link.and_then(|l| l.peer_index),
                    gateways: p.gateways.clone(),
                    namespace: p.pod.id.namespace.clone(),
                    meta: p.pod.meta.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn liveness() {
        let start = UNIX_EPOCH + Duration::from_secs(1000);
        let max = Duration::from_secs(180);
        let mut s = Snapshot::initial("n".into(), SourceName::Node);
        assert!(s.is_live(start + Duration::from_secs(10), start, max));
        assert!(!s.is_live(start + Duration::from_secs(200), start, max));
        s.last_full_sync = Some(start + Duration::from_secs(150));
        assert!(s.is_live(start + Duration::from_secs(200), start, max));
        assert!(!s.is_live(start + Duration::from_secs(400), start, max));
        // A clock that went backwards does not kill the agent.
        assert!(s.is_live(start, start, max));
    }

    #[test]
    fn status_json_shape() {
        let mut s = Snapshot::initial("node-1".into(), SourceName::Node);
        s.last_full_sync = Some(UNIX_EPOCH + Duration::from_secs(5));
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(v["node"], "node-1");
        assert_eq!(v["last_full_sync"], 5.0);
        assert!(v["pods"].as_array().unwrap().is_empty());
        assert!(v["node_problems"].as_array().unwrap().is_empty());
    }
}
