//! The connect watch's cost (issue 14): the probing agent at N pods with `--no-connect-watch`,
//! then with the watch on, then on with 1,000 connects stuck in `SYN_SENT` in one pod: agent
//! CPU (user + sys) per probe round, RSS, and what the stuck pod's dump kept and dropped.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use podnet_testbed::agent::Agent;
use podnet_testbed::bench::{RssSampler, cpu_time, status_kib};
use podnet_testbed::netns::NetnsThread;
use podnet_testbed::simnode::{OUTSIDE_IPV4, PodSpec, SimNode};
use serde_json::Value;

use super::{Opts, out, wait_every_pod_probed};

/// The agent's default probe interval: one round per pod per interval.
const INTERVAL: Duration = Duration::from_secs(10);
/// Stuck connects in the one pod, to this many ports of a deleted pod's address.
const STUCK: u16 = 1_000;
const STUCK_PORTS: u16 = 50;

/// One measured phase: CPU per round and RSS.
fn measure(label: &str, agent: &Agent, seconds: usize) -> Result<()> {
    let pid = agent.pid().context("agent pid")?;
    let rss = RssSampler::start(vec![pid], Duration::from_secs(5));
    let cpu0 = cpu_time(pid)?;
    std::thread::sleep(Duration::from_secs(seconds as u64));
    let cpu = cpu_time(pid)? - cpu0;
    let rss = rss.finish()[0];
    let rounds = seconds as f64 / INTERVAL.as_secs_f64();
    out(&format!(
        "{label:<34} CPU {:.2}% of one core, {:.1} ms per round; RSS mean {:.1} MiB, max {:.1} (peak since start {:.1})",
        cpu.as_secs_f64() / seconds as f64 * 100.0,
        cpu.as_secs_f64() * 1e3 / rounds,
        rss.mean_kib / 1024.0,
        rss.max_kib as f64 / 1024.0,
        status_kib(pid, "VmHWM")? as f64 / 1024.0,
    ));
    Ok(())
}

/// The stuck pod's unanswered destinations (by its host interface: node mode has no names)
/// and the node's dropped count, from `/status`.
fn stuck_view(status: &Value, interface: &str) -> (usize, u64) {
    let listed = status["unanswered_connects"].as_array().map_or(0, |l| {
        l.iter().filter(|c| c["interface"] == interface).count()
    });
    (listed, status["unanswered_dropped"].as_u64().unwrap_or(0))
}

pub(super) fn run(o: &Opts) -> Result<()> {
    let mut node = SimNode::empty()?;
    for i in 0..=o.pods {
        node.add_pod(PodSpec::numbered(i, false))?;
    }
    // The last pod is deleted: its address stays in the node's block, whose blackhole
    // swallows the SYNs sent to it (the incident's shape).
    let gone = node.remove_pod(o.pods)?;
    let node_port = 8443;
    node.listen_outside(SocketAddr::new(OUTSIDE_IPV4.into(), node_port))?;
    let tcp = format!("tcp:{OUTSIDE_IPV4}:{node_port}");
    let icmp = format!("icmp:{OUTSIDE_IPV4}");
    let base = ["--probe", &icmp, "--probe", &tcp, "--log-level", "info"];
    out(&format!(
        "{} pods, {} s per phase at a 10 s interval; gateway, node, {icmp}, {tcp} from every pod + host -> pod",
        o.pods, o.seconds
    ));

    let mut off: Vec<&str> = base.to_vec();
    off.push("--no-connect-watch");
    let agent = Agent::start(&node, &off)?;
    wait_every_pod_probed(&agent, o.pods)?;
    measure("--no-connect-watch", &agent, o.seconds)?;
    drop(agent);

    let agent = Agent::start(&node, &base)?;
    wait_every_pod_probed(&agent, o.pods)?;
    measure("connect watch on", &agent, o.seconds)?;

    // 1,000 connects stuck in pod 0, kept alive (no SYN retry limit reached) for the phase.
    let stuck_pod = node.pod(0).clone();
    let ok = Command::new("ip")
        .args(["netns", "exec", &stuck_pod.netns])
        .args(["sysctl", "-qw", "net.ipv4.tcp_syn_retries=10"])
        .status()?
        .success();
    ensure!(ok, "sysctl tcp_syn_retries in {}", stuck_pod.netns);
    let gone_ip = gone.ipv4;
    let holder = NetnsThread::join(&stuck_pod.netns)?;
    let sockets = holder.run_blocking(move || {
        (0..STUCK)
            .map(|i| {
                let addr = SocketAddr::from((gone_ip, 20_000 + i % STUCK_PORTS));
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
                s.set_nonblocking(true)?;
                let _ = s.connect(&addr.into());
                Ok(s)
            })
            .collect::<Result<Vec<_>>>()
    })?;
    agent.wait_status(
        "the stuck pod's destinations reported",
        Duration::from_secs(60),
        |s| stuck_view(s, &stuck_pod.interface).0 > 0,
    )?;
    measure(&format!("on, {STUCK} stuck in one pod"), &agent, o.seconds)?;
    let (kept, dropped) = stuck_view(&agent.status()?, &stuck_pod.interface);
    out(&format!(
        "stuck pod {}: {kept} destinations kept of {STUCK_PORTS}, {dropped} dropped (/status)",
        stuck_pod.name
    ));
    drop(sockets);
    drop(holder);
    Ok(())
}
