//! Control-plane verdicts in the node condition and the Node's Events.

use std::time::{Duration, Instant, UNIX_EPOCH};

use super::*;
use crate::model::{ControlPlaneReason, PathProbe, PodReason, ProbeResult, ServiceUsers};
use crate::notify::condition::desired;
use crate::notify::condition::tests::{pod, snap};
use crate::notify::events::{EventTracker, Regarding, Write, observe};
use crate::verdict::ControlPlaneStatus;

fn probe(addr: &str, outcome: Option<PathOutcome>) -> PathProbe {
    PathProbe {
        addr: addr.parse().unwrap(),
        outcome,
    }
}

fn unreached() -> Option<PathOutcome> {
    Some(PathOutcome::Unreached {
        class: ProbeResult::Timeout,
        detail: "connect timed out".into(),
    })
}

/// A verdict as `control_plane_status` makes it; its message stands in for the verdict's.
fn verdict(name: &str, reason: ControlPlaneReason, affects: bool) -> ServiceVerdict {
    let ok = Some(PathOutcome::ok(Duration::from_millis(2)));
    let (cluster, endpoint) = match reason {
        ControlPlaneReason::ClusterIpUnreachable => (unreached(), ok),
        ControlPlaneReason::EndpointsUnreachable => (ok, unreached()),
        ControlPlaneReason::TlsFailed => (
            ok,
            Some(PathOutcome::TlsFailed {
                detail: "peer closed".into(),
            }),
        ),
        _ => (ok.clone(), ok),
    };
    ServiceVerdict {
        service: ServiceRef {
            namespace: "kube-system".into(),
            name: name.into(),
            port: 443,
        },
        users: ServiceUsers {
            apiservices: vec![format!("v1beta1.{name}.k8s.io")],
            ..ServiceUsers::default()
        },
        reason,
        affects_apiserver: affects,
        message: format!("verdict says {}", reason.as_str()),
        cluster_ip: Some(probe("10.96.0.10:443", cluster)),
        endpoints: vec![probe("10.244.0.5:8443", endpoint)],
    }
}

fn with(services: Vec<ServiceVerdict>, routing: Option<bool>) -> Snapshot {
    let mut s = snap(vec![pod("a", "10.244.0.2", &[])], &[]);
    s.control_plane = Some(ControlPlaneStatus {
        aggregator_routing: routing,
        services,
        synced: true,
        ..ControlPlaneStatus::default()
    });
    s
}

/// Every control-plane reason: its hop, whether the flag would help, in the condition and on
/// the Node when it breaks the API server's calls, nowhere otherwise.
#[test]
fn every_reason_names_its_hop_and_the_flag() {
    use ControlPlaneReason as R;
    for r in ControlPlaneReason::ALL {
        let v = verdict("metrics", *r, true);
        let want = match r {
            R::ClusterIpUnreachable => Hop::ClusterIp,
            R::EndpointsUnreachable | R::TlsFailed => Hop::Endpoints,
            R::Ok | R::Pending | R::ServiceNotFound | R::NoReadyEndpoints => Hop::NoEndpoint,
        };
        assert_eq!(hop(&v), want, "{r:?}");
        let s = with(vec![v.clone()], Some(false));
        let d = desired(&s).unwrap();
        let told = notes(&s);
        let Some(name) = controlplane_reason(*r) else {
            assert!(!d.problem, "{r:?}: {d:?}");
            assert!(told.is_empty(), "{r:?}");
            continue;
        };
        assert!(d.problem, "{r:?}");
        assert_eq!(d.reason, name);
        assert!(
            d.message.contains("kube-system/metrics:443"),
            "{}",
            d.message
        );
        let helps = if want == Hop::ClusterIp {
            "--enable-aggregator-routing=true would help"
        } else {
            "--enable-aggregator-routing=true would not help"
        };
        assert!(d.message.contains(helps), "{r:?}: {}", d.message);
        let note = &told[name];
        assert!(note.contains(helps), "{r:?}: {note}");
        assert!(
            note.contains(
                "Service kube-system/metrics:443 (used by APIService v1beta1.metrics.k8s.io)"
            ),
            "{note}"
        );
        assert!(note.contains(&v.message), "{note}");
        // Not breaking the API server's calls (it dials endpoints): told nowhere.
        let s = with(vec![verdict("metrics", *r, false)], Some(true));
        assert!(!desired(&s).unwrap().problem, "{r:?}");
        assert!(notes(&s).is_empty(), "{r:?}");
    }
}

#[test]
fn the_incident_on_the_node_with_the_other_services_counted() {
    use ControlPlaneReason as R;
    let s = with(
        vec![
            verdict("metrics-server", R::ClusterIpUnreachable, true),
            verdict("policy-webhook", R::ClusterIpUnreachable, true),
            verdict("custom", R::NoReadyEndpoints, true),
            verdict("fine", R::Ok, false),
        ],
        None,
    );
    let d = desired(&s).unwrap();
    assert_eq!(d.reason, "ControlPlaneClusterIPUnreachable");
    assert!(
        d.message.starts_with(
            "0 of 1 pods have problems; ControlPlaneClusterIPUnreachable: 2 (kube-system/\
             metrics-server:443 (APIService v1beta1.metrics-server.k8s.io): the ClusterIP hop \
             fails (10.96.0.10:443), the endpoints answer; --enable-aggregator-routing=true \
             would help"
        ),
        "{}",
        d.message
    );
    assert!(
        d.message.contains("; ControlPlaneNoReadyEndpoints: 1 ("),
        "{}",
        d.message
    );
    let mut t = EventTracker::new("node-1", 10, 6);
    let step = t.step(
        &observe(&s).unwrap(),
        UNIX_EPOCH + Duration::from_secs(1_796_090_559),
        Instant::now(),
    );
    assert_eq!(step.writes.len(), 2, "{step:?}");
    let Write::Create { body, .. } = &step.writes[0] else {
        panic!("{step:?}")
    };
    assert_eq!(body["regarding"]["kind"], "Node");
    assert_eq!(body["type"], "Warning");
    assert_eq!(body["reason"], "ControlPlaneClusterIPUnreachable");
    let note = body["note"].as_str().unwrap();
    assert!(
        note.starts_with(
            "kube-apiserver on this node cannot reach Service kube-system/metrics-server:443 \
             (used by APIService v1beta1.metrics-server.k8s.io): the ClusterIP hop fails \
             (10.96.0.10:443), the endpoints answer; --enable-aggregator-routing=true would \
             help"
        ),
        "{note}"
    );
    assert!(
        note.contains(
            "would help: kube-apiserver would dial the endpoint IPs, which answer. Other \
             affected Services: 1 with this problem (kube-system/policy-webhook:443), 1 with \
             another. verdict says cluster_ip_unreachable"
        ),
        "{note}"
    );
    assert!(!note.contains("pods on the node are wired"), "{note}");
}

/// The precedence table decides between a control-plane and a pod problem.
#[test]
fn a_missing_service_proxy_outranks_pod_wiring_an_unreachable_endpoint_does_not() {
    use ControlPlaneReason as R;
    for (cp, want) in [
        (R::ClusterIpUnreachable, "ControlPlaneClusterIPUnreachable"),
        (R::EndpointsUnreachable, "PodRouteMissing"),
    ] {
        let mut s = with(vec![verdict("metrics-server", cp, true)], Some(false));
        s.verdicts.pods = vec![pod("a", "10.244.0.2", &[PodReason::RouteMissing])];
        assert_eq!(desired(&s).unwrap().reason, want);
        // Both on the node's Events, each under its own reason.
        let seen = observe(&s).unwrap();
        assert!(seen.problems.keys().any(
            |k| k.regarding == Regarding::Node && k.reason == controlplane_reason(cp).unwrap()
        ));
    }
}
