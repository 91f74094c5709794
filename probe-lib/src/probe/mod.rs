//! Probes from inside every pod's network namespace (and from the host to every pod): ICMP to
//! the pod's gateway, the node and configured targets, TCP connects to configured targets,
//! DNS queries to the cluster's DNS service ([`dns`]).
//!
//! Pure parts: [`target`] (what to probe), [`outcome`] (how results are classified),
//! [`report`] (per-pod state). The rest touches the OS: finding pod namespaces, creating
//! sockets inside them on a dedicated thread, and the probing task.

pub mod outcome;
pub mod report;
pub mod target;

mod any_cert;
pub(crate) use any_cert::any_certificate_config;
pub mod dns;
mod dont_fragment;
pub mod driver;
mod error;
pub mod fake;
pub mod hints;
pub mod http;
mod icmp_filter;
mod netns_thread;
mod nl;
pub mod peer_prober;
pub mod peers;
pub mod plan;
pub mod prober;
pub mod scope;
pub mod selector;
pub mod services;
pub mod sockdiag;
pub mod unanswered;

pub use driver::{NetnsDriver, PodNetwork, PodRound, RoundResult};
pub use error::ProbeError;
pub use peer_prober::{PeerProber, PeerProberConfig};
pub use prober::{Prober, ProberConfig};

#[cfg(test)]
mod props;
