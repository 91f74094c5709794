//! The calico-node pod on this node, found in the pod watch: its `calico-node` container's
//! image and the Calico version in the image's tag (calico#6032, the incident's looping watch,
//! is fixed from v3.23.1 on).
//!
//! Hostile input: a tenant can create a pod with a container named `calico-node` and any
//! image. Only host-network pods in the namespaces Calico installs into (`calico-system` with
//! the operator, `kube-system` with the manifests), which tenants cannot create pods in, are
//! believed; the image is read as a bounded string and parsed leniently (anything odd is
//! "unknown", never an error).

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::pod::Section;
use crate::model::{CalicoNode, CalicoVersion};

/// Namespaces a calico-node pod is believed in.
const TRUSTED_NAMESPACES: [&str; 2] = ["calico-system", "kube-system"];
/// The container whose image is read.
const CONTAINER: &str = "calico-node";
/// Longest image reference kept (registry, path, tag and a sha256 digest fit well within).
pub(super) const MAX_IMAGE: usize = 256;

/// Container images kept per pod for client kinds (`probe/hints`: Kong is known by its image).
pub const MAX_IMAGES: usize = 4;

/// `spec.containers`, reduced while it is decoded to the `calico-node` container's image and
/// the first [`MAX_IMAGES`] containers' images (each at most 256 bytes; longer ones skipped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct CalicoNodeImage(pub(super) Option<String>, pub(super) Vec<String>);

impl<'de> Deserialize<'de> for CalicoNodeImage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CalicoNodeImage;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of containers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut found = None;
                let mut images = Vec::new();
                while let Some(c) = seq.next_element::<Section<Container>>()? {
                    let Section::Valid(c) = c else { continue };
                    if images.len() < MAX_IMAGES
                        && let Some(image) = &c.image.0
                    {
                        images.push(image.clone());
                    }
                    if found.is_none() && c.name.0.as_deref() == Some(CONTAINER) {
                        found = c.image.0;
                    }
                }
                Ok(CalicoNodeImage(found, images))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(CalicoNodeImage::default())
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(CalicoNodeImage::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(CalicoNodeImage::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(CalicoNodeImage::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(CalicoNodeImage::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(CalicoNodeImage::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(CalicoNodeImage::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// One container: its name and image, nothing else kept.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Container {
    name: Short,
    image: Short,
}

/// A string of at most [`MAX_IMAGE`] bytes; anything else (longer, another type) is `None`.
#[derive(Debug, Default)]
struct Short(Option<String>);

impl<'de> Deserialize<'de> for Short {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Short;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Short((s.len() <= MAX_IMAGE).then(|| s.to_owned())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Short(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Short(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Short(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Short(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Short(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Short(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Short(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// The calico-node pod this (reduced, see [`super::RawPod::to_value`]) pod object is, if it
/// is one: a host-network pod of this node in a trusted namespace with a `calico-node`
/// container.
pub(super) fn calico_node_of(obj: &Value, node: &str) -> Option<CalicoNode> {
    let meta = obj.get("metadata")?;
    let spec = obj.get("spec")?;
    let namespace = meta.get("namespace")?.as_str()?;
    let name = meta.get("name")?.as_str()?;
    if !TRUSTED_NAMESPACES.contains(&namespace)
        || spec.get("nodeName")?.as_str()? != node
        || spec.get("hostNetwork")?.as_bool() != Some(true)
    {
        return None;
    }
    let image = spec.get("calicoNodeImage")?.as_str()?;
    Some(CalicoNode::new(
        format!("{namespace}/{name}"),
        image.to_owned(),
        parse_version(image),
    ))
}

/// The Calico release in an image reference's tag: `calico/node:v3.22.4`,
/// `quay.io/calico/node:v3.26.1@sha256:…`, `registry:5000/calico/node:3.25.0-amd64` read as
/// such; no tag (`docker.io/calico/node@sha256:…`, `calico/node`), `latest`, or a repository
/// that is not calico-node (Calico Enterprise's `cnx-node` numbers its releases differently)
/// read as unknown. A pre-release suffix is dropped.
pub fn parse_version(image: &str) -> Option<CalicoVersion> {
    let name = image.split('@').next()?;
    // A colon after the last slash starts the tag; one before it is a registry's port.
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], &name[slash + i + 1..]),
        None => return None,
    };
    let last = repo.rsplit('/').next()?;
    if last != "node" && last != "calico-node" {
        return None;
    }
    let tag = tag.strip_prefix('v').unwrap_or(tag);
    let core = tag.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let mut num = || -> Option<u16> {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let (major, minor) = (num()?, num()?);
    let patch = num().unwrap_or(0);
    Some(CalicoVersion {
        major,
        minor,
        patch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(major: u16, minor: u16, patch: u16) -> Option<CalicoVersion> {
        Some(CalicoVersion {
            major,
            minor,
            patch,
        })
    }

    #[test]
    fn versions_from_image_references() {
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let cases = [
            ("calico/node:v3.22.4".to_owned(), v(3, 22, 4)),
            (format!("quay.io/calico/node:v3.26.1@{digest}"), v(3, 26, 1)),
            (format!("docker.io/calico/node@{digest}"), None),
            ("registry:5000/calico/node:3.25.0-amd64".into(), v(3, 25, 0)),
            ("registry:5000/calico/node".into(), None),
            ("calico/node".into(), None),
            ("calico/node:latest".into(), None),
            ("calico/node:v3.23".into(), v(3, 23, 0)),
            ("mirror.example/calico-node:v3.23.1-rc1".into(), v(3, 23, 1)),
            ("quay.io/tigera/cnx-node:v3.16.1".into(), None),
            ("calico/node:v3.x.1".into(), None),
            ("calico/node:v99999999.1.1".into(), None),
            ("calico/node:".into(), None),
            (":".into(), None),
            ("".into(), None),
            ("@@::/".into(), None),
            ("calico/node:v3.22.4:extra".into(), None),
            ("calico/node:v٣.22.4".into(), None),
        ];
        for (image, want) in cases {
            assert_eq!(parse_version(&image), want, "{image}");
        }
        assert!(v(3, 22, 4).unwrap().has_watch_bug());
        assert!(v(3, 23, 0).unwrap().has_watch_bug());
        assert!(!v(3, 23, 1).unwrap().has_watch_bug());
        assert!(!v(3, 26, 1).unwrap().has_watch_bug());
        assert_eq!(v(3, 22, 4).unwrap().to_string(), "v3.22.4");
    }

    #[test]
    fn containers_reduce_to_the_calico_node_image() {
        let read = |v: Value| serde_json::from_value::<CalicoNodeImage>(v).unwrap().0;
        let long = "x".repeat(MAX_IMAGE + 1);
        assert_eq!(
            read(json!([
                {"name": "install-cni", "image": "calico/cni:v3.22.4", "env": [{"name": "a"}]},
                {"name": "calico-node", "image": "calico/node:v3.22.4", "args": ["-felix"]},
            ])),
            Some("calico/node:v3.22.4".into())
        );
        assert_eq!(read(json!([{"name": "calico-node", "image": long}])), None);
        assert_eq!(read(json!([{"name": "calico-node", "image": 7}])), None);
        assert_eq!(read(json!([{"name": ["calico-node"], "image": "x"}])), None);
        assert_eq!(read(json!({"name": "calico-node"})), None);
        assert_eq!(read(json!(["calico-node", 3, null])), None);
        assert_eq!(read(json!("calico-node")), None);
        assert_eq!(read(json!(null)), None);
    }

    #[test]
    fn only_trusted_host_network_pods_of_this_node_count() {
        let pod = |ns: &str, node: &str, host: bool| {
            json!({
                "metadata": {"namespace": ns, "name": "calico-node-x"},
                "spec": {"nodeName": node, "hostNetwork": host, "calicoNodeImage": "calico/node:v3.22.4"},
            })
        };
        let c = calico_node_of(&pod("calico-system", "n1", true), "n1").unwrap();
        assert_eq!(c.pod, "calico-system/calico-node-x");
        assert_eq!(c.version, v(3, 22, 4));
        assert!(c.known_watch_bug);
        assert!(calico_node_of(&pod("kube-system", "n1", true), "n1").is_some());
        assert_eq!(calico_node_of(&pod("tenant", "n1", true), "n1"), None);
        assert_eq!(calico_node_of(&pod("kube-system", "n2", true), "n1"), None);
        assert_eq!(calico_node_of(&pod("kube-system", "n1", false), "n1"), None);
    }
}
