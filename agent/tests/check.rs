//! `podnet-agent check` on a simulated Calico node: exit 0 when healthy, 1 with a deleted
//! route (the table names the pod and the reason, first), 2 when it cannot check (no
//! privileges, bad flags); `--json` parses and says the same.

use std::process::{Command, Output};

use podnet_testbed::cluster::Cluster;
use podnet_testbed::netns;
use podnet_testbed::simnode::SimNode;
use serde_json::Value;

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");

/// `wrapper… podnet-agent check args…` inside the node's namespace.
fn check(node: &SimNode, wrapper: &[&str], args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", node.node_netns()])
        .args(wrapper)
        .arg(AGENT)
        .arg("check")
        .args(["--node-name", "sim-node", "--timeout", "20s"])
        .args(args)
        .output()
        .expect("running podnet-agent check")
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn healthy_node_exits_0_and_lists_every_pod() {
    netns::require_root().unwrap();
    let node = SimNode::new(3, &[0]).unwrap();
    let out = check(&node, &[], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(text.contains("HEALTHY: 3 pods"), "{}", show(&out));
    for pod in node.pods() {
        let line = text
            .lines()
            .find(|l| l.starts_with(&pod.interface))
            .unwrap_or_else(|| panic!("{} not in the table:\n{text}", pod.interface));
        assert!(line.contains(&pod.ipv4.to_string()), "{line}");
        // Route ok, every probe answered, verdict ok.
        assert!(line.contains(" ok "), "{line}");
        assert!(line.trim_end().ends_with(" ok"), "{line}");
        assert!(!line.contains("0/"), "a probe failed: {line}");
    }
}

#[test]
fn deleted_route_exits_1_and_names_the_pod_and_reason_first() {
    netns::require_root().unwrap();
    let node = SimNode::new(3, &[]).unwrap();
    let broken = node.pod(2).clone();
    node.delete_route(2, broken.ipv4.into()).unwrap();

    let out = check(&node, &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("PROBLEMS: 1 of 3 pods"), "{text}");
    assert!(lines[1].starts_with("POD"), "{text}");
    assert!(lines[2].starts_with(&broken.interface), "{text}");
    assert!(lines[2].contains("route_missing"), "{text}");
    assert!(
        lines[3..5].iter().all(|l| l.trim_end().ends_with(" ok")),
        "{text}"
    );

    let out = check(&node, &[], &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("--json is JSON");
    assert_eq!(v["schema"], 1);
    assert_eq!(v["node"], "sim-node");
    assert_eq!(v["healthy"], false);
    assert_eq!(v["synced"], true);
    let pods = v["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 3);
    assert_eq!(pods[0]["interface"], broken.interface.as_str());
    assert_eq!(pods[0]["route"], "route_missing");
    assert!(
        pods[0]["reasons"]
            .as_array()
            .unwrap()
            .contains(&Value::from("route_missing")),
        "{v:#}"
    );
    assert!(pods[1..].iter().all(|p| p["verdict"] == "ok"), "{v:#}");
}

#[test]
fn without_privileges_or_with_bad_flags_exits_2() {
    netns::require_root().unwrap();
    let node = SimNode::new(1, &[]).unwrap();
    // Root's uid, but no capabilities at all (`setpriv` runs inside the namespace: entering it
    // needs them).
    let out = check(
        &node,
        &["setpriv", "--bounding-set", "-all", "--inh-caps", "-all"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot check") && err.contains("CAP_NET_ADMIN"),
        "{}",
        show(&out)
    );
    assert!(out.stdout.is_empty(), "{}", show(&out));

    let out = check(&node, &[], &["--probe-interval", "nonsense"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().count(),
        1,
        "{}",
        show(&out)
    );
}

#[test]
fn with_the_api_the_table_names_namespace_and_pod() {
    netns::require_root().unwrap();
    let c = Cluster::new(2).unwrap();
    let broken = c.node.pod(1).clone();
    c.node.delete_route(1, broken.ipv4.into()).unwrap();
    let kubeconfig = c.kubeconfig.to_str().unwrap();
    let out = check(
        &c.node,
        &[],
        &[
            "--pod-source",
            "kubernetes",
            "--kubeconfig",
            kubeconfig,
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("--json is JSON");
    assert_eq!(v["pod_source"], "kubernetes", "{v:#}");
    assert_eq!(
        v["pods"][0]["namespace"],
        broken.namespace.as_str(),
        "{v:#}"
    );
    assert_eq!(v["pods"][0]["pod"], broken.name.as_str(), "{v:#}");
    assert_eq!(v["pods"][0]["route"], "route_missing", "{v:#}");
    assert_eq!(v["pods"].as_array().unwrap().len(), 2, "{v:#}");
}
