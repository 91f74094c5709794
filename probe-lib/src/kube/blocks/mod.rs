//! The other nodes' pod blocks and addresses: Calico IPAM `BlockAffinity` objects
//! (`crd.projectcalico.org/v1`) and Nodes, or Nodes alone (`spec.podCIDRs`) for CNIs without
//! Calico IPAM. Each kind is listed (paginated) and watched with the pod watch's discipline:
//! a 410 Gone or a watch `ERROR` event always means a fresh list, errors back off with jitter,
//! every request and every silence has a timeout, objects are decoded leniently into the few
//! fields the check reads, and the number kept is bounded.
//!
//! With Calico IPAM the Nodes are listed and watched as `PartialObjectMetadata` (the addresses
//! are in Calico's annotations; a Node's status, which its kubelet rewrites, is not needed);
//! with `spec.podCIDRs` they are read whole. Cost at 5,000 nodes × 4 blocks: one list of each
//! kind at start and after a 410, then one watch request per kind per watch timeout, plus every
//! Node write (`docs/kubernetes.md`). Memory: the kept fields only, ≈ 150 B per block and
//! ≈ 200 B per node.

mod api;
pub(super) mod parse;
mod store;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use kube::api::{Api, ApiResource, DynamicObject};
use tokio::sync::watch;
use tracing::{info, warn};

use self::store::{Stores, apply, block_map};
use crate::model::BlockMap;
use crate::util::backoff::Backoff;
use crate::util::lock;

/// Where the blocks come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockSource {
    /// Calico IPAM `BlockAffinity` objects, with the nodes' (tunnel) addresses.
    Calico,
    /// `Node.spec.podCIDRs` (kube-controller-manager's node IPAM).
    PodCidrs,
}

/// Settings of the block watch.
#[derive(Debug, Clone)]
pub struct BlockWatchConfig {
    /// Where the blocks come from.
    pub source: BlockSource,
    /// `timeoutSeconds` of each watch request.
    pub watch_timeout: Duration,
    /// Items per list page.
    pub page_size: u32,
}

/// Most objects of one kind kept: beyond it the rest are ignored (and logged), so a flood of
/// objects cannot exhaust the agent's memory.
const MAX_OBJECTS: usize = 100_000;
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long one list page or the start of a watch may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A watch silent for its timeout plus this is stalled (bookmarks keep a healthy one talking).
const STALL_MARGIN: Duration = Duration::from_secs(30);
/// Each kind's loop beats at least this often while it runs: during backoff sleeps and quiet
/// watches too. Only a request can hold it longer, for at most [`REQUEST_TIMEOUT`].
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// One watched kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    BlockAffinity,
    Node,
}

impl Kind {
    fn resource(self) -> ApiResource {
        match self {
            Kind::BlockAffinity => ApiResource {
                group: "crd.projectcalico.org".into(),
                version: "v1".into(),
                api_version: "crd.projectcalico.org/v1".into(),
                kind: "BlockAffinity".into(),
                plural: "blockaffinities".into(),
            },
            Kind::Node => ApiResource {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: "Node".into(),
                plural: "nodes".into(),
            },
        }
    }
}

/// When each followed kind last beat: the watcher is alive only while every one does (one
/// hung kind must not hide behind the other's beats).
#[derive(Debug, Default)]
struct Beats([Option<Instant>; 2]);

impl Beats {
    /// Record `kind`'s beat at `now`; whether every kind followed so far beat within
    /// [`BlockWatcher::MAX_SILENCE`].
    fn beat(&mut self, kind: Kind, now: Instant) -> bool {
        self.0[kind as usize] = Some(now);
        self.0
            .iter()
            .flatten()
            .all(|t| now.saturating_duration_since(*t) <= BlockWatcher::MAX_SILENCE)
    }
}

/// Follows the cluster's blocks and node addresses and publishes a [`BlockMap`] on every
/// change.
pub struct BlockWatcher {
    client: kube::Client,
    config: BlockWatchConfig,
    stores: Mutex<Stores>,
    tx: watch::Sender<Arc<BlockMap>>,
    beats: Mutex<Beats>,
    /// Liveness hook: called while every kind's loop runs, dropped when the watcher ends.
    heartbeat: Option<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for BlockWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockWatcher")
            .field("source", &self.config.source)
            .finish_non_exhaustive()
    }
}

impl BlockWatcher {
    /// A watcher over `client`, and the receiver of its maps.
    pub fn new(
        client: kube::Client,
        config: BlockWatchConfig,
    ) -> (Self, watch::Receiver<Arc<BlockMap>>) {
        let (tx, rx) = watch::channel(Arc::new(BlockMap::default()));
        let stores = Mutex::new(Stores {
            // Without Calico IPAM the blocks come with the nodes.
            blocks_synced: config.source == BlockSource::PodCidrs,
            ..Stores::default()
        });
        let w = BlockWatcher {
            client,
            config,
            stores,
            tx,
            beats: Mutex::default(),
            heartbeat: None,
        };
        (w, rx)
    }

    /// The longest a running watcher goes without calling its heartbeat: one request
    /// timeout plus a beat interval, with margin.
    pub const MAX_SILENCE: Duration = Duration::from_secs(45);

    /// Call `beat` at least every few seconds while every watched kind's loop runs (never
    /// more than [`BlockWatcher::MAX_SILENCE`] apart). The watcher owns it: when it ends —
    /// shutdown, or its task unwinding from a panic — `beat` is dropped, and a liveness guard
    /// captured in it marks the worker dead.
    #[must_use]
    pub fn with_heartbeat(mut self, beat: impl Fn() + Send + Sync + 'static) -> Self {
        self.heartbeat = Some(Box::new(beat));
        self
    }

    fn beat(&self, kind: Kind) {
        let all_alive = lock(&self.beats).beat(kind, Instant::now());
        if let (true, Some(beat)) = (all_alive, &self.heartbeat) {
            beat();
        }
    }

    /// Wait `delay`, beating on the way.
    async fn pause(&self, kind: Kind, delay: Duration) {
        let until = Instant::now() + delay;
        loop {
            self.beat(kind);
            let now = Instant::now();
            if now >= until {
                return;
            }
            tokio::time::sleep((until - now).min(HEARTBEAT_EVERY)).await;
        }
    }

    /// Follow until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let nodes = self.follow(Kind::Node);
        let both = async {
            if self.config.source == BlockSource::Calico {
                tokio::join!(nodes, self.follow(Kind::BlockAffinity));
            } else {
                nodes.await;
            }
        };
        tokio::select! {
            () = both => {}
            () = shutdown => {}
        }
    }

    /// List and watch one kind forever.
    async fn follow(&self, kind: Kind) {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &kind.resource());
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        loop {
            self.beat(kind);
            let mut rv = match self.list(&api, kind).await {
                Ok(rv) => rv,
                Err(e) => {
                    let delay = backoff.next_delay();
                    warn!(?kind, error = %e, ?delay, "listing failed; retrying");
                    self.pause(kind, delay).await;
                    continue;
                }
            };
            loop {
                match self.watch_once(&api, kind, &mut rv).await {
                    Ok(()) => backoff.reset(),
                    Err(e) if e.needs_relist() => {
                        info!(?kind, error = %e, "watch needs a fresh list");
                        break;
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        warn!(?kind, error = %e, ?delay, "watch failed; retrying");
                        self.pause(kind, delay).await;
                    }
                }
            }
        }
    }

    fn publish(&self) {
        let map = {
            let mut s = lock(&self.stores);
            s.forget_unused_names();
            block_map(&s, self.config.source)
        };
        self.tx.send_if_modified(|old| {
            let changed = **old != map;
            if changed {
                *old = Arc::new(map);
            }
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hung_kind_silences_the_heartbeat() {
        let t0 = Instant::now();
        let mut b = Beats::default();
        assert!(b.beat(Kind::Node, t0));
        assert!(b.beat(Kind::BlockAffinity, t0));
        let later = t0 + BlockWatcher::MAX_SILENCE;
        assert!(b.beat(Kind::Node, later));
        // BlockAffinity's loop went quiet: Node's beats alone no longer count.
        let hung = later + Duration::from_secs(1);
        assert!(!b.beat(Kind::Node, hung));
        assert!(b.beat(Kind::BlockAffinity, hung));
        // Nodes alone (`--remote-blocks pod-cidrs`): only that kind is judged.
        let mut b = Beats::default();
        assert!(b.beat(Kind::Node, t0));
        assert!(b.beat(Kind::Node, t0 + Duration::from_secs(600)));
    }
}
