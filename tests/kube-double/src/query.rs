//! Query parameters of list and watch requests, and how kube-apiserver interprets them:
//! `resourceVersion` × `resourceVersionMatch` × `limit`/`continue` for lists (the table in the
//! Kubernetes docs, "Semantics for get and list"), and the watch start point.

use std::time::Duration;

use serde_json::{Value, json};

use super::status::ApiError;

/// The raw parameters (the last occurrence of a repeated one wins).
#[derive(Debug, Clone, Default)]
pub(crate) struct Params {
    pub watch: bool,
    pub field_selector: String,
    pub label_selector: String,
    pub limit: Option<i64>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub allow_bookmarks: bool,
    pub send_initial_events: Option<bool>,
    /// From the `Accept` header, not the query: objects as `PartialObjectMetadata`.
    pub metadata_only: bool,
}

/// Go's `strconv.ParseBool`, which the apiserver uses for boolean parameters.
fn parse_bool(name: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "invalid value for {name}: strconv.ParseBool: parsing \"{v}\": invalid syntax"
        ))),
    }
}

/// Percent-decoding of an `application/x-www-form-urlencoded` component.
pub(crate) fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Params {
    /// Parse a raw query string.
    pub fn parse(query: &str) -> Result<Self, ApiError> {
        let mut p = Params::default();
        for pair in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (url_decode(k), url_decode(v));
            let int = |v: &str| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid value for {k}: {v:?}")))
            };
            match k.as_str() {
                "watch" => p.watch = parse_bool(&k, &v)?,
                "fieldSelector" => p.field_selector = v,
                "labelSelector" => p.label_selector = v,
                "limit" => p.limit = Some(int(&v)?),
                "continue" => p.continue_token = Some(v).filter(|s| !s.is_empty()),
                "resourceVersion" => p.resource_version = Some(v),
                "resourceVersionMatch" => {
                    p.resource_version_match = Some(v).filter(|s| !s.is_empty())
                }
                "timeoutSeconds" => p.timeout_seconds = Some(int(&v)?.max(0) as u64),
                "allowWatchBookmarks" => p.allow_bookmarks = parse_bool(&k, &v)?,
                "sendInitialEvents" => p.send_initial_events = Some(parse_bool(&k, &v)?),
                _ => {}
            }
        }
        Ok(p)
    }

    /// The resourceVersion as a number: None when absent or empty.
    fn rv(&self) -> Result<Option<u64>, ApiError> {
        match self.resource_version.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}"))),
        }
    }
}

/// Which state a list is served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListAt {
    /// The current state (Most Recent, Any, or a continuation of an inconsistent list).
    Current,
    /// At least this revision: the current state, after waiting for it if it is in the future.
    NotOlderThan(u64),
    /// Exactly this revision: 410 if compacted.
    Exact(u64),
}

/// How to serve a list.
#[derive(Debug, Clone)]
pub(crate) struct ListPlan {
    pub at: ListAt,
    pub limit: Option<usize>,
    /// Start after this key (from a continue token).
    pub after: Option<String>,
    /// The request continues a list (an expired token gets the continue-specific 410).
    pub continuing: bool,
}

fn forbidden(detail: &str) -> ApiError {
    ApiError::invalid_list_options("resourceVersionMatch", detail)
}

/// Interpret list parameters as kube-apiserver does.
pub(crate) fn plan_list(p: &Params) -> Result<ListPlan, ApiError> {
    let limit = p.limit.filter(|l| *l > 0).map(|l| l as usize);
    let rv_match = p.resource_version_match.as_deref();
    if let Some(m) = rv_match
        && m != "NotOlderThan"
        && m != "Exact"
    {
        return Err(ApiError::invalid_list_options(
            "resourceVersionMatch",
            &format!("Unsupported value: \"{m}\""),
        ));
    }
    if let Some(token) = &p.continue_token {
        if rv_match.is_some() {
            return Err(forbidden(
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
        if p.rv()?.is_some_and(|rv| rv != 0) {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let (rv, after) = decode_continue(token)?;
        let at = if rv <= 0 {
            ListAt::Current
        } else {
            ListAt::Exact(rv as u64)
        };
        return Ok(ListPlan {
            at,
            limit,
            after: Some(after),
            continuing: true,
        });
    }
    let (at, limit) = match (p.rv()?, rv_match) {
        (None, Some(_)) => {
            return Err(forbidden(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        (None, None) => (ListAt::Current, limit),
        (Some(0), Some("Exact")) => {
            return Err(forbidden(
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
        // "Any": served from the watch cache, which ignores limit.
        (Some(0), _) => (ListAt::Current, None),
        (Some(rv), Some("Exact")) => (ListAt::Exact(rv), limit),
        (Some(rv), Some(_)) => (ListAt::NotOlderThan(rv), limit),
        // Legacy: not older than without a limit, exact with one.
        (Some(rv), None) if limit.is_none() => (ListAt::NotOlderThan(rv), None),
        (Some(rv), None) => (ListAt::Exact(rv), limit),
    };
    Ok(ListPlan {
        at,
        limit,
        after: None,
        continuing: false,
    })
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchStart {
    /// Synthetic ADDED events for the current state, then changes (rv unset or "0").
    CurrentState,
    /// Changes after this revision (410 ERROR event if it is compacted).
    After(u64),
    /// Changes after the current revision, without initial events (`sendInitialEvents=false`).
    Now,
}

/// How to serve a watch.
#[derive(Debug, Clone)]
pub(crate) struct WatchPlan {
    pub start: WatchStart,
    /// End the initial events with a BOOKMARK annotated `k8s.io/initial-events-end`.
    pub initial_events_end: bool,
    pub bookmarks: bool,
    /// `timeoutSeconds`, or None for the server's default.
    pub timeout: Option<Duration>,
    /// With `sendInitialEvents`: the initial state must be at least this revision.
    pub not_older_than: Option<u64>,
}

/// Interpret watch parameters as kube-apiserver does.
pub(crate) fn plan_watch(p: &Params) -> Result<WatchPlan, ApiError> {
    let rv = p.rv()?;
    let timeout = p
        .timeout_seconds
        .filter(|s| *s > 0)
        .map(Duration::from_secs);
    let mut plan = WatchPlan {
        start: match rv {
            None | Some(0) => WatchStart::CurrentState,
            Some(r) => WatchStart::After(r),
        },
        initial_events_end: false,
        bookmarks: p.allow_bookmarks,
        timeout,
        not_older_than: None,
    };
    match (p.send_initial_events, p.resource_version_match.as_deref()) {
        (None, None) => {}
        (None, Some(_)) => {
            return Err(forbidden(
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        (Some(_), m) if m != Some("NotOlderThan") => {
            return Err(ApiError::invalid_list_options(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        (Some(true), _) if !p.allow_bookmarks => {
            return Err(ApiError::invalid_list_options(
                "allowWatchBookmarks",
                "sendInitialEvents requires allowWatchBookmarks=true",
            ));
        }
        (Some(true), _) => {
            plan.start = WatchStart::CurrentState;
            plan.initial_events_end = true;
            plan.not_older_than = rv.filter(|r| *r > 0);
        }
        (Some(false), _) => {
            plan.start = match rv {
                None | Some(0) => WatchStart::Now,
                Some(r) => WatchStart::After(r),
            };
        }
    }
    Ok(plan)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding (Go's `base64.RawURLEncoding`).
fn b64_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
        }
    }
    out
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let vals: Vec<u32> = s
        .trim_end_matches('=')
        .bytes()
        .map(|c| B64.iter().position(|b| *b == c).map(|p| p as u32))
        .collect::<Option<_>>()?;
    let mut out = Vec::new();
    for chunk in vals.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let n = chunk.iter().fold(0u32, |a, v| (a << 6) | v) << (6 * (4 - chunk.len()));
        out.extend((0..chunk.len() - 1).map(|i| (n >> (16 - 8 * i)) as u8));
    }
    Some(out)
}

/// A continue token as the etcd3 storage writes it: the revision of the list (-1: latest, for
/// the inconsistent continuation offered with an expired token) and the next key.
pub(crate) fn encode_continue(rv: i64, last_key: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{last_key}\u{0}")});
    b64_encode(token.to_string().as_bytes())
}

/// Decode a continue token: (revision, key to start after).
fn decode_continue(token: &str) -> Result<(i64, String), ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
    let raw = b64_decode(token).ok_or_else(|| bad("illegal base64 data"))?;
    let v: Value = serde_json::from_slice(&raw).map_err(|e| bad(&e.to_string()))?;
    if v["v"] != "meta.k8s.io/v1" {
        return Err(bad(
            "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    let rv = v["rv"].as_i64().ok_or_else(|| bad("no resource version"))?;
    let start = v["start"].as_str().ok_or_else(|| bad("no start key"))?;
    Ok((rv, start.strip_suffix('\u{0}').unwrap_or(start).to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(q: &str) -> Result<ListPlan, ApiError> {
        plan_list(&Params::parse(q)?)
    }

    #[test]
    fn base64_and_tokens() {
        for s in ["", "a", "ab", "abc", "abcd", "key/with\u{0}nul"] {
            assert_eq!(b64_decode(&b64_encode(s.as_bytes())).unwrap(), s.as_bytes());
        }
        let t = encode_continue(42, "ns/pod-1");
        assert_eq!(decode_continue(&t).unwrap(), (42, "ns/pod-1".to_owned()));
        assert_eq!(
            list(&format!("continue={t}&limit=5")).unwrap().at,
            ListAt::Exact(42)
        );
        assert_eq!(list("continue=%21%21").unwrap_err().code, 400);
    }

    #[test]
    fn list_resource_version_table() {
        assert_eq!(list("").unwrap().at, ListAt::Current);
        assert_eq!(list("resourceVersion=").unwrap().at, ListAt::Current);
        let any = list("resourceVersion=0&limit=10").unwrap();
        assert_eq!((any.at, any.limit), (ListAt::Current, None));
        assert_eq!(
            list("resourceVersion=5").unwrap().at,
            ListAt::NotOlderThan(5)
        );
        assert_eq!(
            list("resourceVersion=5&limit=2").unwrap().at,
            ListAt::Exact(5)
        );
        assert_eq!(
            list("resourceVersion=5&resourceVersionMatch=NotOlderThan&limit=2")
                .unwrap()
                .at,
            ListAt::NotOlderThan(5)
        );
        assert_eq!(
            list("resourceVersion=5&resourceVersionMatch=Exact")
                .unwrap()
                .at,
            ListAt::Exact(5)
        );
        assert_eq!(list("resourceVersionMatch=Exact").unwrap_err().code, 422);
        assert_eq!(
            list("resourceVersion=0&resourceVersionMatch=Exact")
                .unwrap_err()
                .code,
            422
        );
        assert_eq!(list("resourceVersion=x").unwrap_err().code, 400);
        let t = encode_continue(3, "a/b");
        assert_eq!(
            list(&format!("continue={t}&resourceVersion=3"))
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn watch_start() {
        let w = |q: &str| plan_watch(&Params::parse(q)?);
        assert_eq!(w("watch=true").unwrap().start, WatchStart::CurrentState);
        assert_eq!(
            w("watch=1&resourceVersion=0").unwrap().start,
            WatchStart::CurrentState
        );
        assert_eq!(
            w("watch=1&resourceVersion=7").unwrap().start,
            WatchStart::After(7)
        );
        let streaming = w(
            "watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion=",
        );
        assert!(streaming.unwrap().initial_events_end);
        assert_eq!(w("watch=1&sendInitialEvents=true").unwrap_err().code, 422);
        assert_eq!(
            w("watch=1&resourceVersionMatch=NotOlderThan")
                .unwrap_err()
                .code,
            422
        );
        assert_eq!(w("watch=maybe").unwrap_err().code, 400);
        assert_eq!(url_decode("spec.nodeName%3Dn%2C+x"), "spec.nodeName=n, x");
    }
}
