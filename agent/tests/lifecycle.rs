//! Shutdown and restart (issue 11): SIGTERM in the middle of a probe round and of re-syncs
//! ends the agent within 2 s, cleanly; SIGKILL and a restart on a node with problems gives the
//! same verdicts within a second of readiness, with no state from before.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use podnet_testbed::agent::Agent;
use podnet_testbed::exposition::Samples;
use podnet_testbed::simnode::{OUTSIDE_IPV4, SimNode};

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");

const WAIT: Duration = Duration::from_secs(30);
const EXIT_WITHIN: Duration = Duration::from_secs(2);

/// SIGTERM, then wait for the exit: `(exit code, how long it took)`.
fn terminate(agent: &mut Agent) -> (Option<i32>, Duration) {
    let pid = agent.pid().unwrap();
    let t = Instant::now();
    let code = agent.stop().unwrap();
    let took = t.elapsed();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the agent's process is still there"
    );
    (code, took)
}

fn pod_failures(m: &Samples) -> BTreeSet<(String, String)> {
    m.named("podnet_pod_probe_failing")
        .map(|s| (s.labels["interface"].clone(), s.labels["target"].clone()))
        .collect()
}

#[test]
fn sigterm_during_a_probe_round_exits_within_two_seconds() {
    // Every pod's outside probe waits for its full timeout: rounds are long and always busy.
    let node = SimNode::new(24, &[]).unwrap();
    node.set_node_blackhole(OUTSIDE_IPV4.into(), true).unwrap();
    let out = format!("out=icmp:{OUTSIDE_IPV4}");
    let flags = [
        "--probe-interval",
        "1s",
        "--probe-timeout",
        "1s",
        "--probe",
        &out,
        "--log-format",
        "json",
    ];
    for offset_ms in [0, 350, 1_100] {
        let mut agent = Agent::start_binary(AGENT.as_ref(), &node, &flags).unwrap();
        agent
            .wait_metrics("probes in flight", WAIT, |m| {
                m.value_with(
                    "podnet_probes_total",
                    &[("target", "gateway"), ("result", "ok")],
                )
                .unwrap_or(0.0)
                    >= 1.0
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(offset_ms));
        let (code, took) = terminate(&mut agent);
        eprintln!("SIGTERM {offset_ms} ms into probing: exit {code:?} after {took:?}");
        assert_eq!(code, Some(0), "{}", agent.log_tail());
        assert!(took < EXIT_WITHIN, "took {took:?}\n{}", agent.log_tail());
        let last = agent.log().lines().last().unwrap_or_default().to_owned();
        assert!(last.contains("\"stopped\""), "last log line: {last}");
    }
}

#[test]
fn sigterm_during_resyncs_exits_within_two_seconds() {
    let node = SimNode::new(40, &[0, 1]).unwrap();
    for round in 0..3 {
        let mut agent = Agent::start_binary(
            AGENT.as_ref(),
            &node,
            &["--no-probes", "--resync-interval", "1s"],
        )
        .unwrap();
        // A link going down forces a full re-read; keep one pod's link flapping so that
        // re-syncs run back to back.
        let stop = Arc::new(AtomicBool::new(false));
        let flapping = {
            let stop = Arc::clone(&stop);
            let ns = node.node_netns().to_owned();
            let idx = node.pod(5).host_index;
            std::thread::spawn(move || {
                let t = podnet_testbed::netns::NetnsThread::join(&ns).unwrap();
                let mut up = false;
                while !stop.load(Ordering::Relaxed) {
                    let _ = t.run(move |h| async move {
                        podnet_testbed::simnode::set_link(&h, idx, up).await
                    });
                    up = !up;
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        agent
            .wait_metrics("link-down re-syncs", WAIT, |m| {
                m.value_with("podnet_netlink_resyncs_total", &[("cause", "link_down")])
                    .unwrap_or(0.0)
                    >= 3.0
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(37 * round));
        let (code, took) = terminate(&mut agent);
        stop.store(true, Ordering::Relaxed);
        flapping.join().unwrap();
        eprintln!("SIGTERM during re-syncs (round {round}): exit {code:?} after {took:?}");
        assert_eq!(code, Some(0), "{}", agent.log_tail());
        assert!(took < EXIT_WITHIN, "took {took:?}\n{}", agent.log_tail());
        node.set_host_link(5, true).unwrap();
        node.restore_routes(5).unwrap();
    }
}

#[test]
fn sigkill_and_restart_reports_the_same_verdicts_within_a_second_of_readiness() {
    let node = SimNode::new(8, &[0]).unwrap();
    let flags = ["--probe-interval", "1s", "--probe", "out=icmp:198.51.100.1"];
    // A node with problems of every kind the agent derives from state.
    node.delete_route(1, node.pod(1).ipv4.into()).unwrap();
    node.blackhole_route(2).unwrap();
    node.set_proxy_arp(3, false).unwrap();
    node.route_via_other_pod(4, 6).unwrap();
    node.delete_pod_default_route(5, true).unwrap();
    node.set_host_link(7, false).unwrap();
    let first = Agent::start_binary(AGENT.as_ref(), &node, &flags).unwrap();
    // Wait until the verdicts are stable: the pod-side reads come with the probes, every
    // sixth round or after a failed one.
    first
        .wait_metrics("all problems seen", WAIT, |m| {
            m.problems()
                .iter()
                .any(|(_, _, r)| r == "pod_default_route_missing")
        })
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let mut before = first.metrics().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(3));
        let now = first.metrics().unwrap();
        let stable =
            now.problems() == before.problems() && pod_failures(&now) == pod_failures(&before);
        before = now;
        if stable {
            break;
        }
        assert!(Instant::now() < deadline, "verdicts never stable");
    }
    let failures_before = pod_failures(&before);
    kill(Pid::from_raw(first.pid().unwrap() as i32), Signal::SIGKILL).unwrap();
    drop(first);

    let second = Agent::start_binary(AGENT.as_ref(), &node, &flags).unwrap();
    let ready = Instant::now();
    let wiring = |m: &Samples| {
        m.problems()
            .into_iter()
            .filter(|(_, _, r)| !r.starts_with("pod_"))
            .collect::<BTreeSet<_>>()
    };
    second
        .wait_metrics("the same wiring verdicts", Duration::from_secs(1), |m| {
            wiring(m) == wiring(&before) && m.node_problems() == before.node_problems()
        })
        .unwrap_or_else(|e| panic!("not within 1 s of readiness: {e:#}"));
    let state_verdicts = ready.elapsed();
    // Pod-side reasons and probe failures need probes (a failure is confirmed by a second
    // probe a second later): measured, and bounded by a few intervals.
    second
        .wait_metrics("the same pod-side verdicts and probe failures", WAIT, |m| {
            m.problems() == before.problems() && pod_failures(m) == failures_before
        })
        .unwrap();
    let all = ready.elapsed();
    eprintln!(
        "restart: {} wiring problems back {:.0} ms after readiness; all {} problems and {} \
         probe failures after {:.2} s",
        wiring(&before).len(),
        state_verdicts.as_secs_f64() * 1e3,
        before.problems().len(),
        failures_before.len(),
        all.as_secs_f64()
    );
}
