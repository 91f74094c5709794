use serde_json::{Map, json};

use super::*;

fn pod(status: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "shop", "uid": "u1", "resourceVersion": "7"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
        "status": status,
    })
}

#[test]
fn running_dual_stack_pod() {
    let p = parse_pod(
        &pod(json!({"phase": "Running", "podIP": "10.244.0.5",
                    "podIPs": [{"ip": "fd00::5"}, {"ip": "10.244.0.5"}]})),
        "n1",
    )
    .unwrap();
    assert_eq!(
        (p.namespace.as_str(), p.name.as_str(), p.uid.as_str()),
        ("shop", "web-0", "u1")
    );
    let ips: Vec<String> = p.ips.iter().map(ToString::to_string).collect();
    assert_eq!(ips, ["10.244.0.5", "fd00::5"]);
    assert!(!p.terminating);
}

#[test]
fn pending_pod_without_ip_and_legacy_pod_ip() {
    assert!(
        parse_pod(&pod(json!({"phase": "Pending"})), "n1")
            .unwrap()
            .ips
            .is_empty()
    );
    assert!(
        parse_pod(&pod(json!({"podIP": ""})), "n1")
            .unwrap()
            .ips
            .is_empty()
    );
    let p = parse_pod(&pod(json!({"podIP": "10.244.0.9"})), "n1").unwrap();
    assert_eq!(p.ips, vec!["10.244.0.9".parse::<IpAddr>().unwrap()]);
    let mut no_status = pod(json!(null));
    no_status.as_object_mut().unwrap().remove("status");
    assert!(parse_pod(&no_status, "n1").unwrap().ips.is_empty());
}

#[test]
fn skipped_pods() {
    assert_eq!(parse_pod(&pod(json!({})), "other"), Err(Skip::OtherNode));
    let mut hn = pod(json!({"podIP": "192.0.2.10"}));
    hn["spec"]["hostNetwork"] = json!(true);
    assert_eq!(parse_pod(&hn, "n1"), Err(Skip::HostNetwork));
    assert_eq!(
        parse_pod(&pod(json!({"phase": "Succeeded"})), "n1"),
        Err(Skip::Finished)
    );
    let mut t = pod(json!({"podIP": "10.244.0.5"}));
    t["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    assert!(parse_pod(&t, "n1").unwrap().terminating);
}

/// Through serde's minimal struct, as the watcher reads pods: same answers as the JSON.
fn via_raw(v: &Value) -> Result<KubePod, Skip> {
    let raw: RawPod = serde_json::from_str(&v.to_string()).expect("lenient decode");
    parse_pod(&raw.to_value(), "n1")
}

#[test]
fn the_minimal_struct_keeps_what_podnet_reads_and_drops_the_rest() {
    let mut fat = pod(json!({"phase": "Running", "podIPs": [{"ip": "10.244.0.5"}]}));
    fat["metadata"]["annotations"] = json!({"big": "x".repeat(100_000)});
    fat["spec"]["containers"] = json!([{"name": "c", "env": [{"name": "A", "value": "b"}]}]);
    let raw: RawPod = serde_json::from_str(&fat.to_string()).unwrap();
    assert!(raw.to_value().to_string().len() < 400, "{}", raw.to_value());
    assert_eq!(raw.resource_version(), Some("7"));
    assert_eq!(via_raw(&fat), parse_pod(&fat, "n1"));
    assert_eq!(
        via_raw(&fat).unwrap().ips,
        vec!["10.244.0.5".parse::<IpAddr>().unwrap()]
    );
    let mut t = fat.clone();
    t["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    assert!(via_raw(&t).unwrap().terminating);
    assert_eq!(
        via_raw(&pod(json!({"phase": "Failed"}))),
        Err(Skip::Finished)
    );
}

#[test]
fn labels_and_probe_annotations_are_kept_within_bounds() {
    let mut p = pod(json!({"podIP": "10.244.0.5"}));
    p["metadata"]["labels"] = json!({"app": "web", "podnet.io/probes": "false"});
    p["metadata"]["annotations"] = json!({
        "podnet.io/skip-probes": "node,dns",
        "other": "x".repeat(100_000),
    });
    let m = via_raw(&p).unwrap().meta;
    assert_eq!(m.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(m.skip_probes.as_deref(), Some("node,dns"));
    assert_eq!((m.probes, m.truncated), (None, false));
    assert_eq!(parse_pod(&p, "n1").unwrap().meta, via_raw(&p).unwrap().meta);

    // Too many labels, an over-long value, a non-string annotation: kept within bounds,
    // marked truncated, never an error; the raw form stays small.
    let many: Map<String, Value> = (0..10_000)
        .map(|i| (format!("k{i:05}"), json!("v")))
        .collect();
    p["metadata"]["labels"] = Value::Object(many);
    p["metadata"]["annotations"] = json!({"podnet.io/probes": "f".repeat(10_000),
                                          "podnet.io/skip-probes": {"a": [1]}});
    let raw: RawPod = serde_json::from_str(&p.to_string()).unwrap();
    assert!(
        raw.to_value().to_string().len() < 2_000,
        "{}",
        raw.to_value()
    );
    let m = via_raw(&p).unwrap().meta;
    assert_eq!(m.labels.len(), MAX_LABELS);
    assert!(m.truncated && m.probes.is_none() && m.skip_probes.is_none());
    let mut p = pod(json!({}));
    p["metadata"]["labels"] = json!({"a": "v".repeat(64)});
    assert!(via_raw(&p).unwrap().meta.truncated);
    p["metadata"]["labels"] = json!("not a map");
    let images = Arc::new(vec!["i".to_owned()]);
    let only_images = ProbeMeta {
        images,
        ..ProbeMeta::default()
    };
    assert_eq!(via_raw(&p).unwrap().meta, only_images);
}

#[test]
fn container_images_are_kept_within_bounds() {
    let mut p = pod(json!({"podIP": "10.244.0.5"}));
    p["spec"]["containers"] = json!([
        {"name": "proxy", "image": "kong/kong-gateway:3.6"},
        {"name": "odd", "image": 7},
        {"name": "long", "image": "r/".repeat(200)},
        {"name": "a", "image": "a"}, {"name": "b", "image": "b"},
        {"name": "c", "image": "c"}, {"name": "d", "image": "d"},
        "not a container",
    ]);
    let m = via_raw(&p).unwrap().meta;
    assert_eq!(*m.images, ["kong/kong-gateway:3.6", "a", "b", "c"]);
    assert_eq!(parse_pod(&p, "n1").unwrap().meta, m);
    p["spec"]["containers"] = json!({"not": "a list"});
    assert!(via_raw(&p).unwrap().meta.images.is_empty());
}

#[test]
fn sections_of_the_wrong_type_are_skipped_pods_not_decode_errors() {
    for (section, bad) in [
        ("metadata", json!("x")),
        ("metadata", json!([1, {"a": [2]}])),
        ("spec", json!(5)),
        ("status", json!(true)),
    ] {
        let mut p = pod(json!({"podIP": "10.244.0.5"}));
        p[section] = bad.clone();
        let got = via_raw(&p);
        assert!(got.is_err(), "{section}={bad} gave {got:?}");
    }
    // The same malformed fields the JSON parser rejects are rejected after serde.
    let p = pod(json!({"podIPs": [{"ip": "10.244.0.500"}]}));
    assert!(matches!(via_raw(&p), Err(Skip::Malformed(_))));
    let mut p = pod(json!({}));
    p["spec"]["hostNetwork"] = json!("yes");
    assert!(matches!(via_raw(&p), Err(Skip::Malformed(_))));
}

#[test]
fn malformed_objects_are_reasons_not_panics() {
    let cases = [
        pod(json!({"podIPs": "10.244.0.5"})),
        pod(json!({"podIPs": [{"address": "10.244.0.5"}]})),
        pod(json!({"podIPs": [{"ip": "10.244.0.500"}]})),
        pod(json!({"podIP": 5})),
        json!({"metadata": {"namespace": "x"}, "spec": {"nodeName": "n1"}}),
        json!({"metadata": {"name": "x"}, "spec": {"nodeName": "n1"}}),
        json!({"metadata": {"name": "x", "namespace": "y"}, "spec": {"nodeName": 3}}),
        json!({"metadata": {"name": "x", "namespace": "y"}, "spec": {"nodeName": "n1", "hostNetwork": "yes"}}),
        json!("not an object"),
        json!(null),
    ];
    for c in cases {
        match parse_pod(&c, "n1") {
            Err(Skip::Malformed(why)) => assert!(!why.is_empty()),
            other => panic!("{c} gave {other:?}"),
        }
    }
}
