//! The incident's cause, named: calico-node's felix stopped learning about pods (its datastore
//! watch looped on "resourceVersion too old", calico#6032, fixed in v3.23.1) while reporting
//! ready. Felix's own signals stay green; the tell is the disagreement between felix and the
//! API — pods the API runs here past their wiring grace without a host route (felix removed
//! the route the CNI added, not knowing the endpoint), or fewer endpoints known to felix than
//! pods the API puts here. Routes that appeared and were removed while their pod lives are
//! the sharpest evidence: they count even within the wiring grace.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use super::{NodeProblem, NodeReason, PodReason, PodVerdict};
use crate::model::{CalicoNode, CalicoVersion, FelixStatus};

/// Pods named in the evidence, at most (the count is always complete).
const NAMED_PODS: usize = 5;

/// A pod whose host route was removed while the pod and its interface lived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VanishedRoute {
    /// How often (saturating).
    pub removals: u32,
    /// How long the route lived before its last removal, if its appearance was seen.
    pub last_lifetime: Option<Duration>,
}

/// `calico_node_stale`, with its evidence, when felix says ready but disagrees with the API.
/// Nothing when felix could not be read or says not ready (then its own signal speaks).
/// `vanished` holds, by host interface, the pods whose route was removed while they lived.
pub(super) fn stale(
    felix: &FelixStatus,
    pods: &[PodVerdict],
    vanished: &HashMap<&str, VanishedRoute>,
    calico_node: Option<&CalicoNode>,
) -> Option<NodeProblem> {
    if felix.ready != Some(true) {
        return None;
    }
    let route_missing = |p: &&PodVerdict| {
        p.problems
            .iter()
            .any(|x| x.reason == PodReason::RouteMissing)
    };
    let settled = pods
        .iter()
        .filter(|p| !p.pod.in_grace && !p.pod.ips.is_empty());
    let api_pods = settled.clone().count();
    let routeless = settled.filter(route_missing).count();
    // Routeless now, after a route that was there: in grace or not.
    let removed: Vec<(&PodVerdict, VanishedRoute)> = pods
        .iter()
        .filter(route_missing)
        .filter_map(|p| Some((p, *vanished.get(p.pod.interface.as_str())?)))
        .collect();
    let lag = felix
        .active_local_endpoints
        .filter(|n| (*n as usize) < api_pods);
    if routeless == 0 && removed.is_empty() && lag.is_none() {
        return None;
    }
    let mut evidence = Vec::new();
    if routeless > 0 {
        evidence.push(format!(
            "{routeless} of {api_pods} pods the API runs here past their wiring grace have no host route"
        ));
    }
    if !removed.is_empty() {
        evidence.push(removed_evidence(&removed));
    }
    if let Some(n) = lag {
        evidence.push(format!(
            "felix knows {n} local endpoints, the API has {api_pods} pods with IPs here"
        ));
    }
    Some(NodeProblem {
        reason: NodeReason::CalicoNodeStale,
        detail: format!(
            "felix reports ready but {}; calico-node has likely stopped learning pods{}",
            evidence.join("; "),
            advice(calico_node)
        ),
    })
}

/// The cause and the fix, as far as calico-node's version tells them.
fn advice(calico_node: Option<&CalicoNode>) -> String {
    let fixed = CalicoVersion::WATCH_BUG_FIXED;
    match calico_node.and_then(|c| Some((c, c.version?))) {
        Some((c, v)) if v.has_watch_bug() => format!(
            ": {} runs Calico {v}, which has the known watch bug (calico#6032/typha#227: the \
             datastore watch loops on \"resourceVersion too old\" after an API server restart); \
             restart calico-node on this node now, and upgrade Calico to {fixed} or later, \
             which fixes it",
            c.pod
        ),
        Some((c, v)) => format!(
            " ({} runs Calico {v}, which has the fix for calico#6032: look for another cause \
             in its log): restart calico-node on this node",
            c.pod
        ),
        None => format!(
            " (calico#6032 before {fixed}; calico-node's version unknown): restart \
             calico-node on this node"
        ),
    }
}

/// "routes of 3 pods appeared and were removed within ~10 s while the pods live (a/b, …)".
fn removed_evidence(removed: &[(&PodVerdict, VanishedRoute)]) -> String {
    let within = removed
        .iter()
        .filter_map(|(_, v)| v.last_lifetime)
        .max()
        .map(|d| match d.as_secs_f64() {
            s if s < 10.0 => format!(" within ~{s:.1} s"),
            s => format!(" within ~{s:.0} s"),
        })
        .unwrap_or_default();
    let mut names: Vec<String> = removed
        .iter()
        .take(NAMED_PODS)
        .map(|(p, v)| {
            let id = &p.pod.id;
            let who = if id.name.is_empty() {
                p.pod.interface.clone()
            } else {
                format!("{}/{}", id.namespace, id.name)
            };
            if v.removals > 1 {
                format!("{who} {}×", v.removals)
            } else {
                who
            }
        })
        .collect();
    if removed.len() > NAMED_PODS {
        names.push(format!("{} more", removed.len() - NAMED_PODS));
    }
    let (n, names) = (removed.len(), names.join(", "));
    if n == 1 {
        format!("the route of 1 pod appeared and was removed{within} while the pod lives ({names})")
    } else {
        format!(
            "routes of {n} pods appeared and were removed{within} while the pods live ({names})"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::pod_verdict;

    fn pod(i: u8, in_grace: bool, route_missing: bool) -> PodVerdict {
        let missing: &[PodReason] = if route_missing {
            &[PodReason::RouteMissing]
        } else {
            &[]
        };
        let mut p = pod_verdict(&format!("cali{i}"), true, missing);
        p.pod.in_grace = in_grace;
        p
    }

    fn felix(ready: Option<bool>, endpoints: Option<u64>) -> FelixStatus {
        FelixStatus {
            ready,
            active_local_endpoints: endpoints,
            ..FelixStatus::default()
        }
    }

    fn none() -> HashMap<&'static str, VanishedRoute> {
        HashMap::new()
    }

    #[test]
    fn ready_felix_disagreeing_with_the_api_is_stale() {
        let pods = [
            pod(1, false, false),
            pod(2, false, true),
            pod(3, true, true),
        ];
        let p = stale(&felix(Some(true), None), &pods, &none(), None).unwrap();
        assert_eq!(p.reason, NodeReason::CalicoNodeStale);
        assert!(p.detail.contains("1 of 2 pods"), "{}", p.detail);
        assert!(p.detail.contains("restart calico-node"), "{}", p.detail);
        // Endpoint lag alone.
        let healthy = [pod(1, false, false), pod(2, false, false)];
        let p = stale(&felix(Some(true), Some(1)), &healthy, &none(), None).unwrap();
        assert!(
            p.detail.contains("felix knows 1 local endpoints"),
            "{}",
            p.detail
        );
        assert_eq!(
            stale(&felix(Some(true), Some(2)), &healthy, &none(), None),
            None
        );
        // A pod still in its grace period is not evidence.
        let young = [pod(3, true, true)];
        assert_eq!(stale(&felix(Some(true), None), &young, &none(), None), None);
    }

    #[test]
    fn routes_removed_while_pods_live_are_evidence_even_in_grace() {
        let removed = |removals, secs| VanishedRoute {
            removals,
            last_lifetime: Some(Duration::from_secs(secs)),
        };
        let vanished: HashMap<&str, VanishedRoute> = [
            ("cali3", removed(1, 10)),
            ("cali4", removed(3, 9)),
            ("cali1", removed(1, 10)),
        ]
        .into();
        // cali1's route is back: not evidence; cali3 and cali4 are in grace but routeless.
        let pods = [pod(1, false, false), pod(3, true, true), pod(4, true, true)];
        let p = stale(&felix(Some(true), None), &pods, &vanished, None).unwrap();
        assert_eq!(p.reason, NodeReason::CalicoNodeStale);
        assert!(
            p.detail.contains(
                "routes of 2 pods appeared and were removed within ~10 s while the pods live \
                 (ns/cali3, ns/cali4 3×)"
            ),
            "{}",
            p.detail
        );
        // Routes back: cleared.
        let back = [
            pod(1, false, false),
            pod(3, true, false),
            pod(4, true, false),
        ];
        assert_eq!(
            stale(&felix(Some(true), None), &back, &vanished, None),
            None
        );
        // Many pods: counted in full, a few named.
        let many: Vec<PodVerdict> = (10..20).map(|i| pod(i, true, true)).collect();
        let names: Vec<String> = (10..20).map(|i| format!("cali{i}")).collect();
        let vanished: HashMap<&str, VanishedRoute> =
            names.iter().map(|n| (n.as_str(), removed(1, 10))).collect();
        let p = stale(&felix(Some(true), None), &many, &vanished, None).unwrap();
        assert!(p.detail.contains("routes of 10 pods"), "{}", p.detail);
        assert!(p.detail.contains("5 more)"), "{}", p.detail);
    }

    #[test]
    fn unread_or_unready_felix_is_not_judged_stale() {
        let pods = [pod(1, false, true)];
        let vanished: HashMap<&str, VanishedRoute> = [(
            "cali1",
            VanishedRoute {
                removals: 1,
                last_lifetime: None,
            },
        )]
        .into();
        assert_eq!(stale(&felix(None, Some(0)), &pods, &vanished, None), None);
        assert_eq!(
            stale(&felix(Some(false), Some(0)), &pods, &vanished, None),
            None
        );
    }

    #[test]
    fn the_message_names_calico_nodes_version_and_the_bug() {
        let pods = [pod(1, false, true)];
        let node = |image: &str, version| {
            CalicoNode::new("calico-system/calico-node-x".into(), image.into(), version)
        };
        let v = |minor, patch| {
            Some(CalicoVersion {
                major: 3,
                minor,
                patch,
            })
        };
        let detail = |c: Option<&CalicoNode>| {
            stale(&felix(Some(true), None), &pods, &none(), c)
                .unwrap()
                .detail
        };
        let old = node("calico/node:v3.22.4", v(22, 4));
        let d = detail(Some(&old));
        assert!(
            d.contains("calico-system/calico-node-x runs Calico v3.22.4, which has the known watch bug (calico#6032/typha#227"),
            "{d}"
        );
        assert!(d.contains("upgrade Calico to v3.23.1 or later"), "{d}");
        assert!(d.contains("restart calico-node on this node"), "{d}");
        let new = node("calico/node:v3.26.1", v(26, 1));
        let d = detail(Some(&new));
        assert!(d.contains("Calico v3.26.1, which has the fix"), "{d}");
        assert!(!d.contains("upgrade"), "{d}");
        for unknown in [None, Some(&node("calico/node@sha256:00", None))] {
            let d = detail(unknown);
            assert!(d.contains("calico-node's version unknown"), "{d}");
            assert!(d.contains("restart calico-node on this node"), "{d}");
        }
    }
}
