//! Targets named by Service, resolved through the API double and followed as they change, on a
//! simulated node in Kubernetes mode. The ClusterIPs are implemented as kube-proxy does: DNAT
//! in the node namespace's `nat PREROUTING` (traffic from pods), plus its hairpin masquerade
//! for a pod reaching itself through its own Service; ip6tables for an IPv6 DNS Service.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use podnet_kube_double::{Outage, Resource, service};
use podnet_testbed::agent::Agent;
use podnet_testbed::cluster::Cluster;
use podnet_testbed::dns::DnsServer;
use podnet_testbed::exposition::Samples;
use podnet_testbed::http::HttpServer;
use podnet_testbed::podserver::{PodServer, iptables};
use podnet_testbed::simnode::{OUTSIDE_IPV4, OUTSIDE_IPV6};
use serde_json::{Value, json};

const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");
const WAIT: Duration = Duration::from_secs(60);
const PODS: usize = 3;
/// The backend's port in pod 0.
const BACKEND_PORT: u16 = 8080;

/// kube-proxy's rules for `cluster_ip:port/proto` → `to` (`-A` adds, `-D` removes).
fn dnat(c: &Cluster, op: &str, cluster_ip: &str, proto: &str, port: u16, to: SocketAddr) {
    iptables(
        c.node.node_netns(),
        &format!(
            "{op} PREROUTING -d {cluster_ip}/32 -p {proto} --dport {port} -j DNAT --to-destination {to}"
        ),
    );
}

/// `(interface, address:port, last)` of every pod's probe of `target` in /status.
fn probes_of(status: &Value, target: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for p in status["pods"].as_array().into_iter().flatten() {
        for d in p["probes"].as_array().into_iter().flatten() {
            if d["target"] == target {
                out.push((
                    p["interface"].as_str().unwrap_or_default().to_owned(),
                    format!(
                        "{}:{}",
                        d["address"].as_str().unwrap_or_default(),
                        d["port"].as_u64().unwrap_or(0)
                    ),
                    d["last"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    out
}

/// Every pod's last probe of `target` went to `addr` and was `ok`.
fn all_ok_at(status: &Value, target: &str, addr: &str) -> bool {
    let p = probes_of(status, target);
    p.len() == PODS && p.iter().all(|(_, a, last)| a == addr && last == "ok")
}

/// The /status entry of a Service target.
fn service_target(status: &Value, target: &str) -> Value {
    status["service_targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["target"] == target)
        .cloned()
        .unwrap_or(Value::Null)
}

/// The pods' failing probes, `(interface, target)`: empty when none is flagged.
fn failing(m: &Samples) -> Vec<(String, String)> {
    m.named("podnet_pod_probe_failing")
        .map(|s| {
            let label = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
            (label("interface"), label("target"))
        })
        .collect()
}

fn agent(c: &Cluster, extra: &[&str]) -> Agent {
    let mut args = vec![
        "--no-conditions",
        "--no-events",
        "--probe-interval",
        "1s",
        "--probe-timeout",
        "500ms",
    ];
    args.extend_from_slice(extra);
    c.agent(AGENT.as_ref(), &args).unwrap()
}

#[test]
fn a_service_by_name_is_followed_when_its_cluster_ip_changes_and_unresolved_when_deleted() {
    let c = Cluster::new(PODS).unwrap();
    let backend = c.node.pod(0).clone();
    let to = SocketAddr::from((backend.ipv4, BACKEND_PORT));
    let _server = PodServer::start(&backend.netns, to, None);
    // The backend reaching itself through the Service: kube-proxy's hairpin masquerade.
    iptables(
        c.node.node_netns(),
        &format!(
            "-A POSTROUTING -s {0}/32 -d {0}/32 -j MASQUERADE",
            backend.ipv4
        ),
    );
    c.api.apply_object(service(
        "shop",
        "web",
        "10.96.0.20",
        80,
        "http",
        BACKEND_PORT,
    ));
    dnat(&c, "-A", "10.96.0.20", "tcp", 80, to);
    let agent = agent(
        &c,
        &["--dns-service", "none", "--probe", "web=svc/shop/web:80"],
    );
    let s = agent
        .wait_status("every pod connects to web at 10.96.0.20", WAIT, |s| {
            all_ok_at(s, "web", "10.96.0.20:80")
        })
        .unwrap();
    assert_eq!(
        service_target(&s, "web"),
        json!({"target": "web", "service": "shop/web:80", "address": "10.96.0.20:80"})
    );
    let m = agent.metrics().unwrap();
    assert_eq!(
        m.value_with("podnet_service_target_resolved", &[("target", "web")]),
        Some(1.0)
    );

    // The ClusterIP changes in the API (a Service re-created) and kube-proxy moves the DNAT:
    // every pod probes the new address from its next round, the old one not at all.
    let moved = Instant::now();
    let mut svc = service("shop", "web", "10.96.0.21", 80, "http", BACKEND_PORT);
    svc["metadata"]["uid"] = json!("re-created");
    c.api.apply_object(svc);
    dnat(&c, "-D", "10.96.0.20", "tcp", 80, to);
    dnat(&c, "-A", "10.96.0.21", "tcp", 80, to);
    let s = agent
        .wait_status("every pod follows web to 10.96.0.21", WAIT, |s| {
            all_ok_at(s, "web", "10.96.0.21:80")
        })
        .unwrap();
    // One round (1 s interval) plus the watch event and a scrape of /status, with margin for
    // a loaded machine.
    let took = moved.elapsed();
    assert!(took < Duration::from_secs(5), "followed after {took:?}");
    assert!(
        probes_of(&s, "web")
            .iter()
            .all(|p| !p.1.starts_with("10.96.0.20")),
        "{s}"
    );
    assert_eq!(
        failing(&agent.metrics().unwrap()),
        [],
        "{}",
        agent.status().unwrap()
    );

    // Deleted: unresolved, not probed, and no pod is flagged.
    c.api
        .delete_namespaced(Resource::Services, "shop", "web")
        .unwrap();
    let s = agent
        .wait_status("web unresolved and no longer probed", WAIT, |s| {
            service_target(s, "web")["unresolved"] == "absent" && probes_of(s, "web").is_empty()
        })
        .unwrap();
    assert!(service_target(&s, "web").get("address").is_none());
    // Stays so over a few rounds.
    std::thread::sleep(Duration::from_secs(3));
    let m = agent.metrics().unwrap();
    assert_eq!(failing(&m), []);
    assert_eq!(
        m.value_with(
            "podnet_service_target_unresolved",
            &[("target", "web"), ("reason", "absent")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value_with("podnet_service_target_resolved", &[("target", "web")]),
        Some(0.0)
    );
    assert!(probes_of(&agent.status().unwrap(), "web").is_empty());
    // Re-created while the API is down, and the agent's resource version compacted away: its
    // watch gets 410 Gone, a fresh list finds the Service at its new address.
    c.api.set_outage(Some(Outage::Unavailable)).unwrap();
    c.api.apply_object(service(
        "shop",
        "web",
        "10.96.0.22",
        80,
        "http",
        BACKEND_PORT,
    ));
    c.api.compact();
    dnat(&c, "-A", "10.96.0.22", "tcp", 80, to);
    c.api.set_outage(None).unwrap();
    agent
        .wait_status("every pod follows web to 10.96.0.22", WAIT, |s| {
            all_ok_at(s, "web", "10.96.0.22:80")
        })
        .unwrap();
    assert!(
        agent.log().contains("the Service watch needs a fresh list"),
        "{}",
        agent.log_tail()
    );
    // One single-object list and watch of that Service, nothing wider.
    let services: Vec<String> = c
        .api
        .request_log()
        .iter()
        .filter(|r| r.path.contains("services"))
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect();
    assert!(!services.is_empty());
    assert!(
        services
            .iter()
            .all(|r| r.contains("/api/v1/namespaces/shop/services?")
                && r.contains("fieldSelector=metadata.name%3Dweb")),
        "{services:#?}"
    );
}

/// `kube-system/kube-dns` as kubeadm creates it: UDP and TCP 53, metrics 9153.
fn kube_dns(cluster_ip: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "uid": "kube-dns-uid",
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ipFamilies": ["IPv4"],
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}
            ],
            "selector": {"k8s-app": "kube-dns"},
            "sessionAffinity": "None"
        },
        "status": {"loadBalancer": {}}
    })
}

#[test]
fn the_dns_server_is_the_kube_dns_service_and_http_reaches_a_service_by_name() {
    let c = Cluster::new(PODS).unwrap();
    let server = SocketAddr::new(OUTSIDE_IPV4.into(), 53);
    let _dns = DnsServer::start(
        c.node.outside(),
        server,
        Ipv4Addr::new(10, 96, 0, 1),
        Ipv6Addr::LOCALHOST,
    )
    .unwrap();
    for proto in ["udp", "tcp"] {
        dnat(&c, "-A", "10.96.0.10", proto, 53, server);
    }
    // An HTTP Service by name: its ClusterIP DNATed to a server in the outside namespace.
    let web = SocketAddr::new(OUTSIDE_IPV4.into(), 8080);
    let _http = HttpServer::start(c.node.outside(), web).unwrap();
    c.api
        .apply_object(service("shop", "api", "10.96.0.30", 80, "http", 8080));
    dnat(&c, "-A", "10.96.0.30", "tcp", 80, web);
    let agent = agent(
        &c,
        &[
            "--dns-expect",
            "10.96.0.1",
            "--probe",
            "api=http://svc/shop/api:80/healthz",
        ],
    );
    // No kube-dns Service yet: the DNS target is absent, said so, and nobody is flagged.
    let s = agent
        .wait_status("dns unresolved without kube-dns", WAIT, |s| {
            service_target(s, "dns")["unresolved"] == "absent"
        })
        .unwrap();
    assert_eq!(
        service_target(&s, "dns")["service"],
        "kube-system/kube-dns:53"
    );
    assert!(probes_of(&s, "dns").is_empty());
    assert_eq!(failing(&agent.metrics().unwrap()), []);

    c.api.apply_object(kube_dns("10.96.0.10"));
    let s = agent
        .wait_status("every pod resolves through kube-dns", WAIT, |s| {
            all_ok_at(s, "dns", "10.96.0.10:53") && all_ok_at(s, "api", "10.96.0.30:80")
        })
        .unwrap();
    assert_eq!(
        service_target(&s, "dns"),
        json!({"target": "dns", "service": "kube-system/kube-dns:53", "address": "10.96.0.10:53"})
    );
    assert_eq!(failing(&agent.metrics().unwrap()), []);
}

/// The Service watch is a supervised worker: up while it follows, and `/healthz` red naming it
/// when it panics.
#[test]
fn the_service_watch_is_a_supervised_worker() {
    let c = Cluster::new(1).unwrap();
    let agent = agent(&c, &["--test-fault", "kill:services"]);
    agent
        .wait_metrics("the services worker reported dead", WAIT, |m| {
            m.value_with("podnet_worker_up", &[("worker", "services")]) == Some(0.0)
        })
        .unwrap();
    let (code, body) = agent.get("/healthz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("services: panicked"), "{body}");
}

/// An IPv6 cluster DNS Service (single-stack `fd00:96::a`), DNATed by ip6tables to a server
/// in the outside namespace: the dual-stack pod resolves through it, IPv4-only pods do not
/// probe it (no address of that family) and nobody is flagged.
#[test]
fn an_ipv6_kube_dns_service() {
    let c = Cluster::new(PODS).unwrap();
    let server = SocketAddr::new(OUTSIDE_IPV6.into(), 53);
    let _dns = DnsServer::start(
        c.node.outside(),
        server,
        Ipv4Addr::new(10, 96, 0, 1),
        "fd00:96::1".parse().unwrap(),
    )
    .unwrap();
    for proto in ["udp", "tcp"] {
        ip6tables_dnat(&c, "fd00:96::a", proto, 53, server);
    }
    let mut svc = kube_dns("fd00:96::a");
    svc["spec"]["ipFamilies"] = json!(["IPv6"]);
    c.api.apply_object(svc);
    let agent = agent(&c, &[]);
    let dual = c.node.pod(0).interface.clone();
    let s = agent
        .wait_status("the dual-stack pod resolves over IPv6", WAIT, |s| {
            let p = probes_of(s, "dns");
            p.len() == 1 && p[0] == (dual.clone(), "fd00:96::a:53".to_owned(), "ok".to_owned())
        })
        .unwrap();
    assert_eq!(service_target(&s, "dns")["address"], "[fd00:96::a]:53");
    assert_eq!(failing(&agent.metrics().unwrap()), []);
}

/// kube-proxy's IPv6 rule for `cluster_ip:port/proto` → `to`.
fn ip6tables_dnat(c: &Cluster, cluster_ip: &str, proto: &str, port: u16, to: SocketAddr) {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", c.node.node_netns(), "ip6tables", "-w", "-t", "nat"])
        .args(
            format!("-A PREROUTING -d {cluster_ip}/128 -p {proto} --dport {port} -j DNAT --to-destination {to}")
                .split_whitespace(),
        )
        .output()
        .expect("running ip6tables");
    assert!(
        out.status.success(),
        "ip6tables: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
