//! The writes the agent makes, modelled on kube-apiserver: node status patches (a strategic
//! merge patch merges `status.conditions` by `type`; a JSON merge patch replaces the list, as
//! the real server does) and `events.k8s.io/v1` Events (create with the API's validation,
//! merge-patch, get, list). Every write is kept in a log with its body, for tests to count.

use std::collections::{BTreeMap, HashMap};

use axum::extract::Request;
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::pod::{node_object, uid_for};
use super::server::Shared;
use super::status::{ApiError, json_response};

/// Largest request body accepted (the apiserver's limit is 3 MiB).
const MAX_BODY: usize = 3 << 20;
const STRATEGIC: &str = "application/strategic-merge-patch+json";
const MERGE: &str = "application/merge-patch+json";

/// One write received.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRecord {
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// `Content-Type`.
    pub content_type: String,
    /// The body as JSON (`null` if it was not JSON).
    pub body: Value,
    /// HTTP status answered.
    pub code: u16,
}

/// What the writes changed.
#[derive(Debug, Default)]
pub(crate) struct Writes {
    /// Node name → `status.conditions`.
    conditions: HashMap<String, Vec<Value>>,
    /// (namespace, name) → Event.
    events: BTreeMap<(String, String), Value>,
    log: Vec<WriteRecord>,
    revision: u64,
}

/// A route this module serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteRoute<'a> {
    /// `/api/v1/nodes/{name}/status`.
    NodeStatus(&'a str),
    /// `/apis/events.k8s.io/v1[/namespaces/{ns}]/events`.
    Events(Option<&'a str>),
    /// `/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}`.
    Event(&'a str, &'a str),
}

impl<'a> WriteRoute<'a> {
    pub(crate) fn parse(path: &'a str) -> Option<Self> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segs.as_slice() {
            ["api", "v1", "nodes", name, "status"] => Some(WriteRoute::NodeStatus(name)),
            ["apis", "events.k8s.io", "v1", "events"] => Some(WriteRoute::Events(None)),
            ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"] => {
                Some(WriteRoute::Events(Some(ns)))
            }
            [
                "apis",
                "events.k8s.io",
                "v1",
                "namespaces",
                ns,
                "events",
                name,
            ] => Some(WriteRoute::Event(ns, name)),
            _ => None,
        }
    }
}

fn ok(code: u16, v: &Value) -> Response {
    json_response(code, v.to_string().into_bytes())
}

/// Serve one request on a [`WriteRoute`].
pub(crate) async fn handle(shared: &Shared, route: WriteRoute<'_>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return ApiError::bad_request(e.to_string()).into_response(),
    };
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let mut w = shared.writes.lock().unwrap_or_else(|e| e.into_inner());
    let result = w.serve(shared, route, &method, &content_type, parsed.as_ref());
    let code = match &result {
        Ok((c, _)) => *c,
        Err(e) => e.code,
    };
    if method != Method::GET {
        w.log.push(WriteRecord {
            method: method.to_string(),
            path,
            content_type,
            body: parsed.unwrap_or(Value::Null),
            code,
        });
    }
    match result {
        Ok((c, v)) => ok(c, &v),
        Err(e) => e.into_response(),
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("made an object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

impl Writes {
    fn serve(
        &mut self,
        shared: &Shared,
        route: WriteRoute<'_>,
        method: &Method,
        content_type: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ApiError> {
        let body_or_400 = || body.ok_or_else(|| ApiError::bad_request("the body is not JSON"));
        match (route, method.as_str()) {
            (WriteRoute::NodeStatus(name), "GET") => Ok((200, self.node(shared, name)?)),
            (WriteRoute::NodeStatus(name), "PATCH") => {
                let node = self.node(shared, name)?;
                let patch = body_or_400()?;
                let mut conditions = node["status"]["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let new = patch.pointer("/status/conditions");
                match (content_type, new) {
                    (_, None) => {}
                    (STRATEGIC, Some(Value::Array(list))) => {
                        for c in list {
                            let ty = c.get("type").and_then(Value::as_str).ok_or_else(|| {
                                ApiError::invalid("Node", name, "condition without type")
                            })?;
                            match conditions.iter_mut().find(|o| o["type"] == ty) {
                                Some(old) => merge_patch(old, c),
                                None => conditions.push(c.clone()),
                            }
                        }
                    }
                    (MERGE, Some(Value::Array(list))) => conditions = list.clone(),
                    (STRATEGIC | MERGE, Some(_)) => {
                        return Err(ApiError::bad_request("status.conditions is not a list"));
                    }
                    (other, _) => return Err(ApiError::unsupported_media_type(other)),
                }
                for c in &conditions {
                    let status = c.get("status").and_then(Value::as_str);
                    if !matches!(status, Some("True" | "False" | "Unknown")) {
                        return Err(ApiError::invalid("Node", name, "condition status"));
                    }
                }
                self.conditions.insert(name.to_owned(), conditions);
                Ok((200, self.node(shared, name)?))
            }
            (WriteRoute::Events(ns), "GET") => {
                let items: Vec<&Value> = self
                    .events
                    .iter()
                    .filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
                    .map(|(_, e)| e)
                    .collect();
                Ok((
                    200,
                    json!({"kind": "EventList", "apiVersion": "events.k8s.io/v1",
                           "metadata": {"resourceVersion": self.revision.to_string()},
                           "items": items}),
                ))
            }
            (WriteRoute::Events(Some(ns)), "POST") => {
                let mut e = body_or_400()?.clone();
                let name = e
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                validate_event(&e, ns, &name)?;
                let key = (ns.to_owned(), name.clone());
                if self.events.contains_key(&key) {
                    return Err(ApiError::already_exists("events.events.k8s.io", &name));
                }
                self.revision += 1;
                e["metadata"]["namespace"] = json!(ns);
                e["metadata"]["uid"] = json!(uid_for(&format!("event/{ns}/{name}")));
                e["metadata"]["resourceVersion"] = json!(self.revision.to_string());
                self.events.insert(key, e.clone());
                Ok((201, e))
            }
            (WriteRoute::Event(ns, name), "GET") => self
                .events
                .get(&(ns.to_owned(), name.to_owned()))
                .map(|e| (200, e.clone()))
                .ok_or_else(|| ApiError::not_found("events.events.k8s.io", name)),
            (WriteRoute::Event(ns, name), "PATCH") => {
                if content_type != MERGE && content_type != STRATEGIC {
                    return Err(ApiError::unsupported_media_type(content_type));
                }
                let patch = body_or_400()?;
                let key = (ns.to_owned(), name.to_owned());
                let mut e = self
                    .events
                    .get(&key)
                    .cloned()
                    .ok_or_else(|| ApiError::not_found("events.events.k8s.io", name))?;
                let before = e.clone();
                merge_patch(&mut e, patch);
                validate_event(&e, ns, name)?;
                // Immutable after creation (apimachinery's ValidateEventUpdate).
                for f in [
                    "/eventTime",
                    "/regarding",
                    "/reportingController",
                    "/action",
                    "/reason",
                    "/type",
                ] {
                    if e.pointer(f) != before.pointer(f) {
                        return Err(ApiError::invalid(
                            "Event",
                            name,
                            format!("{f}: field is immutable"),
                        ));
                    }
                }
                self.revision += 1;
                e["metadata"]["resourceVersion"] = json!(self.revision.to_string());
                self.events.insert(key, e.clone());
                Ok((200, e))
            }
            (_, m) => Err(ApiError::method_not_allowed(m)),
        }
    }

    /// The node as `GET nodes/{name}/status` answers, with the conditions written so far.
    fn node(&self, shared: &Shared, name: &str) -> Result<Value, ApiError> {
        let store = shared.store();
        let mut node = if let Some(n) = store.get(&super::store::Resource::Nodes.key("", name)) {
            Value::clone(n)
        } else if store.has_node(name) {
            node_object(name, store.revision())
        } else {
            return Err(ApiError::not_found("nodes", name));
        };
        if let Some(c) = self.conditions.get(name) {
            node["status"]["conditions"] = json!(c);
        }
        Ok(node)
    }
}

/// `events.k8s.io/v1` validation as kube-apiserver applies it to what podnet sends.
fn validate_event(e: &Value, ns: &str, name: &str) -> Result<(), ApiError> {
    let invalid = |m: &str| Err(ApiError::invalid("Event", name, m.to_owned()));
    let s = |p: &str| e.pointer(p).and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        return invalid("metadata.name: Required value");
    }
    if !s("/metadata/namespace").is_empty() && s("/metadata/namespace") != ns {
        return invalid("metadata.namespace: does not match the namespace of the request");
    }
    if s("/apiVersion") != "events.k8s.io/v1" || s("/kind") != "Event" {
        return invalid("apiVersion/kind: not events.k8s.io/v1 Event");
    }
    if s("/eventTime").is_empty() {
        return invalid("eventTime: Required value");
    }
    for f in [
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        let v = s(&format!("/{f}"));
        if v.is_empty() || v.len() > 128 {
            return invalid(&format!("{f}: Required value, at most 128 characters"));
        }
    }
    if !matches!(s("/type"), "Normal" | "Warning") {
        return invalid("type: Unsupported value");
    }
    if s("/note").len() > 1024 {
        return invalid("note: can have at most 1024 characters");
    }
    if s("/regarding/kind").is_empty() || s("/regarding/name").is_empty() {
        return invalid("regarding: Required value");
    }
    if let Some(series) = e.get("series").filter(|v| !v.is_null()) {
        if series.get("count").and_then(Value::as_u64).unwrap_or(0) < 2 {
            return invalid("series.count: should be at least 2");
        }
        if series
            .get("lastObservedTime")
            .and_then(Value::as_str)
            .is_none()
        {
            return invalid("series.lastObservedTime: Required value");
        }
    }
    Ok(())
}

impl Writes {
    pub(crate) fn log(&self) -> Vec<WriteRecord> {
        self.log.clone()
    }

    pub(crate) fn events(&self) -> Vec<Value> {
        self.events.values().cloned().collect()
    }

    pub(crate) fn conditions(&self, node: &str) -> Vec<Value> {
        self.conditions.get(node).cloned().unwrap_or_default()
    }

    pub(crate) fn set_conditions(&mut self, node: &str, conditions: Vec<Value>) {
        self.conditions.insert(node.to_owned(), conditions);
    }

    /// Store an Event as if another writer had created it (no validation, not logged).
    pub(crate) fn put_event(&mut self, e: Value) -> u64 {
        let meta = &e["metadata"];
        let key = (
            meta["namespace"].as_str().unwrap_or("default").to_owned(),
            meta["name"].as_str().unwrap_or_default().to_owned(),
        );
        self.revision += 1;
        self.events.insert(key, e);
        self.revision
    }
}

#[cfg(test)]
#[path = "writes_tests.rs"]
mod tests;
