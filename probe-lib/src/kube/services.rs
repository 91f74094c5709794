//! The Services probes name (`svc/<namespace>/<name>:<port>` targets and the `kube-dns`
//! Service): each followed with its own single-object list and watch,
//! `GET /api/v1/namespaces/<ns>/services?fieldSelector=metadata.name%3D<name>` (kubectl's
//! `kubectl get svc -n <ns> <name> --watch`), and published as a [`ServiceMap`] on every change.
//!
//! Bounded: at most [`MAX_NAMED_SERVICES`] Services (one open watch each), one object per list,
//! every request and every silence has a timeout, errors back off with jitter, and a 410 or a
//! watch `ERROR` event means a fresh list. Objects are read leniently: a Service whose
//! ClusterIP or ports do not parse has none, which the probes report as unresolved.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, WatchEvent, WatchParams};
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::error::WatchError;
use crate::model::{MAX_NAMED_SERVICES, MAX_SERVICE_PORTS, ServiceKey, ServiceMap, ServiceState};
use crate::util::backoff::Backoff;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long one list or the start of a watch may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A watch silent for its timeout plus this is stalled.
const STALL_MARGIN: Duration = Duration::from_secs(30);
/// Each loop beats at least this often while it runs.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// Follows named Services; create with [`ServiceWatcher::new`], drive with `run`.
pub struct ServiceWatcher {
    client: kube::Client,
    services: Vec<ServiceKey>,
    watch_timeout: Duration,
    tx: watch::Sender<Arc<ServiceMap>>,
    heartbeat: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for ServiceWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceWatcher")
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

impl ServiceWatcher {
    /// The longest a running watcher goes without calling its heartbeat: one request timeout
    /// plus a beat interval, with margin.
    pub const MAX_SILENCE: Duration = Duration::from_secs(45);

    /// A watcher of `services` (deduplicated; beyond [`MAX_NAMED_SERVICES`] an error) with
    /// watch requests of `watch_timeout`, and the receiver of its maps.
    pub fn new(
        client: kube::Client,
        services: impl IntoIterator<Item = ServiceKey>,
        watch_timeout: Duration,
    ) -> Result<(Self, watch::Receiver<Arc<ServiceMap>>), TooManyServices> {
        let services = followed(services)?;
        let (tx, rx) = watch::channel(Arc::new(ServiceMap::default()));
        let w = ServiceWatcher {
            client,
            services,
            watch_timeout,
            tx,
            heartbeat: Box::new(|| {}),
        };
        Ok((w, rx))
    }

    /// Call `beat` at least every few seconds while the watcher runs.
    #[must_use]
    pub fn with_heartbeat(mut self, beat: impl Fn() + Send + Sync + 'static) -> Self {
        self.heartbeat = Box::new(beat);
        self
    }

    /// Follow every Service until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        info!(services = ?self.services.iter().map(ToString::to_string).collect::<Vec<_>>(),
              "following the Services probes name");
        let all = futures::future::join_all(self.services.iter().map(|k| self.follow(k)));
        tokio::select! {
            _ = all => {}
            () = shutdown => debug!("Service watch stopping"),
        }
    }

    fn set(&self, key: &ServiceKey, state: ServiceState) {
        self.tx.send_if_modified(|map| {
            if map.services.get(key) == Some(&state) {
                return false;
            }
            let mut next = ServiceMap::clone(map);
            next.services.insert(key.clone(), state);
            *map = Arc::new(next);
            true
        });
    }

    /// Wait `delay`, beating on the way.
    async fn pause(&self, delay: Duration) {
        let until = Instant::now() + delay;
        loop {
            (self.heartbeat)();
            let now = Instant::now();
            if now >= until {
                return;
            }
            tokio::time::sleep((until - now).min(HEARTBEAT_EVERY)).await;
        }
    }

    /// List and watch one Service forever.
    async fn follow(&self, key: &ServiceKey) {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &key.namespace, &service_resource());
        let selector = format!("metadata.name={}", key.name);
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        loop {
            (self.heartbeat)();
            let mut rv = match self.list(&api, key, &selector).await {
                Ok(rv) => rv,
                Err(e) => {
                    let delay = backoff.next_delay();
                    warn!(service = %key, error = %e, ?delay, "listing the Service failed; retrying");
                    self.pause(delay).await;
                    continue;
                }
            };
            loop {
                match self.watch_once(&api, key, &selector, &mut rv).await {
                    Ok(()) => backoff.reset(),
                    Err(e) if e.needs_relist() => {
                        info!(service = %key, error = %e, "the Service watch needs a fresh list");
                        break;
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        warn!(service = %key, error = %e, ?delay, "the Service watch failed; retrying");
                        self.pause(delay).await;
                    }
                }
            }
        }
    }

    /// `GET /api/v1/namespaces/<ns>/services?fieldSelector=metadata.name%3D<name>`: the
    /// Service's state now, and the list's resource version.
    async fn list(
        &self,
        api: &Api<DynamicObject>,
        key: &ServiceKey,
        selector: &str,
    ) -> Result<String, WatchError> {
        let lp = ListParams::default().fields(selector).limit(1);
        let list = tokio::time::timeout(REQUEST_TIMEOUT, api.list(&lp))
            .await
            .map_err(|_| WatchError::RequestTimeout {
                verb: "list",
                after: REQUEST_TIMEOUT,
            })?
            .map_err(|source| WatchError::Api {
                verb: "list",
                source,
            })?;
        let found = list
            .items
            .iter()
            .map(to_value)
            .find(|o| o.pointer("/metadata/name").and_then(Value::as_str) == Some(&key.name));
        self.set(key, found.as_ref().map_or(ServiceState::Absent, parse));
        Ok(list.metadata.resource_version.unwrap_or_default())
    }

    /// One watch request from `rv` (the same field selector, with bookmarks), until the server
    /// ends it.
    async fn watch_once(
        &self,
        api: &Api<DynamicObject>,
        key: &ServiceKey,
        selector: &str,
        rv: &mut String,
    ) -> Result<(), WatchError> {
        let secs = u32::try_from(self.watch_timeout.as_secs()).unwrap_or(u32::MAX);
        let wp = WatchParams::default().fields(selector).timeout(secs.max(1));
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, api.watch(&wp, rv))
            .await
            .map_err(|_| WatchError::RequestTimeout {
                verb: "watch",
                after: REQUEST_TIMEOUT,
            })?
            .map_err(|source| WatchError::Api {
                verb: "watch",
                source,
            })?;
        let mut stream = std::pin::pin!(stream);
        let silence = self.watch_timeout + STALL_MARGIN;
        loop {
            let stalled_at = Instant::now() + silence;
            let next = loop {
                (self.heartbeat)();
                let left = stalled_at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(WatchError::Stalled(silence));
                }
                if let Ok(n) = tokio::time::timeout(left.min(HEARTBEAT_EVERY), stream.next()).await
                {
                    break n;
                }
            };
            let (obj, state) = match next {
                None => return Ok(()),
                Some(Err(source)) => {
                    return Err(WatchError::Api {
                        verb: "watch",
                        source,
                    });
                }
                Some(Ok(WatchEvent::Bookmark(b))) => {
                    *rv = b.metadata.resource_version;
                    continue;
                }
                Some(Ok(WatchEvent::Error(e))) => {
                    return Err(WatchError::ErrorEvent {
                        code: e.code,
                        message: e.message,
                    });
                }
                Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o))) => {
                    let v = to_value(&o);
                    let s = parse(&v);
                    (v, s)
                }
                Some(Ok(WatchEvent::Deleted(o))) => (to_value(&o), ServiceState::Absent),
            };
            if let Some(v) = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
            {
                v.clone_into(rv);
            }
            // The field selector makes the server send this Service only; a stray object is
            // not taken for it.
            if obj.pointer("/metadata/name").and_then(Value::as_str) == Some(&key.name) {
                debug!(service = %key, ?state, "Service changed");
                self.set(key, state);
            }
        }
    }
}

/// More Services named than are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} Services named by probes; at most {MAX_NAMED_SERVICES} are followed")]
pub struct TooManyServices(pub usize);

/// The Services followed: each once, at most [`MAX_NAMED_SERVICES`].
pub fn followed(
    services: impl IntoIterator<Item = ServiceKey>,
) -> Result<Vec<ServiceKey>, TooManyServices> {
    let set: BTreeSet<ServiceKey> = services.into_iter().collect();
    if set.len() > MAX_NAMED_SERVICES {
        return Err(TooManyServices(set.len()));
    }
    Ok(set.into_iter().collect())
}

fn service_resource() -> ApiResource {
    ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: "Service".into(),
        plural: "services".into(),
    }
}

fn to_value<T: serde::Serialize>(obj: &T) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

/// A Service's ClusterIPs (`spec.clusterIPs`, else `spec.clusterIP`; `None` and malformed
/// ones dropped, so headless and `ExternalName` Services have none) and port numbers.
pub(crate) fn parse(obj: &Value) -> ServiceState {
    let ip = |v: &Value| {
        v.as_str()
            .filter(|s| s.len() <= 64)
            .and_then(|s| s.parse::<IpAddr>().ok())
    };
    let mut cluster_ips: Vec<IpAddr> = obj
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .map(|a| a.iter().take(2).filter_map(ip).collect())
        .unwrap_or_default();
    if cluster_ips.is_empty() {
        cluster_ips.extend(obj.pointer("/spec/clusterIP").and_then(ip));
    }
    let mut ports: Vec<u16> = obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .take(MAX_SERVICE_PORTS)
                .filter_map(|p| p.get("port").and_then(Value::as_u64))
                .filter_map(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .collect()
        })
        .unwrap_or_default();
    ports.sort_unstable();
    ports.dedup();
    ServiceState::Present { cluster_ips, ports }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_cluster_ips_and_ports_leniently() {
        let kube_dns = json!({"metadata": {"name": "kube-dns"}, "spec": {
            "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00:96::a"],
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                      {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                      {"name": "metrics", "port": 9153, "protocol": "TCP"}]}});
        assert_eq!(
            parse(&kube_dns),
            ServiceState::Present {
                cluster_ips: vec!["10.96.0.10".parse().unwrap(), "fd00:96::a".parse().unwrap()],
                ports: vec![53, 9153],
            }
        );
        let headless = json!({"spec": {"clusterIP": "None", "clusterIPs": ["None"],
                                       "ports": [{"port": 80}]}});
        assert_eq!(
            parse(&headless),
            ServiceState::Present {
                cluster_ips: vec![],
                ports: vec![80]
            }
        );
        let hostile = json!({"spec": {"clusterIP": 7, "clusterIPs": "x",
            "ports": [{"port": 70000}, {"port": -1}, {"port": "80"}, {"port": 0}, "junk"]}});
        assert_eq!(
            parse(&hostile),
            ServiceState::Present {
                cluster_ips: vec![],
                ports: vec![]
            }
        );
        let legacy = json!({"spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 443}]}});
        assert_eq!(
            parse(&legacy),
            ServiceState::Present {
                cluster_ips: vec!["10.96.0.20".parse().unwrap()],
                ports: vec![443]
            }
        );
    }

    #[test]
    fn at_most_the_bound_of_services_are_followed() {
        let keys = |n: usize| {
            (0..n).map(|i| ServiceKey {
                namespace: "ns".into(),
                name: format!("s{i}"),
            })
        };
        assert_eq!(
            followed(keys(MAX_NAMED_SERVICES)).unwrap().len(),
            MAX_NAMED_SERVICES
        );
        // Duplicates count once.
        let dup = followed(keys(MAX_NAMED_SERVICES).chain(keys(3))).unwrap();
        assert_eq!(dup.len(), MAX_NAMED_SERVICES);
        assert_eq!(
            followed(keys(MAX_NAMED_SERVICES + 1)),
            Err(TooManyServices(MAX_NAMED_SERVICES + 1))
        );
    }
}
