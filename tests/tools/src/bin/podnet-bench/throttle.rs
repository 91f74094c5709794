//! CPU throttling at scale: the agent probing every pod while it runs in a scratch cgroup with
//! the manifest's CPU request (`cpu.shares`) and, in turn, no quota and CFS quotas like the CPU
//! limits a cluster might impose; how often it is throttled (`cpu.stat`) and what that does to
//! the probes' round-trip times and timeouts. The cgroup (cgroup v1 `cpu`, or v2 `cpu.max`) is
//! created per run and removed, also on failure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use podnet_testbed::agent::Agent;
use podnet_testbed::bench::cpu_time;
use podnet_testbed::exposition::Samples;
use podnet_testbed::simnode::{OUTSIDE_IPV4, PodSpec, SimNode};

use super::{Opts, out};

const TCP_PORT: u16 = 8443;
/// The DaemonSet's CPU request (deploy/base/daemonset.yaml), in millicores.
const REQUEST_MILLI: u64 = 20;
/// CFS period, as the kubelet sets it.
const PERIOD_US: u64 = 100_000;

/// A scratch CPU cgroup; removed on drop (its processes moved back to the root first).
struct CpuGroup {
    dir: PathBuf,
    v2: bool,
}

impl CpuGroup {
    fn create(name: &str, quota_milli: Option<u64>) -> Result<Self> {
        let (root, v2) = if Path::new("/sys/fs/cgroup/cpu/cpu.shares").exists() {
            (Path::new("/sys/fs/cgroup/cpu"), false)
        } else if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            (Path::new("/sys/fs/cgroup"), true)
        } else {
            bail!("no cgroup cpu controller at /sys/fs/cgroup");
        };
        let dir = root.join(name);
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let g = CpuGroup { dir, v2 };
        let quota = quota_milli.map(|m| m * PERIOD_US / 1000);
        if v2 {
            // The kubelet's weight for a request: 1 + (shares - 2) * 9999 / 262142.
            let shares = REQUEST_MILLI * 1024 / 1000;
            g.write(
                "cpu.weight",
                &(1 + (shares - 2) * 9999 / 262_142).to_string(),
            )?;
            let max = quota.map_or("max".to_owned(), |q| q.to_string());
            g.write("cpu.max", &format!("{max} {PERIOD_US}"))?;
        } else {
            g.write("cpu.shares", &(REQUEST_MILLI * 1024 / 1000).to_string())?;
            g.write("cpu.cfs_period_us", &PERIOD_US.to_string())?;
            g.write(
                "cpu.cfs_quota_us",
                &quota.map_or(-1, |q| q as i64).to_string(),
            )?;
        }
        Ok(g)
    }

    fn write(&self, file: &str, value: &str) -> Result<()> {
        std::fs::write(self.dir.join(file), value)
            .with_context(|| format!("writing {value} to {}/{file}", self.dir.display()))
    }

    /// Move a process with all its threads in.
    fn add(&self, pid: u32) -> Result<()> {
        self.write("cgroup.procs", &pid.to_string())
    }

    /// `(periods, throttled periods, throttled time)`.
    fn stat(&self) -> Result<(u64, u64, Duration)> {
        let text = std::fs::read_to_string(self.dir.join("cpu.stat"))?;
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let throttled = if self.v2 {
            Duration::from_micros(field("throttled_usec "))
        } else {
            Duration::from_nanos(field("throttled_time "))
        };
        Ok((field("nr_periods "), field("nr_throttled "), throttled))
    }
}

impl Drop for CpuGroup {
    fn drop(&mut self) {
        let root = self.dir.parent().unwrap_or(Path::new("/sys/fs/cgroup"));
        if let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = std::fs::write(root.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `(count, p50, p99)` of the round-trip times observed between two scrapes, from the
/// histogram's buckets (upper bounds: a factor-of-two resolution).
fn rtt_quantiles(before: &Samples, after: &Samples) -> (f64, f64, f64) {
    let buckets = |m: &Samples| -> Vec<(f64, f64)> {
        let mut by_le: std::collections::BTreeMap<u64, (f64, f64)> = Default::default();
        for s in m.named("podnet_probe_duration_seconds_bucket") {
            let le: f64 = s.labels["le"].parse().unwrap_or(f64::INFINITY);
            let e = by_le.entry(le.to_bits()).or_insert((le, 0.0));
            e.1 += s.value;
        }
        let mut v: Vec<(f64, f64)> = by_le.into_values().collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    let (b, a) = (buckets(before), buckets(after));
    let delta: Vec<(f64, f64)> = a
        .iter()
        .map(|(le, n)| {
            let old = b.iter().find(|(l, _)| l == le).map_or(0.0, |(_, n)| *n);
            (*le, n - old)
        })
        .collect();
    let total = delta.last().map_or(0.0, |(_, n)| *n);
    let q = |p: f64| {
        delta
            .iter()
            .find(|(_, n)| *n >= p * total)
            .map_or(f64::NAN, |(le, _)| *le)
    };
    (total, q(0.5), q(0.99))
}

fn failures(m: &Samples) -> f64 {
    m.named("podnet_probes_total")
        .filter(|s| ["timeout", "unreachable", "error"].contains(&s.labels["result"].as_str()))
        .map(|s| s.value)
        .sum()
}

pub(super) fn run(o: &Opts) -> Result<()> {
    let mut node = SimNode::empty()?;
    for i in 0..o.pods {
        node.add_pod(PodSpec::numbered(i, false))?;
    }
    node.listen_outside(SocketAddr::new(OUTSIDE_IPV4.into(), TCP_PORT))?;
    let tcp = format!("tcp:{OUTSIDE_IPV4}:{TCP_PORT}");
    let icmp = format!("icmp:{OUTSIDE_IPV4}");
    out(&format!(
        "{} pods, {} s per run, default 10 s interval; gateway, node, {icmp}, {tcp} from every pod + host -> pod; cgroup with cpu request {REQUEST_MILLI}m, CFS period {} ms",
        o.pods,
        o.seconds,
        PERIOD_US / 1000
    ));
    out(
        "quota     | start: every pod probed | throttled (time) | steady CPU % | periods | throttled | throttled time | probes | RTT p50 | RTT p99 | failed probes",
    );
    for quota in [None, Some(200), Some(100), Some(50), Some(25)] {
        let name = format!("podnet-bench-{}-{}", std::process::id(), quota.unwrap_or(0));
        let group = CpuGroup::create(&name, quota)?;
        let mut agent = Agent::start(
            &node,
            &["--probe", &icmp, "--probe", &tcp, "--log-level", "info"],
        )?;
        let pid = agent.pid().context("agent pid")?;
        // In the cgroup from the start: the initial sync and every pod's first round are the
        // burst a quota hurts most.
        group.add(pid)?;
        let started = Instant::now();
        super::wait_every_pod_probed(&agent, o.pods)?;
        let warm = started.elapsed();
        let warm_stat = group.stat()?;
        let (m0, c0, s0) = (agent.metrics()?, cpu_time(pid)?, group.stat()?);
        std::thread::sleep(Duration::from_secs(o.seconds as u64));
        let (m1, c1, s1) = (agent.metrics()?, cpu_time(pid)?, group.stat()?);
        agent.stop()?;
        drop(group);
        let (n, p50, p99) = rtt_quantiles(&m0, &m1);
        out(&format!(
            "{:<9} | {:>9.1} s | {:>4} ({:.2} s) | {:>5.2} | {:>7} | {:>9} | {:>11.2} s | {:>6.0} | {:>5.2} ms | {:>5.2} ms | {:.0}",
            quota.map_or("none".to_owned(), |q| format!("{q}m")),
            warm.as_secs_f64(),
            warm_stat.1,
            warm_stat.2.as_secs_f64(),
            (c1 - c0).as_secs_f64() / o.seconds as f64 * 100.0,
            s1.0 - s0.0,
            s1.1 - s0.1,
            (s1.2 - s0.2).as_secs_f64(),
            n,
            p50 * 1e3,
            p99 * 1e3,
            failures(&m1) - failures(&m0),
        ));
    }
    Ok(())
}
