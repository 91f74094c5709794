//! What the control-plane source observed on this node: the Services kube-apiserver calls
//! (aggregated APIs, admission and CRD conversion webhooks), who uses them, how far a TCP
//! connect and a TLS handshake got to each ClusterIP and ready endpoint, and the API server's
//! `--enable-aggregator-routing`. Written by `controlplane`, judged by `verdict::controlplane`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::ProbeResult;

/// A Service port kube-apiserver calls: `<namespace>/<name>:<port>` (the service port, as in
/// `clientConfig.service.port`; 443 when unset).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ServiceRef {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// The service port called.
    pub port: u16,
}

impl ServiceRef {
    /// The TLS server name kube-apiserver sends: `<svc>.<ns>.svc`.
    pub fn server_name(&self) -> String {
        format!("{}.{}.svc", self.name, self.namespace)
    }
}

/// Who calls one Service port (object names, sorted, deduplicated; bounded by the source).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceUsers {
    /// APIServices (`v1beta1.metrics.k8s.io`).
    pub apiservices: Vec<String>,
    /// Validating and Mutating webhook configurations (`validating/<name>`, `mutating/<name>`).
    pub webhooks: Vec<String>,
    /// CRDs whose conversion webhook it is.
    pub crds: Vec<String>,
}

impl ServiceUsers {
    /// No user at all (never published: a Service is referenced because someone uses it).
    pub fn is_empty(&self) -> bool {
        self.apiservices.is_empty() && self.webhooks.is_empty() && self.crds.is_empty()
    }
}

/// How far one TCP connect + TLS handshake got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum PathOutcome {
    /// Connected and completed a TLS handshake.
    Ok {
        /// Connect plus handshake, in milliseconds.
        ms: u64,
    },
    /// Connected, but the TLS handshake failed.
    TlsFailed {
        /// Why (the TLS error, or the peer closing).
        detail: String,
    },
    /// No connection.
    Unreached {
        /// The probe class (timeout, refused, unreachable, error).
        class: ProbeResult,
        /// The socket error.
        detail: String,
    },
}

impl PathOutcome {
    /// An answer within `took`.
    pub fn ok(took: Duration) -> Self {
        PathOutcome::Ok {
            ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// TCP connected (whatever the handshake did).
    pub fn connected(&self) -> bool {
        !matches!(self, PathOutcome::Unreached { .. })
    }
}

/// One address probed, and how it went (`None`: not probed yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathProbe {
    /// `ClusterIP:port`, or `endpoint IP:targetPort`.
    pub addr: SocketAddr,
    /// The last outcome.
    pub outcome: Option<PathOutcome>,
}

/// One Service port as read and probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceObservation {
    /// The Service port.
    #[serde(flatten)]
    pub service: ServiceRef,
    /// Who calls it.
    pub users: ServiceUsers,
    /// Why the Service cannot be called (not found, headless, ExternalName, no such port);
    /// `None` when it was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unusable: Option<String>,
    /// Its ClusterIP and port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<PathProbe>,
    /// Its ready endpoints (bounded), with their target port.
    pub endpoints: Vec<PathProbe>,
}

/// An APIService's `Available` condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiServiceCondition {
    /// The APIService (`v1beta1.metrics.k8s.io`).
    pub name: String,
    /// The Service it is served by.
    pub service: ServiceRef,
    /// `status == "True"`; `None` without a condition (or with status `Unknown`).
    pub available: Option<bool>,
    /// The condition's reason (`FailedDiscoveryCheck`, `MissingEndpoints`, `Passed`, …).
    pub reason: String,
    /// The condition's message (bounded).
    pub message: String,
}

/// Everything the control-plane source knows, replaced (never mutated) on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ControlPlaneView {
    /// The kube-apiserver mirror pod on this node (`kube-system/kube-apiserver-<node>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apiserver_pod: Option<String>,
    /// Its `--enable-aggregator-routing` (false when absent); `None` without a mirror pod.
    pub aggregator_routing: Option<bool>,
    /// The Services called, sorted (at most the source's bound).
    pub services: Vec<ServiceObservation>,
    /// Referenced Service ports beyond the bound, not checked.
    pub services_over_limit: usize,
    /// APIServices served by a Service.
    pub apiservices: Vec<ApiServiceCondition>,
    /// The last read of the API succeeded.
    pub synced: bool,
    /// The last read's error, if it failed (the previous view is kept meanwhile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
