//! The object store: pods keyed like etcd (`<namespace>/<name>`), a global revision, an index by
//! node name, and a bounded history of changes (the watch cache window).
//!
//! Every write gets the next revision and sets the object's `metadata.resourceVersion`. The
//! history holds every change with a revision above the compaction point `compacted`; watches
//! and lists at older revisions are answered with 410 Expired, as kube-apiserver does.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};

use super::selectors::{FieldSelector, LabelSelector, node_name};

/// A stored object, shared with lists and watches without copying.
pub(crate) type Obj = Arc<Value>;

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One change, as the watch cache keeps it: the new object and the previous one.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub revision: u64,
    pub kind: ChangeKind,
    pub key: String,
    /// The new object; for a deletion, the last state with the deletion's resourceVersion.
    pub object: Obj,
    pub prev: Option<Obj>,
}

/// The resources the double serves: pods, and the cluster-scoped Nodes and Calico
/// `BlockAffinities` (told apart by their `kind`; one store, one revision, as in etcd).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Resource {
    /// Pods (and malformed objects without a `kind`).
    #[default]
    Pods,
    /// `v1` Nodes.
    Nodes,
    /// `crd.projectcalico.org/v1` BlockAffinities.
    BlockAffinities,
    /// `apiregistration.k8s.io/v1` APIServices.
    ApiServices,
    /// `admissionregistration.k8s.io/v1` ValidatingWebhookConfigurations.
    ValidatingWebhookConfigurations,
    /// `admissionregistration.k8s.io/v1` MutatingWebhookConfigurations.
    MutatingWebhookConfigurations,
    /// `apiextensions.k8s.io/v1` CustomResourceDefinitions.
    CustomResourceDefinitions,
    /// `v1` Services (namespaced).
    Services,
    /// `discovery.k8s.io/v1` EndpointSlices (namespaced).
    EndpointSlices,
}

impl Resource {
    /// The resource of a stored object, by its `kind`.
    pub fn of(obj: &Value) -> Self {
        match obj.get("kind").and_then(Value::as_str) {
            Some("Node") => Resource::Nodes,
            Some("BlockAffinity") => Resource::BlockAffinities,
            Some("APIService") => Resource::ApiServices,
            Some("ValidatingWebhookConfiguration") => Resource::ValidatingWebhookConfigurations,
            Some("MutatingWebhookConfiguration") => Resource::MutatingWebhookConfigurations,
            Some("CustomResourceDefinition") => Resource::CustomResourceDefinitions,
            Some("Service") => Resource::Services,
            Some("EndpointSlice") => Resource::EndpointSlices,
            _ => Resource::Pods,
        }
    }

    /// `(apiVersion, kind)` of the list answer.
    pub(crate) fn list_kind(self) -> (&'static str, &'static str) {
        match self {
            Resource::Pods => ("v1", "PodList"),
            Resource::Nodes => ("v1", "NodeList"),
            Resource::BlockAffinities => ("crd.projectcalico.org/v1", "BlockAffinityList"),
            Resource::ApiServices => ("apiregistration.k8s.io/v1", "APIServiceList"),
            Resource::ValidatingWebhookConfigurations => (
                "admissionregistration.k8s.io/v1",
                "ValidatingWebhookConfigurationList",
            ),
            Resource::MutatingWebhookConfigurations => (
                "admissionregistration.k8s.io/v1",
                "MutatingWebhookConfigurationList",
            ),
            Resource::CustomResourceDefinitions => {
                ("apiextensions.k8s.io/v1", "CustomResourceDefinitionList")
            }
            Resource::Services => ("v1", "ServiceList"),
            Resource::EndpointSlices => ("discovery.k8s.io/v1", "EndpointSliceList"),
        }
    }

    /// The etcd-like key prefix of cluster-scoped objects (no namespace holds a `:`).
    fn prefix(self) -> &'static str {
        match self {
            Resource::Pods => "",
            Resource::Nodes => "nodes:",
            Resource::BlockAffinities => "blockaffinities:",
            Resource::ApiServices => "apiservices:",
            Resource::ValidatingWebhookConfigurations => "validatingwebhookconfigurations:",
            Resource::MutatingWebhookConfigurations => "mutatingwebhookconfigurations:",
            Resource::CustomResourceDefinitions => "customresourcedefinitions:",
            Resource::Services => "services:",
            Resource::EndpointSlices => "endpointslices:",
        }
    }

    /// The store key of the named object of this resource.
    pub fn key(self, namespace: &str, name: &str) -> String {
        format!("{}{namespace}/{name}", self.prefix())
    }
}

/// What a list or watch selects: a resource, an optional namespace and both selectors.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub resource: Resource,
    pub namespace: Option<String>,
    pub fields: FieldSelector,
    pub labels: LabelSelector,
}

impl Filter {
    /// Whether an object passes the namespace and both selectors.
    pub fn matches(&self, obj: &Value) -> bool {
        Resource::of(obj) == self.resource
            && self.namespace.as_deref().is_none_or(|ns| {
                obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns)
            })
            && self.fields.matches(obj)
            && self.labels.matches(obj)
    }

    fn selects_all(&self) -> bool {
        self.fields.is_empty() && self.labels.is_empty()
    }
}

/// One page of a list.
#[derive(Debug)]
pub(crate) struct Page {
    pub items: Vec<Obj>,
    /// Set when more matching objects follow: the last key returned.
    pub last_key: Option<String>,
    /// Objects after this page, only known (as in Kubernetes) without selectors.
    pub remaining: Option<usize>,
}

/// The store. Not thread-safe by itself: the server wraps it in a mutex.
#[derive(Debug)]
pub(crate) struct Store {
    revision: u64,
    compacted: u64,
    window: usize,
    objects: BTreeMap<String, Obj>,
    by_node: HashMap<String, BTreeSet<String>>,
    history: VecDeque<Change>,
    nodes: BTreeSet<String>,
    anonymous: u64,
}

/// The etcd-like key of an object; malformed objects without a name get a unique one.
fn key_of(obj: &Value, anonymous: &mut u64) -> String {
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    match obj.pointer("/metadata/name").and_then(Value::as_str) {
        Some(name) => Resource::of(obj).key(ns, name),
        None => {
            *anonymous += 1;
            format!("{ns}/~unnamed-{}", *anonymous)
        }
    }
}

/// Set `metadata.resourceVersion` (when the object has a metadata object).
fn set_resource_version(obj: &mut Value, revision: u64) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), json!(revision.to_string()));
    }
}

/// A copy of `obj` with `metadata.resourceVersion` set (when it has a metadata object).
pub(crate) fn with_resource_version(obj: &Value, revision: u64) -> Value {
    let mut v = obj.clone();
    set_resource_version(&mut v, revision);
    v
}

impl Store {
    /// An empty store at `revision`, keeping at most `window` changes.
    pub fn new(revision: u64, window: usize) -> Self {
        Store {
            revision,
            compacted: revision,
            window: window.max(1),
            objects: BTreeMap::new(),
            by_node: HashMap::new(),
            history: VecDeque::new(),
            nodes: BTreeSet::new(),
            anonymous: 0,
        }
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The compaction point: changes at or below it are forgotten.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Number of stored objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Create or replace an object (keyed by namespace and name); returns its revision.
    pub fn put(&mut self, obj: Value) -> u64 {
        let key = key_of(&obj, &mut self.anonymous);
        self.put_at(key, obj)
    }

    fn put_at(&mut self, key: String, mut obj: Value) -> u64 {
        let revision = self.revision + 1;
        set_resource_version(&mut obj, revision);
        let obj = Arc::new(obj);
        let prev = self.objects.insert(key.clone(), obj.clone());
        if let Some(p) = &prev {
            self.unindex(&key, p);
        }
        self.by_node
            .entry(node_name(&obj).to_owned())
            .or_default()
            .insert(key.clone());
        let kind = if prev.is_some() {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        self.record(Change {
            revision,
            kind,
            key,
            object: obj,
            prev,
        });
        revision
    }

    /// Change an object in place; returns the new revision, or None if it does not exist.
    pub fn update(&mut self, key: &str, f: impl FnOnce(&mut Value)) -> Option<u64> {
        let mut obj = Value::clone(self.objects.get(key)?);
        f(&mut obj);
        Some(self.put_at(key.to_owned(), obj))
    }

    /// Delete an object; returns the deletion's revision, or None if it does not exist.
    pub fn delete(&mut self, key: &str) -> Option<u64> {
        let prev = self.objects.remove(key)?;
        self.unindex(key, &prev);
        let revision = self.revision + 1;
        self.record(Change {
            revision,
            kind: ChangeKind::Deleted,
            key: key.to_owned(),
            object: Arc::new(with_resource_version(&prev, revision)),
            prev: Some(prev),
        });
        Some(revision)
    }

    /// A stored object.
    pub fn get(&self, key: &str) -> Option<&Obj> {
        self.objects.get(key)
    }

    fn unindex(&mut self, key: &str, obj: &Value) {
        let node = node_name(obj);
        if let Some(set) = self.by_node.get_mut(node) {
            set.remove(key);
            if set.is_empty() {
                self.by_node.remove(node);
            }
        }
    }

    fn record(&mut self, change: Change) {
        self.revision = change.revision;
        self.history.push_back(change);
        while self.history.len() > self.window {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.revision;
            }
        }
    }

    /// Forget all history up to the current revision (etcd compaction).
    pub fn compact(&mut self) -> u64 {
        self.history.clear();
        self.compacted = self.revision;
        self.compacted
    }

    /// Register a node (for `GET /api/v1/nodes/{name}`) without pods.
    pub fn register_node(&mut self, name: &str) {
        self.nodes.insert(name.to_owned());
    }

    /// Whether a node is known: registered, or named by a stored pod.
    pub fn has_node(&self, name: &str) -> bool {
        !name.is_empty() && (self.nodes.contains(name) || self.by_node.contains_key(name))
    }

    /// Every change after `revision`, or Err(compaction point) if some are forgotten.
    pub fn changes_since(&self, revision: u64) -> Result<Vec<Change>, u64> {
        if revision < self.compacted {
            return Err(self.compacted);
        }
        let first = self.history.partition_point(|c| c.revision <= revision);
        Ok(self.history.range(first..).cloned().collect())
    }

    /// All objects as they were at `revision` (undoing later changes), or Err(compaction point).
    fn objects_at(&self, revision: u64) -> Result<Cow<'_, BTreeMap<String, Obj>>, u64> {
        if revision >= self.revision {
            return Ok(Cow::Borrowed(&self.objects));
        }
        let changes = self.changes_since(revision)?;
        let mut objects = self.objects.clone();
        for c in changes.iter().rev() {
            match (c.kind, &c.prev) {
                (ChangeKind::Added, _) => {
                    objects.remove(&c.key);
                }
                (_, Some(prev)) => {
                    objects.insert(c.key.clone(), prev.clone());
                }
                (_, None) => {}
            }
        }
        Ok(Cow::Owned(objects))
    }

    /// One page of matching objects at `revision` (the current one if newer), in key order,
    /// starting after `after`. Err(compaction point) if that revision is forgotten.
    pub fn list(
        &self,
        revision: u64,
        filter: &Filter,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Page, u64> {
        let namespace = filter.namespace.as_deref();
        // Namespaced kinds other than pods have their kind's prefix before the namespace.
        let prefix = filter.resource.prefix();
        let lower = match (after, namespace) {
            (Some(a), _) => std::ops::Bound::Excluded(a.to_owned()),
            (None, Some(ns)) => std::ops::Bound::Included(format!("{prefix}{ns}/")),
            (None, None) => std::ops::Bound::Unbounded,
        };
        let range = (lower, std::ops::Bound::Unbounded);
        let in_ns = |k: &str| {
            namespace.is_none_or(|ns| {
                k.strip_prefix(prefix)
                    .and_then(|k| k.strip_prefix(ns))
                    .is_some_and(|r| r.starts_with('/'))
            })
        };
        let objects = self.objects_at(revision)?;
        // The node index serves a `spec.nodeName=X` list at the current revision.
        let indexed = match (filter.fields.node_name(), &objects) {
            (Some(node), Cow::Borrowed(_)) => Some(self.by_node.get(node)),
            _ => None,
        };
        let candidates: Box<dyn Iterator<Item = (&String, &Obj)>> = match indexed {
            Some(Some(keys)) => Box::new(
                keys.range(range)
                    .filter_map(|k| objects.get_key_value(k.as_str())),
            ),
            Some(None) => Box::new(std::iter::empty()),
            None => Box::new(objects.range(range)),
        };
        let mut matching = candidates
            .take_while(|(k, _)| in_ns(k))
            .filter(|(_, o)| filter.matches(o));
        let limit = limit.unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut last = None;
        for (k, o) in matching.by_ref() {
            items.push(o.clone());
            last = Some(k);
            if items.len() == limit {
                break;
            }
        }
        let more = items.len() == limit && matching.next().is_some();
        let last_key = if more { last.cloned() } else { None };
        let remaining = match (&last_key, filter.selects_all()) {
            (Some(k), true) => Some(
                objects
                    .range::<String, _>((
                        std::ops::Bound::Excluded(k.clone()),
                        std::ops::Bound::Unbounded,
                    ))
                    .take_while(|(k, _)| in_ns(k))
                    .filter(|(_, o)| Resource::of(o) == filter.resource)
                    .count(),
            ),
            _ => None,
        };
        Ok(Page {
            items,
            last_key,
            remaining,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns"}, "spec": {"nodeName": node}})
    }

    fn names(p: &Page) -> Vec<&str> {
        p.items
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap_or("?"))
            .collect()
    }

    /// Nodes and BlockAffinities share the store and its revision but never a list: a pod
    /// list holds pods only, a node list nodes only, and a node may share a pod's name.
    #[test]
    fn resources_are_kept_apart() {
        let mut s = Store::new(10, 100);
        s.put(pod("a", "n1"));
        s.put(json!({"kind": "Node", "metadata": {"name": "a"}}));
        s.put(json!({"kind": "BlockAffinity", "metadata": {"name": "a-10-244-1-0-26"}}));
        let of = |resource| Filter {
            resource,
            ..Filter::default()
        };
        let rev = s.revision();
        let pods = s.list(rev, &of(Resource::Pods), None, Some(1)).unwrap();
        assert_eq!((names(&pods), pods.last_key.as_deref()), (vec!["a"], None));
        assert_eq!(
            names(&s.list(rev, &of(Resource::Nodes), None, None).unwrap()),
            ["a"]
        );
        let blocks = s
            .list(rev, &of(Resource::BlockAffinities), None, None)
            .unwrap();
        assert_eq!(names(&blocks), ["a-10-244-1-0-26"]);
        assert!(s.delete(&Resource::Nodes.key("", "a")).is_some());
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn revisions_history_and_snapshots() {
        let mut s = Store::new(10, 100);
        assert_eq!(s.put(pod("a", "n1")), 11);
        assert_eq!(s.put(pod("b", "n2")), 12);
        assert_eq!(
            s.update("ns/a", |p| p["spec"]["nodeName"] = json!("n2")),
            Some(13)
        );
        assert_eq!(s.delete("ns/b"), Some(14));
        assert_eq!(s.get("ns/a").unwrap()["metadata"]["resourceVersion"], "13");
        let kinds: Vec<_> = s
            .changes_since(11)
            .unwrap()
            .iter()
            .map(|c| c.kind)
            .collect();
        assert_eq!(
            kinds,
            [ChangeKind::Added, ChangeKind::Modified, ChangeKind::Deleted]
        );
        let all = Filter::default();
        assert_eq!(names(&s.list(12, &all, None, None).unwrap()), ["a", "b"]);
        let at12 = s.list(12, &all, None, None).unwrap();
        assert_eq!(at12.items[0]["metadata"]["resourceVersion"], "11");
        let on_n2 = Filter {
            namespace: Some("ns".into()),
            fields: FieldSelector::parse("spec.nodeName=n2").unwrap(),
            ..Filter::default()
        };
        assert_eq!(names(&s.list(14, &on_n2, None, None).unwrap()), ["a"]);
        assert_eq!(names(&s.list(12, &on_n2, None, None).unwrap()), ["b"]);
        s.compact();
        assert_eq!(s.changes_since(13).unwrap_err(), 14);
        assert!(s.list(13, &all, None, None).is_err());
        assert!(s.changes_since(14).unwrap().is_empty());
    }

    #[test]
    fn window_and_pages() {
        let mut s = Store::new(0, 3);
        for i in 0..5 {
            s.put(pod(&format!("p{i}"), "n"));
        }
        assert_eq!(s.compacted(), 2);
        let all = Filter {
            namespace: Some("ns".into()),
            ..Filter::default()
        };
        let p = s.list(5, &all, None, Some(2)).unwrap();
        assert_eq!((names(&p), p.remaining), (vec!["p0", "p1"], Some(3)));
        let p = s.list(5, &all, p.last_key.as_deref(), Some(3)).unwrap();
        assert_eq!((names(&p), &p.last_key), (vec!["p2", "p3", "p4"], &None));
        let other = Filter {
            namespace: Some("n".into()),
            ..Filter::default()
        };
        assert!(s.list(5, &other, None, None).unwrap().items.is_empty());
    }
}
