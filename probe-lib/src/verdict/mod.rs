//! The verdict engine: expected pods and the observed host state in, per-pod and per-node
//! verdicts out. Pure: no I/O, no clock, no globals.
//!
//! Reasons are stable strings (metric label values, documented in `docs/metrics.md`).

use std::net::IpAddr;

use serde::Serialize;

mod blocks;
mod calico;
mod connects;
mod controlplane;
mod orphans;
mod path_mtu;
mod peers;
mod policy;
mod probes;
mod route;
mod wiring;

pub use blocks::{BlockProblem, block_problems};
pub use calico::VanishedRoute;
pub use connects::{
    ConnectNets, ConnectVerdict, classify, unanswered_connects, unanswered_dropped,
};
pub use controlplane::{ControlPlaneStatus, ServiceVerdict, control_plane_status, route_hint};
pub use orphans::{Orphan, find_orphans};
pub use peers::{MAX_PEER_SERIES, PeerProblem, PeerStatus, judge_peers};
pub use policy::{NETWORK_POLICY, NODE_TARGET_HINT, PolicyEngine};
pub use probes::{ProbeView, TargetVerdict};

use crate::cni::Cni;
use crate::host::{Family, HostState, NetconfScope};
pub use crate::model::{NodeReason, PodReason};
use crate::pods::ExpectedPod;
use crate::probe::report::PodSide;

/// One problem of one pod, for one of its IPs where it concerns an IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodProblem {
    /// What is wrong.
    pub reason: PodReason,
    /// The affected IP; `None` only for a pod whose IPs are not known.
    pub ip: Option<IpAddr>,
    /// Human-readable evidence, e.g. `route is blackhole` (for logs and `/status`).
    pub detail: String,
}

/// The pod's host-side link as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PodLink {
    /// Host interface index.
    pub index: u32,
    /// Namespace id of the pod's namespace, as seen from the host.
    pub netnsid: Option<i32>,
    /// Index of the pod's end of the veth inside its namespace.
    pub peer_index: Option<u32>,
    /// Administratively up on the host (`ip link set … up`); a host side that is up but
    /// without carrier is the pod's eth0 being down, not the host's doing.
    pub admin_up: bool,
}

/// The verdict on one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodVerdict {
    /// The pod as expected.
    #[serde(flatten)]
    pub pod: ExpectedPod,
    /// Its host link, if it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<PodLink>,
    /// Empty when the pod is wired correctly.
    pub problems: Vec<PodProblem>,
    /// The pod's side, as the prober last saw it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_side: Option<PodSide>,
    /// Probe verdicts, one per probed destination.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<TargetVerdict>,
    /// The pod's gateways as its CNI gives them, read from the host side (ptp: the host veth's
    /// addresses, bridge: the bridge's); empty where the CNI's gateway is fixed (Calico and
    /// AWS VPC CNI: 169.254.1.1).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<IpAddr>,
    /// Not probed at all (its namespace, label or annotation opted it out); its wiring is
    /// still judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes_skipped: Option<crate::model::ProbeSkip>,
}

impl PodVerdict {
    /// No problems.
    pub fn is_healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One node-level problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeProblem {
    /// What is wrong.
    pub reason: NodeReason,
    /// Evidence, e.g. `ipv4`.
    pub detail: String,
}

impl NodeProblem {
    /// What the problem means beyond its reason, when podnet can tell: the `node` target
    /// unreachable from every pod is the node's own filter, never the uplink.
    pub fn hint(&self) -> Option<&'static str> {
        (self.reason == NodeReason::TargetUnreachable
            && self.detail == crate::probe::target::NODE_TARGET)
            .then_some(NODE_TARGET_HINT)
    }
}

impl Serialize for NodeProblem {
    /// `reason`, `detail` and, when there is one, `hint`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let hint = self.hint();
        let mut m = s.serialize_map(Some(2 + usize::from(hint.is_some())))?;
        m.serialize_entry("reason", &self.reason)?;
        m.serialize_entry("detail", &self.detail)?;
        if let Some(h) = hint {
            m.serialize_entry("hint", h)?;
        }
        m.end()
    }
}

/// All verdicts for the node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdicts {
    /// One per expected pod, in the order given.
    pub pods: Vec<PodVerdict>,
    /// Node-level problems.
    #[serde(rename = "node_problems")]
    pub node: Vec<NodeProblem>,
}

impl Verdicts {
    /// Number of pods with at least one problem.
    pub fn pods_with_problems(&self) -> usize {
        self.pods.iter().filter(|p| !p.is_healthy()).count()
    }
}

/// Judge every expected pod and the node against what the kernel reports and, when probes
/// run, what they found. `cni` chooses the wiring profile: what the node's CNI guarantees, and
/// only that, is judged.
pub fn evaluate(
    cni: &Cni,
    pods: &[ExpectedPod],
    host: &HostState,
    probes: Option<&ProbeView<'_>>,
) -> Verdicts {
    let mut node = node_problems(pods, host);
    let node_forwarding_off = |f: Family| {
        node.iter()
            .any(|p| p.reason == NodeReason::ForwardingDisabled && p.detail == f.as_str())
    };
    let mut pods: Vec<PodVerdict> = pods
        .iter()
        .map(|pod| {
            let link = host.link_by_name(&pod.interface);
            PodVerdict {
                pod: pod.clone(),
                link: link.map(|l| PodLink {
                    index: l.index,
                    netnsid: l.peer_netnsid,
                    peer_index: l.peer_index,
                    admin_up: l.admin_up,
                }),
                problems: wiring::pod_problems(cni, pod, host, &node_forwarding_off),
                pod_side: None,
                probes: Vec::new(),
                gateways: link.map_or_else(Vec::new, |l| wiring::gateways(cni, l, host)),
                probes_skipped: None,
            }
        })
        .collect();
    if let Some(view) = probes {
        probes::judge(&mut pods, view, &mut node);
    }
    Verdicts { pods, node }
}

/// `calico_node_stale` when felix reports ready but disagrees with the API (pods from the API
/// only: in node mode the pods are the interfaces, which felix sees too). `vanished`: by host
/// interface, the pods whose route was removed while they lived; `calico_node`: the calico-node
/// pod on this node, whose version the message names.
pub fn calico_node_stale(
    felix: &crate::model::FelixStatus,
    pods: &[PodVerdict],
    vanished: &std::collections::HashMap<&str, VanishedRoute>,
    calico_node: Option<&crate::model::CalicoNode>,
) -> Option<NodeProblem> {
    calico::stale(felix, pods, vanished, calico_node)
}

fn node_problems(pods: &[ExpectedPod], host: &HostState) -> Vec<NodeProblem> {
    // Forwarding off only cuts off pods that exist: a node without pods of a family (none at
    // all, e.g. a fresh or drained node) may have it off and nothing is broken.
    let has = |v6: bool| {
        pods.iter()
            .flat_map(|p| &p.ips)
            .any(|ip| ip.is_ipv6() == v6)
    };
    let (any_v4, any_v6) = (has(false), has(true));
    let mut out = Vec::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        if (family == Family::Ipv4 && !any_v4) || (family == Family::Ipv6 && !any_v6) {
            continue;
        }
        if host.netconf(family, NetconfScope::All).forwarding == Some(false) {
            out.push(NodeProblem {
                reason: NodeReason::ForwardingDisabled,
                detail: family.as_str().to_owned(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod probe_tests;

#[cfg(test)]
mod policy_tests;
