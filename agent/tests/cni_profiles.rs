//! The real agent on pods wired by the real CNI reference plugins (`ptp`, `bridge` with
//! `host-local`, from `containernetworking-plugins`): healthy pods give zero problem series and
//! every probe passes (the gateway is the plugin's, not Calico's 169.254.1.1); each fault that
//! makes sense for the plugin is reported on exactly the affected pod with exactly its reason,
//! in that plugin's terms, and cleared after the repair.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use podnet_testbed::agent::Agent;
use podnet_testbed::cni::{BRIDGE, CniNode, CniPod, Plugin};
use podnet_testbed::exposition::Samples;
use podnet_testbed::simnode::{SimNode, SimPod};
use serde_json::Value;

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");

/// Generous guard; the agent reacts in milliseconds.
const WAIT: Duration = Duration::from_secs(30);

const PODS: usize = 4;

type Problems = BTreeSet<(String, String, String)>;

fn start(plugin: Plugin) -> (CniNode, Agent) {
    let node = CniNode::new(plugin, PODS).unwrap();
    let agent = start_agent(&node, plugin.name());
    (node, agent)
}

fn start_agent(node: &CniNode, cni: &str) -> Agent {
    Agent::start_binary(
        AGENT.as_ref(),
        node.sim(),
        &[
            "--pod-source",
            "node",
            "--cni",
            cni,
            "--interface-prefix",
            "veth",
            "--probe-interval",
            "1s",
        ],
    )
    .unwrap()
}

/// What the issue saw: `--cni generic` on the real plugins' wiring paged for every healthy
/// pod (`proxy_arp_disabled`, and `route_missing` on a bridge). Now quiet, probes included.
#[test]
fn generic_profile_is_quiet_on_healthy_ptp_and_bridge_pods() {
    for plugin in [Plugin::Ptp, Plugin::Bridge] {
        let node = CniNode::new(plugin, PODS).unwrap();
        let agent = start_agent(&node, "generic");
        healthy(&agent, &format!("{} pods, generic profile", plugin.name()));
    }
}

fn problems(pod: &CniPod, reasons: &[&str]) -> Problems {
    reasons
        .iter()
        .map(|r| (pod.interface.clone(), pod.ip.to_string(), (*r).to_owned()))
        .collect()
}

fn expect(agent: &Agent, what: &str, want: &Problems) {
    let m = agent
        .wait_metrics(what, WAIT, |m| m.problems() == *want)
        .unwrap();
    assert!(
        m.node_problems().is_empty(),
        "{what}: {:?}",
        m.node_problems()
    );
}

/// Every pod found, every probe answered, and not a single per-pod series.
fn healthy(agent: &Agent, what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let m = agent.metrics().unwrap();
        let s = agent.status().unwrap();
        if all_probed_ok(&s) && is_quiet(&m) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not healthy; local pods {:?}, problems {:?}, node {:?}, series {:?}\n{}\n{}",
            m.value("podnet_local_pods"),
            m.problems(),
            m.node_problems(),
            m.pod_series(),
            serde_json::to_string_pretty(&s).unwrap(),
            agent.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn is_quiet(m: &Samples) -> bool {
    quiet_with(m, PODS)
}

fn quiet_with(m: &Samples, pods: usize) -> bool {
    m.value("podnet_local_pods") == Some(pods as f64)
        && m.value("podnet_broken_pods") == Some(0.0)
        && m.pod_series().is_empty()
        && m.node_problems().is_empty()
}

fn all_probed_ok(status: &Value) -> bool {
    let pods = status["pods"].as_array().cloned().unwrap_or_default();
    pods.len() == PODS
        && pods.iter().all(|p| {
            let probes = p["probes"].as_array().cloned().unwrap_or_default();
            // gateway, node and host → pod, all answered.
            probes.len() == 3 && probes.iter().all(|d| d["last"] == "ok")
        })
}

fn gateway_probed(agent: &Agent, pod: &CniPod) -> String {
    let s = agent.status().unwrap();
    let p = s["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["interface"] == pod.interface.as_str())
        .unwrap()
        .clone();
    p["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["target"] == "gateway")
        .map(|d| d["address"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

#[test]
fn ptp_pods_healthy_then_each_fault_on_exactly_its_pod() {
    let (node, agent) = start(Plugin::Ptp);
    healthy(&agent, "4 ptp pods");
    assert!(
        agent.log().contains("cni=\"ptp\""),
        "profile not said at start-up"
    );
    let pods = node.pods().to_vec();
    // The gateway probed is the one ptp gave the pod (the host veth's address).
    assert_eq!(
        gateway_probed(&agent, &pods[0]),
        pods[0].gateway.to_string()
    );
    let host_route = |p: &CniPod| {
        vec![
            format!("{}/32", p.ip),
            "dev".into(),
            p.interface.clone(),
            "scope".into(),
            "host".into(),
        ]
    };
    let ip_route = |verb: &str, p: &CniPod, dev: &CniPod| {
        let mut args: Vec<String> = vec!["route".into(), verb.into()];
        let mut r = host_route(p);
        r[2].clone_from(&dev.interface);
        args.extend(r);
        node.ip(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // The pod's /32 deleted.
    ip_route("del", &pods[1], &pods[1]).unwrap();
    expect(
        &agent,
        "route_missing",
        &problems(&pods[1], &["route_missing"]),
    );
    ip_route("add", &pods[1], &pods[1]).unwrap();
    healthy(&agent, "route back");

    // The /32 pointed at another pod's veth.
    ip_route("replace", &pods[2], &pods[3]).unwrap();
    expect(
        &agent,
        "route_wrong_interface",
        &problems(&pods[2], &["route_wrong_interface"]),
    );
    ip_route("replace", &pods[2], &pods[2]).unwrap();
    healthy(&agent, "route repaired");

    // The host veth set down. Unlike Calico's scope-link route, ptp's scope-host route stays
    // (the kernel keeps it, `ip route get` still answers with it): interface_down alone, and
    // the pod's lost carrier is not said twice. Held for a few probe rounds to prove it.
    node.ip(&["link", "set", &pods[0].interface, "down"])
        .unwrap();
    let want = problems(&pods[0], &["interface_down"]);
    expect(&agent, "interface_down", &want);
    std::thread::sleep(Duration::from_secs(4));
    expect(&agent, "interface_down, still alone", &want);
    node.ip(&["link", "set", &pods[0].interface, "up"]).unwrap();
    healthy(&agent, "veth up");

    // The gateway address taken off the host veth.
    let gw = format!("{}/32", pods[3].gateway);
    node.ip(&["addr", "del", &gw, "dev", &pods[3].interface])
        .unwrap();
    expect(
        &agent,
        "gateway_address_missing",
        &problems(&pods[3], &["gateway_address_missing"]),
    );
    node.ip(&[
        "addr",
        "add",
        &gw,
        "dev",
        &pods[3].interface,
        "scope",
        "link",
    ])
    .unwrap();
    // Deleting the address took the host route with it? Put it back if so.
    let _ = ip_route("add", &pods[3], &pods[3]);
    healthy(&agent, "gateway address back");
}

#[test]
fn bridge_pods_healthy_then_each_fault_in_bridge_terms() {
    let (node, agent) = start(Plugin::Bridge);
    healthy(&agent, "4 bridge pods");
    let pods = node.pods().to_vec();
    assert_eq!(
        gateway_probed(&agent, &pods[0]),
        pods[0].gateway.to_string()
    );
    let all =
        |reasons: &[&str]| -> Problems { pods.iter().flat_map(|p| problems(p, reasons)).collect() };

    // One veth taken off the bridge.
    node.ip(&["link", "set", &pods[1].interface, "nomaster"])
        .unwrap();
    expect(
        &agent,
        "veth_not_on_bridge",
        &problems(&pods[1], &["veth_not_on_bridge"]),
    );
    node.ip(&["link", "set", &pods[1].interface, "master", BRIDGE])
        .unwrap();
    healthy(&agent, "back on the bridge");

    // One port set down: that pod only; the bridge serves the others.
    node.ip(&["link", "set", &pods[2].interface, "down"])
        .unwrap();
    expect(
        &agent,
        "port down",
        &problems(&pods[2], &["interface_down"]),
    );
    node.ip(&["link", "set", &pods[2].interface, "up"]).unwrap();
    healthy(&agent, "port up");

    // The bridge set down: every pod, and the subnet route the kernel dropped with it.
    node.ip(&["link", "set", BRIDGE, "down"]).unwrap();
    expect(
        &agent,
        "bridge_down",
        &all(&["bridge_down", "route_missing"]),
    );
    // Setting it up brings the connected subnet route back.
    node.ip(&["link", "set", BRIDGE, "up"]).unwrap();
    healthy(&agent, "bridge up");

    // The subnet route deleted.
    let subnet = Plugin::Bridge.subnet();
    node.ip(&["route", "del", subnet, "dev", BRIDGE]).unwrap();
    expect(&agent, "subnet route deleted", &all(&["route_missing"]));
    let gw = pods[0].gateway.to_string();
    node.ip(&[
        "route", "add", subnet, "dev", BRIDGE, "proto", "kernel", "scope", "link", "src", &gw,
    ])
    .unwrap();
    healthy(&agent, "subnet route back");

    // The bridge loses its (gateway) address, and with it the connected subnet route.
    let gw_cidr = format!("{gw}/24");
    node.ip(&["addr", "del", &gw_cidr, "dev", BRIDGE]).unwrap();
    expect(
        &agent,
        "gateway_address_missing",
        &all(&["gateway_address_missing", "route_missing"]),
    );
    node.ip(&["addr", "add", &gw_cidr, "dev", BRIDGE]).unwrap();
    healthy(&agent, "address back (the kernel re-adds the subnet route)");

    // A wrong host route shadowing the subnet for one pod.
    let wrong = format!("{}/32", pods[3].ip);
    node.ip(&["route", "add", &wrong, "dev", &pods[0].interface])
        .unwrap();
    expect(
        &agent,
        "route_wrong_interface",
        &problems(&pods[3], &["route_wrong_interface"]),
    );
    node.ip(&["route", "del", &wrong]).unwrap();
    healthy(&agent, "wrong route removed");
}

#[test]
fn teardown_leaves_no_namespace_and_no_lease() {
    let node = CniNode::new(Plugin::Ptp, 2).unwrap();
    let names: Vec<String> = node.pods().iter().map(|p| p.netns.clone()).collect();
    let node_ns = node.sim().node_netns().to_owned();
    let data_dir = node.data_dir().to_owned();
    assert!(data_dir.is_dir(), "host-local keeps its leases there");
    assert_ne!(node.pods()[0].ip, node.pods()[1].ip);
    drop(node);
    assert!(!data_dir.exists(), "{} left behind", data_dir.display());
    for n in names.iter().chain([&node_ns]) {
        assert!(
            !std::path::Path::new("/run/netns").join(n).exists(),
            "{n} left behind"
        );
    }
}

fn aws_problem(pod: &SimPod, reason: &str) -> Problems {
    [(
        pod.interface.clone(),
        pod.ipv4.to_string(),
        reason.to_owned(),
    )]
    .into()
}

/// AWS VPC CNI's wiring (simulated from its driver: `eni…`, `/32 scope link`, a permanent
/// neighbour for 169.254.1.1 inside the pod, no proxy ARP): healthy under its own profile,
/// while Calico's rules page for proxy ARP on every pod; its route faults are said as such.
#[test]
fn aws_vpc_cni_wiring_is_judged_by_its_own_rules() {
    let node = SimNode::aws_vpc_cni(3).unwrap();
    let pods: Vec<SimPod> = node.pods().cloned().collect();
    let wrong = Agent::start_binary(
        AGENT.as_ref(),
        &node,
        &["--no-probes", "--interface-prefix", "eni"],
    )
    .unwrap();
    let everyone: Problems = pods
        .iter()
        .flat_map(|p| aws_problem(p, "proxy_arp_disabled"))
        .collect();
    expect(&wrong, "Calico's rules on AWS wiring", &everyone);
    drop(wrong);

    let agent = Agent::start_binary(
        AGENT.as_ref(),
        &node,
        &["--cni", "aws-vpc-cni", "--probe-interval", "1s"],
    )
    .unwrap();
    let healthy_aws = |what: &str| {
        agent
            .wait_metrics(what, WAIT, |m| {
                quiet_with(m, 3)
                    && m.value_with(
                        "podnet_probes_total",
                        &[("target", "gateway"), ("result", "ok")],
                    )
                    .unwrap_or(0.0)
                        > 0.0
            })
            .unwrap()
    };
    healthy_aws("3 AWS pods, gateway answering through the static neighbour");
    node.delete_route(1, pods[1].ipv4.into()).unwrap();
    // No IPAM blackhole here: the pod IP falls to the node's default route.
    expect(
        &agent,
        "route_missing",
        &aws_problem(&pods[1], "route_missing"),
    );
    node.restore_routes(1).unwrap();
    healthy_aws("route back");
    node.route_via_other_pod(2, 0).unwrap();
    expect(
        &agent,
        "route_wrong_interface",
        &aws_problem(&pods[2], "route_wrong_interface"),
    );
    node.restore_routes(2).unwrap();
    healthy_aws("route repaired");
}
