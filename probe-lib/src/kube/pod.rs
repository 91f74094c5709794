//! The few fields of a Kubernetes Pod podnet needs, read leniently from its JSON: a malformed
//! object is skipped with a reason, never a crash, and never poisons the rest of a list.
//!
//! [`RawPod`] is what serde decodes a pod into: only the fields podnet reads, everything else
//! (other annotations, containers, managed fields — what a tenant can make megabytes of) is
//! skipped by the parser without being stored. Labels (for probe selectors) and the two
//! `podnet.io/…` probe annotations are kept within the bounds below. A section of the wrong JSON type becomes "invalid"
//! instead of an error, so one odd pod never fails the page or the watch it came in.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::sync::Arc;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::model::ProbeMeta;

/// Labels of a pod podnet keeps (for `--probe-selector` and the `podnet.io/probes` label); a
/// pod with more is probed by the first ones and counted as `too_large`.
pub const MAX_LABELS: usize = 32;
/// Longest label key Kubernetes allows (253-byte prefix, `/`, 63-byte name).
const MAX_LABEL_KEY: usize = 317;
/// Longest label value Kubernetes allows.
const MAX_LABEL_VALUE: usize = 63;
/// Longest `podnet.io/probes` or `podnet.io/skip-probes` value podnet reads.
pub const MAX_PROBE_ANNOTATION: usize = 256;
/// The annotation (and label) that turns a pod's probes off: `"false"`.
pub const PROBES_KEY: &str = "podnet.io/probes";
/// The annotation naming targets a pod is not probed against: `"node,dns"`.
pub const SKIP_PROBES_KEY: &str = "podnet.io/skip-probes";

use super::calico_node::CalicoNodeImage;

/// A pod as decoded from the API: only the fields [`parse_pod`] reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RawPod {
    metadata: Section<RawMeta>,
    spec: Section<RawSpec>,
    status: Section<RawStatus>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawMeta {
    name: Option<Value>,
    namespace: Option<Value>,
    uid: Option<Value>,
    resource_version: Option<Value>,
    deletion_timestamp: Option<Value>,
    labels: Bounded<Labels>,
    annotations: Bounded<ProbeAnnotations>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawSpec {
    node_name: Option<Value>,
    host_network: Option<Value>,
    /// The `calico-node` container's image and the first few images (see `calico_node.rs`).
    containers: CalicoNodeImage,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawStatus {
    phase: Option<Value>,
    #[serde(rename = "podIP")]
    pod_ip: Option<Value>,
    #[serde(rename = "podIPs")]
    pod_ips: Option<Value>,
}

/// An object-valued section of a pod: absent (or null), decoded, or not an object at all.
#[derive(Debug, Clone, Default)]
pub(super) enum Section<T> {
    #[default]
    Missing,
    Valid(T),
    Invalid,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Section<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Section<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Section::Valid)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Section::Invalid)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Section::Missing)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Section::Missing)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Section::Invalid)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Section::Invalid)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Section::Invalid)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Section::Invalid)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Section::Invalid)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// Which entries of a string map [`Bounded`] keeps, and how many.
trait Keep: Default {
    /// Entries kept at most (one more than podnet uses, so too many is visible).
    const MAX: usize;
    /// Whether to keep this key.
    fn keep(key: &str) -> bool;
}

#[derive(Debug, Clone, Default)]
struct Labels;
impl Keep for Labels {
    const MAX: usize = MAX_LABELS + 1;
    fn keep(_: &str) -> bool {
        true
    }
}

#[derive(Debug, Clone, Default)]
struct ProbeAnnotations;
impl Keep for ProbeAnnotations {
    const MAX: usize = 2;
    fn keep(key: &str) -> bool {
        key == PROBES_KEY || key == SKIP_PROBES_KEY
    }
}

/// A string map read with bounds: at most `K::MAX` kept entries; keys and values cut one byte
/// past the longest podnet accepts, a value that is not a string kept as `null` — enough for
/// [`parse_pod`] to see that something was too large without storing it. Not an object: empty.
#[derive(Debug, Clone, Default)]
struct Bounded<K> {
    entries: Vec<(String, Value)>,
    kind: PhantomData<K>,
}

/// `s` cut to the first character boundary past `limit` bytes (still longer than `limit`).
fn cut(mut s: String, limit: usize) -> String {
    if s.len() > limit + 1 {
        let mut i = limit + 1;
        while !s.is_char_boundary(i) {
            i += 1;
        }
        s.truncate(i);
    }
    s
}

impl<'de, K: Keep> Deserialize<'de> for Bounded<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<K>(PhantomData<K>);
        impl<'de, K: Keep> Visitor<'de> for V<K> {
            type Value = Bounded<K>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if entries.len() >= K::MAX || !K::keep(&key) {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    let value = match map.next_value::<Value>()? {
                        Value::String(v) => Value::String(cut(v, MAX_PROBE_ANNOTATION)),
                        _ => Value::Null,
                    };
                    entries.push((cut(key, MAX_LABEL_KEY), value));
                }
                Ok(Bounded {
                    entries,
                    kind: PhantomData,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Bounded::default())
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Bounded::default())
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Bounded::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Bounded::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Bounded::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Bounded::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Bounded::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Bounded::default())
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<K> Bounded<K> {
    /// The kept entries as a JSON object; `None` when there are none.
    fn to_value(&self) -> Option<Value> {
        (!self.entries.is_empty())
            .then(|| Value::Object(self.entries.iter().cloned().collect::<Map<String, Value>>()))
    }
}

impl<T> Section<T> {
    /// The section as `parse_pod` sees it: its fields, `null`, or a non-object marker.
    fn to_value(&self, fields: impl FnOnce(&T) -> Value) -> Value {
        match self {
            Section::Missing => Value::Null,
            Section::Valid(t) => fields(t),
            Section::Invalid => Value::Bool(false),
        }
    }
}

/// `(key, value)` pairs of the fields present, as a JSON object.
fn object(pairs: &[(&str, &Option<Value>)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| ((*k).to_owned(), v.clone())))
            .collect(),
    )
}

impl RawPod {
    /// `metadata.resourceVersion`, if it is a string.
    pub fn resource_version(&self) -> Option<&str> {
        match &self.metadata {
            Section::Valid(m) => m.resource_version.as_ref()?.as_str(),
            _ => None,
        }
    }

    /// The few fields as a small JSON object, the form [`parse_pod`] and the store read.
    pub fn to_value(&self) -> Value {
        json!({
            "metadata": self.metadata.to_value(|m| object(&[
                ("name", &m.name),
                ("namespace", &m.namespace),
                ("uid", &m.uid),
                ("deletionTimestamp", &m.deletion_timestamp),
                ("labels", &m.labels.to_value()),
                ("annotations", &m.annotations.to_value()),
            ])),
            "spec": self.spec.to_value(|s| object(&[
                ("nodeName", &s.node_name),
                ("hostNetwork", &s.host_network),
                ("calicoNodeImage", &s.containers.0.clone().map(Value::String)),
                ("images", &(!s.containers.1.is_empty()).then(|| json!(s.containers.1))),
            ])),
            "status": self.status.to_value(|s| object(&[
                ("phase", &s.phase),
                ("podIP", &s.pod_ip),
                ("podIPs", &s.pod_ips),
            ])),
        })
    }
}

/// A pod of this node, as the API describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KubePod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (distinguishes a re-created pod with the same name).
    pub uid: String,
    /// `status.podIPs` (or `status.podIP`), sorted; empty until the CNI assigned one.
    pub ips: Vec<IpAddr>,
    /// `metadata.deletionTimestamp` is set: the pod is going away.
    pub terminating: bool,
    /// Its labels and probe annotations, bounded.
    #[serde(skip)]
    pub meta: ProbeMeta,
}

/// Why an object is not a pod podnet checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Malformed: logged with a warning.
    Malformed(String),
    /// On another node (a selector mismatch or a stale event).
    OtherNode,
    /// `spec.hostNetwork`: it uses the node's own network.
    HostNetwork,
    /// `status.phase` Succeeded or Failed: its sandbox and wiring are gone.
    Finished,
}

/// Longest pod name the API server accepts (a DNS subdomain).
pub(crate) const MAX_NAME: usize = 253;
/// Longest namespace name (a DNS label).
pub(crate) const MAX_NAMESPACE: usize = 63;

/// Longest piece of a pod's own text quoted in a [`Skip::Malformed`] reason (which is logged):
/// the object may come from anyone who can write the field.
pub(crate) const QUOTE_MAX: usize = 64;

/// `s` for a reason: escaped (no control characters or quotes reach a log line raw) and cut
/// to [`QUOTE_MAX`] characters.
fn quote(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(QUOTE_MAX)
        .flat_map(char::escape_default)
        .collect();
    if s.chars().nth(QUOTE_MAX).is_some() {
        out.push('…');
    }
    out
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

/// Read a pod object. `node` is this node's name.
pub fn parse_pod(obj: &Value, node: &str) -> Result<KubePod, Skip> {
    let malformed = |why: &str| Skip::Malformed(why.to_owned());
    let name = str_at(obj, &["metadata", "name"]).ok_or_else(|| malformed("no metadata.name"))?;
    let namespace = str_at(obj, &["metadata", "namespace"])
        .ok_or_else(|| malformed("no metadata.namespace"))?;
    // The API server's own limits (a DNS subdomain, a DNS label): the two become metric
    // labels and log fields, so longer ones (a broken or hostile API) are not taken.
    if name.is_empty()
        || name.len() > MAX_NAME
        || namespace.is_empty()
        || namespace.len() > MAX_NAMESPACE
    {
        return Err(malformed(
            "metadata.name or metadata.namespace empty or too long",
        ));
    }
    let uid = str_at(obj, &["metadata", "uid"]).unwrap_or_default();
    let spec = obj.get("spec").filter(|s| !s.is_null());
    let status = obj.get("status").filter(|s| !s.is_null());
    if spec.is_some_and(|s| !s.is_object()) {
        return Err(malformed("spec is not an object"));
    }
    if status.is_some_and(|s| !s.is_object()) {
        return Err(malformed("status is not an object"));
    }
    match spec.and_then(|s| s.get("nodeName")) {
        Some(Value::String(n)) if n == node => {}
        Some(Value::String(_)) | None | Some(Value::Null) => return Err(Skip::OtherNode),
        Some(_) => return Err(malformed("spec.nodeName is not a string")),
    }
    match spec.and_then(|s| s.get("hostNetwork")) {
        Some(Value::Bool(true)) => return Err(Skip::HostNetwork),
        None | Some(Value::Bool(false)) | Some(Value::Null) => {}
        Some(_) => return Err(malformed("spec.hostNetwork is not a boolean")),
    }
    if matches!(
        status.and_then(|s| s.get("phase")).and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    ) {
        return Err(Skip::Finished);
    }
    let mut ips = Vec::new();
    match status.and_then(|s| s.get("podIPs")) {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for entry in list {
                let ip = entry
                    .get("ip")
                    .and_then(Value::as_str)
                    .ok_or_else(|| malformed("status.podIPs entry without ip"))?;
                ips.push(ip.parse::<IpAddr>().map_err(|_| {
                    malformed(&format!("status.podIPs has '{}', not an IP", quote(ip)))
                })?);
            }
        }
        Some(_) => return Err(malformed("status.podIPs is not a list")),
    }
    if ips.is_empty() {
        match status.and_then(|s| s.get("podIP")) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(Value::String(s)) => {
                ips.push(s.parse().map_err(|_| {
                    malformed(&format!("status.podIP has '{}', not an IP", quote(s)))
                })?)
            }
            Some(_) => return Err(malformed("status.podIP is not a string")),
        }
    }
    ips.sort();
    ips.dedup();
    Ok(KubePod {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        ips,
        terminating: obj
            .get("metadata")
            .and_then(|m| m.get("deletionTimestamp"))
            .is_some_and(|v| !v.is_null()),
        meta: ProbeMeta {
            images: images(spec),
            ..probe_meta(obj.get("metadata"))
        },
    })
}

/// The container images: `spec.images` of the reduced object ([`RawPod::to_value`]), else
/// `spec.containers[*].image` of a whole one; strings of at most 256 bytes, the first
/// `MAX_IMAGES` of them, the rest ignored.
fn images(spec: Option<&Value>) -> Arc<Vec<String>> {
    let reduced = spec.and_then(|s| s.get("images")).and_then(Value::as_array);
    let whole = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    let listed: Vec<&Value> = match (reduced, whole) {
        (Some(list), _) => list.iter().collect(),
        (None, Some(list)) => list.iter().filter_map(|c| c.get("image")).collect(),
        (None, None) => Vec::new(),
    };
    Arc::new(
        listed
            .into_iter()
            .filter_map(Value::as_str)
            .filter(|i| i.len() <= super::calico_node::MAX_IMAGE)
            .take(super::calico_node::MAX_IMAGES)
            .map(str::to_owned)
            .collect(),
    )
}

/// Labels and probe annotations within bounds; anything larger or of the wrong type is left
/// out and marks the result `truncated` (the prober counts it). Never an error: a pod's
/// probing options must not make it unchecked.
fn probe_meta(metadata: Option<&Value>) -> ProbeMeta {
    let mut meta = ProbeMeta::default();
    let mut labels = BTreeMap::new();
    if let Some(Value::Object(map)) = metadata.and_then(|m| m.get("labels")) {
        for (k, v) in map {
            match v.as_str() {
                Some(v)
                    if labels.len() < MAX_LABELS
                        && k.len() <= MAX_LABEL_KEY
                        && v.len() <= MAX_LABEL_VALUE =>
                {
                    labels.insert(k.clone(), v.to_owned());
                }
                _ => meta.truncated = true,
            }
        }
    }
    meta.labels = Arc::new(labels);
    let annotation = |key: &str, truncated: &mut bool| -> Option<Arc<str>> {
        match metadata?.get("annotations")?.get(key)? {
            Value::String(v) if v.len() <= MAX_PROBE_ANNOTATION => Some(Arc::from(v.as_str())),
            _ => {
                *truncated = true;
                None
            }
        }
    };
    meta.probes = annotation(PROBES_KEY, &mut meta.truncated);
    meta.skip_probes = annotation(SKIP_PROBES_KEY, &mut meta.truncated);
    meta
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(status: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "shop", "uid": "u1", "resourceVersion": "7"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
            "status": status,
        })
    }

    #[test]
    fn running_dual_stack_pod() {
        let p = parse_pod(
            &pod(json!({"phase": "Running", "podIP": "10.244.0.5",
                        "podIPs": [{"ip": "fd00::5"}, {"ip": "10.244.0.5"}]})),
            "n1",
        )
        .unwrap();
        assert_eq!(
            (p.namespace.as_str(), p.name.as_str(), p.uid.as_str()),
            ("shop", "web-0", "u1")
        );
        let ips: Vec<String> = p.ips.iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["10.244.0.5", "fd00::5"]);
        assert!(!p.terminating);
    }

    #[test]
    fn pending_pod_without_ip_and_legacy_pod_ip() {
        assert!(
            parse_pod(&pod(json!({"phase": "Pending"})), "n1")
                .unwrap()
                .ips
                .is_empty()
        );
        assert!(
            parse_pod(&pod(json!({"podIP": ""})), "n1")
                .unwrap()
                .ips
                .is_empty()
        );
        let p = parse_pod(&pod(json!({"podIP": "10.244.0.9"})), "n1").unwrap();
        assert_eq!(p.ips, vec!["10.244.0.9".parse::<IpAddr>().unwrap()]);
        let mut no_status = pod(json!(null));
        no_status.as_object_mut().unwrap().remove("status");
        assert!(parse_pod(&no_status, "n1").unwrap().ips.is_empty());
    }

    #[test]
    fn skipped_pods() {
        assert_eq!(parse_pod(&pod(json!({})), "other"), Err(Skip::OtherNode));
        let mut hn = pod(json!({"podIP": "192.0.2.10"}));
        hn["spec"]["hostNetwork"] = json!(true);
        assert_eq!(parse_pod(&hn, "n1"), Err(Skip::HostNetwork));
        assert_eq!(
            parse_pod(&pod(json!({"phase": "Succeeded"})), "n1"),
            Err(Skip::Finished)
        );
        let mut t = pod(json!({"podIP": "10.244.0.5"}));
        t["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert!(parse_pod(&t, "n1").unwrap().terminating);
    }

    /// Through serde's minimal struct, as the watcher reads pods: same answers as the JSON.
    fn via_raw(v: &Value) -> Result<KubePod, Skip> {
        let raw: RawPod = serde_json::from_str(&v.to_string()).expect("lenient decode");
        parse_pod(&raw.to_value(), "n1")
    }

    #[test]
    fn the_minimal_struct_keeps_what_podnet_reads_and_drops_the_rest() {
        let mut fat = pod(json!({"phase": "Running", "podIPs": [{"ip": "10.244.0.5"}]}));
        fat["metadata"]["annotations"] = json!({"big": "x".repeat(100_000)});
        fat["spec"]["containers"] = json!([{"name": "c", "env": [{"name": "A", "value": "b"}]}]);
        let raw: RawPod = serde_json::from_str(&fat.to_string()).unwrap();
        assert!(raw.to_value().to_string().len() < 400, "{}", raw.to_value());
        assert_eq!(raw.resource_version(), Some("7"));
        assert_eq!(via_raw(&fat), parse_pod(&fat, "n1"));
        assert_eq!(
            via_raw(&fat).unwrap().ips,
            vec!["10.244.0.5".parse::<IpAddr>().unwrap()]
        );
        let mut t = fat.clone();
        t["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert!(via_raw(&t).unwrap().terminating);
        assert_eq!(
            via_raw(&pod(json!({"phase": "Failed"}))),
            Err(Skip::Finished)
        );
    }

    #[test]
    fn labels_and_probe_annotations_are_kept_within_bounds() {
        let mut p = pod(json!({"podIP": "10.244.0.5"}));
        p["metadata"]["labels"] = json!({"app": "web", "podnet.io/probes": "false"});
        p["metadata"]["annotations"] = json!({
            "podnet.io/skip-probes": "node,dns",
            "other": "x".repeat(100_000),
        });
        let m = via_raw(&p).unwrap().meta;
        assert_eq!(m.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(m.skip_probes.as_deref(), Some("node,dns"));
        assert_eq!((m.probes, m.truncated), (None, false));
        assert_eq!(parse_pod(&p, "n1").unwrap().meta, via_raw(&p).unwrap().meta);

        // Too many labels, an over-long value, a non-string annotation: kept within bounds,
        // marked truncated, never an error; the raw form stays small.
        let many: Map<String, Value> = (0..10_000)
            .map(|i| (format!("k{i:05}"), json!("v")))
            .collect();
        p["metadata"]["labels"] = Value::Object(many);
        p["metadata"]["annotations"] = json!({"podnet.io/probes": "f".repeat(10_000),
                                              "podnet.io/skip-probes": {"a": [1]}});
        let raw: RawPod = serde_json::from_str(&p.to_string()).unwrap();
        assert!(
            raw.to_value().to_string().len() < 2_000,
            "{}",
            raw.to_value()
        );
        let m = via_raw(&p).unwrap().meta;
        assert_eq!(m.labels.len(), MAX_LABELS);
        assert!(m.truncated && m.probes.is_none() && m.skip_probes.is_none());
        let mut p = pod(json!({}));
        p["metadata"]["labels"] = json!({"a": "v".repeat(64)});
        assert!(via_raw(&p).unwrap().meta.truncated);
        p["metadata"]["labels"] = json!("not a map");
        let images = Arc::new(vec!["i".to_owned()]);
        let only_images = ProbeMeta {
            images,
            ..ProbeMeta::default()
        };
        assert_eq!(via_raw(&p).unwrap().meta, only_images);
    }

    #[test]
    fn container_images_are_kept_within_bounds() {
        let mut p = pod(json!({"podIP": "10.244.0.5"}));
        p["spec"]["containers"] = json!([
            {"name": "proxy", "image": "kong/kong-gateway:3.6"},
            {"name": "odd", "image": 7},
            {"name": "long", "image": "r/".repeat(200)},
            {"name": "a", "image": "a"}, {"name": "b", "image": "b"},
            {"name": "c", "image": "c"}, {"name": "d", "image": "d"},
            "not a container",
        ]);
        let m = via_raw(&p).unwrap().meta;
        assert_eq!(*m.images, ["kong/kong-gateway:3.6", "a", "b", "c"]);
        assert_eq!(parse_pod(&p, "n1").unwrap().meta, m);
        p["spec"]["containers"] = json!({"not": "a list"});
        assert!(via_raw(&p).unwrap().meta.images.is_empty());
    }

    #[test]
    fn sections_of_the_wrong_type_are_skipped_pods_not_decode_errors() {
        for (section, bad) in [
            ("metadata", json!("x")),
            ("metadata", json!([1, {"a": [2]}])),
            ("spec", json!(5)),
            ("status", json!(true)),
        ] {
            let mut p = pod(json!({"podIP": "10.244.0.5"}));
            p[section] = bad.clone();
            let got = via_raw(&p);
            assert!(got.is_err(), "{section}={bad} gave {got:?}");
        }
        // The same malformed fields the JSON parser rejects are rejected after serde.
        let p = pod(json!({"podIPs": [{"ip": "10.244.0.500"}]}));
        assert!(matches!(via_raw(&p), Err(Skip::Malformed(_))));
        let mut p = pod(json!({}));
        p["spec"]["hostNetwork"] = json!("yes");
        assert!(matches!(via_raw(&p), Err(Skip::Malformed(_))));
    }

    #[test]
    fn malformed_objects_are_reasons_not_panics() {
        let cases = [
            pod(json!({"podIPs": "10.244.0.5"})),
            pod(json!({"podIPs": [{"address": "10.244.0.5"}]})),
            pod(json!({"podIPs": [{"ip": "10.244.0.500"}]})),
            pod(json!({"podIP": 5})),
            json!({"metadata": {"namespace": "x"}, "spec": {"nodeName": "n1"}}),
            json!({"metadata": {"name": "x"}, "spec": {"nodeName": "n1"}}),
            json!({"metadata": {"name": "x", "namespace": "y"}, "spec": {"nodeName": 3}}),
            json!({"metadata": {"name": "x", "namespace": "y"}, "spec": {"nodeName": "n1", "hostNetwork": "yes"}}),
            json!("not an object"),
            json!(null),
        ];
        for c in cases {
            match parse_pod(&c, "n1") {
                Err(Skip::Malformed(why)) => assert!(!why.is_empty()),
                other => panic!("{c} gave {other:?}"),
            }
        }
    }
}
