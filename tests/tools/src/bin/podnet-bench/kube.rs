//! Kubernetes mode at scale: memory with this node's pods among 50,000 others, and the API
//! requests the watch costs at steady state.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use podnet_kube_double::{KubeApiServer, PodBuilder, numbered_pods};
use podnet_testbed::agent::Agent;
use podnet_testbed::bench::status_kib;
use podnet_testbed::simnode::{PodSpec, SimNode};

use super::{Opts, out};

const NODE: &str = "sim-node";

pub(super) fn run(o: &Opts) -> Result<()> {
    let mut node = SimNode::empty()?;
    for i in 0..o.pods {
        node.add_pod(PodSpec::numbered(i, false))?;
    }
    let kubeconfig = std::env::temp_dir().join(format!("{}-kubeconfig", node.node_netns()));
    let mut rows = Vec::new();
    for others in [0usize, o.others] {
        let api = KubeApiServer::start(
            Some(node.node_netns()),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )?;
        api.register_node(NODE);
        let t = Instant::now();
        api.bulk_insert(numbered_pods(others, 200));
        let filled = t.elapsed();
        api.bulk_insert(node.pods().map(|p| {
            PodBuilder::new(&p.namespace, &p.name)
                .node(NODE)
                .ipv4(p.ipv4)
                .build()
        }));
        api.kubeconfig(&kubeconfig)?;
        let started = Instant::now();
        let agent = Agent::start(
            &node,
            &[
                "--pod-source",
                "kubernetes",
                "--kubeconfig",
                kubeconfig.to_str().context("path")?,
                "--no-probes",
                "--log-level",
                "info",
            ],
        )?;
        let pid = agent.pid().context("agent pid")?;
        agent.wait_metrics("every pod from the API", Duration::from_secs(120), |m| {
            m.value("podnet_local_pods") == Some(o.pods as f64)
                && m.value_with("podnet_pod_problem", &[]).is_none()
        })?;
        let synced = started.elapsed();
        api.clear_request_log();
        let before = api.stats();
        std::thread::sleep(Duration::from_secs(o.seconds as u64));
        let after = api.stats();
        let minutes = o.seconds as f64 / 60.0;
        let lists = (after.lists() - before.lists()) as f64 / minutes;
        let watches = (after.watches() - before.watches()) as f64 / minutes;
        let rss = status_kib(pid, "VmRSS")? as f64 / 1024.0;
        let hwm = status_kib(pid, "VmHWM")? as f64 / 1024.0;
        rows.push(format!(
            "| {} | {} | {:.3} s | {rss:.1} MiB | {hwm:.1} MiB | {lists:.2} | {watches:.2} |",
            api.pod_count(),
            o.pods,
            synced.as_secs_f64(),
        ));
        out(&format!(
            "{} pods in the API ({others} on other nodes, filled in {:.1} s): agent ready with all {} of this node's pods {:.3} s after start; RSS {rss:.1} MiB (peak {hwm:.1}); over {} s: {lists:.2} lists/min, {watches:.2} watches/min",
            api.pod_count(),
            filled.as_secs_f64(),
            o.pods,
            synced.as_secs_f64(),
            o.seconds
        ));
        drop(agent);
        drop(api);
    }
    let _ = std::fs::remove_file(&kubeconfig);
    out(
        "\n| pods in the API | on this node | agent ready after | RSS | peak RSS | lists/min | watches/min |",
    );
    out("|---|---|---|---|---|---|---|");
    for r in rows {
        out(&r);
    }
    Ok(())
}
