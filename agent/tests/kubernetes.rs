//! The real agent with its pods from a Kubernetes API double (list, watch, bookmarks, 410 Gone,
//! errors, stalls, outages), inside a simulated node.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use podnet_kube_double::{Outage, PodBuilder, malformed};
use podnet_testbed::agent::Agent;
use podnet_testbed::cluster::{Cluster, NODE, api_pod};
use podnet_testbed::exposition::Samples;
use podnet_testbed::simnode::{PodSpec, SimNode};

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");

const WAIT: Duration = Duration::from_secs(60);

/// The Kubernetes-mode bed with the agent's route checks only.
fn agent(c: &Cluster, extra: &[&str]) -> Agent {
    let mut args = vec!["--no-probes"];
    args.extend_from_slice(extra);
    c.agent(AGENT.as_ref(), &args).unwrap()
}

fn names(node: &SimNode) -> BTreeSet<String> {
    node.pods()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect()
}

fn wait_listed(agent: &Agent, want: &BTreeSet<String>) {
    let deadline = Instant::now() + WAIT;
    while agent.listed_pods().unwrap() != *want {
        assert!(
            Instant::now() < deadline,
            "pods {:?} != {want:?}\n{}",
            agent.listed_pods().unwrap(),
            agent.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn restarts(m: &Samples, reason: &str) -> f64 {
    m.value_with("podnet_kube_watch_restarts_total", &[("reason", reason)])
        .unwrap_or(0.0)
}

#[test]
fn pods_come_from_the_api_with_their_names_and_follow_the_watch() {
    let mut c = Cluster::new(4).unwrap();
    let agent = agent(&c, &[]);
    wait_listed(&agent, &names(&c.node));
    let status = agent.status().unwrap();
    assert_eq!(status["pod_source"], "kubernetes");
    assert_eq!(status["kube"]["healthy"], true);
    let m = agent.metrics().unwrap();
    assert_eq!(m.value("podnet_kube_watch_healthy"), Some(1.0));
    assert!(m.value("podnet_kube_last_event_timestamp_seconds").unwrap() > 0.0);

    // A problem now carries the pod's namespace and name.
    let p = c.node.pod(1).clone();
    c.node.delete_route(1, p.ipv4.into()).unwrap();
    agent
        .wait_metrics("labelled problem", WAIT, |m| {
            m.value_with(
                "podnet_pod_problem",
                &[
                    ("namespace", &p.namespace),
                    ("pod", &p.name),
                    ("reason", "route_missing"),
                ],
            ) == Some(1.0)
        })
        .unwrap();
    c.node.restore_routes(1).unwrap();

    // Added through the watch.
    let i = c.node.add_pod(PodSpec::named("team", "late-1")).unwrap();
    c.api.apply(api_pod(c.node.pod(i))).unwrap();
    wait_listed(&agent, &names(&c.node));
    // Deleted through the watch.
    let gone = c.node.pod(2).clone();
    c.api.delete(&gone.namespace, &gone.name).unwrap();
    c.node.remove_pod(2).unwrap();
    wait_listed(&agent, &names(&c.node));
    agent
        .wait_metrics("no problems", WAIT, |m| {
            m.problems().is_empty() && m.node_problems().is_empty()
        })
        .unwrap();
}

#[test]
fn a_410_gone_relists_and_the_watch_continues() {
    let mut c = Cluster::new(3).unwrap();
    let agent = agent(&c, &[]);
    wait_listed(&agent, &names(&c.node));
    let lists = c.api.stats().lists();
    // Changes the agent has not seen, then compaction: its version is gone.
    let i = c
        .node
        .add_pod(PodSpec::named("team", "during-outage"))
        .unwrap();
    c.api.set_outage(Some(Outage::Unavailable)).unwrap();
    c.api.apply(api_pod(c.node.pod(i))).unwrap();
    c.api.compact();
    c.api.set_outage(None).unwrap();
    agent
        .wait_metrics("a restart for 410 Gone", WAIT, |m| {
            restarts(m, "gone") >= 1.0
        })
        .unwrap();
    wait_listed(&agent, &names(&c.node));
    assert!(c.api.stats().lists() > lists, "no re-list after 410");
    // And it keeps following.
    let j = c
        .node
        .add_pod(PodSpec::named("team", "after-relist"))
        .unwrap();
    c.api.apply(api_pod(c.node.pod(j))).unwrap();
    wait_listed(&agent, &names(&c.node));
    agent
        .wait_metrics("healthy", WAIT, |m| {
            m.value("podnet_kube_watch_healthy") == Some(1.0)
        })
        .unwrap();
}

#[test]
fn a_pod_with_an_ip_and_no_interface_is_reported_after_the_grace_period() {
    let c = Cluster::new(2).unwrap();
    let agent = agent(&c, &["--wiring-grace", "3s"]);
    wait_listed(&agent, &names(&c.node));
    let ghost_ip = Ipv4Addr::new(10, 244, 3, 7);
    let added = Instant::now();
    c.api
        .apply(
            PodBuilder::new("team", "never-wired")
                .node(NODE)
                .ipv4(ghost_ip)
                .build(),
        )
        .unwrap();
    let iface = podnet_probe::cni::veth_name("cali", "team", "never-wired");
    let problem = (
        iface.clone(),
        ghost_ip.to_string(),
        "interface_missing".to_owned(),
    );
    // Within the grace period: listed, not reported.
    let deadline = Instant::now() + WAIT;
    while !agent.listed_pods().unwrap().contains("team/never-wired") {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    if added.elapsed() < Duration::from_secs(2) {
        assert!(
            !agent.metrics().unwrap().problems().contains(&problem),
            "reported during grace"
        );
    }
    agent
        .wait_metrics("interface_missing", WAIT, |m| {
            m.problems().contains(&problem)
        })
        .unwrap();
    assert!(
        added.elapsed() >= Duration::from_secs(3),
        "reported before the grace period ended"
    );
    // A pod without an IP yet is not expected to be wired at all.
    c.api
        .apply(
            PodBuilder::new("team", "pending")
                .node(NODE)
                .no_ip()
                .build(),
        )
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let m = agent.metrics().unwrap();
    assert!(
        m.problems().iter().all(|(i, _, _)| *i == iface),
        "{:?}",
        m.problems()
    );
}

#[test]
fn an_ip_reused_while_its_route_points_at_the_old_pod_is_route_wrong_interface() {
    let mut c = Cluster::new(3).unwrap();
    let agent = agent(&c, &["--wiring-grace", "2s"]);
    wait_listed(&agent, &names(&c.node));
    // The API deletes pod 1 and gives its IP to a new pod; the old veth and route linger
    // (the CNI DEL never ran) and the new pod's route could not be added.
    let old = c.node.pod(1).clone();
    c.api.delete(&old.namespace, &old.name).unwrap();
    let i = c
        .node
        .add_pod(
            PodSpec::named("team", "reuser")
                .with_ipv4(old.ipv4)
                .without_host_route(),
        )
        .unwrap();
    let new = c.node.pod(i).clone();
    c.api.apply(api_pod(&new)).unwrap();
    let want = (
        new.interface.clone(),
        new.ipv4.to_string(),
        "route_wrong_interface".to_owned(),
    );
    let m = agent
        .wait_metrics("route_wrong_interface on the new pod", WAIT, |m| {
            m.problems().contains(&want) && m.node_problems().contains("orphaned_interface")
        })
        .unwrap();
    assert_eq!(m.problems(), BTreeSet::from([want]));
    let status = agent.status().unwrap();
    let orphan = status["node_problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["reason"] == "orphaned_interface")
        .unwrap();
    assert_eq!(orphan["detail"], old.interface.as_str());
}

#[test]
fn an_api_outage_keeps_node_checks_running_and_the_watch_recovers() {
    let c = Cluster::new(4).unwrap();
    let agent = agent(&c, &["--kube-unhealthy-threshold", "10s"]);
    let before = names(&c.node);
    wait_listed(&agent, &before);
    c.api.set_outage(Some(Outage::Refuse)).unwrap();
    let outage = Instant::now();
    agent
        .wait_metrics("unhealthy", WAIT, |m| {
            m.value("podnet_kube_watch_healthy") == Some(0.0)
        })
        .unwrap();
    // Node-local verdicts keep updating on the last known pods.
    let p = c.node.pod(3).clone();
    c.node.delete_route(3, p.ipv4.into()).unwrap();
    agent
        .wait_metrics("route_missing during the outage", WAIT, |m| {
            m.value_with(
                "podnet_pod_problem",
                &[("pod", &p.name), ("reason", "route_missing")],
            ) == Some(1.0)
        })
        .unwrap();
    agent
        .wait_metrics("kube_watch_stalled", WAIT, |m| {
            m.node_problems().contains("kube_watch_stalled")
        })
        .unwrap();
    c.node.restore_routes(3).unwrap();
    let remaining = Duration::from_secs(60).saturating_sub(outage.elapsed());
    std::thread::sleep(remaining);
    assert_eq!(
        agent.listed_pods().unwrap(),
        before,
        "pods lost during the outage"
    );
    c.api.set_outage(None).unwrap();
    let back = Instant::now();
    agent
        .wait_metrics("healthy again", WAIT, |m| {
            m.value("podnet_kube_watch_healthy") == Some(1.0) && m.node_problems().is_empty()
        })
        .unwrap();
    let recovered = back.elapsed();
    // The backoff is capped at 30 s (polite to a recovering API server): back within that.
    assert!(
        recovered < Duration::from_secs(35),
        "recovered only after {recovered:?}"
    );
    assert_eq!(
        agent.listed_pods().unwrap(),
        before,
        "pods lost or duplicated after the outage"
    );
    let status = agent.status().unwrap();
    assert_eq!(status["pods"].as_array().unwrap().len(), before.len());
}

#[test]
fn stalls_errors_and_dropped_streams_restart_the_watch() {
    let c = Cluster::new(2).unwrap();
    let agent = agent(&c, &[]);
    wait_listed(&agent, &names(&c.node));
    // A watch that goes silent without closing (no bookmarks either) is replaced.
    c.api.stall_watches();
    agent
        .wait_metrics("stalled", WAIT, |m| restarts(m, "stalled") >= 1.0)
        .unwrap();
    c.api.release_watches();
    // 500s.
    c.api.fail_next(3);
    c.api.close_watches();
    agent
        .wait_metrics("server errors", WAIT, |m| {
            restarts(m, "server_error") >= 1.0
        })
        .unwrap();
    agent
        .wait_metrics("healthy", WAIT, |m| {
            m.value("podnet_kube_watch_healthy") == Some(1.0)
        })
        .unwrap();
    assert_eq!(agent.listed_pods().unwrap(), names(&c.node));
}

#[test]
fn malformed_objects_are_skipped_with_a_warning() {
    let c = Cluster::new(2).unwrap();
    c.api
        .insert_raw(malformed::pod_ips_string("team", "bad-ips", NODE));
    c.api.insert_raw(malformed::nameless("team", NODE));
    let agent = agent(&c, &[]);
    wait_listed(&agent, &names(&c.node));
    c.api
        .insert_raw(malformed::bad_pod_ip("team", "bad-ip", NODE));
    let good = PodBuilder::new("team", "fine")
        .node(NODE)
        .ipv4(Ipv4Addr::new(10, 244, 3, 9))
        .build();
    c.api.apply(good).unwrap();
    let deadline = Instant::now() + WAIT;
    while !agent.listed_pods().unwrap().contains("team/fine") {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = agent.log();
    assert!(log.contains("skipping a malformed pod object"), "{log}");
    assert!(
        !agent
            .listed_pods()
            .unwrap()
            .iter()
            .any(|p| p.contains("bad"))
    );
    assert_eq!(agent.get("/healthz").unwrap().0, 200);
}
