//! Remote block verification at scale: the agent with pods from the API double, which also
//! serves `--blocks` BlockAffinities of `--blocks / 4` nodes (Calico's annotations, served as
//! metadata only), and one matching route per block in the simulated node's main table. Route
//! deletion → `/metrics` latency and RSS, without and with `--remote-blocks calico`.
//!
//! The blocks are IPv6 `/122`s (Calico's default IPv6 block size) in `fd00:10:245::/48`, their
//! nodes' addresses in `2001:db8::/64` on the node's uplink: 5,000 IPv4 `/26`s do not fit in the
//! test's pod range (`10.244.0.0/16` holds 1,024). The check's cost does not depend on the
//! family: each block is one exact-prefix look-up when its route exists.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use podnet_kube_double::{KubeApiServer, PodBuilder, block_affinity, calico_node_v6};
use podnet_testbed::agent::Agent;
use podnet_testbed::bench::{ms, percentile, status_kib};
use podnet_testbed::simnode::{PodSpec, SimNode};
use rtnetlink::RouteMessageBuilder;

use super::{Opts, latency, out};

const NODE: &str = "sim-node";
/// Blocks per node, as in the sizing (5,000 nodes × 4 blocks).
const BLOCKS_PER_NODE: usize = 4;
/// Runs of each mode, alternating.
const ROUNDS: usize = 2;

/// Block `k`: `fd00:10:245::/48` cut into `/122`s.
fn block(k: usize) -> Ipv6Addr {
    Ipv6Addr::from(
        u128::from(Ipv6Addr::new(0xfd00, 0x10, 0x245, 0, 0, 0, 0, 0)) + ((k as u128) << 6),
    )
}

/// Node `n`'s address on the uplink's `2001:db8::/64`.
fn node_ip(n: usize) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 1, 0, 0)) + n as u128)
}

/// A Calico node known by its IPv6 address annotation.
fn peer(n: usize) -> serde_json::Value {
    calico_node_v6(&format!("node-{n}"), &node_ip(n).to_string())
}

struct Run {
    p50: Duration,
    p99: Duration,
    rss_kib: u64,
    hwm_kib: u64,
}

pub(super) fn run(o: &Opts) -> Result<()> {
    let n_blocks = o.blocks;
    let n_nodes = n_blocks.div_ceil(BLOCKS_PER_NODE);
    let mut node = SimNode::empty()?;
    for i in 0..o.pods {
        node.add_pod(PodSpec::numbered(i, false))?;
    }
    let t = Instant::now();
    node.node().run(move |h| async move {
        for k in 0..n_blocks {
            let msg = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(block(k), 122)
                .gateway(node_ip(k / BLOCKS_PER_NODE))
                .build();
            h.route().add(msg).execute().await?;
        }
        Ok(())
    })?;
    out(&format!(
        "simulated node: {} pods; {n_blocks} remote block routes of {n_nodes} nodes added in {:.1} s",
        o.pods,
        t.elapsed().as_secs_f64()
    ));
    let api = KubeApiServer::start(
        Some(node.node_netns()),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )?;
    api.register_node(NODE);
    api.bulk_insert(node.pods().map(|p| {
        PodBuilder::new(&p.namespace, &p.name)
            .node(NODE)
            .ipv4(p.ipv4)
            .build()
    }));
    api.bulk_insert((0..n_nodes).map(peer));
    api.bulk_insert((0..n_blocks).map(|k| {
        block_affinity(
            &format!("node-{}", k / BLOCKS_PER_NODE),
            &format!("{}/122", block(k)),
        )
    }));
    let kubeconfig = std::env::temp_dir().join(format!("{}-kubeconfig", node.node_netns()));
    api.kubeconfig(&kubeconfig)?;
    let path = kubeconfig.to_str().context("path")?.to_owned();
    // Alternating runs, so load from elsewhere on the machine falls on both modes alike.
    let mut runs: Vec<(bool, Run)> = Vec::new();
    let result = (0..ROUNDS).try_for_each(|_| {
        for blocks in [false, true] {
            runs.push((blocks, measure(&node, o, &path, blocks)?));
        }
        Ok::<_, anyhow::Error>(())
    });
    let _ = std::fs::remove_file(&kubeconfig);
    result?;
    out(
        "\n| --remote-blocks | blocks checked | route deletion -> /metrics p50 | p99 | RSS | peak RSS |\n|---|---|---|---|---|---|",
    );
    for (blocks, r) in &runs {
        out(&format!(
            "| {} | {} | {} ms | {} ms | {:.2} MiB | {:.2} MiB |",
            if *blocks { "calico" } else { "off" },
            if *blocks { n_blocks } else { 0 },
            ms(r.p50),
            ms(r.p99),
            r.rss_kib as f64 / 1024.0,
            r.hwm_kib as f64 / 1024.0,
        ));
    }
    // The least disturbed run of each mode; RSS as the mean over the runs.
    let best = |b: bool| {
        let of = runs.iter().filter(|(m, _)| *m == b).map(|(_, r)| r);
        let p99 = of.clone().map(|r| r.p99).min().unwrap_or_default();
        let rss = of.clone().map(|r| r.rss_kib as f64).sum::<f64>() / ROUNDS as f64;
        (p99, rss)
    };
    let ((p99_off, rss_off), (p99_on, rss_on)) = (best(false), best(true));
    out(&format!(
        "\nremote-block verification at {n_blocks} blocks adds {:.3} ms to the route-event -> metric p99 (best of {ROUNDS} runs each) and {:.2} MiB RSS (mean)",
        (p99_on.as_secs_f64() - p99_off.as_secs_f64()) * 1e3,
        (rss_on - rss_off) / 1024.0
    ));
    Ok(())
}

fn measure(node: &SimNode, o: &Opts, kubeconfig: &str, blocks: bool) -> Result<Run> {
    let mut args = vec![
        "--pod-source",
        "kubernetes",
        "--kubeconfig",
        kubeconfig,
        "--no-probes",
        "--log-level",
        "info",
    ];
    if blocks {
        args.extend(["--remote-blocks", "calico"]);
    }
    let mut agent = Agent::start(node, &args)?;
    let pid = agent.pid().context("agent pid")?;
    let want = if blocks { o.blocks as f64 } else { 0.0 };
    agent.wait_metrics("every pod and block", Duration::from_secs(180), |m| {
        m.value("podnet_local_pods") == Some(o.pods as f64)
            && m.value_with("podnet_pod_problem", &[]).is_none()
            && m.value("podnet_remote_blocks").unwrap_or(0.0) == want
            && m.value("podnet_remote_block_problems").unwrap_or(0.0) == 0.0
    })?;
    let (detect, _) = latency(node, o.deletions)?;
    // Past the agent's periodic heap trim (every 10 s), so freed list pages are returned.
    std::thread::sleep(Duration::from_secs(11));
    let m = agent.metrics()?;
    if m.value("podnet_remote_block_problems").unwrap_or(0.0) != 0.0 {
        bail!(
            "remote block problems during the run:\n{}",
            agent.log_tail()
        );
    }
    let run = Run {
        p50: percentile(&detect, 0.5),
        p99: percentile(&detect, 0.99),
        rss_kib: status_kib(pid, "VmRSS")?,
        hwm_kib: status_kib(pid, "VmHWM")?,
    };
    out(&format!(
        "--remote-blocks {}: {} deletions, p50 {} ms, p99 {} ms, max {} ms; RSS {:.2} MiB (peak {:.2})",
        if blocks { "calico" } else { "off" },
        detect.len(),
        ms(run.p50),
        ms(run.p99),
        ms(percentile(&detect, 1.0)),
        run.rss_kib as f64 / 1024.0,
        run.hwm_kib as f64 / 1024.0
    ));
    agent.stop()?;
    Ok(run)
}
