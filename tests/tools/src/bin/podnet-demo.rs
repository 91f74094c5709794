//! The incident, re-enacted: a simulated Calico node, the real agent inside it, one pod's host
//! route deleted as calico-node silently stopped programming routes, what the agent reports and
//! how fast, the repair, the recovery, and a clean teardown. Needs root; no cluster.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use podnet_testbed::agent::Agent;
use podnet_testbed::simnode::SimNode;

const PODS: usize = 6;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podnet-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The demo's output is its purpose.
#[allow(clippy::print_stdout)]
fn say(s: &str) {
    println!("{s}");
}

fn run() -> Result<()> {
    say("== podnet demo: one simulated Calico node, no cluster ==");
    let node = SimNode::new(PODS, &[0]).context("building the simulated node")?;
    say(&format!(
        "node namespace {} with {PODS} pods, wired as Calico's CNI does:",
        node.node_netns()
    ));
    for p in node.pods() {
        let ips: Vec<String> = p.ips().iter().map(ToString::to_string).collect();
        say(&format!(
            "  {:<24} {}  {}",
            format!("{}/{}", p.namespace, p.name),
            p.interface,
            ips.join(", ")
        ));
    }

    let agent = Agent::start(&node, &[]).context("starting podnet-agent in the node")?;
    let m = agent.metrics()?;
    say(&format!(
        "\npodnet-agent is ready: podnet_local_pods {} , podnet_broken_pods {}",
        m.value("podnet_local_pods").unwrap_or(-1.0),
        m.value("podnet_broken_pods").unwrap_or(-1.0)
    ));

    let victim = node.pod(1).clone();
    let ip = IpAddr::V4(victim.ipv4);
    say(&format!(
        "\n-- incident: the host route of {}/{} disappears (calico-node stopped programming routes)",
        victim.namespace, victim.name
    ));
    say(&format!(
        "   ip route del {ip}/32 dev {} scope link",
        victim.interface
    ));
    node.delete_route(victim.index, ip)?;
    let t0 = Instant::now();
    let m = agent.wait_metrics("the missing route", Duration::from_secs(10), |m| {
        !m.problems().is_empty()
    })?;
    let detected = t0.elapsed();
    say(&format!(
        "   podnet reported it {:.2} ms after the deletion:",
        detected.as_secs_f64() * 1e3
    ));
    for s in m.named("podnet_pod_problem") {
        let l: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        say(&format!(
            "     podnet_pod_problem{{{}}} {}",
            l.join(","),
            s.value
        ));
    }
    say(&format!(
        "     podnet_broken_pods {}",
        m.value("podnet_broken_pods").unwrap_or(-1.0)
    ));
    let status = agent.status()?;
    if let Some(p) = status["pods"].as_array().and_then(|ps| {
        ps.iter()
            .find(|p| p["interface"] == victim.interface.as_str())
    }) {
        say(&format!("   /status: {}", serde_json::to_string(p)?));
    }
    for line in agent
        .log()
        .lines()
        .filter(|l| l.contains("pod wiring problem"))
    {
        say(&format!("   log: {line}"));
    }

    say("\n-- repair: the route is put back (as restarting calico-node did)");
    node.restore_routes(victim.index)?;
    let t1 = Instant::now();
    let m = agent.wait_metrics("recovery", Duration::from_secs(10), |m| {
        m.problems().is_empty()
    })?;
    say(&format!(
        "   recovered {:.2} ms after the repair: podnet_broken_pods {}, no problem series left",
        t1.elapsed().as_secs_f64() * 1e3,
        m.value("podnet_broken_pods").unwrap_or(-1.0)
    ));

    say("\n-- teardown");
    drop(agent);
    let base = node.node_netns().to_owned();
    drop(node);
    let left: Vec<String> = std::fs::read_dir(podnet_testbed::netns::NETNS_DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(base.trim_end_matches("-node")))
                .collect()
        })
        .unwrap_or_default();
    if left.is_empty() {
        say("   agent stopped, every namespace and veth removed");
        Ok(())
    } else {
        anyhow::bail!("namespaces left behind: {left:?}")
    }
}
