//! The library's error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong inside podnet's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening or configuring a netlink socket failed.
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The kernel answered a request with an error.
    #[error("kernel rejected {what}: {source}")]
    Kernel {
        /// What was asked for.
        what: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The netlink connection went away.
    #[error("netlink connection closed while {0}")]
    ConnectionClosed(&'static str),
    /// A dump did not complete in time.
    #[error("netlink dump of {0} timed out")]
    Timeout(&'static str),
    /// Talking to the Kubernetes API could not even start (configuration, client).
    #[error("Kubernetes: {0}")]
    Kube(#[from] KubeClientError),
    /// A dump was interrupted by concurrent changes every time it was retried.
    #[error("netlink dump of {0} was interrupted by concurrent changes {1} times in a row")]
    Interrupted(&'static str, u32),
}

/// Why no Kubernetes client could be made.
#[derive(Debug, thiserror::Error)]
pub enum KubeClientError {
    /// The kubeconfig file could not be read or used.
    #[error("{path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// kube's error.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No in-cluster configuration (service account, `KUBERNETES_SERVICE_HOST`).
    #[error("in-cluster configuration: {0}")]
    InCluster(#[source] kube::config::InClusterError),
    /// The client could not be built from the configuration.
    #[error("creating the client: {0}")]
    Client(#[source] kube::Error),
}
