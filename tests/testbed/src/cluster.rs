//! A simulated node with a Kubernetes API double inside its namespace, the API's pods and the
//! node's in agreement: the bed for the agent in Kubernetes mode.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use podnet_kube_double::{Config, KubeApiServer, PodBuilder, numbered_pods};
use serde_json::Value;

use crate::agent::Agent;
use crate::simnode::{SimNode, SimPod};

/// The node name the agent is started with and the API's pods are bound to.
pub const NODE: &str = "sim-node";

/// A simulated node and an API double. Dropping it removes the kubeconfig, the API and the node.
#[derive(Debug)]
pub struct Cluster {
    /// The node.
    pub node: SimNode,
    /// The API double, listening on the node's loopback.
    pub api: KubeApiServer,
    /// A kubeconfig for the double.
    pub kubeconfig: PathBuf,
}

impl Cluster {
    /// `pods` pods (pod 0 dual-stack) on the node and in the API, plus pods of other nodes.
    pub fn new(pods: usize) -> Result<Self> {
        Self::with_history(pods, Config::default().history_window)
    }

    /// As [`Cluster::new`], the API keeping `history_window` changes for watches (a burst
    /// larger than the window closes the watches that fall behind it, as the watch cache
    /// does).
    pub fn with_history(pods: usize, history_window: usize) -> Result<Self> {
        let node = SimNode::new(pods, &[0])?;
        let config = Config {
            bookmark_interval: Duration::from_secs(1),
            history_window,
            ..Config::default()
        };
        let api = KubeApiServer::start_with(
            Some(node.node_netns()),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            config,
        )?;
        api.register_node(NODE);
        // Pods elsewhere in the cluster: never this agent's business.
        api.bulk_insert(numbered_pods(20, 4));
        let kubeconfig = std::env::temp_dir().join(format!("{}-kubeconfig", node.node_netns()));
        api.kubeconfig(&kubeconfig)?;
        let c = Cluster {
            node,
            api,
            kubeconfig,
        };
        for p in c.node.pods() {
            c.api.apply(api_pod(p))?;
        }
        Ok(c)
    }

    /// Start the agent binary `bin` with its pods from the API (watch requests of 5 s) and
    /// `extra` flags.
    pub fn agent(&self, bin: &Path, extra: &[&str]) -> Result<Agent> {
        let mut args = vec![
            "--pod-source",
            "kubernetes",
            "--kubeconfig",
            self.kubeconfig.to_str().unwrap_or_default(),
            "--kube-watch-timeout",
            "5s",
        ];
        args.extend_from_slice(extra);
        Agent::start_binary(bin, &self.node, &args)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

/// The API object of a simulated pod, bound to [`NODE`], with its IPs.
pub fn api_pod(p: &SimPod) -> Value {
    let mut b = PodBuilder::new(&p.namespace, &p.name)
        .node(NODE)
        .ipv4(p.ipv4);
    if let Some(v6) = p.ipv6 {
        b = b.ipv6(v6);
    }
    b.build()
}
