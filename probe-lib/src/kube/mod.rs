//! This node's pods from the Kubernetes API: a list/watch of `spec.nodeName=<node>` that
//! survives 410 Gone, errors, dropped streams and stalls, and says when it is unhealthy.

mod blocks;
mod calico_node;
mod error;
mod page;
mod pod;
mod podip;
#[cfg(test)]
mod props;
mod services;
mod store;
mod watch;

use std::path::Path;

pub use blocks::{BlockSource, BlockWatchConfig, BlockWatcher};
pub use calico_node::parse_version as calico_version_of_image;
pub use error::WatchError;
pub use pod::{
    KubePod, MAX_LABELS, MAX_PROBE_ANNOTATION, PROBES_KEY, RawPod, SKIP_PROBES_KEY, Skip, parse_pod,
};
pub use podip::{PodIpLookup, TokenBucket, owner_from_list};
pub use services::{ServiceWatcher, TooManyServices, followed as followed_services};
pub use store::{KubeHealth, KubeView, PodStore, Tracked};
pub use watch::{KubeWatcher, WatchConfig};

use crate::Error;
use crate::error::KubeClientError;

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
            let kubeconfig = |source| KubeClientError::Kubeconfig {
                path: path.to_owned(),
                source,
            };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(kubeconfig)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(kubeconfig)?
        }
        None => kube::Config::incluster_env().map_err(KubeClientError::InCluster)?,
    };
    Ok(kube::Client::try_from(config).map_err(KubeClientError::Client)?)
}
