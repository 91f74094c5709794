//! The pods podnet expects on this node, and how to learn them from the node alone.

use std::net::IpAddr;

use serde::Serialize;

use crate::host::HostState;

/// A pod's identity. Both fields are empty when the pod was found from its interface alone
/// (node mode), where no API tells us its name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PodId {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    #[serde(rename = "pod")]
    pub name: String,
}

/// A pod that should be wired on this node: its host-side interface and its IPs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedPod {
    /// Who it is.
    #[serde(flatten)]
    pub id: PodId,
    /// Host-side interface that must carry its routes (`cali…`).
    pub interface: String,
    /// Its IPs (at most one per family in practice), sorted.
    pub ips: Vec<IpAddr>,
}

/// Node mode: every veth whose name starts with `prefix` and whose peer lives in another
/// network namespace is a local pod, with the global addresses of that peer as its IPs.
/// Sorted by interface name.
pub fn discover_from_links(host: &HostState, prefix: &str) -> Vec<ExpectedPod> {
    let mut pods: Vec<ExpectedPod> = host
        .links()
        .filter(|l| l.name.starts_with(prefix) && l.is_veth_to_other_netns())
        .map(|l| {
            let mut ips: Vec<IpAddr> = l
                .peer_netnsid
                .and_then(|ns| host.peer_addresses(ns))
                .unwrap_or_default()
                .iter()
                .filter(|a| Some(a.index) == l.peer_index && a.is_global())
                .map(|a| a.ip)
                .collect();
            ips.sort();
            ips.dedup();
            ExpectedPod {
                id: PodId::default(),
                interface: l.name.clone(),
                ips,
            }
        })
        .collect();
    pods.sort_by(|a, b| a.interface.cmp(&b.interface));
    pods
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{Address, HostDump, Link, OperState, SCOPE_LINK};

    fn link(index: u32, name: &str, kind: &str, nsid: Option<i32>) -> Link {
        Link {
            index,
            name: name.into(),
            kind: Some(kind.into()),
            admin_up: true,
            oper: OperState::Up,
            peer_netnsid: nsid,
            peer_index: nsid.map(|_| 2),
        }
    }

    fn addr(index: u32, ip: &str, scope: u8) -> Address {
        Address {
            index,
            ip: ip.parse().unwrap(),
            prefix_len: 32,
            scope,
        }
    }

    #[test]
    fn finds_prefixed_veths_with_peer_ips() {
        let dump = HostDump {
            links: vec![
                link(1, "lo", "loopback", None),
                link(5, "calib", "veth", Some(1)),
                link(6, "calia", "veth", Some(2)),
                // A cali veth whose peer is in our own namespace is not a pod.
                link(7, "calic", "veth", None),
                // Prefix matches, but not a veth (Calico's VXLAN device is named differently
                // anyway; this guards against e.g. a bridge called cali-br).
                link(8, "cali-br", "bridge", Some(3)),
                link(9, "eni123", "veth", Some(4)),
            ],
            ..HostDump::default()
        };
        let mut host = HostState::from_dump(dump, Default::default());
        host.set_peer_addresses(
            1,
            vec![
                addr(2, "10.244.0.5", 0),
                addr(2, "fd00::5", 0),
                addr(2, "fe80::1", SCOPE_LINK),
                addr(1, "127.0.0.1", 254),
                // Another interface in the same pod namespace.
                addr(3, "10.9.9.9", 0),
            ],
        );
        let pods = discover_from_links(&host, "cali");
        let names: Vec<_> = pods.iter().map(|p| p.interface.as_str()).collect();
        assert_eq!(names, ["calia", "calib"]);
        assert!(pods[0].ips.is_empty(), "addresses of nsid 2 not read yet");
        let ips: Vec<String> = pods[1].ips.iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["10.244.0.5", "fd00::5"]);
        assert!(pods.iter().all(|p| p.id == PodId::default()));
        assert_eq!(discover_from_links(&host, "eni").len(), 1);
    }
}
