//! The probe path against its tenants (issue 10): namespaces that appear before their veth,
//! pods that fill their namespace with routes and addresses or flap their interface, and a pod
//! that answers for an outside target. The real agent in a simulated node.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use podnet_testbed::agent::Agent;
use podnet_testbed::simnode::{OUTSIDE_IPV4, PodSpec, SimNode};
use serde_json::Value;

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");

const WAIT: Duration = Duration::from_secs(60);
const INTERVAL: Duration = Duration::from_secs(2);
const OUT4: &str = "icmp:198.51.100.1";

fn start(node: &SimNode) -> Agent {
    Agent::start_binary(
        AGENT.as_ref(),
        node,
        &["--probe-interval", "2s", "--probe", OUT4],
    )
    .unwrap()
}

/// Interfaces whose every destination (in-pod ones included, so the namespace was entered)
/// was probed and is `ok`.
fn healthy(status: &Value) -> BTreeSet<String> {
    status["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            let probes = p["probes"].as_array();
            probes.is_some_and(|d| !d.is_empty() && d.iter().all(|d| d["last"] == "ok"))
        })
        .filter_map(|p| p["interface"].as_str().map(str::to_owned))
        .collect()
}

fn wait_status(agent: &Agent, what: &str, wait: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    agent.wait_status(what, wait, pred).unwrap()
}

/// `ip -n NETNS -batch -` with these lines.
fn ip_batch(netns: &str, lines: impl Iterator<Item = String>) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["-n", netns, "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = std::io::BufWriter::new(child.stdin.take().unwrap());
        for l in lines {
            writeln!(stdin, "{l}").unwrap();
        }
    }
    assert!(
        child.wait().unwrap().success(),
        "ip -n {netns} -batch failed"
    );
}

/// How often each of these pods has probed its gateway (`/status`, `probes` of the
/// destination), in the order given.
fn gateway_probes(status: &Value, interfaces: &[String]) -> Vec<u64> {
    interfaces
        .iter()
        .map(|i| {
            status["pods"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["interface"] == i.as_str())
                .flat_map(|p| p["probes"].as_array().into_iter().flatten())
                .find(|d| d["target"] == "gateway")
                .and_then(|d| d["probes"].as_u64())
                .unwrap_or(0)
        })
        .collect()
}

/// The agent's peak resident set (`VmHWM`), KiB.
fn peak_rss_kib(agent: &Agent) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid().unwrap())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The race: sandboxes whose namespace the agent scans before their CNI created the veth (so
/// before the namespace has an id in the node's namespace), wired 2 s later, are probed and
/// healthy within about one interval. `PODNET_RACE_PODS` (default 20) sets how many; the
/// documented run uses 500.
#[test]
fn a_namespace_scanned_before_its_veth_is_found_once_wired() {
    let n: usize = std::env::var("PODNET_RACE_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut node = SimNode::new(2, &[]).unwrap();
    let agent = start(&node);
    wait_status(&agent, "both pods healthy", WAIT, |s| healthy(s).len() == 2);
    let pending: Vec<_> = (0..n)
        .map(|i| {
            node.create_pod_netns(PodSpec::named("race", &format!("race-{i}")))
                .unwrap()
        })
        .collect();
    // A new pod makes the agent scan /run/netns: it sees the pending namespaces without ids.
    let trigger = node.add_pod(PodSpec::named("race", "trigger")).unwrap();
    let trigger_if = node.pod(trigger).interface.clone();
    wait_status(&agent, "the trigger pod healthy", WAIT, |s| {
        healthy(s).contains(&trigger_if)
    });
    assert!(
        agent.log().contains("located pod namespaces"),
        "no namespace scan logged:\n{}",
        agent.log_tail()
    );
    std::thread::sleep(Duration::from_secs(2));
    let wired_at = Instant::now();
    let wired: Vec<String> = pending
        .into_iter()
        .map(|p| {
            let i = node.wire_pending(p).unwrap();
            node.pod(i).interface.clone()
        })
        .collect();
    let wiring = wired_at.elapsed();
    // Within one interval after the last pod was wired (plus the recheck of a pod caught
    // mid-wiring and the time a round takes).
    let budget = INTERVAL + Duration::from_secs(3);
    let status = wait_status(&agent, "every wired pod healthy", budget, |s| {
        let h = healthy(s);
        wired.iter().all(|i| h.contains(i))
    });
    eprintln!(
        "{n} pods wired in {wiring:?}, all healthy {:?} after the first was wired",
        wired_at.elapsed()
    );
    assert_eq!(healthy(&status).len(), n + 3);
}

/// A pod with 100,000 routes and 10,000 addresses in its own namespace, and a pod flapping
/// its eth0 every 100 ms: the other pods' probes still run every interval, the agent's
/// memory and log stay bounded, and node mode takes one IPv4 address of the crowded pod.
#[test]
fn hostile_pods_do_not_slow_the_others_or_grow_the_agent() {
    let routes: u32 = std::env::var("PODNET_HOSTILE_ROUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let node = SimNode::new(6, &[]).unwrap();
    let crowded = node.pod(4).clone();
    let flapper = node.pod(5).clone();
    // Routes after the default one in the kernel's order (it walks prefixes in order).
    ip_batch(
        &crowded.netns,
        (0..routes).map(|i| {
            format!(
                "route add 10.{}.{}.{}/32 dev eth0",
                100 + (i >> 16),
                (i >> 8) & 0xff,
                i & 0xff
            )
        }),
    );
    ip_batch(
        &crowded.netns,
        (0..10_000u32).map(|i| format!("addr add 10.250.{}.{}/32 dev eth0", i >> 8, i & 0xff)),
    );
    let agent = start(&node);
    let others: Vec<String> = (0..4).map(|i| node.pod(i).interface.clone()).collect();
    wait_status(&agent, "the other pods healthy", WAIT, |s| {
        let h = healthy(s);
        others.iter().all(|i| h.contains(i))
    });
    let stop = Arc::new(AtomicBool::new(false));
    let flap = {
        let stop = Arc::clone(&stop);
        let netns = flapper.netns.clone();
        std::thread::spawn(move || {
            let mut up = false;
            while !stop.load(Ordering::Relaxed) {
                let state = if up { "up" } else { "down" };
                let _ = Command::new("ip")
                    .args(["-n", &netns, "link", "set", "eth0", state])
                    .status();
                up = !up;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let log_before = agent.log().lines().count();
    let before = gateway_probes(&agent.status().unwrap(), &others);
    let window = INTERVAL * 5;
    std::thread::sleep(window);
    let status = agent.status().unwrap();
    let after = gateway_probes(&status, &others);
    stop.store(true, Ordering::Relaxed);
    flap.join().unwrap();
    let log_lines = agent.log().lines().count() - log_before;
    let peak = peak_rss_kib(&agent);
    let rounds: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    eprintln!(
        "rounds per healthy pod in {window:?}: {rounds:?}, agent VmHWM {peak} KiB, {log_lines} log lines"
    );
    // Each of the other pods probed once per interval: at least four rounds in five intervals.
    assert!(
        rounds.iter().all(|r| *r >= 4),
        "the other pods were not probed every interval: {rounds:?} rounds in {window:?}\n{}",
        agent.log_tail()
    );
    let h = healthy(&status);
    assert!(others.iter().all(|i| h.contains(i)), "{h:?}");
    assert!(peak < 64 * 1024, "agent VmHWM {peak} KiB");
    // Debug logging is on in tests; a bounded rate, not a flood per route or per flap.
    assert!(
        log_lines < 4000,
        "{log_lines} log lines in {window:?}:\n{}",
        agent.log_tail()
    );
    // Node mode: one IPv4 pod IP of the 10,001 addresses on the crowded pod's eth0.
    let crowded_ips: Vec<&Value> = status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["interface"] == crowded.interface.as_str())
        .flat_map(|p| p["ips"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(crowded_ips.len(), 1, "{crowded_ips:?}");
}

/// One pod answers for the outside target itself (the target's address on its own loopback):
/// when the path beyond the node breaks for the others, the node still reports the target
/// unreachable instead of per-pod warnings.
#[test]
fn a_pod_answering_for_the_target_cannot_hide_a_node_wide_failure() {
    let node = SimNode::new(3, &[]).unwrap();
    let liar = node.pod(2).clone();
    ip_batch(
        &liar.netns,
        std::iter::once(format!("addr add {OUTSIDE_IPV4}/32 dev lo")),
    );
    let agent = start(&node);
    wait_status(&agent, "all pods healthy", WAIT, |s| healthy(s).len() == 3);
    node.set_outside_return_routes(false).unwrap();
    let m = agent
        .wait_metrics("target_unreachable at node level", WAIT, |m| {
            m.node_problems().contains("target_unreachable")
        })
        .unwrap();
    let pod_failures: Vec<_> = m.named("podnet_pod_probe_failing").collect();
    assert!(pod_failures.is_empty(), "{pod_failures:?}");
    // The liar still "reaches" it.
    let status = agent.status().unwrap();
    let liar_out: Vec<&Value> = status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["interface"] == liar.interface.as_str())
        .flat_map(|p| p["probes"].as_array().into_iter().flatten())
        .filter(|d| d["target"] == OUT4)
        .collect();
    assert!(liar_out.iter().all(|d| d["last"] == "ok"), "{liar_out:?}");
}
