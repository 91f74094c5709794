//! Probing cost at scale, side by side with prometheus-blackbox-exporter.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use podnet_testbed::agent::{Agent, PORT, http_get};
use podnet_testbed::bench::{RssSampler, cpu_time, status_kib};
use podnet_testbed::exposition::Samples;
use podnet_testbed::netns::NetnsThread;
use podnet_testbed::simnode::{OUTSIDE_IPV4, PodSpec, SimNode};

use super::{Opts, out};

const BLACKBOX_PORT: u16 = 9115;
const TCP_PORT: u16 = 8443;
const INTERVAL: Duration = Duration::from_secs(10);

/// blackbox_exporter running inside the node's namespace; killed on drop.
struct Blackbox {
    child: Child,
    dir: PathBuf,
}

impl Blackbox {
    fn start(node: &SimNode) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("{}-blackbox", node.node_netns()));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("blackbox.yml");
        std::fs::write(
            &config,
            "modules:\n  icmp:\n    prober: icmp\n    timeout: 1s\n    icmp:\n      preferred_ip_protocol: ip4\n",
        )?;
        let child = Command::new("ip")
            .args(["netns", "exec", node.node_netns(), "prometheus-blackbox-exporter"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{BLACKBOX_PORT}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting prometheus-blackbox-exporter (apt-get install prometheus-blackbox-exporter)")?;
        Ok(Blackbox { child, dir })
    }
}

impl Drop for Blackbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How long after the warm-up memory sampling starts.
const RSS_SETTLE: Duration = Duration::from_secs(15);

fn total_probes(m: &Samples) -> f64 {
    m.named("podnet_probes_total").map(|s| s.value).sum()
}

pub(super) fn run(o: &Opts) -> Result<()> {
    let mut node = SimNode::empty()?;
    for i in 0..o.pods {
        node.add_pod(PodSpec::numbered(i, false))?;
    }
    node.listen_outside(SocketAddr::new(OUTSIDE_IPV4.into(), TCP_PORT))?;
    let tcp = format!("tcp:{OUTSIDE_IPV4}:{TCP_PORT}");
    let icmp = format!("icmp:{OUTSIDE_IPV4}");
    // Logs at info, as in production.
    let agent = Agent::start(
        &node,
        &["--probe", &icmp, "--probe", &tcp, "--log-level", "info"],
    )?;
    let agent_pid = agent.pid().context("agent pid")?;
    let blackbox = Blackbox::start(&node)?;
    let bb_pid = blackbox.child.id();
    let pod_ips: Vec<String> = node.pods().map(|p| p.ipv4.to_string()).collect();

    // Warm up: every pod probed at least once, blackbox answering.
    super::wait_every_pod_probed(&agent, o.pods)?;
    let driver = NetnsThread::join(node.node_netns())?;
    // Memory in steady state: sampled every second, after the agent's start-up and warm-up
    // transient (initial sync, every pod's first round) has had time to be given back.
    let rss = RssSampler::start(vec![agent_pid, bb_pid], RSS_SETTLE);
    let (a0, b0) = (cpu_time(agent_pid)?, cpu_time(bb_pid)?);
    let probes0 = total_probes(&agent.metrics()?);
    let seconds = o.seconds;
    let pods = o.pods;
    // Same rate as the agent's host -> pod probes: every pod once per interval.
    let (bb_ok, bb_total) = driver.run_blocking(move || {
        let bb = SocketAddr::from(([127, 0, 0, 1], BLACKBOX_PORT));
        let agent = SocketAddr::from(([127, 0, 0, 1], PORT));
        let step = INTERVAL / pods as u32;
        let start = Instant::now();
        let (mut ok, mut total, mut k) = (0u64, 0u64, 0usize);
        let mut next_scrape = start;
        while start.elapsed() < Duration::from_secs(seconds as u64) {
            let due = start + step * k as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let target = &pod_ips[k % pod_ips.len()];
            let (_, body) = http_get(bb, &format!("/probe?module=icmp&target={target}"))?;
            total += 1;
            if body.lines().any(|l| l.trim() == "probe_success 1") {
                ok += 1;
            }
            // Both are scraped as Prometheus would, every 15 s.
            if Instant::now() >= next_scrape {
                http_get(agent, "/metrics")?;
                http_get(bb, "/metrics")?;
                next_scrape += Duration::from_secs(15);
            }
            k += 1;
        }
        Ok((ok, total))
    })?;
    let (a, b) = (cpu_time(agent_pid)? - a0, cpu_time(bb_pid)? - b0);
    let rss = rss.finish();
    let (a_rss, b_rss) = (rss[0], rss[1]);
    let m = agent.metrics()?;
    let probes = total_probes(&m) - probes0;
    let failing: f64 = m.named("podnet_target_failing_pods").map(|s| s.value).sum();
    if bb_ok < bb_total * 99 / 100 || failing > 0.0 {
        bail!(
            "probes failed during the run: blackbox {bb_ok}/{bb_total} ok, podnet failing {failing}"
        );
    }
    let secs = seconds as f64;
    let (a_hwm, b_hwm) = (
        status_kib(agent_pid, "VmHWM")?,
        status_kib(bb_pid, "VmHWM")?,
    );
    let mib = |kib: f64| kib / 1024.0;
    out(&format!(
        "{} pods, {seconds} s at a 10 s interval; podnet: gateway, node, {icmp}, {tcp} from every pod + host -> pod",
        o.pods
    ));
    out(&format!(
        "podnet-agent:   CPU {:.2}% of one core, RSS mean {:.1} MiB, max {:.1} (peak since start {:.1}), {probes:.0} probes ({:.1}/s), {:.1} µs CPU per probe",
        a.as_secs_f64() / secs * 100.0,
        mib(a_rss.mean_kib),
        mib(a_rss.max_kib as f64),
        mib(a_hwm as f64),
        probes / secs,
        a.as_secs_f64() / probes * 1e6
    ));
    out(&format!(
        "blackbox:       CPU {:.2}% of one core, RSS mean {:.1} MiB, max {:.1} (peak since start {:.1}), {bb_total} host -> pod ICMP probes ({:.1}/s, {bb_ok} ok), {:.1} µs CPU per probe",
        b.as_secs_f64() / secs * 100.0,
        mib(b_rss.mean_kib),
        mib(b_rss.max_kib as f64),
        mib(b_hwm as f64),
        bb_total as f64 / secs,
        b.as_secs_f64() / bb_total as f64 * 1e6
    ));
    out(&format!(
        "ratios podnet/blackbox ({} RSS samples each): CPU {:.2}, RSS mean {:.2}, RSS max {:.2}",
        a_rss.samples.min(b_rss.samples),
        a.as_secs_f64() / b.as_secs_f64(),
        a_rss.mean_kib / b_rss.mean_kib,
        a_rss.max_kib as f64 / b_rss.max_kib as f64
    ));
    drop(blackbox);
    Ok(())
}
