//! Netlink storm (issue 11): 20,000 route and link changes in one burst. The agent's event
//! socket has an 8 MiB receive buffer (`SO_RCVBUFFORCE`); a burst overruns it when the agent
//! cannot read for a moment — here it is stopped (SIGSTOP) during the burst, as a CPU limit's
//! throttling does. Afterwards the verdicts equal the kernel's state, the overrun was counted
//! as a re-sync, and a new change reaches `/metrics` within the latency target again at once.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use podnet_testbed::agent::Agent;
use podnet_testbed::exposition::Samples;
use podnet_testbed::simnode::SimNode;

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");

const CHANGES: usize = 20_000;
const WAIT: Duration = Duration::from_secs(60);
/// The verdicts must match the kernel this soon after the burst (and the agent's thaw): far
/// below the periodic re-sync, which is set out of reach so it cannot hide a wrong state.
const EXACT_WITHIN: Duration = Duration::from_secs(5);
/// Event → metric latency target after the storm (docs/benchmarks.md measures ~ms; this is
/// the bound a scrape-based check can assert on a loaded CI machine).
const LATENCY_TARGET: Duration = Duration::from_millis(250);

type Problems = BTreeSet<(String, String, String)>;

fn expected(node: &SimNode, missing: &[(IpAddr, u32)]) -> Problems {
    missing
        .iter()
        .map(|&(ip, oif)| {
            let pod = node.pods().find(|p| p.host_index == oif).unwrap();
            (
                pod.interface.clone(),
                ip.to_string(),
                "route_missing".to_owned(),
            )
        })
        .collect()
}

fn overruns(m: &Samples) -> f64 {
    m.value_with("podnet_netlink_resyncs_total", &[("cause", "overrun")])
        .unwrap_or(0.0)
}

/// One burst; with `stopped` the agent is frozen while it happens. Returns the burst's time
/// and the time until the verdicts matched the kernel.
fn burst(node: &SimNode, agent: &Agent, seed: u64, stopped: bool) -> (Duration, Duration) {
    let pid = Pid::from_raw(agent.pid().unwrap() as i32);
    if stopped {
        kill(pid, Signal::SIGSTOP).unwrap();
    }
    let t = Instant::now();
    let missing = node.storm(CHANGES, seed);
    let burst = t.elapsed();
    if stopped {
        kill(pid, Signal::SIGCONT).unwrap();
    }
    let missing = missing.unwrap();
    let want = expected(node, &missing);
    let t = Instant::now();
    agent
        .wait_metrics("verdicts matching the kernel", EXACT_WITHIN, |m| {
            m.problems() == want && m.node_problems().is_empty()
        })
        .unwrap();
    let settled = t.elapsed();
    // Repair for the next phase.
    for p in node.pods().map(|p| p.index).collect::<Vec<_>>() {
        node.restore_routes(p).unwrap();
    }
    agent
        .wait_metrics("healthy", WAIT, |m| m.problems().is_empty())
        .unwrap();
    (burst, settled)
}

/// Delete one route and time until a scrape shows it.
fn latency(node: &SimNode, agent: &Agent) -> Duration {
    let p = node.pod(3).clone();
    let t = Instant::now();
    node.delete_route(3, p.ipv4.into()).unwrap();
    loop {
        let m = agent.metrics().unwrap();
        if m.problems().iter().any(|(i, _, _)| *i == p.interface) {
            let d = t.elapsed();
            node.restore_routes(3).unwrap();
            return d;
        }
        assert!(t.elapsed() < WAIT, "route deletion never seen");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_20k_change_storm_ends_matching_the_kernel_and_counts_the_overrun() {
    let node = SimNode::new(32, &[0, 1, 2, 3]).unwrap();
    let agent = Agent::start_binary(
        AGENT.as_ref(),
        &node,
        &["--no-probes", "--resync-interval", "600s"],
    )
    .unwrap();
    agent
        .wait_metrics("healthy", WAIT, |m| {
            m.value("podnet_local_pods") == Some(32.0) && m.problems().is_empty()
        })
        .unwrap();

    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", agent.pid().unwrap()))
            .unwrap()
            .count()
    };
    let fds_before = fds();

    // The agent reading along: whether this overruns depends on the machine.
    let before = overruns(&agent.metrics().unwrap());
    let (b1, s1) = burst(&node, &agent, 0x9e37_79b9_7f4a_7c15, false);
    let free_overruns = overruns(&agent.metrics().unwrap()) - before;

    // The agent frozen during the burst: the kernel must drop notifications.
    let before = overruns(&agent.metrics().unwrap());
    let (b2, s2) = burst(&node, &agent, 0xd1b5_4a32_d192_ed03, true);
    let stopped_overruns = overruns(&agent.metrics().unwrap()) - before;
    assert!(stopped_overruns >= 1.0, "no overrun re-sync counted");

    // Within a second of the storm, a new change is seen as fast as on a quiet node.
    let settled_at = Instant::now();
    let lat = latency(&node, &agent);
    assert!(settled_at.elapsed() < Duration::from_secs(1) + lat);
    assert!(
        lat < LATENCY_TARGET,
        "event → metric {lat:?} after the storm"
    );
    // The overrun's subscription was replaced, not added to: its socket is closed.
    // (Polled: a scrape's connection may be open for a moment.)
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut fds_after = fds();
    while fds_after > fds_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        fds_after = fds();
    }
    assert!(fds_after <= fds_before, "fds {fds_before} -> {fds_after}");
    eprintln!(
        "storm: {CHANGES} changes; reading along: burst {:.2}s, verdicts exact {:.2}s later, \
         {free_overruns} overrun re-syncs; frozen: burst {:.2}s, exact {:.2}s after SIGCONT, \
         {stopped_overruns} overrun re-syncs; then event → metric {:.1} ms",
        b1.as_secs_f64(),
        s1.as_secs_f64(),
        b2.as_secs_f64(),
        s2.as_secs_f64(),
        lat.as_secs_f64() * 1e3
    );
}
