//! This node's pods from the Kubernetes API: a list/watch of `spec.nodeName=<node>` that
//! survives 410 Gone, errors, dropped streams and stalls, and says when it is unhealthy.

mod pod;
mod store;
mod watch;

use std::path::Path;

pub use pod::{KubePod, Skip, parse_pod};
pub use store::{KubeHealth, KubeView, PodStore, Tracked};
pub use watch::{KubeWatcher, RESTART_REASONS, WatchConfig};

use crate::Error;

/// Whether this process runs in a Kubernetes pod with a service account (in-cluster).
pub fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token").exists()
}

/// A client from a kubeconfig file, or from the in-cluster service account (by IP from the
/// environment: no DNS, which a static binary could not do through NSS).
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, Error> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| Error::Kube(format!("reading {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Kube(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::incluster_env()
            .map_err(|e| Error::Kube(format!("in-cluster configuration: {e}")))?,
    };
    kube::Client::try_from(config).map_err(|e| Error::Kube(format!("creating the client: {e}")))
}
