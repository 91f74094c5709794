//! The real agent in a simulated Calico node: every wiring fault is reported on exactly the
//! affected pod with exactly its reason, and cleared after the repair.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use podnet_testbed::agent::Agent;
use podnet_testbed::exposition::Samples;
use podnet_testbed::simnode::{SimNode, SimPod};

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");

/// Generous guard; the agent reacts in milliseconds.
const WAIT: Duration = Duration::from_secs(30);

type Problems = BTreeSet<(String, String, String)>;

fn problem(pod: &SimPod, ip: impl Into<IpAddr>, reason: &str) -> (String, String, String) {
    (
        pod.interface.clone(),
        ip.into().to_string(),
        reason.to_owned(),
    )
}

fn expect(agent: &Agent, what: &str, want: &Problems, node: &[&str]) -> Samples {
    let node: BTreeSet<String> = node.iter().map(|s| s.to_string()).collect();
    let m = agent
        .wait_metrics(what, WAIT, |m| {
            m.problems() == *want && m.node_problems() == node
        })
        .unwrap();
    let affected: BTreeSet<&String> = want.iter().map(|(i, _, _)| i).collect();
    assert_eq!(
        m.value("podnet_broken_pods"),
        Some(affected.len() as f64),
        "{what}"
    );
    m
}

fn healthy(agent: &Agent, what: &str) {
    expect(agent, what, &Problems::new(), &[]);
}

#[test]
fn healthy_node_reports_every_pod_and_no_problem() {
    let node = SimNode::new(8, &[0]).unwrap();
    let agent = Agent::start_binary(AGENT.as_ref(), &node, &[]).unwrap();
    let m = agent
        .wait_metrics("8 pods", WAIT, |m| {
            m.value("podnet_local_pods") == Some(8.0)
        })
        .unwrap();
    assert_eq!(m.value("podnet_broken_pods"), Some(0.0));
    assert!(m.problems().is_empty());
    assert!(m.node_problems().is_empty());
    assert_eq!(m.value("podnet_synced"), Some(1.0));
    assert_eq!(agent.get("/readyz").unwrap().0, 200);
    assert_eq!(agent.get("/healthz").unwrap().0, 200);
    // The start line speaks the flags' language, not Rust's Debug (`Node("cali")`).
    let log = agent.log();
    let start = log
        .lines()
        .find(|l| l.contains("podnet-agent starting"))
        .unwrap_or_else(|| panic!("no start line in {log}"));
    assert!(
        start.contains("pod_source=node prefix=cali")
            || start.contains("pod_source=\"node\" prefix=\"cali\""),
        "{start}"
    );
    assert!(!start.contains("Node("), "{start}");
    // The build says which source it came from (a git commit here, not "unknown").
    let build = m
        .named("podnet_build_info")
        .next()
        .expect("podnet_build_info");
    let revision = build.labels.get("revision").cloned().unwrap_or_default();
    assert!(
        revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()),
        "revision {revision:?}"
    );

    let status = agent.status().unwrap();
    assert_eq!(status["node"], "sim-node");
    assert_eq!(status["synced"], true);
    let pods = status["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 8);
    for sim in node.pods() {
        let p = pods
            .iter()
            .find(|p| p["interface"] == sim.interface.as_str())
            .unwrap_or_else(|| panic!("{} missing from /status", sim.interface));
        let ips: Vec<String> = sim.ips().iter().map(ToString::to_string).collect();
        let got: Vec<String> = p["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(got, ips, "{}", sim.interface);
        assert!(p["problems"].as_array().unwrap().is_empty());
    }
    assert_eq!(node.pod(0).ips().len(), 2, "pod 0 is dual-stack");
    // Nothing went wrong on the way, not even retried reads.
    let log = agent.log();
    for bad in [" WARN ", " ERROR ", "cannot read"] {
        assert!(!log.contains(bad), "agent log has {bad:?}:\n{log}");
    }
}

#[test]
fn each_fault_is_reported_on_exactly_that_pod_and_cleared() {
    let node = SimNode::new(8, &[0]).unwrap();
    let agent = Agent::start_binary(AGENT.as_ref(), &node, &[]).unwrap();
    healthy(&agent, "healthy start");
    let p = |i| node.pod(i);

    // The incident: the host route of one pod is gone.
    node.delete_route(1, p(1).ipv4.into()).unwrap();
    expect(
        &agent,
        "route_missing",
        &[problem(p(1), p(1).ipv4, "route_missing")].into(),
        &[],
    );
    node.restore_routes(1).unwrap();
    healthy(&agent, "route restored");

    // The IPv6 route of the dual-stack pod.
    let v6 = p(0).ipv6.unwrap();
    node.delete_route(0, v6.into()).unwrap();
    expect(
        &agent,
        "IPv6 route_missing",
        &[problem(p(0), v6, "route_missing")].into(),
        &[],
    );
    node.restore_routes(0).unwrap();
    healthy(&agent, "IPv6 route restored");

    // A stale route sends the pod's traffic to another pod's interface.
    node.route_via_other_pod(2, 3).unwrap();
    expect(
        &agent,
        "route_wrong_interface",
        &[problem(p(2), p(2).ipv4, "route_wrong_interface")].into(),
        &[],
    );
    node.restore_routes(2).unwrap();
    healthy(&agent, "route pointed back");

    node.blackhole_route(3).unwrap();
    expect(
        &agent,
        "route_not_unicast",
        &[problem(p(3), p(3).ipv4, "route_not_unicast")].into(),
        &[],
    );
    node.restore_routes(3).unwrap();
    healthy(&agent, "blackhole replaced");

    // The pod side goes down: the host side loses its carrier, its route stays.
    node.set_pod_link(4, false).unwrap();
    expect(
        &agent,
        "interface_down (carrier)",
        &[problem(p(4), p(4).ipv4, "interface_down")].into(),
        &[],
    );
    node.set_pod_link(4, true).unwrap();
    healthy(&agent, "carrier back");

    // The host side set down: the kernel also drops its route, without telling anyone.
    node.set_host_link(5, false).unwrap();
    expect(
        &agent,
        "interface_down (admin) and its flushed route",
        &[
            problem(p(5), p(5).ipv4, "interface_down"),
            problem(p(5), p(5).ipv4, "route_missing"),
        ]
        .into(),
        &[],
    );
    node.set_host_link(5, true).unwrap();
    expect(
        &agent,
        "link up, route still gone",
        &[problem(p(5), p(5).ipv4, "route_missing")].into(),
        &[],
    );
    node.restore_routes(5).unwrap();
    healthy(&agent, "link up and route back");

    node.set_proxy_arp(6, false).unwrap();
    expect(
        &agent,
        "proxy_arp_disabled",
        &[problem(p(6), p(6).ipv4, "proxy_arp_disabled")].into(),
        &[],
    );
    node.set_proxy_arp(6, true).unwrap();
    healthy(&agent, "proxy_arp back on");

    node.set_interface_forwarding(7, false).unwrap();
    expect(
        &agent,
        "interface forwarding off",
        &[problem(p(7), p(7).ipv4, "forwarding_disabled")].into(),
        &[],
    );
    node.set_interface_forwarding(7, true).unwrap();
    healthy(&agent, "interface forwarding on");

    // Node-wide forwarding off: one node problem, not eight pod problems.
    node.set_forwarding(false).unwrap();
    expect(
        &agent,
        "node forwarding_disabled",
        &Problems::new(),
        &["forwarding_disabled"],
    );
    node.set_forwarding(true).unwrap();
    healthy(&agent, "node forwarding back on");
    assert_eq!(
        agent.metrics().unwrap().value("podnet_local_pods"),
        Some(8.0)
    );
}

#[test]
fn pods_added_and_removed_while_running_leave_no_stale_series() {
    let mut node = SimNode::new(8, &[0]).unwrap();
    let agent = Agent::start_binary(AGENT.as_ref(), &node, &[]).unwrap();
    let before = agent
        .wait_metrics("8 pods", WAIT, |m| {
            m.value("podnet_local_pods") == Some(8.0)
        })
        .unwrap();

    let added: Vec<usize> = (8..12)
        .map(|i| {
            node.add_pod(podnet_testbed::simnode::PodSpec::numbered(i, i % 2 == 0))
                .unwrap()
        })
        .collect();
    let after = agent
        .wait_metrics("12 healthy pods", WAIT, |m| {
            m.value("podnet_local_pods") == Some(12.0) && m.problems().is_empty()
        })
        .unwrap();
    // Per-pod series only: counters of probe results may gain a `result` value when a new
    // pod's first probe races its wiring, which is not growth with the number of pods.
    assert!(before.pod_series().is_empty(), "{:?}", before.pod_series());
    assert!(
        after.pod_series().is_empty(),
        "series grew with healthy pods: {:?}",
        after.pod_series()
    );
    // The new dual-stack pod has both its IPs: its two host routes are two kernel events, and
    // the pod may be counted from the first, so this is waited for rather than read once.
    let new_iface = node.pod(added[0]).interface.clone();
    agent
        .wait_status("the dual-stack pod added with both IPs", WAIT, |s| {
            s["pods"].as_array().into_iter().flatten().any(|p| {
                p["interface"] == new_iface.as_str()
                    && p["ips"].as_array().is_some_and(|ips| ips.len() == 2)
            })
        })
        .unwrap();

    // A pod with a problem is deleted: its series must go with it.
    let sick = node.pod(3).clone();
    node.delete_route(3, sick.ipv4.into()).unwrap();
    expect(
        &agent,
        "sick pod",
        &[problem(&sick, sick.ipv4, "route_missing")].into(),
        &[],
    );
    node.remove_pod(3).unwrap();
    node.remove_pod(added[1]).unwrap();
    let m = agent
        .wait_metrics("10 pods, no problem", WAIT, |m| {
            m.value("podnet_local_pods") == Some(10.0) && m.problems().is_empty()
        })
        .unwrap();
    assert_eq!(m.value("podnet_broken_pods"), Some(0.0));
    let status = agent.status().unwrap();
    let listed: BTreeSet<String> = status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["interface"].as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = node.pods().map(|p| p.interface.clone()).collect();
    assert_eq!(listed, expected);
}

#[test]
fn new_pod_without_its_route_is_caught() {
    // The incident's exact shape: a new pod whose route calico-node never programs.
    let mut node = SimNode::new(4, &[]).unwrap();
    let agent = Agent::start_binary(AGENT.as_ref(), &node, &[]).unwrap();
    healthy(&agent, "start");
    let i = node
        .add_pod(podnet_testbed::simnode::PodSpec::numbered(4, true))
        .unwrap();
    let pod = node.pod(i).clone();
    node.delete_route(i, pod.ipv4.into()).unwrap();
    node.delete_route(i, pod.ipv6.unwrap().into()).unwrap();
    expect(
        &agent,
        "new pod without routes",
        &[
            problem(&pod, pod.ipv4, "route_missing"),
            problem(&pod, pod.ipv6.unwrap(), "route_missing"),
        ]
        .into(),
        &[],
    );
}

#[test]
fn burst_of_route_changes_ends_matching_the_kernel() {
    let node = SimNode::new(16, &[0, 1]).unwrap();
    let agent = Agent::start_binary(AGENT.as_ref(), &node, &[]).unwrap();
    healthy(&agent, "start");
    let routes: Vec<(IpAddr, u32)> = node
        .pods()
        .flat_map(|p| p.ips().into_iter().map(move |ip| (ip, p.host_index)))
        .collect();
    // 6000 changes: each route deleted and re-added, over and over; a deterministic subset
    // ends deleted.
    const ROUNDS: usize = 6000;
    let ops = routes.clone();
    let missing: BTreeSet<usize> = node
        .node()
        .run(move |h| async move {
            let mut present = vec![true; ops.len()];
            let mut x: u64 = 0x9e3779b97f4a7c15;
            for _ in 0..ROUNDS {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let k = (x % ops.len() as u64) as usize;
                let (ip, oif) = ops[k];
                let msg = podnet_testbed::simnode::pod_route(ip, oif)?;
                if present[k] {
                    h.route().del(msg).execute().await?;
                } else {
                    h.route().add(msg).execute().await?;
                }
                present[k] = !present[k];
            }
            Ok(present
                .iter()
                .enumerate()
                .filter(|(_, p)| !**p)
                .map(|(k, _)| k)
                .collect())
        })
        .unwrap();
    assert!(
        !missing.is_empty() && missing.len() < routes.len(),
        "{missing:?}"
    );
    let want: Problems = missing
        .iter()
        .map(|&k| {
            let (ip, oif) = routes[k];
            let pod = node.pods().find(|p| p.host_index == oif).unwrap();
            problem(pod, ip, "route_missing")
        })
        .collect();
    expect(
        &agent,
        "verdicts matching the kernel after the burst",
        &want,
        &[],
    );
    let events = agent
        .metrics()
        .unwrap()
        .value("podnet_netlink_events_total")
        .unwrap();
    assert!(events >= ROUNDS as f64, "only {events} events seen");
}

#[test]
fn interface_prefix_selects_the_cni() {
    let node = SimNode::new(3, &[]).unwrap();
    let agent = Agent::start_binary(AGENT.as_ref(), &node, &["--interface-prefix", "eni"]).unwrap();
    let m = agent.metrics().unwrap();
    assert_eq!(m.value("podnet_local_pods"), Some(0.0));
}

#[test]
fn sigterm_stops_the_agent_cleanly() {
    let node = SimNode::new(2, &[]).unwrap();
    let mut agent = Agent::start_binary(AGENT.as_ref(), &node, &["--log-format", "json"]).unwrap();
    assert_eq!(agent.stop().unwrap(), Some(0));
    let log = agent.log();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["message"], "stopped", "{log}");
}
