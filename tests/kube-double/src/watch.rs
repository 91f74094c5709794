//! Watch streams: newline-delimited `WatchEvent` JSON in a chunked 200 response, fed from the
//! store's history as the watch cache does (`k8s.io/apiserver/pkg/storage/cacher`).
//!
//! - A start revision below the compaction point gets one `ERROR` event carrying a 410
//!   `Expired` Status, `too old resource version: R (C)`, and the stream ends; so does every
//!   other watch from a revision while `expire_every_other_watch` is on (an etcd compacting
//!   faster than watchers keep up, the incident's loop).
//! - A change whose object stops matching the selectors is sent as `DELETED` (the previous
//!   object, with the change's resourceVersion); one that starts matching as `ADDED`.
//! - `allowWatchBookmarks=true`: a `BOOKMARK` every bookmark interval, carrying the revision up
//!   to which this watch has seen every change.
//! - The stream ends cleanly after `timeoutSeconds`, when the test closes watches, during an
//!   outage, and when the server stops. A watch that falls behind the history window is closed
//!   (the cacher terminates watchers it cannot feed).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::control::OpenWatch;
use super::query::{Params, WatchPlan, WatchStart, plan_watch};
use super::server::Shared;
use super::status::ApiError;
use super::store::{Change, ChangeKind, Filter, with_resource_version};

/// `GET …/pods?watch=true`.
pub(crate) async fn watch(
    shared: Arc<Shared>,
    filter: Filter,
    params: &Params,
) -> Result<Response, ApiError> {
    let plan = plan_watch(params)?;
    if let Some(rv) = plan.not_older_than {
        shared.wait_for_revision(rv).await?;
    }
    // Subscribed now, before the response goes out: a close or a change that happens before
    // the task first runs is not missed.
    let signals = Signals {
        closed: shared.control.close_epoch.subscribe(),
        stalled: shared.control.stalled.subscribe(),
        revisions: shared.revision.subscribe(),
        _open: shared.control.open_watch(),
    };
    let (tx, rx) = mpsc::channel::<String>(256);
    let shape = Shape {
        metadata_only: params.metadata_only,
    };
    tokio::spawn(run(shared, filter, plan, shape, tx, signals));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (Ok::<_, Infallible>(line), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// How a watch's objects are written: whole, or as `PartialObjectMetadata`.
#[derive(Debug, Clone, Copy)]
struct Shape {
    metadata_only: bool,
}

impl Shape {
    fn event_line(self, kind: &str, object: &Value) -> String {
        if self.metadata_only && kind != "ERROR" {
            event_line(kind, &super::metadata::partial(object))
        } else {
            event_line(kind, object)
        }
    }
}

fn event_line(kind: &str, object: &Value) -> String {
    format!("{{\"type\":\"{kind}\",\"object\":{object}}}\n")
}

fn bookmark_line(shape: Shape, revision: u64, initial_events_end: bool) -> String {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    shape.event_line(
        "BOOKMARK",
        &json!({"kind": "Pod", "apiVersion": "v1", "metadata": metadata}),
    )
}

/// The event (if any) a change produces for a watch with this filter.
fn convert(change: &Change, filter: &Filter, shape: Shape) -> Option<String> {
    let now = change.kind != ChangeKind::Deleted && filter.matches(&change.object);
    let before = change.prev.as_deref().is_some_and(|p| filter.matches(p));
    match (before, now) {
        (false, true) => Some(shape.event_line("ADDED", &change.object)),
        (true, true) => Some(shape.event_line("MODIFIED", &change.object)),
        (true, false) => {
            let prev = change.prev.as_deref().unwrap_or(&change.object);
            Some(shape.event_line("DELETED", &with_resource_version(prev, change.revision)))
        }
        (false, false) => None,
    }
}

/// Queue the events after `cursor`; returns the store's revision, or None if this watch fell
/// behind the history window.
fn drain(
    shared: &Shared,
    filter: &Filter,
    shape: Shape,
    cursor: &mut u64,
    out: &mut Vec<String>,
) -> Option<u64> {
    let (changes, revision) = {
        let store = shared.store();
        (store.changes_since(*cursor).ok()?, store.revision())
    };
    out.extend(changes.iter().filter_map(|c| convert(c, filter, shape)));
    *cursor = (*cursor).max(revision);
    Some(revision)
}

/// What a watch task listens to, and its place in the open-watch count.
struct Signals {
    closed: watch::Receiver<u64>,
    stalled: watch::Receiver<bool>,
    revisions: watch::Receiver<u64>,
    _open: OpenWatch,
}

async fn run(
    shared: Arc<Shared>,
    filter: Filter,
    plan: WatchPlan,
    shape: Shape,
    tx: mpsc::Sender<String>,
    signals: Signals,
) {
    let Signals {
        mut closed,
        mut stalled,
        mut revisions,
        _open,
    } = signals;
    let mut out = Vec::new();
    let start = {
        let store = shared.store();
        match plan.start {
            WatchStart::After(rv) if rv < store.compacted() => Err(ApiError::expired(format!(
                "too old resource version: {rv} ({})",
                store.compacted()
            ))),
            // As if etcd had compacted past `rv` (`expire_every_other_watch`).
            WatchStart::After(rv) if shared.control.take_forced_expiry() => Err(ApiError::expired(
                format!("too old resource version: {rv} ({})", store.revision()),
            )),
            WatchStart::After(rv) => Ok((rv, Vec::new())),
            WatchStart::Now => Ok((store.revision(), Vec::new())),
            WatchStart::CurrentState => {
                let revision = store.revision();
                let page = store.list(revision, &filter, None, None);
                Ok((revision, page.map(|p| p.items).unwrap_or_default()))
            }
        }
    };
    let mut cursor = match start {
        Err(expired) => {
            let _ = tx.send(event_line("ERROR", &expired.to_status())).await;
            return;
        }
        Ok((revision, initial)) => {
            out.extend(initial.iter().map(|o| shape.event_line("ADDED", o)));
            if plan.initial_events_end {
                out.push(bookmark_line(shape, revision, true));
            }
            revision
        }
    };
    // Changes already in history after a given start revision.
    if drain(&shared, &filter, shape, &mut cursor, &mut out).is_none() {
        return;
    }
    let deadline = Instant::now() + plan.timeout.unwrap_or(shared.config.default_watch_timeout);
    let interval = shared.config.bookmark_interval;
    let mut next_bookmark = Instant::now() + interval;
    loop {
        let is_stalled = *stalled.borrow_and_update();
        if !is_stalled {
            for line in out.drain(..) {
                tokio::select! {
                    sent = tx.send(line) => if sent.is_err() { return },
                    _ = closed.changed() => return,
                }
            }
            if Instant::now() >= deadline {
                return;
            }
        }
        tokio::select! {
            biased;
            _ = closed.changed() => return,
            _ = tx.closed() => return,
            _ = stalled.changed() => {}
            changed = revisions.changed(), if !is_stalled => {
                if changed.is_err() || drain(&shared, &filter, shape, &mut cursor, &mut out).is_none() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(next_bookmark), if plan.bookmarks && !is_stalled => {
                let Some(revision) = drain(&shared, &filter, shape, &mut cursor, &mut out) else {
                    return;
                };
                // Never announce a revision the store has not reached (a future start rv).
                if revision >= cursor {
                    out.push(bookmark_line(shape, cursor, false));
                }
                next_bookmark = Instant::now() + interval;
            }
            _ = tokio::time::sleep_until(deadline), if !is_stalled => return,
        }
    }
}
