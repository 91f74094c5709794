use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::model::{BlockReason, ExpectedPod, NodeReason, PodId, PodReason, SourceName};
use crate::verdict::{BlockProblem, NodeProblem, PodProblem, PodVerdict};

/// A pod verdict with these problems (Kubernetes identity `ns/name`).
pub(crate) fn pod(name: &str, ip: &str, problems: &[PodReason]) -> PodVerdict {
    let ip: IpAddr = ip.parse().unwrap();
    PodVerdict {
        pod: ExpectedPod {
            id: PodId {
                namespace: "shop".into(),
                name: name.into(),
            },
            interface: format!("cali{name}"),
            ips: vec![ip],
            in_grace: false,
            uid: format!("uid-{name}"),
            meta: Default::default(),
        },
        link: None,
        problems: problems
            .iter()
            .map(|r| PodProblem {
                reason: *r,
                ip: Some(ip),
                detail: format!("{} for {ip}", r.as_str()),
            })
            .collect(),
        pod_side: None,
        probes: Vec::new(),
        gateways: Vec::new(),
        probes_skipped: None,
    }
}

pub(crate) fn snap(pods: Vec<PodVerdict>, node: &[NodeReason]) -> Snapshot {
    let mut s = Snapshot::initial("node-1".into(), SourceName::Kubernetes);
    s.synced = true;
    s.verdicts.pods = pods;
    s.verdicts.node = node
        .iter()
        .map(|r| NodeProblem {
            reason: *r,
            detail: "ipv4".into(),
        })
        .collect();
    s
}

#[test]
fn nothing_before_the_first_sync_then_healthy() {
    let mut s = snap(vec![pod("a", "10.244.0.2", &[])], &[]);
    s.synced = false;
    assert_eq!(desired(&s), None);
    s.synced = true;
    let d = desired(&s).unwrap();
    assert!(!d.problem);
    assert_eq!(d.reason, HEALTHY_REASON);
    assert_eq!(d.message, "all 1 pods on the node are wired");
}

#[test]
fn dominant_reason_is_the_most_common_pod_problem_and_the_message_counts() {
    let s = snap(
        vec![
            pod("a", "10.244.0.2", &[PodReason::RouteMissing]),
            pod("b", "10.244.0.3", &[PodReason::RouteMissing]),
            pod("c", "10.244.0.4", &[PodReason::ProxyArpDisabled]),
            pod("d", "10.244.0.5", &[]),
        ],
        &[],
    );
    let d = desired(&s).unwrap();
    assert!(d.problem);
    assert_eq!(d.reason, "PodRouteMissing");
    assert_eq!(
        d.message,
        "3 of 4 pods have problems; PodRouteMissing: 2 (shop/a (route_missing for 10.244.0.2), \
         shop/b (route_missing for 10.244.0.3)); ProxyArpDisabled: 1 (shop/c \
         (proxy_arp_disabled for 10.244.0.4))"
    );
}

#[test]
fn node_wide_causes_dominate_and_leftovers_do_not() {
    let s = snap(
        vec![pod("a", "10.244.0.2", &[PodReason::RouteMissing])],
        &[NodeReason::CalicoNodeStale, NodeReason::OrphanedRoute],
    );
    assert_eq!(desired(&s).unwrap().reason, "CalicoNodeStale");
    let s = snap(
        vec![pod("a", "10.244.0.2", &[PodReason::RouteMissing])],
        &[NodeReason::OrphanedRoute],
    );
    assert_eq!(desired(&s).unwrap().reason, "PodRouteMissing");
    let s = snap(vec![], &[NodeReason::OrphanedInterface]);
    assert_eq!(desired(&s).unwrap().reason, "OrphanedInterface");
    let mut s = snap(vec![pod("a", "10.244.0.2", &[])], &[]);
    std::sync::Arc::make_mut(&mut s.remote_blocks).push(BlockProblem {
        reason: BlockReason::RemoteBlockRouteMissing,
        block: "10.244.9.0/26".parse().unwrap(),
        node: "node-9".into(),
        detail: "default route".into(),
    });
    let d = desired(&s).unwrap();
    assert_eq!(d.reason, "RemoteBlockRouteMissing");
    assert!(
        d.message.contains("10.244.9.0/26 of node-9"),
        "{}",
        d.message
    );
}

/// Every reason of every enum can be the condition's reason, as its CamelCase name.
#[test]
fn every_reason_maps_to_the_condition() {
    for r in PodReason::ALL {
        let s = snap(vec![pod("a", "10.244.0.2", &[*r])], &[]);
        assert_eq!(desired(&s).unwrap().reason, pod_reason(*r));
    }
    for r in NodeReason::ALL {
        let s = snap(vec![], &[*r]);
        assert_eq!(desired(&s).unwrap().reason, node_reason(*r));
    }
    for r in BlockReason::ALL {
        let mut s = snap(vec![], &[]);
        std::sync::Arc::make_mut(&mut s.remote_blocks).push(BlockProblem {
            reason: *r,
            block: "10.244.9.0/26".parse().unwrap(),
            node: "n".into(),
            detail: String::new(),
        });
        assert_eq!(desired(&s).unwrap().reason, block_reason(*r));
    }
}

#[test]
fn message_is_bounded_with_many_pods() {
    let pods = (0..5000)
        .map(|i| {
            pod(
                &format!("p{i}-{}", "x".repeat(200)),
                &format!("10.244.{}.{}", i / 250, i % 250 + 1),
                PodReason::ALL,
            )
        })
        .collect();
    let d = desired(&snap(pods, &NodeReason::ALL[1..])).unwrap();
    assert!(d.message.len() <= MAX_MESSAGE, "{}", d.message.len());
    assert!(d.message.starts_with("5000 of 5000 pods have problems"));
    assert!(d.message.ends_with('…'));
    // Cut at a character boundary.
    assert_eq!(truncate("ééé".into(), 5), "é…");
}

#[test]
fn writes_on_change_and_heartbeat_and_transition_only_on_status_flip() {
    let hb = Duration::from_secs(300);
    let t0 = UNIX_EPOCH + Duration::from_secs(1_796_090_559);
    let ok = Desired {
        problem: false,
        reason: HEALTHY_REASON,
        message: "all 3 pods on the node are wired".into(),
    };
    let first = plan(None, &ok, t0, hb).unwrap();
    let c = &first.body["status"]["conditions"][0];
    assert_eq!(c["type"], CONDITION_TYPE);
    assert_eq!(c["status"], "False");
    assert_eq!(c["lastTransitionTime"], "2026-12-01T02:02:39Z");
    assert_eq!(c["lastHeartbeatTime"], "2026-12-01T02:02:39Z");
    assert_eq!(
        first.body["status"]["conditions"].as_array().unwrap().len(),
        1
    );
    let w = first.written;
    // Nothing changed, heartbeat not due: no write.
    assert_eq!(plan(Some(&w), &ok, t0 + Duration::from_secs(299), hb), None);
    // Heartbeat: only lastHeartbeatTime moves.
    let beat = plan(Some(&w), &ok, t0 + hb, hb).unwrap();
    let c = &beat.body["status"]["conditions"][0];
    assert_eq!(c["lastTransitionTime"], "2026-12-01T02:02:39Z");
    assert_eq!(c["lastHeartbeatTime"], "2026-12-01T02:07:39Z");
    // A message change alone waits for MESSAGE_REFRESH after the last write, then is written
    // without a transition.
    let more = Desired {
        message: "all 4 pods on the node are wired".into(),
        ..ok.clone()
    };
    let soon = t0 + hb + MESSAGE_REFRESH - Duration::from_secs(1);
    assert_eq!(plan(Some(&beat.written), &more, soon, hb), None);
    let p = plan(Some(&beat.written), &more, t0 + hb + MESSAGE_REFRESH, hb).unwrap();
    assert_eq!(p.written.message, more.message);
    assert_eq!(p.written.last_transition, "2026-12-01T02:02:39Z");
    // The status flips: a transition.
    let bad = Desired {
        problem: true,
        reason: "PodRouteMissing",
        message: "1 of 4 pods have problems".into(),
    };
    let t = t0 + Duration::from_secs(400);
    let p = plan(Some(&p.written), &bad, t, hb).unwrap();
    assert_eq!(p.body["status"]["conditions"][0]["status"], "True");
    assert_eq!(p.written.last_transition, "2026-12-01T02:09:19Z");
    // A clock that went backwards is a due heartbeat, not a panic.
    assert!(plan(Some(&p.written), &bad, t0, hb).is_some());
}

#[test]
fn read_back_keeps_the_transition_of_a_previous_run() {
    let node = serde_json::json!({"status": {"conditions": [
        {"type": "Ready", "status": "True"},
        {"type": CONDITION_TYPE, "status": "True", "reason": "PodRouteMissing",
         "message": "m", "lastTransitionTime": "2026-11-30T00:00:00Z"},
    ]}});
    let w = Written::from_node(&node).unwrap();
    assert!(w.problem && w.heartbeat.is_none());
    let want = Desired {
        problem: true,
        reason: "PodRouteMissing",
        message: "m".into(),
    };
    // Same status after a restart: written once (no heartbeat yet), transition kept.
    let p = plan(
        Some(&w),
        &want,
        UNIX_EPOCH + Duration::from_secs(1_796_090_559),
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(p.written.last_transition, "2026-11-30T00:00:00Z");
    assert_eq!(Written::from_node(&serde_json::json!({"status": {}})), None);
    assert_eq!(Written::from_node(&serde_json::json!("garbage")), None);
}
