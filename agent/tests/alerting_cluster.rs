//! One target down from most nodes, end to end with the real Prometheus and Alertmanager: the
//! agents' recorded node-level series for four nodes (three report `target_unreachable` for
//! the same target) are served by one static HTTP server each, scraped as the shipped configs
//! label them. Prometheus fires `PodnetNodeEgressFailure` for each of the three nodes and one
//! `PodnetTargetUnreachableClusterWide`; Alertmanager, with the shipped example's
//! `inhibit_rules`, notifies the cluster-wide alert only.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use podnet_testbed::alerting::{
    AlertStack, Daemon, Target, TempDir, WAIT, WEBHOOK_PORT, prometheus_config, require,
};
use podnet_testbed::simnode::SimNode;

/// First port of the recorded agents (one per node).
const RECORDED_PORT: u16 = 9710;
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
    let python = require("python3", "python3");
    let node = SimNode::empty().unwrap();
    let ns = node.node_netns().to_owned();
    let dir = TempDir::new().unwrap();
    let nodes = ["node-a", "node-b", "node-c", "node-d"];
    let mut servers = Vec::new();
    let mut targets = Vec::new();
    let agent_pods: Vec<String> = nodes.iter().map(|n| format!("podnet-agent-{n}")).collect();
    for (i, name) in nodes.iter().enumerate() {
        let root = dir.path(name);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("metrics"), exposition(i < 3)).unwrap();
        let port = RECORDED_PORT + i as u16;
        let args = [
            "-m".to_owned(),
            "http.server".to_owned(),
            port.to_string(),
            "--bind".to_owned(),
            "127.0.0.1".to_owned(),
            "--directory".to_owned(),
            root.display().to_string(),
        ];
        servers.push(Daemon::start(&ns, "recorded-agent", &python, &args, &dir).unwrap());
        targets.push(Target {
            port,
            node: name,
            agent_pod: &agent_pods[i],
        });
    }
    let mut stack = AlertStack::start(
        &ns,
        &prometheus_config(&targets),
        &alertmanager_config().unwrap(),
    )
    .unwrap();
    if let Err(e) = scenario(&mut stack, &mut servers) {
        panic!("{e:#}\n{}", stack.diagnostics());
    }
}

fn scenario(stack: &mut AlertStack, servers: &mut [Daemon]) -> Result<()> {
    // Prometheus: three node alerts and the cluster-wide one, firing.
    let cluster = stack.wait("3 node alerts and 1 cluster-wide alert firing", |s| {
        let nodes = s.firing("PodnetNodeEgressFailure")?;
        let cluster = s.firing("PodnetTargetUnreachableClusterWide")?;
        Ok((nodes.len() == 3 && cluster.len() == 1).then_some(cluster))
    })?;
    if cluster[0]["labels"]["target"] != TARGET {
        bail!("cluster-wide alert for another target: {}", cluster[0]);
    }
    // Alertmanager: the cluster-wide alert is notified …
    let deadline = Instant::now() + WAIT;
    loop {
        for d in servers.iter_mut() {
            d.check()?;
        }
        let names: Vec<String> = stack
            .webhook
            .received()
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
        stack.check()?;
        std::thread::sleep(Duration::from_millis(100));
    }
    // … and, several group intervals later, still no per-node one.
    std::thread::sleep(Duration::from_secs(5));
    for n in stack.webhook.received() {
        for a in n.alerts() {
            if a["labels"]["alertname"] != "PodnetTargetUnreachableClusterWide" {
                bail!("notified besides the cluster-wide alert: {a}");
            }
        }
    }
    stack.check()
}
