//! HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, `/status`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use podnet_probe::metrics::Metrics;
use podnet_probe::snapshot::Snapshot;
use tokio::sync::watch;

/// What the handlers read.
#[derive(Debug)]
pub struct AppState {
    /// The registry.
    pub metrics: Metrics,
    /// Latest verdicts.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Process start.
    pub started: SystemTime,
    /// `/healthz` fails when no full re-sync succeeded for this long.
    pub max_sync_age: Duration,
    /// Cleared if the monitor task ends.
    pub monitor_alive: AtomicBool,
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(state)
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    match s.metrics.encode() {
        Ok(body) => ([(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n",
        )
            .into_response(),
    }
}

async fn healthz(State(s): State<Arc<AppState>>) -> Response {
    if !s.monitor_alive.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "monitor stopped\n").into_response();
    }
    let live = s
        .snapshots
        .borrow()
        .is_live(SystemTime::now(), s.started, s.max_sync_age);
    if live {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        let msg = format!("no successful full re-sync for over {:?}\n", s.max_sync_age);
        (StatusCode::SERVICE_UNAVAILABLE, msg).into_response()
    }
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    if s.snapshots.borrow().synced {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "first full sync not done yet\n",
        )
            .into_response()
    }
}

async fn status(State(s): State<Arc<AppState>>) -> Response {
    let snap = Arc::clone(&s.snapshots.borrow());
    match serde_json::to_vec_pretty(&*snap) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding status failed\n",
        )
            .into_response(),
    }
}
