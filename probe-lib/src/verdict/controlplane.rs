//! Can kube-apiserver on this node reach the Services it calls? Per Service port: the
//! observation (ClusterIP and ready endpoints, each connected and TLS-handshaken from the host
//! network namespace) and the API server's `--enable-aggregator-routing` in, one reason and a
//! message naming the fix out. Pure: no I/O, no clock.
//!
//! Which path the API server takes: kube-apiserver builds one service resolver
//! (`buildServiceResolver` in `cmd/kube-apiserver/app`) from `--enable-aggregator-routing`
//! and hands it to the aggregator (APIService proxying and availability checks), to the
//! admission webhooks and to the CRD conversion webhooks. With the flag it dials a ready
//! endpoint IP; without it, the ClusterIP, which only a service proxy on this host (kube-proxy's
//! `nat OUTPUT` DNAT) makes answer.

use std::net::IpAddr;

use serde::Serialize;

use super::{BlockProblem, PodVerdict};
use crate::model::{
    ApiServiceCondition, ControlPlaneReason, ControlPlaneView, PathOutcome, PathProbe, ServiceRef,
    ServiceUsers,
};

/// The judgement of one Service port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceVerdict {
    /// The Service port.
    #[serde(flatten)]
    pub service: ServiceRef,
    /// Who calls it.
    pub users: ServiceUsers,
    /// The reason (`ok` when healthy).
    pub reason: ControlPlaneReason,
    /// Whether the problem breaks kube-apiserver's calls (false for `ok`, `pending`, and for
    /// `cluster_ip_unreachable` when the API server dials endpoints).
    pub affects_apiserver: bool,
    /// What is wrong and what fixes it (empty when ok).
    pub message: String,
    /// The ClusterIP probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<PathProbe>,
    /// The endpoint probes.
    pub endpoints: Vec<PathProbe>,
}

/// The control-plane section of the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ControlPlaneStatus {
    /// The kube-apiserver mirror pod on this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apiserver_pod: Option<String>,
    /// Its `--enable-aggregator-routing`; `None` without a mirror pod.
    pub aggregator_routing: Option<bool>,
    /// One verdict per Service port called.
    pub services: Vec<ServiceVerdict>,
    /// Service ports beyond the bound, not checked.
    pub services_over_limit: usize,
    /// APIServices with their `Available` condition.
    pub apiservices: Vec<ApiServiceCondition>,
    /// The API was read at least once.
    pub synced: bool,
    /// The last read's error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Judge every Service of `view`. `route_hint` names what podnet's route verdicts say about
/// an endpoint IP (a local pod's problem, a remote block's), for `endpoints_unreachable`.
pub fn control_plane_status(
    view: &ControlPlaneView,
    route_hint: &dyn Fn(IpAddr) -> Option<String>,
) -> ControlPlaneStatus {
    ControlPlaneStatus {
        apiserver_pod: view.apiserver_pod.clone(),
        aggregator_routing: view.aggregator_routing,
        services: view
            .services
            .iter()
            .map(|o| {
                let (reason, affects_apiserver, message) = judge(
                    o.unusable.as_deref(),
                    o.cluster_ip.as_ref(),
                    &o.endpoints,
                    view.aggregator_routing,
                    route_hint,
                );
                ServiceVerdict {
                    service: o.service.clone(),
                    users: o.users.clone(),
                    reason,
                    affects_apiserver,
                    message,
                    cluster_ip: o.cluster_ip.clone(),
                    endpoints: o.endpoints.clone(),
                }
            })
            .collect(),
        services_over_limit: view.services_over_limit,
        apiservices: view.apiservices.clone(),
        synced: view.synced,
        error: view.error.clone(),
    }
}

/// What podnet's route verdicts say about `ip`: a local pod's problems, or the problem of
/// the remote block holding it (for `endpoints_unreachable`).
pub fn route_hint(pods: &[PodVerdict], blocks: &[BlockProblem], ip: IpAddr) -> Option<String> {
    if let Some(p) = pods.iter().find(|p| p.pod.ips.contains(&ip)) {
        let reasons: Vec<&str> = p.problems.iter().map(|x| x.reason.as_str()).collect();
        let id = &p.pod.id;
        return Some(if reasons.is_empty() {
            format!(
                "{ip} is pod {}/{} on this node, wired correctly",
                id.namespace, id.name
            )
        } else {
            format!(
                "{ip} is pod {}/{} on this node: {} (podnet_pod_problem)",
                id.namespace,
                id.name,
                reasons.join(", ")
            )
        });
    }
    blocks.iter().find(|b| b.block.contains(&ip)).map(|b| {
        format!(
            "{ip} is in block {} of node {}: {} (podnet_remote_block_problem)",
            b.block,
            b.node,
            b.reason.as_str()
        )
    })
}

/// `1.2.3.4:443 (timeout)`, for messages.
fn describe(p: &PathProbe) -> String {
    match &p.outcome {
        Some(PathOutcome::Unreached { class, .. }) => format!("{} ({})", p.addr, class.as_str()),
        Some(PathOutcome::TlsFailed { detail }) => format!("{} (TLS: {detail})", p.addr),
        Some(PathOutcome::Ok { .. }) => format!("{} (ok)", p.addr),
        None => format!("{} (not probed)", p.addr),
    }
}

fn list(probes: &[&PathProbe]) -> String {
    probes
        .iter()
        .map(|p| describe(p))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The fix for a ClusterIP that does not answer, by what the API server does.
fn cluster_ip_message(addr: &PathProbe, routing: Option<bool>) -> (bool, String) {
    let seen = describe(addr);
    if routing == Some(true) {
        return (
            false,
            format!(
                "ClusterIP {seen} does not answer from this host while its endpoints do; \
                 kube-apiserver here runs with --enable-aggregator-routing=true, so it dials \
                 endpoint IPs for aggregated APIs, admission webhooks and CRD conversion \
                 webhooks alike (one service resolver) and is not affected; other host-network \
                 clients of this ClusterIP on this node are (they need a service proxy)"
            ),
        );
    }
    let unknown = if routing.is_none() {
        " (no kube-apiserver mirror pod seen on this node: its flags are unknown)"
    } else {
        ""
    };
    (
        true,
        format!(
            "ClusterIP {seen} does not answer from this host while every ready endpoint does: \
             no service proxy (kube-proxy) serves ClusterIPs on this host, and kube-apiserver \
             dials the ClusterIP{unknown}. Fix: start kube-apiserver with \
             --enable-aggregator-routing=true (it then dials endpoint IPs for aggregated APIs, \
             admission webhooks and CRD conversion webhooks), or run kube-proxy (or another \
             service proxy) on control-plane nodes"
        ),
    )
}

/// One Service port: (reason, affects the API server, message).
fn judge(
    unusable: Option<&str>,
    cluster_ip: Option<&PathProbe>,
    endpoints: &[PathProbe],
    routing: Option<bool>,
    route_hint: &dyn Fn(IpAddr) -> Option<String>,
) -> (ControlPlaneReason, bool, String) {
    use ControlPlaneReason as R;
    if let Some(why) = unusable {
        return (R::ServiceNotFound, true, why.to_owned());
    }
    if endpoints.is_empty() {
        let msg = "no ready endpoint for this port (kube-aggregator: MissingEndpoints): the \
                   Service's pods are not ready or its selector matches none";
        return (R::NoReadyEndpoints, true, msg.to_owned());
    }
    let pending = cluster_ip.is_some_and(|c| c.outcome.is_none())
        || endpoints.iter().any(|e| e.outcome.is_none());
    if pending {
        return (R::Pending, false, String::new());
    }
    let unreached: Vec<&PathProbe> = endpoints
        .iter()
        .filter(|e| !e.outcome.as_ref().is_some_and(PathOutcome::connected))
        .collect();
    if !unreached.is_empty() {
        let hints: Vec<String> = unreached
            .iter()
            .filter_map(|e| route_hint(e.addr.ip()))
            .collect();
        let hints = if hints.is_empty() {
            format!(
                "check `ip route get {}` on this host and podnet_pod_problem / \
                 podnet_remote_block_problem for that pod's node",
                unreached[0].addr.ip()
            )
        } else {
            format!("podnet's route verdicts: {}", hints.join("; "))
        };
        return (
            R::EndpointsUnreachable,
            true,
            format!(
                "this host cannot reach ready endpoint(s) {} of {}: the pod network is broken \
                 between this host and those pods; {hints}",
                list(&unreached),
                endpoints.len()
            ),
        );
    }
    let tls: Vec<&PathProbe> = endpoints
        .iter()
        .filter(|e| matches!(e.outcome, Some(PathOutcome::TlsFailed { .. })))
        .collect();
    if !tls.is_empty() {
        return (
            R::TlsFailed,
            true,
            format!(
                "endpoint(s) {} accept TCP but fail the TLS handshake: the port does not speak \
                 TLS (wrong targetPort?) or the server is broken",
                list(&tls)
            ),
        );
    }
    match cluster_ip {
        Some(
            c @ PathProbe {
                outcome: Some(PathOutcome::Unreached { .. }),
                ..
            },
        ) => {
            let (affects, msg) = cluster_ip_message(c, routing);
            (R::ClusterIpUnreachable, affects, msg)
        }
        Some(
            c @ PathProbe {
                outcome: Some(PathOutcome::TlsFailed { .. }),
                ..
            },
        ) => (
            R::TlsFailed,
            routing != Some(true),
            format!(
                "the endpoints complete TLS but ClusterIP {} does not: the service proxy on \
                 this host sends it elsewhere",
                describe(c)
            ),
        ),
        _ => (R::Ok, false, String::new()),
    }
}

#[cfg(test)]
#[path = "controlplane_tests.rs"]
mod tests;
