//! A Kubernetes API server double for pods, speaking the real protocol over plain HTTP, so the
//! agent's Kubernetes source can be tested without a cluster. (The agent runs its own list/watch
//! loop on kube-rs `Api::list`/`Api::watch`, not kube-rs `watcher`, because `watcher` hides
//! bookmarks; the double serves what a real apiserver would to either.)
//!
//! Served (GET only): `/api/v1/pods` and `/api/v1/namespaces/{ns}/pods` (list and watch),
//! `/api/v1/nodes`, `/apis/crd.projectcalico.org/v1/blockaffinities` and
//! `/apis/events.k8s.io/v1/events` (list and watch, the same machinery: one store and revision,
//! objects told apart by `kind`),
//! `/api/v1/namespaces/{ns}/pods/{name}`, `/api/v1/nodes/{name}`, `/version`, `/api`, `/apis`,
//! `/api/v1`. For the control-plane check (`controlplane.rs` builds them): APIServices,
//! Validating/MutatingWebhookConfigurations and CRDs (cluster-scoped lists and watches),
//! Services (`/api/v1[/namespaces/{ns}]/services`, and `GET …/services/{name}`) and
//! EndpointSlices (`/apis/discovery.k8s.io/v1[/namespaces/{ns}]/endpointslices`, with label
//! selectors). Anything else is a 404 `Status`.
//!
//! Modelled kube-apiserver behaviour:
//! - **Lists**: a `PodList` whose `metadata.resourceVersion` is the store's revision; field
//!   selectors on the pod fields the apiserver supports (others: 400 `field label not
//!   supported`), label selectors, `limit`/`continue` pagination at a fixed revision (continue
//!   tokens are etcd3's: revision + next key), and the `resourceVersion` ×
//!   `resourceVersionMatch` × `limit` table: unset → most recent; `"0"` → any (current state,
//!   `limit` ignored like the watch cache); `N` + `NotOlderThan` (or legacy without a limit) →
//!   the current state; `N` + `Exact` (or legacy with a limit) → the state at `N`, rebuilt from
//!   history; a revision below the compaction point → 410 Expired, an expired continue token →
//!   410 with an inconsistent-continuation token; a future revision → wait, then 504.
//! - **Watches**: newline-delimited `WatchEvent`s in a chunked 200 response, filtered like the
//!   watch cache (a change that makes a pod stop matching is `DELETED`, start matching is
//!   `ADDED`); `BOOKMARK`s every [`Config::bookmark_interval`] with `allowWatchBookmarks`; a clean
//!   end after `timeoutSeconds`. `resourceVersion` unset ("start at most
//!   recent") and `"0"` ("start at any") both begin with synthetic `ADDED` events for the
//!   current state, then stream changes; `N` streams changes after `N` (a future `N` too, as
//!   the watch cache does), or one `ERROR` event with a 410 `Expired` Status (`too old resource
//!   version: N (C)`, C the compaction point) and the end of the stream if `N` < C.
//!   `sendInitialEvents=true` (kube-rs streaming lists) is honoured: initial `ADDED`s, then a
//!   `BOOKMARK` annotated `k8s.io/initial-events-end`.
//! - **Store**: one global revision; every write sets the object's `resourceVersion`; a bounded
//!   history window (the watch cache) plus [`KubeApiServer::compact`].
//!
//! Malformed objects ([`malformed`], [`KubeApiServer::insert_raw`]) are served byte for byte.
//! Note that a typed kube-rs `Api<Pod>` fails a whole list (and reports an error per watch
//! line) on one such item: skipping them needs per-item decoding in the agent.
//!
//! Reviews (`auth.rs`): `POST` TokenReviews and SubjectAccessReviews (non-resource URLs) answer
//! from tokens and grants the test sets ([`KubeApiServer::add_token`],
//! [`KubeApiServer::grant_non_resource`]).
//!
//! Writes (`writes.rs`): `GET`/`PATCH` `/api/v1/nodes/{name}/status` (strategic merge of
//! `status.conditions` by `type`; a merge patch replaces the list) and `events.k8s.io/v1`
//! Events (create with validation, merge-patch, get, list), each logged with its body
//! ([`KubeApiServer::writes`]).
//!
//! Not modelled: other writes through the API, authentication (any bearer token is accepted),
//! protobuf, HTTP/2, `/watch/` legacy paths, server-side apply, and `resourceVersion` on GETs
//! of single objects (ignored).

mod auth;
mod calico;
mod client;
mod control;
mod controlplane;
pub mod metadata;
mod pod;
mod query;
mod selectors;
mod server;
mod status;
mod store;
#[cfg(test)]
mod tests;
mod watch;
mod writes;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub use calico::{block_affinity, calico_node, calico_node_v6};
pub use client::{WatchStream, get_json, get_json_accept, http_get, http_get_accept};
pub use control::{Outage, RequestKind, RequestRecord, RequestStats};
pub use controlplane::{
    apiserver_mirror_pod, apiservice, crd_with_conversion, endpoint_slice, service,
    webhook_configuration,
};
pub use pod::{CREATION_TIMESTAMP, PodBuilder, malformed, numbered_pods, uid_for};
pub use store::Resource;
pub use writes::WriteRecord;

use server::Shared;

/// Tunables of the double.
#[derive(Debug, Clone)]
pub struct Config {
    /// Changes kept for watches (the watch cache window); older ones are compacted away.
    pub history_window: usize,
    /// Period of `BOOKMARK` events on watches that allow them (the apiserver's is about 1 min).
    pub bookmark_interval: Duration,
    /// Watch duration when `timeoutSeconds` is absent (the apiserver picks 30–60 min).
    pub default_watch_timeout: Duration,
    /// How long a request for a future resourceVersion waits before its 504 (apiserver: 3 s).
    pub too_large_wait: Duration,
    /// The revision of the empty store.
    pub initial_revision: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            history_window: 1000,
            bookmark_interval: Duration::from_secs(60),
            default_watch_timeout: Duration::from_secs(1800),
            too_large_wait: Duration::from_secs(3),
            initial_revision: 100,
        }
    }
}

/// A running API server double. Dropping it stops the server and joins its thread.
#[derive(Debug)]
pub struct KubeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl KubeApiServer {
    /// Create or replace a cluster-scoped object (a Node from [`calico_node`], a
    /// BlockAffinity from [`block_affinity`], an APIService, …) or a namespaced one other than
    /// a pod (a Service, an EndpointSlice); returns its revision.
    pub fn apply_object(&self, obj: Value) -> u64 {
        // Events live with the written ones (`writes.rs`), where the API's Event routes read.
        if obj.get("kind").and_then(Value::as_str) == Some("Event") {
            return self
                .shared
                .writes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .put_event(obj);
        }
        self.shared.write(|s| s.put(obj))
    }

    /// Delete a cluster-scoped object; its revision, or `None` if it did not exist.
    pub fn delete_object(&self, resource: Resource, name: &str) -> Option<u64> {
        self.shared.write(|s| s.delete(&resource.key("", name)))
    }

    /// Delete a namespaced object other than a pod (a Service, an EndpointSlice).
    pub fn delete_namespaced(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
    ) -> Option<u64> {
        self.shared
            .write(|s| s.delete(&resource.key(namespace, name)))
    }

    /// Every write received (node status patches, Event creates and patches), in order, with
    /// its body and the status answered.
    pub fn writes(&self) -> Vec<WriteRecord> {
        self.shared
            .writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log()
    }

    /// The Events stored (as written, plus `metadata.uid`/`resourceVersion`).
    pub fn events(&self) -> Vec<Value> {
        self.shared
            .writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .events()
    }

    /// `status.conditions` of node `name` as written through the API.
    pub fn node_conditions(&self, name: &str) -> Vec<Value> {
        self.shared
            .writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .conditions(name)
    }

    /// Preset node `name`'s conditions (e.g. the kubelet's `Ready`, the CNI's
    /// `NetworkUnavailable`), as if others had written them.
    pub fn set_node_conditions(&self, name: &str, conditions: Vec<Value>) {
        self.shared
            .writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_conditions(name, conditions);
    }

    /// Start on `addr` (port 0: any free port), inside network namespace `netns` if given.
    pub fn start(netns: Option<&str>, addr: SocketAddr) -> Result<Self> {
        Self::start_with(netns, addr, Config::default())
    }

    /// Start with explicit tunables.
    pub fn start_with(netns: Option<&str>, addr: SocketAddr, config: Config) -> Result<Self> {
        let shared = Arc::new(Shared::new(config));
        let (addr, thread) = server::spawn(shared.clone(), netns.map(str::to_owned), addr)?;
        Ok(KubeApiServer {
            shared,
            addr,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Write a kubeconfig pointing at this server (dummy bearer token).
    pub fn kubeconfig(&self, path: &Path) -> Result<()> {
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: podnet-double\n  cluster:\n    \
             server: {}\nusers:\n- name: podnet-test\n  user:\n    token: podnet-test-token\n\
             contexts:\n- name: podnet-double\n  context:\n    cluster: podnet-double\n    \
             user: podnet-test\n    namespace: default\ncurrent-context: podnet-double\n",
            self.url()
        );
        std::fs::write(path, yaml).with_context(|| format!("writing {}", path.display()))
    }

    /// Create or replace a pod (by `metadata.namespace`/`metadata.name`); returns its revision.
    /// Use [`Self::insert_raw`] for objects without a name.
    pub fn apply(&self, pod: Value) -> Result<u64> {
        for field in ["/metadata/name", "/metadata/namespace"] {
            if pod.pointer(field).and_then(Value::as_str).is_none() {
                bail!("pod without {field}: use insert_raw for malformed objects");
            }
        }
        Ok(self.shared.write(|s| s.put(pod)))
    }

    /// Store any JSON as a pod, malformed or not (no name: stored under a unique key).
    pub fn insert_raw(&self, obj: Value) -> u64 {
        self.shared.write(|s| s.put(obj))
    }

    /// Create or replace many pods, one revision each; returns the last revision.
    pub fn bulk_insert(&self, pods: impl IntoIterator<Item = Value>) -> u64 {
        self.shared.write(|s| {
            for p in pods {
                s.put(p);
            }
            s.revision()
        })
    }

    /// Modify a stored pod; returns the new revision, or None if it does not exist.
    pub fn update(&self, namespace: &str, name: &str, f: impl FnOnce(&mut Value)) -> Option<u64> {
        self.shared
            .write(|s| s.update(&format!("{namespace}/{name}"), f))
    }

    /// Delete a pod; returns the deletion's revision, or None if it does not exist.
    pub fn delete(&self, namespace: &str, name: &str) -> Option<u64> {
        self.shared
            .write(|s| s.delete(&format!("{namespace}/{name}")))
    }

    /// A stored pod.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Value> {
        let store = self.shared.store();
        store
            .get(&format!("{namespace}/{name}"))
            .map(|o| Value::clone(o))
    }

    /// Number of stored pods.
    pub fn pod_count(&self) -> usize {
        self.shared.store().len()
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        self.shared.store().revision()
    }

    /// The compaction point: watches from an older revision get 410.
    pub fn compacted_revision(&self) -> u64 {
        self.shared.store().compacted()
    }

    /// Forget all history up to the current revision (as etcd compaction does); returns it.
    /// Open watches that are caught up continue; new watches from older revisions get 410.
    pub fn compact(&self) -> u64 {
        self.shared.write(|s| s.compact())
    }

    /// Make `GET /api/v1/nodes/{name}` answer for a node without pods.
    pub fn register_node(&self, name: &str) {
        self.shared.write(|s| s.register_node(name));
    }

    /// The next `n` requests (of any kind) answer 500 InternalError.
    pub fn fail_next(&self, n: u32) {
        self.shared.control.fail_next(n);
    }

    /// Every request answers 500 while `on`.
    pub fn fail_all(&self, on: bool) {
        self.shared.control.fail_all(on);
    }

    /// While `on`, every other watch request from a resourceVersion (the first one after
    /// switching on, the third, …) gets what a compacted revision gets: one `ERROR` event with
    /// a 410 `Expired` Status and the end of the stream. Lists are unaffected (a list without
    /// a resourceVersion is never too old).
    pub fn expire_every_other_watch(&self, on: bool) {
        self.shared.control.expire_every_other_watch(on);
    }

    /// Start (`Some`) or end (`None`) an outage. Starting one closes every open watch stream.
    /// Returns once the listening socket is closed (`Refuse`) or open again (`None`).
    pub fn set_outage(&self, outage: Option<Outage>) -> Result<()> {
        self.shared.control.set_outage(outage);
        let want_listening = outage != Some(Outage::Refuse);
        let deadline = Instant::now() + Duration::from_secs(10);
        while *self.shared.listening.borrow() != want_listening {
            if Instant::now() > deadline {
                bail!("the server did not reach outage state {outage:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Open watch streams send nothing (not even bookmarks, nor the timeout's end) until
    /// [`Self::release_watches`]; their connections stay open.
    pub fn stall_watches(&self) {
        self.shared.control.stalled.send_replace(true);
    }

    /// End a stall: held-back events are delivered.
    pub fn release_watches(&self) {
        self.shared.control.stalled.send_replace(false);
    }

    /// Close every open watch stream now (cleanly, as an apiserver closing watches does).
    pub fn close_watches(&self) {
        self.shared.control.close_watches();
    }

    /// Delay every response by `d` (zero: no delay).
    pub fn set_delay(&self, d: Duration) {
        self.shared.control.set_delay(d);
    }

    /// Request counters.
    pub fn stats(&self) -> RequestStats {
        self.shared.control.stats()
    }

    /// Number of currently open watch streams.
    pub fn open_watches(&self) -> usize {
        self.shared.control.open_watches()
    }

    /// Every request received, in order.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.shared.control.log()
    }

    /// Reset the counters and the request log.
    pub fn clear_request_log(&self) {
        self.shared.control.clear();
    }

    /// Poll `pred` every 10 ms until it holds (true) or `timeout` passes (false).
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(self) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        self.shared.control.stop.send_replace(true);
        self.shared.control.close_watches();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
