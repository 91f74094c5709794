use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::fixtures::{route, veth};
use crate::host::{HostDump, HostState};
use crate::pods::{ExpectedPod, PodId};
use crate::probe::outcome::{Observation, ProbeResult};
use crate::probe::report::{DestState, PodProbes, PodSide};
use crate::probe::target::{Direction, Protocol};

const OUTSIDE: &str = "icmp:198.51.100.1";

pub(super) fn pods(n: usize) -> Vec<ExpectedPod> {
    (0..n)
        .map(|i| ExpectedPod {
            id: PodId {
                namespace: "ns".into(),
                name: format!("p{i}"),
            },
            interface: format!("cali{i}"),
            ips: vec![format!("10.244.0.{}", i + 2).parse().unwrap()],
            in_grace: false,
            meta: Default::default(),
            uid: String::new(),
        })
        .collect()
}

pub(super) fn host(n: usize) -> HostState {
    HostState::from_dump(
        HostDump {
            links: (0..n)
                .map(|i| veth(10 + i as u32, &format!("cali{i}"), i as i32))
                .collect(),
            routes: (0..n)
                .map(|i| route(&format!("10.244.0.{}/32", i + 2), Some(10 + i as u32)))
                .collect(),
            ..HostDump::default()
        },
        HashMap::new(),
    )
}

fn dest(target: &str, results: &[ProbeResult]) -> DestState {
    let mut d = DestState::new(
        target,
        Protocol::Icmp,
        Direction::PodToTarget,
        "198.51.100.1".parse().unwrap(),
        None,
    );
    for r in results {
        d.record(&observation(*r));
    }
    d
}

pub(super) const OK: ProbeResult = ProbeResult::Ok;
pub(super) const TO: ProbeResult = ProbeResult::Timeout;

fn healthy_side() -> PodSide {
    PodSide {
        interface_up: true,
        default_route_v4: Some(true),
        default_route_v6: None,
        mtu: None,
    }
}

fn observation(r: ProbeResult) -> Observation {
    if r.is_failure() {
        Observation::failed(r, "x")
    } else {
        Observation::answered(r, Duration::from_micros(100))
    }
}

/// Reports where pod i's gateway has `gw[i]` and the outside target `out[i]`, probed in rounds
/// as the prober does: round k of every pod before round k + 1 of any.
fn reports(gw: &[&[ProbeResult]], out: &[&[ProbeResult]]) -> HashMap<String, PodProbes> {
    reports_to(OUTSIDE, gw, out)
}

/// As [`reports`], with the second target named `target`.
pub(super) fn reports_to(
    target: &str,
    gw: &[&[ProbeResult]],
    out: &[&[ProbeResult]],
) -> HashMap<String, PodProbes> {
    let mut r: Vec<PodProbes> = (0..gw.len())
        .map(|i| PodProbes {
            interface: format!("cali{i}"),
            pod_side: Some(healthy_side()),
            dests: vec![dest("gateway", &[]), dest(target, &[])],
            error: None,
            unanswered: Vec::new(),
            unanswered_dropped: 0,
            client_hint: None,
            path_mtu: Vec::new(),
            skipped: None,
        })
        .collect();
    let rounds = gw.iter().chain(out).map(|h| h.len()).max().unwrap_or(0);
    for k in 0..rounds {
        for (i, p) in r.iter_mut().enumerate() {
            for (d, history) in p.dests.iter_mut().zip([gw[i], out[i]]) {
                if let Some(res) = history.get(k) {
                    d.record(&observation(*res));
                }
            }
        }
    }
    r.into_iter().map(|p| (p.interface.clone(), p)).collect()
}

fn run(n: usize, host: &HostState, reports: &HashMap<String, PodProbes>) -> Verdicts {
    let view = ProbeView {
        reports,
        failure_threshold: 2,
        policy_engine: None,
    };
    evaluate(&Cni::Calico, &pods(n), host, Some(&view))
}

fn pod_failures(v: &Verdicts) -> Vec<(String, String, Option<&'static str>)> {
    v.pods
        .iter()
        .flat_map(|p| {
            p.probes
                .iter()
                .filter(|t| t.is_pod_failure())
                .map(|t| (p.pod.interface.clone(), t.state.target.clone(), t.diagnosis))
        })
        .collect()
}

#[test]
fn one_failure_is_not_failing_two_are() {
    let r = reports(&[&[OK], &[OK]], &[&[TO], &[OK]]);
    assert!(pod_failures(&run(2, &host(2), &r)).is_empty());
    let r = reports(&[&[OK], &[OK]], &[&[TO, TO], &[OK, OK]]);
    let v = run(2, &host(2), &r);
    assert_eq!(
        pod_failures(&v),
        vec![("cali0".into(), OUTSIDE.into(), None)]
    );
    assert!(v.node.is_empty());
}

#[test]
fn refused_is_not_a_failure() {
    let r = reports(&[&[OK]], &[&[ProbeResult::Refused, ProbeResult::Refused]]);
    assert!(pod_failures(&run(1, &host(1), &r)).is_empty());
}

#[test]
fn a_target_failing_everywhere_is_one_node_problem() {
    let r = reports(&[&[OK], &[OK], &[OK]], &[&[TO, TO], &[TO, TO], &[TO, TO]]);
    let v = run(3, &host(3), &r);
    assert!(
        pod_failures(&v).is_empty(),
        "no pod alarms: {:?}",
        pod_failures(&v)
    );
    assert_eq!(v.node.len(), 1);
    assert_eq!(v.node[0].reason, NodeReason::TargetUnreachable);
    assert_eq!(v.node[0].detail, OUTSIDE);
    assert!(
        v.pods
            .iter()
            .all(|p| p.probes[1].failing && p.probes[1].node_wide)
    );
    assert!(
        v.pods
            .iter()
            .all(|p| p.probes[1].diagnosis == Some("target_unreachable"))
    );
}

#[test]
fn node_wide_needs_a_quorum_two_pods_and_answering_gateways() {
    // Half the pods still reach it: below the quorum, pod alarms, no node problem.
    let r = reports(
        &[&[OK], &[OK], &[OK], &[OK]],
        &[&[TO, TO], &[TO, TO], &[OK], &[OK]],
    );
    let v = run(4, &host(4), &r);
    assert!(v.node.is_empty());
    assert_eq!(pod_failures(&v).len(), 2);
    // Gateways fail too: the pods are cut off, not the target.
    let r = reports(&[&[TO, TO], &[TO, TO]], &[&[TO, TO], &[TO, TO]]);
    let v = run(2, &host(2), &r);
    assert!(v.node.is_empty());
    assert!(
        pod_failures(&v)
            .iter()
            .any(|(_, t, d)| t == OUTSIDE && *d == Some("gateway_unreachable"))
    );
    // A single pod cannot tell the node from itself.
    let r = reports(&[&[OK]], &[&[TO, TO]]);
    assert!(run(1, &host(1), &r).node.is_empty());
}

#[test]
fn one_pod_answering_for_the_target_cannot_hide_a_node_wide_failure() {
    // The third pod "reaches" the target (its address on the pod's own loopback, or a forged
    // reply): two of three still make the quorum.
    let r = reports(&[&[OK], &[OK], &[OK]], &[&[TO, TO], &[TO, TO], &[OK]]);
    let v = run(3, &host(3), &r);
    assert_eq!(v.node.len(), 1, "{:?}", v.node);
    assert_eq!(v.node[0].reason, NodeReason::TargetUnreachable);
    assert!(pod_failures(&v).is_empty(), "{:?}", pod_failures(&v));
    // Pods whose gateway fails do not count either way: 2 of the 2 that can tell.
    let r = reports(
        &[&[OK], &[OK], &[TO, TO]],
        &[&[TO, TO], &[TO, TO], &[TO, TO]],
    );
    assert_eq!(run(3, &host(3), &r).node.len(), 1);
    // Two pods answering among four: no quorum.
    let r = reports(
        &[&[OK], &[OK], &[OK], &[OK]],
        &[&[TO, TO], &[OK], &[TO, TO], &[OK]],
    );
    assert!(run(4, &host(4), &r).node.is_empty());
}

#[test]
fn failures_are_explained_by_the_pods_wiring() {
    let mut h = host(2);
    h.apply(&crate::host::KernelEvent::RouteRemoved(route(
        "10.244.0.2/32",
        Some(10),
    )));
    let r = reports(&[&[TO, TO], &[OK]], &[&[TO, TO], &[OK]]);
    let v = run(2, &h, &r);
    assert_eq!(
        pod_failures(&v),
        vec![
            ("cali0".into(), "gateway".into(), Some("route_missing")),
            ("cali0".into(), OUTSIDE.into(), Some("route_missing")),
        ]
    );
}

#[test]
fn pod_side_problems_become_wiring_reasons() {
    let mut r = reports(&[&[OK], &[OK]], &[&[OK], &[OK]]);
    r.get_mut("cali1").unwrap().pod_side = Some(PodSide {
        interface_up: true,
        default_route_v4: Some(false),
        default_route_v6: None,
        mtu: None,
    });
    r.get_mut("cali0").unwrap().pod_side = Some(PodSide {
        interface_up: false,
        default_route_v4: Some(true),
        default_route_v6: Some(false),
        mtu: None,
    });
    let v = run(2, &host(2), &r);
    let reasons = |i: usize| -> Vec<&str> {
        v.pods[i]
            .problems
            .iter()
            .map(|p| p.reason.as_str())
            .collect()
    };
    // Pod 0 has no IPv6 address: only its interface counts.
    assert_eq!(reasons(0), ["pod_interface_down"]);
    assert_eq!(reasons(1), ["pod_default_route_missing"]);
    assert_eq!(v.pods_with_problems(), 2);
}

#[test]
fn host_side_down_is_not_said_again_as_the_pods_lost_carrier() {
    let mut r = reports(&[&[OK]], &[&[OK]]);
    r.get_mut("cali0").unwrap().pod_side = Some(PodSide {
        interface_up: false,
        default_route_v4: Some(true),
        default_route_v6: None,
        mtu: None,
    });
    let mut h = host(1);
    let mut down = veth(10, "cali0", 0);
    down.admin_up = false;
    h.apply(&crate::host::KernelEvent::LinkChanged(down));
    let v = run(1, &h, &r);
    let reasons: Vec<&str> = v.pods[0]
        .problems
        .iter()
        .map(|p| p.reason.as_str())
        .collect();
    assert!(reasons.contains(&"interface_down"), "{reasons:?}");
    assert!(!reasons.contains(&"pod_interface_down"), "{reasons:?}");
}

#[test]
fn the_pods_eth0_down_is_said_beside_the_host_sides_lost_carrier() {
    // The pod set its eth0 down: the host side is still administratively up, only without
    // carrier. The pod side is the cause and must be named.
    let mut r = reports(&[&[OK]], &[&[OK]]);
    r.get_mut("cali0").unwrap().pod_side = Some(PodSide {
        interface_up: false,
        default_route_v4: Some(true),
        default_route_v6: None,
        mtu: None,
    });
    let mut h = host(1);
    let mut no_carrier = veth(10, "cali0", 0);
    no_carrier.oper = crate::host::OperState::LowerLayerDown;
    h.apply(&crate::host::KernelEvent::LinkChanged(no_carrier));
    let v = run(1, &h, &r);
    let reasons: Vec<&str> = v.pods[0]
        .problems
        .iter()
        .map(|p| p.reason.as_str())
        .collect();
    assert!(reasons.contains(&"interface_down"), "{reasons:?}");
    assert!(reasons.contains(&"pod_interface_down"), "{reasons:?}");
}

#[test]
fn forwarding_off_explains_targets_beyond_the_node() {
    use crate::host::{Family, Netconf, NetconfScope};
    let mut h = host(1);
    h.apply(&crate::host::KernelEvent::NetconfChanged(Netconf {
        family: Family::Ipv4,
        scope: NetconfScope::All,
        forwarding: Some(false),
        proxy_neigh: None,
    }));
    // Pods lose even their gateway (no proxy ARP without forwarding): no pod alarms.
    let r = reports(&[&[TO, TO]], &[&[TO, TO]]);
    let v = run(1, &h, &r);
    assert!(pod_failures(&v).is_empty(), "{:?}", pod_failures(&v));
    assert!(v.pods[0].probes.iter().all(|t| t.failing && t.node_wide));
    assert!(
        v.pods[0]
            .probes
            .iter()
            .all(|t| t.diagnosis == Some("forwarding_disabled"))
    );
    assert_eq!(v.node.len(), 1);
}

#[test]
fn pods_without_reports_have_no_probe_verdicts() {
    let v = run(2, &host(2), &HashMap::new());
    assert!(
        v.pods
            .iter()
            .all(|p| p.probes.is_empty() && p.pod_side.is_none())
    );
    assert!(v.pods.iter().all(|p| p.link.is_some()));
}

/// Probe `target` of pod `iface` again, now (later stamps than everything before).
fn probe_again(r: &mut HashMap<String, PodProbes>, iface: &str, results: &[ProbeResult]) {
    let d = r
        .get_mut(iface)
        .unwrap()
        .dests
        .iter_mut()
        .find(|d| d.target == OUTSIDE)
        .unwrap();
    for res in results {
        d.record(&observation(*res));
    }
}

/// Regression (issue 11, fault matrix): a target going down for every pod used to raise one
/// pod alarm per pod until the last pod had failed it; now the early failures wait (pending)
/// until the node-level verdict forms, or until another pod reaches the target.
#[test]
fn a_target_failing_before_the_others_probed_it_again_is_pending() {
    let mut r = reports(&[&[OK], &[OK], &[OK]], &[&[OK], &[OK], &[OK]]);
    probe_again(&mut r, "cali0", &[TO, TO]);
    let v = run(3, &host(3), &r);
    assert!(pod_failures(&v).is_empty(), "{:?}", pod_failures(&v));
    assert!(v.pods[0].probes[1].failing && v.pods[0].probes[1].pending);
    assert!(v.node.is_empty());
    // Another pod fails once: still undecided.
    probe_again(&mut r, "cali1", &[TO]);
    let v = run(3, &host(3), &r);
    assert!(pod_failures(&v).is_empty(), "{:?}", pod_failures(&v));
    // Every pod fails it: one node problem, never a pod alarm on the way.
    probe_again(&mut r, "cali1", &[TO]);
    probe_again(&mut r, "cali2", &[TO, TO]);
    let v = run(3, &host(3), &r);
    assert!(pod_failures(&v).is_empty(), "{:?}", pod_failures(&v));
    assert_eq!(v.node.len(), 1);
    assert_eq!(v.node[0].reason, NodeReason::TargetUnreachable);
}

#[test]
fn a_target_another_pod_reached_since_is_a_pod_failure_at_once() {
    let mut r = reports(&[&[OK], &[OK]], &[&[OK], &[OK]]);
    probe_again(&mut r, "cali0", &[TO, TO]);
    let d = r
        .get_mut("cali1")
        .unwrap()
        .dests
        .iter_mut()
        .find(|d| d.target == OUTSIDE)
        .unwrap();
    d.record(&observation(OK));
    let v = run(2, &host(2), &r);
    assert_eq!(
        pod_failures(&v),
        vec![("cali0".into(), OUTSIDE.into(), None)]
    );
    assert!(!v.pods[0].probes[1].pending);
}

#[test]
fn a_pod_not_yet_reprobed_after_the_target_came_back_is_pending() {
    let mut r = reports(&[&[OK], &[OK], &[OK]], &[&[TO, TO], &[TO, TO], &[TO, TO]]);
    assert_eq!(run(3, &host(3), &r).node.len(), 1);
    // The target is back: two pods reach it, the third has not probed it since.
    for iface in ["cali1", "cali2"] {
        let d = r
            .get_mut(iface)
            .unwrap()
            .dests
            .iter_mut()
            .find(|d| d.target == OUTSIDE)
            .unwrap();
        d.record(&observation(OK));
    }
    let v = run(3, &host(3), &r);
    assert!(pod_failures(&v).is_empty(), "{:?}", pod_failures(&v));
    assert!(v.pods[0].probes[1].pending);
    assert!(v.node.is_empty());
}
