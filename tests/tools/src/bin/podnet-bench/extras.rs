//! The extra cost of issue 18's probes at scale: the release agent in Kubernetes mode with
//! `--pods` pods, probing as `podnet-bench probes` does (gateway, node, an outside ICMP and TCP
//! target from every pod, host → pod) at the default 10 s interval, and on top of that
//! (b) the DNS probe to a ClusterIP DNATed to the test bed's DNS server, (c) an HTTP probe to a
//! server in the outside namespace, (d) the cross-node probe with k = `--k` over a list of
//! `--peers` nodes, (e) all three. Every configuration runs `--runs` times, interleaved
//! (a…e, a…e), so a neighbour's load spreads over all of them.
//!
//! The node list: node B over a real VXLAN overlay (`testbed::peers`), two thirds of the
//! others answering on node B's underlay interface, one third at addresses the outside router
//! drops silently (each of their echoes waits the whole `--probe-timeout`). Every
//! configuration runs with `--remote-blocks calico` (the node list's source), so the
//! difference is the probing alone.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use podnet_testbed::agent::{Agent, agent_binary};
use podnet_testbed::bench::{RssSampler, cpu_time};
use podnet_testbed::cluster::{Cluster, NODE};
use podnet_testbed::dns::{DnsServer, cluster_dns};
use podnet_testbed::exposition::Samples;
use podnet_testbed::http::HttpServer;
use podnet_testbed::peers::{VxlanPeer, add_dead_nodes, blackhole_outside};
use podnet_testbed::simnode::OUTSIDE_IPV4;

use super::{Opts, out};

/// The simulated `kube-dns` ClusterIP and what the server answers for the probe's name.
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const KUBERNETES_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
const TCP_PORT: u16 = 8443;
const HTTP_PORT: u16 = 8080;
/// Where the silent nodes are: dropped by the outside router, clear of `OUTSIDE_IPV4`.
const SILENT: &str = "198.51.100.128/25";
const SILENT_FIRST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 128);
/// The agent's default `--probe-interval`: one round of every pod's probes.
const ROUND: Duration = Duration::from_secs(10);
/// How long after the warm-up memory sampling starts (as in `probes`).
const RSS_SETTLE: Duration = Duration::from_secs(15);
/// Prometheus' scrape interval, kept during the measurement.
const SCRAPE: Duration = Duration::from_secs(15);
const WARM_UP: Duration = Duration::from_secs(120);

/// What runs on top of the baseline probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extra {
    None,
    Dns,
    Http,
    Peers,
    All,
}

impl Extra {
    const ALL: [Extra; 5] = [
        Extra::None,
        Extra::Dns,
        Extra::Http,
        Extra::Peers,
        Extra::All,
    ];

    fn name(self) -> &'static str {
        match self {
            Extra::None => "(a) baseline",
            Extra::Dns => "(b) + DNS",
            Extra::Http => "(c) + HTTP",
            Extra::Peers => "(d) + cross-node",
            Extra::All => "(e) all",
        }
    }

    fn dns(self) -> bool {
        matches!(self, Extra::Dns | Extra::All)
    }

    fn http(self) -> bool {
        matches!(self, Extra::Http | Extra::All)
    }

    fn peers(self) -> bool {
        matches!(self, Extra::Peers | Extra::All)
    }
}

/// The simulated cluster; node B goes first (its teardown needs node A's outside namespace).
struct Bed {
    _peer: VxlanPeer,
    _dns: DnsServer,
    _http: HttpServer,
    c: Cluster,
    /// Other nodes in the list: answering (B included) and silent.
    answering: usize,
    silent: usize,
}

fn build(o: &Opts) -> Result<Bed> {
    let others = o.peers.checked_sub(1).filter(|n| *n >= 1);
    let others = others.context("--peers counts this node too: at least 2")?;
    let silent = others / 3;
    if silent > 127 {
        bail!(
            "--peers {}: at most 127 silent nodes fit in {SILENT}",
            o.peers
        );
    }
    let started = Instant::now();
    let mut c = Cluster::new(o.pods)?;
    c.node
        .listen_outside(SocketAddr::new(OUTSIDE_IPV4.into(), TCP_PORT))?;
    let dns = cluster_dns(&c.node, CLUSTER_IP, KUBERNETES_IP)?;
    let http = HttpServer::start(
        c.node.outside(),
        SocketAddr::new(OUTSIDE_IPV4.into(), HTTP_PORT),
    )?;
    let mut peer = VxlanPeer::new(&c.node)?;
    peer.register(&c.api, NODE);
    peer.add_answering_nodes(&c.api, others - 1 - silent)?;
    blackhole_outside(&c.node, SILENT)?;
    add_dead_nodes(&c.api, silent, SILENT_FIRST);
    out(&format!(
        "simulated cluster built in {:.1} s: {} pods on this node; {others} other nodes (node B over VXLAN, {} answering on B's underlay, {silent} silent)",
        started.elapsed().as_secs_f64(),
        o.pods,
        others - 1 - silent
    ));
    Ok(Bed {
        _peer: peer,
        _dns: dns,
        _http: http,
        c,
        answering: others - silent,
        silent,
    })
}

/// One configuration's measurement.
struct Run {
    extra: Extra,
    load: String,
    rounds: f64,
    cpu: Duration,
    rss_mean_kib: f64,
    rss_max_kib: u64,
    /// Probes counted in `podnet_probes_total` by target.
    probes: BTreeMap<String, f64>,
    peer_rounds: f64,
    peers_failing: f64,
}

impl Run {
    fn cpu_ms_per_round(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e3 / self.rounds
    }

    fn probes_per_round(&self) -> f64 {
        self.probes.values().sum::<f64>() / self.rounds
    }

    /// Echoes of the cross-node probe: k from one pod and k from the host per peer round.
    fn peer_echoes_per_round(&self, k: usize, peers: usize) -> f64 {
        self.peer_rounds * 2.0 * k.min(peers) as f64 / self.rounds
    }
}

fn probes_by_target(m: &Samples) -> BTreeMap<String, f64> {
    let mut by = BTreeMap::new();
    for s in m.named("podnet_probes_total") {
        let target = s.labels.get("target").cloned().unwrap_or_default();
        *by.entry(target).or_insert(0.0) += s.value;
    }
    by
}

fn ok_count(m: &Samples, target: &str) -> f64 {
    m.named("podnet_probes_total")
        .filter(|s| s.labels.get("target").map(String::as_str) == Some(target))
        .filter(|s| s.labels.get("result").map(String::as_str) == Some("ok"))
        .map(|s| s.value)
        .sum()
}

fn peer_rounds(status: &serde_json::Value) -> f64 {
    status["peers"]["rounds"].as_f64().unwrap_or(0.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

fn measure(bed: &Bed, o: &Opts, extra: Extra) -> Result<Run> {
    let icmp = format!("icmp:{OUTSIDE_IPV4}");
    let tcp = format!("tcp:{OUTSIDE_IPV4}:{TCP_PORT}");
    let web = format!("web=http://{OUTSIDE_IPV4}:{HTTP_PORT}/healthz");
    let (cluster_ip, k) = (CLUSTER_IP.to_string(), o.k.to_string());
    let mut args = vec![
        "--log-level",
        "info",
        "--remote-blocks",
        "calico",
        "--probe",
        &icmp,
        "--probe",
        &tcp,
    ];
    if extra.dns() {
        args.extend(["--dns-server", &cluster_ip, "--dns-expect", "10.96.0.1"]);
    } else {
        args.extend(["--dns-service", "none"]);
    }
    if extra.http() {
        args.extend(["--probe", &web]);
    }
    args.extend(["--peer-probes", if extra.peers() { &k } else { "0" }]);
    let load = load_average();
    let agent = bed.c.agent(&agent_binary()?, &args)?;
    let pid = agent.pid().context("agent pid")?;
    warm_up(&agent, o, extra)?;

    let rss = RssSampler::start(vec![pid], RSS_SETTLE);
    let (cpu0, probes0) = (cpu_time(pid)?, probes_by_target(&agent.metrics()?));
    let peer_rounds0 = peer_rounds(&agent.status()?);
    let t0 = Instant::now();
    let window = Duration::from_secs(o.seconds as u64);
    while t0.elapsed() < window {
        std::thread::sleep(SCRAPE.min(window.saturating_sub(t0.elapsed())));
        agent.metrics()?;
    }
    let cpu = cpu_time(pid)? - cpu0;
    let elapsed = t0.elapsed();
    let rss = rss.finish()[0];
    let m = agent.metrics()?;
    let mut probes = probes_by_target(&m);
    for (target, n) in &mut probes {
        *n -= probes0.get(target).copied().unwrap_or(0.0);
    }
    let failing: f64 = m.named("podnet_target_failing_pods").map(|s| s.value).sum();
    if failing > 0.0 {
        bail!("{}: pods failing a target during the run", extra.name());
    }
    let run = Run {
        extra,
        load,
        rounds: elapsed.as_secs_f64() / ROUND.as_secs_f64(),
        cpu,
        rss_mean_kib: rss.mean_kib,
        rss_max_kib: rss.max_kib,
        probes,
        peer_rounds: peer_rounds(&agent.status()?) - peer_rounds0,
        peers_failing: m
            .value_with("podnet_peers", &[("state", "failing")])
            .unwrap_or(0.0),
    };
    let problems = m.node_problems();
    out(&format!(
        "{:<17} load {}: {:.1} rounds, CPU {:.1} ms/round ({:.2}% of a core), RSS mean {:.1} MiB max {:.1}, {:.0} probes/round {:?}, {:.1} peer echoes/round ({:.0} peer rounds, {} peers failing){}",
        extra.name(),
        run.load,
        run.rounds,
        run.cpu_ms_per_round(),
        cpu.as_secs_f64() / elapsed.as_secs_f64() * 100.0,
        run.rss_mean_kib / 1024.0,
        run.rss_max_kib as f64 / 1024.0,
        run.probes_per_round(),
        run.probes
            .iter()
            .map(|(t, n)| format!("{t}={:.0}", n / run.rounds))
            .collect::<Vec<_>>(),
        run.peer_echoes_per_round(o.k, bed.answering + bed.silent),
        run.peer_rounds,
        run.peers_failing,
        if problems.is_empty() {
            String::new()
        } else {
            format!(", node problems {problems:?}")
        }
    ));
    drop(agent);
    Ok(run)
}

/// Every pod probed from the host, and each extra probe answered from every pod (the peers:
/// a first round done).
fn warm_up(agent: &Agent, o: &Opts, extra: Extra) -> Result<()> {
    super::wait_every_pod_probed(agent, o.pods)?;
    let pods = o.pods as f64;
    agent.wait_metrics("the extra probes answered", WARM_UP, |m| {
        (!extra.dns() || ok_count(m, "dns") >= pods)
            && (!extra.http() || ok_count(m, "web") >= pods)
    })?;
    if extra.peers() {
        agent.wait_status("a cross-node round", WARM_UP, |s| peer_rounds(s) >= 1.0)?;
    }
    Ok(())
}

pub(super) fn run(o: &Opts) -> Result<()> {
    let bed = build(o)?;
    let mut runs = Vec::new();
    for _ in 0..o.runs {
        for extra in Extra::ALL {
            runs.push(measure(&bed, o, extra)?);
        }
    }
    let peers = bed.answering + bed.silent;
    out(&format!(
        "\n{} pods, {} s per run after warm-up, k = {}, {peers} peers ({} answering, {} silent)\n",
        o.pods, o.seconds, o.k, bed.answering, bed.silent
    ));
    out(
        "| configuration | load (1 min) | CPU per round | CPU (% of a core) | RSS mean (max) | pod probes per round | peer echoes per round |",
    );
    out("|---|---|---|---|---|---|---|");
    for r in &runs {
        out(&format!(
            "| {} | {} | {:.1} ms | {:.2} % | {:.1} MiB ({:.1}) | {:.0} | {:.1} |",
            r.extra.name(),
            r.load,
            r.cpu_ms_per_round(),
            r.cpu_ms_per_round() / ROUND.as_secs_f64() / 10.0,
            r.rss_mean_kib / 1024.0,
            r.rss_max_kib as f64 / 1024.0,
            r.probes_per_round(),
            r.peer_echoes_per_round(o.k, peers),
        ));
    }
    // Means over the runs, and each extra against the baseline.
    let mean = |extra: Extra, f: &dyn Fn(&Run) -> f64| {
        let v: Vec<f64> = runs.iter().filter(|r| r.extra == extra).map(f).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let base_cpu = mean(Extra::None, &Run::cpu_ms_per_round);
    let base_rss = mean(Extra::None, &|r| r.rss_mean_kib);
    let base_probes = mean(Extra::None, &Run::probes_per_round);
    out(
        "\n| configuration (mean of runs) | extra CPU per round | extra RSS | extra probes per round | extra CPU per extra probe |",
    );
    out("|---|---|---|---|---|");
    for extra in &Extra::ALL[1..] {
        let cpu = mean(*extra, &Run::cpu_ms_per_round) - base_cpu;
        let rss = mean(*extra, &|r| r.rss_mean_kib) - base_rss;
        let probes = mean(*extra, &Run::probes_per_round) - base_probes
            + mean(*extra, &|r| r.peer_echoes_per_round(o.k, peers));
        out(&format!(
            "| {} | {cpu:+.1} ms | {:+.2} MiB | {probes:.0} | {:.0} µs |",
            extra.name(),
            rss / 1024.0,
            cpu * 1e3 / probes.max(1.0)
        ));
    }
    Ok(())
}
