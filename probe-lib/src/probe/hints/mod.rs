//! Why a client is stale: hints a client pod's own software gives, read inside its namespace
//! on the namespace thread when the pod has unanswered connects. One file per client kind
//! implements [`ClientHint`] (which pods it applies to, by their labels or images, and how to
//! ask them); a new kind adds a file and one entry where the agent builds the list.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::model::ProbeMeta;

pub mod kong;

/// Longest all hints of one pod visit may take together (the namespace thread serves every
/// pod in turn).
pub const HINT_DEADLINE: Duration = Duration::from_millis(150);
/// Most of an answer read.
const MAX_ANSWER: usize = 64 << 10;

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

/// `curl -s http://<addr><path>` over HTTP/1.0, bounded by `deadline` and [`MAX_ANSWER`]:
/// the body of a 200 answer. Only for the pod's loopback (the pod controls the answer).
pub(crate) fn http_get(addr: SocketAddr, path: &str, deadline: Instant) -> Option<Vec<u8>> {
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut s = TcpStream::connect_timeout(&addr, left()).ok()?;
    s.set_write_timeout(Some(left())).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if Instant::now() >= deadline || answer.len() > MAX_ANSWER {
            return None;
        }
        s.set_read_timeout(Some(left())).ok()?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = answer.split(|b| *b == b'\n').next()?;
    let ok = status.starts_with(b"HTTP/1.") && status.get(9..12) == Some(b"200".as_slice());
    ok.then(|| answer[end + 4..].to_vec())
}
