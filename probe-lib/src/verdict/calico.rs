//! The incident's cause, named: calico-node's felix stopped learning about pods (its datastore
//! watch looped on "resourceVersion too old", calico#6032, fixed in v3.23.1) while reporting
//! ready. Felix's own signals stay green; the tell is the disagreement between felix and the
//! API — pods the API runs here past their wiring grace without a host route (felix removed
//! the route the CNI added, not knowing the endpoint), or fewer endpoints known to felix than
//! pods the API puts here.

use super::{NodeProblem, NodeReason, PodReason, PodVerdict};
use crate::model::FelixStatus;

/// `calico_node_stale`, with its evidence, when felix says ready but disagrees with the API.
/// Nothing when felix could not be read or says not ready (then its own signal speaks).
pub(super) fn stale(felix: &FelixStatus, pods: &[PodVerdict]) -> Option<NodeProblem> {
    if felix.ready != Some(true) {
        return None;
    }
    let settled = pods
        .iter()
        .filter(|p| !p.pod.in_grace && !p.pod.ips.is_empty());
    let api_pods = settled.clone().count();
    let routeless = settled
        .filter(|p| {
            p.problems
                .iter()
                .any(|x| x.reason == PodReason::RouteMissing)
        })
        .count();
    let lag = felix
        .active_local_endpoints
        .filter(|n| (*n as usize) < api_pods);
    if routeless == 0 && lag.is_none() {
        return None;
    }
    let mut evidence = Vec::new();
    if routeless > 0 {
        evidence.push(format!(
            "{routeless} of {api_pods} pods the API runs here past their wiring grace have no host route"
        ));
    }
    if let Some(n) = lag {
        evidence.push(format!(
            "felix knows {n} local endpoints, the API has {api_pods} pods with IPs here"
        ));
    }
    Some(NodeProblem {
        reason: NodeReason::CalicoNodeStale,
        detail: format!(
            "felix reports ready but {}; calico-node has likely stopped learning pods \
             (calico#6032 before v3.23.1): restart calico-node on this node",
            evidence.join("; ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ExpectedPod, PodId};
    use crate::verdict::PodProblem;

    fn pod(i: u8, in_grace: bool, route_missing: bool) -> PodVerdict {
        let ip = std::net::IpAddr::from([10, 244, 0, i]);
        PodVerdict {
            pod: ExpectedPod {
                id: PodId {
                    namespace: "ns".into(),
                    name: format!("p{i}"),
                },
                interface: format!("cali{i}"),
                ips: vec![ip],
                in_grace,
                uid: String::new(),
            },
            link: None,
            problems: route_missing
                .then(|| PodProblem {
                    reason: PodReason::RouteMissing,
                    ip: Some(ip),
                    detail: String::new(),
                })
                .into_iter()
                .collect(),
            pod_side: None,
            probes: Vec::new(),
            gateways: Vec::new(),
        }
    }

    fn felix(ready: Option<bool>, endpoints: Option<u64>) -> FelixStatus {
        FelixStatus {
            ready,
            active_local_endpoints: endpoints,
            ..FelixStatus::default()
        }
    }

    #[test]
    fn ready_felix_disagreeing_with_the_api_is_stale() {
        let pods = [
            pod(1, false, false),
            pod(2, false, true),
            pod(3, true, true),
        ];
        let p = stale(&felix(Some(true), None), &pods).unwrap();
        assert_eq!(p.reason, NodeReason::CalicoNodeStale);
        assert!(p.detail.contains("1 of 2 pods"), "{}", p.detail);
        assert!(p.detail.contains("restart calico-node"), "{}", p.detail);
        // Endpoint lag alone.
        let healthy = [pod(1, false, false), pod(2, false, false)];
        let p = stale(&felix(Some(true), Some(1)), &healthy).unwrap();
        assert!(
            p.detail.contains("felix knows 1 local endpoints"),
            "{}",
            p.detail
        );
        assert_eq!(stale(&felix(Some(true), Some(2)), &healthy), None);
        // A pod still in its grace period is not evidence.
        assert_eq!(stale(&felix(Some(true), None), &[pod(3, true, true)]), None);
    }

    #[test]
    fn unread_or_unready_felix_is_not_judged_stale() {
        let pods = [pod(1, false, true)];
        assert_eq!(stale(&felix(None, Some(0)), &pods), None);
        assert_eq!(stale(&felix(Some(false), Some(0)), &pods), None);
    }
}
