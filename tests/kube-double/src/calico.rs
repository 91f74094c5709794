//! Builders of the cluster-scoped objects the remote block check reads, shaped as a real
//! cluster serves them: a Node with Calico's address annotations, and a Calico IPAM
//! `BlockAffinity` (`crd.projectcalico.org/v1`, named `<node>-<cidr with dashes>` as Calico
//! names them).

use serde_json::{Value, json};

use crate::pod::{CREATION_TIMESTAMP, uid_for};

/// A Node `name` with `InternalIP` `ip`, Calico's `projectcalico.org/IPv4Address` annotation,
/// and, if given, its VXLAN tunnel address annotation.
pub fn calico_node(name: &str, ip: &str, vxlan_tunnel: Option<&str>) -> Value {
    let mut annotations = json!({
        "node.alpha.kubernetes.io/ttl": "0",
        "projectcalico.org/IPv4Address": format!("{ip}/24"),
    });
    if let Some(t) = vxlan_tunnel {
        annotations["projectcalico.org/IPv4VXLANTunnelAddr"] = json!(t);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": uid_for(&format!("node/{name}")),
            "creationTimestamp": CREATION_TIMESTAMP,
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
            "annotations": annotations
        },
        "spec": {"podCIDR": "", "podCIDRs": []},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name}
            ],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "nodeInfo": {"kubeletVersion": "v1.33.0", "operatingSystem": "linux", "architecture": "amd64"}
        }
    })
}

/// A Node `name` known by its IPv6 address `ip` (`InternalIP` and Calico's
/// `projectcalico.org/IPv6Address` annotation, no IPv4 one).
pub fn calico_node_v6(name: &str, ip: &str) -> Value {
    let mut v = calico_node(name, ip, None);
    let a = &mut v["metadata"]["annotations"];
    if let Some(m) = a.as_object_mut() {
        m.remove("projectcalico.org/IPv4Address");
    }
    a["projectcalico.org/IPv6Address"] = json!(format!("{ip}/64"));
    v
}

/// A confirmed BlockAffinity of `cidr` to `node`.
pub fn block_affinity(node: &str, cidr: &str) -> Value {
    let name = format!("{node}-{}", cidr.replace(['.', '/', ':'], "-"));
    json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "BlockAffinity",
        "metadata": {
            "name": name,
            "uid": uid_for(&format!("blockaffinity/{name}")),
            "creationTimestamp": CREATION_TIMESTAMP,
            "annotations": {"projectcalico.org/metadata": "{}"}
        },
        "spec": {"cidr": cidr, "deleted": "false", "node": node, "state": "confirmed"}
    })
}
