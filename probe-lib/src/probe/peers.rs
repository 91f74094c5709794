//! Which other nodes a round probes: a rotating sample of k. Pure.
//!
//! The peers are ordered by a hash of this node's name and theirs (a per-node shuffle, so
//! the nodes of a cluster do not all probe the same peers at once), and each round takes the
//! next k of that cyclic order: with a stable node list every peer is probed once every
//! ⌈n/k⌉ rounds, and a round costs k probes whatever the cluster's size.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;

use crate::model::{BlockMap, MAX_PEERS, NodeName, PeerNode};

/// The address a peer is probed at: its Calico tunnel address (VXLAN or IPIP, the pod
/// network's side of the node) when it has one, else its node address; IPv4 first.
pub fn peer_address(node: &PeerNode) -> Option<IpAddr> {
    let v4_first = |list: &[IpAddr]| {
        list.iter()
            .find(|ip| ip.is_ipv4())
            .or_else(|| list.first())
            .copied()
    };
    v4_first(&node.tunnels).or_else(|| v4_first(&node.addresses))
}

/// The peers of `local` in the node list, in this node's rotation order, at most
/// [`MAX_PEERS`]; and how many were left out (beyond the bound, or without an address).
pub fn peer_order(local: &str, map: &BlockMap) -> (Vec<(NodeName, IpAddr)>, usize) {
    let seed = key(0, local);
    let mut ignored = 0;
    let mut peers: Vec<(u64, NodeName, IpAddr)> = Vec::new();
    for (name, node) in map.nodes.iter().filter(|(n, _)| &***n != local) {
        match peer_address(node) {
            Some(ip) => peers.push((key(seed, name), name.clone(), ip)),
            None => ignored += 1,
        }
    }
    peers.sort_unstable();
    ignored += peers.len().saturating_sub(MAX_PEERS);
    peers.truncate(MAX_PEERS);
    let order = peers.into_iter().map(|(_, n, ip)| (n, ip)).collect();
    (order, ignored)
}

fn key(seed: u64, name: &str) -> u64 {
    let mut h = DefaultHasher::new();
    (seed, name).hash(&mut h);
    h.finish()
}

/// The position in the rotation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rotation {
    cursor: usize,
}

impl Rotation {
    /// The indexes (into a list of `n` peers) the next round probes: the next `k` in cyclic
    /// order, each at most once.
    pub fn next(&mut self, n: usize, k: usize) -> Vec<usize> {
        if n == 0 || k == 0 {
            return Vec::new();
        }
        let start = self.cursor % n;
        let take = k.min(n);
        self.cursor = (start + take) % n;
        (0..take).map(|i| (start + i) % n).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use proptest::prelude::*;

    use super::*;

    fn map(n: usize) -> BlockMap {
        let nodes: BTreeMap<NodeName, PeerNode> = (0..n)
            .map(|i| {
                let node = PeerNode {
                    addresses: vec![IpAddr::from([192, 0, 2, (i % 250) as u8])],
                    tunnels: Vec::new(),
                };
                (NodeName::from(format!("node-{i}")), node)
            })
            .collect();
        BlockMap {
            nodes,
            ..BlockMap::default()
        }
    }

    #[test]
    fn tunnel_address_first_ipv4_first() {
        let v6: IpAddr = "2001:db8::2".parse().unwrap();
        let v4: IpAddr = "192.0.2.2".parse().unwrap();
        let tun: IpAddr = "10.244.1.0".parse().unwrap();
        let n = |addresses: Vec<IpAddr>, tunnels: Vec<IpAddr>| PeerNode { addresses, tunnels };
        assert_eq!(peer_address(&n(vec![v4], vec![tun])), Some(tun));
        assert_eq!(peer_address(&n(vec![v6, v4], vec![])), Some(v4));
        assert_eq!(peer_address(&n(vec![v6], vec![])), Some(v6));
        assert_eq!(peer_address(&n(vec![], vec![])), None);
    }

    #[test]
    fn order_excludes_this_node_and_differs_per_node() {
        let m = map(50);
        let (a, ignored) = peer_order("node-3", &m);
        assert_eq!((a.len(), ignored), (49, 0));
        assert!(a.iter().all(|(n, _)| &**n != "node-3"));
        let (b, _) = peer_order("node-4", &m);
        let names = |v: &[(NodeName, IpAddr)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_ne!(
            names(&a)[..8],
            names(&b)[..8],
            "two nodes start on the same peers"
        );
        // Stable: the same node orders the same list the same way.
        assert_eq!(peer_order("node-3", &m).0, a);
        let mut m = m;
        m.nodes.insert("no-address".into(), PeerNode::default());
        assert_eq!(peer_order("node-3", &m).1, 1);
    }

    #[test]
    fn the_node_list_is_bounded() {
        let (order, ignored) = peer_order("x", &map(MAX_PEERS + 5));
        assert_eq!((order.len(), ignored), (MAX_PEERS, 5));
    }

    proptest! {
        /// With a stable list, any ⌈n/k⌉ consecutive rounds cover every peer, and no round
        /// probes more than k or one peer twice.
        #[test]
        fn every_peer_within_a_rotation(n in 0usize..300, k in 1usize..20, skip in 0usize..50) {
            let mut r = Rotation::default();
            for _ in 0..skip {
                r.next(n, k);
            }
            let mut seen = HashSet::new();
            for _ in 0..n.div_ceil(k) {
                let round = r.next(n, k);
                prop_assert!(round.len() <= k);
                let distinct: HashSet<_> = round.iter().collect();
                prop_assert_eq!(distinct.len(), round.len());
                seen.extend(round);
            }
            prop_assert_eq!(seen.len(), n);
        }
    }

    #[test]
    fn k_zero_or_no_peers_probes_nothing() {
        let mut r = Rotation::default();
        assert!(r.next(10, 0).is_empty());
        assert!(r.next(0, 8).is_empty());
        assert_eq!(r.next(3, 8), vec![0, 1, 2]);
        // The list shrank under the cursor: it wraps.
        let mut r = Rotation::default();
        r.next(10, 8);
        assert_eq!(r.next(5, 2), vec![3, 4]);
    }
}
