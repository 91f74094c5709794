//! A list page read as it arrives: each element of `items` is cut out of the byte stream and
//! decoded on its own into a [`RawPod`], so memory holds one pod's text at a time, never the
//! page nor a tree of it (kube's `Api::list` reads the whole body and decodes every pod in
//! full; a page of 1 MiB pods would be 100 MiB at 100 a page).
//!
//! The splitter only tracks JSON strings and bracket depth: the page is
//! `{"metadata": {…}, "items": [{…}, {…}], …}` and an object directly inside an array directly
//! inside the top object is an item. Everything outside `items` (small: kind, list metadata)
//! is kept and decoded at the end for the resource version and the continue token.

use serde::Deserialize;

use super::pod::RawPod;

/// One pod's text may not exceed this (the API server's own limit on an object is ~1.5 MiB,
/// etcd's request size); a bigger one is dropped as malformed without being buffered.
pub const MAX_ITEM_BYTES: usize = 4 << 20;
/// The page outside its items (kind, apiVersion, list metadata) is a few hundred bytes.
const MAX_OUTER_BYTES: usize = 64 << 10;
/// After an item this big, give the buffer back instead of keeping its capacity.
const KEEP_CAPACITY: usize = 256 << 10;

/// What one element of `items` was.
#[derive(Debug)]
pub enum Item {
    /// A pod, decoded leniently.
    Pod(Box<RawPod>),
    /// Not decodable (invalid JSON or over [`MAX_ITEM_BYTES`]): why.
    Malformed(String),
}

/// The page's own metadata, decoded at its end.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PageMeta {
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// `metadata.continue`, if more pages follow.
    pub continue_token: Option<String>,
}

/// The page is not a list (its outside is not JSON, or is too big).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("list page: {0}")]
pub struct PageError(String);

/// Splits a list page into items as its bytes arrive ([`PageReader::feed`]), then
/// [`PageReader::finish`] gives the page's metadata.
#[derive(Debug, Default)]
pub struct PageReader {
    depth: usize,
    /// The container kinds (`{` or `[`) at depths 1 and 2.
    kinds: [u8; 2],
    in_string: bool,
    escaped: bool,
    /// The first bytes of the last string at depth 1 (the key before a value; 6 = longer).
    key: [u8; 5],
    key_len: usize,
    /// The array at depth 2 is the value of `items` (another array there holds no pods).
    items_array: bool,
    /// Inside an item: its bytes so far (unless it is oversized).
    in_item: bool,
    oversized: bool,
    item: Vec<u8>,
    outer: Vec<u8>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Outer {
    metadata: OuterMeta,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OuterMeta {
    #[serde(rename = "resourceVersion")]
    resource_version: String,
    #[serde(rename = "continue")]
    continue_: Option<String>,
}

impl PageReader {
    /// Feed the next bytes of the body; `on_item` is called for each complete item.
    pub fn feed(&mut self, bytes: &[u8], mut on_item: impl FnMut(Item)) -> Result<(), PageError> {
        for &b in bytes {
            let in_items = self.depth >= 2 && self.kinds == [b'{', b'['] && self.items_array;
            if in_items && !self.in_item && self.depth == 2 && !self.in_string && b == b'{' {
                self.in_item = true;
                self.oversized = false;
            }
            let was_in_item = self.in_item;
            self.scan(b)?;
            if was_in_item {
                if !self.oversized {
                    if self.item.len() >= MAX_ITEM_BYTES {
                        self.oversized = true;
                        self.item = Vec::new();
                    } else {
                        self.item.push(b);
                    }
                }
                if self.depth == 2 {
                    self.in_item = false;
                    on_item(self.take_item());
                }
            } else if !in_items || (b == b']' && self.depth == 1) {
                if self.outer.len() >= MAX_OUTER_BYTES {
                    return Err(PageError("more than 64 KiB outside its items".into()));
                }
                self.outer.push(b);
            }
        }
        Ok(())
    }

    /// Track strings and depth.
    fn scan(&mut self, b: u8) -> Result<(), PageError> {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            } else if self.depth == 1 {
                if let Some(k) = self.key.get_mut(self.key_len) {
                    *k = b;
                }
                self.key_len = (self.key_len + 1).min(6);
            }
            return Ok(());
        }
        match b {
            b'"' => {
                self.in_string = true;
                if self.depth == 1 {
                    self.key_len = 0;
                }
            }
            b'{' | b'[' => {
                self.depth += 1;
                if self.depth <= 2 {
                    self.kinds[self.depth - 1] = b;
                }
                if self.depth == 2 {
                    self.items_array = self.key_len == 5 && self.key == *b"items";
                }
            }
            b'}' | b']' => {
                self.depth = self
                    .depth
                    .checked_sub(1)
                    .ok_or_else(|| PageError("unbalanced brackets".into()))?;
            }
            _ => {}
        }
        Ok(())
    }

    fn take_item(&mut self) -> Item {
        if self.oversized {
            return Item::Malformed(format!("pod object over {MAX_ITEM_BYTES} bytes"));
        }
        let item = match serde_json::from_slice::<RawPod>(&self.item) {
            Ok(pod) => Item::Pod(Box::new(pod)),
            Err(e) => Item::Malformed(format!("undecodable pod object: {e}")),
        };
        if self.item.capacity() > KEEP_CAPACITY {
            self.item = Vec::new();
        } else {
            self.item.clear();
        }
        item
    }

    /// The page ended: its metadata.
    pub fn finish(self) -> Result<PageMeta, PageError> {
        if self.depth != 0 || self.in_string {
            return Err(PageError("truncated".into()));
        }
        let outer: Outer = serde_json::from_slice(&self.outer)
            .map_err(|e| PageError(format!("not a list: {e}")))?;
        Ok(PageMeta {
            resource_version: outer.metadata.resource_version,
            continue_token: outer.metadata.continue_.filter(|c| !c.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read(
        text: &str,
        chunk: usize,
    ) -> (Vec<Result<String, String>>, Result<PageMeta, PageError>) {
        let mut r = PageReader::default();
        let mut items = Vec::new();
        for c in text.as_bytes().chunks(chunk) {
            let fed = r.feed(c, |i| {
                items.push(match i {
                    Item::Pod(p) => Ok(p.to_value()["metadata"]["name"].to_string()),
                    Item::Malformed(why) => Err(why),
                })
            });
            if let Err(e) = fed {
                return (items, Err(e));
            }
        }
        (items, r.finish())
    }

    #[test]
    fn items_are_cut_out_in_any_chunking_and_the_metadata_kept() {
        let page = json!({
            "kind": "PodList", "apiVersion": "v1",
            "metadata": {"resourceVersion": "42", "continue": "tok]en{\"x"},
            "items": [
                {"metadata": {"name": "a]b", "annotations": {"q": "} ] \\\" {"}}},
                {"metadata": {"name": "c", "labels": {"l": "[["}}, "spec": {"x": [[{}]]}}
            ]
        })
        .to_string();
        for chunk in [1, 2, 7, 64, page.len()] {
            let (items, meta) = read(&page, chunk);
            assert_eq!(
                items,
                [Ok("\"a]b\"".to_owned()), Ok("\"c\"".to_owned())],
                "chunk {chunk}"
            );
            let meta = meta.unwrap();
            assert_eq!(meta.resource_version, "42");
            assert_eq!(meta.continue_token.as_deref(), Some("tok]en{\"x"));
        }
        let (items, meta) = read(
            r#"{"metadata":{"resourceVersion":"1","continue":""},"items":[]}"#,
            3,
        );
        assert!(items.is_empty());
        assert_eq!(meta.unwrap().continue_token, None);
    }

    /// Found by `props_page_any_chunking`: an object in another top-level array (`"x": [{}]`)
    /// was taken for a pod; only `items` holds them.
    #[test]
    fn only_the_items_array_holds_items() {
        let page = r#"{"extra":[{}],"items":[{"metadata":{"name":"a"}}],"kind":"PodList","metadata":{"resourceVersion":"5"},"zz":[{"metadata":{"name":"b"}}]}"#;
        for chunk in [1, 3, page.len()] {
            let (items, meta) = read(page, chunk);
            assert_eq!(items, [Ok("\"a\"".to_owned())], "chunk {chunk}");
            assert_eq!(meta.unwrap().resource_version, "5");
        }
    }

    #[test]
    fn a_bad_item_is_one_skip_and_a_bad_page_an_error() {
        let big = "x".repeat(MAX_ITEM_BYTES);
        let page = format!(
            r#"{{"metadata":{{"resourceVersion":"3"}},"items":[{{"metadata":{{"name":"ok"}}}},{{"metadata":{{"name":"big","a":"{big}"}}}},{{"metadata":{{"name":1e999}}}},{{"metadata":{{"name":"last"}}}}]}}"#
        );
        let (items, meta) = read(&page, 4096);
        assert_eq!(items.len(), 4, "{items:?}");
        assert!(items[0].is_ok() && items[3].is_ok());
        assert!(items[1].as_ref().unwrap_err().contains("over"));
        assert!(items[2].is_err());
        assert_eq!(meta.unwrap().resource_version, "3");
        for bad in [
            r#"{"items":[{"a":1}"#,
            r#"}"#,
            r#"{"metadata":5,"items":[]}"#,
            "nonsense",
        ] {
            assert!(read(bad, 2).1.is_err(), "{bad}");
        }
    }
}
