//! The other nodes' pod blocks and addresses: Calico IPAM `BlockAffinity` objects
//! (`crd.projectcalico.org/v1`) and Nodes, or Nodes alone (`spec.podCIDRs`) for CNIs without
//! Calico IPAM. Each kind is listed (paginated) and watched with the pod watch's discipline:
//! a 410 Gone or a watch `ERROR` event always means a fresh list, errors back off with jitter,
//! every request and every silence has a timeout, objects are decoded leniently into the few
//! fields the check reads, and the number kept is bounded.
//!
//! Cost at 5,000 nodes × 4 blocks: one list of each kind at start and after a 410, then one
//! watch request per kind per watch timeout (default 5 min: under 1 request/min per agent),
//! plus the changes themselves (Nodes update their status every ~10 s upstream: 500 Node
//! events/s across the cluster reach every agent — metadata-only Node watches would avoid it
//! but lose `status.addresses`; with Calico the annotations suffice, see docs). Memory: the
//! kept fields only, ≈ 150 B per block and ≈ 200 B per node (≈ 4 MiB for 20,000 blocks).

pub(super) mod parse;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, WatchEvent, WatchParams};
use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use self::parse::NodeInfo;
use super::error::WatchError;
use crate::model::{BlockMap, RemoteBlock};
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

/// Both kinds' objects by name, as last seen.
#[derive(Debug, Default)]
struct Stores {
    blocks: BTreeMap<String, RemoteBlock>,
    nodes: BTreeMap<String, NodeInfo>,
    blocks_synced: bool,
    nodes_synced: bool,
}

/// Follows the cluster's blocks and node addresses and publishes a [`BlockMap`] on every
/// change.
pub struct BlockWatcher {
    client: kube::Client,
    config: BlockWatchConfig,
    stores: Mutex<Stores>,
    tx: watch::Sender<Arc<BlockMap>>,
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
        };
        (w, rx)
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
            let mut rv = match self.list(&api, kind).await {
                Ok(rv) => rv,
                Err(e) => {
                    let delay = backoff.next_delay();
                    warn!(?kind, error = %e, ?delay, "listing failed; retrying");
                    tokio::time::sleep(delay).await;
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
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    }

    /// A full paginated list (`GET /apis/crd.projectcalico.org/v1/blockaffinities?limit=…`,
    /// `GET /api/v1/nodes?limit=…`) replacing the store; returns its resource version.
    async fn list(&self, api: &Api<DynamicObject>, kind: Kind) -> Result<String, WatchError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        let rv = loop {
            let mut lp = ListParams::default().limit(self.config.page_size);
            if let Some(t) = token.take() {
                lp = lp.continue_token(&t);
            }
            let page = tokio::time::timeout(REQUEST_TIMEOUT, api.list(&lp))
                .await
                .map_err(|_| WatchError::RequestTimeout {
                    verb: "list",
                    after: REQUEST_TIMEOUT,
                })?
                .map_err(|source| WatchError::Api {
                    verb: "list",
                    source,
                })?;
            for obj in page.items {
                if all.len() < MAX_OBJECTS {
                    all.push(obj);
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => token = Some(c),
                None => break page.metadata.resource_version.unwrap_or_default(),
            }
        };
        let n = all.len();
        {
            let mut s = lock(&self.stores);
            match kind {
                Kind::BlockAffinity => {
                    s.blocks.clear();
                    s.blocks_synced = true;
                }
                Kind::Node => {
                    s.nodes.clear();
                    s.nodes_synced = true;
                }
            }
            for obj in all {
                apply(&mut s, kind, &obj, true);
            }
        }
        debug!(?kind, objects = n, "listed");
        self.publish();
        Ok(rv)
    }

    /// One watch request from `rv`, with bookmarks, until the server ends it.
    async fn watch_once(
        &self,
        api: &Api<DynamicObject>,
        kind: Kind,
        rv: &mut String,
    ) -> Result<(), WatchError> {
        let secs = u32::try_from(self.config.watch_timeout.as_secs()).unwrap_or(u32::MAX);
        let wp = WatchParams::default().timeout(secs.max(1));
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, api.watch(&wp, rv))
            .await
            .map_err(|_| WatchError::RequestTimeout {
                verb: "watch",
                after: REQUEST_TIMEOUT,
            })?
            .map_err(|source| WatchError::Api {
                verb: "watch",
                source,
            })?;
        let mut stream = std::pin::pin!(stream);
        let silence = self.config.watch_timeout + STALL_MARGIN;
        loop {
            let next = tokio::time::timeout(silence, stream.next())
                .await
                .map_err(|_| WatchError::Stalled(silence))?;
            let event = match next {
                None => return Ok(()),
                Some(Err(source)) => {
                    return Err(WatchError::Api {
                        verb: "watch",
                        source,
                    });
                }
                Some(Ok(e)) => e,
            };
            let (obj, added) = match event {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => (o, true),
                WatchEvent::Deleted(o) => (o, false),
                WatchEvent::Bookmark(b) => {
                    *rv = b.metadata.resource_version;
                    continue;
                }
                WatchEvent::Error(e) => {
                    return Err(WatchError::ErrorEvent {
                        code: e.code,
                        message: e.message,
                    });
                }
            };
            if let Some(v) = obj.metadata.resource_version.clone() {
                *rv = v;
            }
            let changed = apply(&mut lock(&self.stores), kind, &obj, added);
            if changed {
                self.publish();
            }
        }
    }

    fn publish(&self) {
        let map = block_map(&lock(&self.stores), self.config.source);
        self.tx.send_if_modified(|old| {
            let changed = **old != map;
            if changed {
                *old = Arc::new(map);
            }
            changed
        });
    }
}

/// Store (or remove) one object; whether anything changed.
fn apply(s: &mut Stores, kind: Kind, obj: &DynamicObject, added: bool) -> bool {
    let Some(name) = obj.metadata.name.clone() else {
        return false;
    };
    let value = serde_json::to_value(obj).unwrap_or(Value::Null);
    if parse::name(&value).is_none() {
        return false;
    }
    match kind {
        Kind::BlockAffinity => {
            let block = added.then(|| parse::block_affinity(&value)).flatten();
            upsert(&mut s.blocks, name, block)
        }
        Kind::Node => upsert(&mut s.nodes, name, added.then(|| parse::node(&value))),
    }
}

fn upsert<T: PartialEq>(map: &mut BTreeMap<String, T>, name: String, v: Option<T>) -> bool {
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
fn block_map(s: &Stores, source: BlockSource) -> BlockMap {
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
