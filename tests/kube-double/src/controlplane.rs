//! Builders of the objects the control-plane check reads, shaped as a real cluster serves
//! them: an APIService backed by a Service (metrics-server's), Validating/Mutating webhook
//! configurations, a CRD with a conversion webhook, a Service, its EndpointSlice
//! (`kubernetes.io/service-name` label, named ports) and the kube-apiserver mirror pod.

use serde_json::{Value, json};

use crate::pod::{CREATION_TIMESTAMP, uid_for};

fn meta(kind: &str, namespace: Option<&str>, name: &str) -> Value {
    let mut m = json!({
        "name": name,
        "uid": uid_for(&format!("{kind}/{}/{name}", namespace.unwrap_or(""))),
        "creationTimestamp": CREATION_TIMESTAMP,
    });
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

/// APIService `name` (`v1beta1.metrics.k8s.io`) served by Service `ns/svc` on port 443, with
/// an `Available` condition (`None`: no status yet).
pub fn apiservice(name: &str, ns: &str, svc: &str, available: Option<(bool, &str)>) -> Value {
    let (version, group) = name.split_once('.').unwrap_or((name, ""));
    let mut obj = json!({
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": meta("apiservice", None, name),
        "spec": {
            "group": group, "version": version,
            "service": {"namespace": ns, "name": svc, "port": 443},
            "insecureSkipTLSVerify": true,
            "groupPriorityMinimum": 100, "versionPriority": 100
        }
    });
    if let Some((ok, reason)) = available {
        obj["status"] = json!({"conditions": [{
            "type": "Available",
            "status": if ok { "True" } else { "False" },
            "lastTransitionTime": CREATION_TIMESTAMP,
            "reason": reason,
            "message": if ok { "all checks passed".to_owned() } else {
                format!("failing or missing response from https://{svc}.{ns}.svc:443/apis/{group}/{version}: context deadline exceeded")
            }
        }]});
    }
    obj
}

/// A `ValidatingWebhookConfiguration` (`validating: true`) or `MutatingWebhookConfiguration`
/// `name` with `hooks` webhooks, all calling Service `ns/svc` on `port`.
pub fn webhook_configuration(
    validating: bool,
    name: &str,
    ns: &str,
    svc: &str,
    port: u16,
    hooks: usize,
) -> Value {
    let kind = if validating {
        "ValidatingWebhookConfiguration"
    } else {
        "MutatingWebhookConfiguration"
    };
    let webhooks: Vec<Value> = (0..hooks)
        .map(|i| {
            json!({
                "name": format!("hook-{i}.{name}.example.com"),
                "clientConfig": {
                    "service": {"namespace": ns, "name": svc, "path": format!("/validate-{i}"), "port": port},
                    "caBundle": "LS0tLS1CRUdJTi0tLS0tCg=="
                },
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "*"}],
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10
            })
        })
        .collect();
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": meta(kind, None, name),
        "webhooks": webhooks
    })
}

/// A CRD `name` (`<plural>.<group>`) whose conversion webhook is Service `ns/svc` on `port`.
pub fn crd_with_conversion(name: &str, ns: &str, svc: &str, port: u16) -> Value {
    let (plural, group) = name.split_once('.').unwrap_or((name, "example.com"));
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": meta("crd", None, name),
        "spec": {
            "group": group,
            "names": {"plural": plural, "kind": "Thing", "listKind": "ThingList", "singular": "thing"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
            "conversion": {"strategy": "Webhook", "webhook": {
                "clientConfig": {"service": {"namespace": ns, "name": svc, "path": "/convert", "port": port}},
                "conversionReviewVersions": ["v1"]
            }}
        }
    })
}

/// A ClusterIP Service `ns/name` with one port `port` named `port_name` → `target_port`.
pub fn service(
    ns: &str,
    name: &str,
    cluster_ip: &str,
    port: u16,
    port_name: &str,
    target_port: u16,
) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("service", Some(ns), name),
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ipFamilies": ["IPv4"],
            "ports": [{"name": port_name, "port": port, "protocol": "TCP", "targetPort": target_port}],
            "selector": {"k8s-app": name},
            "sessionAffinity": "None"
        },
        "status": {"loadBalancer": {}}
    })
}

/// The EndpointSlice of Service `ns/svc`: `endpoints` as `(IPv4, ready)` on `port` named
/// `port_name`.
pub fn endpoint_slice(
    ns: &str,
    svc: &str,
    port_name: &str,
    port: u16,
    endpoints: &[(&str, bool)],
) -> Value {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(ip, ready)| {
            json!({
                "addresses": [ip],
                "conditions": {"ready": ready, "serving": ready, "terminating": false},
                "nodeName": "sim-node"
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{svc}-abcde"),
            "namespace": ns,
            "uid": uid_for(&format!("endpointslice/{ns}/{svc}")),
            "creationTimestamp": CREATION_TIMESTAMP,
            "labels": {
                "kubernetes.io/service-name": svc,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"
            },
            "generateName": format!("{svc}-")
        },
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]
    })
}

/// The kube-apiserver mirror pod of `node` (`kube-system/kube-apiserver-<node>`, host
/// network, label `component=kube-apiserver`), with `extra_flags` on its command line.
pub fn apiserver_mirror_pod(node: &str, node_ip: &str, extra_flags: &[&str]) -> Value {
    let mut command = vec![
        "kube-apiserver".to_owned(),
        format!("--advertise-address={node_ip}"),
        "--secure-port=6443".to_owned(),
        "--service-cluster-ip-range=10.96.0.0/12".to_owned(),
    ];
    command.extend(extra_flags.iter().map(|f| (*f).to_owned()));
    let name = format!("kube-apiserver-{node}");
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "kube-system",
            "uid": uid_for(&format!("pod/kube-system/{name}")),
            "creationTimestamp": CREATION_TIMESTAMP,
            "labels": {"component": "kube-apiserver", "tier": "control-plane"},
            "annotations": {"kubernetes.io/config.source": "file", "kubernetes.io/config.mirror": "0123456789abcdef"}
        },
        "spec": {
            "nodeName": node,
            "hostNetwork": true,
            "priorityClassName": "system-node-critical",
            "containers": [{"name": "kube-apiserver", "image": "registry.k8s.io/kube-apiserver:v1.33.0", "command": command}]
        },
        "status": {"phase": "Running", "hostIP": node_ip, "podIP": node_ip, "podIPs": [{"ip": node_ip}]}
    })
}
