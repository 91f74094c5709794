//! Every reason of `control_plane_status`, its precedence and its message.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::*;
use crate::model::{ProbeResult, ServiceObservation};

const CLUSTER_IP: &str = "10.96.0.10:443";
const EP1: &str = "10.244.0.5:8443";
const EP2: &str = "10.244.1.7:8443";

fn ok() -> Option<PathOutcome> {
    Some(PathOutcome::ok(Duration::from_millis(3)))
}
fn timeout() -> Option<PathOutcome> {
    Some(PathOutcome::Unreached {
        class: ProbeResult::Timeout,
        detail: "connect timed out".into(),
    })
}
fn tls_failed() -> Option<PathOutcome> {
    Some(PathOutcome::TlsFailed {
        detail: "peer closed".into(),
    })
}
fn probe(addr: &str, outcome: Option<PathOutcome>) -> PathProbe {
    PathProbe {
        addr: addr.parse::<SocketAddr>().unwrap(),
        outcome,
    }
}

fn metrics_server(cluster: Option<PathOutcome>, eps: Vec<PathProbe>) -> ServiceObservation {
    ServiceObservation {
        service: ServiceRef {
            namespace: "kube-system".into(),
            name: "metrics-server".into(),
            port: 443,
        },
        users: ServiceUsers {
            apiservices: vec!["v1beta1.metrics.k8s.io".into()],
            ..ServiceUsers::default()
        },
        unusable: None,
        cluster_ip: Some(probe(CLUSTER_IP, cluster)),
        endpoints: eps,
    }
}

fn one(o: ServiceObservation, routing: Option<bool>) -> ServiceVerdict {
    one_hinted(o, routing, &|_| None)
}

fn one_hinted(
    o: ServiceObservation,
    routing: Option<bool>,
    hint: &dyn Fn(IpAddr) -> Option<String>,
) -> ServiceVerdict {
    let view = ControlPlaneView {
        aggregator_routing: routing,
        services: vec![o],
        synced: true,
        ..ControlPlaneView::default()
    };
    let mut s = control_plane_status(&view, hint);
    assert_eq!(s.services.len(), 1);
    s.services.remove(0)
}

#[test]
fn every_path_answering_is_ok() {
    let v = one(
        metrics_server(ok(), vec![probe(EP1, ok()), probe(EP2, ok())]),
        Some(false),
    );
    assert_eq!(v.reason, ControlPlaneReason::Ok);
    assert!(!v.affects_apiserver);
    assert!(v.message.is_empty());
}

#[test]
fn the_incident_cluster_ip_unreachable_names_both_fixes() {
    for routing in [Some(false), None] {
        let v = one(
            metrics_server(timeout(), vec![probe(EP1, ok()), probe(EP2, ok())]),
            routing,
        );
        assert_eq!(v.reason, ControlPlaneReason::ClusterIpUnreachable);
        assert!(v.affects_apiserver);
        assert!(
            v.message.contains("--enable-aggregator-routing=true"),
            "{}",
            v.message
        );
        assert!(v.message.contains("kube-proxy"), "{}", v.message);
        assert!(
            v.message.contains("10.96.0.10:443 (timeout)"),
            "{}",
            v.message
        );
        assert_eq!(
            v.message.contains("flags are unknown"),
            routing.is_none(),
            "{}",
            v.message
        );
    }
}

#[test]
fn with_aggregator_routing_the_cluster_ip_does_not_matter_to_the_apiserver() {
    let v = one(
        metrics_server(timeout(), vec![probe(EP1, ok())]),
        Some(true),
    );
    assert_eq!(v.reason, ControlPlaneReason::ClusterIpUnreachable);
    assert!(!v.affects_apiserver);
    assert!(
        v.message
            .contains("runs with --enable-aggregator-routing=true")
    );
    assert!(
        v.message
            .contains("admission webhooks and CRD conversion webhooks")
    );
    assert!(!v.message.contains("Fix:"));
}

#[test]
fn an_unreachable_endpoint_wins_over_the_cluster_ip_and_links_the_route_verdicts() {
    let v = one(
        metrics_server(timeout(), vec![probe(EP1, ok()), probe(EP2, timeout())]),
        Some(true),
    );
    assert_eq!(v.reason, ControlPlaneReason::EndpointsUnreachable);
    assert!(v.affects_apiserver);
    assert!(
        v.message.contains("10.244.1.7:8443 (timeout)"),
        "{}",
        v.message
    );
    assert!(!v.message.contains("10.244.0.5"), "{}", v.message);
    assert!(
        v.message.contains("ip route get 10.244.1.7"),
        "{}",
        v.message
    );
    let hint = |ip: IpAddr| {
        (ip == "10.244.1.7".parse::<IpAddr>().unwrap())
            .then(|| "pod kube-system/metrics-server-x: route_missing".to_owned())
    };
    let v = one_hinted(
        metrics_server(timeout(), vec![probe(EP2, timeout())]),
        Some(false),
        &hint,
    );
    assert!(
        v.message
            .contains("podnet's route verdicts: pod kube-system/metrics-server-x: route_missing"),
        "{}",
        v.message
    );
}

#[test]
fn no_ready_endpoints_and_unusable_services() {
    let v = one(metrics_server(timeout(), vec![]), Some(false));
    assert_eq!(v.reason, ControlPlaneReason::NoReadyEndpoints);
    assert!(v.affects_apiserver);
    let mut o = metrics_server(None, vec![]);
    o.cluster_ip = None;
    o.unusable = Some("Service kube-system/metrics-server not found".into());
    let v = one(o, Some(false));
    assert_eq!(v.reason, ControlPlaneReason::ServiceNotFound);
    assert!(v.message.contains("not found"));
}

#[test]
fn tls_failures_on_endpoints_or_only_on_the_cluster_ip() {
    let v = one(
        metrics_server(tls_failed(), vec![probe(EP1, tls_failed())]),
        Some(false),
    );
    assert_eq!(v.reason, ControlPlaneReason::TlsFailed);
    assert!(
        v.message.contains("10.244.0.5:8443 (TLS: peer closed)"),
        "{}",
        v.message
    );
    let v = one(
        metrics_server(tls_failed(), vec![probe(EP1, ok())]),
        Some(false),
    );
    assert_eq!(v.reason, ControlPlaneReason::TlsFailed);
    assert!(v.message.contains("ClusterIP"));
    assert!(v.affects_apiserver);
    let v = one(
        metrics_server(tls_failed(), vec![probe(EP1, ok())]),
        Some(true),
    );
    assert!(!v.affects_apiserver);
}

#[test]
fn unprobed_paths_are_pending_not_problems() {
    let v = one(metrics_server(None, vec![probe(EP1, ok())]), Some(false));
    assert_eq!(v.reason, ControlPlaneReason::Pending);
    assert!(!v.affects_apiserver);
    let v = one(metrics_server(ok(), vec![probe(EP1, None)]), Some(false));
    assert_eq!(v.reason, ControlPlaneReason::Pending);
}

#[test]
fn the_view_is_carried_over() {
    let view = ControlPlaneView {
        apiserver_pod: Some("kube-apiserver-n".into()),
        aggregator_routing: Some(false),
        services_over_limit: 3,
        error: Some("forbidden".into()),
        ..ControlPlaneView::default()
    };
    let s = control_plane_status(&view, &|_| None);
    assert_eq!(s.apiserver_pod.as_deref(), Some("kube-apiserver-n"));
    assert_eq!(s.services_over_limit, 3);
    assert_eq!(s.error.as_deref(), Some("forbidden"));
    assert!(!s.synced && s.services.is_empty());
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["aggregator_routing"], false);
}
