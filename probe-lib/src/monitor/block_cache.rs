//! The remote block verdicts, recomputed only when they can change: when the block map changes
//! or a route that could cover a block does. A pod route (`/32`, `/128`) coming or going —
//! the common event — cannot change which route covers a wider block, so at 5,000 remote
//! blocks the route-event → metric path does not pay for judging them again.

use std::sync::Arc;

use crate::host::HostState;
use crate::model::BlockMap;
use crate::verdict::{BlockProblem, block_problems};

/// The last judgement and what it was made from.
#[derive(Debug, Default)]
pub(super) struct BlockCache {
    /// The map judged (compared by identity: the watch publishes a new `Arc` per change; held,
    /// so its address cannot be reused by the next one), the host state's cover generation,
    /// and the state's epoch (a re-dump starts a new one).
    key: Option<(Arc<BlockMap>, u64, u64)>,
    /// The map has no block of one address (Calico's `blockSize: 32`), which host routes
    /// could cover without the generation changing; found once per map.
    cacheable: bool,
    problems: Arc<Vec<BlockProblem>>,
    checked: usize,
    /// Bumped on every re-dump: generations of different states are not comparable.
    epoch: u64,
}

impl BlockCache {
    /// The host state was replaced by a re-dump.
    pub(super) fn new_state(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// The problems of every other node's blocks, and how many were checked.
    pub(super) fn judge(
        &mut self,
        node: &str,
        map: &Arc<BlockMap>,
        host: &HostState,
    ) -> (Arc<Vec<BlockProblem>>, usize) {
        let (generation, epoch) = (host.cover_generation(), self.epoch);
        let same_map = self.key.as_ref().is_some_and(|k| Arc::ptr_eq(&k.0, map));
        let fresh = same_map
            && self.cacheable
            && self
                .key
                .as_ref()
                .is_some_and(|k| (k.1, k.2) == (generation, epoch));
        if !fresh {
            if !same_map {
                self.cacheable = map
                    .blocks
                    .iter()
                    .all(|b| b.cidr.prefix_len() < b.cidr.max_prefix_len());
            }
            let problems = block_problems(node, map, host);
            // Unchanged problems keep their list, so the monitor can skip comparing them.
            if *self.problems != problems {
                self.problems = Arc::new(problems);
            }
            self.checked = map
                .blocks
                .iter()
                .filter(|b| map.synced && *b.node != *node)
                .count();
            self.key = Some((Arc::clone(map), generation, epoch));
        }
        (Arc::clone(&self.problems), self.checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{host_with, route};
    use crate::host::KernelEvent;
    use crate::model::{PeerNode, RemoteBlock};

    fn map(cidr: &str) -> Arc<BlockMap> {
        Arc::new(BlockMap {
            blocks: vec![RemoteBlock {
                cidr: cidr.parse().unwrap(),
                node: "node-b".into(),
            }],
            nodes: [(
                "node-b".into(),
                PeerNode {
                    addresses: vec!["192.0.2.11".parse().unwrap()],
                    tunnels: Vec::new(),
                },
            )]
            .into(),
            synced: true,
        })
    }

    fn block_route(dst: &str) -> crate::host::Route {
        let mut r = route(dst, Some(2));
        r.gateway = Some("192.0.2.11".parse().unwrap());
        r
    }

    #[test]
    fn judged_again_only_when_a_covering_route_or_the_map_changes() {
        let m = map("10.244.1.0/26");
        let mut host = host_with(vec![block_route("10.244.1.0/26")], Vec::new());
        let mut c = BlockCache::default();
        assert_eq!(c.judge("local", &m, &host), (Arc::default(), 1));
        // A pod route elsewhere: same judgement, from the cache (same key).
        let generation = c.key.as_ref().map(|k| k.1);
        host.apply(&KernelEvent::RouteAdded(route("10.244.0.5/32", Some(7))));
        assert!(c.judge("local", &m, &host).0.is_empty());
        assert_eq!(c.key.as_ref().map(|k| k.1), generation);
        // The block's route goes: judged again.
        host.apply(&KernelEvent::RouteRemoved(block_route("10.244.1.0/26")));
        let (p, n) = c.judge("local", &m, &host);
        assert_eq!((p.len(), n), (1, 1));
        // A re-dump: a new state whose generation may repeat an old one.
        c.new_state();
        assert_ne!(c.key.as_ref().map(|k| k.2), Some(c.epoch));
        assert_eq!(c.judge("local", &m, &host).0.len(), 1);
        // A new map, even at the address of a dropped one: judged again.
        let m2 = map("10.244.2.0/26");
        assert_eq!(
            c.judge("local", &m2, &host).0[0].block.to_string(),
            "10.244.2.0/26"
        );
    }

    #[test]
    fn blocks_of_one_address_are_never_cached() {
        let m = map("10.244.1.7/32");
        let mut host = host_with(vec![block_route("10.244.1.7/32")], Vec::new());
        let mut c = BlockCache::default();
        assert!(c.judge("local", &m, &host).0.is_empty());
        host.apply(&KernelEvent::RouteRemoved(block_route("10.244.1.7/32")));
        assert_eq!(c.judge("local", &m, &host).0.len(), 1);
    }

    /// What a route event costs the remote block check at 5,000 blocks when no covering route
    /// changed (`cargo test -p podnet-probe --release --lib block_cache_hit_cost -- --ignored
    /// --nocapture`); ignored: timing is not a pass/fail matter on a shared machine.
    #[test]
    #[ignore = "measurement"]
    #[allow(clippy::print_stdout)] // The figure is the point of this test.
    fn block_cache_hit_cost() {
        let n = 5_000usize;
        let blocks: Vec<RemoteBlock> = (0..n)
            .map(|i| RemoteBlock {
                cidr: format!("10.{}.{}.0/26", i / 256, i % 256).parse().unwrap(),
                node: format!("node-{}", i / 4).into(),
            })
            .collect();
        let m = Arc::new(BlockMap {
            blocks,
            nodes: Default::default(),
            synced: true,
        });
        let mut host = host_with(Vec::new(), Vec::new());
        let mut c = BlockCache::default();
        c.judge("local", &m, &host);
        let rounds = 10_000u32;
        let start = std::time::Instant::now();
        for i in 0..rounds {
            let r = route(&format!("10.244.0.{}/32", i % 250), Some(7));
            host.apply(&KernelEvent::RouteAdded(r));
            assert_eq!(c.judge("local", &m, &host).1, n);
        }
        let per = start.elapsed() / rounds;
        println!("remote block check on a pod route event, {n} blocks all failing: {per:?}");
    }
}
