//! The calico-node pod on this node as the pod watch saw it: its image and the Calico version
//! read from the image's tag. Written by the Kubernetes source, judged with felix's readings.

use std::fmt;

use serde::{Serialize, Serializer};

/// A Calico release, `v<major>.<minor>.<patch>` (pre-release suffixes are not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CalicoVersion {
    /// Major.
    pub major: u16,
    /// Minor.
    pub minor: u16,
    /// Patch.
    pub patch: u16,
}

impl CalicoVersion {
    /// The first release with calico PR #6045: the datastore watch re-lists from scratch on
    /// "resourceVersion too old" instead of retrying the compacted revision forever
    /// (calico#6032, typha#227).
    pub const WATCH_BUG_FIXED: CalicoVersion = CalicoVersion {
        major: 3,
        minor: 23,
        patch: 1,
    };

    /// Whether this release has the looping watch bug (calico#6032): before v3.23.1.
    pub fn has_watch_bug(self) -> bool {
        self < Self::WATCH_BUG_FIXED
    }
}

impl fmt::Display for CalicoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Serialize for CalicoVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The calico-node pod on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CalicoNode {
    /// `namespace/name`.
    pub pod: String,
    /// Its `calico-node` container's image (bounded in length).
    pub image: String,
    /// The version in the image's tag; `None` when it has none (a digest only) or it does not
    /// read as a Calico release.
    pub version: Option<CalicoVersion>,
    /// The version is known and has calico#6032.
    pub known_watch_bug: bool,
}

impl CalicoNode {
    /// The calico-node pod `pod` running `image`, whose tag read as `version`.
    pub fn new(pod: String, image: String, version: Option<CalicoVersion>) -> Self {
        CalicoNode {
            pod,
            image,
            version,
            known_watch_bug: version.is_some_and(CalicoVersion::has_watch_bug),
        }
    }
}
