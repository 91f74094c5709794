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

#[path = "support/alerting.rs"]
mod support;

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use podnet_kube_double::{apiserver_mirror_pod, apiservice, endpoint_slice, service};
use podnet_testbed::agent::{Agent, HttpClient, PORT as AGENT_PORT};
use podnet_testbed::cluster::{Cluster, NODE};
use podnet_testbed::simnode::SimNode;
use serde_json::Value;
use support::{Daemon, TEST_FOR, TempDir, Webhook, require, test_rules};

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");

const PROMETHEUS_PORT: u16 = 9090;
const ALERTMANAGER_PORT: u16 = 9093;
const WEBHOOK_PORT: u16 = 9095;
/// Generous guard for every wait; the real latencies are a few seconds.
const WAIT: Duration = Duration::from_secs(90);
/// Target labels the shipped scrape configs give the agent's target (node from
/// `__meta_kubernetes_pod_node_name`, the agent pod's namespace and name as
/// `agent_namespace`/`agent_pod`, never as `namespace`/`pod`).
const AGENT_POD: &str = "podnet-agent-e2e";

fn prometheus_config() -> String {
    format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - rules.yaml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:{ALERTMANAGER_PORT}"]
scrape_configs:
  # As deploy/prometheus/prometheus.yaml and the ServiceMonitor label the agent's target.
  - job_name: podnet
    honor_labels: true
    static_configs:
      - targets: ["127.0.0.1:{AGENT_PORT}"]
        labels:
          node: sim-node
          agent_namespace: podnet
          agent_pod: {AGENT_POD}
"#
    )
}

fn alertmanager_config() -> String {
    format!(
        r#"route:
  receiver: webhook
  group_by: ["..."]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: webhook
    webhook_configs:
      - url: http://127.0.0.1:{WEBHOOK_PORT}/alerts
        send_resolved: true
"#
    )
}

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

/// Everything the test runs, in drop order: webhook and daemons first, the node last.
struct Bed {
    webhook: Webhook,
    prometheus: Daemon,
    alertmanager: Daemon,
    api: HttpClient,
    am_api: HttpClient,
    agent: Option<Agent>,
    _dir: TempDir,
    host: Host,
}

impl Bed {
    fn start() -> Result<Self> {
        Self::start_on(Host::Node(SimNode::new(3, &[])?), &[])
    }

    fn start_on(host: Host, agent_args: &[&str]) -> Result<Self> {
        let prometheus_bin = require("prometheus", "prometheus");
        let alertmanager_bin = require("prometheus-alertmanager", "prometheus-alertmanager");
        let ns = host.node().node_netns().to_owned();
        let dir = TempDir::new()?;
        std::fs::write(dir.path("rules.yaml"), test_rules()?)?;
        std::fs::write(dir.path("prometheus.yaml"), prometheus_config())?;
        std::fs::write(dir.path("alertmanager.yaml"), alertmanager_config())?;
        let path = |n: &str| dir.path(n).display().to_string();

        let agent = host.start_agent(agent_args)?;
        let webhook = Webhook::start(&ns, WEBHOOK_PORT)?;
        let alertmanager = Daemon::start(
            &ns,
            "alertmanager",
            &alertmanager_bin,
            &[
                format!("--config.file={}", path("alertmanager.yaml")),
                format!("--storage.path={}", path("alertmanager-data")),
                format!("--web.listen-address=127.0.0.1:{ALERTMANAGER_PORT}"),
                "--cluster.listen-address=".into(),
            ],
            &dir,
        )?;
        let prometheus = Daemon::start(
            &ns,
            "prometheus",
            &prometheus_bin,
            &[
                format!("--config.file={}", path("prometheus.yaml")),
                format!("--storage.tsdb.path={}", path("prometheus-data")),
                format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"),
            ],
            &dir,
        )?;
        Ok(Bed {
            webhook,
            prometheus,
            alertmanager,
            api: HttpClient::new(&ns, PROMETHEUS_PORT)?,
            am_api: HttpClient::new(&ns, ALERTMANAGER_PORT)?,
            agent: Some(agent),
            _dir: dir,
            host,
        })
    }

    fn check(&mut self) -> Result<()> {
        self.prometheus.check()?;
        self.alertmanager.check()?;
        self.webhook.check()
    }

    /// GET a Prometheus API path and return its `data`.
    fn api(&self, path: &str) -> Result<Value> {
        let (code, body) = self.api.get(path)?;
        if code != 200 {
            bail!("GET {path}: {code} {body}");
        }
        let v: Value = serde_json::from_str(&body)?;
        Ok(v["data"].clone())
    }

    /// Poll `f` until it returns `Some`; fail after [`WAIT`] or when a process died.
    fn wait<T>(&mut self, what: &str, mut f: impl FnMut(&Self) -> Result<Option<T>>) -> Result<T> {
        let deadline = Instant::now() + WAIT;
        let mut last_err = None;
        loop {
            self.check()?;
            match f(self) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last_err = Some(e),
            }
            if Instant::now() > deadline {
                bail!("timed out after {WAIT:?} waiting for {what} (last error: {last_err:?})");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The first notification received after `since` that holds an alert named `alertname`
    /// with `status` and these labels.
    fn wait_notification(
        &mut self,
        what: &str,
        since: Instant,
        alertname: &str,
        status: &str,
        labels: &[(&str, &str)],
    ) -> Result<(Instant, Value)> {
        self.wait(what, |bed| {
            Ok(bed.webhook.received().into_iter().find_map(|n| {
                let at = n.at;
                (at >= since)
                    .then(|| {
                        n.alerts()
                            .find(|a| {
                                a["status"] == status
                                    && a["labels"]["alertname"] == alertname
                                    && labels.iter().all(|(k, v)| a["labels"][*k] == *v)
                            })
                            .cloned()
                    })
                    .flatten()
                    .map(|a| (at, a))
            }))
        })
    }

    fn diagnostics(&self) -> String {
        let alerts = self
            .api("/api/v1/alerts")
            .map(|v| v.to_string())
            .unwrap_or_else(|e| format!("{e:#}"));
        let notifications: Vec<String> = self
            .webhook
            .received()
            .iter()
            .map(|n| n.body.to_string())
            .collect();
        format!(
            "Prometheus alerts: {alerts}\nnotifications: {notifications:#?}\n{}\n{}\n{}",
            self.prometheus.log_tail(),
            self.alertmanager.log_tail(),
            self.agent.as_ref().map(Agent::log_tail).unwrap_or_default()
        )
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
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
    bed.wait("Prometheus to scrape the agent (up == 1)", |b| {
        let data = b.api("/api/v1/query?query=up")?;
        Ok(data["result"]
            .as_array()
            .is_some_and(|r| r.iter().any(|s| s["value"][1] == "1"))
            .then_some(()))
    })?;
    bed.wait("Prometheus to discover Alertmanager", |b| {
        let data = b.api("/api/v1/alertmanagers")?;
        Ok(data["activeAlertmanagers"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
            .then_some(()))
    })?;
    bed.wait("Alertmanager to be ready", |b| {
        Ok(matches!(b.am_api.get("/-/ready"), Ok((200, _))).then_some(()))
    })?;
    eprintln!(
        "Prometheus scraping, Alertmanager discovered after {}",
        seconds(started.elapsed())
    );

    // Healthy node: a few evaluation rounds (rules are evaluated every second) with no alert,
    // not even a pending one, and no notification.
    std::thread::sleep(Duration::from_secs(4));
    bed.check()?;
    let alerts = bed.api("/api/v1/alerts")?;
    if alerts["alerts"].as_array().is_none_or(|a| !a.is_empty()) {
        bail!("alerts on a healthy node: {alerts}");
    }
    if !bed.webhook.received().is_empty() {
        bail!("notifications on a healthy node");
    }

    // The incident: pod 1's host route disappears.
    let pod = bed.host.node().pod(1).clone();
    let ip = pod.ipv4.to_string();
    let broken = Instant::now();
    bed.host.node().delete_route(1, pod.ipv4.into())?;
    let (fired_at, alert) = bed.wait_notification(
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
    let (resolved_at, _) = bed.wait_notification(
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
    for n in bed.webhook.received() {
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
    let (down_at, down) = bed.wait_notification(
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
    bed.wait_notification(
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
    bed.check()
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
    let (fired_at, alert) = bed.wait_notification(
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
    bed.wait_notification(
        "PodnetAggregatedAPIUnreachable resolved",
        repaired,
        "PodnetAggregatedAPIUnreachable",
        "resolved",
        &labels,
    )?;
    eprintln!("DNAT added → resolved: {}", seconds(repaired.elapsed()));
    // No webhook alert: the Service has no webhook users.
    for n in bed.webhook.received() {
        for a in n.alerts() {
            if a["labels"]["alertname"] != "PodnetAggregatedAPIUnreachable" {
                bail!("unexpected alert: {a}");
            }
        }
    }
    bed.check()
}
