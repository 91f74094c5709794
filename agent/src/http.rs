//! HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, `/status`, and who may see which.
//!
//! Only `GET`/`HEAD` without a body are served. `/status` (the node's pod inventory) and the
//! status page at `/` (the same facts as HTML) are served on loopback listeners, or behind the
//! same authorization as `/metrics` in secure mode (`/` authorized as `/status`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use podnet_probe::metrics::Metrics;
use podnet_probe::model::Workers;
use podnet_probe::snapshot::Snapshot;
use tokio::sync::watch;

use crate::auth::{Authorizer, Verdict};

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
    /// Every long-running task and thread; `/healthz` fails while one is not running.
    pub workers: Workers,
    /// `/status` serialized once per snapshot.
    pub status: StatusCache,
}

/// Which endpoints a listener serves, and to whom.
#[derive(Debug, Clone)]
pub enum Exposure {
    /// Plain HTTP on a routable address: no `/status`.
    Public,
    /// Plain HTTP on loopback: everything.
    Loopback,
    /// TLS: `/metrics` and `/status` need a bearer token the API authorizes.
    Secure(Arc<Authorizer>),
}

impl Exposure {
    /// For the start-up log line.
    pub fn describe(&self) -> &'static str {
        match self {
            Exposure::Public => "/metrics /healthz /readyz",
            Exposure::Loopback => "/metrics /healthz /readyz /status /",
            Exposure::Secure(_) => "/metrics /status / (bearer token, authorized) /healthz /readyz",
        }
    }
}

type Body = Full<Bytes>;

fn text(code: StatusCode, msg: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(msg.as_bytes())));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn body(content_type: &'static str, bytes: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(bytes));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Answer one request within `timeout` (503 after it).
pub async fn respond(
    state: &AppState,
    exposure: &Exposure,
    req: Request<Incoming>,
    timeout: Duration,
) -> Response<Body> {
    match tokio::time::timeout(timeout, route(state, exposure, &req)).await {
        Ok(r) => r,
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "request timed out\n"),
    }
}

async fn route(state: &AppState, exposure: &Exposure, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if has_body(req.headers()) {
        // The body is never read; hyper closes the connection instead of draining it.
        return text(StatusCode::PAYLOAD_TOO_LARGE, "requests carry no body\n");
    }
    let path = req.uri().path();
    match path {
        "/healthz" => healthz(state),
        "/readyz" => readyz(state),
        "/metrics" | "/status" | "/" => {
            if let Exposure::Secure(auth) = exposure {
                // The page shows what /status shows: whoever may read one may read the other.
                let authorized_as = if path == "/" { "/status" } else { path };
                match auth.check(bearer(req.headers()), authorized_as).await {
                    Ok(Verdict::Allowed) => {}
                    Ok(Verdict::Unauthenticated) => return unauthorized(),
                    Ok(Verdict::Forbidden) => {
                        return text(StatusCode::FORBIDDEN, "forbidden\n");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "authorizing a scrape failed");
                        return text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "authorization unavailable\n",
                        );
                    }
                }
            }
            match (path, exposure) {
                ("/metrics", _) => metrics(state),
                (_, Exposure::Public) => text(
                    StatusCode::NOT_FOUND,
                    "/status is served on --status-listen (loopback) or with --secure-metrics\n",
                ),
                ("/", _) => state.status.page(&state.snapshots),
                _ => state.status.response(&state.snapshots),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn unauthorized() -> Response<Body> {
    let mut r = text(StatusCode::UNAUTHORIZED, "bearer token required\n");
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// A request announcing a body (`Content-Length` > 0 or any `Transfer-Encoding`).
fn has_body(h: &HeaderMap) -> bool {
    h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// The token of `Authorization: Bearer <token>`, if any.
pub fn bearer(h: &HeaderMap) -> Option<&str> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn metrics(s: &AppState) -> Response<Body> {
    match s.metrics.encode() {
        Ok(b) => body(Metrics::CONTENT_TYPE, Bytes::from(b)),
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n",
        ),
    }
}

fn healthz(s: &AppState) -> Response<Body> {
    let dead = s.workers.problems(Instant::now());
    if !dead.is_empty() {
        // Names come from the agent's code (a bounded set), never from input.
        let msg = format!("workers not running: {}\n", dead.join(", "));
        let mut r = Response::new(Full::new(Bytes::from(msg)));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return r;
    }
    let live = s
        .snapshots
        .borrow()
        .is_live(SystemTime::now(), s.started, s.max_sync_age);
    if live {
        text(StatusCode::OK, "ok\n")
    } else {
        let msg = format!("no successful full re-sync for over {:?}\n", s.max_sync_age);
        let mut r = Response::new(Full::new(Bytes::from(msg)));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        r
    }
}

fn readyz(s: &AppState) -> Response<Body> {
    if s.snapshots.borrow().synced {
        text(StatusCode::OK, "ready\n")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "first full sync not done yet\n",
        )
    }
}

/// A rendering of the latest snapshot, made once per snapshot.
type Rendered = Mutex<Option<(Arc<Snapshot>, Bytes)>>;

/// `/status` as compact JSON and the page at `/`, each rendered once per snapshot (not per
/// request: a client polling them costs a copy of an `Arc`, not a rendering on the runtime
/// thread).
#[derive(Debug, Default)]
pub struct StatusCache {
    last: Rendered,
    page: Rendered,
}

/// `slot`'s bytes if they are of the latest snapshot, else `render` it and keep the result.
fn cached<E>(
    slot: &Rendered,
    snapshots: &watch::Receiver<Arc<Snapshot>>,
    render: impl FnOnce(&Snapshot) -> Result<Bytes, E>,
) -> Result<Bytes, E> {
    let snap = Arc::clone(&snapshots.borrow());
    let mut last = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((s, b)) = &*last
        && Arc::ptr_eq(s, &snap)
    {
        return Ok(b.clone());
    }
    let b = render(&snap)?;
    *last = Some((snap, b.clone()));
    Ok(b)
}

impl StatusCache {
    fn body(&self, snapshots: &watch::Receiver<Arc<Snapshot>>) -> Result<Bytes, serde_json::Error> {
        cached(&self.last, snapshots, |s| {
            serde_json::to_vec(s).map(Bytes::from)
        })
    }

    /// The status page (see `podnet_probe::report::status_page`).
    fn page(&self, snapshots: &watch::Receiver<Arc<Snapshot>>) -> Response<Body> {
        let page = cached(&self.page, snapshots, |s| {
            Ok::<_, std::convert::Infallible>(Bytes::from(podnet_probe::report::status_page(s)))
        });
        let bytes = match page {
            Ok(b) => b,
            Err(never) => match never {},
        };
        let mut r = body("text/html; charset=utf-8", bytes);
        // No script, no frame, nothing from elsewhere: escaped pod names cannot become code,
        // and this policy says so to the browser too.
        r.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
        );
        r
    }

    fn response(&self, snapshots: &watch::Receiver<Arc<Snapshot>>) -> Response<Body> {
        match self.body(snapshots) {
            Ok(b) => body("application/json", b),
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding status failed\n",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(
            bearer(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            bearer(&headers(&[("authorization", "bearer  abc ")])),
            Some("abc")
        );
        assert_eq!(bearer(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(bearer(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(bearer(&headers(&[])), None);
    }

    #[test]
    fn bodies() {
        assert!(!has_body(&headers(&[])));
        assert!(!has_body(&headers(&[("content-length", "0")])));
        assert!(has_body(&headers(&[("content-length", "10")])));
        assert!(has_body(&headers(&[("transfer-encoding", "chunked")])));
    }

    #[test]
    fn status_is_serialized_once_per_snapshot() {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::initial(
            "n".into(),
            podnet_probe::model::SourceName::Node,
        )));
        let cache = StatusCache::default();
        let a = cache.body(&rx).unwrap();
        let b = cache.body(&rx).unwrap();
        // The same allocation: no second serialization.
        assert_eq!(a.as_ptr(), b.as_ptr());
        assert!(!a.contains(&b'\n'), "compact JSON");
        tx.send_replace(Arc::new(Snapshot::initial(
            "n".into(),
            podnet_probe::model::SourceName::Node,
        )));
        let c = cache.body(&rx).unwrap();
        assert_ne!(a.as_ptr(), c.as_ptr());
        assert_eq!(a, c);
    }
}
