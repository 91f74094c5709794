//! Human-facing views of a [`Snapshot`] (an exporter, beside `metrics`): the rows of
//! `podnet-agent check` (a text table and a stable JSON document) and the status page at `/`.
//! Pure: a snapshot in, text out.
//!
//! Problems come first everywhere: the person reading it is in an incident.

use std::net::IpAddr;

use serde::Serialize;

use crate::model::PodReason;
use crate::snapshot::Snapshot;
use crate::verdict::PodVerdict;

mod html;
mod table;

pub use html::status_page;
pub use table::table;

/// Version of the JSON document of `check --json` (bumped on any incompatible change).
pub const SCHEMA_VERSION: u32 = 1;

/// What `check` found on the node: the whole JSON document of `check --json`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// Node name.
    pub node: String,
    /// Where the pods came from (`node`, `kubernetes`, `node_until_listed`).
    pub pod_source: &'static str,
    /// A full read of the node happened (otherwise nothing below means anything).
    pub synced: bool,
    /// No node problem, no pod problem, no failing probe.
    pub healthy: bool,
    /// Node-level problems.
    pub node_problems: Vec<NodeRow>,
    /// One row per pod, problems first, then by name.
    pub pods: Vec<PodRow>,
}

/// One node-level problem.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRow {
    /// Stable reason (as in `podnet_node_problem`).
    pub reason: &'static str,
    /// Evidence.
    pub detail: String,
}

/// One pod's line.
#[derive(Debug, Clone, Serialize)]
pub struct PodRow {
    /// Kubernetes namespace; empty in node mode.
    pub namespace: String,
    /// Pod name; empty in node mode (the interface names the pod there).
    pub pod: String,
    /// Host-side interface.
    pub interface: String,
    /// The pod's IPs.
    pub ips: Vec<IpAddr>,
    /// `ok`, the route's problem reason, or `-` when the interface is missing.
    pub route: String,
    /// Probe summary: `2/3 ok`, `-` (not probed), `pending` (round not complete).
    pub probes: String,
    /// `ok` or the pod's reasons joined with `,` (failing probes once, as `probe_failing`).
    pub verdict: String,
    /// The pod's reasons (problems, then `probe_failing:<target>`), empty when healthy.
    pub reasons: Vec<String>,
    /// Evidence, one line per problem.
    pub details: Vec<String>,
}

impl PodRow {
    /// `namespace/pod`, or the interface in node mode.
    pub fn display_name(&self) -> String {
        if self.pod.is_empty() {
            self.interface.clone()
        } else {
            format!("{}/{}", self.namespace, self.pod)
        }
    }

    /// No problem and no failing probe.
    pub fn is_healthy(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// The row of a peer node unreachable from here (`podnet_peer_unreachable`).
const PEER_UNREACHABLE: &str = "peer_unreachable";

const ROUTE_REASONS: [PodReason; 3] = [
    PodReason::RouteMissing,
    PodReason::RouteWrongInterface,
    PodReason::RouteNotUnicast,
];

impl CheckReport {
    /// The report on `snap`.
    pub fn from_snapshot(snap: &Snapshot) -> Self {
        let mut pods: Vec<PodRow> = snap.verdicts.pods.iter().map(pod_row).collect();
        pods.sort_by(|a, b| {
            (a.is_healthy(), a.display_name()).cmp(&(b.is_healthy(), b.display_name()))
        });
        let node_problems: Vec<NodeRow> = snap
            .verdicts
            .node
            .iter()
            .map(|p| NodeRow {
                reason: p.reason.as_str(),
                detail: p.detail.clone(),
            })
            .chain(snap.remote_blocks.iter().map(|b| NodeRow {
                reason: b.reason.as_str(),
                detail: format!("{} of node {}: {}", b.block, b.node, b.detail),
            }))
            .chain(
                snap.peers
                    .iter()
                    .flat_map(|p| p.unreachable.iter())
                    .map(|u| NodeRow {
                        reason: PEER_UNREACHABLE,
                        detail: format!(
                            "node {} at {}: {} samples failed in a row{}",
                            u.peer,
                            u.address,
                            u.consecutive_failures,
                            u.explained_by
                                .map(|r| format!(" ({})", r.as_str()))
                                .unwrap_or_default()
                        ),
                    }),
            )
            .collect();
        let healthy =
            snap.synced && node_problems.is_empty() && pods.iter().all(|p| p.is_healthy());
        CheckReport {
            schema: SCHEMA_VERSION,
            node: snap.node.clone(),
            pod_source: snap.pod_source.as_str(),
            synced: snap.synced,
            healthy,
            node_problems,
            pods,
        }
    }
}

fn pod_row(v: &PodVerdict) -> PodRow {
    let route = match v
        .problems
        .iter()
        .find(|p| ROUTE_REASONS.contains(&p.reason))
    {
        Some(p) => p.reason.as_str().to_owned(),
        None if v.link.is_none() => "-".to_owned(),
        None => "ok".to_owned(),
    };
    let mut reasons: Vec<String> = Vec::new();
    let mut details: Vec<String> = Vec::new();
    for p in &v.problems {
        let reason = p.reason.as_str().to_owned();
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
        details.push(match p.ip {
            Some(ip) => format!("{}: {ip}: {}", p.reason.as_str(), p.detail),
            None => format!("{}: {}", p.reason.as_str(), p.detail),
        });
    }
    for t in v.probes.iter().filter(|t| t.is_pod_failure()) {
        reasons.push(format!("probe_failing:{}", t.state.target));
        details.push(format!(
            "probe {} to {}: {}{}",
            t.state.target,
            t.state.address,
            t.state.last.as_str(),
            t.state
                .detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        ));
    }
    let probes = if v.probes.is_empty() {
        "-".to_owned()
    } else {
        let ok = v
            .probes
            .iter()
            .filter(|t| t.state.last == crate::model::ProbeResult::Ok)
            .count();
        format!("{ok}/{} ok", v.probes.len())
    };
    PodRow {
        namespace: v.pod.id.namespace.clone(),
        pod: v.pod.id.name.clone(),
        interface: v.pod.interface.clone(),
        ips: v.pod.ips.clone(),
        route,
        probes,
        verdict: verdict(&reasons),
        reasons,
        details,
    }
}

/// `ok`, or the distinct reasons with the probe targets left out (they are in `reasons` and
/// the details): a cell that fits a terminal.
fn verdict(reasons: &[String]) -> String {
    if reasons.is_empty() {
        return "ok".to_owned();
    }
    let mut short: Vec<&str> = Vec::new();
    for r in reasons {
        let r = r.split_once(':').map_or(r.as_str(), |(head, _)| head);
        if !short.contains(&r) {
            short.push(r);
        }
    }
    short.join(",")
}

#[cfg(test)]
mod tests;
