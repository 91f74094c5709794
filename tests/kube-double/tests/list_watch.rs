//! The Kubernetes API server double, driven over real HTTP as kube-rs would drive it.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use podnet_kube_double::{
    Config, KubeApiServer, PodBuilder, RequestKind, WatchStream, get_json, malformed, numbered_pods,
};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(5);

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn fast() -> Config {
    Config {
        bookmark_interval: Duration::from_millis(100),
        too_large_wait: Duration::from_millis(200),
        ..Config::default()
    }
}

fn server() -> KubeApiServer {
    KubeApiServer::start_with(None, local(), fast()).unwrap()
}

fn pod(ns: &str, name: &str, node: &str, ip: u8) -> Value {
    PodBuilder::new(ns, name)
        .node(node)
        .ipv4(Ipv4Addr::new(10, 244, 0, ip))
        .label("app", name)
        .build()
}

/// `GET` that must succeed with 200.
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
        (body["kind"].as_str(), body["apiVersion"].as_str()),
        (Some("Status"), Some("v1"))
    );
    assert_eq!(
        (body["status"].as_str(), body["code"].as_u64()),
        (Some("Failure"), Some(code.into()))
    );
    body
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or("<none>")
                .to_owned()
        })
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

fn ev(t: &str, name: &str, rv: u64) -> (String, String, String) {
    (t.to_owned(), name.to_owned(), rv.to_string())
}

#[test]
fn list_filters_by_fields_labels_and_namespace() {
    let s = server();
    s.apply(pod("shop", "a", "n1", 1)).unwrap();
    s.apply(pod("shop", "b", "n2", 2)).unwrap();
    let rv_c = s.apply(pod("pay", "c", "n1", 3)).unwrap();
    let all = ok(&s, "/api/v1/pods");
    assert_eq!(
        (all["kind"].as_str(), all["apiVersion"].as_str()),
        (Some("PodList"), Some("v1"))
    );
    assert_eq!(all["metadata"]["resourceVersion"], s.revision().to_string());
    assert_eq!(
        names(&all),
        ["c", "a", "b"],
        "etcd key order: pay/c, shop/a, shop/b"
    );
    assert_eq!(
        all["items"][0]["metadata"]["resourceVersion"],
        rv_c.to_string()
    );
    assert_eq!(
        all["items"][0]["status"]["podIPs"],
        json!([{"ip": "10.244.0.3"}])
    );
    let q = |sel: &str| names(&ok(&s, &format!("/api/v1/pods?{sel}")));
    assert_eq!(q("fieldSelector=spec.nodeName%3Dn1"), ["c", "a"]);
    assert_eq!(q("fieldSelector=spec.nodeName!%3Dn1"), ["b"]);
    assert_eq!(
        q("fieldSelector=spec.nodeName%3Dn1,metadata.namespace%3Dshop"),
        ["a"]
    );
    assert_eq!(q("fieldSelector=metadata.name%3Db"), ["b"]);
    assert_eq!(
        q("fieldSelector=spec.nodeName%3Dnowhere"),
        Vec::<String>::new()
    );
    assert_eq!(q("labelSelector=app%3Da"), ["a"]);
    assert_eq!(q("labelSelector=app!%3Da,app"), ["c", "b"]);
    assert_eq!(q("labelSelector=!app"), Vec::<String>::new());
    assert_eq!(q("labelSelector=app+in+(a,c)"), ["c", "a"]);
    let ns = ok(
        &s,
        "/api/v1/namespaces/shop/pods?fieldSelector=spec.nodeName%3Dn1",
    );
    assert_eq!(names(&ns), ["a"]);
    let bad = fails(&s, "/api/v1/pods?fieldSelector=spec.color%3Dred", 400);
    assert_eq!(bad["reason"], "BadRequest");
    assert_eq!(bad["message"], "field label not supported: spec.color");
    fails(&s, "/api/v1/pods?labelSelector=a%3D(b", 400);
    fails(
        &s,
        "/api/v1/pods?watch=true&fieldSelector=spec.color%3Dred",
        400,
    );
}

#[test]
fn pagination_is_consistent_and_continue_tokens_expire() {
    let s = server();
    for i in 0..7 {
        s.apply(pod("ns", &format!("p{i}"), "n1", i)).unwrap();
    }
    let first = ok(&s, "/api/v1/pods?limit=3");
    let rv = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(names(&first), ["p0", "p1", "p2"]);
    assert_eq!(first["metadata"]["remainingItemCount"], 4);
    // Changes after the first page are invisible to the rest of this list (same snapshot).
    s.update("ns", "p4", |p| {
        p["metadata"]["labels"]["changed"] = json!("yes")
    })
    .unwrap();
    s.delete("ns", "p5").unwrap();
    s.apply(pod("ns", "p3a", "n1", 50)).unwrap();
    let token = first["metadata"]["continue"].as_str().unwrap();
    let second = ok(&s, &format!("/api/v1/pods?limit=3&continue={token}"));
    assert_eq!(
        second["metadata"]["resourceVersion"].as_str(),
        Some(rv.as_str())
    );
    assert_eq!(names(&second), ["p3", "p4", "p5"]);
    assert!(
        second["items"][1]["metadata"]["labels"]
            .get("changed")
            .is_none()
    );
    let token = second["metadata"]["continue"].as_str().unwrap().to_owned();
    let with_selector = ok(&s, "/api/v1/pods?limit=2&fieldSelector=spec.nodeName%3Dn1");
    assert!(
        with_selector["metadata"]
            .get("remainingItemCount")
            .is_none()
    );
    // Compaction expires the token: 410 with a token for an inconsistent continuation.
    s.compact();
    let gone = fails(&s, &format!("/api/v1/pods?limit=3&continue={token}"), 410);
    assert_eq!(gone["reason"], "Expired");
    assert!(
        gone["message"]
            .as_str()
            .unwrap()
            .starts_with("The provided continue parameter is too old")
    );
    let next = gone["metadata"]["continue"].as_str().unwrap();
    let rest = ok(&s, &format!("/api/v1/pods?limit=3&continue={next}"));
    assert_eq!(
        names(&rest),
        ["p6"],
        "latest state, after the last key (p5 is gone)"
    );
    assert_eq!(
        rest["metadata"]["resourceVersion"],
        s.revision().to_string()
    );
    fails(
        &s,
        &format!("/api/v1/pods?continue={next}&resourceVersion=5"),
        400,
    );
    fails(&s, "/api/v1/pods?continue=garbage!", 400);
}

#[test]
fn list_resource_version_semantics() {
    let s = server();
    let r1 = s.apply(pod("ns", "a", "n1", 1)).unwrap();
    s.apply(pod("ns", "b", "n1", 2)).unwrap();
    let r3 = s
        .update("ns", "a", |p| p["status"]["phase"] = json!("Failed"))
        .unwrap();
    let cur = s.revision().to_string();
    let rv = |l: &Value| {
        l["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // "0" = any: the watch cache serves everything, ignoring limit.
    let any = ok(&s, "/api/v1/pods?resourceVersion=0&limit=1");
    assert_eq!(
        (names(&any).len(), any["metadata"].get("continue")),
        (2, None)
    );
    let l = ok(
        &s,
        &format!("/api/v1/pods?resourceVersion={r1}&resourceVersionMatch=NotOlderThan"),
    );
    assert_eq!(
        (rv(&l), l["items"][0]["status"]["phase"].as_str()),
        (cur.clone(), Some("Failed"))
    );
    // Exact (or legacy rv + limit): the state at that revision.
    let exact = ok(
        &s,
        &format!("/api/v1/pods?resourceVersion={r1}&resourceVersionMatch=Exact"),
    );
    assert_eq!(
        (rv(&exact), names(&exact)),
        (r1.to_string(), vec!["a".to_owned()])
    );
    assert_eq!(exact["items"][0]["status"]["phase"], "Running");
    let legacy = ok(
        &s,
        &format!("/api/v1/pods?resourceVersion={}&limit=5", r3 - 1),
    );
    assert_eq!(
        (rv(&legacy), names(&legacy).len()),
        ((r3 - 1).to_string(), 2)
    );
    s.compact();
    let old = fails(
        &s,
        &format!("/api/v1/pods?resourceVersion={r1}&resourceVersionMatch=Exact"),
        410,
    );
    assert_eq!(
        (old["reason"].as_str(), old["message"].as_str()),
        (
            Some("Expired"),
            Some("The resourceVersion for the provided list is too old.")
        )
    );
    ok(
        &s,
        &format!("/api/v1/pods?resourceVersion={r1}&resourceVersionMatch=NotOlderThan"),
    );
    let future = fails(
        &s,
        "/api/v1/pods?resourceVersion=999999&resourceVersionMatch=NotOlderThan",
        504,
    );
    assert_eq!(
        future["details"]["causes"][0]["reason"],
        "ResourceVersionTooLarge"
    );
    fails(&s, "/api/v1/pods?resourceVersionMatch=NotOlderThan", 422);
    fails(
        &s,
        "/api/v1/pods?resourceVersion=0&resourceVersionMatch=Exact",
        422,
    );
    fails(&s, "/api/v1/pods?resourceVersion=abc", 400);
}

#[test]
fn watch_delivers_changes_in_order_from_a_resource_version() {
    let s = server();
    s.apply(pod("ns", "old", "n1", 1)).unwrap();
    let from = s.revision();
    let a = s.apply(pod("ns", "a", "n1", 2)).unwrap();
    let m = s
        .update("ns", "a", |p| p["status"]["phase"] = json!("Succeeded"))
        .unwrap();
    let d = s.delete("ns", "old").unwrap();
    let mut w = watch(
        &s,
        &format!("resourceVersion={from}&fieldSelector=spec.nodeName%3Dn1"),
    );
    let got: Vec<_> = w.events(3, T).unwrap().iter().map(summary).collect();
    assert_eq!(
        got,
        [
            ev("ADDED", "a", a),
            ev("MODIFIED", "a", m),
            ev("DELETED", "old", d)
        ]
    );
    // Then live changes.
    let b = s.apply(pod("ns", "b", "n1", 3)).unwrap();
    s.apply(pod("ns", "elsewhere", "n2", 4)).unwrap();
    let b2 = s.apply(pod("ns", "b", "n1", 5)).unwrap();
    let got: Vec<_> = w.events(2, T).unwrap().iter().map(summary).collect();
    assert_eq!(got, [ev("ADDED", "b", b), ev("MODIFIED", "b", b2)]);
    assert_eq!(s.open_watches(), 1);
    // A namespaced watch sees only its namespace.
    let path = format!("/api/v1/namespaces/other/pods?watch=1&resourceVersion={from}");
    let mut ns = WatchStream::open(s.addr(), &path).unwrap();
    let c = s.apply(pod("other", "c", "n1", 6)).unwrap();
    assert_eq!(
        summary(&ns.next_event(T).unwrap().unwrap()),
        ev("ADDED", "c", c)
    );
    assert_eq!(s.open_watches(), 2);
}

#[test]
fn watch_without_resource_version_starts_with_the_current_state() {
    let s = server();
    s.apply(pod("ns", "a", "n1", 1)).unwrap();
    s.apply(pod("ns", "b", "n2", 2)).unwrap();
    for q in [
        "fieldSelector=spec.nodeName%3Dn1",
        "resourceVersion=0&fieldSelector=spec.nodeName%3Dn1",
        "resourceVersion=&fieldSelector=spec.nodeName%3Dn1",
    ] {
        let current = names(&ok(&s, "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1"));
        let mut w = watch(&s, q);
        let got = w.events(current.len(), T).unwrap();
        assert!(got.iter().all(|e| e["type"] == "ADDED"), "{q}: {got:?}");
        assert_eq!(
            got.iter().map(|e| summary(e).1).collect::<Vec<_>>(),
            current,
            "{q}"
        );
        w.expect_silence(Duration::from_millis(200)).unwrap();
        let rv = s
            .apply(pod("ns", &format!("new-{}", s.revision()), "n1", 9))
            .unwrap();
        assert_eq!(
            summary(&w.next_event(T).unwrap().unwrap()).2,
            rv.to_string()
        );
    }
}

#[test]
fn streaming_list_ends_initial_events_with_an_annotated_bookmark() {
    let s = server();
    s.apply(pod("ns", "a", "n1", 1)).unwrap();
    s.apply(pod("ns", "b", "n1", 2)).unwrap();
    let rv = s.revision();
    // Exactly what kube-rs sends for `watcher::Config::default().streaming_lists()`.
    let mut w = watch(
        &s,
        "timeoutSeconds=290&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=0",
    );
    let got = w.events(3, T).unwrap();
    assert_eq!(summary(&got[0]).0, "ADDED");
    assert_eq!(summary(&got[1]).0, "ADDED");
    assert_eq!(summary(&got[2]), ev("BOOKMARK", "", rv));
    assert_eq!(
        got[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    let status = get_json(
        s.addr(),
        "/api/v1/pods?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
    )
    .unwrap();
    assert_eq!(status.0, 422, "sendInitialEvents needs allowWatchBookmarks");
}

#[test]
fn selector_transitions_become_added_and_deleted() {
    let s = server();
    s.apply(pod("ns", "mover", "n2", 1)).unwrap();
    let from = s.revision();
    let mut on_n1 = watch(
        &s,
        &format!("resourceVersion={from}&fieldSelector=spec.nodeName%3Dn1"),
    );
    let mut labelled = watch(
        &s,
        &format!("resourceVersion={from}&labelSelector=tier%3Dfe"),
    );
    let in_rv = s
        .update("ns", "mover", |p| p["spec"]["nodeName"] = json!("n1"))
        .unwrap();
    let out_rv = s
        .update("ns", "mover", |p| p["spec"]["nodeName"] = json!("n3"))
        .unwrap();
    let got = on_n1.events(2, T).unwrap();
    assert_eq!(summary(&got[0]), ev("ADDED", "mover", in_rv));
    assert_eq!(summary(&got[1]), ev("DELETED", "mover", out_rv));
    assert_eq!(
        got[1]["object"]["spec"]["nodeName"], "n1",
        "the last matching state"
    );
    let l_in = s
        .update("ns", "mover", |p| {
            p["metadata"]["labels"]["tier"] = json!("fe")
        })
        .unwrap();
    let l_out = s
        .update("ns", "mover", |p| {
            p["metadata"]["labels"]["tier"] = json!("be")
        })
        .unwrap();
    let got: Vec<_> = labelled.events(2, T).unwrap().iter().map(summary).collect();
    assert_eq!(
        got,
        [ev("ADDED", "mover", l_in), ev("DELETED", "mover", l_out)]
    );
    on_n1.expect_silence(Duration::from_millis(200)).unwrap();
}

#[test]
fn bookmarks_are_periodic_and_only_when_allowed() {
    let s = server();
    s.apply(pod("ns", "a", "n1", 1)).unwrap();
    let from = s.revision();
    let mut with = watch(
        &s,
        &format!(
            "resourceVersion={from}&allowWatchBookmarks=true&fieldSelector=spec.nodeName%3Dn1"
        ),
    );
    let mut without = watch(
        &s,
        &format!("resourceVersion={from}&fieldSelector=spec.nodeName%3Dn1"),
    );
    let e = with.next_event(T).unwrap().unwrap();
    assert_eq!(
        e["object"],
        json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": from.to_string()}})
    );
    // A change on another node moves the bookmark's revision forward without an event.
    let other = s.apply(pod("ns", "b", "n2", 2)).unwrap();
    let deadline = Instant::now() + T;
    loop {
        let e = with.next_event(T).unwrap().unwrap();
        assert_eq!(summary(&e).0, "BOOKMARK");
        if summary(&e).2 == other.to_string() {
            break;
        }
        assert!(Instant::now() < deadline, "no bookmark at {other}");
    }
    without.expect_silence(Duration::from_millis(400)).unwrap();
}

#[test]
fn compacted_resource_version_gets_one_410_error_event() {
    let s = server();
    let old = s.apply(pod("ns", "a", "n1", 1)).unwrap();
    s.apply(pod("ns", "b", "n1", 2)).unwrap();
    let c = s.compact();
    let mut w = watch(
        &s,
        &format!("resourceVersion={old}&allowWatchBookmarks=true"),
    );
    let e = w.next_event(T).unwrap().unwrap();
    assert_eq!(e["type"], "ERROR");
    assert_eq!(
        e["object"],
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {old} ({c})"), "reason": "Expired", "code": 410
        })
    );
    assert_eq!(
        w.next_event(T).unwrap(),
        None,
        "the stream ends after the error"
    );
    // The current revision is still fine after compaction.
    let mut fine = watch(&s, &format!("resourceVersion={c}"));
    fine.expect_silence(Duration::from_millis(200)).unwrap();
    // The bounded history window compacts by itself.
    let small = KubeApiServer::start_with(
        None,
        local(),
        Config {
            history_window: 3,
            ..fast()
        },
    )
    .unwrap();
    let start = small.revision();
    small.bulk_insert(numbered_pods(5, 1));
    assert_eq!(small.compacted_revision(), start + 2);
    let mut w = watch(&small, &format!("resourceVersion={}", start + 1));
    assert_eq!(w.next_event(T).unwrap().unwrap()["object"]["code"], 410);
    let mut w = watch(&small, &format!("resourceVersion={}", start + 2));
    assert_eq!(w.events(3, T).unwrap().len(), 3);
}

#[test]
fn malformed_objects_are_served_as_stored() {
    let s = server();
    s.apply(pod("ns", "good", "n1", 1)).unwrap();
    let from = s.revision();
    s.insert_raw(malformed::pod_ips_string("ns", "ips-string", "n1"));
    s.insert_raw(malformed::nameless("ns", "n1"));
    assert!(s.apply(malformed::nameless("ns", "n1")).is_err());
    let l = ok(&s, "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1");
    assert_eq!(names(&l), ["good", "ips-string", "<none>"]);
    assert_eq!(l["items"][1]["status"]["podIPs"], "10.99.0.1");
    assert!(l["items"][2]["metadata"]["resourceVersion"].is_string());
    let mut w = watch(&s, &format!("resourceVersion={from}"));
    let got: Vec<_> = w
        .events(2, T)
        .unwrap()
        .iter()
        .map(|e| summary(e).1)
        .collect();
    assert_eq!(got, ["ips-string", ""]);
}

#[test]
fn kube_rs_watcher_request_sequence() {
    let s = server();
    s.bulk_insert(numbered_pods(30, 3));
    // watcher::Config::default(): paged list at the most recent revision, then a watch from it.
    let l = ok(
        &s,
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1&limit=500",
    );
    assert_eq!(names(&l).len(), 10);
    let rv = l["metadata"]["resourceVersion"].as_str().unwrap();
    let mut w = watch(
        &s,
        &format!(
            "timeoutSeconds=290&fieldSelector=spec.nodeName%3Dnode-1&allowWatchBookmarks=true&resourceVersion={rv}"
        ),
    );
    assert_eq!(
        summary(&w.next_event(T).unwrap().unwrap()),
        ev("BOOKMARK", "", rv.parse().unwrap())
    );
    let stats = s.stats();
    assert_eq!((stats.lists(), stats.watches()), (1, 1));
    assert_eq!(stats.by_path["/api/v1/pods"], 2);
    let log = s.request_log();
    assert_eq!(log[1].kind, RequestKind::Watch);
    assert!(log[1].query.contains("allowWatchBookmarks=true"));
}

#[test]
fn every_other_watch_from_a_revision_expires_while_asked_to() {
    let s = server();
    let rv = s.apply(pod("ns", "a", "n1", 1)).unwrap();
    s.expire_every_other_watch(true);
    let from_rv = format!("resourceVersion={rv}");
    let expired = |w: &mut WatchStream| {
        let e = w.next_event(T).unwrap().unwrap();
        e["type"] == "ERROR" && e["object"]["code"] == 410 && w.next_event(T).unwrap().is_none()
    };
    assert!(expired(&mut watch(&s, &from_rv)), "the first one expires");
    let mut second = watch(&s, &from_rv);
    second.expect_silence(Duration::from_millis(200)).unwrap();
    assert!(expired(&mut watch(&s, &from_rv)), "the third one too");
    // A watch without a revision (the current state) is never too old, and lists still work.
    let mut now = watch(&s, "");
    assert_eq!(now.next_event(T).unwrap().unwrap()["type"], "ADDED");
    ok(&s, "/api/v1/pods");
    s.expire_every_other_watch(false);
    let mut fine = watch(&s, &from_rv);
    fine.expect_silence(Duration::from_millis(200)).unwrap();
    let mut fine = watch(&s, &from_rv);
    fine.expect_silence(Duration::from_millis(200)).unwrap();
}

/// `Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1` (lists) and
/// `…;as=PartialObjectMetadata;…` (watches): objects reduced to their metadata, in the API
/// server's shapes; without that header, whole objects.
#[test]
fn metadata_only_lists_and_watches() {
    use podnet_kube_double::{calico_node, get_json_accept, metadata};
    let s = server();
    s.apply_object(calico_node("node-b", "192.0.2.11", Some("10.244.201.1")));
    let list_accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
    let (code, list) = get_json_accept(s.addr(), "/api/v1/nodes?limit=500", list_accept).unwrap();
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["kind"], metadata::LIST_KIND);
    assert_eq!(list["apiVersion"], metadata::API_VERSION);
    let item = &list["items"][0];
    assert_eq!(item["kind"], metadata::KIND);
    assert_eq!(item["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(item["metadata"]["name"], "node-b");
    assert_eq!(
        item["metadata"]["annotations"]["projectcalico.org/IPv4VXLANTunnelAddr"],
        "10.244.201.1"
    );
    assert!(
        item.get("spec").is_none() && item.get("status").is_none(),
        "{item}"
    );
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    // Whole objects without the header.
    let full = ok(&s, "/api/v1/nodes");
    assert_eq!(full["kind"], "NodeList");
    assert!(full["items"][0]["status"]["addresses"].is_array());
    // A watch: events and bookmarks carry PartialObjectMetadata.
    let accept = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
    let path = format!("/api/v1/nodes?watch=true&resourceVersion={rv}&allowWatchBookmarks=true");
    let mut w = WatchStream::open_accept(s.addr(), &path, accept).unwrap();
    assert_eq!(w.status(), 200);
    s.apply_object(calico_node("node-c", "192.0.2.12", None));
    let ev = w.next_event(T).unwrap().unwrap();
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(ev["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(ev["object"]["metadata"]["name"], "node-c");
    assert!(ev["object"].get("status").is_none(), "{ev}");
    let bookmark = w.next_event(T).unwrap().unwrap();
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(bookmark["object"]["kind"], "PartialObjectMetadata");
    assert!(bookmark["object"]["metadata"]["resourceVersion"].is_string());
    let log = s.request_log();
    assert!(log.iter().filter(|r| r.path == "/api/v1/nodes").count() >= 3);
    assert_eq!(log.iter().filter(|r| r.metadata_only).count(), 2, "{log:?}");
}
