//! Pods as every layer names them: who a pod is, what is expected of it, what the prober is
//! handed, and the Kubernetes watch's health as `/status` shows it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::Serialize;

/// A pod's identity. Both fields are empty when the pod was found from its interface alone
/// (node mode), where no API tells us its name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PodId {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    #[serde(rename = "pod")]
    pub name: String,
}

/// A pod that should be wired on this node: its host-side interface and its IPs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedPod {
    /// Who it is.
    #[serde(flatten)]
    pub id: PodId,
    /// Host-side interface that must carry its routes (`cali…`).
    pub interface: String,
    /// Its IPs (at most one per family in practice), sorted.
    pub ips: Vec<IpAddr>,
    /// Its IPs are newer than the wiring grace period: a missing interface is not a problem
    /// yet (the CNI may still be wiring it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub in_grace: bool,
    /// The pod's `metadata.uid` (empty in node mode): Events name it so `kubectl describe pod`
    /// finds them.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// What the pod says about its probing (from the API; empty in node mode).
    #[serde(skip)]
    pub meta: ProbeMeta,
}

/// What a pod says about its own probing, read from the API and bounded there: its labels
/// (for `--probe-selector`) and the `podnet.io/probes` / `podnet.io/skip-probes` annotations.
/// Everything a tenant controls: the prober interprets it leniently. Empty in node mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeMeta {
    /// Its labels, at most `kube::MAX_LABELS` of them.
    pub labels: Arc<BTreeMap<String, String>>,
    /// The `podnet.io/probes` annotation.
    pub probes: Option<Arc<str>>,
    /// The `podnet.io/skip-probes` annotation.
    pub skip_probes: Option<Arc<str>>,
    /// Labels or an annotation were larger than podnet reads and were left out.
    pub truncated: bool,
    /// Its first containers' images (a few, bounded), for client kinds known by their image.
    pub images: Arc<Vec<String>>,
}

/// What the prober needs from the monitor: the pods to probe, where they live, and the node's
/// addresses. Published only when it changes, not on every verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSet {
    /// A full read of the node's state has happened.
    pub synced: bool,
    /// The node's own addresses.
    pub node_ips: Vec<IpAddr>,
    /// Pods with at least one IP.
    pub pods: Vec<PodEntry>,
}

/// One pod to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEntry {
    /// Host interface (the key).
    pub interface: String,
    /// Its IPs.
    pub ips: Vec<IpAddr>,
    /// Its namespace id as seen from the host.
    pub netnsid: Option<i32>,
    /// Its interface index inside its namespace.
    pub peer_index: Option<u32>,
    /// Its gateways, where the CNI's profile reads them from the host (ptp, bridge); empty:
    /// the CNI's fixed gateway the prober is configured with.
    pub gateways: Vec<IpAddr>,
    /// Its Kubernetes namespace (empty in node mode), for `--probe-exclude-namespaces`.
    pub namespace: String,
    /// What it says about its probing.
    pub meta: ProbeMeta,
}

/// The state of the watch, for `/status`, `/readyz` and the node-level problem.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KubeHealth {
    /// Listing and watching work.
    pub healthy: bool,
    /// Since when it has not been healthy (`None` while healthy).
    #[serde(skip)]
    pub unhealthy_since: Option<Instant>,
    /// The last list, watch event or bookmark.
    #[serde(serialize_with = "crate::util::clock::serialize_unix_seconds")]
    pub last_event: Option<SystemTime>,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Watch restarts so far (any reason).
    pub restarts: u64,
}

/// The Kubernetes part of `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct KubeStatus {
    /// A full list has completed.
    pub synced: bool,
    /// Pods the API puts on this node (running or not, host network excluded).
    pub pods: usize,
    /// The watch's health.
    #[serde(flatten)]
    pub health: KubeHealth,
    /// The calico-node pod on this node and its version, if the watch saw one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calico_node: Option<super::CalicoNode>,
}
