//! List and watch this node's pods, and never stall silently (the incident's root cause was a
//! watcher that looped on "resourceVersion too old" while reporting ready).
//!
//! A list (paginated, `fieldSelector=spec.nodeName=<node>`) gives the full set and a resource
//! version; a watch from there (with bookmarks) applies changes. A 410 Gone — as an HTTP status
//! or as a watch `ERROR` event — always means a fresh list, never a retry of the same version.
//! A watch that sends nothing, not even a bookmark or its own end, for longer than its timeout
//! plus a margin is declared stalled and replaced. Errors back off exponentially with jitter
//! (at most 5 s, so the watch is back within seconds of the API's return). Health and restarts
//! are exported; the monitor turns a long unhealthy spell into a node-level problem.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams, WatchEvent, WatchParams};
use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::error::WatchError;
use super::store::{KubeHealth, KubeView, PodStore};
use crate::model::KubeMetrics;
use crate::util::backoff::Backoff;

/// Watch settings.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// This node's name (`spec.nodeName`).
    pub node: String,
    /// `timeoutSeconds` of each watch request; the server ends the watch then and we start the
    /// next one from the last resource version (not an error).
    pub watch_timeout: Duration,
    /// Items per list page.
    pub page_size: u32,
}

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A watch silent for its timeout plus this (or half its timeout, if less) is stalled.
const STALL_MARGIN: Duration = Duration::from_secs(30);
/// How long one list page or the start of a watch may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How one watch request ended.
enum WatchEnd {
    /// The server ended the watch at its timeout: start the next one.
    Timeout,
    /// A problem: watch again from the same version, or list first
    /// ([`WatchError::needs_relist`]).
    Failed(WatchError),
}

/// The pods API for a type-erased Pod: a malformed pod is still a `DynamicObject`, so one bad
/// object never fails a whole list.
fn pods_api(client: kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: "Pod".into(),
        plural: "pods".into(),
    };
    Api::all_with(client, &ar)
}

/// Just the fields [`parse_pod`](super::parse_pod) reads, so a list of fat pod specs is not
/// copied whole.
fn to_value(o: &DynamicObject) -> Value {
    let m = &o.metadata;
    let pick = |section: &str, fields: &[&str]| -> Value {
        match o.data.get(section) {
            Some(Value::Object(map)) => Value::Object(
                fields
                    .iter()
                    .filter_map(|f| map.get(*f).map(|v| ((*f).to_owned(), v.clone())))
                    .collect(),
            ),
            Some(other) => other.clone(),
            None => Value::Null,
        }
    };
    serde_json::json!({
        "metadata": {
            "name": m.name,
            "namespace": m.namespace,
            "uid": m.uid,
            "deletionTimestamp": m.deletion_timestamp.as_ref().map(|_| true),
        },
        "spec": pick("spec", &["nodeName", "hostNetwork"]),
        "status": pick("status", &["phase", "podIP", "podIPs"]),
    })
}

/// Follows this node's pods and publishes a [`KubeView`] on every change.
pub struct KubeWatcher {
    api: Api<DynamicObject>,
    config: WatchConfig,
    selector: String,
    store: PodStore,
    health: KubeHealth,
    synced: bool,
    tx: watch::Sender<Arc<KubeView>>,
    metrics: KubeMetrics,
    backoff: Backoff,
}

impl std::fmt::Debug for KubeWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeWatcher")
            .field("node", &self.config.node)
            .finish_non_exhaustive()
    }
}

impl KubeWatcher {
    /// A watcher over `client`, and the receiver of its views.
    pub fn new(
        client: kube::Client,
        config: WatchConfig,
        metrics: KubeMetrics,
    ) -> (Self, watch::Receiver<Arc<KubeView>>) {
        let (tx, rx) = watch::channel(Arc::new(KubeView::default()));
        let selector = format!("spec.nodeName={}", config.node);
        let watcher = KubeWatcher {
            api: pods_api(client),
            store: PodStore::new(&config.node),
            config,
            selector,
            health: KubeHealth::default(),
            synced: false,
            tx,
            metrics,
            backoff: Backoff::new(BACKOFF_MIN, BACKOFF_MAX),
        };
        (watcher, rx)
    }

    /// Run until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::select! {
            () = shutdown => debug!("Kubernetes watch stopping"),
            () = self.run_forever() => {}
        }
    }

    async fn run_forever(&mut self) {
        loop {
            let mut rv = match self.list().await {
                Ok(rv) => {
                    self.backoff.reset();
                    rv
                }
                Err(e) => {
                    self.failed(&e);
                    tokio::time::sleep(self.backoff.next_delay()).await;
                    continue;
                }
            };
            loop {
                match self.watch_once(&mut rv).await {
                    WatchEnd::Timeout => {}
                    WatchEnd::Failed(e) => {
                        self.failed(&e);
                        tokio::time::sleep(self.backoff.next_delay()).await;
                        if e.needs_relist() {
                            break;
                        }
                    }
                }
            }
        }
    }

    fn failed(&mut self, error: &WatchError) {
        let reason = error.reason();
        self.metrics.restarted(reason);
        self.health.restarts += 1;
        self.health.last_error = Some(format!("{}: {error}", reason.as_str()));
        if self.health.healthy || self.health.unhealthy_since.is_none() {
            warn!(reason = reason.as_str(), %error, "Kubernetes watch failed; starting over");
            self.health.unhealthy_since = Some(Instant::now());
        } else {
            debug!(reason = reason.as_str(), %error, "Kubernetes watch still failing");
        }
        self.health.healthy = false;
        self.metrics.set_healthy(false);
        self.publish();
    }

    fn contact(&mut self) {
        self.health.last_event = Some(SystemTime::now());
        self.metrics.event_seen();
    }

    fn ok(&mut self) {
        if !self.health.healthy {
            if self.health.unhealthy_since.is_some() {
                info!(pods = self.store.len(), "Kubernetes watch healthy again");
            }
            self.health.healthy = true;
            self.health.unhealthy_since = None;
            self.metrics.set_healthy(true);
        }
        self.contact();
    }

    fn publish(&self) {
        let view = KubeView {
            synced: self.synced,
            pods: self.store.pods(),
            health: self.health.clone(),
        };
        self.tx.send_if_modified(|current| {
            if **current == view {
                false
            } else {
                *current = Arc::new(view);
                true
            }
        });
    }

    /// `GET /api/v1/pods?fieldSelector=spec.nodeName=<node>&limit=N` (and its pages).
    async fn list(&mut self) -> Result<String, WatchError> {
        let mut lp = ListParams::default()
            .fields(&self.selector)
            .limit(self.config.page_size);
        let mut items = Vec::new();
        // Pages are converted as they come, keeping only what podnet reads of each pod.
        let rv = loop {
            self.metrics.request("list");
            let page = match tokio::time::timeout(REQUEST_TIMEOUT, self.api.list(&lp)).await {
                Err(_) => {
                    return Err(WatchError::RequestTimeout {
                        verb: "list",
                        after: REQUEST_TIMEOUT,
                    });
                }
                Ok(Err(source)) => {
                    return Err(WatchError::Api {
                        verb: "list",
                        source,
                    });
                }
                Ok(Ok(p)) => p,
            };
            items.extend(page.items.iter().map(to_value));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => lp = lp.continue_token(&token),
                None => break page.metadata.resource_version.unwrap_or_default(),
            }
        };
        self.store.replace(items.iter(), Instant::now());
        self.synced = true;
        self.ok();
        debug!(pods = self.store.len(), resource_version = %rv, "listed this node's pods");
        self.publish();
        Ok(rv)
    }

    /// `GET …&watch=1&resourceVersion=RV&allowWatchBookmarks=true&timeoutSeconds=T`.
    async fn watch_once(&mut self, rv: &mut String) -> WatchEnd {
        let timeout = self.config.watch_timeout.as_secs().clamp(1, 3600) as u32;
        let wp = WatchParams::default()
            .fields(&self.selector)
            .timeout(timeout);
        self.metrics.request("watch");
        // tokio's clock (the same in production), so tests can pause it.
        let started = tokio::time::Instant::now();
        let stream = match tokio::time::timeout(REQUEST_TIMEOUT, self.api.watch(&wp, rv)).await {
            Err(_) => {
                return WatchEnd::Failed(WatchError::RequestTimeout {
                    verb: "watch",
                    after: REQUEST_TIMEOUT,
                });
            }
            Ok(Err(source)) => {
                return WatchEnd::Failed(WatchError::Api {
                    verb: "watch",
                    source,
                });
            }
            Ok(Ok(s)) => s,
        };
        self.ok();
        self.publish();
        let mut stream = std::pin::pin!(stream);
        let idle_limit =
            self.config.watch_timeout + (self.config.watch_timeout / 2).min(STALL_MARGIN);
        loop {
            let item = match tokio::time::timeout(idle_limit, stream.next()).await {
                Err(_) => return WatchEnd::Failed(WatchError::Stalled(idle_limit)),
                Ok(None) => {
                    // Ended by the server: at its timeout that is normal, earlier it was dropped.
                    return if started.elapsed() + Duration::from_secs(1)
                        >= self.config.watch_timeout
                    {
                        WatchEnd::Timeout
                    } else {
                        WatchEnd::Failed(WatchError::ClosedEarly)
                    };
                }
                Ok(Some(Err(source))) => {
                    return WatchEnd::Failed(WatchError::Api {
                        verb: "watch",
                        source,
                    });
                }
                Ok(Some(Ok(ev))) => ev,
            };
            self.contact();
            match item {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                    if let Some(v) = &o.metadata.resource_version {
                        rv.clone_from(v);
                    }
                    self.store.upsert(&to_value(&o), Instant::now());
                    self.publish();
                }
                WatchEvent::Deleted(o) => {
                    if let Some(v) = &o.metadata.resource_version {
                        rv.clone_from(v);
                    }
                    self.store.delete(&to_value(&o));
                    self.publish();
                }
                WatchEvent::Bookmark(b) => rv.clone_from(&b.metadata.resource_version),
                WatchEvent::Error(status) => {
                    // 410: our version is compacted away, only a fresh list helps (the
                    // incident's watcher retried the same version forever). Any other error
                    // event also starts over with a list.
                    return WatchEnd::Failed(WatchError::ErrorEvent {
                        code: status.code,
                        message: status.message.clone(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
