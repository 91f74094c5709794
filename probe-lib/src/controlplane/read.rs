//! The API reads of the control-plane check, each with a timeout and a bound: the
//! kube-apiserver mirror pod on this node, the node's role label, the objects that reference
//! Services (APIServices, webhook configurations, CRDs), and each referenced Service with its
//! EndpointSlices.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde_json::Value;

use super::parse;
use crate::kube::WatchError;
use crate::model::{ApiServiceCondition, ServiceRef, ServiceUsers};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Most objects of one kind read (a cluster has tens).
const MAX_OBJECTS: usize = 2000;
/// Most names kept per user list of one Service (the rest are counted in the last name).
const MAX_USERS: usize = 16;
/// Most ready endpoints probed per Service port.
pub(crate) const MAX_ENDPOINTS: usize = 16;
/// Most EndpointSlices kept per Service.
const MAX_SLICES: usize = 20;
/// Service names per EndpointSlice list (a set-based label selector; keeps the URL short).
const NAMES_PER_LIST: usize = 32;
/// The label an EndpointSlice names its Service with.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A kind the check reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Pod,
    Node,
    ApiService,
    ValidatingWebhooks,
    MutatingWebhooks,
    Crd,
    Service,
    EndpointSlice,
}

impl Kind {
    fn resource(self) -> ApiResource {
        let (group, version, kind, plural) = match self {
            Kind::Pod => ("", "v1", "Pod", "pods"),
            Kind::Node => ("", "v1", "Node", "nodes"),
            Kind::ApiService => ("apiregistration.k8s.io", "v1", "APIService", "apiservices"),
            Kind::ValidatingWebhooks => (
                "admissionregistration.k8s.io",
                "v1",
                "ValidatingWebhookConfiguration",
                "validatingwebhookconfigurations",
            ),
            Kind::MutatingWebhooks => (
                "admissionregistration.k8s.io",
                "v1",
                "MutatingWebhookConfiguration",
                "mutatingwebhookconfigurations",
            ),
            Kind::Crd => (
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
            ),
            Kind::Service => ("", "v1", "Service", "services"),
            Kind::EndpointSlice => ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
        };
        let api_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        ApiResource {
            group: group.into(),
            version: version.into(),
            api_version,
            kind: kind.into(),
            plural: plural.into(),
        }
    }

    /// Items per list page: CRDs carry their whole OpenAPI schema (up to ~1 MiB each).
    fn page_size(self) -> u32 {
        if self == Kind::Crd { 10 } else { 100 }
    }
}

fn api_error(verb: &'static str) -> impl FnOnce(kube::Error) -> WatchError {
    move |source| WatchError::Api { verb, source }
}

async fn timed<T>(
    verb: &'static str,
    f: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, WatchError> {
    tokio::time::timeout(REQUEST_TIMEOUT, f)
        .await
        .map_err(|_| WatchError::RequestTimeout {
            verb,
            after: REQUEST_TIMEOUT,
        })?
        .map_err(api_error(verb))
}

/// Reads through one client.
#[derive(Clone)]
pub(crate) struct Reader {
    client: kube::Client,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").finish_non_exhaustive()
    }
}

/// The objects of one list as JSON, bounded.
type Objects = Vec<Value>;

impl Reader {
    pub(crate) fn new(client: kube::Client) -> Self {
        Reader { client }
    }

    fn all(&self, kind: Kind) -> Api<DynamicObject> {
        Api::all_with(self.client.clone(), &kind.resource())
    }

    fn namespaced(&self, kind: Kind, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &kind.resource())
    }

    /// A paginated list (`kubectl get <kind> -A --chunk-size=N`), at most [`MAX_OBJECTS`].
    async fn list(
        &self,
        api: &Api<DynamicObject>,
        kind: Kind,
        lp: ListParams,
    ) -> Result<Objects, WatchError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut lp = lp.clone().limit(kind.page_size());
            if let Some(t) = token.take() {
                lp = lp.continue_token(&t);
            }
            let page = timed("list", api.list(&lp)).await?;
            for obj in page.items {
                if out.len() < MAX_OBJECTS {
                    out.push(serde_json::to_value(&obj).unwrap_or(Value::Null));
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) if out.len() < MAX_OBJECTS => token = Some(c),
                _ => return Ok(out),
            }
        }
    }

    /// The kube-apiserver mirror pod on `node` and its `--enable-aggregator-routing`
    /// (`kubectl -n kube-system get pods -l component=kube-apiserver
    /// --field-selector spec.nodeName=<node>`).
    pub(crate) async fn apiserver_pod(
        &self,
        node: &str,
    ) -> Result<Option<(String, bool)>, WatchError> {
        let lp = ListParams::default()
            .labels("component=kube-apiserver")
            .fields(&format!("spec.nodeName={node}"));
        let pods = self
            .list(&self.namespaced(Kind::Pod, "kube-system"), Kind::Pod, lp)
            .await?;
        Ok(pods.iter().find_map(|p| {
            let name = parse::name(p)?.to_owned();
            Some((name, parse::aggregator_routing(p)))
        }))
    }

    /// Whether the Node carries `node-role.kubernetes.io/control-plane` (`kubectl get node`);
    /// an error (e.g. no `get nodes` permission) counts as no.
    pub(crate) async fn node_is_control_plane(&self, node: &str) -> bool {
        match timed("get", self.all(Kind::Node).get_opt(node)).await {
            Ok(Some(n)) => {
                parse::is_control_plane_node(&serde_json::to_value(&n).unwrap_or_default())
            }
            _ => false,
        }
    }

    /// APIServices with a Service, and the Service users of every kind; CRDs only when
    /// `crds` is set (they are big and change rarely: the caller keeps the last answer).
    pub(crate) async fn references(
        &self,
        crds: bool,
    ) -> Result<(Vec<ApiServiceCondition>, Vec<(ServiceRef, User)>), WatchError> {
        let mut users = Vec::new();
        let apiservices: Vec<ApiServiceCondition> = self
            .list(
                &self.all(Kind::ApiService),
                Kind::ApiService,
                ListParams::default(),
            )
            .await?
            .iter()
            .filter_map(parse::apiservice)
            .collect();
        for a in &apiservices {
            users.push((a.service.clone(), User::ApiService(a.name.clone())));
        }
        for (kind, prefix) in [
            (Kind::ValidatingWebhooks, "validating"),
            (Kind::MutatingWebhooks, "mutating"),
        ] {
            for cfg in self
                .list(&self.all(kind), kind, ListParams::default())
                .await?
            {
                let Some(name) = parse::name(&cfg) else {
                    continue;
                };
                for s in parse::webhook_services(&cfg) {
                    users.push((s, User::Webhook(format!("{prefix}/{name}"))));
                }
            }
        }
        if crds {
            for crd in self
                .list(&self.all(Kind::Crd), Kind::Crd, ListParams::default())
                .await?
            {
                let (Some(name), Some(s)) = (parse::name(&crd), parse::crd_service(&crd)) else {
                    continue;
                };
                users.push((s, User::Crd(name.to_owned())));
            }
        }
        Ok((apiservices, users))
    }

    /// The EndpointSlices of the Services `names` in `ns`, by Service name, in one list per
    /// [`NAMES_PER_LIST`] names (`kubectl -n <ns> get endpointslices -l
    /// 'kubernetes.io/service-name in (a,b,…)'`); at most [`MAX_SLICES`] per Service.
    pub(crate) async fn endpoint_slices(
        &self,
        ns: &str,
        names: &[&str],
    ) -> Result<BTreeMap<String, Vec<Value>>, WatchError> {
        let mut by_service: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let api = self.namespaced(Kind::EndpointSlice, ns);
        for chunk in names.chunks(NAMES_PER_LIST) {
            let selector = format!("{SERVICE_NAME_LABEL} in ({})", chunk.join(","));
            let lp = ListParams::default().labels(&selector);
            for slice in self.list(&api, Kind::EndpointSlice, lp).await? {
                let Some(name) = slice
                    .pointer("/metadata/labels")
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .and_then(Value::as_str)
                else {
                    continue;
                };
                let list = by_service.entry(name.to_owned()).or_default();
                if list.len() < MAX_SLICES {
                    list.push(slice);
                }
            }
        }
        Ok(by_service)
    }

    /// One Service port: its ClusterIP path and its ready endpoints (from `slices`, its
    /// EndpointSlices), or why it cannot be called (`kubectl -n <ns> get svc <name>`).
    pub(crate) async fn service(
        &self,
        s: &ServiceRef,
        slices: &[Value],
    ) -> Result<Resolved, WatchError> {
        let svc = timed(
            "get",
            self.namespaced(Kind::Service, &s.namespace)
                .get_opt(&s.name),
        )
        .await?;
        let Some(svc) = svc else {
            return Ok(Resolved::Unusable(format!(
                "Service {}/{} not found (kube-aggregator: ServiceNotFound)",
                s.namespace, s.name
            )));
        };
        let svc = serde_json::to_value(&svc).unwrap_or_default();
        let port = match parse::service_port(&svc, s.port) {
            Ok(p) => p,
            Err(why) => {
                return Ok(Resolved::Unusable(format!(
                    "{}/{}: {why}",
                    s.namespace, s.name
                )));
            }
        };
        let mut endpoints: Vec<SocketAddr> = slices
            .iter()
            .flat_map(|v| parse::ready_endpoints(v, &port.port_name))
            .map(|(ip, p)| SocketAddr::new(ip, p))
            .collect();
        endpoints.sort();
        endpoints.dedup();
        endpoints.truncate(MAX_ENDPOINTS);
        Ok(Resolved::Paths {
            cluster_ip: SocketAddr::new(port.cluster_ip, s.port),
            endpoints,
        })
    }
}

/// One object that calls a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum User {
    ApiService(String),
    Webhook(String),
    Crd(String),
}

/// What a Service port resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// Why kube-apiserver cannot call it.
    Unusable(String),
    /// The ClusterIP path and the ready endpoints' paths.
    Paths {
        cluster_ip: SocketAddr,
        endpoints: Vec<SocketAddr>,
    },
}

/// Service ports by reference with their users, at most `max` (sorted, so the same ones are
/// kept every time); and how many were left out.
pub(crate) fn group_users(
    users: Vec<(ServiceRef, User)>,
    max: usize,
) -> (BTreeMap<ServiceRef, ServiceUsers>, usize) {
    let mut all: BTreeMap<ServiceRef, ServiceUsers> = BTreeMap::new();
    for (s, u) in users {
        let e = all.entry(s).or_default();
        let (list, name) = match u {
            User::ApiService(n) => (&mut e.apiservices, n),
            User::Webhook(n) => (&mut e.webhooks, n),
            User::Crd(n) => (&mut e.crds, n),
        };
        list.push(name);
    }
    for u in all.values_mut() {
        for list in [&mut u.apiservices, &mut u.webhooks, &mut u.crds] {
            list.sort();
            list.dedup();
            if list.len() > MAX_USERS {
                let more = list.len() - (MAX_USERS - 1);
                list.truncate(MAX_USERS - 1);
                list.push(format!("…and {more} more"));
            }
        }
    }
    let over = all.len().saturating_sub(max);
    let kept = all.into_iter().take(max).collect();
    (kept, over)
}

/// Whether an address is worth dialing (not unspecified, loopback or multicast: a Service
/// object names them only when malformed or hostile).
pub(crate) fn dialable(addr: &SocketAddr) -> bool {
    let ip: IpAddr = addr.ip();
    !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast()) && addr.port() != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sref(name: &str) -> ServiceRef {
        ServiceRef {
            namespace: "ns".into(),
            name: name.into(),
            port: 443,
        }
    }

    #[test]
    fn users_are_grouped_deduplicated_and_bounded() {
        let mut users = vec![
            (sref("a"), User::ApiService("v1.a".into())),
            (sref("a"), User::Webhook("validating/x".into())),
            (sref("a"), User::Webhook("validating/x".into())),
            (sref("b"), User::Crd("things.example.com".into())),
            (sref("c"), User::Webhook("mutating/y".into())),
        ];
        for i in 0..40 {
            users.push((sref("a"), User::Webhook(format!("validating/w{i:02}"))));
        }
        let (map, over) = group_users(users, 2);
        assert_eq!(over, 1);
        assert_eq!(map.len(), 2);
        let a = &map[&sref("a")];
        assert_eq!(a.apiservices, ["v1.a"]);
        assert_eq!(a.webhooks.len(), MAX_USERS);
        assert_eq!(a.webhooks.last().unwrap(), "…and 26 more");
        assert_eq!(map[&sref("b")].crds, ["things.example.com"]);
    }

    #[test]
    fn hostile_addresses_are_not_dialed() {
        for bad in [
            "0.0.0.0:443",
            "127.0.0.1:443",
            "224.0.0.1:443",
            "10.96.0.1:0",
            "[::1]:443",
        ] {
            assert!(!dialable(&bad.parse().unwrap()), "{bad}");
        }
        assert!(dialable(&"10.96.0.10:443".parse().unwrap()));
    }
}
