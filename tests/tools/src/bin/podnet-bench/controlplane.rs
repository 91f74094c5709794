//! The control-plane check's cost: 50 webhook Services × 3 ready endpoints (TLS servers in
//! three pod namespaces, one port per Service), each Service used by a webhook configuration
//! of 3 webhooks, ClusterIPs DNATed as kube-proxy does; the agent probing every path every
//! 10 s (`--probe-interval`) and re-reading every 30 s. CPU and RSS side by side with the same
//! agent without the check, and the API requests the check adds.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use podnet_kube_double::{RequestKind, endpoint_slice, service, webhook_configuration};
use podnet_testbed::agent::agent_binary;
use podnet_testbed::bench::{cpu_time, status_kib};
use podnet_testbed::cluster::Cluster;
use podnet_testbed::podserver::{PodServer, dnat};

use super::{Opts, out};

const SERVICES: u16 = 50;
const BASE_PORT: u16 = 8000;

pub(super) fn run(o: &Opts) -> Result<()> {
    let c = Cluster::new(3)?;
    let pods: Vec<_> = c.node.pods().cloned().collect();
    let ports: Vec<u16> = (0..SERVICES).map(|i| BASE_PORT + i).collect();
    let _servers: Vec<PodServer> = pods
        .iter()
        .map(|p| {
            let addrs: Vec<_> = ports.iter().map(|port| (p.ipv4, *port).into()).collect();
            PodServer::start_many(&p.netns, &addrs, Some("webhook.bench.svc"))
        })
        .collect();
    for i in 0..SERVICES {
        let name = format!("hook-{i}");
        let ip = format!("10.96.1.{}", i + 1);
        let port = BASE_PORT + i;
        c.api
            .apply_object(service("bench", &name, &ip, 443, "https", port));
        let ips: Vec<String> = pods.iter().map(|p| p.ipv4.to_string()).collect();
        let eps: Vec<(&str, bool)> = ips.iter().map(|ip| (ip.as_str(), true)).collect();
        c.api
            .apply_object(endpoint_slice("bench", &name, "https", port, &eps));
        c.api
            .apply_object(webhook_configuration(true, &name, "bench", &name, 443, 3));
        dnat(c.node.node_netns(), &ip, (pods[0].ipv4, port).into());
    }
    let mut rows = Vec::new();
    for checks in [false, true] {
        let mut args = vec!["--no-probes", "--log-level", "info"];
        if checks {
            args.extend(["--control-plane-checks", "on", "--probe-interval", "10s"]);
        }
        let agent = c.agent(&agent_binary()?, &args)?;
        let pid = agent.pid().context("agent pid")?;
        if checks {
            agent.wait_metrics("every Service ok", Duration::from_secs(60), |m| {
                m.value("podnet_controlplane_services") == Some(f64::from(SERVICES))
                    && m.named("podnet_controlplane_service_problem")
                        .all(|s| s.labels.get("reason").map(String::as_str) == Some("ok"))
            })?;
        }
        c.api.clear_request_log();
        let cpu0 = cpu_time(pid)?;
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(o.seconds as u64));
        let cpu = (cpu_time(pid)? - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0;
        let stats = c.api.stats();
        let minutes = o.seconds as f64 / 60.0;
        let per_min = |k| stats.count(k) as f64 / minutes;
        let rss = status_kib(pid, "VmRSS")? as f64 / 1024.0;
        let hwm = status_kib(pid, "VmHWM")? as f64 / 1024.0;
        let row = format!(
            "| {} | {cpu:.2} % | {rss:.1} MiB | {hwm:.1} MiB | {:.1} | {:.1} |",
            if checks {
                "on (50 Services × 3 endpoints)"
            } else {
                "off"
            },
            per_min(RequestKind::List),
            per_min(RequestKind::Get),
        );
        out(&row);
        rows.push(row);
        drop(agent);
    }
    out("\n| control-plane check | CPU (one core) | RSS | peak RSS | lists/min | gets/min |");
    out("|---|---|---|---|---|---|");
    for r in rows {
        out(&r);
    }
    Ok(())
}
