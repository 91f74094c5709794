//! The API requests of the block watch: paginated lists and watch streams of either kind,
//! each object turned into JSON for the store.

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::api::{Api, DynamicObject, ListParams, WatchEvent, WatchParams};
use serde_json::Value;
use tokio::time::Instant;
use tracing::debug;

use super::*;
use crate::kube::error::WatchError;
use crate::util::lock;

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

impl BlockWatcher {
    /// A full paginated list (`GET /apis/crd.projectcalico.org/v1/blockaffinities?limit=…`,
    /// `GET /api/v1/nodes?limit=…`) replacing the store; returns its resource version.
    pub(super) async fn list(
        &self,
        api: &Api<DynamicObject>,
        kind: Kind,
    ) -> Result<String, WatchError> {
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
    pub(super) async fn watch_once(
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
    pub(super) fn metadata_only(&self, kind: Kind) -> bool {
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
}
