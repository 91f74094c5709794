//! calico-node awareness: the agent reads a felix double on the simulated node's loopback
//! (health and Prometheus endpoints in the real formats) and exports what it read — and never
//! reports felix healthy when it cannot read it.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use podnet_kube_double::PodBuilder;
use podnet_testbed::agent::Agent;
use podnet_testbed::cluster::{Cluster, NODE, api_pod};
use podnet_testbed::exposition::Samples;
use podnet_testbed::felix::FelixDouble;
use podnet_testbed::simnode::{PodSpec, SimNode};

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");
/// A timeout for what must happen, not a latency bound: generous for a loaded 2-core machine
/// (the stale verdict needs the wiring grace and several felix reads).
const WAIT: Duration = Duration::from_secs(60);

fn felix(m: &Samples) -> (Option<f64>, Option<f64>, Option<f64>, Option<f64>) {
    (
        m.value("podnet_calico_felix_up"),
        m.value("podnet_calico_felix_ready"),
        m.value("podnet_calico_felix_metrics_up"),
        m.value("podnet_calico_felix_active_local_endpoints"),
    )
}

#[test]
fn felix_read_and_never_healthy_when_unreadable() {
    let node = SimNode::new(1, &[]).unwrap();
    let double = FelixDouble::start(node.node_netns(), 0, 0).unwrap();
    double.set(|s| s.active_local_endpoints = 7);
    let (health, metrics) = (double.health.to_string(), double.metrics.to_string());
    let mut agent = Agent::start_binary(
        AGENT.as_ref(),
        &node,
        &[
            "--no-probes",
            "--calico-felix-health",
            &health,
            "--calico-felix-metrics",
            &metrics,
            "--calico-felix-interval",
            "100ms",
        ],
    )
    .unwrap();
    let want =
        |w: (Option<f64>, Option<f64>, Option<f64>, Option<f64>)| move |m: &Samples| felix(m) == w;
    agent
        .wait_metrics(
            "felix ready",
            WAIT,
            want((Some(1.0), Some(1.0), Some(1.0), Some(7.0))),
        )
        .unwrap();
    let m = agent.metrics().unwrap();
    assert_eq!(m.value("podnet_calico_felix_resync_state"), Some(3.0));
    // The felix reader is a supervised worker that stays up.
    assert_eq!(
        agent.get("/healthz").unwrap().0,
        200,
        "{}",
        agent.log_tail()
    );
    // Not ready: 503 with the component table.
    double.set(|s| {
        s.ready = false;
        s.active_local_endpoints = 5;
    });
    agent
        .wait_metrics(
            "felix not ready",
            WAIT,
            want((Some(1.0), Some(0.0), Some(1.0), Some(5.0))),
        )
        .unwrap();
    // Gone: unreadable is not ready, and its counts disappear rather than go stale.
    drop(double);
    agent
        .wait_metrics(
            "felix unreadable",
            WAIT,
            want((Some(0.0), Some(0.0), Some(0.0), None)),
        )
        .unwrap();
    assert_eq!(
        agent
            .metrics()
            .unwrap()
            .value("podnet_calico_felix_resync_state"),
        None
    );
    agent.stop().unwrap();
}

/// The incident, shortened: felix ready and in sync, a new pod the API runs here, its route
/// added by the CNI and removed by felix a moment later (felix never learned the pod: it still
/// counts the old endpoints) → `calico_node_stale` naming the evidence; cleared once felix
/// catches up and the route is back; with felix unreadable it is never claimed either way.
#[test]
fn felix_ready_but_stale_is_named() {
    let mut c = Cluster::new(2).unwrap();
    let double = FelixDouble::start(c.node.node_netns(), 0, 0).unwrap();
    double.set(|s| s.active_local_endpoints = 2);
    let (health, metrics) = (double.health.to_string(), double.metrics.to_string());
    let extra = [
        "--no-probes",
        "--wiring-grace",
        "1s",
        "--calico-felix-health",
        &health,
        "--calico-felix-metrics",
        &metrics,
        "--calico-felix-interval",
        "100ms",
    ];
    let mut agent = c.agent(AGENT.as_ref(), &extra).unwrap();
    let stale = |m: &Samples| m.node_problems().contains("calico_node_stale");
    agent
        .wait_metrics("felix read, nothing stale", WAIT, |m| {
            m.value("podnet_calico_felix_active_local_endpoints") == Some(2.0) && !stale(m)
        })
        .unwrap();
    // A new pod: wired by the CNI, known to the API, unknown to felix, which removes its
    // route after its grace period (shortened from ~10 s).
    let i = c.node.add_pod(PodSpec::named("shop", "new-1")).unwrap();
    c.api.apply(api_pod(c.node.pod(i))).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    c.node
        .delete_route(i, IpAddr::V4(c.node.pod(i).ipv4))
        .unwrap();
    let started = Instant::now();
    agent
        .wait_metrics("calico_node_stale", WAIT, stale)
        .unwrap();
    eprintln!("calico_node_stale after {:?}", started.elapsed());
    // Named at once by the route that vanished, then by the routeless pod past its grace.
    let status = agent.status().unwrap().to_string();
    assert!(
        status.contains("the route of 1 pod appeared and was removed within ~")
            && status.contains("s while the pod lives (shop/new-1)"),
        "{status}"
    );
    let deadline = Instant::now() + WAIT;
    let status = loop {
        let status = agent.status().unwrap().to_string();
        if status.contains("1 of 3 pods") || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.contains("1 of 3 pods"), "{status}");
    assert!(status.contains("felix knows 2 local endpoints"), "{status}");
    assert!(status.contains("restart calico-node"), "{status}");
    // calico-node restarted: felix learns the pod and puts its route back.
    double.set(|s| s.active_local_endpoints = 3);
    c.node.restore_routes(i).unwrap();
    agent
        .wait_metrics("stale cleared", WAIT, |m| !stale(m))
        .unwrap();
    // The route goes again while felix cannot be read: unknown, not stale and not healthy.
    drop(double);
    c.node
        .delete_route(i, IpAddr::V4(c.node.pod(i).ipv4))
        .unwrap();
    let m = agent
        .wait_metrics("felix unreadable", WAIT, |m| {
            m.value("podnet_calico_felix_up") == Some(0.0) && !m.problems().is_empty()
        })
        .unwrap();
    assert!(!stale(&m));
    assert_eq!(m.value("podnet_calico_felix_ready"), Some(0.0));
    agent.stop().unwrap();
}

/// The incident's exact tell, as it unfolds: new pods whose routes the CNI added and felix
/// removed a moment later (shortened from ~10 s), again and again, while the pods live → named
/// in `calico_node_stale`'s evidence within the wiring grace (here longer than the test), and
/// counted; cleared once the routes stay.
#[test]
fn routes_that_appear_and_vanish_are_named() {
    let mut c = Cluster::new(1).unwrap();
    let double = FelixDouble::start(c.node.node_netns(), 0, 0).unwrap();
    double.set(|s| s.active_local_endpoints = 1);
    let health = double.health.to_string();
    let extra = [
        "--no-probes",
        "--wiring-grace",
        "10m",
        "--calico-felix-health",
        &health,
        "--calico-felix-interval",
        "100ms",
    ];
    let mut agent = c.agent(AGENT.as_ref(), &extra).unwrap();
    let stale = |m: &Samples| m.node_problems().contains("calico_node_stale");
    let removed = |m: &Samples| m.value("podnet_pod_routes_removed_total");
    agent
        .wait_metrics("felix ready, nothing stale", WAIT, |m| {
            m.value("podnet_calico_felix_ready") == Some(1.0)
                && removed(m) == Some(0.0)
                && !stale(m)
        })
        .unwrap();
    let pods: Vec<usize> = ["new-1", "new-2"]
        .iter()
        .map(|n| {
            let i = c.node.add_pod(PodSpec::named("shop", n)).unwrap();
            c.api.apply(api_pod(c.node.pod(i))).unwrap();
            i
        })
        .collect();
    let listed = || {
        let l = agent.listed_pods().unwrap();
        l.contains("shop/new-1") && l.contains("shop/new-2")
    };
    let deadline = Instant::now() + WAIT;
    while !listed() {
        assert!(Instant::now() < deadline, "{}", agent.log_tail());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Three rounds of felix removing what the CNI added: for new-1 every round, new-2 once.
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(1500));
        for &i in &pods[..if round == 0 { 2 } else { 1 }] {
            c.node
                .delete_route(i, IpAddr::V4(c.node.pod(i).ipv4))
                .unwrap();
        }
        let want = 2.0 + f64::from(round);
        let m = agent
            .wait_metrics("removals counted", WAIT, |m| {
                stale(m) && removed(m) == Some(want)
            })
            .unwrap();
        assert!(stale(&m));
        if round < 2 {
            c.node.restore_routes(pods[0]).unwrap();
            let interface = c.node.pod(pods[0]).interface.clone();
            agent
                .wait_metrics("new-1 routed again", WAIT, |m| {
                    !m.problems().iter().any(|(i, _, _)| *i == interface)
                })
                .unwrap();
        }
    }
    let status = agent.status().unwrap().to_string();
    assert!(
        status.contains("routes of 2 pods appeared and were removed within ~"),
        "{status}"
    );
    assert!(status.contains("shop/new-1 3×"), "{status}");
    assert!(status.contains("shop/new-2"), "{status}");
    assert!(status.contains("restart calico-node"), "{status}");
    // calico-node restarted: the routes come back and stay.
    for &i in &pods {
        c.node.restore_routes(i).unwrap();
    }
    let m = agent
        .wait_metrics("stale cleared", WAIT, |m| !stale(m))
        .unwrap();
    assert_eq!(removed(&m), Some(4.0));
    agent.stop().unwrap();
}

/// A host-network pod of this node with a `calico-node` container running `image`.
fn calico_node_pod(namespace: &str, image: &str) -> serde_json::Value {
    let mut p = PodBuilder::new(namespace, "calico-node-x7k2p")
        .node(NODE)
        .host_network()
        .build();
    p["spec"]["containers"] = serde_json::json!([
        {"name": "calico-node", "image": image, "env": [{"name": "DATASTORE_TYPE", "value": "kubernetes"}]},
    ]);
    p
}

/// The calico-node pod on this node is in the pod watch: its version is exported, shown in
/// `/status`, and for a version with the incident's watch bug (calico#6032, < v3.23.1) the
/// stale message says so and says to upgrade. A tenant's look-alike pod is not believed.
#[test]
fn calico_node_version_is_read_and_the_known_bug_named() {
    let c = Cluster::new(1).unwrap();
    let double = FelixDouble::start(c.node.node_netns(), 0, 0).unwrap();
    double.set(|s| s.active_local_endpoints = 1);
    c.api
        .apply(calico_node_pod(
            "calico-system",
            "docker.io/calico/node:v3.22.4",
        ))
        .unwrap();
    // A tenant cannot vouch for a fixed version (its key sorts first: it would be chosen).
    c.api
        .apply(calico_node_pod("attacker", "calico/node:v3.26.1"))
        .unwrap();
    let health = double.health.to_string();
    let extra = [
        "--no-probes",
        "--wiring-grace",
        "1s",
        "--calico-felix-health",
        &health,
        "--calico-felix-interval",
        "100ms",
    ];
    let mut agent = c.agent(AGENT.as_ref(), &extra).unwrap();
    let info = |m: &Samples, version: &str, bug: &str| {
        m.value_with(
            "podnet_calico_node_info",
            &[("version", version), ("known_watch_bug", bug)],
        ) == Some(1.0)
    };
    agent
        .wait_metrics("calico-node v3.22.4", WAIT, |m| info(m, "v3.22.4", "true"))
        .unwrap();
    let status = agent.status().unwrap();
    let cn = &status["kube"]["calico_node"];
    assert_eq!(cn["pod"], "calico-system/calico-node-x7k2p", "{status}");
    assert_eq!(cn["version"], "v3.22.4", "{status}");
    assert_eq!(cn["known_watch_bug"], true, "{status}");
    // The incident: a route felix removed.
    c.node
        .delete_route(0, IpAddr::V4(c.node.pod(0).ipv4))
        .unwrap();
    let stale = |m: &Samples| m.node_problems().contains("calico_node_stale");
    agent.wait_metrics("stale", WAIT, stale).unwrap();
    let detail = agent.status().unwrap()["node_problems"].to_string();
    assert!(
        detail.contains("calico-system/calico-node-x7k2p runs Calico v3.22.4, which has the known watch bug (calico#6032/typha#227"),
        "{detail}"
    );
    assert!(
        detail.contains("upgrade Calico to v3.23.1 or later"),
        "{detail}"
    );
    // Upgraded (same pod name, as a test shortcut): the fix is there, the message says so.
    let digest = "sha256:5d5e7a4f0c1b2a3e4d5c6b7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a6f7e";
    c.api
        .apply(calico_node_pod(
            "calico-system",
            &format!("quay.io/calico/node:v3.26.1@{digest}"),
        ))
        .unwrap();
    agent
        .wait_metrics("calico-node v3.26.1", WAIT, |m| {
            info(m, "v3.26.1", "false") && !info(m, "v3.22.4", "true")
        })
        .unwrap();
    let detail = agent.status().unwrap()["node_problems"].to_string();
    assert!(
        detail.contains("Calico v3.26.1, which has the fix"),
        "{detail}"
    );
    // A digest without a tag: unknown, never assumed fixed or broken.
    c.api
        .apply(calico_node_pod(
            "calico-system",
            &format!("docker.io/calico/node@{digest}"),
        ))
        .unwrap();
    agent
        .wait_metrics("calico-node unknown", WAIT, |m| info(m, "unknown", "false"))
        .unwrap();
    // Gone from the API: no info series.
    assert!(c.api.delete("calico-system", "calico-node-x7k2p").is_some());
    agent
        .wait_metrics("no calico-node", WAIT, |m| {
            m.value("podnet_calico_node_info").is_none()
        })
        .unwrap();
    agent.stop().unwrap();
}
