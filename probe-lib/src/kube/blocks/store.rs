//! The watched objects as last seen (both kinds, compact, node names interned) and the
//! [`BlockMap`] published from them.

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde_json::Value;
use tracing::warn;

use super::parse::NodeInfo;
use super::*;
use crate::model::{BlockMap, NodeName, RemoteBlock};

/// Both kinds' objects, as last seen: compact, as the budget is < 2 MiB at 5,000
/// blocks (`podnet-bench blocks`).
#[derive(Debug, Default)]
pub(super) struct Stores {
    /// BlockAffinities by a 64-bit hash of their name (deletes carry the name; the name
    /// itself, ~35 bytes, is not kept).
    pub(super) blocks: BTreeMap<u64, RemoteBlock>,
    pub(super) nodes: BTreeMap<NodeName, NodeInfo>,
    /// Every node name in use, once: blocks and nodes share these.
    pub(super) names: HashSet<NodeName>,
    pub(super) blocks_synced: bool,
    pub(super) nodes_synced: bool,
}

impl Stores {
    /// The shared copy of `name`.
    pub(super) fn intern(&mut self, name: &str) -> NodeName {
        if let Some(n) = self.names.get(name) {
            return Arc::clone(n);
        }
        let n: NodeName = name.into();
        if self.names.len() < 2 * MAX_OBJECTS {
            self.names.insert(Arc::clone(&n));
        }
        n
    }

    /// Drop names no block or node (or published map) uses any more.
    pub(super) fn forget_unused_names(&mut self) {
        self.names.retain(|n| Arc::strong_count(n) > 1);
    }
}

/// The key a BlockAffinity is kept under.
pub(super) fn name_key(name: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

/// Store (or remove) one object; whether anything changed.
pub(super) fn apply(s: &mut Stores, kind: Kind, value: &Value, added: bool) -> bool {
    let Some(name) = parse::name(value) else {
        return false;
    };
    match kind {
        Kind::BlockAffinity => {
            let block = added.then(|| parse::block_affinity(value)).flatten();
            let block = block.map(|b| RemoteBlock {
                node: s.intern(&b.node),
                cidr: b.cidr,
            });
            upsert(&mut s.blocks, name_key(name), block)
        }
        Kind::Node => {
            let name = s.intern(name);
            upsert(&mut s.nodes, name, added.then(|| parse::node(value)))
        }
    }
}

pub(super) fn upsert<K: Ord, T: PartialEq>(
    map: &mut BTreeMap<K, T>,
    name: K,
    v: Option<T>,
) -> bool {
    match v {
        Some(v) if map.get(&name) == Some(&v) => false,
        Some(v) if map.len() < MAX_OBJECTS || map.contains_key(&name) => {
            map.insert(name, v);
            true
        }
        Some(_) => {
            warn!(limit = MAX_OBJECTS, "too many objects; ignoring the rest");
            false
        }
        None => map.remove(&name).is_some(),
    }
}

/// The published map: Calico's blocks (or the nodes' pod CIDRs) and every node's addresses.
/// With Calico IPAM the nodes' `podCIDRs` are not what Calico routes, and are ignored.
pub(super) fn block_map(s: &Stores, source: BlockSource) -> BlockMap {
    let mut blocks: Vec<RemoteBlock> = s.blocks.values().cloned().collect();
    let cidr_nodes = s.nodes.iter().filter(|_| source == BlockSource::PodCidrs);
    for (name, n) in cidr_nodes {
        blocks.extend(n.pod_cidrs.iter().map(|c| RemoteBlock {
            cidr: *c,
            node: name.clone(),
        }));
    }
    blocks.sort();
    blocks.dedup();
    BlockMap {
        blocks,
        nodes: s
            .nodes
            .iter()
            .map(|(k, v)| (k.clone(), v.peer.clone()))
            .collect(),
        synced: s.blocks_synced && s.nodes_synced,
    }
}
