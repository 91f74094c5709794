//! Probes from inside every pod's namespace, with the real agent in a simulated node.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use podnet_testbed::agent::{Agent, Privileges};
use podnet_testbed::exposition::Samples;
use podnet_testbed::simnode::{OUTSIDE_IPV4, OUTSIDE_IPV6, SimNode};
use serde_json::Value;

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");

const WAIT: Duration = Duration::from_secs(60);
const TCP_PORT: u16 = 8443;
const OUT4: &str = "icmp:198.51.100.1";
const OUT6: &str = "out6";
const WEB: &str = "web";

/// Eight pods (pod 0 dual-stack, pod 7 reachable only through a process), an outside TCP
/// listener, and an agent probing every second.
fn setup(extra: &[&str]) -> (SimNode, Agent) {
    let mut node = SimNode::new(8, &[0]).unwrap();
    node.hold_by_process(7).unwrap();
    node.listen_outside(SocketAddr::new(OUTSIDE_IPV4.into(), TCP_PORT))
        .unwrap();
    node.listen_outside(SocketAddr::new(OUTSIDE_IPV6.into(), TCP_PORT))
        .unwrap();
    let web = format!("{WEB}=tcp:{OUTSIDE_IPV4}:{TCP_PORT}");
    let web6 = format!("web6=tcp:[{OUTSIDE_IPV6}]:{TCP_PORT}");
    let out6 = format!("{OUT6}=icmp:{OUTSIDE_IPV6}");
    let mut args = vec![
        "--probe-interval",
        "1s",
        "--probe",
        OUT4,
        "--probe",
        &web,
        "--probe",
        &web6,
        "--probe",
        &out6,
    ];
    args.extend_from_slice(extra);
    // Pod 7 is found only through /proc: this file runs the agent as the proc-fallback overlay does.
    let agent = Agent::start_with(AGENT.as_ref(), &node, &args, Privileges::ProcFallback).unwrap();
    (node, agent)
}

/// `(interface, target, result)` of every destination in /status.
fn dests(status: &Value) -> Vec<(String, String, String, bool)> {
    let mut out = Vec::new();
    for p in status["pods"].as_array().unwrap() {
        for d in p["probes"].as_array().into_iter().flatten() {
            out.push((
                p["interface"].as_str().unwrap().to_owned(),
                d["target"].as_str().unwrap().to_owned(),
                d["last"].as_str().unwrap().to_owned(),
                d["failing"].as_bool().unwrap(),
            ));
        }
    }
    out
}

fn wait_status(agent: &Agent, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    agent.wait_status(what, WAIT, pred).unwrap()
}

/// One pod's entry in /status.
fn pod_status(agent: &Agent, interface: &str) -> Value {
    agent.status().unwrap()["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["interface"] == interface)
        .unwrap_or_else(|| panic!("{interface} not in /status"))
        .clone()
}

/// Pod failure series as `(interface, target)`.
fn pod_failures(m: &Samples) -> BTreeSet<(String, String)> {
    m.named("podnet_pod_probe_failing")
        .map(|s| (s.labels["interface"].clone(), s.labels["target"].clone()))
        .collect()
}

fn probed_and_all_ok(status: &Value, n_pods: usize) -> bool {
    let d = dests(status);
    let pods: BTreeSet<&String> = d.iter().map(|x| &x.0).collect();
    pods.len() == n_pods && !d.is_empty() && d.iter().all(|x| x.2 == "ok")
}

#[test]
fn every_pod_reaches_its_gateway_the_node_and_outside_targets() {
    let (node, agent) = setup(&[]);
    let status = wait_status(&agent, "every destination ok", |s| probed_and_all_ok(s, 8));
    let d = dests(&status);
    for pod in node.pods() {
        let targets: BTreeSet<&str> = d
            .iter()
            .filter(|x| x.0 == pod.interface)
            .map(|x| x.1.as_str())
            .collect();
        let mut want: BTreeSet<&str> = ["gateway", "node", OUT4, WEB, "pod"].into();
        if pod.ipv6.is_some() {
            want.extend(["web6", OUT6]);
        }
        assert_eq!(
            targets, want,
            "{} (held by process: {:?})",
            pod.interface, pod.holder
        );
    }
    // The dual-stack pod probes both families of gateway, node and pod.
    let p0: Vec<_> = d.iter().filter(|x| x.0 == node.pod(0).interface).collect();
    assert_eq!(p0.iter().filter(|x| x.1 == "gateway").count(), 2);
    assert_eq!(p0.iter().filter(|x| x.1 == "pod").count(), 2);
    let m = agent.metrics().unwrap();
    assert!(pod_failures(&m).is_empty());
    for t in ["gateway", "node", OUT4, WEB, "web6", OUT6, "pod"] {
        assert_eq!(
            m.value_with("podnet_target_failing_pods", &[("target", t)]),
            Some(0.0),
            "{t}"
        );
        assert!(
            m.value_with("podnet_probes_total", &[("target", t), ("result", "ok")])
                .unwrap_or(0.0)
                > 0.0,
            "{t}"
        );
    }
    assert!(
        m.value_with(
            "podnet_probes_total",
            &[
                ("target", WEB),
                ("protocol", "tcp"),
                ("direction", "pod_to_target"),
                ("result", "ok")
            ]
        )
        .unwrap_or(0.0)
            > 0.0
    );
    assert!(
        m.value_with(
            "podnet_probe_duration_seconds_count",
            &[("target", "gateway")]
        )
        .unwrap_or(0.0)
            > 0.0
    );
    assert!(
        agent.log().contains("ICMP sockets in pod namespaces"),
        "socket kind not logged"
    );
}

#[test]
fn a_deleted_host_route_fails_only_that_pod_and_names_the_route() {
    let (node, agent) = setup(&[]);
    wait_status(&agent, "all ok", |s| probed_and_all_ok(s, 8));
    let victim = node.pod(2).clone();
    node.delete_route(2, victim.ipv4.into()).unwrap();
    let m = agent
        .wait_metrics("the victim's probes failing", WAIT, |m| {
            let f = pod_failures(m);
            f.contains(&(victim.interface.clone(), OUT4.into()))
                && f.contains(&(victim.interface.clone(), "pod".into()))
        })
        .unwrap();
    let f = pod_failures(&m);
    assert!(
        f.iter().all(|(i, _)| *i == victim.interface),
        "other pods failing: {f:?}"
    );
    assert!(m.node_problems().is_empty());
    let p = pod_status(&agent, &victim.interface);
    for d in p["probes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["failing"] == true)
    {
        assert_eq!(d["diagnosis"], "route_missing", "{d}");
    }
    node.restore_routes(2).unwrap();
    agent
        .wait_metrics("recovery", WAIT, |m| pod_failures(m).is_empty())
        .unwrap();
}

#[test]
fn a_pod_without_its_default_route_fails_with_a_pod_side_reason() {
    let (node, agent) = setup(&[]);
    wait_status(&agent, "all ok", |s| probed_and_all_ok(s, 8));
    let victim = node.pod(3).clone();
    node.delete_pod_default_route(3, true).unwrap();
    let m = agent
        .wait_metrics("pod-side problem and failing probes", WAIT, |m| {
            m.problems().contains(&(
                victim.interface.clone(),
                victim.ipv4.to_string(),
                "pod_default_route_missing".to_owned(),
            )) && pod_failures(m).contains(&(victim.interface.clone(), OUT4.into()))
        })
        .unwrap();
    // Its host route is fine, and nothing else is wrong.
    assert_eq!(m.problems().len(), 1, "{:?}", m.problems());
    let f = pod_failures(&m);
    assert!(f.iter().all(|(i, _)| *i == victim.interface), "{f:?}");
    assert!(
        !f.contains(&(victim.interface.clone(), "gateway".into())),
        "the gateway is on-link"
    );
    // The pod cannot answer the host either: its replies to the node's address need the route.
    assert!(
        f.contains(&(victim.interface.clone(), "pod".into())),
        "{f:?}"
    );
    let p = pod_status(&agent, &victim.interface);
    assert_eq!(p["pod_side"]["default_route_v4"], false);
    let d = p["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["target"] == OUT4)
        .unwrap();
    assert_eq!(d["diagnosis"], "pod_default_route_missing");
    node.restore_pod_default_routes(3).unwrap();
    agent
        .wait_metrics("recovery", WAIT, |m| {
            pod_failures(m).is_empty() && m.problems().is_empty()
        })
        .unwrap();
}

/// The host side of a dual-stack pod's veth narrower than its eth0: full-size packets from the
/// pod are dropped on the veth, small ones pass. Both families' path-MTU probes say so, and no
/// probe fails.
#[test]
fn a_path_narrower_than_the_pod_mtu_is_path_mtu_mismatch_in_both_families() {
    let (node, agent) = setup(&[]);
    wait_status(&agent, "all ok", |s| probed_and_all_ok(s, 8));
    let victim = node.pod(0).clone();
    let v6 = victim.ipv6.expect("pod 0 is dual-stack");
    node.set_host_mtu(0, 1400).unwrap();
    let want: BTreeSet<(String, String, String)> = [victim.ipv4.to_string(), v6.to_string()]
        .into_iter()
        .map(|ip| (victim.interface.clone(), ip, "path_mtu_mismatch".to_owned()))
        .collect();
    let m = agent
        .wait_metrics("path_mtu_mismatch on both IPs", WAIT, |m| {
            m.problems() == want
        })
        .unwrap();
    assert!(pod_failures(&m).is_empty(), "{:?}", pod_failures(&m));
    let p = pod_status(&agent, &victim.interface);
    assert_eq!(p["pod_side"]["mtu"], 1500);
    let details: Vec<String> = p["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["detail"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("MTU is 1500") && d.contains("1500-byte")),
        "{details:?}"
    );
    node.set_host_mtu(0, 1500).unwrap();
    agent
        .wait_metrics("recovery", WAIT, |m| {
            m.problems().is_empty() && pod_failures(m).is_empty()
        })
        .unwrap();
}

#[test]
fn node_forwarding_off_is_reported_once_at_node_level() {
    let (node, agent) = setup(&[]);
    wait_status(&agent, "all ok", |s| probed_and_all_ok(s, 8));
    node.set_forwarding(false).unwrap();
    // Outside targets fail for every pod at once; later even the gateway (no proxy ARP without
    // forwarding). Either way: one node problem and no pod alarm.
    let status = wait_status(&agent, "outside targets failing everywhere", |s| {
        let d = dests(s);
        let out: Vec<_> = d.iter().filter(|x| x.1 == OUT4).collect();
        out.len() == 8 && out.iter().all(|x| x.3)
    });
    let m = agent.metrics().unwrap();
    assert_eq!(
        m.node_problems(),
        BTreeSet::from(["forwarding_disabled".to_owned()])
    );
    assert!(
        pod_failures(&m).is_empty(),
        "pod alarms: {:?}",
        pod_failures(&m)
    );
    // The count says how many pods fail it; the node problem says why.
    assert_eq!(
        m.value_with("podnet_target_failing_pods", &[("target", OUT4)]),
        Some(8.0)
    );
    for p in status["pods"].as_array().unwrap() {
        for d in p["probes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["failing"] == true)
        {
            assert_eq!(d["node_wide"], true, "{d}");
            assert_eq!(d["diagnosis"], "forwarding_disabled", "{d}");
        }
    }
    node.set_forwarding(true).unwrap();
    agent
        .wait_metrics("recovery", WAIT, |m| m.node_problems().is_empty())
        .unwrap();
    wait_status(&agent, "all ok again", |s| probed_and_all_ok(s, 8));
}

#[test]
fn an_outside_target_failing_for_every_pod_is_one_node_problem() {
    let (node, agent) = setup(&[]);
    wait_status(&agent, "all ok", |s| probed_and_all_ok(s, 8));
    // The path beyond the node breaks: the gateway and the node still answer every pod.
    node.set_outside_return_routes(false).unwrap();
    let m = agent
        .wait_metrics("target_unreachable at node level", WAIT, |m| {
            m.node_problems().contains("target_unreachable")
        })
        .unwrap();
    assert_eq!(
        m.node_problems(),
        BTreeSet::from(["target_unreachable".to_owned()])
    );
    // The IPv6 targets are probed by the one dual-stack pod only: one pod cannot tell the
    // path beyond the node from its own problem, so those stay pod alarms.
    let f = pod_failures(&m);
    assert!(
        f.iter()
            .all(|(i, t)| *i == node.pod(0).interface && (t == OUT6 || t == "web6")),
        "pod alarms: {f:?}"
    );
    // Each target is declared when most pods have failed it: the ICMP and the TCP target
    // need not cross in the same round, so /status is waited for until it names both.
    let unreachable = |s: &Value| -> BTreeSet<String> {
        s["node_problems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["detail"].as_str().map(str::to_owned))
            .collect()
    };
    let status = wait_status(&agent, "both outside targets unreachable", |s| {
        let u = unreachable(s);
        u.contains(OUT4) && u.contains(WEB)
    });
    let unreachable = unreachable(&status);
    // The metric names the targets too (one series each), as /status does; a separate
    // request, so it is waited for, and a target too many or missing never matches.
    let targets = |m: &Samples| -> BTreeSet<String> {
        m.named("podnet_node_problem")
            .filter(|s| s.labels.get("reason").map(String::as_str) == Some("target_unreachable"))
            .filter_map(|s| s.labels.get("target").cloned())
            .collect()
    };
    agent
        .wait_metrics("podnet_node_problem{target} as in /status", WAIT, |m| {
            targets(m) == unreachable
        })
        .unwrap();
    for (_, target, last, failing) in dests(&status) {
        if ["gateway", "node", "pod"].contains(&target.as_str()) {
            assert!(!failing && last == "ok", "{target} {last}");
        }
    }
    node.set_outside_return_routes(true).unwrap();
    agent
        .wait_metrics("recovery", WAIT, |m| m.node_problems().is_empty())
        .unwrap();
}

#[test]
fn a_closed_tcp_port_is_refused_not_unreachable() {
    let closed = format!("closed=tcp:{OUTSIDE_IPV4}:9");
    let (_node, agent) = setup(&["--probe", &closed]);
    let m = agent
        .wait_metrics("refused probes", WAIT, |m| {
            m.value_with(
                "podnet_probes_total",
                &[("target", "closed"), ("result", "refused")],
            )
            .unwrap_or(0.0)
                >= 8.0
        })
        .unwrap();
    assert_eq!(
        m.value_with("podnet_target_failing_pods", &[("target", "closed")]),
        Some(0.0)
    );
    assert!(!pod_failures(&m).iter().any(|(_, t)| t == "closed"));
}

#[test]
fn deleting_a_pod_namespace_while_probing_leaves_nothing_behind() {
    let (mut node, agent) = setup(&[]);
    wait_status(&agent, "all ok", |s| probed_and_all_ok(s, 8));
    for i in [1, 7] {
        let gone = node.remove_pod(i).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let iface = gone.interface.clone();
            let present = node
                .node()
                .run(move |h| async move {
                    Ok(podnet_testbed::simnode::index_of(&h, &iface).await.is_ok())
                })
                .unwrap();
            if !present {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}'s veth still exists: something holds its namespace",
                gone.interface
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let m = agent
        .wait_metrics("6 pods", WAIT, |m| {
            m.value("podnet_local_pods") == Some(6.0)
        })
        .unwrap();
    assert!(pod_failures(&m).is_empty());
    std::thread::sleep(Duration::from_secs(2));
    let warnings = agent
        .log()
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .count();
    assert!(warnings <= 2, "error storm:\n{}", agent.log_tail());
}
