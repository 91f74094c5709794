//! Every verdict reason as Kubernetes spells a reason: CamelCase, one per label value. An
//! exhaustive `match` per enum, so a new reason does not compile until it has its name here.

use crate::model::{BlockReason, NodeReason, PodReason};

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

/// How much a node-level reason outweighs pod reasons when the condition names one: the
/// node-wide causes first (they explain the pods' problems), the leftovers last.
pub(super) const fn node_rank(r: NodeReason) -> u8 {
    match r {
        NodeReason::ForwardingDisabled => 0,
        NodeReason::CalicoNodeStale => 1,
        NodeReason::TargetUnreachable | NodeReason::PeersUnreachable => 3,
        NodeReason::KubeWatchStalled => 5,
        NodeReason::OrphanedRoute | NodeReason::OrphanedInterface => 6,
    }
}

/// Pod reasons rank between the node-wide causes and the rest (see [`node_rank`]).
pub(super) const POD_RANK: u8 = 2;
/// Remote blocks: after the pods of this node.
pub(super) const BLOCK_RANK: u8 = 4;

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
            .collect();
        assert_eq!(
            names.len(),
            PodReason::ALL.len() + NodeReason::ALL.len() + BlockReason::ALL.len()
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
    }

    #[test]
    fn node_wide_causes_outrank_pods_and_leftovers_rank_last() {
        assert!(node_rank(NodeReason::ForwardingDisabled) < POD_RANK);
        assert!(node_rank(NodeReason::CalicoNodeStale) < POD_RANK);
        for r in [NodeReason::OrphanedRoute, NodeReason::OrphanedInterface] {
            assert!(node_rank(r) > BLOCK_RANK && node_rank(r) > POD_RANK);
        }
    }
}
