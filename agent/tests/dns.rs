//! The DNS probe from inside every pod: a DNS server of the test bed's in the outside
//! namespace, reached through a simulated ClusterIP (DNAT in the node's namespace, as
//! kube-proxy sets it up), with the real agent in a simulated node.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use podnet_testbed::agent::Agent;
use podnet_testbed::dns::{DnsMode, DnsServer, cluster_dns};
use podnet_testbed::exposition::Samples;
use podnet_testbed::simnode::SimNode;
use serde_json::Value;

const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");
const WAIT: Duration = Duration::from_secs(60);
const PODS: usize = 4;
/// The simulated `kube-dns` Service's ClusterIP.
const CLUSTER_IP: &str = "10.96.0.10";
/// What the server answers for `kubernetes.default.svc.cluster.local`.
const KUBERNETES_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// `iptables ARGS` in a namespace the test created, by path (never the host's).
fn iptables(netns: &str, args: &[&str]) {
    let out = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .arg("iptables")
        .args(args)
        .output()
        .expect("running iptables");
    assert!(
        out.status.success(),
        "iptables {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Four IPv4 pods, a DNS server on 198.51.100.1:53 in the outside namespace, the ClusterIP
/// DNATed to it for UDP and TCP, and an agent probing it every second.
fn setup(extra: &[&str]) -> (SimNode, DnsServer, Agent) {
    let node = SimNode::new(PODS, &[]).unwrap();
    let server = cluster_dns(&node, CLUSTER_IP.parse().unwrap(), KUBERNETES_IP).unwrap();
    let mut args = vec![
        "--probe-interval",
        "1s",
        "--dns-server",
        CLUSTER_IP,
        "--dns-expect",
        "10.96.0.1",
    ];
    args.extend_from_slice(extra);
    let agent = Agent::start_binary(AGENT.as_ref(), &node, &args).unwrap();
    (node, server, agent)
}

/// The `dns` probe of every pod in /status: `(interface, last result, failing, node_wide)`.
fn dns(status: &Value) -> Vec<(String, String, bool, bool)> {
    let mut out = Vec::new();
    for p in status["pods"].as_array().unwrap() {
        for d in p["probes"].as_array().into_iter().flatten() {
            if d["target"] == "dns" {
                out.push((
                    p["interface"].as_str().unwrap().to_owned(),
                    d["last"].as_str().unwrap().to_owned(),
                    d["failing"].as_bool().unwrap(),
                    d["node_wide"].as_bool().unwrap_or(false),
                ));
            }
        }
    }
    out
}

fn wait_status(agent: &Agent, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    agent.wait_status(what, WAIT, pred).unwrap()
}

/// Every pod's last DNS result is `result`.
fn all_dns(agent: &Agent, result: &str) -> Value {
    wait_status(agent, &format!("dns {result} from every pod"), |s| {
        let d = dns(s);
        d.len() == PODS && d.iter().all(|x| x.1 == result)
    })
}

fn pod_failures(m: &Samples) -> BTreeSet<(String, String)> {
    m.named("podnet_pod_probe_failing")
        .map(|s| (s.labels["interface"].clone(), s.labels["target"].clone()))
        .collect()
}

fn dns_count(m: &Samples, result: &str) -> f64 {
    m.value_with(
        "podnet_probes_total",
        &[("target", "dns"), ("protocol", "dns"), ("result", result)],
    )
    .unwrap_or(0.0)
}

#[test]
fn answers_are_classified_and_a_dead_server_is_one_node_problem() {
    let (_node, server, agent) = setup(&[]);
    all_dns(&agent, "ok");
    let m = agent.metrics().unwrap();
    assert!(dns_count(&m, "ok") >= PODS as f64);
    // The RTT histogram is per target, labelled with the protocol.
    assert!(
        m.value_with(
            "podnet_probe_duration_seconds_count",
            &[("target", "dns"), ("protocol", "dns")]
        )
        .unwrap_or(0.0)
            >= PODS as f64,
        "no DNS RTT observed"
    );
    // Results a DNS probe cannot have are not pre-created.
    assert!(
        m.value_with(
            "podnet_probes_total",
            &[("target", "dns"), ("result", "refused")]
        )
        .is_none()
    );

    for (mode, result) in [
        (DnsMode::Servfail, "servfail"),
        (DnsMode::Nxdomain, "nxdomain"),
        (DnsMode::Refused, "dns_refused"),
    ] {
        server.set_mode(mode);
        all_dns(&agent, result);
    }

    // A truncated UDP answer is asked again over TCP, through the same ClusterIP.
    let (_, tcp_before) = server.queries();
    server.set_mode(DnsMode::Truncate);
    all_dns(&agent, "ok");
    assert!(server.queries().1 > tcp_before, "no query over TCP");

    // The server stops answering: every pod times out while its gateway answers. One node
    // problem naming the target, no pod alarm.
    server.set_mode(DnsMode::Drop);
    let m = agent
        .wait_metrics("dns at node level", WAIT, |m| {
            m.node_problems().contains("target_unreachable")
        })
        .unwrap();
    assert_eq!(
        m.node_problems(),
        BTreeSet::from(["target_unreachable".to_owned()])
    );
    assert!(pod_failures(&m).is_empty(), "{:?}", pod_failures(&m));
    let targets: Vec<&str> = m
        .named("podnet_node_problem")
        .filter(|s| s.value == 1.0)
        .filter_map(|s| s.labels.get("target").map(String::as_str))
        .collect();
    assert_eq!(targets, ["dns"]);
    // The node problem is declared once most pods fail; a pod whose probe was staggered
    // later has its first timeout but not yet enough to be failing. Wait for every pod to
    // fail, then every failure must be marked node-wide (never a pod alarm).
    let status = wait_status(&agent, "dns failing node-wide in every pod", |s| {
        let d = dns(s);
        d.len() == PODS && d.iter().all(|x| x.1 == "timeout" && x.2)
    });
    assert!(dns(&status).iter().all(|d| d.3), "{:?}", dns(&status));
    assert!(pod_failures(&agent.metrics().unwrap()).is_empty());

    server.set_mode(DnsMode::Answer);
    agent
        .wait_metrics("recovery", WAIT, |m| m.node_problems().is_empty())
        .unwrap();
    all_dns(&agent, "ok");
}

#[test]
fn port_53_dropped_in_one_pod_fails_only_that_pod_and_wiring_comes_first() {
    let (node, _server, agent) = setup(&[]);
    all_dns(&agent, "ok");
    // A NetworkPolicy-like drop of DNS for pod 1 only, where Calico enforces policy: on the
    // node, for packets from the pod's host interface.
    let victim = node.pod(1).clone();
    let node_ns = format!("/run/netns/{}", node.node_netns());
    let rule = [
        "FORWARD",
        "-i",
        &victim.interface,
        "-p",
        "udp",
        "--dport",
        "53",
        "-j",
        "DROP",
    ];
    iptables(&node_ns, &[&["-I"][..], &rule].concat());
    let want = BTreeSet::from([(victim.interface.clone(), "dns".to_owned())]);
    let m = agent
        .wait_metrics("only the victim failing dns", WAIT, |m| {
            pod_failures(m) == want
        })
        .unwrap();
    assert!(m.node_problems().is_empty(), "{:?}", m.node_problems());
    let s = agent.status().unwrap();
    for (interface, last, failing, _) in dns(&s) {
        if interface == victim.interface {
            assert_eq!((last.as_str(), failing), ("timeout", true));
        } else {
            assert_eq!((last.as_str(), failing), ("ok", false), "{interface}");
        }
    }
    iptables(&node_ns, &[&["-D"][..], &rule].concat());
    agent
        .wait_metrics("recovery", WAIT, |m| pod_failures(m).is_empty())
        .unwrap();

    // Pod 2 loses its default route: its DNS probe fails, diagnosed as the wiring problem.
    let broken = node.pod(2).clone();
    node.delete_pod_default_route(2, true).unwrap();
    // The diagnosis is read from the snapshot that first shows the failure: a later one
    // could differ.
    let s = wait_status(&agent, "pod 2's dns failing", |s| {
        dns(s).iter().any(|d| d.0 == broken.interface && d.2)
    });
    let p = s["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["interface"] == broken.interface)
        .unwrap();
    let d = p["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["target"] == "dns")
        .unwrap();
    assert_eq!(d["diagnosis"], "pod_default_route_missing", "{d}");
    node.restore_pod_default_routes(2).unwrap();
    all_dns(&agent, "ok");
}
