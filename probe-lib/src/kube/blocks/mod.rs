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

pub(super) mod parse;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, WatchEvent, WatchParams};
use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use self::parse::NodeInfo;
use super::error::WatchError;
use crate::model::{BlockMap, NodeName, RemoteBlock};
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

/// Both kinds' objects, as last seen: compact, as the budget is < 2 MiB at 5,000
/// blocks (`podnet-bench blocks`).
#[derive(Debug, Default)]
struct Stores {
    /// BlockAffinities by a 64-bit hash of their name (deletes carry the name; the name
    /// itself, ~35 bytes, is not kept).
    blocks: BTreeMap<u64, RemoteBlock>,
    nodes: BTreeMap<NodeName, NodeInfo>,
    /// Every node name in use, once: blocks and nodes share these.
    names: HashSet<NodeName>,
    blocks_synced: bool,
    nodes_synced: bool,
}

impl Stores {
    /// The shared copy of `name`.
    fn intern(&mut self, name: &str) -> NodeName {
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
    fn forget_unused_names(&mut self) {
        self.names.retain(|n| Arc::strong_count(n) > 1);
    }
}

/// The key a BlockAffinity is kept under.
fn name_key(name: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
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

    /// A full paginated list (`GET /apis/crd.projectcalico.org/v1/blockaffinities?limit=…`,
    /// `GET /api/v1/nodes?limit=…`) replacing the store; returns its resource version.
    async fn list(&self, api: &Api<DynamicObject>, kind: Kind) -> Result<String, WatchError> {
        // Each page is reduced to the kept fields as it arrives: at most one page of raw
        // objects is in memory, never the whole list (5,000 raw BlockAffinities are megabytes).
        let mut staged = Stores::default();
        let mut n = 0usize;
        let mut token: Option<String> = None;
        let rv = loop {
            self.beat(kind);
            let mut lp = ListParams::default().limit(self.config.page_size);
            if let Some(t) = token.take() {
                lp = lp.continue_token(&t);
            }
            let page = tokio::time::timeout(REQUEST_TIMEOUT, self.page(api, kind, &lp))
                .await
                .map_err(|_| WatchError::RequestTimeout {
                    verb: "list",
                    after: REQUEST_TIMEOUT,
                })?
                .map_err(|source| WatchError::Api {
                    verb: "list",
                    source,
                })?;
            n += page.items.len();
            {
                // The names are interned in the live set, so both kinds share them.
                let mut s = lock(&self.stores);
                staged.names = std::mem::take(&mut s.names);
                for obj in &page.items {
                    apply(&mut staged, kind, obj, true);
                }
                s.names = std::mem::take(&mut staged.names);
            }
            match page.continue_.filter(|c| !c.is_empty()) {
                Some(c) => token = Some(c),
                None => break page.resource_version.unwrap_or_default(),
            }
        };
        {
            let mut s = lock(&self.stores);
            match kind {
                Kind::BlockAffinity => {
                    s.blocks = std::mem::take(&mut staged.blocks);
                    s.blocks_synced = true;
                }
                Kind::Node => {
                    s.nodes = std::mem::take(&mut staged.nodes);
                    s.nodes_synced = true;
                }
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
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, self.events(api, kind, &wp, rv))
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
            // Wait for the next event in beats; silence beyond `silence` is a stall.
            let stalled_at = Instant::now() + silence;
            let next = loop {
                self.beat(kind);
                let left = stalled_at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(WatchError::Stalled(silence));
                }
                if let Ok(n) = tokio::time::timeout(left.min(HEARTBEAT_EVERY), stream.next()).await
                {
                    break n;
                }
            };
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
                Event::Apply(o, added) => (o, added),
                Event::Bookmark(v) => {
                    *rv = v;
                    continue;
                }
                Event::Error { code, message } => {
                    return Err(WatchError::ErrorEvent { code, message });
                }
            };
            if let Some(v) = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
            {
                *rv = v.to_owned();
            }
            let changed = apply(&mut lock(&self.stores), kind, &obj, added);
            if changed {
                self.publish();
            }
        }
    }

    /// Whether `kind` is read as metadata only: Nodes with Calico IPAM, whose addresses are
    /// in Calico's annotations (`status.addresses` and `spec.podCIDRs` are not needed, and a
    /// Node's status, rewritten by its kubelet every ~10 s, is what makes full Node watches
    /// expensive at scale).
    fn metadata_only(&self, kind: Kind) -> bool {
        kind == Kind::Node && self.config.source == BlockSource::Calico
    }

    /// One list page, whole objects or `PartialObjectMetadata`
    /// (`Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`).
    async fn page(
        &self,
        api: &Api<DynamicObject>,
        kind: Kind,
        lp: &ListParams,
    ) -> Result<Page, kube::Error> {
        fn page<T: serde::Serialize + Clone>(list: kube::core::ObjectList<T>) -> Page {
            Page {
                items: list.items.iter().map(to_value).collect(),
                continue_: list.metadata.continue_,
                resource_version: list.metadata.resource_version,
            }
        }
        if self.metadata_only(kind) {
            api.list_metadata(lp).await.map(page)
        } else {
            api.list(lp).await.map(page)
        }
    }

    /// Start one watch, whole objects or `PartialObjectMetadata`.
    async fn events(
        &self,
        api: &Api<DynamicObject>,
        kind: Kind,
        wp: &WatchParams,
        rv: &str,
    ) -> Result<BoxStream<'static, Result<Event, kube::Error>>, kube::Error> {
        Ok(if self.metadata_only(kind) {
            api.watch_metadata(wp, rv)
                .await?
                .map(|e| e.map(Event::from))
                .boxed()
        } else {
            api.watch(wp, rv).await?.map(|e| e.map(Event::from)).boxed()
        })
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

/// One list page, its objects as JSON.
struct Page {
    items: Vec<Value>,
    continue_: Option<String>,
    resource_version: Option<String>,
}

/// One watch event, its object as JSON whatever shape it came in.
enum Event {
    /// Added or modified (`true`), deleted (`false`).
    Apply(Value, bool),
    Bookmark(String),
    Error {
        code: u16,
        message: String,
    },
}

impl<T: serde::Serialize + Clone> From<WatchEvent<T>> for Event {
    fn from(e: WatchEvent<T>) -> Self {
        match e {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => Event::Apply(to_value(&o), true),
            WatchEvent::Deleted(o) => Event::Apply(to_value(&o), false),
            WatchEvent::Bookmark(b) => Event::Bookmark(b.metadata.resource_version),
            WatchEvent::Error(e) => Event::Error {
                code: e.code,
                message: e.message,
            },
        }
    }
}

fn to_value<T: serde::Serialize>(obj: &T) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

/// Store (or remove) one object; whether anything changed.
fn apply(s: &mut Stores, kind: Kind, value: &Value, added: bool) -> bool {
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

fn upsert<K: Ord, T: PartialEq>(map: &mut BTreeMap<K, T>, name: K, v: Option<T>) -> bool {
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
