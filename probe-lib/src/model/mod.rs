//! The shared vocabulary of every layer: pod identity, label enums (reasons, causes, results),
//! the probe observation, the prober's pod set, the watch's health, the workers' liveness, and the counters sources
//! update and exporters read. A leaf: it imports nothing from the crate but `util`, so any
//! layer may use it and it can never close a cycle (`tests/layering.rs`).

mod blocks;
mod calico_node;
mod controlplane;
mod counters;
mod felix;
mod labels;
mod notify;
mod owners;
mod peers;
mod pods;
mod services;
mod workers;

use std::time::Duration;

pub use blocks::{BlockMap, NodeName, PeerNode, RemoteBlock};
pub use calico_node::{CalicoNode, CalicoVersion};
pub use controlplane::{
    ApiServiceCondition, ControlPlaneView, PathOutcome, PathProbe, ServiceObservation, ServiceRef,
    ServiceUsers,
};
pub use counters::{KubeMetrics, MonitorMetrics, ProbeMetrics};
pub use felix::{Felix, FelixStatus};
pub use labels::ServiceUnresolved;
pub use labels::{
    BlockReason, ConnectClass, ControlPlaneReason, Direction, LabelEnum, NodeReason, PodReason,
    ProbeResult, Protocol, RestartReason, ResyncCause, SourceName,
};
pub use labels::{ProbeSkip, ScopeIgnored};
pub use notify::{NotifyMetrics, WriteObject};
pub use owners::{PodIpOwner, PodIpOwners};
pub use peers::{MAX_PEERS, PEER_HISTORY, PeerState, PeerView};
pub use pods::{ExpectedPod, KubeHealth, KubeStatus, PodEntry, PodId, PodSet, ProbeMeta};
pub use services::{
    MAX_NAMED_SERVICES, MAX_SERVICE_PORTS, ServiceKey, ServiceMap, ServiceState,
    ServiceTargetStatus, ServiceTargets, parse_service_key, parse_service_port,
};
pub use workers::{Fault, WorkerGuard, WorkerState, Workers};

/// One probe's outcome with its round-trip time (measured around the exchange by podnet,
/// not taken from the ICMP library).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The result.
    pub result: ProbeResult,
    /// Round-trip time of an answered probe (ok or refused).
    pub rtt: Option<Duration>,
    /// Evidence for logs and `/status` (the error, the ICMP type).
    pub detail: Option<String>,
}

impl Observation {
    /// An answered probe.
    pub fn answered(result: ProbeResult, rtt: Duration) -> Self {
        Observation {
            result,
            rtt: Some(rtt),
            detail: None,
        }
    }

    /// A probe without an answer.
    pub fn failed(result: ProbeResult, detail: impl Into<String>) -> Self {
        Observation {
            result,
            rtt: None,
            detail: Some(detail.into()),
        }
    }
}
