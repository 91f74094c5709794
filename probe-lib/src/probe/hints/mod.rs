//! Why a client is stale: hints a client pod's own software gives, read inside its namespace
//! on the namespace thread when the pod has unanswered connects. One file per client kind
//! implements [`ClientHint`] (which pods it applies to, by their labels or images, and how to
//! ask them); a new kind adds a file and one entry where the agent builds the list.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::model::ProbeMeta;

mod get;
pub mod kong;

pub(crate) use get::{http_get, https_get};

/// Longest all hints of one pod visit may take together (the namespace thread serves every
/// pod in turn).
pub const HINT_DEADLINE: Duration = Duration::from_millis(150);

/// What a client's software says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hint {
    /// The client kind (`kong`).
    pub kind: &'static str,
    /// Why its upstream addresses are stale, when it says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// What it said, in words.
    pub detail: String,
}

/// One client kind.
pub trait ClientHint: Send + Sync + std::fmt::Debug {
    /// Whether a pod with this metadata (labels, images; empty in node mode) may be this kind
    /// of client: only such pods are asked. Pure, decided when the pod set changes.
    fn applies(&self, meta: &ProbeMeta) -> bool;
    /// Ask the client, from inside its namespace (blocking, done by `deadline`); `None` when
    /// the pod is not this kind of client.
    fn read(&self, deadline: Instant) -> Option<Hint>;
}

/// The first hint any kind gives, within [`HINT_DEADLINE`].
pub(crate) fn read_all(hints: &[std::sync::Arc<dyn ClientHint>]) -> Option<Hint> {
    let deadline = Instant::now() + HINT_DEADLINE;
    hints
        .iter()
        .take_while(|_| Instant::now() < deadline)
        .find_map(|h| h.read(deadline))
}
