//! Issue 14 end to end with the real Prometheus and Alertmanager: the agent in Kubernetes mode
//! (the API double) on the simulated Calico node, the shipped rules (only their `for:`
//! shortened, as in every alerting test). A "kong" pod keeps connecting to the IP of a pod
//! that was deleted (the node's block blackhole swallows the SYNs, as on Calico) → the webhook
//! receives `PodnetPodStuckOnVanishedPod` for the kong pod, naming the stale destination; a
//! new pod given that IP answers → the resolved notification. The same client also keeps
//! failing to reach a live pod that drops SYNs (`node_pod`, as a NetworkPolicy does): no alert
//! for that one, nor any other.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Instant;

use anyhow::{Result, bail};
use podnet_testbed::agent::{Agent, PORT as AGENT_PORT};
use podnet_testbed::alerting::{
    AlertStack, TEST_FOR, Target, WAIT, alertmanager_config, prometheus_config, seconds,
};
use podnet_testbed::cluster::{Cluster, NODE, api_pod};
use podnet_testbed::connects::{accept, keep_connecting};
use podnet_testbed::simnode::{PodSpec, SimPod};

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");
/// The agent pod's name in the target labels (`agent_pod`).
const AGENT_POD: &str = "podnet-agent-e2e";
/// The stale upstream's port.
const PORT: u16 = 8080;
const ALERT: &str = "PodnetPodStuckOnVanishedPod";

/// Everything the test runs, in drop order: Prometheus, Alertmanager and the webhook first,
/// the node and the API last.
struct Bed {
    stack: AlertStack,
    agent: Agent,
    cluster: Cluster,
}

#[test]
fn a_client_stuck_on_a_vanished_pod_reaches_alertmanager_and_resolves() {
    let mut cluster = Cluster::new(3).expect("starting the node and the API double");
    let kong = cluster.node.pod(0).clone();
    let victim = cluster.node.pod(1).clone();
    let dropper = cluster.node.pod(2).clone();
    let dropping = Command::new("ip")
        .args(["netns", "exec", &dropper.netns, "iptables", "-A", "INPUT"])
        .args(["-p", "tcp", "--dport", &PORT.to_string(), "-j", "DROP"])
        .status()
        .expect("iptables");
    assert!(dropping.success(), "iptables in the dropping pod");
    // The upstream pod is deleted; its IP stays in the client's configuration.
    cluster
        .api
        .delete(&victim.namespace, &victim.name)
        .expect("deleting the pod from the API");
    cluster.node.remove_pod(1).expect("removing the pod");
    let agent = cluster
        .agent(
            AGENT.as_ref(),
            &["--probe-interval", "1s", "--probe-timeout", "500ms"],
        )
        .expect("starting the agent");
    let target = Target {
        port: AGENT_PORT,
        node: NODE,
        agent_pod: AGENT_POD,
    };
    let stack = AlertStack::start(
        cluster.node.node_netns(),
        &prometheus_config(&[target]),
        &alertmanager_config(),
    )
    .expect("starting Prometheus and Alertmanager");
    let mut bed = Bed {
        stack,
        agent,
        cluster,
    };
    if let Err(e) = scenario(&mut bed, &kong, &victim, &dropper) {
        panic!(
            "{e:#}\n{}\n{}",
            bed.stack.diagnostics(),
            bed.agent.log_tail()
        );
    }
}

fn scenario(bed: &mut Bed, kong: &SimPod, victim: &SimPod, dropper: &SimPod) -> Result<()> {
    bed.stack.wait_ready()?;
    let stale = SocketAddr::from((victim.ipv4, PORT));
    let alive = SocketAddr::from((dropper.ipv4, PORT));
    let labels = [
        ("namespace", kong.namespace.as_str()),
        ("pod", kong.name.as_str()),
        ("class", "vanished_pod_ip"),
    ];

    // Kong keeps proxying to the old address, and to a live pod that drops its SYNs.
    let started = Instant::now();
    let client = keep_connecting(&kong.netns, vec![stale, alive]);
    let (fired_at, alert) = bed.stack.wait_notification(
        "PodnetPodStuckOnVanishedPod firing for the kong pod",
        started,
        ALERT,
        "firing",
        &labels,
    )?;
    eprintln!(
        "client connecting to {stale} → firing {ALERT} at the webhook: {} (for: {TEST_FOR})",
        seconds(fired_at - started)
    );
    for (k, v) in [
        ("severity", "warning"),
        ("interface", kong.interface.as_str()),
        ("job", "podnet"),
        ("node", NODE),
        ("agent_pod", AGENT_POD),
    ] {
        if alert["labels"][k] != v {
            bail!("label {k} is {} (want {v}) in {alert}", alert["labels"][k]);
        }
    }
    let annotations = &alert["annotations"];
    if annotations["summary"] != "A pod keeps connecting to the IP of a pod that no longer exists."
    {
        bail!("summary: {alert}");
    }
    let description = annotations["description"].as_str().unwrap_or_default();
    let client_pod = format!("Pod {}/{} on node {NODE}", kong.namespace, kong.name);
    let destination = format!("belong to no pod ({stale})");
    for want in [client_pod.as_str(), destination.as_str(), "stale upstream"] {
        if !description.contains(want) {
            bail!("description does not say {want:?}: {description:?}");
        }
    }
    // The live pod is reported (another class) but not named by this alert.
    let node_pod = [("pod", kong.name.as_str()), ("class", "node_pod")];
    bed.agent
        .wait_metrics("the dropping pod reported as node_pod", WAIT, |m| {
            m.value_with("podnet_pod_unanswered_connects", &node_pod) == Some(1.0)
        })?;
    if description.contains(&alive.to_string()) {
        bail!("the description names the live pod {alive}: {description:?}");
    }
    if !annotations["runbook_url"]
        .as_str()
        .is_some_and(|u| u.ends_with("docs/runbooks.md#podnetpodstuckonvanishedpod"))
    {
        bail!("runbook_url: {alert}");
    }

    // The address comes back: a new pod gets it and answers, the client's connects succeed.
    let back = Instant::now();
    let i = bed
        .cluster
        .node
        .add_pod(PodSpec::named("team", "reborn").with_ipv4(victim.ipv4))?;
    let reborn = bed.cluster.node.pod(i).clone();
    let server = accept(&reborn.netns, SocketAddr::from(([0, 0, 0, 0], PORT)))?;
    bed.cluster.api.apply(api_pod(&reborn))?;
    let (resolved_at, _) = bed.stack.wait_notification(
        "PodnetPodStuckOnVanishedPod resolved",
        back,
        ALERT,
        "resolved",
        &labels,
    )?;
    eprintln!(
        "the address answers again → resolved {ALERT} at the webhook: {}",
        seconds(resolved_at - back)
    );
    drop(client);
    drop(server);
    // Nothing else was notified on the way: no network problem, only a stale client.
    for n in bed.stack.webhook.received() {
        for a in n.alerts() {
            if a["labels"]["alertname"] != ALERT {
                bail!("unexpected alert: {a}");
            }
        }
    }
    bed.stack.check()
}
