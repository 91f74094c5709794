//! Tells Kubernetes what the snapshot says: the `PodNetworkProblem` condition on this node
//! and Events on the affected Pods and the Node. The decisions are `podnet_probe::notify`'s
//! (pure, unit-tested); this worker holds the clock, performs the writes through [`NodeApi`]
//! with a timeout each, and retries the condition with backoff. It reads only the snapshot.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kube::api::{Patch, PatchParams, PostParams};
use podnet_probe::metrics::{NotifyMetrics, WriteObject};
use podnet_probe::notify::{EventTracker, Write, Written, condition, events};
use podnet_probe::snapshot::Snapshot;
use podnet_probe::util::backoff::Backoff;
use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// One API request at most this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the heartbeat and retries are looked at, without a new snapshot.
const TICK: Duration = Duration::from_secs(1);
/// `fieldManager` of the condition patch.
const FIELD_MANAGER: &str = "podnet-agent";
/// The Event writes of one step take at most this long together; the rest are dropped (an
/// API that answers slowly must not hold up the condition behind a burst of Events).
const EVENTS_BUDGET: Duration = Duration::from_secs(30);
/// One loop turn takes at most a condition read and write and [`EVENTS_BUDGET`]; silence
/// beyond this is a hang (`/healthz`).
pub const MAX_SILENCE: Duration = Duration::from_secs(120);

/// What to write.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// This node.
    pub node: String,
    /// Write the node condition.
    pub conditions: bool,
    /// Write Events (they need pod identities: the Kubernetes pod source).
    pub events: bool,
    /// Rewrite the condition at least this often.
    pub heartbeat: Duration,
    /// Event token bucket: size.
    pub events_burst: u32,
    /// Event token bucket: refill per minute.
    pub events_per_minute: u32,
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The request could not be built (a name the API would refuse).
    #[error("building the request: {0}")]
    Build(#[from] kube::core::request::Error),
    /// The API answered an error, or the connection failed.
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// No answer within [`WRITE_TIMEOUT`].
    #[error("no answer within {WRITE_TIMEOUT:?}")]
    Timeout,
}

/// The four requests this worker makes (the real API, or a test's fake).
pub trait NodeApi {
    /// `GET /api/v1/nodes/{node}/status` (`kubectl get node NODE -o json`).
    fn node_status(&self, node: &str) -> impl Future<Output = Result<Value, WriteError>> + Send;
    /// `PATCH /api/v1/nodes/{node}/status`, strategic merge (`kubectl patch node NODE
    /// --subresource status --type strategic -p BODY`).
    fn patch_node_status(
        &self,
        node: &str,
        body: &Value,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;
    /// `POST /apis/events.k8s.io/v1/namespaces/{ns}/events`.
    fn create_event(
        &self,
        ns: &str,
        body: &Value,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;
    /// `PATCH /apis/events.k8s.io/v1/namespaces/{ns}/events/{name}`, merge patch.
    fn patch_event(
        &self,
        ns: &str,
        name: &str,
        body: &Value,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;
}

/// [`NodeApi`] over a kube client.
#[derive(Clone)]
pub struct KubeApi(pub kube::Client);

async fn send(client: &kube::Client, req: http::Request<Vec<u8>>) -> Result<Value, WriteError> {
    match tokio::time::timeout(WRITE_TIMEOUT, client.request::<Value>(req)).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(WriteError::Timeout),
    }
}

fn events_url(ns: &str) -> kube::core::Request {
    kube::core::Request::new(format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"))
}

impl NodeApi for KubeApi {
    async fn node_status(&self, node: &str) -> Result<Value, WriteError> {
        let req = kube::core::Request::new("/api/v1/nodes").get_subresource("status", node)?;
        send(&self.0, req).await
    }

    async fn patch_node_status(&self, node: &str, body: &Value) -> Result<(), WriteError> {
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let req = kube::core::Request::new("/api/v1/nodes").patch_subresource(
            "status",
            node,
            &pp,
            &Patch::Strategic(body),
        )?;
        send(&self.0, req).await.map(drop)
    }

    async fn create_event(&self, ns: &str, body: &Value) -> Result<(), WriteError> {
        let data = serde_json::to_vec(body).unwrap_or_default();
        let req = events_url(ns).create(&PostParams::default(), data)?;
        send(&self.0, req).await.map(drop)
    }

    async fn patch_event(&self, ns: &str, name: &str, body: &Value) -> Result<(), WriteError> {
        let req = events_url(ns).patch(name, &PatchParams::default(), &Patch::Merge(body))?;
        send(&self.0, req).await.map(drop)
    }
}

/// The condition's writer: what was written, and when to retry after a failure.
struct ConditionWriter {
    /// Read back from the API once before the first write (keeps `lastTransitionTime` across
    /// restarts).
    read: bool,
    written: Option<Written>,
    retry_at: Option<Instant>,
    backoff: Backoff,
}

impl ConditionWriter {
    async fn step(
        &mut self,
        api: &impl NodeApi,
        cfg: &NotifyConfig,
        want: &condition::Desired,
        metrics: &NotifyMetrics,
    ) {
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        if !self.read {
            match api.node_status(&cfg.node).await {
                Ok(node) => {
                    self.written = Written::from_node(&node);
                    self.read = true;
                }
                Err(e) => {
                    // Without it the first write starts a new transition: acceptable, but
                    // try again first.
                    warn!(error = %e, node = %cfg.node, "cannot read the node's conditions");
                    self.retry_at = Some(Instant::now() + self.backoff.next_delay());
                    self.read = matches!(e, WriteError::Api(kube::Error::Api(ref s)) if s.code == 403 || s.code == 404);
                    return;
                }
            }
        }
        let Some(patch) = condition::plan(
            self.written.as_ref(),
            want,
            SystemTime::now(),
            cfg.heartbeat,
        ) else {
            return;
        };
        let changed = self
            .written
            .as_ref()
            .is_none_or(|w| w.problem != patch.written.problem || w.reason != patch.written.reason);
        match api.patch_node_status(&cfg.node, &patch.body).await {
            Ok(()) => {
                metrics.write(WriteObject::Condition, true);
                if changed {
                    info!(
                        condition = condition::CONDITION_TYPE,
                        problem = patch.written.problem,
                        reason = %patch.written.reason,
                        "node condition written"
                    );
                }
                self.written = Some(patch.written);
                self.retry_at = None;
                self.backoff.reset();
            }
            Err(e) => {
                metrics.write(WriteObject::Condition, false);
                warn!(error = %e, "cannot write the node condition; retrying");
                self.retry_at = Some(Instant::now() + self.backoff.next_delay());
            }
        }
    }
}

/// Perform one step's Event writes; a failed one is forgotten by the tracker.
async fn write_events(
    api: &impl NodeApi,
    tracker: &mut EventTracker,
    step: events::Step,
    metrics: &NotifyMetrics,
) {
    if step.dropped > 0 {
        metrics.dropped(step.dropped);
        debug!(dropped = step.dropped, "Events over the rate limit dropped");
    }
    let deadline = Instant::now() + EVENTS_BUDGET;
    for w in step.writes {
        if Instant::now() >= deadline {
            metrics.dropped(1);
            tracker.failed(&w);
            continue;
        }
        let result = match &w {
            Write::Create {
                namespace, body, ..
            } => api.create_event(namespace, body).await,
            Write::Series {
                namespace,
                name,
                body,
            } => api.patch_event(namespace, name, body).await,
        };
        metrics.write(WriteObject::Event, result.is_ok());
        if let Err(e) = result {
            let (ns, name) = w.target();
            warn!(error = %e, namespace = ns, event = name, "cannot write an Event");
            tracker.failed(&w);
        }
    }
}

/// Run until `shutdown`: on every new snapshot, and every [`TICK`] for heartbeats and retries.
pub async fn run(
    api: impl NodeApi,
    cfg: NotifyConfig,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    metrics: NotifyMetrics,
    beat: impl Fn(),
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut cond = cfg.conditions.then(|| ConditionWriter {
        read: false,
        written: None,
        retry_at: None,
        backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
    });
    let mut tracker = cfg
        .events
        .then(|| EventTracker::new(&cfg.node, cfg.events_burst, cfg.events_per_minute));
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut want: Option<condition::Desired> = None;
    let mut seen_generation = None;
    loop {
        beat();
        tokio::select! {
            () = &mut shutdown => return,
            r = snapshots.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
        let snap = Arc::clone(&snapshots.borrow_and_update());
        let fresh = seen_generation != Some(snap.generation);
        seen_generation = Some(snap.generation);
        let work = async {
            if fresh {
                want = condition::desired(&snap).or(want.take());
            }
            if let (Some(c), Some(w)) = (cond.as_mut(), want.as_ref()) {
                c.step(&api, &cfg, w, &metrics).await;
            }
            // Held-back starts are told as tokens return: look again on the tick a token is
            // there, with the latest snapshot (what recovered meanwhile is not told).
            if let Some(t) = tracker.as_mut()
                && (fresh || t.due(Instant::now()))
                && let Some(seen) = events::observe(&snap)
            {
                let step = t.step(&seen, SystemTime::now(), Instant::now());
                metrics.pending(t.pending());
                write_events(&api, t, step, &metrics).await;
            }
        };
        tokio::select! {
            () = &mut shutdown => return,
            () = work => {}
        }
    }
}

/// Start the writer if anything is to be written: the condition whenever an API is
/// configured (`--kubeconfig` or in-cluster) and not `--no-conditions`; Events with the
/// Kubernetes pod source and not `--no-events`.
pub async fn start(
    args: &crate::config::Args,
    node: &str,
    kube_mode: bool,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    metrics: &mut podnet_probe::metrics::Metrics,
    workers: &podnet_probe::model::Workers,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    use anyhow::Context;
    let api_configured = args.kubeconfig.is_some() || podnet_probe::kube::in_cluster();
    let cfg = NotifyConfig {
        node: node.to_owned(),
        conditions: api_configured && !args.no_conditions,
        events: kube_mode && !args.no_events,
        heartbeat: args.condition_heartbeat,
        events_burst: args.events_burst,
        events_per_minute: args.events_per_minute,
    };
    if !cfg.conditions && !cfg.events {
        return Ok(None);
    }
    let client = podnet_probe::kube::client(args.kubeconfig.as_deref())
        .await
        .context("connecting to the Kubernetes API for the node condition and Events")?;
    info!(
        conditions = cfg.conditions,
        events = cfg.events,
        "telling Kubernetes: node condition {} and Events",
        condition::CONDITION_TYPE
    );
    let m = metrics.notify();
    Ok(Some(crate::supervise::spawn_worker(
        workers,
        "notify",
        |guard| async move {
            // The writer beats every turn of its loop (at least every second while idle); the
            // guard marks the worker stopped, panicked or hung.
            guard.expect_beats(MAX_SILENCE);
            run(
                KubeApi(client),
                cfg,
                snapshots,
                m,
                || guard.beat(),
                shutdown,
            )
            .await;
        },
    )))
}

#[cfg(test)]
#[path = "notify_tests.rs"]
mod tests;
