//! Where the expected pods come from — the node's own interfaces, or the Kubernetes API — and
//! the time-dependent judgements that go with the API: the wiring grace period, orphaned host
//! wiring, and a watch unhealthy for too long.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::cni::Cni;
use crate::host::HostState;
use crate::kube::KubeView;
use crate::model::{KubeStatus, SourceName};
use crate::pods::{ExpectedPod, discover_from_links, expected_from_api};
use crate::verdict::{NodeProblem, NodeReason, Orphan, find_orphans};

/// Where the monitor learns which pods should be on this node.
#[derive(Debug, Clone)]
pub enum PodSource {
    /// Node mode: every veth named with this prefix whose peer is in another namespace.
    Links {
        /// Interface prefix, e.g. `cali`.
        prefix: String,
    },
    /// The pods the Kubernetes API schedules on this node.
    Kubernetes {
        /// The watch's views.
        view: watch::Receiver<Arc<KubeView>>,
        /// How the CNI names pod interfaces.
        cni: Cni,
        /// Interface prefix overriding the CNI's default.
        prefix: Option<String>,
        /// How long a pod's new IP may go without wiring, and host wiring without a pod,
        /// before either is a problem.
        grace: Duration,
        /// How long the watch may be unhealthy before that is a node problem.
        unhealthy_after: Duration,
    },
}

impl PodSource {
    /// Short name for `/status`.
    pub fn name(&self) -> SourceName {
        match self {
            PodSource::Links { .. } => SourceName::Node,
            PodSource::Kubernetes { .. } => SourceName::Kubernetes,
        }
    }

    /// The prefix of pod interfaces, if known (node-mode discovery, orphans, peer reads).
    pub fn link_prefix(&self) -> Option<&str> {
        match self {
            PodSource::Links { prefix } => Some(prefix),
            PodSource::Kubernetes { cni, prefix, .. } => {
                prefix.as_deref().or(cni.interface_prefix())
            }
        }
    }
}

/// What the pods of the source are right now.
#[derive(Debug, Default)]
pub(super) struct Expectation {
    pub pods: Vec<ExpectedPod>,
    /// Orphans and a stalled watch.
    pub node_problems: Vec<NodeProblem>,
    /// When the expectation changes by itself (a grace period ends).
    pub next_deadline: Option<Instant>,
    /// `/status`' name of the source.
    pub source_name: SourceName,
    pub kube: Option<KubeStatus>,
}

/// Source state the monitor keeps between evaluations.
#[derive(Debug, Default)]
pub(super) struct SourceState {
    /// When each orphan was first seen.
    orphans: HashMap<Orphan, Instant>,
}

impl SourceState {
    pub(super) fn expect(
        &mut self,
        source: &PodSource,
        host: &HostState,
        now: Instant,
    ) -> Expectation {
        match source {
            PodSource::Links { prefix } => Expectation {
                pods: discover_from_links(host, prefix),
                source_name: SourceName::Node,
                ..Expectation::default()
            },
            PodSource::Kubernetes {
                view,
                cni,
                prefix,
                grace,
                unhealthy_after,
            } => {
                let view = Arc::clone(&view.borrow());
                let link_prefix = source.link_prefix();
                let kube = Some(KubeStatus {
                    synced: view.synced,
                    pods: view.pods.len(),
                    health: view.health.clone(),
                    calico_node: view.calico_node.clone(),
                });
                let mut out = if view.synced {
                    let pods = expected_from_api(&view, cni, prefix.as_deref(), host, now, *grace);
                    let mut e = Expectation {
                        next_deadline: view
                            .pods
                            .iter()
                            .filter_map(|t| t.ips_since.map(|s| s + *grace))
                            .filter(|d| *d > now)
                            .min(),
                        pods,
                        source_name: SourceName::Kubernetes,
                        ..Expectation::default()
                    };
                    if let Some(p) = link_prefix {
                        let owned: HashSet<IpAddr> = view
                            .pods
                            .iter()
                            .flat_map(|t| t.pod.ips.iter().copied())
                            .collect();
                        self.age_orphans(
                            find_orphans(&e.pods, &owned, host, p),
                            *grace,
                            now,
                            &mut e,
                        );
                    }
                    e
                } else {
                    // No list yet: check what the node itself shows, names unknown.
                    Expectation {
                        pods: link_prefix
                            .map(|p| discover_from_links(host, p))
                            .unwrap_or_default(),
                        source_name: SourceName::NodeUntilListed,
                        ..Expectation::default()
                    }
                };
                if let Some(since) = view.health.unhealthy_since {
                    let at = since + *unhealthy_after;
                    if at <= now {
                        out.node_problems.push(NodeProblem {
                            reason: NodeReason::KubeWatchStalled,
                            detail: view
                                .health
                                .last_error
                                .clone()
                                .unwrap_or_else(|| "no contact".into()),
                        });
                    } else {
                        out.next_deadline = Some(out.next_deadline.map_or(at, |d| d.min(at)));
                    }
                }
                out.kube = kube;
                out
            }
        }
    }

    /// Orphans count after the grace period (a pod being created or deleted passes through
    /// states where its wiring and the API disagree for a moment).
    fn age_orphans(
        &mut self,
        found: Vec<Orphan>,
        grace: Duration,
        now: Instant,
        e: &mut Expectation,
    ) {
        let current: HashSet<&Orphan> = found.iter().collect();
        self.orphans.retain(|o, _| current.contains(o));
        for o in found {
            let first = *self.orphans.entry(o.clone()).or_insert(now);
            let due = first + grace;
            if due <= now {
                e.node_problems.push(NodeProblem {
                    reason: o.reason,
                    detail: o.detail,
                });
            } else {
                e.next_deadline = Some(e.next_deadline.map_or(due, |d| d.min(due)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{route, veth};
    use crate::host::HostDump;
    use crate::kube::{KubePod, Tracked};

    fn source(view: KubeView) -> (watch::Sender<Arc<KubeView>>, PodSource) {
        let (tx, rx) = watch::channel(Arc::new(view));
        (
            tx,
            PodSource::Kubernetes {
                view: rx,
                cni: Cni::Calico,
                prefix: None,
                grace: Duration::from_secs(30),
                unhealthy_after: Duration::from_secs(60),
            },
        )
    }

    #[test]
    fn waits_for_the_api_with_node_discovery() {
        let host = HostState::from_dump(
            HostDump {
                links: vec![veth(5, "calia", 1)],
                ..HostDump::default()
            },
            HashMap::new(),
        );
        let (_tx, src) = source(KubeView::default());
        let e = SourceState::default().expect(&src, &host, Instant::now());
        assert_eq!(e.pods.len(), 1);
        assert_eq!(e.source_name, SourceName::NodeUntilListed);
        assert!(e.source_name.as_str().contains("waiting"));
    }

    #[test]
    fn orphans_after_grace_and_stalled_watch() {
        let host = HostState::from_dump(
            HostDump {
                links: vec![veth(5, "caliorphan00000", 1)],
                routes: vec![route("10.244.0.9/32", Some(5))],
                ..HostDump::default()
            },
            HashMap::new(),
        );
        let t0 = Instant::now();
        let mut view = KubeView {
            synced: true,
            pods: vec![Tracked {
                pod: KubePod {
                    namespace: "default".into(),
                    name: "web-0".into(),
                    uid: "u".into(),
                    ips: vec!["10.244.0.2".parse().unwrap()],
                    terminating: false,
                    meta: Default::default(),
                },
                ips_since: Some(t0),
            }],
            ..KubeView::default()
        };
        view.health.unhealthy_since = Some(t0);
        view.health.last_error = Some("gone: too old".into());
        let (_tx, src) = source(view);
        let mut st = SourceState::default();
        let e = st.expect(&src, &host, t0);
        assert!(e.node_problems.is_empty());
        assert!(e.pods[0].in_grace);
        assert_eq!(e.next_deadline, Some(t0 + Duration::from_secs(30)));
        let e = st.expect(&src, &host, t0 + Duration::from_secs(31));
        let reasons: Vec<&str> = e.node_problems.iter().map(|p| p.reason.as_str()).collect();
        assert_eq!(reasons, ["orphaned_route", "orphaned_interface"]);
        assert!(!e.pods[0].in_grace);
        assert_eq!(e.next_deadline, Some(t0 + Duration::from_secs(60)));
        let e = st.expect(&src, &host, t0 + Duration::from_secs(61));
        assert!(
            e.node_problems
                .iter()
                .any(|p| p.reason == NodeReason::KubeWatchStalled && p.detail.contains("too old"))
        );
    }
}
