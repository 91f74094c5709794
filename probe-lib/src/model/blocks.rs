//! The other nodes' pod address blocks and the addresses that lead to them, as the cluster
//! describes them (Calico IPAM `BlockAffinity` objects and node addresses, or
//! `Node.spec.podCIDRs`). Written by the Kubernetes source, judged by the verdict engine.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Serialize, Serializer};

/// A node's name, shared by its blocks and its entry in the node map (interned: at 5,000
/// blocks one copy per node, not per block).
pub type NodeName = Arc<str>;

pub(super) fn name_str<S: Serializer>(n: &NodeName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(n)
}

fn nodes_map<S: Serializer>(m: &BTreeMap<NodeName, PeerNode>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(m.iter().map(|(k, v)| (&**k, v)))
}

/// One pod address block affine to one node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RemoteBlock {
    /// The block (`spec.cidr`), truncated to its network.
    pub cidr: IpNet,
    /// The node it belongs to (`spec.node`).
    #[serde(serialize_with = "name_str")]
    pub node: NodeName,
}

/// Where traffic for one node's blocks may go: the next hops a correct route names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeerNode {
    /// The node's own addresses (`status.addresses` `InternalIP`, Calico's
    /// `projectcalico.org/IPv4Address` / `IPv6Address` annotations without the prefix length).
    pub addresses: Vec<IpAddr>,
    /// Its tunnel addresses (`projectcalico.org/IPv4VXLANTunnelAddr`,
    /// `IPv6VXLANTunnelAddr`, `IPv4IPIPTunnelAddr`): the gateway of a route over
    /// `vxlan.calico`.
    pub tunnels: Vec<IpAddr>,
}

impl PeerNode {
    /// Whether `ip` is one of this node's addresses or tunnel addresses.
    pub fn owns(&self, ip: IpAddr) -> bool {
        self.addresses.contains(&ip) || self.tunnels.contains(&ip)
    }
}

/// The cluster's blocks and nodes, as last listed and watched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BlockMap {
    /// Every block with its node (this node's blocks too: they are recognized, not judged).
    pub blocks: Vec<RemoteBlock>,
    /// Node name → its addresses.
    #[serde(serialize_with = "nodes_map")]
    pub nodes: BTreeMap<NodeName, PeerNode>,
    /// Whether a first list of both kinds completed; before that nothing is judged.
    pub synced: bool,
}
