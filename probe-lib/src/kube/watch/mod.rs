//! List and watch this node's pods, and never stall silently (the incident's root cause was a
//! watcher that looped on "resourceVersion too old" while reporting ready).
//!
//! A list (paginated, `fieldSelector=spec.nodeName=<node>`) gives the full set and a resource
//! version; a watch from there (with bookmarks) applies changes. A 410 Gone — as an HTTP status
//! or as a watch `ERROR` event — always means a fresh list, never a retry of the same version.
//! A watch that sends nothing, not even a bookmark or its own end, for longer than its timeout
//! plus a margin is declared stalled and replaced. Health and restarts are exported; the
//! monitor turns a long unhealthy spell into a node-level problem.
//!
//! Polite to a struggling API server: errors back off exponentially with jitter up to 30 s, and
//! the backoff starts over only after the watch has stayed healthy for a while (a full watch
//! timeout, at most a minute) — a watch that fails right after every successful list costs a
//! list+watch every ~30 s, not several a second. 429 waits the server's `Retry-After`.
//!
//! Memory: pages are read as they stream in and each pod is decoded into the few fields podnet
//! reads ([`RawPod`]); Failed and Succeeded pods are filtered out by the server.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use kube::api::{ListParams, WatchEvent, WatchParams};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::error::WatchError;
use super::pod::RawPod;
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
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The backoff starts over once the watch has been healthy this long (or a full watch
/// timeout, if shorter): a list that succeeds before every failing watch does not reset it.
const HEALTHY_RESET: Duration = Duration::from_secs(60);
/// A 429 without `Retry-After` waits at least this; a `Retry-After` is honoured up to
/// [`RETRY_AFTER_MAX`] (a hostile or broken value must not silence the watch for hours).
const THROTTLED_MIN: Duration = Duration::from_secs(10);
const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);
/// The fields a Pod field selector can filter on server-side: this node's pods that still run.
const PHASE_SELECTOR: &str = "status.phase!=Failed,status.phase!=Succeeded";
/// The watcher calls its heartbeat at least this often while it runs: during backoff sleeps
/// and quiet watches too. Only a request can hold it longer, for at most [`REQUEST_TIMEOUT`].
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A watch silent for its timeout plus this (or half its timeout, if less) is stalled.
const STALL_MARGIN: Duration = Duration::from_secs(30);
/// While watch events keep coming, the view is published at most this often ...
const PUBLISH_EVERY: Duration = Duration::from_millis(50);
/// ... or after this many events.
const PUBLISH_BATCH: usize = 1024;
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

/// Follows this node's pods and publishes a [`KubeView`] on every change.
pub struct KubeWatcher {
    client: kube::Client,
    config: WatchConfig,
    selector: String,
    store: PodStore,
    health: KubeHealth,
    synced: bool,
    tx: watch::Sender<Arc<KubeView>>,
    metrics: KubeMetrics,
    backoff: Backoff,
    /// Since when listing and watching have worked without a failure.
    healthy_since: Option<tokio::time::Instant>,
    /// Liveness hook: called as the watcher runs, dropped when it ends (returns or panics).
    heartbeat: Option<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for KubeWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeWatcher")
            .field("node", &self.config.node)
            .finish_non_exhaustive()
    }
}

impl KubeWatcher {
    /// The longest a running watcher goes without calling its heartbeat
    /// ([`KubeWatcher::with_heartbeat`]): a supervisor may declare it hung after this silence
    /// (one request timeout plus a beat interval, with margin).
    pub const MAX_SILENCE: Duration = Duration::from_secs(45);

    /// A watcher over `client`, and the receiver of its views.
    pub fn new(
        client: kube::Client,
        config: WatchConfig,
        metrics: KubeMetrics,
    ) -> (Self, watch::Receiver<Arc<KubeView>>) {
        let (tx, rx) = watch::channel(Arc::new(KubeView::default()));
        let selector = format!("spec.nodeName={},{PHASE_SELECTOR}", config.node);
        let watcher = KubeWatcher {
            client,
            store: PodStore::new(&config.node),
            config,
            selector,
            health: KubeHealth::default(),
            synced: false,
            tx,
            metrics,
            backoff: Backoff::new(BACKOFF_MIN, BACKOFF_MAX),
            healthy_since: None,
            heartbeat: None,
        };
        (watcher, rx)
    }

    /// Call `beat` at least every [`HEARTBEAT_EVERY`] while running (never more than
    /// [`KubeWatcher::MAX_SILENCE`] apart). The watcher owns it: when the watcher ends — shutdown, or its
    /// task unwinding from a panic — `beat` is dropped, so a liveness guard captured in it
    /// marks the watch worker dead (the agent's `/healthz`).
    #[must_use]
    pub fn with_heartbeat(mut self, beat: impl Fn() + Send + Sync + 'static) -> Self {
        self.heartbeat = Some(Box::new(beat));
        self
    }

    fn beat(&self) {
        if let Some(beat) = &self.heartbeat {
            beat();
        }
    }

    /// Wait `delay`, beating on the way.
    async fn pause(&self, delay: Duration) {
        let until = tokio::time::Instant::now() + delay;
        loop {
            self.beat();
            let now = tokio::time::Instant::now();
            if now >= until {
                return;
            }
            tokio::time::sleep((until - now).min(HEARTBEAT_EVERY)).await;
        }
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
            self.beat();
            let mut rv = match self.list().await {
                Ok(rv) => rv,
                Err(e) => {
                    let delay = self.failed(&e);
                    self.pause(delay).await;
                    continue;
                }
            };
            loop {
                match self.watch_once(&mut rv).await {
                    WatchEnd::Timeout => {}
                    WatchEnd::Failed(e) => {
                        let delay = self.failed(&e);
                        self.pause(delay).await;
                        if e.needs_relist() {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// The wait before the next attempt after `error`: the backoff (started over if the watch
    /// had been healthy long enough), at least the server's `Retry-After` on a 429.
    fn retry_delay(&mut self, error: &WatchError) -> Duration {
        let reset_after = self.config.watch_timeout.min(HEALTHY_RESET);
        if self
            .healthy_since
            .take()
            .is_some_and(|since| since.elapsed() >= reset_after)
        {
            self.backoff.reset();
        }
        let delay = self.backoff.next_delay();
        match error.retry_after() {
            Some(asked) => delay.max(asked.unwrap_or(THROTTLED_MIN).min(RETRY_AFTER_MAX)),
            None => delay,
        }
    }

    /// Count and report a failure; the wait before the next attempt.
    fn failed(&mut self, error: &WatchError) -> Duration {
        let delay = self.retry_delay(error);
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
        delay
    }

    fn contact(&mut self) {
        self.health.last_event = Some(SystemTime::now());
        self.metrics.event_seen();
    }

    fn ok(&mut self) {
        self.healthy_since
            .get_or_insert_with(tokio::time::Instant::now);
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
            calico_node: self.store.calico_node(),
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

    /// `GET /api/v1/pods?fieldSelector=spec.nodeName=<node>,status.phase!=Failed,…&limit=N`
    /// (and its pages); `kubectl get pods -A --field-selector … --chunk-size N`.
    async fn list(&mut self) -> Result<String, WatchError> {
        let mut lp = ListParams::default()
            .fields(&self.selector)
            .limit(self.config.page_size);
        let mut items = Vec::new();
        let rv = loop {
            self.metrics.request("list");
            let page = tokio::time::timeout(
                REQUEST_TIMEOUT,
                request::list_page(&self.client, &lp, &mut items),
            );
            let meta = match page.await {
                Err(_) => {
                    return Err(WatchError::RequestTimeout {
                        verb: "list",
                        after: REQUEST_TIMEOUT,
                    });
                }
                Ok(result) => result?,
            };
            match meta.continue_token {
                Some(token) => lp = lp.continue_token(&token),
                None => break meta.resource_version,
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
        let request = match request::pods().watch(&wp, rv) {
            Ok(r) => r,
            Err(e) => return WatchEnd::Failed(request::build_error("watch", e)),
        };
        // Each event's pod is decoded into the few fields podnet reads, nothing more.
        let start = self.client.request_events::<RawPod>(request);
        let stream = match tokio::time::timeout(REQUEST_TIMEOUT, start).await {
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
        // Changes applied since the last publish, and when they must be published. A view is
        // published at once after a quiet spell, then at most every PUBLISH_EVERY (or
        // PUBLISH_BATCH events) while events keep coming: a burst of thousands costs a few
        // views (and evaluations by the monitor), not one per event — which was quadratic in
        // pods (every view holds all of them).
        let mut unpublished = 0usize;
        let mut publish_at: Option<tokio::time::Instant> = None;
        let mut last_publish: Option<tokio::time::Instant> = None;
        loop {
            let mut silent = Duration::ZERO;
            let next = loop {
                self.beat();
                let now = tokio::time::Instant::now();
                if publish_at.is_some_and(|at| now >= at) || unpublished >= PUBLISH_BATCH {
                    self.publish();
                    (unpublished, publish_at, last_publish) = (0, None, Some(now));
                }
                let mut wait = (idle_limit - silent).min(HEARTBEAT_EVERY);
                if let Some(at) = publish_at {
                    wait = wait.min(at.saturating_duration_since(now));
                }
                match tokio::time::timeout(wait, stream.next()).await {
                    Ok(next) => break Ok(next),
                    Err(_) if silent + wait >= idle_limit => break Err(()),
                    Err(_) => silent += wait,
                }
            };
            if unpublished > 0 && !matches!(next, Ok(Some(Ok(_)))) {
                // The watch ends here: what it brought is published first.
                self.publish();
                unpublished = 0;
            }
            let item = match next {
                Err(()) => return WatchEnd::Failed(WatchError::Stalled(idle_limit)),
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
            if matches!(
                item,
                WatchEvent::Added(_) | WatchEvent::Modified(_) | WatchEvent::Deleted(_)
            ) && publish_at.is_none()
            {
                // After a quiet spell at once (the next turn of the loop), else when due.
                publish_at = Some(
                    last_publish.map_or_else(tokio::time::Instant::now, |l| l + PUBLISH_EVERY),
                );
            }
            match item {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                    if let Some(v) = o.resource_version() {
                        v.clone_into(rv);
                    }
                    self.store.upsert(&o.to_value(), Instant::now());
                    unpublished += 1;
                }
                WatchEvent::Deleted(o) => {
                    if let Some(v) = o.resource_version() {
                        v.clone_into(rv);
                    }
                    self.store.delete(&o.to_value());
                    unpublished += 1;
                }
                WatchEvent::Bookmark(b) => rv.clone_from(&b.metadata.resource_version),
                WatchEvent::Error(status) => {
                    if unpublished > 0 {
                        self.publish();
                    }
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

mod request;
#[cfg(test)]
mod tests;
