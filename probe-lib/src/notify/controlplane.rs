//! The control-plane verdicts as the node condition and the Node's Events tell them: which
//! hop fails (the ClusterIP, the endpoints, or there is no endpoint to dial) and whether
//! kube-apiserver's `--enable-aggregator-routing=true` would help. Only Services whose
//! problem breaks kube-apiserver's calls are told (`affects_apiserver`): a ClusterIP that does
//! not answer while the API server dials endpoints is in the metrics, not in the condition.

use std::collections::BTreeMap;

use super::precedence::Reason;
use super::reasons::controlplane_reason;
use crate::model::{PathOutcome, ServiceRef};
use crate::snapshot::Snapshot;
use crate::verdict::ServiceVerdict;

/// Services named per Event note beside the first (the rest are counted).
const NAMED: usize = 3;

/// Where on kube-apiserver's path to the Service the call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hop {
    /// The ClusterIP does not answer (or completes no handshake); the endpoints do.
    ClusterIp,
    /// A ready endpoint fails.
    Endpoints,
    /// There is no endpoint to dial (no ready one, or no usable Service).
    NoEndpoint,
}

/// The failing hop of a Service with a problem.
pub(super) fn hop(v: &ServiceVerdict) -> Hop {
    use crate::model::ControlPlaneReason as R;
    match v.reason {
        R::ClusterIpUnreachable => Hop::ClusterIp,
        R::TlsFailed
            if !v
                .endpoints
                .iter()
                .any(|e| matches!(e.outcome, Some(PathOutcome::TlsFailed { .. }))) =>
        {
            Hop::ClusterIp
        }
        R::EndpointsUnreachable | R::TlsFailed => Hop::Endpoints,
        R::Ok | R::Pending | R::ServiceNotFound | R::NoReadyEndpoints => Hop::NoEndpoint,
    }
}

/// `ns/name:port`.
fn service(s: &ServiceRef) -> String {
    format!("{}/{}:{}", s.namespace, s.name, s.port)
}

/// Who calls it, briefly: `APIService v1beta1.metrics.k8s.io`, `webhook validating/policy`.
fn users(v: &ServiceVerdict) -> String {
    let u = &v.users;
    let named = u
        .apiservices
        .iter()
        .map(|a| format!("APIService {a}"))
        .chain(u.webhooks.iter().map(|w| format!("webhook {w}")))
        .chain(u.crds.iter().map(|c| format!("CRD conversion {c}")));
    let all: Vec<String> = named.collect();
    let mut s = all
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if all.len() > NAMED {
        s.push_str(&format!(" and {} more", all.len() - NAMED));
    }
    s
}

/// Whether `--enable-aggregator-routing=true` would make the call work, in words.
fn routing(v: &ServiceVerdict, flag: Option<bool>) -> &'static str {
    match (hop(v), flag) {
        (Hop::ClusterIp, _) => {
            "--enable-aggregator-routing=true would help: kube-apiserver would dial the endpoint \
             IPs, which answer"
        }
        (Hop::Endpoints, Some(true)) => {
            "kube-apiserver already runs with --enable-aggregator-routing=true and dials the \
             endpoints, which fail"
        }
        (Hop::Endpoints, _) => {
            "--enable-aggregator-routing=true would not help: the endpoints themselves fail"
        }
        (Hop::NoEndpoint, _) => {
            "--enable-aggregator-routing=true would not help: there is no endpoint to dial"
        }
    }
}

fn hop_words(v: &ServiceVerdict) -> String {
    match hop(v) {
        Hop::ClusterIp => match &v.cluster_ip {
            Some(c) => format!("the ClusterIP hop fails ({}), the endpoints answer", c.addr),
            None => "the ClusterIP hop fails, the endpoints answer".to_owned(),
        },
        Hop::Endpoints => "the endpoint hop fails".to_owned(),
        Hop::NoEndpoint => "there is no endpoint to dial".to_owned(),
    }
}

/// The Services with a problem that breaks kube-apiserver's calls: (CamelCase reason, its
/// precedence entry, the verdict).
pub(super) fn problems(
    snap: &Snapshot,
) -> impl Iterator<Item = (&'static str, Reason, &ServiceVerdict)> {
    snap.control_plane
        .iter()
        .flat_map(|c| c.services.iter())
        .filter(|v| v.affects_apiserver)
        .filter_map(|v| {
            Some((
                controlplane_reason(v.reason)?,
                Reason::ControlPlane(v.reason),
                v,
            ))
        })
}

/// One Service in the condition's message: `kube-system/metrics-server:443 (APIService …):
/// the ClusterIP hop fails (…); --enable-aggregator-routing=true would help`.
pub(super) fn example(v: &ServiceVerdict) -> String {
    let helps = if hop(v) == Hop::ClusterIp {
        "would help"
    } else {
        "would not help"
    };
    format!(
        "{} ({}): {}; --enable-aggregator-routing=true {helps}",
        service(&v.service),
        users(v),
        hop_words(v)
    )
}

/// One Node Event note per reason: the first Service (who calls it, the failing hop, the
/// flag), how many other Services share the reason and how many have other problems, then the
/// first Service's evidence and fix from its verdict.
pub(super) fn notes(snap: &Snapshot) -> BTreeMap<&'static str, String> {
    let flag = snap
        .control_plane
        .as_ref()
        .and_then(|c| c.aggregator_routing);
    let mut by_reason: BTreeMap<&'static str, Vec<&ServiceVerdict>> = BTreeMap::new();
    for (name, _, v) in problems(snap) {
        by_reason.entry(name).or_default().push(v);
    }
    let total: usize = by_reason.values().map(Vec::len).sum();
    by_reason
        .iter()
        .map(|(name, services)| {
            let first = services[0];
            let same: Vec<String> = services[1..]
                .iter()
                .take(NAMED)
                .map(|v| service(&v.service))
                .collect();
            let same = if same.is_empty() {
                String::new()
            } else {
                format!(" ({})", same.join(", "))
            };
            // The verdict's evidence and fix last: a note cut at its bound loses the end.
            let note = format!(
                "kube-apiserver on this node cannot reach Service {} (used by {}): {}; {}. \
                 Other affected Services: {} with this problem{same}, {} with another. {}",
                service(&first.service),
                users(first),
                hop_words(first),
                routing(first, flag),
                services.len() - 1,
                total - services.len(),
                first.message
            );
            (*name, note)
        })
        .collect()
}

#[cfg(test)]
#[path = "controlplane_tests.rs"]
mod tests;
