//! Benchmarks on a simulated node with the real (release) agent. Results: docs/benchmarks.md.
//!
//! `podnet-bench core [--pods 250] [--deletions 300] [--idle 60] [--extra-routes 10000]`:
//! route deletion → metric latency, idle CPU and RSS, full re-sync time with extra routes.
//!
//! `podnet-bench probes [--pods 250] [--seconds 300]`: the agent probing every pod (gateway,
//! node, an outside ICMP and an outside TCP target, host → pod) at the default interval, side
//! by side with prometheus-blackbox-exporter doing the same host → pod ICMP probes at the same
//! rate; CPU, memory and per-probe cost of both.
//!
//! `podnet-bench kube [--pods 250] [--others 50000] [--seconds 300]`: Kubernetes mode with this
//! node's pods among many others in the API double: memory, time to sync, API requests/min.
//!
//! `podnet-bench throttle [--pods 250] [--seconds 300]`: the probing agent in a scratch CPU
//! cgroup with the manifest's request, without a quota and with CFS quotas of 200m to 25m:
//! throttled periods and the probes' round-trip times and failures.
//!
//! `podnet-bench controlplane [--seconds N]`: the control-plane check probing 50 webhook
//! Services × 3 endpoints every 10 s: CPU, RSS and API requests with and without it.
//!
//! `podnet-bench blocks [--pods 250] [--blocks 5000] [--deletions 300]`: route deletion →
//! metric latency and RSS, without and with `--remote-blocks calico`, with the API double
//! serving the blocks of `blocks / 4` nodes and a route for each in the node's table.
//!
//! `podnet-bench connects [--pods 250] [--seconds 300]`: the probing agent with
//! `--no-connect-watch`, with the connect watch, and with 1,000 connects stuck in `SYN_SENT` in
//! one pod: CPU per round, RSS, and the stuck pod's kept and dropped destinations.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use podnet_testbed::agent::{Agent, PORT, http_get};
use podnet_testbed::bench::{cpu_time, ms, percentile, status_kib};
use podnet_testbed::simnode::{GATEWAY_IPV4, GATEWAY_IPV6, PodSpec, SimNode, pod_route};
use rtnetlink::RouteMessageBuilder;

fn main() -> ExitCode {
    const USAGE: &str = "usage: podnet-bench core [--pods N] [--deletions N] [--idle SECS] [--extra-routes N]\n       podnet-bench probes [--pods N] [--seconds N]\n       podnet-bench kube [--pods N] [--others N] [--seconds N]\n       podnet-bench throttle [--pods N] [--seconds N]\n       podnet-bench controlplane [--seconds N]\n       podnet-bench blocks [--pods N] [--blocks N] [--deletions N]\n       podnet-bench connects [--pods N] [--seconds N]\n       podnet-bench extras [--pods N] [--seconds N] [--peers N] [--k N] [--runs N]";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match Opts::parse(args.get(1..).unwrap_or_default()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("podnet-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match args.first().map(String::as_str) {
        Some("core") => core(&opts),
        Some("probes") => probes::run(&opts),
        Some("kube") => kube::run(&opts),
        Some("throttle") => throttle::run(&opts),
        Some("controlplane") => controlplane::run(&opts),
        Some("blocks") => blocks::run(&opts),
        Some("connects") => connects::run(&opts),
        Some("extras") => extras::run(&opts),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podnet-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Opts {
    pods: usize,
    deletions: usize,
    idle: usize,
    extra_routes: usize,
    seconds: usize,
    others: usize,
    blocks: usize,
    peers: usize,
    k: usize,
    runs: usize,
}

impl Opts {
    /// `--name N` pairs; anything else (including `--help`) is an error, so a typo never runs
    /// a five-minute benchmark with the defaults.
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut o = Opts {
            pods: 250,
            deletions: 300,
            idle: 60,
            extra_routes: 10_000,
            seconds: 300,
            others: 50_000,
            blocks: 5_000,
            peers: 50,
            k: 8,
            runs: 2,
        };
        let mut it = args.iter();
        while let Some(name) = it.next() {
            let field = match name.as_str() {
                "--pods" => &mut o.pods,
                "--deletions" => &mut o.deletions,
                "--idle" => &mut o.idle,
                "--extra-routes" => &mut o.extra_routes,
                "--seconds" => &mut o.seconds,
                "--others" => &mut o.others,
                "--blocks" => &mut o.blocks,
                "--peers" => &mut o.peers,
                "--k" => &mut o.k,
                "--runs" => &mut o.runs,
                _ => return Err(format!("unknown option {name}")),
            };
            let value = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            *field = value
                .parse()
                .map_err(|_| format!("{name} {value}: not a number"))?;
        }
        Ok(o)
    }
}

mod blocks;
mod connects;
mod controlplane;
mod extras;
mod kube;
mod probes;
mod throttle;

/// The benchmark's report is its output.
#[allow(clippy::print_stdout)]
fn out(s: &str) {
    println!("{s}");
}

fn core(o: &Opts) -> Result<()> {
    let started = Instant::now();
    let mut node = SimNode::empty()?;
    for i in 0..o.pods {
        node.add_pod(PodSpec::numbered(i, i % 10 == 0))?;
    }
    out(&format!(
        "simulated node: {} pods ({} dual-stack), built in {:.1} s",
        o.pods,
        o.pods.div_ceil(10),
        started.elapsed().as_secs_f64()
    ));
    // Route verification alone first (probes off), logging at info as in production.
    let mut agent = Agent::start(&node, &["--no-probes", "--log-level", "info"])?;
    let pid = agent.pid().context("agent pid")?;
    agent.wait_metrics("all pods", Duration::from_secs(60), |m| {
        m.value("podnet_local_pods") == Some(o.pods as f64)
    })?;

    // 1. Route deletion in the kernel → metric changed, and repair → metric cleared.
    let (detect, recover) = latency(&node, o.deletions)?;
    report_latency("route checks only (--no-probes)", &detect, &recover);

    // 2. Idle: nothing changes, nobody scrapes.
    let cpu0 = cpu_time(pid)?;
    std::thread::sleep(Duration::from_secs(o.idle as u64));
    let cpu = cpu_time(pid)? - cpu0;
    out(&format!(
        "\nidle {} s at {} pods: CPU {:.3}% of one core, RSS {:.1} MiB (peak {:.1} MiB)",
        o.idle,
        o.pods,
        cpu.as_secs_f64() / o.idle as f64 * 100.0,
        status_kib(pid, "VmRSS")? as f64 / 1024.0,
        status_kib(pid, "VmHWM")? as f64 / 1024.0
    ));

    // 1b. The same with the default configuration: probes running.
    agent.stop()?;
    let agent = Agent::start(&node, &["--log-level", "info"])?;
    wait_every_pod_probed(&agent, o.pods)?;
    let (detect, recover) = latency(&node, o.deletions)?;
    report_latency("default configuration (probes running)", &detect, &recover);
    drop(agent);

    // 3. Full re-sync time, without and with extra routes in the main table.
    let base = resync_times(&node, "without extra routes")?;
    let extra = o.extra_routes;
    node.node().run(move |h| async move {
        for k in 0..extra {
            // Half IPv4 (an unused part of the pod range), half IPv6 (documentation range).
            let msg = if k % 2 == 0 {
                let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 128, 0)) + k as u32);
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(ip, 32)
                    .gateway(GATEWAY_IPV4)
                    .build()
            } else {
                let ip = Ipv6Addr::from(
                    u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0xf000, 0, 0, 0, 0, 0)) + k as u128,
                );
                RouteMessageBuilder::<Ipv6Addr>::new()
                    .destination_prefix(ip, 128)
                    .gateway(GATEWAY_IPV6)
                    .build()
            };
            h.route().add(msg).execute().await?;
        }
        Ok(())
    })?;
    let with = resync_times(&node, &format!("with {extra} extra routes"))?;
    out(&format!(
        "\nfull re-sync (links, routes, addresses, netconf, {} pod namespaces' addresses):",
        o.pods
    ));
    for (label, mut t) in [("baseline", base), ("extra", with)] {
        t.sort();
        out(&format!(
            "  {label:<8} n={}  p50 {} ms  max {} ms",
            t.len(),
            ms(percentile(&t, 0.5)),
            ms(percentile(&t, 1.0))
        ));
    }
    Ok(())
}

/// Delete and re-add `n` pod routes (a different pod each time); the time from each change to
/// `/metrics` reflecting it.
fn latency(node: &SimNode, n: usize) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let targets: Vec<(IpAddr, u32, String)> = node
        .pods()
        .map(|p| (IpAddr::V4(p.ipv4), p.host_index, p.interface.clone()))
        .collect();
    let (mut detect, mut recover) = node.node().run(move |h| async move {
        let addr = SocketAddr::from(([127, 0, 0, 1], PORT));
        let mut detect = Vec::with_capacity(n);
        let mut recover = Vec::with_capacity(n);
        for k in 0..n {
            let (ip, oif, iface) = &targets[(k * 7) % targets.len()];
            let needle = format!("interface=\"{iface}\",ip=\"{ip}\",reason=\"route_missing\"");
            let msg = pod_route(*ip, *oif)?;
            let t0 = Instant::now();
            h.route().del(msg.clone()).execute().await?;
            let del_took = t0.elapsed();
            wait_body(addr, t0, |b| b.contains(&needle))?;
            let took = t0.elapsed();
            detect.push(took);
            if took > Duration::from_millis(5) {
                eprintln!("slow detection #{k}: {took:?} (the delete call took {del_took:?})");
            }
            let t1 = Instant::now();
            h.route().add(msg).execute().await?;
            wait_body(addr, t1, |b| !b.contains("podnet_pod_problem{"))?;
            recover.push(t1.elapsed());
        }
        Ok((detect, recover))
    })?;
    detect.sort();
    recover.sort();
    Ok((detect, recover))
}

fn report_latency(label: &str, detect: &[Duration], recover: &[Duration]) {
    out(&format!("\n{label}:"));
    out(&format!(
        "  route deletion -> /metrics shows route_missing ({} deletions): p50 {} ms  p99 {} ms  max {} ms",
        detect.len(),
        ms(percentile(detect, 0.5)),
        ms(percentile(detect, 0.99)),
        ms(percentile(detect, 1.0))
    ));
    out(&format!(
        "  route re-added -> problem series gone ({} repairs): p50 {} ms  p99 {} ms  max {} ms",
        recover.len(),
        ms(percentile(recover, 0.5)),
        ms(percentile(recover, 0.99)),
        ms(percentile(recover, 1.0))
    ));
}

/// Wait until the agent has probed every pod from the host at least once.
fn wait_every_pod_probed(agent: &Agent, pods: usize) -> Result<()> {
    agent.wait_metrics("every pod probed", Duration::from_secs(60), |m| {
        m.value_with(
            "podnet_probes_total",
            &[("target", "pod"), ("result", "ok")],
        )
        .unwrap_or(0.0)
            >= pods as f64
    })?;
    Ok(())
}

/// Poll /metrics until `done(body)`.
fn wait_body(addr: SocketAddr, since: Instant, done: impl Fn(&str) -> bool) -> Result<()> {
    loop {
        let (_, body) = http_get(addr, "/metrics")?;
        if done(&body) {
            return Ok(());
        }
        if since.elapsed() > Duration::from_secs(10) {
            bail!("no change after 10 s");
        }
    }
}

/// Run an agent re-syncing every second for a while; the per-re-sync times from its log.
fn resync_times(node: &SimNode, label: &str) -> Result<Vec<Duration>> {
    let agent = Agent::start(node, &["--resync-interval", "1s"])?;
    std::thread::sleep(Duration::from_secs(12));
    let times: Vec<Duration> = agent
        .log()
        .lines()
        .filter(|l| l.contains("full re-sync done"))
        .filter_map(|l| {
            let v = l.split("ms=").nth(1)?.split_whitespace().next()?;
            v.parse::<f64>()
                .ok()
                .map(|ms| Duration::from_secs_f64(ms / 1e3))
        })
        .collect();
    if times.len() < 5 {
        bail!("only {} re-syncs {label}", times.len());
    }
    let routes = agent
        .metrics()?
        .value("podnet_netlink_routes")
        .unwrap_or(0.0);
    out(&format!("  ({label}: {routes} main-table routes)"));
    Ok(times)
}
