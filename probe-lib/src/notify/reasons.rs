//! Every verdict reason as Kubernetes spells a reason: CamelCase, one per label value. An
//! exhaustive `match` per enum, so a new reason does not compile until it has its name here.

use crate::model::{BlockReason, ConnectClass, ControlPlaneReason, NodeReason, PodReason};

/// The Event (and condition) reason of a pod problem.
pub const fn pod_reason(r: PodReason) -> &'static str {
    match r {
        PodReason::InterfaceMissing => "HostInterfaceMissing",
        PodReason::InterfaceDown => "HostInterfaceDown",
        PodReason::RouteMissing => "PodRouteMissing",
        PodReason::RouteWrongInterface => "PodRouteWrongInterface",
        PodReason::RouteNotUnicast => "PodRouteNotUnicast",
        PodReason::ProxyArpDisabled => "ProxyArpDisabled",
        PodReason::ForwardingDisabled => "InterfaceForwardingDisabled",
        PodReason::PodInterfaceDown => "PodInterfaceDown",
        PodReason::PodDefaultRouteMissing => "PodDefaultRouteMissing",
        PodReason::VethNotOnBridge => "VethNotOnBridge",
        PodReason::BridgeDown => "BridgeDown",
        PodReason::GatewayAddressMissing => "GatewayAddressMissing",
        PodReason::PathMtuMismatch => "PathMTUMismatch",
    }
}

/// The Event (and condition) reason of a node-level problem.
pub const fn node_reason(r: NodeReason) -> &'static str {
    match r {
        NodeReason::ForwardingDisabled => "ForwardingDisabled",
        NodeReason::TargetUnreachable => "TargetUnreachable",
        NodeReason::OrphanedRoute => "OrphanedRoute",
        NodeReason::OrphanedInterface => "OrphanedInterface",
        NodeReason::KubeWatchStalled => "KubeWatchStalled",
        NodeReason::CalicoNodeStale => "CalicoNodeStale",
        NodeReason::PeersUnreachable => "PeersUnreachable",
    }
}

/// The Event (and condition) reason of a remote block problem.
pub const fn block_reason(r: BlockReason) -> &'static str {
    match r {
        BlockReason::RemoteBlockRouteMissing => "RemoteBlockRouteMissing",
        BlockReason::RemoteBlockRouteWrongNextHop => "RemoteBlockRouteWrongNextHop",
    }
}

/// The Event (and condition) reason of a control-plane Service problem; `None` for `ok` and
/// `pending` (nothing to tell).
pub const fn controlplane_reason(r: ControlPlaneReason) -> Option<&'static str> {
    match r {
        ControlPlaneReason::Ok | ControlPlaneReason::Pending => None,
        ControlPlaneReason::ServiceNotFound => Some("ControlPlaneServiceNotFound"),
        ControlPlaneReason::NoReadyEndpoints => Some("ControlPlaneNoReadyEndpoints"),
        ControlPlaneReason::EndpointsUnreachable => Some("ControlPlaneEndpointsUnreachable"),
        ControlPlaneReason::TlsFailed => Some("ControlPlaneTLSFailed"),
        ControlPlaneReason::ClusterIpUnreachable => Some("ControlPlaneClusterIPUnreachable"),
    }
}

/// The Event reason on the client Pod for its unanswered connects of this class; `None` for
/// the classes told elsewhere or not the client's problem: `node_pod` (the destination pod's
/// own wiring verdict and Event), `unanswered_pod` (a live pod elsewhere: its node's agent
/// judges it), `pod_ip_unverified` (not known to be stale), `service` and `outside` (not a pod
/// network fact podnet can prove). A vanished pod IP is the client's own stale address.
pub const fn connect_reason(c: ConnectClass) -> Option<&'static str> {
    match c {
        ConnectClass::VanishedPodIp => Some("ConnectsToVanishedPodIP"),
        ConnectClass::NodePod
        | ConnectClass::UnansweredPod
        | ConnectClass::PodIpUnverified
        | ConnectClass::Service
        | ConnectClass::Outside => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn camel(s: &str) -> bool {
        s.len() <= 128
            && s.starts_with(|c: char| c.is_ascii_uppercase())
            && s.bytes().all(|b| b.is_ascii_alphanumeric())
    }

    /// Every value of every reason enum has a distinct CamelCase name, across the enums too
    /// (one reason string means one thing in `kubectl get events`).
    #[test]
    fn every_reason_has_a_distinct_camel_case_name() {
        let names: Vec<&str> = PodReason::ALL
            .iter()
            .map(|r| pod_reason(*r))
            .chain(NodeReason::ALL.iter().map(|r| node_reason(*r)))
            .chain(BlockReason::ALL.iter().map(|r| block_reason(*r)))
            .chain(
                ControlPlaneReason::ALL
                    .iter()
                    .filter_map(|r| controlplane_reason(*r)),
            )
            .chain(ConnectClass::ALL.iter().filter_map(|c| connect_reason(*c)))
            .collect();
        // Every control-plane reason but `ok` and `pending`; one connect class.
        assert_eq!(
            names.len(),
            PodReason::ALL.len()
                + NodeReason::ALL.len()
                + BlockReason::ALL.len()
                + ControlPlaneReason::ALL.len()
                - 2
                + 1
        );
        let distinct: HashSet<&str> = names.iter().copied().collect();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
        for n in names {
            assert!(camel(n), "{n}");
        }
        // The label value and the reason name say the same thing.
        for r in PodReason::ALL {
            let words: String = r.as_str().split('_').collect();
            assert!(
                pod_reason(*r).to_lowercase().contains(&words),
                "{r:?} -> {}",
                pod_reason(*r)
            );
        }
        for r in NodeReason::ALL {
            assert_eq!(node_reason(*r).to_lowercase(), r.as_str().replace('_', ""));
        }
        for r in BlockReason::ALL {
            assert_eq!(block_reason(*r).to_lowercase(), r.as_str().replace('_', ""));
        }
        for r in ControlPlaneReason::ALL {
            if let Some(name) = controlplane_reason(*r) {
                let words: String = r.as_str().split('_').collect();
                assert_eq!(name.to_lowercase(), format!("controlplane{words}"));
            }
        }
        assert_eq!(
            connect_reason(ConnectClass::VanishedPodIp).map(str::to_lowercase),
            Some(format!(
                "connectsto{}",
                ConnectClass::VanishedPodIp.as_str().replace('_', "")
            ))
        );
    }
}
