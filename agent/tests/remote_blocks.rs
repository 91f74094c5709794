//! Remote block routes on a simulated Calico node: the agent follows BlockAffinities and Nodes
//! from the API double and checks that every other node's block is routed toward that node —
//! plain routed mode (`via <node IP>`, as BIRD programs it) and VXLAN (`via <tunnel addr> dev
//! vxlan.calico onlink`). A lost route (a dropped BGP session), a route via the wrong node,
//! repair, and nodes joining and leaving while the agent runs.

use std::process::Command;
use std::time::{Duration, Instant};

use podnet_kube_double::{Resource, block_affinity, calico_node, calico_node_v6};
use podnet_testbed::agent::Agent;
use podnet_testbed::cluster::{Cluster, NODE};
use podnet_testbed::exposition::Samples;

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");
const WAIT: Duration = Duration::from_secs(30);
/// The reporting deadline after a route change (the agent judges on the route event itself).
const REPORT: Duration = Duration::from_secs(1);

/// Peer nodes on the node's uplink subnet (192.0.2.0/24), and their blocks.
const PEER_B: (&str, &str, &str) = ("node-b", "192.0.2.11", "10.244.200.0/26");
const PEER_C: (&str, &str, &str) = ("node-c", "192.0.2.12", "10.244.201.0/26");
/// node-c's VXLAN tunnel address (the gateway of its block's route over `vxlan.calico`).
const TUNNEL_C: &str = "10.244.201.1";

/// `ip -n <ns> <args>`; panics with `ip`'s stderr on failure.
fn ip(ns: &str, args: &str) {
    let out = Command::new("ip")
        .arg("-n")
        .arg(ns)
        .args(args.split_whitespace())
        .output()
        .expect("running ip");
    assert!(
        out.status.success(),
        "ip -n {ns} {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn agent(c: &Cluster) -> Agent {
    let args = ["--no-probes", "--remote-blocks", "calico"];
    c.agent(AGENT.as_ref(), &args).unwrap()
}

/// Failing blocks as `(block, node, reason)`.
fn failing(m: &Samples) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = m
        .named("podnet_remote_block_problem")
        .map(|s| {
            let l = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
            (l("block"), l("remote_node"), l("reason"))
        })
        .collect();
    v.sort();
    v
}

fn wait_failing(agent: &Agent, within: Duration, want: &[(&str, &str, &str)]) -> Duration {
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(b, n, r)| ((*b).into(), (*n).into(), (*r).into()))
        .collect();
    let start = Instant::now();
    let deadline = start + within;
    loop {
        let got = agent.metrics().map(|m| failing(&m)).unwrap_or_default();
        if got == want {
            return start.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "remote block problems {got:?} != {want:?} after {within:?}\n{}",
            agent.log_tail()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn remote_block_routes_routed_and_vxlan() {
    let c = Cluster::new(1).unwrap();
    let ns = c.node.node_netns();
    let (b, b_ip, b_block) = PEER_B;
    let (cn, c_ip, c_block) = PEER_C;
    // node-b: plain routed mode, as BIRD programs it without encapsulation.
    ip(
        ns,
        &format!("route add {b_block} via {b_ip} dev eth0 proto bird"),
    );
    // node-c: VXLAN, felix's vxlan.calico device with the peer's tunnel address as gateway.
    ip(
        ns,
        "link add vxlan.calico type vxlan id 4096 dstport 4789 dev eth0 local 192.0.2.10",
    );
    ip(ns, "addr add 10.244.250.0/32 dev vxlan.calico");
    ip(ns, "link set vxlan.calico up");
    ip(
        ns,
        &format!("route add {c_block} via {TUNNEL_C} dev vxlan.calico onlink proto 80"),
    );
    c.api.apply_object(calico_node(b, b_ip, None));
    c.api.apply_object(calico_node(cn, c_ip, Some(TUNNEL_C)));
    c.api.apply_object(block_affinity(b, b_block));
    c.api.apply_object(block_affinity(cn, c_block));
    // This node's own block: recognized as local whatever its route (a blackhole here).
    c.api.apply_object(block_affinity(NODE, "10.244.0.0/26"));
    let mut agent = agent(&c);
    wait_blocks(&agent, 2);
    wait_failing(&agent, REPORT, &[]);
    // The block watch is a supervised worker that stays up.
    assert_eq!(
        agent.get("/healthz").unwrap().0,
        200,
        "{}",
        agent.log_tail()
    );
    // A lost BGP session: BIRD withdraws node-b's block route.
    ip(ns, &format!("route del {b_block}"));
    let took = wait_failing(
        &agent,
        REPORT,
        &[(b_block, b, "remote_block_route_missing")],
    );
    eprintln!("route loss reported after {took:?}");
    // Repair.
    ip(
        ns,
        &format!("route add {b_block} via {b_ip} dev eth0 proto bird"),
    );
    let took = wait_failing(&agent, REPORT, &[]);
    eprintln!("repair reported after {took:?}");
    // Routed via the wrong node: node-b's block toward node-c.
    ip(
        ns,
        &format!("route replace {b_block} via {c_ip} dev eth0 proto bird"),
    );
    wait_failing(
        &agent,
        REPORT,
        &[(b_block, b, "remote_block_route_wrong_next_hop")],
    );
    // The VXLAN route with a wrong tunnel address (node-b's IP, not node-c's VTEP): wrong.
    ip(
        ns,
        &format!("route replace {b_block} via {b_ip} dev eth0 proto bird"),
    );
    ip(
        ns,
        &format!("route replace {c_block} via 10.244.200.1 dev vxlan.calico onlink proto 80"),
    );
    wait_failing(
        &agent,
        REPORT,
        &[(c_block, cn, "remote_block_route_wrong_next_hop")],
    );
    ip(
        ns,
        &format!("route replace {c_block} via {TUNNEL_C} dev vxlan.calico onlink proto 80"),
    );
    wait_failing(&agent, REPORT, &[]);

    // A node joins while the agent runs: its block has no route yet.
    c.api
        .apply_object(calico_node("node-d", "192.0.2.13", None));
    c.api
        .apply_object(block_affinity("node-d", "10.244.202.0/26"));
    wait_blocks(&agent, 3);
    wait_failing(
        &agent,
        REPORT,
        &[("10.244.202.0/26", "node-d", "remote_block_route_missing")],
    );
    ip(
        ns,
        "route add 10.244.202.0/26 via 192.0.2.13 dev eth0 proto bird",
    );
    wait_failing(&agent, REPORT, &[]);
    // node-b leaves: its route goes with it, and so does its block.
    c.api
        .delete_object(Resource::BlockAffinities, &block_name(b, b_block));
    c.api.delete_object(Resource::Nodes, b);
    wait_blocks(&agent, 2);
    // Nothing reported: the block is no longer in the cluster.
    ip(ns, &format!("route del {b_block}"));
    std::thread::sleep(Duration::from_millis(200));
    wait_failing(&agent, REPORT, &[]);
    let m = agent.metrics().unwrap();
    assert_eq!(m.value("podnet_remote_block_problems"), Some(0.0));
    // Nodes were read as metadata only (Calico's annotations carry the addresses: the double
    // served no status), BlockAffinities whole.
    let log = c.api.request_log();
    let nodes: Vec<_> = log.iter().filter(|r| r.path == "/api/v1/nodes").collect();
    assert!(
        !nodes.is_empty() && nodes.iter().all(|r| r.metadata_only),
        "{nodes:?}"
    );
    let blocks = log.iter().filter(|r| r.path.ends_with("/blockaffinities"));
    assert!(blocks.clone().count() > 0 && blocks.clone().all(|r| !r.metadata_only));
    agent.stop().unwrap();
}

fn wait_blocks(agent: &Agent, n: usize) {
    agent
        .wait_metrics("the block map", WAIT, |m| {
            m.value("podnet_remote_blocks") == Some(n as f64)
        })
        .unwrap();
}

fn block_name(node: &str, cidr: &str) -> String {
    block_affinity(node, cidr)["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// IPv6 blocks (Calico's default `/122`), routed via the peer's IPv6 address as BIRD programs
/// them: verified, a lost route named, a route via an unknown address named, the repair seen.
#[test]
fn remote_ipv6_block_routes() {
    let c = Cluster::new(1).unwrap();
    let ns = c.node.node_netns();
    let (peer, peer_ip, block) = ("node-v6", "2001:db8::11", "fd00:10:246::/122");
    ip(
        ns,
        &format!("-6 route add {block} via {peer_ip} dev eth0 proto bird"),
    );
    c.api.apply_object(calico_node_v6(peer, peer_ip));
    c.api.apply_object(block_affinity(peer, block));
    let mut agent = agent(&c);
    wait_blocks(&agent, 1);
    wait_failing(&agent, REPORT, &[]);
    ip(ns, &format!("-6 route del {block}"));
    wait_failing(
        &agent,
        REPORT,
        &[(block, peer, "remote_block_route_missing")],
    );
    ip(
        ns,
        &format!("-6 route add {block} via 2001:db8::99 dev eth0 proto bird"),
    );
    wait_failing(
        &agent,
        REPORT,
        &[(block, peer, "remote_block_route_wrong_next_hop")],
    );
    ip(
        ns,
        &format!("-6 route replace {block} via {peer_ip} dev eth0 proto bird"),
    );
    wait_failing(&agent, REPORT, &[]);
    agent.stop().unwrap();
}
