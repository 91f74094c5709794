//! The few fields of a Kubernetes Pod podnet needs, read leniently from its JSON: a malformed
//! object is skipped with a reason, never a crash, and never poisons the rest of a list.
//!
//! [`RawPod`] is what serde decodes a pod into: only the fields podnet reads, everything else
//! (other annotations, containers, managed fields — what a tenant can make megabytes of) is
//! skipped by the parser without being stored. Labels (for probe selectors) and the two
//! `podnet.io/…` probe annotations are kept within the bounds below. A section of the wrong JSON type becomes "invalid"
//! instead of an error, so one odd pod never fails the page or the watch it came in.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::model::ProbeMeta;

mod raw;

pub use raw::RawPod;
pub(in crate::kube) use raw::Section;

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
mod tests;
