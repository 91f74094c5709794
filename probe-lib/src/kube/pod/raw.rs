//! The lenient decoding of a pod: [`RawPod`] keeps only the fields podnet reads, string maps
//! (labels, probe annotations) within bounds, and an object section of the wrong JSON type as
//! invalid instead of an error.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};

use super::*;
use crate::kube::calico_node::CalicoNodeImage;

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
pub(in crate::kube) enum Section<T> {
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
