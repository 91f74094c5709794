//! Whose an IP address is, as the prober asks it of a source (the Kubernetes API) without
//! depending on it: the question is vocabulary, the answer comes from `kube`.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use serde::Serialize;

use super::PodId;

/// What the source said about an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PodIpOwner {
    /// A pod has it (`status.podIP`), on whichever node.
    Pod {
        /// The pod.
        #[serde(flatten)]
        id: PodId,
        /// The node it runs on, if the API says.
        #[serde(skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    /// No pod has it.
    NoPod,
    /// Not known: not asked (rate limit), or the answer failed.
    Unknown,
}

/// Answers "which pod has this IP?" (`kubectl get pods -A --field-selector status.podIP=IP`).
pub trait PodIpOwners: Send + Sync + std::fmt::Debug {
    /// The owner of `ip`; bounded in time and rate by the implementation.
    fn owner(&self, ip: IpAddr) -> Pin<Box<dyn Future<Output = PodIpOwner> + Send + '_>>;
}
