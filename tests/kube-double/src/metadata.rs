//! Metadata-only responses, as the API server gives them for
//! `Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1` (lists) and
//! `…;as=PartialObjectMetadata;…` (watches, gets): every object reduced to
//! `{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{…}}` (labels,
//! annotations, resourceVersion and the rest of `ObjectMeta`; no `spec`, no `status`), a list's
//! kind `PartialObjectMetadataList`. Watch events and bookmarks carry the reduced objects.

use serde_json::{Value, json};

/// `apiVersion` of the reduced objects and lists.
pub const API_VERSION: &str = "meta.k8s.io/v1";
/// `kind` of a reduced list.
pub const LIST_KIND: &str = "PartialObjectMetadataList";
/// `kind` of a reduced object.
pub const KIND: &str = "PartialObjectMetadata";

/// Whether an `Accept` header asks for metadata only (either form, in any of its media
/// ranges; the API server honours the first it can serve, and metadata is always servable).
pub(crate) fn wanted(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let params = range.split(';').skip(1).map(str::trim);
        let has = |p: &str| params.clone().any(|x| x == p);
        (has("as=PartialObjectMetadata") || has("as=PartialObjectMetadataList"))
            && has("g=meta.k8s.io")
            && has("v=v1")
    })
}

/// The object as `PartialObjectMetadata`.
pub fn partial(obj: &Value) -> Value {
    json!({
        "kind": KIND,
        "apiVersion": API_VERSION,
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers() {
        assert!(wanted(
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
        ));
        assert!(wanted(
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
        ));
        assert!(wanted(
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1, application/json"
        ));
        assert!(!wanted("application/json"));
        assert!(!wanted("application/json;as=Table;g=meta.k8s.io;v=v1"));
        assert!(!wanted(
            "application/json;as=PartialObjectMetadata;g=other.io;v=v1"
        ));
        let node = json!({"kind": "Node", "apiVersion": "v1", "metadata": {"name": "n", "annotations": {"a": "b"}}, "spec": {"podCIDRs": ["10.244.0.0/24"]}, "status": {}});
        assert_eq!(
            partial(&node),
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {"name": "n", "annotations": {"a": "b"}}})
        );
    }
}
