//! The list/watch state machine against an API answered in process: `kube::Client` over a
//! tower service that hands every request to the test, which answers it (or drops it). Time
//! is tokio's paused clock, so stalls and backoff take no real time and are measured exactly.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant as TokioInstant;

use super::*;
use crate::model::RestartReason;

type TestBody = UnsyncBoxBody<Bytes, Infallible>;
type Exchange = (
    Request<kube::client::Body>,
    oneshot::Sender<Response<TestBody>>,
);

/// Every request goes to the test; a dropped answer is a broken connection.
#[derive(Clone)]
struct Scripted(mpsc::UnboundedSender<Exchange>);

impl tower::Service<Request<kube::client::Body>> for Scripted {
    type Response = Response<TestBody>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        let (tx, rx) = oneshot::channel();
        let _ = self.0.send((req, tx));
        Box::pin(async move {
            rx.await.map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::ConnectionReset, "test dropped it")
            })
        })
    }
}

/// One request as the watcher made it.
struct Call {
    watch: bool,
    resource_version: Option<String>,
    at: TokioInstant,
    reply: oneshot::Sender<Response<TestBody>>,
}

impl Call {
    fn json(self, status: StatusCode, body: Value) {
        let body = Full::new(Bytes::from(body.to_string())).boxed_unsync();
        let _ = self
            .reply
            .send(Response::builder().status(status).body(body).unwrap());
    }

    fn list(self, rv: &str, pods: &[Value]) {
        assert!(!self.watch, "expected a list");
        self.json(
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": rv}, "items": pods}),
        );
    }

    fn status(self, code: u16) {
        self.json(
            StatusCode::from_u16(code).unwrap(),
            json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": "Test", "message": format!("status {code}")}),
        );
    }

    /// 429 with `Retry-After: header` and/or `details.retryAfterSeconds`, or neither.
    fn throttled(self, header: Option<u32>, details: Option<u32>) {
        let mut status = json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 429, "reason": "TooManyRequests", "message": "slow down"});
        if let Some(secs) = details {
            status["details"] = json!({"retryAfterSeconds": secs});
        }
        let mut res = Response::builder().status(429);
        if let Some(secs) = header {
            res = res.header("Retry-After", secs.to_string());
        }
        let body = Full::new(Bytes::from(status.to_string())).boxed_unsync();
        let _ = self.reply.send(res.body(body).unwrap());
    }

    /// A list page sent in small chunks, as a slow network would deliver it.
    fn list_chunked(self, body: String) {
        assert!(!self.watch, "expected a list");
        let chunks: Vec<Result<Frame<Bytes>, Infallible>> = body
            .as_bytes()
            .chunks(1000)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let body = StreamBody::new(futures::stream::iter(chunks)).boxed_unsync();
        let _ = self
            .reply
            .send(Response::builder().status(200).body(body).unwrap());
    }

    /// A streaming watch answer; events are written to the returned sender, and the stream
    /// ends when it is dropped.
    fn stream(self) -> mpsc::UnboundedSender<Value> {
        assert!(self.watch, "expected a watch");
        let (tx, rx) = mpsc::unbounded_channel::<Value>();
        let events = futures::stream::unfold(rx, |mut rx| async move {
            let ev = rx.recv().await?;
            let line = Bytes::from(format!("{ev}\n"));
            Some((Ok::<_, Infallible>(Frame::data(line)), rx))
        });
        let body = StreamBody::new(events).boxed_unsync();
        let _ = self
            .reply
            .send(Response::builder().status(200).body(body).unwrap());
        tx
    }
}

struct Harness {
    calls: mpsc::UnboundedReceiver<Exchange>,
    view: watch::Receiver<Arc<KubeView>>,
    metrics: KubeMetrics,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

const WATCH_TIMEOUT: Duration = Duration::from_secs(10);

impl Harness {
    fn start() -> Self {
        Self::start_with(|w| w)
    }

    fn start_with(hook: impl FnOnce(KubeWatcher) -> KubeWatcher) -> Self {
        let (tx, calls) = mpsc::unbounded_channel();
        let client = kube::Client::new(Scripted(tx), "default");
        let metrics = KubeMetrics::default();
        let config = WatchConfig {
            node: "n1".into(),
            watch_timeout: WATCH_TIMEOUT,
            page_size: 100,
        };
        let (watcher, view) = KubeWatcher::new(client, config, metrics.clone());
        let watcher = hook(watcher);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(watcher.run(async {
            let _ = stopped.await;
        }));
        Harness {
            calls,
            view,
            metrics,
            stop: Some(stop),
            task,
        }
    }

    /// The next request (within a generous guard of paused time).
    async fn next(&mut self) -> Call {
        let (req, reply) = tokio::time::timeout(Duration::from_secs(3600), self.calls.recv())
            .await
            .expect("no request from the watcher")
            .expect("watcher gone");
        let query = req.uri().query().unwrap_or("").to_owned();
        let param = |name: &str| {
            query.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == name).then(|| v.to_owned())
            })
        };
        assert_eq!(req.uri().path(), "/api/v1/pods");
        // This node's pods that still run: Failed and Succeeded ones never reach the agent.
        assert_eq!(
            param("fieldSelector").as_deref(),
            Some("spec.nodeName%3Dn1%2Cstatus.phase%21%3DFailed%2Cstatus.phase%21%3DSucceeded")
        );
        Call {
            watch: param("watch").as_deref() == Some("true"),
            resource_version: param("resourceVersion"),
            at: TokioInstant::now(),
            reply,
        }
    }

    fn health(&self) -> KubeHealth {
        self.view.borrow().health.clone()
    }

    /// Let the watcher run until it waits again.
    async fn settle(&self) {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        self.task.await.unwrap();
    }
}

fn pod(name: &str, rv: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "team", "uid": format!("uid-{name}"), "resourceVersion": rv},
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Running", "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}]}
    })
}

fn event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}

fn bookmark(rv: &str) -> Value {
    event(
        "BOOKMARK",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"resourceVersion": rv}}),
    )
}

fn gone_event() -> Value {
    event(
        "ERROR",
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 410, "reason": "Expired", "message": "too old resource version"}),
    )
}

#[tokio::test(start_paused = true)]
async fn lists_then_watches_from_the_listed_version_and_applies_events() {
    let mut h = Harness::start();
    h.next().await.list("5", &[pod("a", "4")]);
    let w = h.next().await;
    assert!(w.watch);
    assert_eq!(w.resource_version.as_deref(), Some("5"));
    let events = w.stream();
    events.send(event("ADDED", pod("b", "6"))).unwrap();
    h.settle().await;
    let names: Vec<String> = h
        .view
        .borrow()
        .pods
        .iter()
        .map(|t| t.pod.name.clone())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert!(h.view.borrow().synced);
    assert!(h.health().healthy && h.metrics.is_healthy());
    assert_eq!(h.metrics.request_count("list"), 1);
    assert_eq!(h.metrics.request_count("watch"), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn bookmarks_advance_the_resource_version_and_a_timed_out_watch_is_no_error() {
    let mut h = Harness::start();
    h.next().await.list("5", &[]);
    let events = h.next().await.stream();
    events.send(bookmark("9")).unwrap();
    events.send(event("MODIFIED", pod("a", "11"))).unwrap();
    events.send(bookmark("12")).unwrap();
    h.settle().await;
    // The server ends the watch at its timeout: the next one continues from the bookmark.
    tokio::time::sleep(WATCH_TIMEOUT).await;
    drop(events);
    let next = h.next().await;
    assert!(next.watch, "a watch ended at its timeout must not re-list");
    assert_eq!(next.resource_version.as_deref(), Some("12"));
    assert_eq!(h.health().restarts, 0, "{:?}", h.health().last_error);
    assert!(h.health().healthy);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn gone_as_event_or_status_relists_never_retries_the_version() {
    let mut h = Harness::start();
    h.next().await.list("5", &[]);
    let events = h.next().await.stream();
    events.send(gone_event()).unwrap();
    let relist = h.next().await;
    assert!(!relist.watch, "410 must be followed by a list");
    relist.list("20", &[]);
    // The watch start itself answered 410.
    let w = h.next().await;
    assert_eq!(w.resource_version.as_deref(), Some("20"));
    w.status(410);
    let relist = h.next().await;
    assert!(!relist.watch);
    assert_eq!(h.metrics.restart_count(RestartReason::Gone), 2);
    assert_eq!(h.health().restarts, 2);
    drop(events);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_watch_is_stalled_after_its_timeout_plus_margin_and_relists() {
    let mut h = Harness::start();
    h.next().await.list("5", &[]);
    let w = h.next().await;
    let started = w.at;
    let events = w.stream(); // open, silent
    let relist = h.next().await;
    let silent = relist.at - started;
    // 10 s timeout + min(5 s, 30 s) margin, plus at most 1.25 × the first backoff step.
    assert!(silent >= Duration::from_secs(15), "{silent:?}");
    assert!(
        silent <= Duration::from_secs(15) + BACKOFF_MIN.mul_f64(1.25),
        "{silent:?}"
    );
    assert!(!relist.watch, "a stalled watch is replaced by a fresh list");
    assert_eq!(h.metrics.restart_count(RestartReason::Stalled), 1);
    let health = h.health();
    assert!(!health.healthy && !h.metrics.is_healthy());
    assert!(health.unhealthy_since.is_some());
    assert!(health.last_error.unwrap().starts_with("stalled: "));
    drop(events);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn server_errors_and_early_ends_retry_the_same_version_with_growing_backoff() {
    let mut h = Harness::start();
    h.next().await.list("5", &[]);
    let w = h.next().await;
    let mut last = w.at;
    w.status(503);
    let mut gaps = Vec::new();
    for _ in 0..3 {
        let w = h.next().await;
        assert!(w.watch, "a 5xx on the watch retries the watch");
        assert_eq!(w.resource_version.as_deref(), Some("5"));
        gaps.push(w.at - last);
        last = w.at;
        w.status(503);
    }
    h.settle().await;
    // 200 ms, 400 ms, 800 ms steps, each within [0.75, 1.25).
    for (gap, step) in gaps.iter().zip([200u64, 400, 800]) {
        let step = Duration::from_millis(step);
        assert!(
            *gap >= step.mul_f64(0.75) && *gap < step.mul_f64(1.25),
            "{gaps:?}"
        );
    }
    assert_eq!(h.metrics.restart_count(RestartReason::ServerError), 4);
    // A stream that ends long before its timeout is a restart too, not a quiet success.
    let events = h.next().await.stream();
    drop(events);
    let w = h.next().await;
    assert!(w.watch);
    assert_eq!(h.metrics.restart_count(RestartReason::Closed), 1);
    // A broken connection.
    drop(w);
    let w = h.next().await;
    assert!(w.watch);
    assert_eq!(h.metrics.restart_count(RestartReason::Connect), 1);
    drop(w);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_successful_list_restores_health_but_only_a_lasting_watch_resets_the_backoff() {
    let mut h = Harness::start();
    let first = h.next().await;
    let mut last = first.at;
    first.status(500);
    for _ in 0..4 {
        let l = h.next().await;
        last = l.at;
        l.status(500);
    }
    assert!(!h.health().healthy);
    let unhealthy_since = h.health().unhealthy_since.expect("unhealthy");
    // Failing again does not move the start of the unhealthy spell.
    let l = h.next().await;
    assert!(
        l.at - last >= Duration::from_millis(2400),
        "backoff did not grow"
    );
    assert_eq!(h.health().unhealthy_since, Some(unhealthy_since));
    l.list("7", &[]);
    let w = h.next().await;
    h.settle().await;
    let health = h.health();
    assert!(health.healthy && h.metrics.is_healthy());
    assert_eq!(health.unhealthy_since, None);
    assert_eq!(health.restarts, 5);
    assert!(health.last_error.unwrap().starts_with("server_error: "));
    // A watch failing right after the list: the backoff keeps growing (6th step: 6.4 s).
    let failed_at = w.at;
    w.status(500);
    let w = h.next().await;
    assert!(
        w.at - failed_at >= Duration::from_millis(6400).mul_f64(0.75),
        "backoff reset by a list that was followed by a failure: {:?}",
        w.at - failed_at
    );
    // A watch that stays healthy for its whole timeout earns a fresh start.
    let events = w.stream();
    tokio::time::sleep(WATCH_TIMEOUT + Duration::from_secs(1)).await;
    let failed_at = TokioInstant::now();
    events.send(gone_event()).unwrap();
    let again = h.next().await;
    assert!(
        again.at - failed_at < BACKOFF_MIN.mul_f64(1.25),
        "backoff not reset after a healthy watch: {:?}",
        again.at - failed_at
    );
    drop(again);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_watch_failing_after_every_list_costs_a_bounded_number_of_cycles_per_minute() {
    let mut h = Harness::start();
    let t0 = TokioInstant::now();
    let mut lists = Vec::new();
    loop {
        let call = h.next().await;
        let at = call.at - t0;
        if at > Duration::from_secs(300) {
            break;
        }
        if call.watch {
            // The list worked, the watch fails at once (a recovering etcd, a broken proxy).
            call.status(410);
        } else {
            lists.push(at);
            call.list("5", &[pod("a", "4")]);
        }
    }
    let last_minute = lists
        .iter()
        .filter(|at| **at > Duration::from_secs(240))
        .count();
    // 200 ms doubling to 30 s: 9 cycles in the first minute, then one per 22.5–30 s.
    assert!(
        (15..=22).contains(&lists.len()),
        "{} list+watch cycles in 5 min: {lists:?}",
        lists.len()
    );
    assert!(last_minute <= 3, "{last_minute} cycles in the last minute");
    // One watch per list (the request past the 5 minutes may be either).
    let (l, w) = (
        h.metrics.request_count("list"),
        h.metrics.request_count("watch"),
    );
    assert!(w == l || w + 1 == l || w == l + 1, "{l} lists, {w} watches");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn too_many_requests_waits_the_servers_retry_after() {
    let mut h = Harness::start();
    // A list answered 429 with a Retry-After header.
    let l = h.next().await;
    let at = l.at;
    l.throttled(Some(12), None);
    let l = h.next().await;
    assert!(!l.watch);
    assert!(l.at - at >= Duration::from_secs(12), "{:?}", l.at - at);
    assert!(l.at - at < Duration::from_secs(13), "{:?}", l.at - at);
    l.list("5", &[]);
    // A watch answered 429 with the Status's retryAfterSeconds.
    let w = h.next().await;
    let at = w.at;
    w.throttled(None, Some(7));
    let w = h.next().await;
    assert!(w.watch, "a 429 on the watch retries the watch");
    assert!(w.at - at >= Duration::from_secs(7), "{:?}", w.at - at);
    // 429 without a hint: still a long wait, not the 200 ms first step.
    let at = w.at;
    w.throttled(None, None);
    let w = h.next().await;
    assert!(w.at - at >= THROTTLED_MIN, "{:?}", w.at - at);
    // An absurd Retry-After is capped.
    let at = w.at;
    w.throttled(Some(86_400), None);
    let w = h.next().await;
    assert!(w.at - at <= RETRY_AFTER_MAX, "{:?}", w.at - at);
    assert_eq!(h.metrics.restart_count(RestartReason::Throttled), 4);
    drop(w);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn list_pages_stream_in_and_fat_or_malformed_pods_do_not_fail_the_list() {
    let mut h = Harness::start();
    let mut fat = pod("fat", "3");
    fat["metadata"]["annotations"] = json!({"blob": "y".repeat(1 << 20)});
    let mut bad = pod("bad", "3");
    bad["status"] = json!("not an object");
    let mut failed = pod("failed", "3");
    failed["status"]["phase"] = json!("Failed");
    let first = json!({"apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": "9", "continue": "page2"},
        "items": [fat, bad, pod("a", "2")]});
    h.next().await.list_chunked(first.to_string());
    let second = h.next().await;
    assert!(!second.watch, "the continue token asks for a second page");
    second.list("9", &[failed, pod("b", "4")]);
    let w = h.next().await;
    assert!(w.watch);
    assert_eq!(w.resource_version.as_deref(), Some("9"));
    let names: Vec<String> = h
        .view
        .borrow()
        .pods
        .iter()
        .map(|t| t.pod.name.clone())
        .collect();
    assert_eq!(names, ["a", "b", "fat"]);
    assert_eq!(h.metrics.request_count("list"), 2);
    // A page that is not a list is a decode failure, retried.
    let events = w.stream();
    events.send(gone_event()).unwrap();
    h.next().await.list_chunked("{\"items\": [".to_owned());
    let retry = h.next().await;
    assert!(!retry.watch);
    assert_eq!(h.metrics.restart_count(RestartReason::Decode), 1);
    drop(retry);
    h.stop().await;
}

/// What a heartbeat hook saw: its beats, and whether (and how) it was dropped.
#[derive(Default)]
struct Liveness {
    beats: std::sync::Mutex<Vec<TokioInstant>>,
    ended: std::sync::Mutex<Option<bool>>,
}

/// Captured by the hook; records the drop (`true` when during a panic), as a worker guard does.
struct Guard(Arc<Liveness>);

impl Drop for Guard {
    fn drop(&mut self) {
        *self.0.ended.lock().unwrap() = Some(std::thread::panicking());
    }
}

fn hooked(live: &Arc<Liveness>, panic_after: usize) -> impl FnOnce(KubeWatcher) -> KubeWatcher {
    let guard = Guard(live.clone());
    move |w| {
        w.with_heartbeat(move || {
            let mut beats = guard.0.beats.lock().unwrap();
            beats.push(TokioInstant::now());
            let n = beats.len();
            drop(beats);
            assert!(n < panic_after, "injected watcher fault");
        })
    }
}

#[tokio::test(start_paused = true)]
async fn the_heartbeat_beats_through_backoff_and_quiet_watches_and_ends_with_the_watcher() {
    let live = Arc::new(Liveness::default());
    let mut h = Harness::start_with(hooked(&live, usize::MAX));
    // A long outage (backoff up to 30 s), then a watch that stays silent until it stalls.
    for _ in 0..9 {
        h.next().await.status(503);
    }
    h.next().await.list("5", &[]);
    let events = h.next().await.stream();
    let relist = h.next().await;
    assert!(!relist.watch);
    {
        let beats = live.beats.lock().unwrap();
        let gaps: Vec<Duration> = beats.windows(2).map(|w| w[1] - w[0]).collect();
        let longest = gaps.iter().max().copied().unwrap_or_default();
        assert!(
            beats.len() > 20,
            "{} beats over {:?}",
            beats.len(),
            beats[beats.len() - 1] - beats[0]
        );
        assert!(
            longest <= HEARTBEAT_EVERY,
            "a {longest:?} gap between beats"
        );
        assert!(longest <= KubeWatcher::MAX_SILENCE);
    }
    assert_eq!(*live.ended.lock().unwrap(), None, "alive while running");
    drop((events, relist));
    h.stop().await;
    assert_eq!(
        *live.ended.lock().unwrap(),
        Some(false),
        "a stopped watcher drops its heartbeat"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_watcher_drops_its_heartbeat_while_unwinding() {
    let live = Arc::new(Liveness::default());
    let mut h = Harness::start_with(hooked(&live, 3));
    h.next().await.status(503);
    // The third beat panics (in the backoff pause): the task dies, the guard says how.
    let task = std::mem::replace(&mut h.task, tokio::spawn(async {}));
    assert!(task.await.unwrap_err().is_panic());
    assert_eq!(*live.ended.lock().unwrap(), Some(true));
}

/// A burst of events is published as a few views, not one per event (each view holds every
/// pod: per event it was quadratic in pods, `agent/tests/api_storms.rs`), and nothing is held
/// back for longer than `PUBLISH_EVERY`.
#[tokio::test(start_paused = true)]
async fn a_burst_of_events_is_published_together_and_soon() {
    let mut h = Harness::start();
    h.next().await.list("5", &[]);
    let events = h.next().await.stream();
    let count = |h: &Harness| h.view.borrow().pods.len();
    events.send(event("ADDED", pod("first", "6"))).unwrap();
    h.settle().await;
    assert_eq!(count(&h), 1, "after a quiet spell at once");
    for i in 0..500 {
        events
            .send(event("ADDED", pod(&format!("p{i}"), &format!("{}", 7 + i))))
            .unwrap();
    }
    h.settle().await;
    assert_eq!(count(&h), 1, "the burst waits for the next publish");
    tokio::time::sleep(PUBLISH_EVERY).await;
    h.settle().await;
    assert_eq!(count(&h), 501, "and comes within PUBLISH_EVERY");
    h.stop().await;
}
