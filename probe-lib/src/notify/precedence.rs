//! Which problem the node condition names when there are several: one ordered table of
//! tiers over every reason podnet reports on a node. Causes before the symptoms they explain;
//! within a tier the reason affecting the most pods (or Services) wins, then the name.
//!
//! The order, and why:
//!
//! | tier | reasons | why here |
//! |---|---|---|
//! | 0 | `ForwardingDisabled` | the node forwards nothing: explains every other problem on it |
//! | 1 | `CalicoNodeStale` | the CNI agent stopped programming the node: explains its pods' problems |
//! | 2 | `ControlPlaneClusterIPUnreachable` | node-wide (no service proxy on this host) and cluster-wide in effect (every aggregated API or webhook call from this API server fails); independent of pod wiring, which is proven fine by the endpoints answering |
//! | 3 | every pod reason | this node's own pod wiring, podnet's core verdict |
//! | 4 | `TargetUnreachable`, `PeersUnreachable` | probe failures: symptoms the tiers above often explain |
//! | 5 | remote block reasons | another node's pods, seen from here |
//! | 6 | `ControlPlaneEndpointsUnreachable`, `ControlPlaneTLSFailed`, `ControlPlaneNoReadyEndpoints`, `ControlPlaneServiceNotFound` | a Service's endpoints: unreachable is explained by tiers 3 and 5 (their route verdicts), the rest is the Service's own state, not this node's network |
//! | 7 | `KubeWatchStalled` | podnet's own view is stale |
//! | 8 | `OrphanedRoute`, `OrphanedInterface` | leftovers that break nothing running |
//!
//! Control-plane `ok` and `pending` are not problems and have no tier.

use super::reasons::{block_reason, controlplane_reason, node_reason, pod_reason};
use crate::model::{BlockReason, ControlPlaneReason, NodeReason, PodReason};

/// A problem reason of any kind the node condition tallies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A pod of this node.
    Pod(PodReason),
    /// The node.
    Node(NodeReason),
    /// Another node's pod block.
    Block(BlockReason),
    /// A Service kube-apiserver on this node calls.
    ControlPlane(ControlPlaneReason),
}

impl Reason {
    /// The CamelCase name (condition reason, Event reason); `None` for control-plane `ok` and
    /// `pending`.
    pub const fn name(self) -> Option<&'static str> {
        match self {
            Reason::Pod(r) => Some(pod_reason(r)),
            Reason::Node(r) => Some(node_reason(r)),
            Reason::Block(r) => Some(block_reason(r)),
            Reason::ControlPlane(r) => controlplane_reason(r),
        }
    }

    /// Its tier in [`PRECEDENCE`] (lower wins); `None` for what is not a problem.
    pub fn tier(self) -> Option<u8> {
        PRECEDENCE
            .iter()
            .position(|tier| tier.contains(&self))
            .and_then(|i| u8::try_from(i).ok())
    }
}

use ControlPlaneReason as C;
use Reason::{Block as B, ControlPlane as Cp, Node as N, Pod as P};

/// The tiers, first wins (see the module documentation for the reasons of the order).
pub const PRECEDENCE: &[&[Reason]] = &[
    &[N(NodeReason::ForwardingDisabled)],
    &[N(NodeReason::CalicoNodeStale)],
    &[Cp(C::ClusterIpUnreachable)],
    &[
        P(PodReason::InterfaceMissing),
        P(PodReason::InterfaceDown),
        P(PodReason::RouteMissing),
        P(PodReason::RouteWrongInterface),
        P(PodReason::RouteNotUnicast),
        P(PodReason::ProxyArpDisabled),
        P(PodReason::ForwardingDisabled),
        P(PodReason::PodInterfaceDown),
        P(PodReason::PodDefaultRouteMissing),
        P(PodReason::VethNotOnBridge),
        P(PodReason::BridgeDown),
        P(PodReason::GatewayAddressMissing),
        P(PodReason::PathMtuMismatch),
    ],
    &[
        N(NodeReason::TargetUnreachable),
        N(NodeReason::PeersUnreachable),
    ],
    &[
        B(BlockReason::RemoteBlockRouteMissing),
        B(BlockReason::RemoteBlockRouteWrongNextHop),
    ],
    &[
        Cp(C::EndpointsUnreachable),
        Cp(C::TlsFailed),
        Cp(C::NoReadyEndpoints),
        Cp(C::ServiceNotFound),
    ],
    &[N(NodeReason::KubeWatchStalled)],
    &[
        N(NodeReason::OrphanedRoute),
        N(NodeReason::OrphanedInterface),
    ],
];

#[cfg(test)]
mod tests {
    use super::*;

    fn every_reason() -> Vec<Reason> {
        PodReason::ALL
            .iter()
            .map(|r| P(*r))
            .chain(NodeReason::ALL.iter().map(|r| N(*r)))
            .chain(BlockReason::ALL.iter().map(|r| B(*r)))
            .chain(ControlPlaneReason::ALL.iter().map(|r| Cp(*r)))
            .collect()
    }

    /// Every value of every reason enum is in exactly one tier, except control-plane `ok`
    /// and `pending`, which are not problems (and have no name).
    #[test]
    fn the_table_holds_every_problem_reason_exactly_once() {
        for r in every_reason() {
            let count = PRECEDENCE
                .iter()
                .flat_map(|t| t.iter())
                .filter(|x| **x == r)
                .count();
            let problem = !matches!(r, Cp(C::Ok | C::Pending));
            assert_eq!(count, usize::from(problem), "{r:?}");
            assert_eq!(r.tier().is_some(), problem, "{r:?}");
            assert_eq!(r.name().is_some(), problem, "{r:?}");
        }
        let listed: usize = PRECEDENCE.iter().map(|t| t.len()).sum();
        assert_eq!(listed, every_reason().len() - 2);
    }

    /// The order the module documentation gives, pairwise.
    #[test]
    fn causes_before_symptoms() {
        let t = |r: Reason| r.tier().unwrap();
        let pod = t(P(PodReason::RouteMissing));
        assert!(t(N(NodeReason::ForwardingDisabled)) < t(N(NodeReason::CalicoNodeStale)));
        assert!(t(N(NodeReason::CalicoNodeStale)) < t(Cp(C::ClusterIpUnreachable)));
        assert!(t(Cp(C::ClusterIpUnreachable)) < pod);
        for r in PodReason::ALL {
            assert_eq!(t(P(*r)), pod, "every pod reason shares one tier: {r:?}");
        }
        let block = t(B(BlockReason::RemoteBlockRouteMissing));
        assert!(pod < t(N(NodeReason::TargetUnreachable)));
        assert!(t(N(NodeReason::TargetUnreachable)) < block);
        // An unreachable endpoint is explained by a pod's or a block's route verdict.
        assert!(block < t(Cp(C::EndpointsUnreachable)));
        for r in [
            C::EndpointsUnreachable,
            C::TlsFailed,
            C::NoReadyEndpoints,
            C::ServiceNotFound,
        ] {
            assert!(t(Cp(r)) < t(N(NodeReason::KubeWatchStalled)), "{r:?}");
        }
        for r in [NodeReason::OrphanedRoute, NodeReason::OrphanedInterface] {
            assert_eq!(usize::from(t(N(r))), PRECEDENCE.len() - 1);
        }
    }
}
