//! What the monitor publishes after every change: the node's verdicts plus enough context to
//! serve `/status`, `/readyz`, `/healthz` and the metrics, all from one consistent view.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use crate::verdict::Verdicts;

/// One consistent view of the node, replaced (never mutated) on every change.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Node name.
    pub node: String,
    /// Where the expected pods come from (`node`: the node's own interfaces; `kubernetes`).
    pub pod_source: &'static str,
    /// The Kubernetes watch, when pods come from the API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kube: Option<crate::monitor::KubeStatus>,
    /// A full dump has been read: verdicts mean something.
    pub synced: bool,
    /// When the last full re-sync completed.
    #[serde(serialize_with = "unix_seconds")]
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
}

impl Snapshot {
    /// The state before the first sync.
    pub fn initial(node: String, pod_source: &'static str) -> Self {
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
}

/// What the prober needs from the monitor: the pods to probe, where they live, and the node's
/// addresses. Published only when it changes, not on every verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSet {
    /// A full read of the node's state has happened.
    pub synced: bool,
    /// The node's own addresses.
    pub node_ips: Vec<std::net::IpAddr>,
    /// Pods with at least one IP.
    pub pods: Vec<PodEntry>,
}

/// One pod to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEntry {
    /// Host interface (the key).
    pub interface: String,
    /// Its IPs.
    pub ips: Vec<std::net::IpAddr>,
    /// Its namespace id as seen from the host.
    pub netnsid: Option<i32>,
    /// Its interface index inside its namespace.
    pub peer_index: Option<u32>,
}

impl PodSet {
    /// Derived from a snapshot.
    pub fn of(snap: &Snapshot) -> Self {
        PodSet {
            synced: snap.synced,
            node_ips: snap.node_ips.clone(),
            pods: snap
                .verdicts
                .pods
                .iter()
                .filter(|p| !p.pod.ips.is_empty() && !p.pod.interface.is_empty())
                .map(|p| PodEntry {
                    interface: p.pod.interface.clone(),
                    ips: p.pod.ips.clone(),
                    netnsid: p.link.and_then(|l| l.netnsid),
                    peer_index: p.link.and_then(|l| l.peer_index),
                })
                .collect(),
        }
    }
}

pub(crate) fn unix_seconds<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness() {
        let start = UNIX_EPOCH + Duration::from_secs(1000);
        let max = Duration::from_secs(180);
        let mut s = Snapshot::initial("n".into(), "node");
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
        let mut s = Snapshot::initial("node-1".into(), "node");
        s.last_full_sync = Some(UNIX_EPOCH + Duration::from_secs(5));
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(v["node"], "node-1");
        assert_eq!(v["last_full_sync"], 5.0);
        assert!(v["pods"].as_array().unwrap().is_empty());
        assert!(v["node_problems"].as_array().unwrap().is_empty());
    }
}
