//! HTTP: routing, faults, lists, single objects, discovery, and the server thread.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Config;
use super::control::{Control, Outage, RequestKind, RequestRecord};
use super::pod::node_object;
use super::query::{ListAt, Params, encode_continue, plan_list};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{ApiError, json_response};
use super::store::{Filter, Resource, Store};

/// State shared by the test's handle and the server thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    /// The store's revision, published after every write (wakes watches).
    pub revision: watch::Sender<u64>,
    pub control: Control,
    pub config: Config,
    /// Whether the listening socket is open (false during a `Refuse` outage).
    pub listening: watch::Sender<bool>,
    pub addr: OnceLock<SocketAddr>,
    /// Tokens and grants for TokenReviews and SubjectAccessReviews.
    pub auth: super::auth::Grants,
    /// Node status and Events written through the API.
    pub writes: Mutex<super::writes::Writes>,
}

impl Shared {
    pub fn new(config: Config) -> Self {
        Shared {
            store: Mutex::new(Store::new(config.initial_revision, config.history_window)),
            revision: watch::Sender::new(config.initial_revision),
            control: Control::default(),
            config,
            listening: watch::Sender::new(false),
            addr: OnceLock::new(),
            auth: Default::default(),
            writes: Mutex::default(),
        }
    }

    /// The store (a panicking test thread cannot wedge the server).
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Apply a write and wake the watches.
    pub fn write<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let (r, rev) = {
            let mut s = self.store();
            let r = f(&mut s);
            (r, s.revision())
        };
        self.revision.send_if_modified(|v| {
            let newer = rev > *v;
            if newer {
                *v = rev;
            }
            newer
        });
        r
    }

    /// Wait (up to the configured time) until the store reaches `rv`; 504 otherwise, as the
    /// watch cache answers a resourceVersion from the future.
    pub async fn wait_for_revision(&self, rv: u64) -> Result<(), ApiError> {
        let mut rx = self.revision.subscribe();
        let wait = rx.wait_for(|r| *r >= rv);
        match tokio::time::timeout(self.config.too_large_wait, wait).await {
            Ok(_) => Ok(()),
            Err(_) => Err(ApiError::too_large_resource_version(
                rv,
                *self.revision.borrow(),
            )),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Version,
    Api,
    Apis,
    ApiV1,
    Pods(Option<&'a str>),
    Pod(&'a str, &'a str),
    Node(&'a str),
    /// A list or watch of a cluster-scoped resource (Nodes, BlockAffinities).
    Cluster(Resource),
    /// A list or watch of a namespaced resource other than pods (Services, EndpointSlices),
    /// in one namespace or all.
    Namespaced(Resource, Option<&'a str>),
    /// `GET` of one namespaced object other than a pod (a Service).
    Object(Resource, &'a str, &'a str),
    TokenReviews,
    SubjectAccessReviews,
    Unknown,
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Self {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segs.as_slice() {
            ["version"] => Route::Version,
            ["api"] => Route::Api,
            ["apis"] => Route::Apis,
            ["api", "v1"] => Route::ApiV1,
            ["api", "v1", "pods"] => Route::Pods(None),
            ["api", "v1", "namespaces", ns, "pods"] => Route::Pods(Some(ns)),
            ["api", "v1", "namespaces", ns, "pods", name] => Route::Pod(ns, name),
            ["api", "v1", "nodes"] => Route::Cluster(Resource::Nodes),
            ["api", "v1", "nodes", name] => Route::Node(name),
            ["apis", "crd.projectcalico.org", "v1", "blockaffinities"] => {
                Route::Cluster(Resource::BlockAffinities)
            }
            ["apis", "apiregistration.k8s.io", "v1", "apiservices"] => {
                Route::Cluster(Resource::ApiServices)
            }
            [
                "apis",
                "admissionregistration.k8s.io",
                "v1",
                "validatingwebhookconfigurations",
            ] => Route::Cluster(Resource::ValidatingWebhookConfigurations),
            [
                "apis",
                "admissionregistration.k8s.io",
                "v1",
                "mutatingwebhookconfigurations",
            ] => Route::Cluster(Resource::MutatingWebhookConfigurations),
            [
                "apis",
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
            ] => Route::Cluster(Resource::CustomResourceDefinitions),
            ["api", "v1", "services"] => Route::Namespaced(Resource::Services, None),
            ["api", "v1", "namespaces", ns, "services"] => {
                Route::Namespaced(Resource::Services, Some(ns))
            }
            ["api", "v1", "namespaces", ns, "services", name] => {
                Route::Object(Resource::Services, ns, name)
            }
            ["apis", "discovery.k8s.io", "v1", "endpointslices"] => {
                Route::Namespaced(Resource::EndpointSlices, None)
            }
            [
                "apis",
                "discovery.k8s.io",
                "v1",
                "namespaces",
                ns,
                "endpointslices",
            ] => Route::Namespaced(Resource::EndpointSlices, Some(ns)),
            ["apis", "authentication.k8s.io", "v1", "tokenreviews"] => Route::TokenReviews,
            ["apis", "authorization.k8s.io", "v1", "subjectaccessreviews"] => {
                Route::SubjectAccessReviews
            }
            _ => Route::Unknown,
        }
    }
}

/// Every request lands here: account, delay, faults, then route.
async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let route = Route::parse(&path);
    let metadata_only = req
        .headers()
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(super::metadata::wanted);
    let params = Params::parse(&query).map(|mut p| {
        p.metadata_only = metadata_only;
        p
    });
    let kind = match (&route, &params) {
        _ if method != Method::GET => RequestKind::Other,
        (Route::Pods(_) | Route::Cluster(_) | Route::Namespaced(..), Ok(p)) if p.watch => {
            RequestKind::Watch
        }
        (Route::Pods(_) | Route::Cluster(_) | Route::Namespaced(..), _) => RequestKind::List,
        (Route::Pod(..) | Route::Node(_) | Route::Object(..), _) => RequestKind::Get,
        (Route::Unknown, _) => RequestKind::Other,
        _ => RequestKind::Discovery,
    };
    let ctl = &shared.control;
    ctl.record(RequestRecord {
        kind,
        method: method.to_string(),
        path: path.clone(),
        query,
        metadata_only,
    });
    let delay = ctl.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if ctl.outage.borrow().is_some() {
        return ApiError::unavailable().into_response();
    }
    if ctl.take_failure() {
        return ApiError::internal("injected fault").into_response();
    }
    if let Some(w) = super::writes::WriteRoute::parse(&path) {
        return super::writes::handle(&shared, w, req).await;
    }
    if let Route::TokenReviews | Route::SubjectAccessReviews = route {
        return reviews(&shared, &route, method, req).await;
    }
    if method != Method::GET {
        return ApiError::method_not_allowed(method.as_str()).into_response();
    }
    let result = match params {
        Err(e) => Err(e),
        Ok(params) => match route {
            Route::Pods(ns) if params.watch => watch(&shared, Resource::Pods, ns, &params).await,
            Route::Pods(ns) => list(&shared, Resource::Pods, ns, &params).await,
            Route::Cluster(r) if params.watch => watch(&shared, r, None, &params).await,
            Route::Cluster(r) => list(&shared, r, None, &params).await,
            Route::Namespaced(r, ns) if params.watch => watch(&shared, r, ns, &params).await,
            Route::Namespaced(r, ns) => list(&shared, r, ns, &params).await,
            Route::Object(r, ns, name) => get_object(&shared, r, ns, name),
            Route::Pod(ns, name) => get_pod(&shared, ns, name),
            Route::Node(name) => get_node(&shared, name),
            Route::Version => Ok(ok_json(&version())),
            Route::Api => Ok(ok_json(&json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{
                    "clientCIDR": "0.0.0.0/0",
                    "serverAddress": shared.addr.get().map(ToString::to_string).unwrap_or_default()
                }]
            }))),
            Route::Apis => Ok(ok_json(
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
            )),
            Route::ApiV1 => Ok(ok_json(&api_v1_resources())),
            Route::TokenReviews | Route::SubjectAccessReviews | Route::Unknown => {
                Err(ApiError::no_such_path())
            }
        },
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET …?watch=true` of a resource.
async fn watch(
    shared: &Arc<Shared>,
    resource: Resource,
    ns: Option<&str>,
    params: &Params,
) -> Result<Response, ApiError> {
    let filter = filter(resource, ns.map(str::to_owned), params)?;
    super::watch::watch(Arc::clone(shared), filter, params).await
}

/// `POST` a TokenReview or SubjectAccessReview (see `auth.rs`).
async fn reviews(shared: &Shared, route: &Route<'_>, method: Method, req: Request) -> Response {
    if method != Method::POST {
        return ApiError::method_not_allowed(method.as_str()).into_response();
    }
    let body = match axum::body::to_bytes(req.into_body(), super::auth::MAX_REVIEW_BODY).await {
        Ok(b) => b,
        Err(e) => return ApiError::bad_request(e.to_string()).into_response(),
    };
    let answer = if *route == Route::TokenReviews {
        shared.auth.token_review(&body)
    } else {
        shared.auth.access_review(&body)
    };
    answer.unwrap_or_else(IntoResponse::into_response)
}

fn ok_json(v: &Value) -> Response {
    json_response(200, v.to_string().into_bytes())
}

/// The request's filter; selector syntax errors are 400 BadRequest.
pub(crate) fn filter(
    resource: Resource,
    namespace: Option<String>,
    params: &Params,
) -> Result<Filter, ApiError> {
    Ok(Filter {
        resource,
        namespace,
        fields: FieldSelector::parse(&params.field_selector).map_err(ApiError::bad_request)?,
        labels: LabelSelector::parse(&params.label_selector).map_err(ApiError::bad_request)?,
    })
}

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a \
    consistent list result. You can start a new list without the continue parameter, or use the \
    continue token in this response to retrieve the remainder of the results. Continuing with the \
    provided token results in an inconsistent list - objects that were created, modified, or \
    deleted between the time the first chunk was returned and now may show up in the list.";

/// `GET …/pods`: a `PodList` (`NodeList`, `BlockAffinityList` for those resources).
async fn list(
    shared: &Shared,
    resource: Resource,
    ns: Option<&str>,
    params: &Params,
) -> Result<Response, ApiError> {
    let filter = filter(resource, ns.map(str::to_owned), params)?;
    let plan = plan_list(params)?;
    if let ListAt::NotOlderThan(rv) | ListAt::Exact(rv) = plan.at {
        shared.wait_for_revision(rv).await?;
    }
    let (page, revision) = {
        let store = shared.store();
        let revision = match plan.at {
            ListAt::Exact(rv) => rv,
            ListAt::Current | ListAt::NotOlderThan(_) => store.revision(),
        };
        match store.list(revision, &filter, plan.after.as_deref(), plan.limit) {
            Ok(page) => (page, revision),
            Err(_) if plan.continuing => {
                let mut e = ApiError::expired(CONTINUE_EXPIRED);
                e.continue_token = plan.after.as_deref().map(|k| encode_continue(-1, k));
                return Err(e);
            }
            Err(_) => {
                return Err(ApiError::expired(
                    "The resourceVersion for the provided list is too old.",
                ));
            }
        }
    };
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(k) = &page.last_key {
        metadata["continue"] = json!(encode_continue(revision as i64, k));
        if let Some(n) = page.remaining {
            metadata["remainingItemCount"] = json!(n);
        }
    }
    let mut body = Vec::with_capacity(64 + page.items.len() * 1024);
    let (api_version, kind) = if params.metadata_only {
        (super::metadata::API_VERSION, super::metadata::LIST_KIND)
    } else {
        resource.list_kind()
    };
    body.extend_from_slice(
        format!(r#"{{"kind":"{kind}","apiVersion":"{api_version}","metadata":"#).as_bytes(),
    );
    body.extend_from_slice(metadata.to_string().as_bytes());
    body.extend_from_slice(br#","items":["#);
    for (i, item) in page.items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let written = if params.metadata_only {
            serde_json::to_writer(&mut body, &super::metadata::partial(item))
        } else {
            serde_json::to_writer(&mut body, &**item)
        };
        written.map_err(|e| ApiError::internal(&e.to_string()))?;
    }
    body.extend_from_slice(b"]}");
    Ok(json_response(200, body))
}

fn get_pod(shared: &Shared, ns: &str, name: &str) -> Result<Response, ApiError> {
    let pod = shared.store().get(&format!("{ns}/{name}")).cloned();
    pod.map(|p| ok_json(&p))
        .ok_or_else(|| ApiError::not_found("pods", name))
}

fn get_object(
    shared: &Shared,
    resource: Resource,
    ns: &str,
    name: &str,
) -> Result<Response, ApiError> {
    let obj = shared.store().get(&resource.key(ns, name)).cloned();
    let plural = resource
        .list_kind()
        .1
        .trim_end_matches("List")
        .to_lowercase()
        + "s";
    obj.map(|o| ok_json(&o))
        .ok_or_else(|| ApiError::not_found(&plural, name))
}

fn get_node(shared: &Shared, name: &str) -> Result<Response, ApiError> {
    let store = shared.store();
    if let Some(node) = store.get(&Resource::Nodes.key("", name)) {
        Ok(ok_json(node))
    } else if store.has_node(name) {
        Ok(ok_json(&node_object(name, store.revision())))
    } else {
        Err(ApiError::not_found("nodes", name))
    }
}

fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2", "compiler": "gc",
        "platform": "linux/amd64"
    })
}

fn api_v1_resources() -> Value {
    let verbs = json!(["get", "list", "watch"]);
    json!({
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod", "verbs": verbs, "shortNames": ["po"]},
            {"name": "nodes", "singularName": "node", "namespaced": false, "kind": "Node", "verbs": verbs, "shortNames": ["no"]}
        ]
    })
}

/// Join the named network namespace on this thread only (`ip netns exec NAME`). The double
/// serves from a thread of its own, so nothing else moves.
fn enter_netns(name: &str) -> Result<()> {
    let path = std::path::Path::new("/run/netns").join(name);
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering {}", path.display()))
}

/// Start the server thread: enter `netns` (if any), build a runtime, bind, serve until stopped.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    netns: Option<String>,
    addr: SocketAddr,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<SocketAddr>>();
    let thread = std::thread::Builder::new()
        .name("kubeapi-double".into())
        .spawn(move || {
            let setup = || -> Result<(tokio::runtime::Runtime, TcpListener)> {
                if let Some(ns) = &netns {
                    enter_netns(ns)?;
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let listener = rt
                    .block_on(TcpListener::bind(addr))
                    .with_context(|| format!("binding {addr}"))?;
                Ok((rt, listener))
            };
            match setup().and_then(|(rt, l)| Ok((rt, l.local_addr()?, l))) {
                Ok((rt, local, listener)) => {
                    let _ = shared.addr.set(local);
                    let _ = ready_tx.send(Ok(local));
                    rt.block_on(serve_loop(shared, listener, local));
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })
        .context("spawning the API server thread")?;
    let local = ready_rx
        .recv()
        .map_err(|_| anyhow!("API server thread died"))??;
    Ok((local, thread))
}

/// Serve; during a `Refuse` outage close the listening socket, and reopen it afterwards.
async fn serve_loop(shared: Arc<Shared>, mut listener: TcpListener, addr: SocketAddr) {
    let ctl = &shared.control;
    loop {
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let shutdown = {
            let (mut stop, mut outage) = (ctl.stop.subscribe(), ctl.outage.subscribe());
            async move {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => {}
                    _ = outage.wait_for(|o| *o == Some(Outage::Refuse)) => {}
                }
            }
        };
        let grace = {
            let (mut stop, mut outage) = (ctl.stop.subscribe(), ctl.outage.subscribe());
            async move {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => {}
                    _ = outage.wait_for(|o| *o == Some(Outage::Refuse)) => {}
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        };
        shared.listening.send_replace(true);
        tokio::select! {
            _ = axum::serve(listener, app).with_graceful_shutdown(shutdown) => {}
            _ = grace => {}
        }
        shared.listening.send_replace(false);
        let mut stop = ctl.stop.subscribe();
        let mut outage = ctl.outage.subscribe();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = outage.wait_for(|o| *o != Some(Outage::Refuse)) => {}
        }
        listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(_) if *stop.borrow() => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::parse("/api/v1/pods"), Route::Pods(None));
        assert_eq!(
            Route::parse("/api/v1/namespaces/kube-system/pods"),
            Route::Pods(Some("kube-system"))
        );
        assert_eq!(
            Route::parse("/api/v1/namespaces/a/pods/b"),
            Route::Pod("a", "b")
        );
        assert_eq!(Route::parse("/api/v1/nodes/n1"), Route::Node("n1"));
        assert_eq!(Route::parse("/version"), Route::Version);
        assert_eq!(
            Route::parse("/apis/authentication.k8s.io/v1/tokenreviews"),
            Route::TokenReviews
        );
        assert_eq!(
            Route::parse("/api/v1/services"),
            Route::Namespaced(Resource::Services, None)
        );
        assert_eq!(
            Route::parse("/apis/discovery.k8s.io/v1/namespaces/a/endpointslices"),
            Route::Namespaced(Resource::EndpointSlices, Some("a"))
        );
        assert_eq!(
            Route::parse("/api/v1/namespaces/a/services/s"),
            Route::Object(Resource::Services, "a", "s")
        );
        assert_eq!(Route::parse("/api/v1/configmaps"), Route::Unknown);
        assert_eq!(Route::parse("/"), Route::Unknown);
    }
}
