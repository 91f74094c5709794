//! The incident, re-enacted: a simulated Calico node, the real agent inside it run as the
//! DaemonSet runs it (pods from a Kubernetes API: the double, so reports name `namespace/pod`),
//! one pod's host route deleted as calico-node silently stopped programming routes, what the
//! agent reports and how fast (the metric, `podnet-agent check`'s table, `kubectl podnet`), the
//! repair, the recovery, and a clean teardown. Needs root; no cluster.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use podnet_kube_double::{PodBuilder, calico_node};
use podnet_testbed::agent::agent_binary;
use podnet_testbed::cluster::{Cluster, NODE};
use podnet_testbed::simnode::NODE_IPV4;

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
    say("== podnet demo: one simulated Calico node and a Kubernetes API double, no cluster ==");
    let cluster = Cluster::new(PODS).context("building the simulated node and API")?;
    let node = &cluster.node;
    // What `kubectl podnet` reads besides podnet's own writes: the Node and the agent's pod.
    cluster
        .api
        .apply_object(calico_node(NODE, &NODE_IPV4.to_string(), None));
    // hostNetwork, as the DaemonSet's pod is: not one of the pods the agent checks.
    let mut agent_pod = PodBuilder::new("podnet", "podnet-agent-demo")
        .node(NODE)
        .host_network()
        .label("app.kubernetes.io/name", "podnet")
        .build();
    agent_pod["status"]["conditions"] = serde_json::json!([{"type": "Ready", "status": "True"}]);
    cluster.api.apply(agent_pod)?;
    say(&format!(
        "node namespace {} ({NODE}) with {PODS} pods, wired as Calico's CNI does and listed by \
         the API:",
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

    let bin = agent_binary()?;
    let agent = cluster
        .agent(&bin, &[])
        .context("starting podnet-agent in the node")?;
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

    say(&format!(
        "\n   $ kubectl exec -n podnet ds/podnet-agent -- podnet-agent check   (here: ip netns \
         exec {} podnet-agent check …)",
        node.node_netns()
    ));
    let (code, table) = check(&cluster, &bin)?;
    for line in table.lines() {
        say(format!("   {line}").trim_end());
    }
    say(&format!(
        "   exit code {code} (0 healthy, 1 problems, 2 could not check)"
    ));

    // The node condition and the pod's Event, as `kubectl describe` shows them (the agent
    // writes them to the API; the condition only on change and on its heartbeat).
    wait_for_signals(&cluster, &victim.name)?;
    match plugin_binary(&bin) {
        Some(plugin) => {
            for what in ["nodes", "pods"] {
                say(&format!("\n   $ kubectl podnet {what} -o wide"));
                for line in kubectl_podnet(&cluster, &plugin, what)?.lines() {
                    say(format!("   {line}").trim_end());
                }
            }
        }
        None => say("\n   (kubectl-podnet not built next to podnet-agent: skipped)"),
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
    drop(cluster);
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

/// `podnet-agent check` in the node's namespace, configured as the agent is: its table and
/// exit code.
fn check(cluster: &Cluster, bin: &Path) -> Result<(i32, String)> {
    let out = Command::new("ip")
        .args(["netns", "exec", cluster.node.node_netns()])
        .arg(bin)
        .args(["check", "--node-name", NODE, "--pod-source", "kubernetes"])
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .output()
        .context("running podnet-agent check")?;
    let code = out.status.code().unwrap_or(-1);
    if code == 2 {
        anyhow::bail!(
            "podnet-agent check could not check: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((code, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// `kubectl-podnet`, built beside the agent (`cargo build --workspace --bins`).
fn plugin_binary(agent: &Path) -> Option<PathBuf> {
    let p = agent.with_file_name("kubectl-podnet");
    p.is_file().then_some(p)
}

/// `kubectl podnet WHAT -o wide` against the API double (inside the node's namespace, where
/// the double listens).
/// Print the `PodNetworkProblem` condition of the node and the Warning Event of pod `pod` once
/// the agent has written both (at most 10 s).
fn wait_for_signals(cluster: &Cluster, pod: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let condition = cluster
            .api
            .node_conditions(NODE)
            .into_iter()
            .find(|c| c["type"] == "PodNetworkProblem" && c["status"] == "True");
        let event = cluster
            .api
            .events()
            .into_iter()
            .find(|e| e["regarding"]["name"] == pod && e["type"] == "Warning");
        if let (Some(c), Some(e)) = (&condition, &event) {
            say(&format!(
                "\n   $ kubectl describe node {NODE}   (Conditions:)"
            ));
            say(&format!(
                "     PodNetworkProblem  {}  {}  {}",
                c["status"].as_str().unwrap_or(""),
                c["reason"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            ));
            say(&format!("   $ kubectl describe pod {pod}   (Events:)"));
            say(&format!(
                "     {}  {}  {}  {}",
                e["type"].as_str().unwrap_or(""),
                e["reason"].as_str().unwrap_or(""),
                e["reportingController"].as_str().unwrap_or(""),
                e["note"].as_str().unwrap_or("")
            ));
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("no PodNetworkProblem condition and Event after 10 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kubectl_podnet(cluster: &Cluster, plugin: &Path, what: &str) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", cluster.node.node_netns()])
        .arg(plugin)
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args([what, "-o", "wide"])
        .output()
        .context("running kubectl-podnet")?;
    if out.status.code() == Some(2) {
        anyhow::bail!(
            "kubectl-podnet {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
