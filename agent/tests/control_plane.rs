//! Control-plane nodes: can kube-apiserver reach the Services it calls? On a simulated node
//! with the API double serving an APIService (`v1beta1.metrics.k8s.io`), a webhook
//! configuration and a CRD conversion webhook, their Services and EndpointSlices and the
//! kube-apiserver mirror pod, TLS servers in pod namespaces play metrics-server and a policy
//! webhook. The ClusterIPs are implemented as kube-proxy does, with DNAT rules in the node
//! namespace's `nat OUTPUT` chain; removing them is the incident.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use podnet_kube_double::{
    RequestKind, Resource, apiserver_mirror_pod, apiservice, crd_with_conversion, endpoint_slice,
    service, webhook_configuration,
};
use podnet_testbed::agent::Agent;
use podnet_testbed::cluster::{Cluster, NODE};
use podnet_testbed::exposition::Samples;
use podnet_testbed::podserver::{PodServer, dnat, iptables};
use serde_json::Value;

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");
const WAIT: Duration = Duration::from_secs(30);

const METRICS_IP: &str = "10.96.0.10";
const POLICY_IP: &str = "10.96.0.20";
const METRICS_PORT: u16 = 10250;
const POLICY_PORT: u16 = 9443;
const APISERVICE: &str = "v1beta1.metrics.k8s.io";
const NODE_IP: &str = "192.0.2.10";

/// `(service, reason, value)` of every `podnet_controlplane_service_problem` series.
fn problems(m: &Samples) -> Vec<(String, String, f64)> {
    let mut v: Vec<_> = m
        .named("podnet_controlplane_service_problem")
        .map(|s| {
            let l = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
            (l("service"), l("reason"), s.value)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn wait_problems(agent: &Agent, want: &[(&str, &str, f64)]) {
    let want: Vec<(String, String, f64)> = want
        .iter()
        .map(|(s, r, v)| ((*s).into(), (*r).into(), *v))
        .collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let got = agent.metrics().map(|m| problems(&m)).unwrap_or_default();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "control-plane problems {got:?} != {want:?}\n{}\n{}",
            status_services(agent),
            agent.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status_services(agent: &Agent) -> String {
    agent
        .status()
        .map(|s| s["control_plane"].to_string())
        .unwrap_or_default()
}

/// The `/status` message of one Service in `status`.
fn message(status: &Value, svc: &str) -> String {
    let services = status["control_plane"]["services"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    services
        .iter()
        .find(|s| s["name"] == svc)
        .and_then(|s| s["message"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Wait until `/status` has a message of `svc` containing every one of `parts`. `/status` and `/metrics` are separate requests, and the message names the pod's
/// route verdict of the moment it was judged: asserting it from the scrape that showed the
/// problem would race the next snapshot, so the whole message is the wait's predicate.
fn wait_message(agent: &Agent, svc: &str, parts: &[&str]) {
    let what = format!("{svc}'s message containing {parts:?}");
    agent
        .wait_status(&what, WAIT, |s| {
            let msg = message(s, svc);
            parts.iter().all(|p| msg.contains(p))
        })
        .unwrap();
}

fn agent(c: &Cluster) -> Agent {
    // The node condition and Events (their own requests, their own RBAC) are their own test's.
    agent_telling(c, false)
}

/// The agent on the control-plane node; `tell`: it also writes the node condition and Events.
fn agent_telling(c: &Cluster, tell: bool) -> Agent {
    let mut args = vec![
        "--no-probes",
        "--control-plane-checks",
        "auto",
        "--control-plane-relist",
        "1s",
        "--probe-interval",
        "1s",
        "--probe-timeout",
        "300ms",
    ];
    if !tell {
        args.extend(["--no-conditions", "--no-events"]);
    }
    c.agent(AGENT.as_ref(), &args).unwrap()
}

/// metrics-server as the incident had it: pod `pod`'s namespace serves TLS on its endpoint,
/// the APIService `v1beta1.metrics.k8s.io` (unavailable, as kube-aggregator reports it), its
/// Service on [`METRICS_IP`] and one ready endpoint, and the kube-apiserver mirror pod on this
/// node without `--enable-aggregator-routing`. No ClusterIP DNAT yet.
fn metrics_server(c: &Cluster, pod: usize) -> (PodServer, SocketAddr) {
    let ms = c.node.pod(pod).clone();
    let ep = addr(ms.ipv4, METRICS_PORT);
    let server = PodServer::start(&ms.netns, ep, Some("metrics-server.kube-system.svc"));
    c.api
        .apply(apiserver_mirror_pod(NODE, NODE_IP, &[]))
        .unwrap();
    c.api.apply_object(apiservice(
        APISERVICE,
        "kube-system",
        "metrics-server",
        Some((false, "FailedDiscoveryCheck")),
    ));
    c.api.apply_object(service(
        "kube-system",
        "metrics-server",
        METRICS_IP,
        443,
        "https",
        METRICS_PORT,
    ));
    c.api.apply_object(endpoint_slice(
        "kube-system",
        "metrics-server",
        "https",
        METRICS_PORT,
        &[(&ms.ipv4.to_string(), true)],
    ));
    (server, ep)
}

fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

#[test]
fn control_plane_paths_from_the_apiserver_host() {
    let c = Cluster::new(3).unwrap();
    let node_ns = c.node.node_netns().to_owned();
    let (ms, policy, plain) = (
        c.node.pod(0).clone(),
        c.node.pod(1).clone(),
        c.node.pod(2).clone(),
    );
    let policy_ep = addr(policy.ipv4, POLICY_PORT);
    let plain_ep = addr(plain.ipv4, POLICY_PORT);
    let (_metrics_server, ms_ep) = metrics_server(&c, 0);
    let _policy_server =
        PodServer::start(&policy.netns, policy_ep, Some("policy-webhook.policy.svc"));
    let _plain_server = PodServer::start(&plain.netns, plain_ep, None);
    // Five webhooks and a CRD conversion on one Service: one series, one set of probes.
    c.api.apply_object(webhook_configuration(
        true,
        "policy",
        "policy",
        "policy-webhook",
        443,
        5,
    ));
    c.api.apply_object(crd_with_conversion(
        "things.example.com",
        "policy",
        "policy-webhook",
        443,
    ));
    c.api.apply_object(service(
        "policy",
        "policy-webhook",
        POLICY_IP,
        443,
        "",
        POLICY_PORT,
    ));
    c.api.apply_object(endpoint_slice(
        "policy",
        "policy-webhook",
        "",
        POLICY_PORT,
        &[(&policy.ipv4.to_string(), true)],
    ));
    // (a) kube-proxy present: DNAT of both ClusterIPs in nat OUTPUT → ok.
    dnat(&node_ns, METRICS_IP, ms_ep);
    dnat(&node_ns, POLICY_IP, policy_ep);
    let agent = agent(&c);
    wait_problems(
        &agent,
        &[("metrics-server", "ok", 0.0), ("policy-webhook", "ok", 0.0)],
    );
    let m = agent.metrics().unwrap();
    assert_eq!(m.value("podnet_controlplane_services"), Some(2.0));
    assert_eq!(m.value("podnet_controlplane_aggregator_routing"), Some(0.0));
    assert_eq!(
        m.value_with("podnet_apiservice_available", &[("apiservice", APISERVICE)]),
        Some(0.0)
    );
    let users = m
        .named("podnet_controlplane_service_users")
        .find(|s| s.labels.get("service").map(String::as_str) == Some("policy-webhook"))
        .map(|s| s.labels.clone())
        .unwrap();
    assert_eq!(users["webhooks"], "validating/policy");
    assert_eq!(users["crds"], "things.example.com");

    // (b) The incident: no service proxy on this host.
    iptables(&node_ns, "-F OUTPUT");
    wait_problems(
        &agent,
        &[
            ("metrics-server", "cluster_ip_unreachable", 1.0),
            ("policy-webhook", "cluster_ip_unreachable", 1.0),
        ],
    );
    wait_message(
        &agent,
        "metrics-server",
        &[
            "--enable-aggregator-routing=true",
            "kube-proxy",
            "10.96.0.10:443",
        ],
    );
    // The mirror pod gets --enable-aggregator-routing=true: the API server dials endpoints.
    c.api
        .apply(apiserver_mirror_pod(
            NODE,
            NODE_IP,
            &["--enable-aggregator-routing=true"],
        ))
        .unwrap();
    wait_problems(
        &agent,
        &[
            ("metrics-server", "cluster_ip_unreachable", 0.0),
            ("policy-webhook", "cluster_ip_unreachable", 0.0),
        ],
    );
    wait_message(
        &agent,
        "metrics-server",
        &[
            "runs with --enable-aggregator-routing=true",
            "is not affected",
        ],
    );
    assert_eq!(
        agent
            .metrics()
            .unwrap()
            .value("podnet_controlplane_aggregator_routing"),
        Some(1.0)
    );
    dnat(&node_ns, METRICS_IP, ms_ep);
    dnat(&node_ns, POLICY_IP, policy_ep);
    wait_problems(
        &agent,
        &[("metrics-server", "ok", 0.0), ("policy-webhook", "ok", 0.0)],
    );

    // (c) metrics-server's pod route deleted: the host cannot reach the endpoint.
    c.node.delete_route(0, ms.ipv4.into()).unwrap();
    wait_problems(
        &agent,
        &[
            ("metrics-server", "endpoints_unreachable", 1.0),
            ("policy-webhook", "ok", 0.0),
        ],
    );
    // The pod's route verdict is named, with the endpoint.
    wait_message(
        &agent,
        "metrics-server",
        &[&ms_ep.to_string(), "route_missing"],
    );
    c.node.restore_routes(0).unwrap();
    wait_problems(
        &agent,
        &[("metrics-server", "ok", 0.0), ("policy-webhook", "ok", 0.0)],
    );

    // (d) No ready endpoint.
    c.api.apply_object(endpoint_slice(
        "kube-system",
        "metrics-server",
        "https",
        METRICS_PORT,
        &[(&ms.ipv4.to_string(), false)],
    ));
    wait_problems(
        &agent,
        &[
            ("metrics-server", "no_ready_endpoints", 1.0),
            ("policy-webhook", "ok", 0.0),
        ],
    );

    // (e) The webhook's endpoint is a plain TCP server: TCP connects, TLS fails.
    c.api.apply_object(endpoint_slice(
        "policy",
        "policy-webhook",
        "",
        POLICY_PORT,
        &[(&plain.ipv4.to_string(), true)],
    ));
    wait_problems(
        &agent,
        &[
            ("metrics-server", "no_ready_endpoints", 1.0),
            ("policy-webhook", "tls_failed", 1.0),
        ],
    );
    wait_message(&agent, "policy-webhook", &[&plain_ep.to_string()]);
    // The worker registry sees the check running.
    assert_eq!(
        agent.get("/healthz").unwrap().0,
        200,
        "{}",
        agent.log_tail()
    );
    // Service deleted: service_not_found.
    c.api
        .delete_namespaced(Resource::Services, "policy", "policy-webhook");
    wait_problems(
        &agent,
        &[
            ("metrics-server", "no_ready_endpoints", 1.0),
            ("policy-webhook", "service_not_found", 1.0),
        ],
    );
    // Every request was one of the verbs deploy/control-plane/rbac.yaml (and the base role's
    // pods list/watch) grant: the RBAC is exactly what the code uses.
    let used: BTreeSet<(String, String)> =
        c.api.request_log().iter().map(verb_and_resource).collect();
    let want: BTreeSet<(String, String)> = [
        ("list", "pods"),
        ("watch", "pods"),
        ("list", "apiservices"),
        ("list", "validatingwebhookconfigurations"),
        ("list", "mutatingwebhookconfigurations"),
        ("list", "customresourcedefinitions"),
        ("get", "services"),
        ("list", "endpointslices"),
    ]
    .iter()
    .map(|(v, r)| ((*v).to_owned(), (*r).to_owned()))
    .collect();
    assert_eq!(used, want);
    drop(agent);
}

/// The incident in `kubectl describe node`: the ClusterIP stops answering from the host, the
/// node condition turns True with the control-plane reason and a Warning on the Node names
/// the Service, the failing hop and the flag that would help; repaired, the condition clears
/// and a Normal Event says so.
#[test]
fn an_unreachable_cluster_ip_reaches_the_node_condition_and_events() {
    const CONDITION: &str = "PodNetworkProblem";
    const REASON: &str = "ControlPlaneClusterIPUnreachable";
    let c = Cluster::new(1).unwrap();
    let node_ns = c.node.node_netns().to_owned();
    let (_server, ep) = metrics_server(&c, 0);
    dnat(&node_ns, METRICS_IP, ep);
    let agent = agent_telling(&c, true);
    let condition = |status: &str, reason: &str| {
        let (status, reason) = (status.to_owned(), reason.to_owned());
        let api = &c.api;
        agent
            .wait_for(&format!("condition {status} {reason}"), WAIT, move || {
                api.node_conditions(NODE).into_iter().find(|x| {
                    x["type"] == CONDITION && x["status"] == status && x["reason"] == reason
                })
            })
            .unwrap()
    };
    let node_event = |reason: &str| {
        agent
            .wait_for(&format!("a Node Event {reason}"), WAIT, || {
                c.api.events().into_iter().find(|e| {
                    e["regarding"]["kind"] == "Node"
                        && e["regarding"]["name"] == NODE
                        && e["reason"] == reason
                })
            })
            .unwrap()
    };
    wait_problems(&agent, &[("metrics-server", "ok", 0.0)]);
    condition("False", "PodNetworkHealthy");

    iptables(&node_ns, "-F OUTPUT");
    let bad = condition("True", REASON);
    let msg = bad["message"].as_str().unwrap();
    for want in [
        "kube-system/metrics-server:443 (APIService v1beta1.metrics.k8s.io)",
        "the ClusterIP hop fails (10.96.0.10:443)",
        "--enable-aggregator-routing=true would help",
    ] {
        assert!(msg.contains(want), "{want:?} not in {msg}");
    }
    let warning = node_event(REASON);
    assert_eq!(warning["type"], "Warning");
    assert_eq!(warning["metadata"]["namespace"], "default");
    let note = warning["note"].as_str().unwrap();
    for want in [
        "cannot reach Service kube-system/metrics-server:443",
        "the ClusterIP hop fails (10.96.0.10:443), the endpoints answer",
        "--enable-aggregator-routing=true would help",
        "Other affected Services: 0 with this problem, 0 with another",
    ] {
        assert!(note.contains(want), "{want:?} not in {note}");
    }

    dnat(&node_ns, METRICS_IP, ep);
    // (lastTransitionTime has whole seconds: the repair may fall in the same one.)
    condition("False", "PodNetworkHealthy");
    let recovery = node_event(&format!("{REASON}Resolved"));
    assert_eq!(recovery["type"], "Normal");
    let m = agent.metrics().unwrap();
    assert_eq!(m.value("podnet_events_dropped_total"), Some(0.0));
    drop(agent);
}

/// `(verb, resource)` of one request to the API double, as RBAC names them.
fn verb_and_resource(r: &podnet_kube_double::RequestRecord) -> (String, String) {
    let segs: Vec<&str> = r.path.trim_matches('/').split('/').collect();
    // /api/v1/<rest> or /apis/<group>/<version>/<rest>; <rest> = [namespaces/<ns>/]<res>[/<name>]
    let rest = if segs.first() == Some(&"api") {
        &segs[2.min(segs.len())..]
    } else {
        &segs[3.min(segs.len())..]
    };
    let rest = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let verb = match r.kind {
        RequestKind::List => "list",
        RequestKind::Watch => "watch",
        RequestKind::Get => "get",
        _ => "other",
    };
    (
        verb.to_owned(),
        rest.first().copied().unwrap_or("").to_owned(),
    )
}

/// (f) A worker node (no mirror pod, no control-plane label) reads none of those kinds and
/// exports nothing of the check.
#[test]
fn worker_nodes_read_and_probe_nothing_extra() {
    let c = Cluster::new(1).unwrap();
    c.api.apply_object(apiservice(
        APISERVICE,
        "kube-system",
        "metrics-server",
        None,
    ));
    c.api.apply_object(service(
        "kube-system",
        "metrics-server",
        METRICS_IP,
        443,
        "https",
        METRICS_PORT,
    ));
    // kube-apiserver runs on another node.
    c.api
        .apply(apiserver_mirror_pod("cp-1", "192.0.2.11", &[]))
        .unwrap();
    let agent = agent(&c);
    // The mirror-pod lookup is what tells the agent it is a worker: wait for it (a fixed
    // sleep raced a slow start on a loaded machine), then give a few relists (1 s) the
    // chance to read what a worker must not.
    let is_lookup = |r: &podnet_kube_double::RequestRecord| {
        r.query.contains("component%3Dkube-apiserver")
            || r.query.contains("component=kube-apiserver")
    };
    let deadline = Instant::now() + WAIT;
    while !c.api.request_log().iter().any(is_lookup) {
        assert!(
            Instant::now() < deadline,
            "no mirror-pod lookup\n{}",
            agent.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    let log = c.api.request_log();
    let checked: Vec<&str> = log
        .iter()
        .filter(|r| {
            [
                "apiservices",
                "webhookconfigurations",
                "customresourcedefinitions",
                "services",
                "endpointslices",
            ]
            .iter()
            .any(|k| r.path.contains(k))
        })
        .map(|r| r.path.as_str())
        .collect();
    assert!(checked.is_empty(), "a worker node read {checked:?}");
    // What it did read: its own pods, the mirror-pod lookup on this node, and its Node.
    let lookups: Vec<&podnet_kube_double::RequestRecord> =
        log.iter().filter(|r| is_lookup(r)).collect();
    assert_eq!(lookups.len(), 1, "{log:?}");
    assert!(
        lookups[0].query.contains("spec.nodeName"),
        "{:?}",
        lookups[0]
    );
    assert!(log.iter().all(|r| r.kind != RequestKind::Other), "{log:?}");
    let m = agent.metrics().unwrap();
    assert!(m.named("podnet_controlplane_services").next().is_none());
    let status: Value = agent.status().unwrap();
    assert!(status.get("control_plane").is_none(), "{status}");
    drop(agent);
}

/// The check is a supervised worker: killed, `/healthz` turns red naming it.
#[test]
fn a_killed_control_plane_worker_turns_healthz_red() {
    let c = Cluster::new(1).unwrap();
    let args = [
        "--no-probes",
        "--control-plane-checks",
        "auto",
        "--test-fault",
        "kill:controlplane",
    ];
    let agent = c.agent(AGENT.as_ref(), &args).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, body) = agent.get("/healthz").unwrap();
        if code == 503 {
            assert!(body.contains("controlplane: panicked"), "{body:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{}", agent.log_tail());
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = agent.metrics().unwrap();
    assert_eq!(
        m.value_with("podnet_worker_up", &[("worker", "controlplane")]),
        Some(0.0)
    );
}
