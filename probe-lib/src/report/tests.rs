use super::*;
use crate::model::{ExpectedPod, NodeReason, PodId, SourceName};
use crate::verdict::{NodeProblem, PodLink, PodProblem};

fn pod(ns: &str, name: &str, iface: &str, problems: Vec<PodProblem>) -> PodVerdict {
    PodVerdict {
        pod: ExpectedPod {
            id: PodId {
                namespace: ns.into(),
                name: name.into(),
            },
            interface: iface.into(),
            ips: vec!["10.244.0.7".parse().unwrap()],
            in_grace: false,
            meta: Default::default(),
            uid: String::new(),
        },
        link: Some(PodLink {
            index: 7,
            netnsid: Some(1),
            peer_index: Some(2),
            admin_up: true,
        }),
        problems,
        pod_side: None,
        probes: Vec::new(),
        gateways: Vec::new(),
        probes_skipped: None,
    }
}

fn route_missing() -> Vec<PodProblem> {
    vec![PodProblem {
        reason: PodReason::RouteMissing,
        ip: Some("10.244.0.7".parse().unwrap()),
        detail: "no route".into(),
    }]
}

fn snapshot(pods: Vec<PodVerdict>) -> Snapshot {
    let mut s = Snapshot::initial("node-1".into(), SourceName::Kubernetes);
    s.synced = true;
    s.verdicts.pods = pods;
    s
}

#[test]
fn problems_first_then_by_name() {
    let s = snapshot(vec![
        pod("a", "healthy", "cali1", vec![]),
        pod("z", "broken", "cali2", route_missing()),
        pod("b", "also-healthy", "cali3", vec![]),
    ]);
    let r = CheckReport::from_snapshot(&s);
    let names: Vec<String> = r.pods.iter().map(PodRow::display_name).collect();
    assert_eq!(names, ["z/broken", "a/healthy", "b/also-healthy"]);
    assert!(!r.healthy);
    assert_eq!(r.pods[0].route, "route_missing");
    assert_eq!(r.pods[0].verdict, "route_missing");
    assert_eq!(r.pods[1].route, "ok");
    assert_eq!(r.pods[1].verdict, "ok");
}

#[test]
fn healthy_needs_sync_and_no_node_problem() {
    let mut s = snapshot(vec![pod("a", "p", "cali1", vec![])]);
    assert!(CheckReport::from_snapshot(&s).healthy);
    s.verdicts.node.push(NodeProblem {
        reason: NodeReason::ForwardingDisabled,
        detail: "ipv4".into(),
    });
    assert!(!CheckReport::from_snapshot(&s).healthy);
    s.verdicts.node.clear();
    s.synced = false;
    assert!(!CheckReport::from_snapshot(&s).healthy);
}

#[test]
fn node_mode_rows_are_named_by_interface() {
    let s = snapshot(vec![pod("", "", "cali9", vec![])]);
    assert_eq!(
        CheckReport::from_snapshot(&s).pods[0].display_name(),
        "cali9"
    );
}

#[test]
fn json_schema_is_stable() {
    let s = snapshot(vec![pod("ns", "p", "cali1", route_missing())]);
    let v = serde_json::to_value(CheckReport::from_snapshot(&s)).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["node"], "node-1");
    assert_eq!(v["pod_source"], "kubernetes");
    assert_eq!(v["healthy"], false);
    let p = &v["pods"][0];
    for key in [
        "namespace",
        "pod",
        "interface",
        "ips",
        "route",
        "probes",
        "verdict",
        "reasons",
        "details",
    ] {
        assert!(p.get(key).is_some(), "pod row lacks {key}: {p}");
    }
    assert_eq!(p["reasons"][0], "route_missing");
}

#[test]
fn table_names_pod_and_reason_and_cleans_control_characters() {
    let s = snapshot(vec![
        pod("ns", "ok-pod", "cali1", vec![]),
        pod("ns", "bad\u{1b}[31mpod", "cali2", route_missing()),
    ]);
    let t = table(&CheckReport::from_snapshot(&s));
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].contains("PROBLEMS: 1 of 2 pods"), "{t}");
    assert!(lines[1].starts_with("POD "), "{t}");
    assert!(lines[2].starts_with("ns/bad?[31mpod "), "{t}");
    assert!(lines[2].contains("route_missing"), "{t}");
    assert!(lines[3].starts_with("ns/ok-pod "), "{t}");
    assert!(!t.contains('\u{1b}'));
}

#[test]
fn status_page_escapes_hostile_strings_and_lists_problems_first() {
    let s = snapshot(vec![
        pod("ns", "fine", "cali1", vec![]),
        pod("ns", "<script>alert(1)</script>", "cali2", route_missing()),
    ]);
    let page = status_page(&s);
    assert!(!page.contains("<script>"), "{page}");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("http-equiv=\"refresh\""));
    assert!(!page.contains("src="), "no external assets");
    let bad = page.find("data-pod=\"ns/&lt;script").unwrap();
    let good = page.find("data-pod=\"ns/fine\"").unwrap();
    assert!(bad < good);
    assert_eq!(html::escape("a\"b'c&\u{7}"), "a&quot;b&#39;c&amp;");
}

#[test]
fn verdict_names_failing_probes_once() {
    let reasons = [
        "route_missing",
        "probe_failing:gateway",
        "probe_failing:node",
    ]
    .map(String::from);
    assert_eq!(verdict(&reasons), "route_missing,probe_failing");
    assert_eq!(verdict(&[]), "ok");
}

#[test]
fn an_unreachable_peer_is_a_node_row() {
    use crate::model::BlockReason;
    use crate::verdict::{PeerProblem, PeerStatus};
    let mut s = snapshot(vec![pod("a", "p", "cali1", vec![])]);
    s.peers = Some(PeerStatus::default());
    assert!(CheckReport::from_snapshot(&s).healthy, "peers all answer");
    s.peers = Some(PeerStatus {
        unreachable: vec![PeerProblem {
            peer: "node-b".into(),
            address: "10.244.200.1".parse().unwrap(),
            consecutive_failures: 2,
            explained_by: Some(BlockReason::RemoteBlockRouteMissing),
        }],
        ..PeerStatus::default()
    });
    let r = CheckReport::from_snapshot(&s);
    assert!(!r.healthy);
    assert_eq!(r.node_problems[0].reason, "peer_unreachable");
    assert_eq!(
        r.node_problems[0].detail,
        "node node-b at 10.244.200.1: 2 samples failed in a row (remote_block_route_missing)"
    );
}
