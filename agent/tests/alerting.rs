//! The shipped alert rules, end to end, with the real components: a simulated Calico node, the
//! real agent, the real Prometheus and Alertmanager (Debian packages), and a webhook receiver,
//! all inside the node's network namespace on its loopback.
//!
//! A pod's host route is deleted → the webhook receives `PodnetPodRouteMissing` firing for that
//! pod; the route is restored → it receives the resolved notification. Then the agent is
//! stopped → `PodnetAgentDown` fires; started again → resolved. Prometheus uses a copy of
//! `deploy/prometheus/podnet-rules.yaml` whose `for:` durations are shortened to
//! [`TEST_FOR`]; everything else is the shipped file. Every process is stopped and every
//! temporary directory removed on drop, also when the test fails.
//!
//! Incident 2 end to end: on a control-plane node (an API double with metrics-server's
//! APIService, Service and EndpointSlice, a TLS server in a pod namespace as metrics-server, a
//! kube-apiserver mirror pod without `--enable-aggregator-routing`), no service proxy → the
//! webhook receives `PodnetAggregatedAPIUnreachable`; kube-proxy's DNAT added → resolved.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use podnet_kube_double::{apiserver_mirror_pod, apiservice, endpoint_slice, service};
use podnet_testbed::agent::{Agent, PORT as AGENT_PORT};
use podnet_testbed::alerting::{
    AlertStack, TEST_FOR, Target, alertmanager_config, prometheus_config, seconds,
};
use podnet_testbed::cluster::{Cluster, NODE};
use podnet_testbed::simnode::SimNode;

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");

/// The agent pod's name in the target labels (`agent_pod`).
const AGENT_POD: &str = "podnet-agent-e2e";

/// The simulated node, alone (node mode) or with an API double (Kubernetes mode).
enum Host {
    Node(SimNode),
    Cluster(Cluster),
}

impl Host {
    fn node(&self) -> &SimNode {
        match self {
            Host::Node(n) => n,
            Host::Cluster(c) => &c.node,
        }
    }

    fn start_agent(&self, args: &[&str]) -> Result<Agent> {
        match self {
            Host::Node(n) => Agent::start_binary(AGENT.as_ref(), n, args),
            Host::Cluster(c) => c.agent(AGENT.as_ref(), args),
        }
    }
}

/// Everything the test runs, in drop order: Prometheus, Alertmanager and the webhook first,
/// the node last.
struct Bed {
    stack: AlertStack,
    agent: Option<Agent>,
    host: Host,
}

impl Bed {
    fn start() -> Result<Self> {
        Self::start_on(Host::Node(SimNode::new(3, &[])?), &[])
    }

    fn start_on(host: Host, agent_args: &[&str]) -> Result<Self> {
        let agent = host.start_agent(agent_args)?;
        let target = Target {
            port: AGENT_PORT,
            node: NODE,
            agent_pod: AGENT_POD,
        };
        let stack = AlertStack::start(
            host.node().node_netns(),
            &prometheus_config(&[target]),
            &alertmanager_config(),
        )?;
        Ok(Bed {
            stack,
            agent: Some(agent),
            host,
        })
    }

    fn diagnostics(&self) -> String {
        format!(
            "{}\n{}",
            self.stack.diagnostics(),
            self.agent.as_ref().map(Agent::log_tail).unwrap_or_default()
        )
    }
}

#[test]
fn route_missing_reaches_alertmanager_and_resolves() {
    let mut bed = Bed::start().expect("starting the node, the agent, Prometheus and Alertmanager");
    if let Err(e) = scenario(&mut bed) {
        panic!("{e:#}\n{}", bed.diagnostics());
    }
}

fn scenario(bed: &mut Bed) -> Result<()> {
    let started = Instant::now();
    // Prometheus scrapes the agent and has found Alertmanager.
    bed.stack.wait_ready()?;
    eprintln!(
        "Prometheus scraping, Alertmanager discovered after {}",
        seconds(started.elapsed())
    );

    // Healthy node: a few evaluation rounds (rules are evaluated every second) with no alert,
    // not even a pending one, and no notification.
    std::thread::sleep(Duration::from_secs(4));
    bed.stack.check()?;
    let alerts = bed.stack.api("/api/v1/alerts")?;
    if alerts["alerts"].as_array().is_none_or(|a| !a.is_empty()) {
        bail!("alerts on a healthy node: {alerts}");
    }
    if !bed.stack.webhook.received().is_empty() {
        bail!("notifications on a healthy node");
    }

    // The incident: pod 1's host route disappears.
    let pod = bed.host.node().pod(1).clone();
    let ip = pod.ipv4.to_string();
    let broken = Instant::now();
    bed.host.node().delete_route(1, pod.ipv4.into())?;
    let (fired_at, alert) = bed.stack.wait_notification(
        "PodnetPodRouteMissing firing for the pod",
        broken,
        "PodnetPodRouteMissing",
        "firing",
        &[("interface", &pod.interface), ("ip", &ip)],
    )?;
    let firing_latency = fired_at - broken;
    eprintln!(
        "route deleted → firing PodnetPodRouteMissing at the webhook: {} (for: {TEST_FOR})",
        seconds(firing_latency)
    );
    let labels = &alert["labels"];
    for (k, v) in [
        ("severity", "critical"),
        ("reason", "route_missing"),
        ("job", "podnet"),
        ("node", "sim-node"),
        ("instance", &format!("127.0.0.1:{AGENT_PORT}")),
    ] {
        if labels[k] != v {
            bail!("label {k} is {} (want {v}) in {alert}", labels[k]);
        }
    }
    // Node mode: the agent leaves namespace/pod empty, and the agent pod's own must not
    // take their place.
    for k in ["namespace", "pod"] {
        if !labels[k].is_null() && labels[k] != "" {
            bail!(
                "the alert names the agent's {k} ({}) instead of none: {alert}",
                labels[k]
            );
        }
    }
    let description = alert["annotations"]["description"]
        .as_str()
        .unwrap_or_default();
    for want in [
        ip.as_str(),
        pod.interface.as_str(),
        "sim-node",
        "calico-node",
    ] {
        if !description.contains(want) {
            bail!("description does not mention {want}: {description:?}");
        }
    }
    if !alert["annotations"]["runbook_url"]
        .as_str()
        .is_some_and(|u| u.ends_with("docs/runbooks.md#podnetpodroutemissing"))
    {
        bail!("runbook_url: {alert}");
    }

    // The repair.
    let repaired = Instant::now();
    bed.host.node().restore_routes(1)?;
    let (resolved_at, _) = bed.stack.wait_notification(
        "PodnetPodRouteMissing resolved",
        repaired,
        "PodnetPodRouteMissing",
        "resolved",
        &[("interface", &pod.interface), ("ip", &ip)],
    )?;
    let resolved_latency = resolved_at - repaired;
    eprintln!(
        "route restored → resolved PodnetPodRouteMissing at the webhook: {}",
        seconds(resolved_latency)
    );
    // Nothing but that pod's route alert was raised on the way.
    for n in bed.stack.webhook.received() {
        for a in n.alerts() {
            if a["labels"]["alertname"] != "PodnetPodRouteMissing"
                || a["labels"]["ip"] != ip.as_str()
            {
                bail!("unexpected alert while one route was missing: {a}");
            }
        }
    }

    // The agent goes away: PodnetAgentDown, labelled with the agent pod (agent_* target labels).
    let mut agent = bed.agent.take().ok_or_else(|| anyhow!("no agent"))?;
    let stopped = Instant::now();
    agent.stop()?;
    drop(agent);
    let (down_at, down) = bed.stack.wait_notification(
        "PodnetAgentDown firing",
        stopped,
        "PodnetAgentDown",
        "firing",
        &[
            ("agent_pod", AGENT_POD),
            ("agent_namespace", "podnet"),
            ("node", "sim-node"),
        ],
    )?;
    eprintln!(
        "agent stopped → firing PodnetAgentDown: {} ({})",
        seconds(down_at - stopped),
        down["annotations"]["description"]
    );
    let restarted = Instant::now();
    bed.agent = Some(bed.host.start_agent(&[])?);
    bed.stack.wait_notification(
        "PodnetAgentDown resolved",
        restarted,
        "PodnetAgentDown",
        "resolved",
        &[("agent_pod", AGENT_POD)],
    )?;
    eprintln!(
        "agent restarted → resolved PodnetAgentDown: {}",
        seconds(restarted.elapsed())
    );
    bed.stack.check()
}

const METRICS_IP: &str = "10.96.0.10";
const METRICS_PORT: u16 = 10250;
const APISERVICE: &str = "v1beta1.metrics.k8s.io";

#[test]
fn aggregated_api_unreachable_reaches_alertmanager_and_resolves() {
    let cluster = Cluster::new(2).expect("starting the node and the API double");
    let ms = cluster.node.pod(0).clone();
    let endpoint = std::net::SocketAddr::from((ms.ipv4, METRICS_PORT));
    let api = &cluster.api;
    api.apply(apiserver_mirror_pod(NODE, "192.0.2.10", &[]))
        .expect("mirror pod");
    api.apply_object(apiservice(
        APISERVICE,
        "kube-system",
        "metrics-server",
        Some((false, "FailedDiscoveryCheck")),
    ));
    api.apply_object(service(
        "kube-system",
        "metrics-server",
        METRICS_IP,
        443,
        "https",
        METRICS_PORT,
    ));
    api.apply_object(endpoint_slice(
        "kube-system",
        "metrics-server",
        "https",
        METRICS_PORT,
        &[(&ms.ipv4.to_string(), true)],
    ));
    let server = podnet_testbed::podserver::PodServer::start(
        &ms.netns,
        endpoint,
        Some("metrics-server.kube-system.svc"),
    );
    let args = [
        "--no-probes",
        "--control-plane-checks",
        "auto",
        "--control-plane-relist",
        "1s",
        "--probe-interval",
        "1s",
        "--probe-timeout",
        "300ms",
    ];
    let mut bed = Bed::start_on(Host::Cluster(cluster), &args)
        .expect("starting the agent, Prometheus and Alertmanager");
    let result = control_plane_scenario(&mut bed, endpoint);
    drop(server);
    if let Err(e) = result {
        panic!("{e:#}\n{}", bed.diagnostics());
    }
}

fn control_plane_scenario(bed: &mut Bed, endpoint: std::net::SocketAddr) -> Result<()> {
    // The incident from the start: no kube-proxy on this control-plane node.
    let start = Instant::now();
    let labels = [
        ("service", "metrics-server"),
        ("apiservices", APISERVICE),
        ("reason", "cluster_ip_unreachable"),
    ];
    let (fired_at, alert) = bed.stack.wait_notification(
        "PodnetAggregatedAPIUnreachable firing",
        start,
        "PodnetAggregatedAPIUnreachable",
        "firing",
        &labels,
    )?;
    eprintln!(
        "agent started without a service proxy → firing PodnetAggregatedAPIUnreachable: {} (for: {TEST_FOR})",
        seconds(fired_at - start)
    );
    let description = alert["annotations"]["description"]
        .as_str()
        .unwrap_or_default();
    for want in [
        "kube-system/metrics-server:443",
        "--enable-aggregator-routing=true",
        "kube-proxy",
        "sim-node",
    ] {
        if !description.contains(want) {
            bail!("description does not mention {want}: {description:?}");
        }
    }
    // kube-proxy arrives: the ClusterIP is DNATed to the endpoint.
    let repaired = Instant::now();
    podnet_testbed::podserver::dnat(bed.host.node().node_netns(), METRICS_IP, endpoint);
    bed.stack.wait_notification(
        "PodnetAggregatedAPIUnreachable resolved",
        repaired,
        "PodnetAggregatedAPIUnreachable",
        "resolved",
        &labels,
    )?;
    eprintln!("DNAT added → resolved: {}", seconds(repaired.elapsed()));
    // No webhook alert: the Service has no webhook users.
    for n in bed.stack.webhook.received() {
        for a in n.alerts() {
            if a["labels"]["alertname"] != "PodnetAggregatedAPIUnreachable" {
                bail!("unexpected alert: {a}");
            }
        }
    }
    bed.stack.check()
}
