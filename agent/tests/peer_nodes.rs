//! The cross-node probe (`--peer-probes`) between two simulated Calico nodes joined by a real
//! VXLAN overlay (`testbed::peers`): node B reachable → no series; node A's FDB entry for
//! B's VTEP removed → B reported within two rotations, cleared when restored; B's block route
//! removed → B reported, explained by the missing route. And a 50-node list (B, 24 nodes
//! answering on B's underlay interface, 20 addresses nothing answers) covered in ⌈n/k⌉
//! rounds, the dead ones reported one by one, then most peers failing → one node problem.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use podnet_testbed::agent::Agent;
use podnet_testbed::cluster::{Cluster, NODE};
use podnet_testbed::exposition::Samples;
use podnet_testbed::peers::{PEER_TUNNEL, VxlanPeer, add_dead_nodes};

const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");
const WAIT: Duration = Duration::from_secs(60);
/// `--probe-interval`: one round a second.
const ROUND: Duration = Duration::from_secs(1);

/// `podnet_peer_unreachable` series as `(peer, address, explained_by)`.
fn unreachable(m: &Samples) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = m
        .named("podnet_peer_unreachable")
        .map(|s| {
            let l = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
            (l("peer"), l("address"), l("explained_by"))
        })
        .collect();
    v.sort();
    v
}

fn peers(m: &Samples, state: &str) -> Option<f64> {
    m.value_with("podnet_peers", &[("state", state)])
}

/// Node A (the agent's) and node B over VXLAN, both in the API with their blocks.
fn two_nodes() -> (Cluster, VxlanPeer) {
    let c = Cluster::new(2).unwrap();
    let b = VxlanPeer::new(&c.node).unwrap();
    b.register(&c.api, NODE);
    (c, b)
}

fn agent(c: &Cluster) -> Agent {
    agent_with(c, &[])
}

fn agent_with(c: &Cluster, extra: &[&str]) -> Agent {
    let mut args = vec![
        "--remote-blocks",
        "calico",
        "--peer-probes",
        "8",
        "--probe-interval",
        "1s",
        "--probe-timeout",
        "300ms",
    ];
    args.extend_from_slice(extra);
    c.agent(AGENT.as_ref(), &args).unwrap()
}

fn worker_up(m: &Samples, worker: &str) -> Option<f64> {
    m.value_with("podnet_worker_up", &[("worker", worker)])
}

#[test]
fn vxlan_peer_reachable_broken_restored() {
    let (c, b) = two_nodes();
    let mut agent = agent(&c);
    // Reachable: sampled, answering, no series; the overlay and its route are correct.
    let m = agent
        .wait_metrics("node-b sampled and answering", WAIT, |m| {
            peers(m, "sampled") == Some(1.0) && peers(m, "failing") == Some(0.0)
        })
        .unwrap();
    assert_eq!(peers(&m, "known"), Some(1.0));
    assert!(unreachable(&m).is_empty());
    assert_eq!(m.value("podnet_remote_block_problems"), Some(0.0));
    assert_eq!(worker_up(&m, "peers"), Some(1.0));
    std::thread::sleep(3 * ROUND);
    let m = agent.metrics().unwrap();
    assert!(unreachable(&m).is_empty(), "{:?}", unreachable(&m));
    assert!(m.node_problems().is_empty(), "{:?}", m.node_problems());

    // The FDB entry for B's VTEP removed on A: B is reported within two rotations (one round
    // each here: a single peer), and nothing explains it (the route is still there).
    let rounds = |s: &serde_json::Value| s["peers"]["rounds"].as_u64().unwrap_or_default();
    let before = rounds(&agent.status().unwrap());
    b.break_fdb().unwrap();
    let broken = Instant::now();
    let want = vec![("node-b".to_owned(), PEER_TUNNEL.to_owned(), String::new())];
    // The rounds are counted in the snapshot that first reports B (a /status read after a
    // metrics wait could be rounds later on a loaded machine).
    let status = agent
        .wait_status("node-b unreachable", WAIT, |s| {
            s["peers"]["unreachable"][0]["peer"] == "node-b"
        })
        .unwrap();
    let took = broken.elapsed();
    let (after, rotation) = (rounds(&status), status["peers"]["rotation"].as_u64());
    agent
        .wait_metrics("node-b's series", WAIT, |m| unreachable(m) == want)
        .unwrap();
    eprintln!(
        "FDB loss reported after {took:?}, {} rounds",
        after - before
    );
    // Counted in rounds, not seconds: two rotations, plus the round in flight at the break
    // (its echo may have gone out before it). The report may be one scrape behind.
    assert_eq!(rotation, Some(1));
    assert!(
        after - before <= 2 + 1 + 1,
        "reported after {} rounds, more than two rotations",
        after - before
    );
    let m = agent.metrics().unwrap();
    assert!(
        m.node_problems().is_empty(),
        "one peer is not this node's problem"
    );

    // Restored: cleared at the next answered sample.
    b.restore_fdb().unwrap();
    agent
        .wait_metrics("node-b reachable again", WAIT, |m| {
            unreachable(m).is_empty()
        })
        .unwrap();

    // Node B's block route removed: reported, and explained by the missing route.
    b.remove_route().unwrap();
    let want = vec![(
        "node-b".to_owned(),
        PEER_TUNNEL.to_owned(),
        "remote_block_route_missing".to_owned(),
    )];
    agent
        .wait_metrics("node-b unreachable, explained", WAIT, |m| {
            unreachable(m) == want
        })
        .unwrap();
    b.restore_route().unwrap();
    agent
        .wait_metrics("node-b reachable after the route's repair", WAIT, |m| {
            unreachable(m).is_empty() && m.value("podnet_remote_block_problems") == Some(0.0)
        })
        .unwrap();
    assert_eq!(
        agent.get("/healthz").unwrap().0,
        200,
        "{}",
        agent.log_tail()
    );
    agent.stop().unwrap();
}

#[test]
fn fifty_node_list_rotation_and_most_peers_unreachable() {
    let (c, mut b) = two_nodes();
    // 28 nodes answering on node B's underlay interface, 20 that nothing answers (an outside
    // network the outside router has no route for: ICMP net unreachable).
    b.add_answering_nodes(&c.api, 28).unwrap();
    add_dead_nodes(&c.api, 20, Ipv4Addr::new(198, 51, 100, 10));
    let mut agent = agent(&c);
    // 49 peers, 8 a round: every one sampled within ⌈49/8⌉ = 7 rounds.
    let s = agent
        .wait_status("all 49 peers sampled", WAIT, |s| {
            s["peers"]["sampled"] == 49
        })
        .unwrap();
    let p = &s["peers"];
    assert_eq!(
        (p["known"].as_u64(), p["rotation"].as_u64()),
        (Some(49), Some(7))
    );
    let rounds = p["rounds"].as_u64().unwrap();
    assert!(rounds <= 8, "49 peers sampled only after {rounds} rounds");
    // The dead ones reported one by one (fewer than half fail: not this node's problem).
    let m = agent
        .wait_metrics("20 unreachable peers", WAIT, |m| unreachable(m).len() == 20)
        .unwrap();
    assert!(
        unreachable(&m)
            .iter()
            .all(|(p, a, _)| p.starts_with("node-u") && a.starts_with("198.51.100."))
    );
    assert!(m.node_problems().is_empty(), "{:?}", m.node_problems());
    assert_eq!(peers(&m, "unreachable"), Some(20.0));

    // The 28 live ones stop answering: 48 of 49 fail, one node problem and no per-peer series.
    b.remove_addresses().unwrap();
    let m = agent
        .wait_metrics("peers_unreachable", WAIT, |m| {
            m.node_problems().contains("peers_unreachable") && unreachable(m).is_empty()
        })
        .unwrap();
    let series = m
        .named("podnet_node_problem")
        .filter(|s| s.labels.get("reason").map(String::as_str) == Some("peers_unreachable"))
        .count();
    assert_eq!(series, 1);
    // No error storm: one line per peer change at most, nothing panicked.
    let log = agent.log();
    let down = log.matches("peer node unreachable").count();
    assert_eq!(down, 20, "one line per dead peer\n{}", agent.log_tail());
    assert_eq!(
        log.matches("reachable again").count(),
        0,
        "{}",
        agent.log_tail()
    );
    assert!(!log.contains("panicked"), "{}", agent.log_tail());
    assert!(
        log.lines().count() < 400,
        "{} log lines",
        log.lines().count()
    );
    assert_eq!(
        agent.get("/healthz").unwrap().0,
        200,
        "{}",
        agent.log_tail()
    );
    agent.stop().unwrap();
}

/// The cross-node probe is a supervised worker: killed, `/healthz` turns red naming it.
#[test]
fn peer_worker_is_supervised() {
    let (c, _b) = two_nodes();
    let mut agent = agent_with(&c, &["--test-fault", "kill:peers"]);
    agent
        .wait_metrics("the peers worker down", WAIT, |m| {
            worker_up(m, "peers") == Some(0.0)
        })
        .unwrap();
    let (code, body) = agent.get("/healthz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("peers: panicked"), "{body}");
    agent.stop().ok();
}
