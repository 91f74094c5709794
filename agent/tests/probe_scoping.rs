//! Probe scoping and policy-aware diagnosis with the real agent: a host policy dropping pod →
//! node ICMP (a rule in the simulated node's INPUT chain, gone with its namespace), pods
//! opting out by annotation, and a target limited to the pods a label selector matches.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use podnet_testbed::agent::Agent;
use podnet_testbed::cluster::{Cluster, api_pod};
use podnet_testbed::simnode::SimNode;
use serde_json::{Value, json};

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");

const WAIT: Duration = Duration::from_secs(60);
const OUT: &str = "out=icmp:198.51.100.1";

/// `iptables ARGS` inside the simulated node's namespace (never the host's).
fn iptables(node: &SimNode, args: &[&str]) {
    let out = Command::new("ip")
        .args(["netns", "exec", node.node_netns(), "iptables"])
        .args(args)
        .output()
        .expect("running iptables");
    assert!(
        out.status.success(),
        "iptables {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_status(agent: &Agent, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    agent.wait_status(what, WAIT, pred).unwrap()
}

/// `(interface, target)` of every probed destination in /status with its latest result.
fn dests(status: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for p in status["pods"].as_array().unwrap() {
        for d in p["probes"].as_array().into_iter().flatten() {
            out.insert((
                p["interface"].as_str().unwrap().to_owned(),
                d["target"].as_str().unwrap().to_owned(),
                d["last"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

/// Every pod probed at least `rounds` times against each of its destinations.
fn probed(status: &Value, pods: usize, rounds: u64) -> bool {
    let ps = status["pods"].as_array().unwrap();
    ps.len() == pods
        && ps.iter().all(|p| {
            p["probes"].as_array().is_some_and(|d| {
                !d.is_empty() && d.iter().all(|d| d["probes"].as_u64() >= Some(rounds))
            })
        })
}

fn no_pod_failures(agent: &Agent) {
    let m = agent.metrics().unwrap();
    let failing: Vec<_> = m.named("podnet_pod_probe_failing").collect();
    assert!(failing.is_empty(), "{failing:?}");
    assert!(m.problems().is_empty(), "{:?}", m.problems());
    assert!(m.node_problems().is_empty(), "{:?}", m.node_problems());
}

/// With `rule` in the node's INPUT chain and `--builtin-probes builtins`, every pod is probed
/// against `targets` only, all answer, and nothing is reported.
fn quiet_with(rule: &[&str], builtins: &str, targets: &[&str]) {
    let node = SimNode::new(4, &[]).unwrap();
    iptables(&node, &[&["-I", "INPUT"][..], rule].concat());
    let agent = Agent::start(
        &node,
        &["--probe-interval", "1s", "--builtin-probes", builtins],
    )
    .unwrap();
    let status = wait_status(&agent, "five rounds of every pod", |s| probed(s, 4, 5));
    let d = dests(&status);
    assert!(
        d.iter()
            .all(|(_, t, last)| targets.contains(&t.as_str()) && last == "ok"),
        "{d:?}"
    );
    no_pod_failures(&agent);
    let m = agent.metrics().unwrap();
    assert_eq!(
        m.value_with("podnet_target_failing_pods", &[("target", "gateway")]),
        Some(0.0)
    );
    assert_eq!(
        m.value_with("podnet_target_failing_pods", &[("target", "node")]),
        None,
        "node probing is off"
    );
}

#[test]
fn a_host_policy_dropping_pod_to_node_icmp_pages_nobody_with_node_probing_off() {
    // The rule also drops the pods' echo replies to the host: host → pod goes too.
    quiet_with(&["-p", "icmp", "-j", "DROP"], "gateway", &["gateway"]);
}

#[test]
fn calicos_endpoint_to_host_drop_pages_nobody_with_node_probing_off() {
    // What DefaultEndpointToHostAction=Drop does: new traffic from pods to the host dropped,
    // replies (host → pod) let through. (With `node` on, the same bed fails: checked by hand.)
    let rule = [
        "-i",
        "cali+",
        "-p",
        "icmp",
        "-m",
        "conntrack",
        "--ctstate",
        "NEW",
        "-j",
        "DROP",
    ];
    quiet_with(&rule, "gateway,host-to-pod", &["gateway", "pod"]);
}

#[test]
fn with_node_probing_on_the_diagnosis_names_a_host_policy_not_the_uplink() {
    let node = SimNode::new(4, &[]).unwrap();
    let agent = Agent::start(&node, &["--probe-interval", "1s"]).unwrap();
    wait_status(&agent, "every pod probed", |s| probed(s, 4, 2));
    no_pod_failures(&agent);
    iptables(&node, &["-I", "INPUT", "-p", "icmp", "-j", "DROP"]);
    let status = wait_status(&agent, "the node target failing node-wide", |s| {
        s["node_problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["reason"] == "target_unreachable" && p["detail"] == "node")
    });
    let problem = status["node_problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["detail"] == "node")
        .unwrap();
    let hint = problem["hint"].as_str().unwrap_or_default();
    assert!(hint.contains("host policy or firewall"), "{problem}");
    assert!(hint.contains("uplink is not involved"), "{problem}");
    assert!(hint.contains("iptables -S INPUT"), "{problem}");
    let m = agent.metrics().unwrap();
    assert_eq!(
        m.value_with(
            "podnet_node_problem",
            &[("reason", "target_unreachable"), ("target", "node")]
        ),
        Some(1.0)
    );
    // The gateway still answers (its time-exceeded reply never crosses INPUT).
    assert!(
        dests(&status)
            .iter()
            .filter(|(_, t, _)| t == "gateway")
            .all(|(_, _, last)| last == "ok")
    );
    // Host → pod fails for every pod too (the rule drops the replies): with Calico, a
    // possible policy, never the wiring or the uplink.
    let status = wait_status(&agent, "host → pod diagnosed", |s| {
        s["pods"].as_array().unwrap().iter().all(|p| {
            p["probes"].as_array().unwrap().iter().any(|d| {
                d["target"] == "pod" && d["failing"] == true && d["diagnosis"] == "network_policy"
            })
        })
    });
    for p in status["pods"].as_array().unwrap() {
        assert_eq!(p["problems"], json!([]), "wiring is fine: {p}");
        for d in p["probes"].as_array().unwrap() {
            if let Some(h) = d["hint"].as_str() {
                assert!(
                    !h.contains("uplink is") || h.contains("not involved"),
                    "{d}"
                );
                assert!(!h.contains("NAT"), "{d}");
            }
        }
    }
}

/// The API object of pod `i` with these annotations and labels.
fn annotated(c: &Cluster, i: usize, annotations: Value, labels: &[(&str, &str)]) -> Value {
    let mut v = api_pod(c.node.pod(i));
    v["metadata"]["annotations"] = annotations;
    for (k, val) in labels {
        v["metadata"]["labels"][*k] = json!(val);
    }
    v
}

#[test]
fn opted_out_pods_are_never_probed_and_a_selector_limits_its_target() {
    let c = Cluster::new(4).unwrap();
    // Pod 1 opts out; pods 2 (app=web) and 3 (app=db, an annotation podnet does not know).
    c.api
        .apply(annotated(&c, 1, json!({"podnet.io/probes": "false"}), &[]))
        .unwrap();
    c.api
        .apply(annotated(&c, 2, json!({}), &[("app", "web")]))
        .unwrap();
    c.api
        .apply(annotated(
            &c,
            3,
            json!({"podnet.io/probes": "maybe"}),
            &[("app", "db")],
        ))
        .unwrap();
    let agent = c
        .agent(
            AGENT.as_ref(),
            &[
                "--probe-interval",
                "1s",
                "--probe",
                OUT,
                "--probe-selector",
                "out=app=web",
            ],
        )
        .unwrap();
    let iface = |i: usize| c.node.pod(i).interface.clone();
    let status = wait_status(&agent, "three pods probed, one skipped", |s| {
        let ps = s["pods"].as_array().unwrap();
        ps.len() == 4
            && ps
                .iter()
                .filter(|p| p["probes"].as_array().is_some_and(|d| !d.is_empty()))
                .count()
                == 3
            && ps.iter().any(|p| p["probes_skipped"] == "annotation")
    });
    let skipped = status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["probes_skipped"] == "annotation")
        .unwrap();
    assert_eq!(skipped["interface"], iface(1).as_str());
    assert!(skipped.get("probes").is_none(), "{skipped}");
    let targets = |i: usize| -> BTreeSet<String> {
        dests(&status)
            .into_iter()
            .filter(|(f, _, _)| *f == iface(i))
            .map(|(_, t, _)| t)
            .collect()
    };
    let builtins: BTreeSet<String> = ["gateway", "node", "pod"].map(String::from).into();
    let mut web = builtins.clone();
    web.insert("out".into());
    assert_eq!(targets(0), builtins, "no labels: not selected");
    assert_eq!(targets(2), web, "app=web");
    assert_eq!(targets(3), builtins, "app=db");
    let m = agent.metrics().unwrap();
    assert_eq!(
        m.value_with("podnet_pods_probes_skipped", &[("reason", "annotation")]),
        Some(1.0)
    );
    assert_eq!(
        m.value_with(
            "podnet_probe_scope_ignored_total",
            &[("reason", "invalid_value")]
        ),
        Some(1.0)
    );
    assert!(
        agent
            .log()
            .contains("ignoring a pod's probe label or annotation")
    );

    // The opted-out pod's route is still verified.
    let victim = c.node.pod(1).clone();
    c.node.delete_route(1, victim.ipv4.into()).unwrap();
    agent
        .wait_metrics("the skipped pod's missing route", WAIT, |m| {
            m.problems().contains(&(
                victim.interface.clone(),
                victim.ipv4.to_string(),
                "route_missing".to_owned(),
            ))
        })
        .unwrap();
    c.node.restore_routes(1).unwrap();
    let s = agent.status().unwrap();
    let p = s["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["interface"] == iface(1).as_str())
        .unwrap()
        .clone();
    assert!(p.get("probes").is_none(), "never probed: {p}");
}
