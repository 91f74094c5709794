//! Realistic Pod JSON (as kube-apiserver serves `v1.Pod`), malformed variants, and Node objects.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Value, json};

/// Creation time of every built object (fixed, so outputs are reproducible).
pub const CREATION_TIMESTAMP: &str = "2024-05-01T10:00:00Z";

/// A deterministic UUID-shaped uid for a name (FNV-1a based).
pub fn uid_for(seed: &str) -> String {
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in seed.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000000001000000000000000000013B);
    }
    let x = format!("{h:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &x[..8],
        &x[8..12],
        &x[13..16],
        &x[17..20],
        &x[20..]
    )
}

/// Builds the JSON of one Pod. Defaults: phase `Running`, no node, no IP, no labels.
#[derive(Debug, Clone)]
pub struct PodBuilder {
    namespace: String,
    name: String,
    node: Option<String>,
    host_ip: Option<IpAddr>,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
    host_network: bool,
    phase: String,
    terminating: bool,
    labels: BTreeMap<String, String>,
}

impl PodBuilder {
    /// A pod `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> Self {
        PodBuilder {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            node: None,
            host_ip: None,
            ipv4: None,
            ipv6: None,
            host_network: false,
            phase: "Running".to_owned(),
            terminating: false,
            labels: BTreeMap::new(),
        }
    }

    /// Scheduled on `node` (`spec.nodeName`).
    pub fn node(mut self, node: &str) -> Self {
        self.node = Some(node.to_owned());
        self
    }

    /// The node's address (`status.hostIP`, `status.hostIPs`).
    pub fn host_ip(mut self, ip: IpAddr) -> Self {
        self.host_ip = Some(ip);
        self
    }

    /// Its IPv4 address (first in `status.podIPs`, and `status.podIP`).
    pub fn ipv4(mut self, ip: Ipv4Addr) -> Self {
        self.ipv4 = Some(ip);
        self
    }

    /// Its IPv6 address (dual-stack: second in `status.podIPs`; alone: also `status.podIP`).
    pub fn ipv6(mut self, ip: Ipv6Addr) -> Self {
        self.ipv6 = Some(ip);
        self
    }

    /// No IP yet (a pod being created): no `podIP`/`podIPs`, phase `Pending`.
    pub fn no_ip(mut self) -> Self {
        self.ipv4 = None;
        self.ipv6 = None;
        self.phase = "Pending".to_owned();
        self
    }

    /// `spec.hostNetwork: true`: its IPs are the node's (`host_ip`), as the kubelet reports.
    pub fn host_network(mut self) -> Self {
        self.host_network = true;
        self
    }

    /// `status.phase` (`Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`).
    pub fn phase(mut self, phase: &str) -> Self {
        self.phase = phase.to_owned();
        self
    }

    /// Being deleted: `metadata.deletionTimestamp` and a grace period are set.
    pub fn terminating(mut self) -> Self {
        self.terminating = true;
        self
    }

    /// A label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// The Pod JSON. `metadata.resourceVersion` is set by the store on every write.
    pub fn build(&self) -> Value {
        let mut metadata = json!({
            "name": self.name,
            "namespace": self.namespace,
            "uid": uid_for(&format!("{}/{}", self.namespace, self.name)),
            "creationTimestamp": CREATION_TIMESTAMP,
            "labels": self.labels,
        });
        if self.terminating {
            metadata["deletionTimestamp"] = json!("2024-05-01T11:00:00Z");
            metadata["deletionGracePeriodSeconds"] = json!(30);
        }
        let mut spec = json!({
            "containers": [{
                "name": "app",
                "image": "registry.k8s.io/pause:3.10",
                "resources": {},
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent"
            }],
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "serviceAccountName": "default",
        });
        if let Some(n) = &self.node {
            spec["nodeName"] = json!(n);
        }
        if self.host_network {
            spec["hostNetwork"] = json!(true);
        }
        let mut status = json!({"phase": self.phase, "qosClass": "BestEffort"});
        if let Some(h) = self.host_ip {
            status["hostIP"] = json!(h.to_string());
            status["hostIPs"] = json!([{"ip": h.to_string()}]);
        }
        let ips: Vec<String> = if self.host_network {
            self.host_ip.iter().map(IpAddr::to_string).collect()
        } else {
            self.ipv4
                .map(|i| i.to_string())
                .into_iter()
                .chain(self.ipv6.map(|i| i.to_string()))
                .collect()
        };
        if let Some(first) = ips.first() {
            status["podIP"] = json!(first);
            status["podIPs"] = json!(ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>());
            status["startTime"] = json!(CREATION_TIMESTAMP);
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status})
    }
}

/// Malformed pods, for the agent's "skip with a warning" path.
pub mod malformed {
    use super::*;

    /// A pod whose `status.podIPs` is a string instead of a list.
    pub fn pod_ips_string(namespace: &str, name: &str, node: &str) -> Value {
        let mut p = PodBuilder::new(namespace, name)
            .node(node)
            .ipv4(Ipv4Addr::new(10, 99, 0, 1))
            .build();
        p["status"]["podIPs"] = json!("10.99.0.1");
        p
    }

    /// A pod whose metadata has no name.
    pub fn nameless(namespace: &str, node: &str) -> Value {
        let mut p = PodBuilder::new(namespace, "x")
            .node(node)
            .ipv4(Ipv4Addr::new(10, 99, 0, 2))
            .build();
        if let Some(m) = p["metadata"].as_object_mut() {
            m.remove("name");
        }
        p
    }

    /// A pod whose `status.podIP` is not an IP address.
    pub fn bad_pod_ip(namespace: &str, name: &str, node: &str) -> Value {
        let mut p = PodBuilder::new(namespace, name).node(node).build();
        p["status"]["podIP"] = json!("not-an-ip");
        p["status"]["podIPs"] = json!([{"ip": "not-an-ip"}]);
        p
    }
}

/// `count` running pods spread round-robin over `nodes` nodes named `node-<i>` (host IP
/// 192.168.x.y), with unique IPv4 addresses in 10.128.0.0/9 (every tenth also IPv6), in
/// namespaces `ns-<i % 20>`, labelled `app=app-<i % 7>`. Fast: each is a patched copy of one
/// built pod.
pub fn numbered_pods(count: usize, nodes: usize) -> impl Iterator<Item = Value> {
    let nodes = nodes.max(1);
    let template = PodBuilder::new("ns", "pod")
        .node("node")
        .host_ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        .ipv4(Ipv4Addr::UNSPECIFIED)
        .label("app", "app")
        .build();
    (0..count).map(move |i| {
        let (ns, name) = (format!("ns-{}", i % 20), format!("pod-{i}"));
        let host = Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 0, 0)) + (i % nodes) as u32);
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + i as u32 + 1);
        let mut p = template.clone();
        p["metadata"]["uid"] = json!(uid_for(&format!("{ns}/{name}")));
        p["metadata"]["labels"]["app"] = json!(format!("app-{}", i % 7));
        p["metadata"]["namespace"] = json!(ns);
        p["metadata"]["name"] = json!(name);
        p["spec"]["nodeName"] = json!(format!("node-{}", i % nodes));
        p["status"]["hostIP"] = json!(host.to_string());
        p["status"]["hostIPs"] = json!([{"ip": host.to_string()}]);
        p["status"]["podIP"] = json!(ip.to_string());
        let mut ips = vec![json!({"ip": ip.to_string()})];
        if i % 10 == 0 {
            let v6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, (i >> 16) as u16, i as u16);
            ips.push(json!({"ip": v6.to_string()}));
        }
        p["status"]["podIPs"] = Value::Array(ips);
        p
    })
}

/// A minimal `v1.Node`.
pub(crate) fn node_object(name: &str, revision: u64) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": uid_for(&format!("node/{name}")),
            "resourceVersion": revision.to_string(),
            "creationTimestamp": CREATION_TIMESTAMP,
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
        },
        "spec": {},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "nodeInfo": {"kubeletVersion": "v1.33.0", "operatingSystem": "linux", "architecture": "amd64"}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_pods_look_real() {
        let p = PodBuilder::new("shop", "web-0")
            .node("n1")
            .host_ip("192.0.2.10".parse().unwrap())
            .ipv4(Ipv4Addr::new(10, 244, 0, 5))
            .ipv6("fd00::5".parse().unwrap())
            .label("app", "web")
            .build();
        assert_eq!(p["spec"]["nodeName"], "n1");
        assert_eq!(p["status"]["podIP"], "10.244.0.5");
        assert_eq!(
            p["status"]["podIPs"],
            json!([{"ip": "10.244.0.5"}, {"ip": "fd00::5"}])
        );
        assert_eq!(p["metadata"]["uid"].as_str().unwrap().len(), 36);
        let pending = PodBuilder::new("a", "b")
            .ipv4(Ipv4Addr::LOCALHOST)
            .no_ip()
            .build();
        assert_eq!(
            pending["status"],
            json!({"phase": "Pending", "qosClass": "BestEffort"})
        );
        let hn = PodBuilder::new("a", "h")
            .host_ip("192.0.2.10".parse().unwrap())
            .host_network()
            .terminating()
            .build();
        assert_eq!(hn["status"]["podIP"], "192.0.2.10");
        assert_eq!(hn["spec"]["hostNetwork"], true);
        assert!(hn["metadata"]["deletionTimestamp"].is_string());
        assert!(
            malformed::nameless("a", "n")
                .pointer("/metadata/name")
                .is_none()
        );
        assert!(malformed::pod_ips_string("a", "b", "n")["status"]["podIPs"].is_string());
        let many: Vec<_> = numbered_pods(30, 3).collect();
        let built = PodBuilder::new("ns-4", "pod-4")
            .node("node-1")
            .host_ip("192.168.0.1".parse().unwrap())
            .ipv4(Ipv4Addr::new(10, 128, 0, 5))
            .label("app", "app-4")
            .build();
        assert_eq!(many[4], built);
        assert_eq!(many[10]["status"]["podIPs"].as_array().unwrap().len(), 2);
    }
}
