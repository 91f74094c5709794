//! `kubectl-podnet` against the API double (real Node, Pod and events.k8s.io/v1 Event JSON):
//! `nodes` lists the node with podnet's condition first with its reason and the agent that is
//! not ready, `pods` the pod podnet warned about, `-o json` parses, and `check NODE` execs
//! `podnet-agent check` in that node's agent pod (kubectl replaced by a script that records
//! its arguments) and passes its exit code through.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use podnet_kube_double::{KubeApiServer, PodBuilder, calico_node};
use serde_json::{Value, json};

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-podnet");

struct Fixture {
    api: KubeApiServer,
    dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Fixture {
    fn new(name: &str) -> Self {
        let api = KubeApiServer::start(None, "127.0.0.1:0".parse().unwrap()).unwrap();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("plugin-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        api.kubeconfig(&dir.join("kubeconfig")).unwrap();
        Fixture { api, dir }
    }

    fn run(&self, args: &[&str], envs: &[(&str, &Path)]) -> Output {
        let mut cmd = Command::new(PLUGIN);
        cmd.arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig"))
            .args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A node as the kubelet has it, plus podnet's condition when given.
fn node(name: &str, ip: &str, problem: Option<(&str, &str, &str)>) -> Value {
    let mut n = calico_node(name, ip, None);
    if let Some((status, reason, message)) = problem {
        n["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .push(json!({
                "type": "PodNetworkProblem",
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": "2026-11-30T10:00:00Z",
                "lastTransitionTime": "2026-11-30T09:58:00Z"
            }));
    }
    n
}

/// The agent's pod on `node`, ready or not.
fn agent_pod(name: &str, node: &str, ready: bool) -> Value {
    let mut p = PodBuilder::new("podnet", name)
        .node(node)
        .label("app.kubernetes.io/name", "podnet")
        .build();
    p["status"]["conditions"] = json!([{
        "type": "Ready",
        "status": if ready { "True" } else { "False" }
    }]);
    p
}

fn event(name: &str, pod: &str, kind: &str, reason: &str, controller: &str, time: &str) -> Value {
    json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": "shop", "creationTimestamp": time},
        "eventTime": "2026-11-30T09:58:00.000000Z",
        "series": {"count": 4, "lastObservedTime": time},
        "reportingController": controller,
        "reportingInstance": "node-a",
        "action": "Check",
        "type": kind,
        "reason": reason,
        "note": format!("{pod}: no host route 10.244.7.3/32 dev cali0123456789a"),
        "regarding": {"kind": "Pod", "namespace": "shop", "name": pod, "apiVersion": "v1"}
    })
}

fn cluster(f: &Fixture) {
    f.api.apply_object(node(
        "node-b",
        "192.0.2.12",
        Some(("False", "PodNetworkOk", "all 12 pods wired")),
    ));
    f.api.apply_object(node(
        "node-a",
        "192.0.2.11",
        Some(("True", "PodRoutesMissing", "1 pod without its host route")),
    ));
    f.api.apply_object(node("node-c", "192.0.2.13", None));
    f.api
        .apply(agent_pod("podnet-aaaaa", "node-a", true))
        .unwrap();
    f.api
        .apply(agent_pod("podnet-bbbbb", "node-b", true))
        .unwrap();
    f.api
        .apply(agent_pod("podnet-ccccc", "node-c", false))
        .unwrap();
    f.api.apply_object(event(
        "cart.1",
        "cart-7d9f",
        "Warning",
        "PodRouteMissing",
        "podnet.io/agent",
        "2026-11-30T10:01:00Z",
    ));
    f.api.apply_object(event(
        "web.1",
        "web-0",
        "Warning",
        "PodRouteMissing",
        "podnet.io/agent",
        "2026-11-30T09:00:00Z",
    ));
    f.api.apply_object(event(
        "web.2",
        "web-0",
        "Normal",
        "PodNetworkRecovered",
        "podnet.io/agent",
        "2026-11-30T09:30:00Z",
    ));
    f.api.apply_object(event(
        "other.1",
        "db-0",
        "Warning",
        "BackOff",
        "kubelet",
        "2026-11-30T10:00:00Z",
    ));
}

#[test]
fn nodes_lists_the_problem_node_first() {
    let f = Fixture::new("nodes");
    cluster(&f);
    let out = f.run(&["nodes"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        lines[0],
        ["NAME", "PODNET-PROBLEM", "REASON", "AGENT"],
        "{t}"
    );
    assert_eq!(
        lines[1],
        ["node-a", "True", "PodRoutesMissing", "Ready"],
        "{t}"
    );
    // The node whose agent is not ready, podnet's condition never set.
    assert_eq!(lines[2], ["node-c", "-", "-", "NotReady"], "{t}");
    assert_eq!(
        lines[3],
        ["node-b", "False", "PodNetworkOk", "Ready"],
        "{t}"
    );

    let wide = f.run(&["nodes", "-o", "wide"], &[]);
    let w = String::from_utf8_lossy(&wide.stdout);
    assert!(w.lines().next().unwrap().contains("MESSAGE"), "{w}");
    assert!(
        w.lines()
            .nth(1)
            .unwrap()
            .contains("1 pod without its host route"),
        "{w}"
    );

    let json = f.run(&["nodes", "-o", "json"], &[]);
    let v: Value = serde_json::from_slice(&json.stdout).expect("-o json parses");
    assert_eq!(v["items"][0]["name"], "node-a");
    assert_eq!(v["items"][0]["reason"], "PodRoutesMissing");
    assert_eq!(v["items"][0]["agent_pod"], "podnet-aaaaa");
}

#[test]
fn pods_lists_the_affected_pod() {
    let f = Fixture::new("pods");
    cluster(&f);
    let out = f.run(&["pods", "-o", "wide"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 3, "only podnet's events, latest per pod:\n{t}");
    let first: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        first[..7],
        [
            "shop",
            "cart-7d9f",
            "Warning",
            "PodRouteMissing",
            "2026-11-30T10:01:00Z",
            "node-a",
            "4"
        ],
        "{t}"
    );
    assert!(lines[1].contains("no host route 10.244.7.3/32"), "{t}");
    // web-0 recovered: its latest Event is the Normal one.
    assert!(
        lines[2].contains("web-0") && lines[2].contains("PodNetworkRecovered"),
        "{t}"
    );
    assert!(!t.contains("db-0"), "{t}");
}

#[test]
fn check_execs_in_the_nodes_agent_pod_and_passes_the_exit_code() {
    let f = Fixture::new("check");
    cluster(&f);
    let log = f.dir.join("kubectl.args");
    let kubectl = f.dir.join("kubectl");
    std::fs::write(
        &kubectl,
        format!(
            "#!/bin/sh\necho \"$@\" > '{}'\necho 'PROBLEMS: 1 of 3 pods'\nexit 1\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = f.run(&["check", "node-b"], &[("KUBECTL", &kubectl)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("PROBLEMS: 1 of 3 pods"));
    let args = std::fs::read_to_string(&log).unwrap();
    assert!(
        args.trim_end()
            .ends_with("exec -n podnet podnet-bbbbb -- podnet-agent check"),
        "{args}"
    );
    let out = f.run(&["check", "no-such-node"], &[("KUBECTL", &kubectl)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no podnet agent pod"));
}
