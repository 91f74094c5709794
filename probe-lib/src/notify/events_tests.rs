use std::time::{Duration, Instant, UNIX_EPOCH};

use super::*;
use crate::model::{NodeReason, PodReason, SourceName};
use crate::notify::condition::tests::{pod, snap};
use crate::snapshot::Snapshot;

const T0: u64 = 1_796_090_559;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0 + secs)
}

fn creates(step: &Step) -> Vec<&Value> {
    step.writes
        .iter()
        .filter_map(|w| match w {
            Write::Create { body, .. } => Some(body),
            Write::Series { .. } => None,
        })
        .collect()
}

#[test]
fn node_mode_and_unsynced_snapshots_tell_nothing() {
    let mut s = snap(
        vec![pod("a", "10.244.0.2", &[PodReason::RouteMissing])],
        &[],
    );
    assert!(observe(&s).is_some());
    s.synced = false;
    assert_eq!(observe(&s), None);
    s.synced = true;
    s.pod_source = SourceName::Node;
    assert_eq!(observe(&s), None);
}

#[test]
fn one_warning_per_start_series_on_repeats_and_a_recovery() {
    let mono = Instant::now();
    let mut t = EventTracker::new("node-1", 25, 6);
    let broken = snap(
        vec![
            pod("a", "10.244.0.2", &[PodReason::RouteMissing]),
            pod("b", "10.244.0.3", &[]),
        ],
        &[],
    );
    let healthy = snap(
        vec![pod("a", "10.244.0.2", &[]), pod("b", "10.244.0.3", &[])],
        &[],
    );
    let s = t.step(&observe(&broken).unwrap(), at(0), mono);
    assert_eq!(s.dropped, 0);
    let c = creates(&s);
    assert_eq!(c.len(), 1);
    let e = c[0];
    assert_eq!(e["apiVersion"], "events.k8s.io/v1");
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["reason"], "PodRouteMissing");
    assert_eq!(e["action"], "Detected");
    assert_eq!(e["reportingController"], REPORTING_CONTROLLER);
    assert_eq!(e["reportingInstance"], "node-1");
    assert_eq!(e["eventTime"], "2026-12-01T02:02:39.000000Z");
    assert_eq!(e["metadata"]["namespace"], "shop");
    assert!(e["metadata"]["name"].as_str().unwrap().starts_with("a."));
    assert_eq!(
        e["regarding"],
        json!({"apiVersion": "v1", "kind": "Pod", "namespace": "shop", "name": "a", "uid": "uid-a"})
    );
    assert_eq!(
        e["note"],
        "10.244.0.2: route_missing for 10.244.0.2 (host interface \"calia\"); 1 of 2 pods on \
         the node are wired correctly"
    );
    let warning = e["metadata"]["name"].clone();
    // The same problem on every later snapshot (scrape, probe round): nothing new.
    for i in 1..10 {
        assert_eq!(
            t.step(&observe(&broken).unwrap(), at(i), mono),
            Step::default()
        );
    }
    // Cleared: one Normal.
    let s = t.step(&observe(&healthy).unwrap(), at(20), mono);
    let c = creates(&s);
    assert_eq!((c.len(), s.writes.len()), (1, 1));
    assert_eq!(c[0]["type"], "Normal");
    assert_eq!(c[0]["reason"], "PodRouteMissingResolved");
    assert_eq!(c[0]["action"], "Recovered");
    // Flapping: series updates of the same two Events.
    let s = t.step(&observe(&broken).unwrap(), at(30), mono);
    assert_eq!(s.writes.len(), 1);
    let Write::Series { name, body, .. } = &s.writes[0] else {
        panic!("{s:?}")
    };
    assert_eq!(name, warning.as_str().unwrap());
    assert_eq!(body["series"]["count"], 2);
    assert_eq!(
        body["series"]["lastObservedTime"],
        "2026-12-01T02:03:09.000000Z"
    );
    t.step(&observe(&healthy).unwrap(), at(40), mono);
    let s = t.step(&observe(&broken).unwrap(), at(50), mono);
    let Write::Series { body, .. } = &s.writes[0] else {
        panic!("{s:?}")
    };
    assert_eq!(body["series"]["count"], 3);
    // Long after: a new Event.
    t.step(&observe(&healthy).unwrap(), at(60), mono);
    let late = 60 + SERIES_WINDOW.as_secs() + 1;
    let s = t.step(&observe(&broken).unwrap(), at(late), mono);
    assert_eq!(creates(&s).len(), 1, "{s:?}");
}

#[test]
fn node_problems_are_told_on_the_node_and_gone_pods_get_no_recovery() {
    let mono = Instant::now();
    let mut t = EventTracker::new("node-1", 25, 6);
    let s = snap(
        vec![pod("a", "10.244.0.2", &[PodReason::InterfaceMissing])],
        &[NodeReason::ForwardingDisabled],
    );
    let step = t.step(&observe(&s).unwrap(), at(0), mono);
    let c = creates(&step);
    assert_eq!(c.len(), 2);
    let node = c.iter().find(|e| e["regarding"]["kind"] == "Node").unwrap();
    assert_eq!(node["reason"], "ForwardingDisabled");
    assert_eq!(node["metadata"]["namespace"], "default");
    assert_eq!(
        node["regarding"],
        json!({"apiVersion": "v1", "kind": "Node", "name": "node-1", "uid": "node-1"})
    );
    // The pod is deleted and the node repaired: a recovery for the node only.
    let step = t.step(&observe(&snap(vec![], &[])).unwrap(), at(5), mono);
    let c = creates(&step);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["regarding"]["kind"], "Node");
    assert_eq!(t.tracked(), 1);
}

fn broken_pods(n: usize, healthy: &[usize]) -> Snapshot {
    let pods = (0..n)
        .map(|i| {
            let problems: &[PodReason] = if healthy.contains(&i) {
                &[]
            } else {
                &[PodReason::RouteMissing]
            };
            pod(
                &format!("p{i:03}"),
                &format!("10.244.{}.{}", i / 250, i % 250 + 1),
                problems,
            )
        })
        .collect();
    snap(pods, &[])
}

fn regarding_names(step: &Step) -> Vec<String> {
    creates(step)
        .iter()
        .map(|e| e["regarding"]["name"].as_str().unwrap().to_owned())
        .collect()
}

/// 200 problems at once: the burst now, the rest as tokens return, oldest first, never more
/// than the bucket allows; one that recovered before its turn is told neither way.
#[test]
fn the_rate_limit_holds_under_200_simultaneous_problems_and_the_rest_come_later() {
    let mono = Instant::now();
    let mut t = EventTracker::new("node-1", 25, 6);
    let bound = TokenBucket::new(25, 6);
    let s = t.step(&observe(&broken_pods(200, &[])).unwrap(), at(0), mono);
    assert_eq!((s.writes.len(), s.dropped, t.pending()), (25, 0, 175));
    // The writer steps again when the next token is there (6 a minute: in 10 s).
    assert!(!t.due(mono + Duration::from_secs(9)));
    assert!(t.due(mono + Duration::from_secs(10)));
    let mut told = regarding_names(&s);
    // p030 recovers before its turn: it leaves the queue, and no token is spent on it.
    let s = t.step(
        &observe(&broken_pods(200, &[30])).unwrap(),
        at(5),
        mono + Duration::from_secs(5),
    );
    assert_eq!((s, t.pending()), (Step::default(), 174));
    // Every 10 s a token (6 a minute), each to the oldest start still broken.
    let mut secs = 5;
    while t.pending() > 0 {
        secs += 10;
        let s = t.step(
            &observe(&broken_pods(200, &[30])).unwrap(),
            at(secs),
            mono + Duration::from_secs(secs),
        );
        assert_eq!(s.dropped, 0);
        assert!(s.writes.len() <= 1, "{s:?}");
        told.extend(regarding_names(&s));
        assert!(told.len() as u64 <= bound.max_over(Duration::from_secs(secs)));
        assert!(secs < 3600, "the queue does not drain");
    }
    let want: Vec<String> = (0..200)
        .filter(|i| *i != 30)
        .map(|i| format!("p{i:03}"))
        .collect();
    assert_eq!(told, want, "in the order they started, p030 never");
    // All clear: recoveries for what was told, over the limit dropped (not queued).
    let s = t.step(
        &observe(&broken_pods(200, &(0..200).collect::<Vec<_>>())).unwrap(),
        at(secs + 60),
        mono + Duration::from_secs(secs + 60),
    );
    assert_eq!((s.writes.len(), s.dropped, t.pending()), (6, 193, 0));
    assert!(
        creates(&s)
            .iter()
            .all(|e| e["type"] == "Normal" && e["regarding"]["name"] != "p030")
    );
}

/// The queue is bounded: beyond it a start is dropped, counted, and never told, nor its end.
#[test]
fn the_queue_of_held_back_starts_is_bounded() {
    let mono = Instant::now();
    let mut t = EventTracker::new("node-1", 25, 6);
    let s = t.step(&observe(&broken_pods(400, &[])).unwrap(), at(0), mono);
    let queued = MAX_PENDING;
    assert_eq!(
        (s.writes.len(), s.dropped, t.pending()),
        (25, 400 - 25 - queued as u64, queued)
    );
    // p399 (dropped) recovers: no Event; the queue is unchanged.
    let s = t.step(
        &observe(&broken_pods(400, &[399])).unwrap(),
        at(1),
        mono + Duration::from_secs(1),
    );
    assert_eq!((s, t.pending()), (Step::default(), queued));
}

#[test]
fn a_failed_write_is_forgotten_and_the_state_is_bounded() {
    let mono = Instant::now();
    let mut t = EventTracker::new("node-1", u32::MAX, 0);
    let broken = snap(
        vec![pod("a", "10.244.0.2", &[PodReason::RouteMissing])],
        &[],
    );
    let healthy = snap(vec![pod("a", "10.244.0.2", &[])], &[]);
    let s = t.step(&observe(&broken).unwrap(), at(0), mono);
    t.failed(&s.writes[0]);
    t.step(&observe(&healthy).unwrap(), at(1), mono);
    // The Warning never made it: the next start creates one instead of patching it.
    let s = t.step(&observe(&broken).unwrap(), at(2), mono);
    assert_eq!(creates(&s).len(), 1);

    let many = (0..MAX_TRACKED + 10)
        .map(|i| {
            pod(
                &format!("p{i}"),
                &format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256),
                &[PodReason::RouteMissing],
            )
        })
        .collect();
    let s = t.step(&observe(&snap(many, &[])).unwrap(), at(3), mono);
    assert_eq!(t.tracked(), MAX_TRACKED);
    assert_eq!(s.dropped, 10);
}

/// A pod stuck connecting to a vanished pod IP: a Warning on the client Pod, not the node
/// condition; other classes of unanswered connects are told elsewhere or not at all.
#[test]
fn connects_to_a_vanished_pod_ip_warn_the_client_pod() {
    use crate::model::{ConnectClass, PodId};
    use crate::verdict::ConnectVerdict;
    let mono = Instant::now();
    let connect = |class: ConnectClass| ConnectVerdict {
        pod: PodId {
            namespace: "shop".into(),
            name: "a".into(),
        },
        interface: "calia".into(),
        destination: "10.244.3.7:8000".parse().unwrap(),
        class,
        owner: None,
        sockets: 2,
        retransmits: 3,
        rounds: 4,
        diagnosis: "no pod has this IP".into(),
        client: None,
    };
    for class in ConnectClass::ALL {
        let mut s = snap(vec![pod("a", "10.244.0.2", &[])], &[]);
        s.unanswered_connects = vec![connect(*class)];
        assert!(!crate::notify::condition::desired(&s).unwrap().problem);
        let mut t = EventTracker::new("node-1", 25, 6);
        let step = t.step(&observe(&s).unwrap(), at(0), mono);
        if *class != ConnectClass::VanishedPodIp {
            assert_eq!(step, Step::default(), "{class:?}");
            continue;
        }
        let c = creates(&step);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0]["type"], "Warning");
        assert_eq!(c[0]["reason"], "ConnectsToVanishedPodIP");
        assert_eq!(
            c[0]["regarding"],
            json!({"apiVersion": "v1", "kind": "Pod", "namespace": "shop", "name": "a", "uid": "uid-a"})
        );
        assert_eq!(
            c[0]["note"],
            "connects to 10.244.3.7:8000 unanswered; that IP belongs to no pod (4 rounds): no \
             pod has this IP"
        );
        // The client gave up on the address: a recovery.
        s.unanswered_connects.clear();
        let step = t.step(&observe(&s).unwrap(), at(10), mono);
        assert_eq!(
            creates(&step)[0]["reason"],
            "ConnectsToVanishedPodIPResolved"
        );
    }
}
