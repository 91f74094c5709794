//! One target down from most nodes, end to end with the real Prometheus and Alertmanager: the
//! agents' recorded node-level series for four nodes (three report `target_unreachable` for
//! the same target) are served by one static HTTP server each, scraped as the shipped configs
//! label them. Prometheus fires `PodnetNodeEgressFailure` for each of the three nodes and one
//! `PodnetTargetUnreachableClusterWide`; Alertmanager, with the shipped example's
//! `inhibit_rules`, notifies the cluster-wide alert only.

#[path = "support/alerting.rs"]
mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use podnet_testbed::agent::HttpClient;
use podnet_testbed::simnode::SimNode;
use serde_json::Value;
use support::{Daemon, TempDir, Webhook, require, test_rules};

const PROMETHEUS_PORT: u16 = 9090;
const ALERTMANAGER_PORT: u16 = 9093;
const WEBHOOK_PORT: u16 = 9095;
/// First port of the recorded agents (one per node).
const RECORDED_PORT: u16 = 9710;
const WAIT: Duration = Duration::from_secs(90);
/// An outside dependency every pod probes (not `dns`: that target has its own node alert,
/// `PodnetNodeDnsFailure`).
const TARGET: &str = "registry";

/// What the agent on each node serves: node-level series as `Metrics` renders them.
fn exposition(unreachable: bool) -> String {
    let mut s = String::from(
        "# TYPE podnet_synced gauge\npodnet_synced 1\n# TYPE podnet_local_pods gauge\npodnet_local_pods 12\n",
    );
    s.push_str("# TYPE podnet_node_problem gauge\n");
    if unreachable {
        s.push_str(&format!(
            "podnet_node_problem{{reason=\"target_unreachable\",target=\"{TARGET}\"}} 1\n"
        ));
    }
    s.push_str(&format!(
        "# TYPE podnet_target_failing_pods gauge\npodnet_target_failing_pods{{target=\"{TARGET}\"}} {}\n",
        if unreachable { 12 } else { 0 }
    ));
    s
}

fn prometheus_config(nodes: &[&str]) -> String {
    let mut targets = String::new();
    for (i, node) in nodes.iter().enumerate() {
        targets.push_str(&format!(
            "      - targets: [\"127.0.0.1:{}\"]\n        labels: {{node: {node}, agent_namespace: podnet, agent_pod: podnet-agent-{node}}}\n",
            RECORDED_PORT + i as u16
        ));
    }
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files: [rules.yaml]\n\
         alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"127.0.0.1:{ALERTMANAGER_PORT}\"]\n\
         scrape_configs:\n  - job_name: podnet\n    honor_labels: true\n    static_configs:\n{targets}"
    )
}

/// The test's route (everything to the webhook) with the shipped example's `inhibit_rules`,
/// verbatim. `group_wait` stands for the shipped page route's: time for the cluster-wide
/// alert to reach Alertmanager in the same evaluation round as the node alerts.
fn alertmanager_config() -> Result<String> {
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/alertmanager/alertmanager.yaml"),
    )?;
    let start = shipped
        .find("\ninhibit_rules:")
        .context("no inhibit_rules")?;
    let end = shipped.find("\nreceivers:").context("no receivers")?;
    Ok(format!(
        "route:\n  receiver: webhook\n  group_by: [alertname, cluster, node, target]\n  \
         group_wait: 2s\n  group_interval: 1s\n  repeat_interval: 1h\n{}\n\
         receivers:\n  - name: webhook\n    webhook_configs:\n      - url: http://127.0.0.1:{WEBHOOK_PORT}/alerts\n",
        &shipped[start..end]
    ))
}

#[test]
fn one_dead_target_pages_once_for_the_cluster() {
    let prometheus_bin = require("prometheus", "prometheus");
    let alertmanager_bin = require("prometheus-alertmanager", "prometheus-alertmanager");
    let python = require("python3", "python3");
    let node = SimNode::empty().unwrap();
    let ns = node.node_netns().to_owned();
    let dir = TempDir::new().unwrap();
    let nodes = ["node-a", "node-b", "node-c", "node-d"];
    let mut servers = Vec::new();
    for (i, name) in nodes.iter().enumerate() {
        let root = dir.path(name);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("metrics"), exposition(i < 3)).unwrap();
        let args = [
            "-m".to_owned(),
            "http.server".to_owned(),
            (RECORDED_PORT + i as u16).to_string(),
            "--bind".to_owned(),
            "127.0.0.1".to_owned(),
            "--directory".to_owned(),
            root.display().to_string(),
        ];
        servers.push(Daemon::start(&ns, "recorded-agent", &python, &args, &dir).unwrap());
    }
    std::fs::write(dir.path("rules.yaml"), test_rules().unwrap()).unwrap();
    std::fs::write(dir.path("prometheus.yaml"), prometheus_config(&nodes)).unwrap();
    std::fs::write(
        dir.path("alertmanager.yaml"),
        alertmanager_config().unwrap(),
    )
    .unwrap();
    let path = |n: &str| dir.path(n).display().to_string();
    let mut webhook = Webhook::start(&ns, WEBHOOK_PORT).unwrap();
    let mut alertmanager = Daemon::start(
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
    )
    .unwrap();
    let mut prometheus = Daemon::start(
        &ns,
        "prometheus",
        &prometheus_bin,
        &[
            format!("--config.file={}", path("prometheus.yaml")),
            format!("--storage.tsdb.path={}", path("prometheus-data")),
            format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"),
        ],
        &dir,
    )
    .unwrap();
    let api = HttpClient::new(&ns, PROMETHEUS_PORT).unwrap();
    let result = scenario(
        &api,
        &mut webhook,
        &mut [&mut prometheus, &mut alertmanager],
    );
    if let Err(e) = result {
        let alerts = api.get("/api/v1/alerts").map(|r| r.1).unwrap_or_default();
        let notes: Vec<String> = webhook
            .received()
            .iter()
            .map(|n| n.body.to_string())
            .collect();
        panic!(
            "{e:#}\nPrometheus alerts: {alerts}\nnotifications: {notes:#?}\n{}\n{}",
            prometheus.log_tail(),
            alertmanager.log_tail()
        );
    }
}

/// Firing alerts Prometheus holds, by name.
fn firing(api: &HttpClient, name: &str) -> Result<Vec<Value>> {
    let (code, body) = api.get("/api/v1/alerts")?;
    if code != 200 {
        bail!("GET /api/v1/alerts: {code}");
    }
    let v: Value = serde_json::from_str(&body)?;
    Ok(v["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == "firing" && a["labels"]["alertname"] == name)
        .cloned()
        .collect())
}

fn scenario(api: &HttpClient, webhook: &mut Webhook, daemons: &mut [&mut Daemon]) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    // Prometheus: three node alerts and the cluster-wide one, firing.
    loop {
        for d in daemons.iter_mut() {
            d.check()?;
        }
        webhook.check()?;
        let nodes = firing(api, "PodnetNodeEgressFailure").unwrap_or_default();
        let cluster = firing(api, "PodnetTargetUnreachableClusterWide").unwrap_or_default();
        if nodes.len() == 3 && cluster.len() == 1 {
            if cluster[0]["labels"]["target"] != TARGET {
                bail!("cluster-wide alert for another target: {}", cluster[0]);
            }
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "timed out: {} node alerts, {} cluster-wide",
                nodes.len(),
                cluster.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Alertmanager: the cluster-wide alert is notified …
    loop {
        let got = webhook.received();
        let names: Vec<String> = got
            .iter()
            .flat_map(|n| n.alerts())
            .map(|a| a["labels"]["alertname"].as_str().unwrap_or("").to_owned())
            .collect();
        if names.iter().any(|n| n == "PodnetNodeEgressFailure") {
            bail!("a per-node alert was notified despite the cluster-wide one: {names:?}");
        }
        if names
            .iter()
            .any(|n| n == "PodnetTargetUnreachableClusterWide")
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("no cluster-wide notification; got {names:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // … and, several group intervals later, still no per-node one.
    std::thread::sleep(Duration::from_secs(5));
    for n in webhook.received() {
        for a in n.alerts() {
            if a["labels"]["alertname"] != "PodnetTargetUnreachableClusterWide" {
                bail!("notified besides the cluster-wide alert: {a}");
            }
        }
    }
    Ok(())
}
