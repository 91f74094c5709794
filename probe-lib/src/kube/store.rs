//! This node's pods as the watch has delivered them, and what the monitor receives.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::Value;
use tracing::warn;

use super::calico_node::calico_node_of;
use super::pod::{KubePod, Skip, parse_pod};
use crate::model::CalicoNode;
pub use crate::model::KubeHealth;

/// One pod and since when it has had its current IPs (for the wiring grace period).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// The pod.
    pub pod: KubePod,
    /// When its current IPs were first seen; `None` without IPs.
    pub ips_since: Option<Instant>,
}

/// What the monitor gets: the pods of this node and the health of the watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeView {
    /// A full list has completed at least once: `pods` means something.
    pub synced: bool,
    /// Pods of this node, by `namespace/name`, sorted.
    pub pods: Vec<Tracked>,
    /// The watch's health.
    pub health: KubeHealth,
    /// The calico-node pod on this node, if the watch saw one.
    pub calico_node: Option<CalicoNode>,
}

/// The pods of this node, keyed by `namespace/name`.
#[derive(Debug, Default)]
pub struct PodStore {
    node: String,
    pods: HashMap<String, Tracked>,
    /// Last warning per object key, so a malformed object is reported once, not per event.
    warned: HashMap<String, String>,
    /// calico-node pods on this node by key (one, two during a rolling update; only
    /// namespaces tenants cannot create pods in are believed, so this stays tiny).
    calico_nodes: HashMap<String, CalicoNode>,
}

fn key_of(obj: &Value) -> Option<String> {
    let m = obj.get("metadata")?;
    Some(format!(
        "{}/{}",
        m.get("namespace")?.as_str()?,
        m.get("name")?.as_str()?
    ))
}

impl PodStore {
    /// A store for node `node`.
    pub fn new(node: &str) -> Self {
        PodStore {
            node: node.to_owned(),
            ..PodStore::default()
        }
    }

    /// ADDED or MODIFIED.
    pub fn upsert(&mut self, obj: &Value, now: Instant) {
        let key = key_of(obj);
        if let Some(k) = &key {
            match calico_node_of(obj, &self.node) {
                Some(c) => {
                    self.calico_nodes.insert(k.clone(), c);
                }
                None => {
                    self.calico_nodes.remove(k);
                }
            }
        }
        match parse_pod(obj, &self.node) {
            Ok(pod) => {
                let key = format!("{}/{}", pod.namespace, pod.name);
                self.warned.remove(&key);
                let ips_since = match self.pods.get(&key) {
                    Some(old) if old.pod.ips == pod.ips && old.pod.uid == pod.uid => old.ips_since,
                    _ => (!pod.ips.is_empty()).then_some(now),
                };
                self.pods.insert(key, Tracked { pod, ips_since });
            }
            Err(skip) => {
                if let Skip::Malformed(why) = &skip {
                    let k = key.clone().unwrap_or_else(|| "<unnamed>".to_owned());
                    if self.warned.get(&k) != Some(why) {
                        warn!(object = %k, reason = %why, "skipping a malformed pod object");
                        self.warned.insert(k, why.clone());
                    }
                }
                if let Some(k) = key {
                    self.pods.remove(&k);
                }
            }
        }
    }

    /// DELETED.
    pub fn delete(&mut self, obj: &Value) {
        if let Some(k) = key_of(obj) {
            self.pods.remove(&k);
            self.warned.remove(&k);
            self.calico_nodes.remove(&k);
        }
    }

    /// A full list replaces everything; pods whose IPs did not change keep their age.
    pub fn replace<'a>(&mut self, items: impl IntoIterator<Item = &'a Value>, now: Instant) {
        let old = std::mem::take(&mut self.pods);
        self.calico_nodes.clear();
        for obj in items {
            if let Some(k) = key_of(obj)
                && let Some(prev) = old.get(&k)
            {
                self.pods.insert(k, prev.clone());
            }
            self.upsert(obj, now);
        }
        // Anything the list did not mention is gone.
        let listed: std::collections::HashSet<String> = self.pods.keys().cloned().collect();
        self.pods.retain(|k, _| listed.contains(k));
    }

    /// The pods, sorted by key.
    pub fn pods(&self) -> Vec<Tracked> {
        let mut v: Vec<(&String, &Tracked)> = self.pods.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.into_iter().map(|(_, t)| t.clone()).collect()
    }

    /// The calico-node pod on this node (the one with the lowest key, should a rolling update
    /// briefly show two).
    pub fn calico_node(&self) -> Option<CalicoNode> {
        self.calico_nodes
            .iter()
            .min_by(|a, b| a.0.cmp(b.0))
            .map(|(_, c)| c.clone())
    }

    /// Number of pods held.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// No pods.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn pod(name: &str, ip: Option<&str>) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {"nodeName": "n1"},
            "status": {"podIP": ip},
        })
    }

    #[test]
    fn ips_since_follows_ip_changes() {
        let mut s = PodStore::new("n1");
        let t0 = Instant::now();
        s.upsert(&pod("a", None), t0);
        assert_eq!(s.pods()[0].ips_since, None);
        let t1 = t0 + Duration::from_secs(5);
        s.upsert(&pod("a", Some("10.244.0.2")), t1);
        assert_eq!(s.pods()[0].ips_since, Some(t1));
        s.upsert(&pod("a", Some("10.244.0.2")), t1 + Duration::from_secs(5));
        assert_eq!(
            s.pods()[0].ips_since,
            Some(t1),
            "unchanged IPs keep their age"
        );
        let t3 = t1 + Duration::from_secs(9);
        s.upsert(&pod("a", Some("10.244.0.3")), t3);
        assert_eq!(s.pods()[0].ips_since, Some(t3));
    }

    #[test]
    fn delete_malformed_and_moves() {
        let mut s = PodStore::new("n1");
        let now = Instant::now();
        s.upsert(&pod("a", Some("10.244.0.2")), now);
        s.upsert(&pod("b", Some("10.244.0.3")), now);
        s.delete(&pod("a", None));
        assert_eq!(s.len(), 1);
        // b becomes malformed: dropped, not kept with stale data.
        let mut bad = pod("b", None);
        bad["status"]["podIPs"] = json!("oops");
        s.upsert(&bad, now);
        s.upsert(&bad, now);
        assert!(s.is_empty());
        // A pod moved to another node leaves this store.
        s.upsert(&pod("c", Some("10.244.0.4")), now);
        let mut moved = pod("c", Some("10.244.0.4"));
        moved["spec"]["nodeName"] = json!("n2");
        s.upsert(&moved, now);
        assert!(s.is_empty());
    }

    #[test]
    fn replace_keeps_ages_and_drops_the_unlisted() {
        let mut s = PodStore::new("n1");
        let t0 = Instant::now();
        s.upsert(&pod("a", Some("10.244.0.2")), t0);
        s.upsert(&pod("b", Some("10.244.0.3")), t0);
        let t1 = t0 + Duration::from_secs(60);
        let list = [pod("a", Some("10.244.0.2")), pod("c", Some("10.244.0.5"))];
        s.replace(list.iter(), t1);
        let pods = s.pods();
        let names: Vec<&str> = pods.iter().map(|t| t.pod.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(pods[0].ips_since, Some(t0));
        assert_eq!(pods[1].ips_since, Some(t1));
    }
}
