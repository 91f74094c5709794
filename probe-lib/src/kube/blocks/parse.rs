//! Lenient decoding of the few fields the block check reads: a `BlockAffinity`'s node, CIDR
//! and state; a Node's addresses, Calico's address annotations and `spec.podCIDRs`. Anything
//! malformed is skipped, never fatal; every list read is bounded.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use crate::model::{PeerNode, RemoteBlock};

/// Most addresses, tunnel addresses or pod CIDRs kept per node (a real node has 1–4).
const MAX_PER_NODE: usize = 8;
/// Longest object name accepted (Kubernetes' own limit for DNS subdomains).
const MAX_NAME: usize = 253;

/// Calico's node annotations holding the node's own address (`<ip>/<len>`).
const ADDRESS_ANNOTATIONS: [&str; 2] = [
    "projectcalico.org/IPv4Address",
    "projectcalico.org/IPv6Address",
];
/// Calico's node annotations holding its tunnel addresses (a bare IP).
const TUNNEL_ANNOTATIONS: [&str; 3] = [
    "projectcalico.org/IPv4VXLANTunnelAddr",
    "projectcalico.org/IPv6VXLANTunnelAddr",
    "projectcalico.org/IPv4IPIPTunnelAddr",
];

/// What the check keeps of one Node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NodeInfo {
    /// Addresses and tunnel addresses.
    pub(crate) peer: PeerNode,
    /// `spec.podCIDRs` (or `spec.podCIDR`), for CNIs without Calico IPAM.
    pub(crate) pod_cidrs: Vec<IpNet>,
}

/// `metadata.name`, if sane.
pub(crate) fn name(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty() && n.len() <= MAX_NAME)
}

/// A confirmed, not deleted `BlockAffinity` as a block of its node.
pub(crate) fn block_affinity(obj: &Value) -> Option<RemoteBlock> {
    let spec = obj.get("spec")?;
    let state = spec
        .get("state")
        .and_then(Value::as_str)
        .unwrap_or("confirmed");
    let deleted = spec.get("deleted").and_then(Value::as_str) == Some("true");
    if state != "confirmed" || deleted {
        return None;
    }
    let node = spec
        .get("node")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty() && n.len() <= MAX_NAME)?;
    let cidr: IpNet = spec.get("cidr")?.as_str()?.parse().ok()?;
    Some(RemoteBlock {
        cidr: cidr.trunc(),
        node: node.into(),
    })
}

/// A Node's addresses (`InternalIP` and Calico's annotations), tunnel addresses and pod CIDRs.
pub(crate) fn node(obj: &Value) -> NodeInfo {
    let mut info = NodeInfo::default();
    let strs = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .take(MAX_PER_NODE)
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let annotation = |key: &str| {
        obj.pointer("/metadata/annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
    };
    let push = |list: &mut Vec<IpAddr>, ip: Option<IpAddr>| {
        if let Some(ip) = ip.filter(|ip| !list.contains(ip) && list.len() < MAX_PER_NODE) {
            list.push(ip);
        }
    };
    if let Some(addrs) = obj.pointer("/status/addresses").and_then(Value::as_array) {
        for a in addrs.iter().take(MAX_PER_NODE) {
            if a.get("type").and_then(Value::as_str) == Some("InternalIP") {
                let ip = a.get("address").and_then(Value::as_str);
                push(&mut info.peer.addresses, ip.and_then(|s| s.parse().ok()));
            }
        }
    }
    for key in ADDRESS_ANNOTATIONS {
        // `192.0.2.2/24`: the address, not its network.
        let ip = annotation(key).and_then(|s| s.split('/').next()?.parse().ok());
        push(&mut info.peer.addresses, ip);
    }
    for key in TUNNEL_ANNOTATIONS {
        push(
            &mut info.peer.tunnels,
            annotation(key).and_then(|s| s.parse().ok()),
        );
    }
    let mut cidrs = strs(obj.pointer("/spec/podCIDRs"));
    if cidrs.is_empty() {
        cidrs.extend(
            obj.pointer("/spec/podCIDR")
                .and_then(Value::as_str)
                .map(str::to_owned),
        );
    }
    info.pod_cidrs = cidrs
        .iter()
        .filter_map(|c| c.parse::<IpNet>().ok())
        .map(|c| c.trunc())
        .collect();
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn block_affinities_only_when_confirmed_and_well_formed() {
        let ba = |state: &str, cidr: &str| {
            json!({"metadata": {"name": "n-b-10-244-1-0-26"},
                   "spec": {"node": "node-b", "cidr": cidr, "state": state, "deleted": "false"}})
        };
        let b = block_affinity(&ba("confirmed", "10.244.1.3/26")).unwrap();
        assert_eq!(
            (b.cidr.to_string(), &*b.node),
            ("10.244.1.0/26".into(), "node-b")
        );
        assert!(block_affinity(&ba("pending", "10.244.1.0/26")).is_none());
        assert!(block_affinity(&ba("confirmed", "not-a-cidr")).is_none());
        assert!(block_affinity(&json!({"spec": {"cidr": "10.244.1.0/26"}})).is_none());
        assert!(block_affinity(&json!({"spec": {"node": 7, "cidr": "10.244.1.0/26"}})).is_none());
        assert!(block_affinity(&json!([1, 2])).is_none());
        let v6 = json!({"spec": {"node": "node-c", "cidr": "fd00:0:0:2::/122"}});
        assert_eq!(
            block_affinity(&v6).unwrap().cidr.to_string(),
            "fd00:0:0:2::/122"
        );
    }

    #[test]
    fn node_addresses_annotations_and_pod_cidrs() {
        let n = json!({
            "metadata": {"name": "node-b", "annotations": {
                "projectcalico.org/IPv4Address": "192.0.2.2/24",
                "projectcalico.org/IPv4VXLANTunnelAddr": "10.244.1.1",
                "projectcalico.org/IPv4IPIPTunnelAddr": "garbage"}},
            "spec": {"podCIDRs": ["10.244.1.7/24", "fd00:0:0:1::/64", 5]},
            "status": {"addresses": [
                {"type": "InternalIP", "address": "192.0.2.2"},
                {"type": "Hostname", "address": "node-b"},
                {"type": "InternalIP", "address": "2001:db8::2"}]}
        });
        let info = node(&n);
        assert_eq!(
            info.peer.addresses,
            vec![
                "192.0.2.2".parse::<IpAddr>().unwrap(),
                "2001:db8::2".parse().unwrap()
            ]
        );
        assert_eq!(
            info.peer.tunnels,
            vec!["10.244.1.1".parse::<IpAddr>().unwrap()]
        );
        let cidrs: Vec<String> = info.pod_cidrs.iter().map(ToString::to_string).collect();
        assert_eq!(cidrs, ["10.244.1.0/24", "fd00:0:0:1::/64"]);
        assert_eq!(node(&json!("x")), NodeInfo::default());
        let many: Vec<_> = (0..100)
            .map(|i| json!({"type": "InternalIP", "address": format!("192.0.2.{i}")}))
            .collect();
        let big = node(&json!({"status": {"addresses": many}}));
        assert_eq!(big.peer.addresses.len(), MAX_PER_NODE);
    }
}
