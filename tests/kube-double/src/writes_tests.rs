//! Unit tests of the write routes.

use super::*;
use crate::Config;

fn shared() -> Shared {
    let s = Shared::new(Config::default());
    s.write(|st| st.register_node("n1"));
    s
}

fn patch(w: &mut Writes, s: &Shared, ct: &str, body: Value) -> Result<Value, u16> {
    w.serve(
        s,
        WriteRoute::NodeStatus("n1"),
        &Method::PATCH,
        ct,
        Some(&body),
    )
    .map(|(_, v)| v)
    .map_err(|e| e.code)
}

#[test]
fn routes() {
    assert_eq!(
        WriteRoute::parse("/api/v1/nodes/n1/status"),
        Some(WriteRoute::NodeStatus("n1"))
    );
    assert_eq!(
        WriteRoute::parse("/apis/events.k8s.io/v1/namespaces/a/events/e"),
        Some(WriteRoute::Event("a", "e"))
    );
    assert_eq!(WriteRoute::parse("/api/v1/nodes/n1"), None);
}

/// Strategic merge merges conditions by type; a JSON merge patch replaces the list (so a
/// writer using it would wipe the kubelet's conditions: the tests would see it).
#[test]
fn condition_patches_merge_by_type_or_replace() {
    let s = shared();
    let mut w = Writes::default();
    w.set_conditions("n1", vec![json!({"type": "Ready", "status": "True"})]);
    let ours = json!({"status": {"conditions": [{"type": "X", "status": "False", "reason": "A"}]}});
    patch(&mut w, &s, STRATEGIC, ours).unwrap();
    let again = json!({"status": {"conditions": [{"type": "X", "status": "True"}]}});
    let node = patch(&mut w, &s, STRATEGIC, again).unwrap();
    assert_eq!(
        node["status"]["conditions"],
        json!([{"type": "Ready", "status": "True"}, {"type": "X", "status": "True", "reason": "A"}])
    );
    let replace = json!({"status": {"conditions": [{"type": "X", "status": "True"}]}});
    patch(&mut w, &s, MERGE, replace).unwrap();
    assert_eq!(w.conditions("n1").len(), 1);
    let bad = json!({"status": {"conditions": [{"type": "X", "status": "maybe"}]}});
    assert_eq!(patch(&mut w, &s, STRATEGIC, bad), Err(422));
    assert_eq!(
        patch(&mut w, &s, "application/json", json!({})),
        Ok(w.node(&s, "n1").unwrap())
    );
    let any = json!({"status": {"conditions": []}});
    assert_eq!(patch(&mut w, &s, "application/json", any), Err(415));
    let other = w.serve(&s, WriteRoute::NodeStatus("n2"), &Method::GET, "", None);
    assert_eq!(other.unwrap_err().code, 404);
}

fn event(name: &str) -> Value {
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
           "metadata": {"name": name, "namespace": "a"},
           "eventTime": "2026-12-01T00:00:00.000000Z", "reportingController": "podnet.io/agent",
           "reportingInstance": "n1", "action": "Detected", "reason": "R", "type": "Warning",
           "note": "n", "regarding": {"kind": "Pod", "name": "p"}})
}

#[test]
fn events_are_validated_created_once_and_patched() {
    let s = shared();
    let mut w = Writes::default();
    let create = |w: &mut Writes, e: &Value| {
        w.serve(
            &s,
            WriteRoute::Events(Some("a")),
            &Method::POST,
            "application/json",
            Some(e),
        )
        .map(|(c, _)| c)
        .map_err(|e| e.code)
    };
    assert_eq!(create(&mut w, &event("e1")), Ok(201));
    assert_eq!(create(&mut w, &event("e1")), Err(409));
    let mut bad = event("e2");
    bad["type"] = json!("Error");
    assert_eq!(create(&mut w, &bad), Err(422));
    let mut long = event("e3");
    long["note"] = json!("x".repeat(1025));
    assert_eq!(create(&mut w, &long), Err(422));
    let series = |w: &mut Writes, name: &str, body: Value| {
        w.serve(
            &s,
            WriteRoute::Event("a", name),
            &Method::PATCH,
            MERGE,
            Some(&body),
        )
        .map(|(_, v)| v)
        .map_err(|e| e.code)
    };
    let ok = json!({"series": {"count": 2, "lastObservedTime": "2026-12-01T00:00:01.000000Z"}});
    assert_eq!(
        series(&mut w, "e1", ok.clone()).unwrap()["series"]["count"],
        2
    );
    assert_eq!(series(&mut w, "nope", ok), Err(404));
    assert_eq!(
        series(
            &mut w,
            "e1",
            json!({"series": {"count": 1, "lastObservedTime": "t"}})
        ),
        Err(422)
    );
    assert_eq!(series(&mut w, "e1", json!({"reason": "Other"})), Err(422));
    let list = w
        .serve(&s, WriteRoute::Events(None), &Method::GET, "", None)
        .unwrap()
        .1;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(w.events()[0]["series"]["count"], 2);
}
