//! What the plugin reads from the API: Nodes (podnet's condition), the agent's pods, and
//! podnet's Events. Only lists (`get`/`list` on nodes, pods and events.k8s.io events).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use serde::Serialize;

/// The Node condition podnet owns (True: pod networking on the node has a problem).
pub const CONDITION: &str = "PodNetworkProblem";
/// `reportingController` of podnet's Events.
pub const CONTROLLER: &str = "podnet.io/agent";

/// A client from `kubeconfig`, else the usual places (`$KUBECONFIG`, `~/.kube/config`,
/// in-cluster), as kubectl does.
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("--kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig found and not in a cluster")?,
    };
    kube::Client::try_from(config).context("building the API client")
}

/// One node's line.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRow {
    /// Node name.
    pub name: String,
    /// The condition's status (`True`: a problem), `Unknown`, or `-` when podnet never set it.
    pub status: String,
    /// The condition's reason (CamelCase).
    pub reason: String,
    /// The condition's message.
    pub message: String,
    /// When the condition last changed.
    pub since: String,
    /// The agent pod on the node, if any.
    pub agent_pod: String,
    /// `Ready`, `NotReady` or `Missing` (no agent pod on the node).
    pub agent: String,
}

impl NodeRow {
    /// A problem condition, or an agent that is not ready or missing.
    pub fn is_problem(&self) -> bool {
        self.status == "True" || self.agent != "Ready"
    }
}

/// Every node with podnet's condition and its agent's readiness; problems first.
pub async fn nodes(
    client: &kube::Client,
    namespace: &str,
    selector: &str,
) -> anyhow::Result<Vec<NodeRow>> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing nodes")?;
    let agents = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(selector))
        .await
        .with_context(|| format!("listing the agent's pods in {namespace}"))?;
    let mut by_node: BTreeMap<String, (String, bool)> = BTreeMap::new();
    for p in agents.items {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let name = p.metadata.name.unwrap_or_default();
        // A ready pod wins over one that is terminating or starting on the same node.
        let entry = by_node.entry(node).or_insert((name.clone(), ready));
        if ready && !entry.1 {
            *entry = (name, ready);
        }
    }
    let mut rows: Vec<NodeRow> = nodes
        .items
        .into_iter()
        .map(|n| {
            let name = n.metadata.name.unwrap_or_default();
            let cond = n
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == CONDITION);
            let (agent_pod, agent) = match by_node.get(&name) {
                Some((pod, true)) => (pod.clone(), "Ready"),
                Some((pod, false)) => (pod.clone(), "NotReady"),
                None => ("-".to_owned(), "Missing"),
            };
            NodeRow {
                name,
                status: cond.as_ref().map_or("-".into(), |c| c.status.clone()),
                reason: cond
                    .as_ref()
                    .and_then(|c| c.reason.clone())
                    .unwrap_or_default(),
                message: cond
                    .as_ref()
                    .and_then(|c| c.message.clone())
                    .unwrap_or_default(),
                since: cond
                    .as_ref()
                    .and_then(|c| c.last_transition_time.as_ref())
                    .map(|t| t.0.to_string())
                    .unwrap_or_default(),
                agent_pod,
                agent: agent.to_owned(),
            }
        })
        .collect();
    rows.sort_by(|a, b| (!a.is_problem(), &a.name).cmp(&(!b.is_problem(), &b.name)));
    Ok(rows)
}

/// One pod's latest podnet Event.
#[derive(Debug, Clone, Serialize)]
pub struct PodRow {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// `Warning` (a problem) or `Normal` (recovered).
    #[serde(rename = "type")]
    pub kind: String,
    /// The Event's reason.
    pub reason: String,
    /// The Event's note.
    pub message: String,
    /// The reporting agent's node (`reportingInstance`).
    pub node: String,
    /// Occurrences (the series' count, else 1).
    pub count: i32,
    /// When it was last seen (RFC 3339).
    pub last_seen: String,
}

/// The latest podnet Event of every pod that has one; warnings first.
pub async fn pods(client: &kube::Client) -> anyhow::Result<Vec<PodRow>> {
    let events = Api::<Event>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing events.k8s.io/v1 events")?;
    let mut latest: BTreeMap<(String, String), PodRow> = BTreeMap::new();
    for e in events.items {
        if e.reporting_controller.as_deref() != Some(CONTROLLER) {
            continue;
        }
        let Some(regarding) = e
            .regarding
            .as_ref()
            .filter(|r| r.kind.as_deref() == Some("Pod"))
        else {
            continue;
        };
        let last_seen = e
            .series
            .as_ref()
            .map(|s| s.last_observed_time.0.to_string())
            .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
            .or_else(|| {
                e.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
            })
            .unwrap_or_default();
        let row = PodRow {
            namespace: regarding.namespace.clone().unwrap_or_default(),
            pod: regarding.name.clone().unwrap_or_default(),
            kind: e.type_.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.note.clone().unwrap_or_default(),
            node: e.reporting_instance.clone().unwrap_or_default(),
            count: e.series.as_ref().map_or(1, |s| s.count),
            last_seen,
        };
        let key = (row.namespace.clone(), row.pod.clone());
        // RFC 3339 in UTC compares as text.
        if latest
            .get(&key)
            .is_none_or(|old| old.last_seen <= row.last_seen)
        {
            latest.insert(key, row);
        }
    }
    let mut rows: Vec<PodRow> = latest.into_values().collect();
    rows.sort_by(|a, b| {
        (a.kind != "Warning", &a.namespace, &a.pod).cmp(&(
            b.kind != "Warning",
            &b.namespace,
            &b.pod,
        ))
    });
    Ok(rows)
}

/// The agent pod on `node`, for `check`.
pub async fn agent_on(
    client: &kube::Client,
    namespace: &str,
    selector: &str,
    node: &str,
) -> anyhow::Result<String> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(
            &ListParams::default()
                .labels(selector)
                .fields(&format!("spec.nodeName={node}")),
        )
        .await
        .with_context(|| format!("listing the agent's pods in {namespace}"))?;
    pods.items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .next()
        .with_context(|| format!("no podnet agent pod ({selector}) in {namespace} on node {node}"))
}
