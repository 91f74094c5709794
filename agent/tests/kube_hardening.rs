//! The Kubernetes source against a hostile pod population (issue 10): tenants pinning pods with
//! megabyte annotations, and thousands of Failed pods, to the node. The agent's memory must not
//! follow their size, and the real pods must still be judged correctly.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use podnet_kube_double::{Config, KubeApiServer, Outage, PodBuilder};
use podnet_testbed::agent::Agent;
use podnet_testbed::simnode::{PodSpec, SimNode, SimPod};
use serde_json::{Value, json};

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");

const NODE: &str = "sim-node";
const WAIT: Duration = Duration::from_secs(90);
/// Real (wired) pods, each with a 1 MiB annotation: 40 MiB in one list page of 100.
const FAT_PODS: usize = 40;
const ANNOTATION: usize = 1 << 20;
const FAILED_PODS: usize = 5_000;
/// The documented bound (docs/security.md): the agent's peak RSS with all of the above.
const PEAK_RSS_BOUND_KIB: u64 = 40 * 1024;

/// `pod` as the API has it, with a 1 MiB annotation (as a tenant may write).
fn fat(pod: Value) -> Value {
    let mut pod = pod;
    pod["metadata"]["annotations"] = json!({"example.com/blob": "z".repeat(ANNOTATION)});
    pod
}

fn api_pod(p: &SimPod) -> Value {
    let mut b = PodBuilder::new(&p.namespace, &p.name)
        .node(NODE)
        .ipv4(p.ipv4);
    if let Some(v6) = p.ipv6 {
        b = b.ipv6(v6);
    }
    fat(b.build())
}

fn wait_listed(agent: &Agent, node: &SimNode) {
    let want: BTreeSet<String> = node
        .pods()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    let deadline = Instant::now() + WAIT;
    while agent.listed_pods().unwrap() != want {
        assert!(
            Instant::now() < deadline,
            "pods {:?} != {want:?}\n{}",
            agent.listed_pods().unwrap(),
            agent.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn peak_rss_kib(agent: &Agent) -> u64 {
    let pid = agent.pid().expect("agent pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

struct Kubeconfig(PathBuf);

impl Drop for Kubeconfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn megabyte_pods_and_thousands_of_failed_pods_keep_the_agent_small_and_right() {
    let mut node = SimNode::new(FAT_PODS, &[0]).unwrap();
    let config = Config {
        bookmark_interval: Duration::from_secs(1),
        ..Config::default()
    };
    let api = KubeApiServer::start_with(
        Some(node.node_netns()),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        config,
    )
    .unwrap();
    api.register_node(NODE);
    let kubeconfig =
        Kubeconfig(std::env::temp_dir().join(format!("{}-kubeconfig", node.node_netns())));
    api.kubeconfig(&kubeconfig.0).unwrap();
    for p in node.pods() {
        api.apply(api_pod(p)).unwrap();
    }
    // Pods the kubelet rejected or that ran to completion, pinned to this node: never the
    // agent's business, and (field selector) never sent to it. Some are fat too.
    api.bulk_insert((0..FAILED_PODS).map(|i| {
        let pod = PodBuilder::new("batch", &format!("job-{i}"))
            .node(NODE)
            .phase(if i % 2 == 0 { "Failed" } else { "Succeeded" })
            .ipv4(Ipv4Addr::new(
                10,
                244,
                200 + (i / 250) as u8,
                (i % 250) as u8 + 1,
            ))
            .build();
        if i < 10 { fat(pod) } else { pod }
    }));

    let args = [
        "--pod-source",
        "kubernetes",
        "--kubeconfig",
        kubeconfig.0.to_str().unwrap(),
        "--kube-watch-timeout",
        "5s",
        "--no-probes",
    ];
    let agent = Agent::start_binary(AGENT.as_ref(), &node, &args).unwrap();
    wait_listed(&agent, &node);
    agent
        .wait_metrics("the real pods judged healthy", WAIT, |m| {
            m.problems().is_empty() && m.node_problems().is_empty()
        })
        .unwrap();
    // The list asked for running pods only: the Failed ones never crossed the wire.
    let queries: Vec<String> = api
        .request_log()
        .into_iter()
        .filter(|r| r.path == "/api/v1/pods")
        .map(|r| r.query)
        .collect();
    assert!(!queries.is_empty());
    for q in &queries {
        assert!(
            q.contains("status.phase%21%3DFailed%2Cstatus.phase%21%3DSucceeded"),
            "{q}"
        );
    }

    // A fat pod through the watch, then a forced re-list of all of them (410 after an outage).
    let i = node.add_pod(PodSpec::named("team", "late-fat")).unwrap();
    api.apply(api_pod(node.pod(i))).unwrap();
    wait_listed(&agent, &node);
    let relists = api.stats().lists();
    api.set_outage(Some(Outage::Unavailable)).unwrap();
    // A change the agent has not seen, then compaction: its version is gone.
    api.apply(
        PodBuilder::new("batch", "during-outage")
            .node(NODE)
            .phase("Failed")
            .build(),
    )
    .unwrap();
    api.compact();
    api.set_outage(None).unwrap();
    let deadline = Instant::now() + WAIT;
    while api.stats().lists() == relists {
        assert!(
            Instant::now() < deadline,
            "no re-list\n{}",
            agent.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_listed(&agent, &node);

    // A real problem is still seen on a pod among the fat ones.
    let p = node.pod(3).clone();
    node.delete_route(3, p.ipv4.into()).unwrap();
    agent
        .wait_metrics("route_missing on the fat pod", WAIT, |m| {
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
    node.restore_routes(3).unwrap();

    let peak = peak_rss_kib(&agent);
    eprintln!(
        "agent peak RSS with {} pods of 1 MiB and {FAILED_PODS} finished pods: {} KiB",
        node.pods().count(),
        peak
    );
    assert!(
        peak < PEAK_RSS_BOUND_KIB,
        "peak RSS {peak} KiB over the documented {PEAK_RSS_BOUND_KIB} KiB"
    );
    assert_eq!(agent.get("/healthz").unwrap().0, 200);
}
