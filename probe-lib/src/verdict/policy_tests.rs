//! Policy-aware diagnosis and probe scoping in the verdicts.

use std::collections::HashMap;

use super::probe_tests::{OK, TO, host, pods, reports_to};
use super::*;
use crate::model::ProbeSkip;
use crate::probe::report::PodProbes;

fn run(n: usize, reports: &HashMap<String, PodProbes>, engine: Option<PolicyEngine>) -> Verdicts {
    let view = ProbeView {
        reports,
        failure_threshold: 2,
        policy_engine: engine,
    };
    evaluate(&Cni::Calico, &pods(n), &host(n), Some(&view))
}

#[test]
fn a_failure_behind_clean_wiring_names_a_possible_policy_where_one_is_enforced() {
    let r = reports_to("dns", &[&[OK], &[OK]], &[&[TO, TO], &[OK, OK]]);
    let without = run(2, &r, None);
    assert_eq!(without.pods[0].probes[1].diagnosis, None);
    assert_eq!(without.pods[0].probes[1].hint, None);
    let with = run(2, &r, Some(PolicyEngine::Calico));
    let t = &with.pods[0].probes[1];
    assert!(t.is_pod_failure());
    assert_eq!(t.diagnosis, Some(NETWORK_POLICY));
    let hint = t.hint.as_deref().unwrap_or_default();
    assert!(hint.contains("a network policy may drop this"), "{hint}");
    assert!(hint.contains("kubectl get networkpolicy -n ns"), "{hint}");
    assert!(!hint.contains("uplink") && !hint.contains("NAT"), "{hint}");
    let json = serde_json::to_value(&with.pods[0]).unwrap();
    assert_eq!(json["probes"][1]["diagnosis"], "network_policy", "{json}");
    // The healthy pod has neither.
    assert_eq!(with.pods[1].probes[1].diagnosis, None);
}

#[test]
fn a_wiring_problem_or_a_dead_gateway_still_explains_the_failure_first() {
    let r = reports_to("dns", &[&[TO, TO], &[OK]], &[&[TO, TO], &[OK, OK]]);
    let v = run(2, &r, Some(PolicyEngine::Other));
    assert_eq!(v.pods[0].probes[1].diagnosis, Some("gateway_unreachable"));
    assert_eq!(v.pods[0].probes[1].hint, None);
    // The gateway itself failing is never blamed on a policy.
    assert_eq!(v.pods[0].probes[0].diagnosis, None);
}

#[test]
fn the_node_unreachable_from_every_pod_is_a_host_policy_not_the_uplink() {
    let r = reports_to(
        "node",
        &[&[OK], &[OK], &[OK]],
        &[&[TO, TO], &[TO, TO], &[TO, TO]],
    );
    // Whatever the engine: the node's own address is local, nothing leaves the node.
    for engine in [None, Some(PolicyEngine::Calico)] {
        let v = run(3, &r, engine);
        assert_eq!(v.node.len(), 1, "{:?}", v.node);
        let p = &v.node[0];
        assert_eq!(
            (p.reason, p.detail.as_str()),
            (NodeReason::TargetUnreachable, "node")
        );
        assert_eq!(p.hint(), Some(NODE_TARGET_HINT));
        let json = serde_json::to_value(p).unwrap();
        let hint = json["hint"].as_str().unwrap_or_default();
        assert!(hint.contains("host policy or firewall"), "{json}");
        assert!(hint.contains("uplink is not involved"), "{json}");
        assert!(v.pods.iter().all(
            |p| p.probes[1].node_wide && p.probes[1].hint.as_deref() == Some(NODE_TARGET_HINT)
        ));
    }
    // Another target failing node-wide: no such hint.
    let r = reports_to(
        "dns",
        &[&[OK], &[OK], &[OK]],
        &[&[TO, TO], &[TO, TO], &[TO, TO]],
    );
    let v = run(3, &r, None);
    assert_eq!(v.node[0].hint(), None);
    assert!(
        serde_json::to_value(&v.node[0])
            .unwrap()
            .get("hint")
            .is_none()
    );
}

#[test]
fn without_the_gateway_probe_a_node_wide_failure_still_forms() {
    let mut r = reports_to(
        "dns",
        &[&[OK], &[OK], &[OK]],
        &[&[TO, TO], &[TO, TO], &[TO, TO]],
    );
    for p in r.values_mut() {
        p.dests.retain(|d| d.target != "gateway");
    }
    let v = run(3, &r, None);
    assert_eq!(v.node.len(), 1);
    assert!(v.pods.iter().all(|p| !p.probes[0].is_pod_failure()));
}

#[test]
fn a_skipped_pod_is_said_so_and_its_wiring_still_judged() {
    let mut r = reports_to("dns", &[&[OK], &[OK]], &[&[OK], &[OK]]);
    if let Some(p) = r.get_mut("cali0") {
        p.dests.clear();
        p.pod_side = None;
        p.skipped = Some(ProbeSkip::Annotation);
    }
    let mut h = host(2);
    // Its route gone: still a problem, skipped or not.
    h = HostState::from_dump(
        crate::host::HostDump {
            links: h.links().cloned().collect(),
            routes: Vec::new(),
            ..crate::host::HostDump::default()
        },
        HashMap::new(),
    );
    let view = ProbeView {
        reports: &r,
        failure_threshold: 2,
        policy_engine: None,
    };
    let v = evaluate(&Cni::Calico, &pods(2), &h, Some(&view));
    assert_eq!(v.pods[0].probes_skipped, Some(ProbeSkip::Annotation));
    assert!(v.pods[0].probes.is_empty());
    assert!(
        v.pods[0]
            .problems
            .iter()
            .any(|p| p.reason == PodReason::RouteMissing)
    );
    let json = serde_json::to_value(&v.pods[0]).unwrap();
    assert_eq!(json["probes_skipped"], "annotation", "{json}");
    assert_eq!(v.pods[1].probes_skipped, None);
}
