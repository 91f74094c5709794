//! The few fields of a Kubernetes Pod podnet needs, read leniently from its JSON: a malformed
//! object is skipped with a reason, never a crash, and never poisons the rest of a list.

use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

/// A pod of this node, as the API describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KubePod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (distinguishes a re-created pod with the same name).
    pub uid: String,
    /// `status.podIPs` (or `status.podIP`), sorted; empty until the CNI assigned one.
    pub ips: Vec<IpAddr>,
    /// `metadata.deletionTimestamp` is set: the pod is going away.
    pub terminating: bool,
}

/// Why an object is not a pod podnet checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Malformed: logged with a warning.
    Malformed(String),
    /// On another node (a selector mismatch or a stale event).
    OtherNode,
    /// `spec.hostNetwork`: it uses the node's own network.
    HostNetwork,
    /// `status.phase` Succeeded or Failed: its sandbox and wiring are gone.
    Finished,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

/// Read a pod object. `node` is this node's name.
pub fn parse_pod(obj: &Value, node: &str) -> Result<KubePod, Skip> {
    let malformed = |why: &str| Skip::Malformed(why.to_owned());
    let name = str_at(obj, &["metadata", "name"]).ok_or_else(|| malformed("no metadata.name"))?;
    let namespace = str_at(obj, &["metadata", "namespace"])
        .ok_or_else(|| malformed("no metadata.namespace"))?;
    let uid = str_at(obj, &["metadata", "uid"]).unwrap_or_default();
    let spec = obj.get("spec");
    match spec.and_then(|s| s.get("nodeName")) {
        Some(Value::String(n)) if n == node => {}
        Some(Value::String(_)) | None | Some(Value::Null) => return Err(Skip::OtherNode),
        Some(_) => return Err(malformed("spec.nodeName is not a string")),
    }
    match spec.and_then(|s| s.get("hostNetwork")) {
        Some(Value::Bool(true)) => return Err(Skip::HostNetwork),
        None | Some(Value::Bool(false)) | Some(Value::Null) => {}
        Some(_) => return Err(malformed("spec.hostNetwork is not a boolean")),
    }
    let status = obj.get("status");
    if matches!(
        status.and_then(|s| s.get("phase")).and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    ) {
        return Err(Skip::Finished);
    }
    let mut ips = Vec::new();
    match status.and_then(|s| s.get("podIPs")) {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for entry in list {
                let ip = entry
                    .get("ip")
                    .and_then(Value::as_str)
                    .ok_or_else(|| malformed("status.podIPs entry without ip"))?;
                ips.push(
                    ip.parse::<IpAddr>()
                        .map_err(|_| malformed(&format!("status.podIPs has '{ip}', not an IP")))?,
                );
            }
        }
        Some(_) => return Err(malformed("status.podIPs is not a list")),
    }
    if ips.is_empty() {
        match status.and_then(|s| s.get("podIP")) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(Value::String(s)) => ips.push(
                s.parse()
                    .map_err(|_| malformed(&format!("status.podIP has '{s}', not an IP")))?,
            ),
            Some(_) => return Err(malformed("status.podIP is not a string")),
        }
    }
    ips.sort();
    ips.dedup();
    Ok(KubePod {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        ips,
        terminating: obj
            .get("metadata")
            .and_then(|m| m.get("deletionTimestamp"))
            .is_some_and(|v| !v.is_null()),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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
}
