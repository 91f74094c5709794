//! The node condition podnet owns, decided from the snapshot alone: what it should say
//! ([`desired`]) and whether that needs a write now ([`plan`]), following node-problem-detector:
//! `True` while there is a problem, a CamelCase reason, a human message, `lastTransitionTime`
//! only when the status flips, `lastHeartbeatTime` refreshed on a slow heartbeat.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::controlplane;
use super::precedence::Reason;
use super::reasons::{block_reason, node_reason, pod_reason};
use crate::snapshot::Snapshot;
use crate::util::clock::rfc3339;

/// The condition type. `NetworkUnavailable` belongs to the CNI; a `…Problem` name reads
/// right with node-problem-detector's polarity (`True` = something is wrong).
pub const CONDITION_TYPE: &str = "PodNetworkProblem";
/// The reason while nothing is wrong.
pub const HEALTHY_REASON: &str = "PodNetworkHealthy";
/// Longest message written (the API accepts 32 KiB; `kubectl describe node` wants a line).
pub const MAX_MESSAGE: usize = 1024;
/// Examples named in the message per reason.
const EXAMPLES: usize = 3;
/// A change of the message alone (the counts, the examples) is written at most this often:
/// during a storm the counts move with every snapshot, and each would be a write to the API.
/// A change of status or reason is written at once.
pub const MESSAGE_REFRESH: Duration = Duration::from_secs(10);

/// What the condition should say now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// `True`: a problem.
    pub problem: bool,
    /// CamelCase reason: the dominant problem, or [`HEALTHY_REASON`].
    pub reason: &'static str,
    /// Human message: counts and a few examples, at most [`MAX_MESSAGE`] bytes.
    pub message: String,
}

/// One reason's share of the problems: how many it affects and a few examples.
#[derive(Debug, Default)]
struct Tally {
    rank: u8,
    count: usize,
    examples: Vec<String>,
}

impl Tally {
    fn add(&mut self, rank: u8, example: impl FnOnce() -> String) {
        self.rank = rank;
        self.count += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(example());
        }
    }
}

/// A reason's tier in the precedence table (every reason tallied has one).
fn rank(r: Reason) -> u8 {
    r.tier().unwrap_or(u8::MAX)
}

/// The condition for this snapshot; `None` before the first full read (nothing is known yet,
/// so nothing is claimed).
pub fn desired(snap: &Snapshot) -> Option<Desired> {
    if !snap.synced {
        return None;
    }
    let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
    for pod in &snap.verdicts.pods {
        // One count per pod and reason, however many IPs it concerns.
        let mut seen: Vec<&'static str> = Vec::new();
        for p in &pod.problems {
            let reason = pod_reason(p.reason);
            if seen.contains(&reason) {
                continue;
            }
            seen.push(reason);
            tallies
                .entry(reason)
                .or_default()
                .add(rank(Reason::Pod(p.reason)), || {
                    let who = if pod.pod.id.name.is_empty() {
                        pod.pod.interface.clone()
                    } else {
                        format!("{}/{}", pod.pod.id.namespace, pod.pod.id.name)
                    };
                    format!("{who} ({})", p.detail)
                });
        }
    }
    for p in &snap.verdicts.node {
        tallies
            .entry(node_reason(p.reason))
            .or_default()
            .add(rank(Reason::Node(p.reason)), || p.detail.clone());
    }
    for b in snap.remote_blocks.iter() {
        tallies
            .entry(block_reason(b.reason))
            .or_default()
            .add(rank(Reason::Block(b.reason)), || {
                format!("{} of {}", b.block, b.node)
            });
    }
    for (name, reason, v) in controlplane::problems(snap) {
        tallies
            .entry(name)
            .or_default()
            .add(rank(reason), || controlplane::example(v));
    }
    let total = snap.verdicts.pods.len();
    let Some((&reason, _)) = tallies
        .iter()
        .min_by_key(|(name, t)| (t.rank, std::cmp::Reverse(t.count), **name))
    else {
        return Some(Desired {
            problem: false,
            reason: HEALTHY_REASON,
            message: format!("all {total} pods on the node are wired"),
        });
    };
    let mut order: Vec<(&&'static str, &Tally)> = tallies.iter().collect();
    order.sort_by_key(|(name, t)| (t.rank, std::cmp::Reverse(t.count), **name));
    let broken = snap.verdicts.pods_with_problems();
    let mut message = format!("{broken} of {total} pods have problems");
    for (name, t) in order {
        message.push_str(&format!(
            "; {name}: {} ({})",
            t.count,
            t.examples.join(", ")
        ));
    }
    Some(Desired {
        problem: true,
        reason,
        message: truncate(message, MAX_MESSAGE),
    })
}

/// Cut at a character boundary, marking the cut.
pub(super) fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

/// The condition as last written (or read back from the API at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Status `True`.
    pub problem: bool,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
    /// `lastTransitionTime`, as the API holds it.
    pub last_transition: String,
    /// When this agent last wrote it; `None`: not yet (a write is due).
    pub heartbeat: Option<SystemTime>,
}

impl Written {
    /// Our condition out of a Node object (`GET nodes/<name>/status`), if it has one.
    pub fn from_node(node: &Value) -> Option<Written> {
        let c = node
            .pointer("/status/conditions")?
            .as_array()?
            .iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(CONDITION_TYPE))?;
        let text = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        Some(Written {
            problem: text("status") == "True",
            reason: text("reason"),
            message: text("message"),
            last_transition: text("lastTransitionTime"),
            heartbeat: None,
        })
    }
}

/// A write of the condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionPatch {
    /// What the condition says after it.
    pub written: Written,
    /// The strategic merge patch body for `nodes/<name>/status`.
    pub body: Value,
}

/// Whether to write now, and what: at once on a change of status or reason, for a new
/// message once [`MESSAGE_REFRESH`] has passed since the last write, and when the heartbeat
/// is due. `lastTransitionTime` moves only when the status flips.
pub fn plan(
    prev: Option<&Written>,
    want: &Desired,
    now: SystemTime,
    heartbeat: Duration,
) -> Option<ConditionPatch> {
    let changed = prev.is_none_or(|p| p.problem != want.problem || p.reason != want.reason);
    // A clock that went backwards counts as "long ago": better one write too many.
    let since_write = |min: Duration| {
        prev.and_then(|p| p.heartbeat)
            .is_none_or(|t| now.duration_since(t).map_or(true, |age| age >= min))
    };
    let message_due =
        prev.is_some_and(|p| p.message != want.message) && since_write(MESSAGE_REFRESH);
    if !changed && !message_due && !since_write(heartbeat) {
        return None;
    }
    let stamp = rfc3339(now, false);
    let last_transition = match prev {
        Some(p) if p.problem == want.problem && !p.last_transition.is_empty() => {
            p.last_transition.clone()
        }
        _ => stamp.clone(),
    };
    let status = if want.problem { "True" } else { "False" };
    let body = json!({
        "status": {
            "conditions": [{
                "type": CONDITION_TYPE,
                "status": status,
                "reason": want.reason,
                "message": want.message,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": last_transition,
            }]
        }
    });
    Some(ConditionPatch {
        written: Written {
            problem: want.problem,
            reason: want.reason.to_owned(),
            message: want.message.clone(),
            last_transition,
            heartbeat: Some(now),
        },
        body,
    })
}

#[cfg(test)]
#[path = "condition_tests.rs"]
pub(crate) mod tests;
