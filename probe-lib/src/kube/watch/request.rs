//! The two requests of the watch loop, below kube's typed API: a list page read as it
//! streams in (`kube/page.rs` cuts out and decodes each pod alone), and error answers turned
//! into kube's error with the server's `Retry-After` kept.

use http_body_util::BodyExt;
use kube::api::ListParams;
use serde_json::Value;
use tracing::warn;

use crate::kube::error::WatchError;
use crate::kube::page::{Item, PageMeta, PageReader};

/// Most of an error answer's body read (a `Status` is small).
const MAX_ERROR_BODY: usize = 64 << 10;

/// `/api/v1/pods` (all namespaces; the field selector narrows it to this node).
pub(super) fn pods() -> kube::core::Request {
    kube::core::Request::new("/api/v1/pods")
}

pub(super) fn build_error(verb: &'static str, e: kube::core::request::Error) -> WatchError {
    WatchError::Api {
        verb,
        source: kube::Error::BuildRequest(e),
    }
}

/// `Retry-After` in seconds (the API server never sends the HTTP-date form).
fn retry_after_header(headers: &http::HeaderMap) -> Option<u32> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// An error answer as kube's error: its `Status` body (or one made from the HTTP status),
/// with a `Retry-After` header carried in `details.retryAfterSeconds`.
async fn error_answer(res: http::Response<kube::client::Body>) -> kube::Error {
    let code = res.status().as_u16();
    let retry_after = retry_after_header(res.headers());
    let mut body = Vec::new();
    let mut stream = res.into_body();
    while body.len() < MAX_ERROR_BODY {
        match stream.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    body.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    let mut status = serde_json::from_slice::<kube::core::Status>(&body)
        .ok()
        .filter(|s| s.code == code)
        .unwrap_or_else(|| {
            kube::core::Status::failure(&String::from_utf8_lossy(&body), "").with_code(code)
        });
    if let Some(secs) = retry_after {
        match &mut status.details {
            Some(details) => details.retry_after_seconds = secs,
            None => {
                status.details =
                    serde_json::from_value(serde_json::json!({"retryAfterSeconds": secs})).ok();
            }
        }
    }
    kube::Error::Api(Box::new(status))
}

/// One page, read as it streams in: each pod is decoded on its own into the few fields
/// podnet reads and appended to `items`; a pod that cannot be decoded is skipped with a
/// warning.
pub(super) async fn list_page(
    client: &kube::Client,
    lp: &ListParams,
    items: &mut Vec<Value>,
) -> Result<PageMeta, WatchError> {
    let api = |source| WatchError::Api {
        verb: "list",
        source,
    };
    let request = pods().list(lp).map_err(|e| build_error("list", e))?;
    let res = client
        .send(request.map(kube::client::Body::from))
        .await
        .map_err(api)?;
    if !res.status().is_success() {
        return Err(api(error_answer(res).await));
    }
    let mut body = res.into_body();
    let mut reader = PageReader::default();
    let mut malformed = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(api)?.into_data() else {
            continue;
        };
        reader
            .feed(&data, |item| match item {
                Item::Pod(pod) => items.push(pod.to_value()),
                Item::Malformed(why) => {
                    malformed += 1;
                    if malformed == 1 {
                        warn!(reason = %why, "skipping an undecodable pod object in a list");
                    }
                }
            })
            .map_err(|e| WatchError::Page(e.to_string()))?;
    }
    reader.finish().map_err(|e| WatchError::Page(e.to_string()))
}
