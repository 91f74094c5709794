//! Faults and scale of the double, over real HTTP on 127.0.0.1 (list and watch semantics are
//! tested in `tests/list_watch.rs`, hosting inside a network namespace in `tests/in_netns.rs`).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::client::http_get;

const T: Duration = Duration::from_secs(5);

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn server() -> KubeApiServer {
    let config = Config {
        bookmark_interval: Duration::from_millis(100),
        ..Config::default()
    };
    KubeApiServer::start_with(None, local(), config).unwrap()
}

fn pod(ns: &str, name: &str, node: &str, ip: u8) -> Value {
    PodBuilder::new(ns, name)
        .node(node)
        .ipv4(Ipv4Addr::new(10, 244, 0, ip))
        .build()
}

fn ok(s: &KubeApiServer, path: &str) -> Value {
    let (code, body) = get_json(s.addr(), path).unwrap();
    assert_eq!(code, 200, "{path}: {body}");
    body
}

/// `GET` that must fail with `code` and a `Status` body; returns the Status.
fn fails(s: &KubeApiServer, path: &str, code: u16) -> Value {
    let (got, body) = get_json(s.addr(), path).unwrap();
    assert_eq!(got, code, "{path}: {body}");
    assert_eq!(
        (body["kind"].as_str(), body["code"].as_u64()),
        (Some("Status"), Some(code.into()))
    );
    body
}

fn names(list: &Value) -> Vec<&str> {
    let items = list["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    items
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap_or(""))
        .collect()
}

fn watch(s: &KubeApiServer, query: &str) -> WatchStream {
    let w = WatchStream::open(s.addr(), &format!("/api/v1/pods?watch=true&{query}")).unwrap();
    assert_eq!(w.status(), 200, "{}", w.head());
    w
}

/// `(type, name, resourceVersion)` of an event.
fn summary(e: &Value) -> (String, String, String) {
    let s = |p: &str| {
        e.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    (
        s("/type"),
        s("/object/metadata/name"),
        s("/object/metadata/resourceVersion"),
    )
}

#[test]
fn timeout_seconds_ends_the_stream_cleanly() {
    let s = server();
    let mut w = watch(&s, "timeoutSeconds=1&allowWatchBookmarks=false");
    assert_eq!(s.open_watches(), 1);
    let started = Instant::now();
    assert_eq!(w.next_event(T).unwrap(), None);
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(s.wait_until(T, |s| s.open_watches() == 0));
}

#[test]
fn client_disconnect_releases_the_watch() {
    let s = server();
    let w = watch(&s, "resourceVersion=0");
    assert_eq!(s.open_watches(), 1);
    drop(w);
    assert!(s.wait_until(T, |s| s.open_watches() == 0));
}

#[test]
fn injected_500s_and_delays() {
    let s = server();
    s.fail_next(2);
    let e = fails(&s, "/api/v1/pods", 500);
    assert_eq!(e["reason"], "InternalError");
    let w = WatchStream::open(s.addr(), "/api/v1/pods?watch=1").unwrap();
    assert_eq!(w.status(), 500);
    ok(&s, "/api/v1/pods");
    s.fail_all(true);
    fails(&s, "/version", 500);
    fails(&s, "/api/v1/pods", 500);
    s.fail_all(false);
    ok(&s, "/version");
    s.set_delay(Duration::from_millis(300));
    let started = Instant::now();
    ok(&s, "/version");
    assert!(started.elapsed() >= Duration::from_millis(300));
    s.set_delay(Duration::ZERO);
}

#[test]
fn outages_close_watches_and_answer_503_or_refuse_connections() {
    let s = server();
    let mut w = watch(&s, "resourceVersion=0");
    s.set_outage(Some(Outage::Unavailable)).unwrap();
    assert_eq!(w.next_event(T).unwrap(), None, "open watches are closed");
    assert_eq!(
        fails(&s, "/api/v1/pods", 503)["reason"],
        "ServiceUnavailable"
    );
    s.set_outage(None).unwrap();
    ok(&s, "/api/v1/pods");
    let mut w = watch(&s, "resourceVersion=0");
    s.set_outage(Some(Outage::Refuse)).unwrap();
    assert_eq!(w.next_event(T).unwrap(), None);
    let err = http_get(s.addr(), "/api/v1/pods").unwrap_err();
    let io = err
        .downcast_ref::<std::io::Error>()
        .map(std::io::Error::kind);
    assert_eq!(io, Some(std::io::ErrorKind::ConnectionRefused), "{err:#}");
    s.set_outage(None).unwrap();
    ok(&s, "/api/v1/pods");
    assert!(s.wait_until(T, |s| s.open_watches() == 0));
}

#[test]
fn stalled_watches_send_nothing_until_released() {
    let s = server();
    let from = s.revision();
    let mut w = watch(
        &s,
        &format!("resourceVersion={from}&allowWatchBookmarks=true"),
    );
    assert_eq!(summary(&w.next_event(T).unwrap().unwrap()).0, "BOOKMARK");
    s.stall_watches();
    // Bookmarks already in flight may still arrive; then nothing at all (while bookmarks
    // are due every 100 ms).
    let mut in_flight = 0;
    while w.next_event(Duration::from_millis(300)).is_ok() {
        in_flight += 1;
        assert!(in_flight < 5, "events keep coming while stalled");
    }
    let rv = s.apply(pod("ns", "a", "n1", 1)).unwrap();
    w.expect_silence(Duration::from_millis(500)).unwrap();
    assert_eq!(s.open_watches(), 1, "the connection stays open");
    s.release_watches();
    let got = loop {
        let e = w.next_event(T).unwrap().unwrap();
        if summary(&e).0 != "BOOKMARK" {
            break summary(&e);
        }
    };
    assert_eq!(got, ("ADDED".into(), "a".into(), rv.to_string()));
    s.close_watches();
    while let Some(e) = w.next_event(T).unwrap() {
        assert_eq!(e["type"], "BOOKMARK");
    }
}

#[test]
fn fifty_thousand_pods_list_by_node() {
    let s = server();
    let started = Instant::now();
    s.bulk_insert(numbered_pods(50_000, 500));
    let inserted = started.elapsed();
    assert_eq!(s.pod_count(), 50_000);
    let started = Instant::now();
    // kube-rs's first request with `watcher::Config::default().fields("spec.nodeName=node-7")`.
    let l = ok(
        &s,
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-7&limit=500",
    );
    let listed = started.elapsed();
    assert_eq!(names(&l).len(), 100);
    assert!(
        l["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["spec"]["nodeName"] == "node-7")
    );
    assert!(l["metadata"].get("continue").is_none());
    eprintln!("50k pods: bulk insert {inserted:?}, node list {listed:?} (debug build)");
}

#[test]
fn nodes_discovery_and_unknown_paths() {
    let s = server();
    s.apply(pod("ns", "a", "n1", 1)).unwrap();
    s.register_node("empty-node");
    assert_eq!(ok(&s, "/api/v1/nodes/n1")["metadata"]["name"], "n1");
    assert_eq!(ok(&s, "/api/v1/nodes/empty-node")["kind"], "Node");
    assert_eq!(fails(&s, "/api/v1/nodes/ghost", 404)["reason"], "NotFound");
    assert_eq!(
        ok(&s, "/api/v1/namespaces/ns/pods/a")["metadata"]["name"],
        "a"
    );
    assert_eq!(
        fails(&s, "/api/v1/namespaces/ns/pods/zz", 404)["message"],
        "pods \"zz\" not found"
    );
    assert_eq!(ok(&s, "/version")["gitVersion"], "v1.33.0");
    assert_eq!(ok(&s, "/api")["versions"], json!(["v1"]));
    assert_eq!(ok(&s, "/apis")["kind"], "APIGroupList");
    assert_eq!(ok(&s, "/api/v1")["resources"][0]["name"], "pods");
    fails(&s, "/api/v1/configmaps", 404);
    assert_eq!(s.stats().count(RequestKind::Discovery), 4);
    let dir = std::env::temp_dir().join(format!("kubeconfig-{}", std::process::id()));
    s.kubeconfig(&dir).unwrap();
    let text = std::fs::read_to_string(&dir).unwrap();
    let _ = std::fs::remove_file(&dir);
    assert!(
        text.contains(&format!("    server: http://{}\n", s.addr())),
        "{text}"
    );
    assert!(text.contains("current-context: podnet-double\n"), "{text}");
    assert!(text.contains("    token: "), "{text}");
}

#[test]
fn control_plane_kinds_are_served_with_their_selectors() {
    let s = server();
    s.apply_object(apiservice(
        "v1beta1.metrics.k8s.io",
        "kube-system",
        "metrics-server",
        Some((false, "FailedDiscoveryCheck")),
    ));
    s.apply_object(webhook_configuration(
        true,
        "policy",
        "policy",
        "policy-webhook",
        443,
        3,
    ));
    s.apply_object(crd_with_conversion(
        "things.example.com",
        "conv",
        "conv-webhook",
        9443,
    ));
    s.apply_object(service(
        "kube-system",
        "metrics-server",
        "10.96.0.10",
        443,
        "https",
        10250,
    ));
    s.apply_object(service(
        "other",
        "metrics-server",
        "10.96.0.11",
        443,
        "https",
        10250,
    ));
    s.apply_object(endpoint_slice(
        "kube-system",
        "metrics-server",
        "https",
        10250,
        &[("10.244.0.5", true)],
    ));
    s.apply_object(endpoint_slice(
        "kube-system",
        "unrelated",
        "https",
        1,
        &[("10.244.0.6", true)],
    ));
    let list = ok(&s, "/apis/apiregistration.k8s.io/v1/apiservices");
    assert_eq!(
        (list["kind"].as_str(), names(&list)),
        (Some("APIServiceList"), vec!["v1beta1.metrics.k8s.io"])
    );
    let list = ok(
        &s,
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
    );
    assert_eq!(names(&list), ["policy"]);
    assert!(
        names(&ok(
            &s,
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
        ))
        .is_empty()
    );
    assert_eq!(
        names(&ok(
            &s,
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        )),
        ["things.example.com"]
    );
    let svc = ok(&s, "/api/v1/namespaces/kube-system/services/metrics-server");
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.10");
    fails(&s, "/api/v1/namespaces/kube-system/services/nope", 404);
    assert_eq!(
        names(&ok(&s, "/api/v1/namespaces/other/services")),
        ["metrics-server"]
    );
    assert_eq!(names(&ok(&s, "/api/v1/services")).len(), 2);
    let slices = ok(
        &s,
        "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dmetrics-server",
    );
    assert_eq!(names(&slices), ["metrics-server-abcde"]);
    assert!(
        names(&ok(
            &s,
            "/apis/discovery.k8s.io/v1/namespaces/other/endpointslices"
        ))
        .is_empty()
    );
    // Pods are not mixed in, and the mirror pod is found by label and node.
    s.apply(apiserver_mirror_pod(
        "n1",
        "192.0.2.10",
        &["--enable-aggregator-routing=true"],
    ))
    .unwrap();
    let pods = ok(
        &s,
        "/api/v1/namespaces/kube-system/pods?labelSelector=component%3Dkube-apiserver&fieldSelector=spec.nodeName%3Dn1",
    );
    assert_eq!(names(&pods), ["kube-apiserver-n1"]);
    assert!(
        s.delete_namespaced(Resource::Services, "other", "metrics-server")
            .is_some()
    );
    assert_eq!(names(&ok(&s, "/api/v1/services")).len(), 1);
}
