//! On control-plane nodes: can kube-apiserver reach the Services it calls? Reads the
//! APIServices, webhook configurations and CRD conversion webhooks that name a Service, each
//! referenced Service's ClusterIP and ready endpoints, and the API server's
//! `--enable-aggregator-routing`; probes every path from the host network namespace (TCP
//! connect + TLS handshake, [`dial`]); publishes a [`ControlPlaneView`] for the verdict.
//!
//! Re-listed every [`ControlPlaneConfig::relist`] (30 s by default) rather than watched: a
//! cluster has tens of these objects, a re-list of the four reference kinds is four small
//! requests (CRDs, which carry their schemas, only every [`CRD_EVERY`] re-lists), and it has no
//! watch state to lose. Per referenced Service it costs one GET, plus one EndpointSlice list
//! per namespace (and 32 Services, by a set-based label selector); probes cost one connect + handshake per path per interval, deduplicated by Service
//! port, so independent of how many webhook rules point at it.
//!
//! Where: with [`Mode::Auto`] the node is a control-plane node when the kube-apiserver mirror
//! pod runs on it or the Node carries `node-role.kubernetes.io/control-plane`; that is
//! checked every [`DETECT_EVERY`] and nothing else is read on other nodes.

mod dial;
mod parse;
mod read;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use self::dial::Dialer;
use self::read::{Reader, Resolved, dialable, group_users};
use crate::model::{ControlPlaneView, PathOutcome, PathProbe, ServiceObservation, ServiceRef};

/// How often a node that is not (yet) a control-plane node is looked at again.
pub const DETECT_EVERY: Duration = Duration::from_secs(300);
/// CRDs are re-listed every this many re-lists.
pub const CRD_EVERY: u32 = 10;
/// Most Service ports checked; the rest are counted in `services_over_limit`.
pub const MAX_SERVICES: usize = 256;

/// Whether this node runs the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// When the node is a control-plane node.
    Auto,
    /// Always.
    On,
}

/// Settings of the control-plane check.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// This node's name.
    pub node: String,
    /// Where to run.
    pub mode: Mode,
    /// How often the referencing objects and Services are re-read.
    pub relist: Duration,
    /// How often every path is probed.
    pub interval: Duration,
    /// Connect and handshake timeout, each.
    pub timeout: Duration,
    /// Probes in flight at once.
    pub concurrency: usize,
}

/// The control-plane source; create with [`ControlPlaneWatcher::new`], drive with `run`.
pub struct ControlPlaneWatcher {
    reader: Reader,
    dialer: Dialer,
    config: ControlPlaneConfig,
    tx: watch::Sender<Arc<ControlPlaneView>>,
    heartbeat: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for ControlPlaneWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneWatcher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What was last read (probes are kept across re-reads of the same paths).
#[derive(Debug, Default)]
struct Known {
    view: ControlPlaneView,
    relists: u32,
    crd_users: Vec<(ServiceRef, read::User)>,
}

impl ControlPlaneWatcher {
    /// Longest silence of a healthy watcher: one detection or re-read (every request bounded)
    /// plus a probe round, well within this.
    pub const MAX_SILENCE: Duration = Duration::from_secs(600);

    /// A watcher over `client`, and the receiver of its views.
    pub fn new(
        client: kube::Client,
        config: ControlPlaneConfig,
    ) -> (Self, watch::Receiver<Arc<ControlPlaneView>>) {
        let (tx, rx) = watch::channel(Arc::new(ControlPlaneView::default()));
        let w = ControlPlaneWatcher {
            reader: Reader::new(client),
            dialer: Dialer::new(config.timeout),
            config,
            tx,
            heartbeat: Box::new(|| {}),
        };
        (w, rx)
    }

    /// Call `beat` whenever the watcher makes progress (the worker registry's liveness).
    pub fn with_heartbeat(mut self, beat: impl Fn() + Send + Sync + 'static) -> Self {
        self.heartbeat = Box::new(beat);
        self
    }

    /// Run until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::select! {
            () = self.run_forever() => {}
            () = shutdown => debug!("control-plane check stopping"),
        }
    }

    async fn run_forever(&self) {
        if self.config.mode == Mode::Auto {
            self.wait_for_control_plane().await;
        }
        info!(node = %self.config.node, "checking the paths from this control-plane node to the Services kube-apiserver calls");
        let mut known = Known::default();
        let mut next_read = Instant::now();
        let mut ticks = tokio::time::interval(self.config.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Scheduled tick times, not wake-up times: a re-list every `relist` exactly when
            // it is a multiple of the interval, not one tick late.
            let at = ticks.tick().await;
            (self.heartbeat)();
            if at >= next_read {
                self.read(&mut known).await;
                next_read = at + self.config.relist;
                self.publish(&known.view);
            }
            self.probe_round(&mut known.view).await;
            self.publish(&known.view);
        }
    }

    /// Return once this node is a control-plane node (mirror pod or role label).
    async fn wait_for_control_plane(&self) {
        let node = &self.config.node;
        loop {
            (self.heartbeat)();
            let pod = match self.reader.apiserver_pod(node).await {
                Ok(p) => p.is_some(),
                Err(e) => {
                    warn!(error = %e, "cannot look for a kube-apiserver mirror pod on this node");
                    false
                }
            };
            if pod || self.reader.node_is_control_plane(node).await {
                return;
            }
            debug!(node = %node, "not a control-plane node; control-plane checks idle");
            tokio::time::sleep(DETECT_EVERY).await;
        }
    }

    /// Re-read the mirror pod, the references and every referenced Service into `known`.
    async fn read(&self, known: &mut Known) {
        let crds = known.relists.is_multiple_of(CRD_EVERY);
        known.relists = known.relists.wrapping_add(1);
        let mut errors = Vec::new();
        match self.reader.apiserver_pod(&self.config.node).await {
            Ok(p) => {
                known.view.aggregator_routing = p.as_ref().map(|(_, r)| *r);
                known.view.apiserver_pod = p.map(|(n, _)| n);
            }
            Err(e) => errors.push(format!("kube-apiserver mirror pod: {e}")),
        }
        (self.heartbeat)();
        let (apiservices, mut users) = match self.reader.references(crds).await {
            Ok(r) => r,
            Err(e) => {
                // Keep the last view: a failed read is no evidence that the Services changed.
                warn!(error = %e, "reading the objects that reference Services failed");
                errors.push(e.to_string());
                known.view.error = Some(errors.join("; "));
                return;
            }
        };
        if crds {
            known.crd_users = users
                .iter()
                .filter(|(_, u)| matches!(u, read::User::Crd(_)))
                .cloned()
                .collect();
        } else {
            users.extend(known.crd_users.iter().cloned());
        }
        let (grouped, over) = group_users(users, MAX_SERVICES);
        if over > 0 {
            warn!(
                limit = MAX_SERVICES,
                over, "too many referenced Service ports; checking the first"
            );
        }
        let old: HashMap<ServiceRef, ServiceObservation> = std::mem::take(&mut known.view.services)
            .into_iter()
            .map(|o| (o.service.clone(), o))
            .collect();
        // One EndpointSlice list per namespace (and 32 Services), not one per Service.
        let mut names: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for s in grouped.keys() {
            names.entry(&s.namespace).or_default().push(&s.name);
        }
        let mut slices: HashMap<String, Result<BTreeMap<String, Vec<Value>>, String>> =
            HashMap::new();
        for (ns, names) in names {
            (self.heartbeat)();
            let read = self.reader.endpoint_slices(ns, &names).await;
            slices.insert(ns.to_owned(), read.map_err(|e| e.to_string()));
        }
        let mut services = Vec::with_capacity(grouped.len());
        for (service, users) in grouped {
            (self.heartbeat)();
            let previous = old.get(&service);
            let resolved = match slices.get(&service.namespace) {
                Some(Ok(by_name)) => {
                    let own = by_name.get(&service.name).map_or(&[][..], Vec::as_slice);
                    self.reader
                        .service(&service, own)
                        .await
                        .map_err(|e| e.to_string())
                }
                Some(Err(e)) => Err(format!("EndpointSlices: {e}")),
                None => Err("EndpointSlices not read".to_owned()),
            };
            let obs = match resolved {
                Ok(resolved) => observation(service, users, resolved, previous),
                Err(e) => {
                    errors.push(format!(
                        "Service {}/{}: {e}",
                        service.namespace, service.name
                    ));
                    match previous {
                        Some(p) => ServiceObservation { users, ..p.clone() },
                        None => continue,
                    }
                }
            };
            services.push(obs);
        }
        known.view.services = services;
        known.view.services_over_limit = over;
        known.view.apiservices = apiservices;
        known.view.synced = true;
        known.view.error = summary(&errors);
    }

    /// Probe every path once, `concurrency` at a time.
    async fn probe_round(&self, view: &mut ControlPlaneView) {
        let mut jobs: Vec<(SocketAddr, String)> = Vec::new();
        for o in &view.services {
            let name = o.service.server_name();
            for p in o.cluster_ip.iter().chain(&o.endpoints) {
                jobs.push((p.addr, name.clone()));
            }
        }
        jobs.sort();
        jobs.dedup();
        let dialer = &self.dialer;
        let results: HashMap<(SocketAddr, String), PathOutcome> =
            futures::stream::iter(jobs.into_iter().map(|(addr, name)| async move {
                let out = if dialable(&addr) {
                    dialer.probe(addr, &name).await
                } else {
                    PathOutcome::Unreached {
                        class: crate::model::ProbeResult::Error,
                        detail: "address not dialed (unspecified, loopback or multicast)".into(),
                    }
                };
                ((addr, name), out)
            }))
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        for o in &mut view.services {
            let name = o.service.server_name();
            for p in o.cluster_ip.iter_mut().chain(o.endpoints.iter_mut()) {
                if let Some(out) = results.get(&(p.addr, name.clone())) {
                    p.outcome = Some(out.clone());
                }
            }
        }
    }

    fn publish(&self, view: &ControlPlaneView) {
        self.tx.send_if_modified(|old| {
            let changed = **old != *view;
            if changed {
                *old = Arc::new(view.clone());
            }
            changed
        });
    }
}

/// The first few errors of a read, and how many more (one bad namespace must not make the
/// message as long as the Service list).
fn summary(errors: &[String]) -> Option<String> {
    const SHOWN: usize = 3;
    match errors.len() {
        0 => None,
        n if n <= SHOWN => Some(errors.join("; ")),
        n => Some(format!(
            "{}; and {} more",
            errors[..SHOWN].join("; "),
            n - SHOWN
        )),
    }
}

/// The observation of one Service port, keeping the last outcome of paths seen before.
fn observation(
    service: ServiceRef,
    users: crate::model::ServiceUsers,
    resolved: Resolved,
    previous: Option<&ServiceObservation>,
) -> ServiceObservation {
    let last = |addr: SocketAddr| {
        previous
            .into_iter()
            .flat_map(|p| p.cluster_ip.iter().chain(&p.endpoints))
            .find(|p| p.addr == addr)
            .and_then(|p| p.outcome.clone())
    };
    let path = |addr| PathProbe {
        addr,
        outcome: last(addr),
    };
    match resolved {
        Resolved::Unusable(why) => ServiceObservation {
            service,
            users,
            unusable: Some(why),
            cluster_ip: None,
            endpoints: Vec::new(),
        },
        Resolved::Paths {
            cluster_ip,
            endpoints,
        } => ServiceObservation {
            service,
            users,
            unusable: None,
            cluster_ip: Some(path(cluster_ip)),
            endpoints: endpoints.into_iter().map(path).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::ServiceUsers;

    fn sref() -> ServiceRef {
        ServiceRef {
            namespace: "kube-system".into(),
            name: "metrics-server".into(),
            port: 443,
        }
    }

    #[test]
    fn error_summaries_are_bounded() {
        assert_eq!(summary(&[]), None);
        let errs: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
        assert_eq!(summary(&errs[..2]).unwrap(), "e0; e1");
        assert_eq!(summary(&errs).unwrap(), "e0; e1; e2; and 7 more");
    }

    #[test]
    fn a_re_read_keeps_the_outcomes_of_paths_it_saw_before() {
        let a: SocketAddr = "10.96.0.10:443".parse().unwrap();
        let e1: SocketAddr = "10.244.0.5:10250".parse().unwrap();
        let e2: SocketAddr = "10.244.0.6:10250".parse().unwrap();
        let first = observation(
            sref(),
            ServiceUsers::default(),
            Resolved::Paths {
                cluster_ip: a,
                endpoints: vec![e1],
            },
            None,
        );
        assert!(first.cluster_ip.as_ref().unwrap().outcome.is_none());
        let mut probed = first.clone();
        for p in probed
            .cluster_ip
            .iter_mut()
            .chain(probed.endpoints.iter_mut())
        {
            p.outcome = Some(PathOutcome::ok(Duration::from_millis(2)));
        }
        // A new endpoint appears: the known paths keep their outcome, the new one is pending.
        let second = observation(
            sref(),
            ServiceUsers::default(),
            Resolved::Paths {
                cluster_ip: a,
                endpoints: vec![e1, e2],
            },
            Some(&probed),
        );
        assert!(second.cluster_ip.unwrap().outcome.is_some());
        assert!(second.endpoints[0].outcome.is_some());
        assert!(second.endpoints[1].outcome.is_none());
        let gone = observation(
            sref(),
            ServiceUsers::default(),
            Resolved::Unusable("not found".into()),
            Some(&probed),
        );
        assert_eq!(gone.unusable.as_deref(), Some("not found"));
        assert!(gone.cluster_ip.is_none() && gone.endpoints.is_empty());
    }
}
