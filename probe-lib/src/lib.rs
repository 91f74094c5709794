//! podnet's logic: the node's network state over netlink, the pods expected on the node, the
//! pure verdict engine that judges their wiring, and the metrics that export it.
//!
//! Layered one way (each module uses only those before it; `tests/layering.rs` checks it):
//! [`util`], [`error`](Error) → [`model`] (the shared vocabulary) → sources ([`host`],
//! [`kube`], [`cni`], [`probe`]) → state ([`pods`]) → [`verdict`] (pure) → [`snapshot`] →
//! [`monitor`] (orchestration) → exporters ([`metrics`]; [`report`]: `check`'s table and JSON,
//! the status page; `/status` in the agent).
//!
//! The binary (`podnet-agent`) only wires these together.

pub mod cni;
pub mod controlplane;
mod error;
pub mod felix;
#[cfg(test)]
mod fixtures;
pub mod host;
pub mod kube;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod notify;
pub mod pods;
pub mod probe;
pub mod report;
pub mod snapshot;
pub mod util;
pub mod verdict;

pub use error::{Error, KubeClientError};
