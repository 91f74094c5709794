//! Property tests of what podnet reads from the Kubernetes API: Pod JSON (lenient
//! [`RawPod`] decoding and [`parse_pod`]), list pages cut into items as they stream in
//! ([`PageReader`]), watch event lines, and the BlockAffinity/Node readers. Never a panic,
//! never an error for a merely odd pod, bounded reasons and lists, and irrelevant changes
//! (unknown fields, chunking, key order) change nothing.

use std::net::IpAddr;

use kube::core::WatchEvent;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::blocks::parse as blocks;
use super::page::{Item, PageReader};
use super::pod::{MAX_NAME, MAX_NAMESPACE, QUOTE_MAX, RawPod, Skip, parse_pod};
use crate::util::props::{cases, hostile_string, mutate, mutation};

const NODE: &str = "node-a";

/// Any JSON value, nested a few levels, with hostile strings.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("[a-zA-Z]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from)
    ]
}

/// A well-formed pod of this node or another, with whatever else a real pod carries.
fn pod() -> impl Strategy<Value = Value> {
    (
        hostile_string(),
        "[a-z0-9-]{1,63}",
        prop_oneof![Just(NODE.to_owned()), "[a-z-]{1,10}"],
        proptest::collection::vec(ip(), 0..3),
        prop_oneof![
            Just("Running"),
            Just("Pending"),
            Just("Succeeded"),
            Just("Failed")
        ],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(name, ns, node, ips, phase, host_net, deleting)| {
            let ips: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
            let mut p = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "uid": "u-1", "resourceVersion": "9"},
                "spec": {"nodeName": node, "hostNetwork": host_net},
                "status": {"phase": phase, "podIPs": ips},
            });
            if deleting {
                p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            p
        })
}

/// Add unknown fields (of any shape) at each level of a pod: the parser must not care.
fn with_extras(mut pod: Value, extras: Vec<(u8, String, Value)>) -> Value {
    for (level, key, v) in extras {
        let key = format!("x{key}");
        let at = match level % 4 {
            0 => pod.as_object_mut(),
            1 => pod["metadata"].as_object_mut(),
            2 => pod["spec"].as_object_mut(),
            _ => pod["status"].as_object_mut(),
        };
        if let Some(o) = at {
            o.insert(key, v);
        }
    }
    pod
}

fn decode(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice::<RawPod>(bytes)
        .ok()
        .map(|p| p.to_value())
}

fn check_parsed(r: &Result<super::KubePod, Skip>) {
    match r {
        Ok(p) => assert!(
            p.ips.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        ),
        Err(Skip::Malformed(why)) => assert!(why.len() <= 100 + QUOTE_MAX * 10, "{why}"),
        Err(_) => {}
    }
}

/// Feed a page in chunks; the items (their parse) and the page's metadata.
fn read_page(bytes: &[u8], chunk: usize) -> (Vec<Option<Value>>, Option<String>) {
    let mut r = PageReader::default();
    let mut items = Vec::new();
    for c in bytes.chunks(chunk.max(1)) {
        let fed = r.feed(c, |i| {
            items.push(match i {
                Item::Pod(p) => Some(p.to_value()),
                Item::Malformed(_) => None,
            })
        });
        if fed.is_err() {
            return (items, None);
        }
    }
    (items, r.finish().ok().map(|m| m.resource_version))
}

proptest! {
    #![proptest_config(cases(256))]

    /// A pod reads the same with unknown fields anywhere, through `RawPod` or directly.
    #[test]
    fn props_pod_unknown_fields_change_nothing(
        p in pod(),
        extras in proptest::collection::vec((any::<u8>(), "[a-zA-Z]{1,8}", json_value()), 0..6),
    ) {
        let want = parse_pod(&p, NODE);
        check_parsed(&want);
        let noisy = with_extras(p, extras);
        prop_assert_eq!(&parse_pod(&noisy, NODE), &want);
        let raw = decode(noisy.to_string().as_bytes()).expect("a JSON object always decodes");
        prop_assert_eq!(&parse_pod(&raw, NODE), &want);
        if let Ok(k) = &want {
            prop_assert!((1..=MAX_NAME).contains(&k.name.len()));
            prop_assert!((1..=MAX_NAMESPACE).contains(&k.namespace.len()));
        }
    }

    /// Sections and fields of the wrong type, anywhere: `RawPod` never fails on an object,
    /// `parse_pod` never panics, and a malformed pod's reason stays short.
    #[test]
    fn props_pod_hostile_shapes(
        p in pod(),
        replace in proptest::collection::vec((0..9usize, json_value()), 1..4),
    ) {
        let mut p = p;
        const PATHS: [&str; 9] = [
            "/metadata", "/spec", "/status", "/metadata/name", "/metadata/namespace",
            "/spec/nodeName", "/spec/hostNetwork", "/status/podIPs", "/status/podIP",
        ];
        for (i, v) in replace {
            let (parent, key) = PATHS[i].rsplit_once('/').unwrap();
            let at = if parent.is_empty() { Some(&mut p) } else { p.pointer_mut(parent) };
            if let Some(Value::Object(o)) = at {
                o.insert(key.to_owned(), v);
            }
        }
        check_parsed(&parse_pod(&p, NODE));
        let raw = decode(p.to_string().as_bytes());
        prop_assert!(raw.is_some(), "an object is always a RawPod");
        check_parsed(&parse_pod(&raw.unwrap(), NODE));
    }

    /// Corrupted pod bytes: decoding fails or succeeds, never panics.
    #[test]
    fn props_pod_corrupt_bytes(p in pod(), muts in proptest::collection::vec(mutation(), 1..5)) {
        if let Some(v) = decode(&mutate(p.to_string().into_bytes(), &muts)) {
            check_parsed(&parse_pod(&v, NODE));
        }
    }

    /// A list page yields exactly its pods and its metadata in any chunking, however odd
    /// the strings inside; a corrupted page never panics and yields no more items than
    /// it has objects.
    #[test]
    fn props_page_any_chunking(
        pods in proptest::collection::vec(pod(), 0..5),
        meta in json_value(),
        chunk in prop_oneof![1..4usize, 1..4096usize],
        muts in proptest::collection::vec(mutation(), 1..4),
    ) {
        let page = json!({
            "kind": "PodList", "apiVersion": "v1", "extra": meta,
            "metadata": {"resourceVersion": "77", "continue": "]}{\"["},
            "items": pods,
        }).to_string();
        let (items, rv) = read_page(page.as_bytes(), chunk);
        let want: Vec<Option<Value>> = pods.iter().map(|p| decode(p.to_string().as_bytes())).collect();
        prop_assert_eq!(items, want);
        prop_assert_eq!(rv.as_deref(), Some("77"));
        let bad = mutate(page.into_bytes(), &muts);
        let (items, _) = read_page(&bad, chunk);
        let objects = bad.iter().filter(|b| **b == b'{').count();
        prop_assert!(items.len() <= objects, "{} items of {} objects", items.len(), objects);
    }

    /// Watch event lines: the event types the API sends decode to what they carry;
    /// mutated lines fail to decode or decode, never panic.
    #[test]
    fn props_watch_event_lines(
        p in pod(),
        kind in prop_oneof![Just("ADDED"), Just("MODIFIED"), Just("DELETED")],
        muts in proptest::collection::vec(mutation(), 1..4),
    ) {
        let line = json!({"type": kind, "object": p}).to_string();
        let ev: WatchEvent<RawPod> = serde_json::from_str(&line).unwrap();
        let got = match ev {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => o.to_value(),
            other => panic!("{other:?}"),
        };
        prop_assert_eq!(parse_pod(&got, NODE), parse_pod(&p, NODE));
        let bad = mutate(line.into_bytes(), &muts);
        if let Ok(WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o)) =
            serde_json::from_slice::<WatchEvent<RawPod>>(&bad)
        {
            check_parsed(&parse_pod(&o.to_value(), NODE));
        }
    }

    /// BlockAffinity and Node objects of any shape: never a panic, lists bounded, names
    /// sane, CIDRs network addresses.
    #[test]
    fn props_blocks_and_nodes_hostile(
        v in json_value(),
        node in "[a-z-]{0,300}",
        cidr in prop_oneof![hostile_string(), (ip(), 0..=130u8).prop_map(|(ip, l)| format!("{ip}/{l}"))],
        addrs in proptest::collection::vec((prop_oneof![Just("InternalIP".to_owned()), hostile_string()], ip()), 0..20),
        cidrs in proptest::collection::vec(hostile_string(), 0..20),
    ) {
        let ba = json!({"metadata": {"name": node}, "spec": {"node": node, "cidr": cidr, "state": "confirmed", "x": v}});
        if let Some(b) = blocks::block_affinity(&ba) {
            prop_assert!(!b.node.is_empty() && b.node.len() <= 253);
            prop_assert_eq!(b.cidr, b.cidr.trunc());
        }
        let _ = blocks::block_affinity(&v);
        prop_assert!(blocks::name(&ba).is_none_or(|n| n.len() <= 253));
        let addresses: Vec<Value> = addrs.iter().map(|(t, ip)| json!({"type": t, "address": ip.to_string()})).collect();
        let mut n = Map::new();
        n.insert("metadata".into(), json!({"annotations": {"projectcalico.org/IPv4Address": cidr, "projectcalico.org/IPv4VXLANTunnelAddr": node}}));
        n.insert("status".into(), json!({"addresses": addresses}));
        n.insert("spec".into(), json!({"podCIDRs": cidrs, "podCIDR": v}));
        for obj in [Value::Object(n), v] {
            let info = blocks::node(&obj);
            prop_assert!(info.peer.addresses.len() <= 8 && info.peer.tunnels.len() <= 8);
            prop_assert!(info.pod_cidrs.len() <= 8);
        }
    }
}

/// A pod named beyond the API server's limits is malformed, not a 20 kB metric label.
#[test]
fn overlong_names_are_malformed() {
    let p = |name: &str, ns: &str| json!({"metadata": {"name": name, "namespace": ns}, "spec": {"nodeName": NODE}});
    assert!(parse_pod(&p(&"a".repeat(MAX_NAME), &"b".repeat(MAX_NAMESPACE)), NODE).is_ok());
    for (n, ns) in [(MAX_NAME + 1, 1), (1, MAX_NAMESPACE + 1), (0, 1), (1, 0)] {
        let r = parse_pod(&p(&"a".repeat(n), &"b".repeat(ns)), NODE);
        assert!(matches!(r, Err(Skip::Malformed(_))), "{n} {ns}: {r:?}");
    }
}

/// A pod whose `status.podIP` is a megabyte of text is skipped with a short reason: the
/// reason is logged, and quoting it whole made one log line as big as the field.
#[test]
fn a_huge_pod_ip_is_quoted_short_and_escaped() {
    let p = json!({"metadata": {"name": "a", "namespace": "b"}, "spec": {"nodeName": NODE},
                   "status": {"podIP": format!("\n\"{}", "x".repeat(1 << 20))}});
    let Err(Skip::Malformed(why)) = parse_pod(&p, NODE) else {
        panic!("not malformed")
    };
    assert!(why.len() < 200, "{} bytes", why.len());
    assert!(
        why.contains("\\n\\\"xxx") && why.ends_with("…', not an IP"),
        "{why}"
    );
}
