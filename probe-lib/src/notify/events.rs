//! Kubernetes Events (`events.k8s.io/v1`) decided from the snapshot: one Warning when a
//! problem starts, its `series` counted when it starts again, one Normal when it clears
//! (what each is about: [`observe`]). Transitions, not scrapes or rounds, make Events; a
//! [`TokenBucket`] caps the writes. A start over the limit waits its turn (oldest first, at
//! most [`MAX_PENDING`]) and is told when a token returns if it is still a
//! problem; one that recovered meanwhile is never told, nor its recovery. The state is
//! bounded ([`MAX_TRACKED`]). Pure: the caller passes the clock and performs the [`Write`]s.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::bucket::TokenBucket;
use super::condition::truncate;
pub use super::observe::{Observed, observe};
pub use super::pending::MAX_PENDING;
use super::pending::Pending;
use crate::util::clock::rfc3339;

/// `reportingController` of every Event.
pub const REPORTING_CONTROLLER: &str = "podnet.io/agent";
/// Longest `note` (the API's limit is 1 kB).
pub const MAX_NOTE: usize = 1024;
/// A problem that starts again within this of its last Event continues that Event's series;
/// later, it gets a new Event (the API server keeps Events for an hour).
pub const SERIES_WINDOW: Duration = Duration::from_secs(30 * 60);
/// Problems remembered at most; beyond, new ones are not told (and counted as dropped).
pub const MAX_TRACKED: usize = 4096;
/// Where Events about the Node go (as the kubelet's do).
const NODE_EVENT_NAMESPACE: &str = "default";

/// What an Event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Regarding {
    /// A pod of this node.
    Pod {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// UID (`kubectl describe pod` selects Events by it).
        uid: String,
    },
    /// This node.
    Node,
}

/// One problem as Events know it: what it concerns and its reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProblemKey {
    /// The object.
    pub regarding: Regarding,
    /// CamelCase reason.
    pub reason: &'static str,
}

/// An Event this agent created, as far as its series goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Recorded {
    namespace: String,
    name: String,
    count: u32,
    last: SystemTime,
}

#[derive(Debug, Clone)]
struct Entry {
    active: bool,
    /// This activation's Warning (or its series update) was handed out for writing: a
    /// problem whose start was held back or dropped gets no recovery.
    told: bool,
    warning: Option<Recorded>,
    recovery: Option<Recorded>,
    changed: SystemTime,
}

/// One request to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// `POST /apis/events.k8s.io/v1/namespaces/{namespace}/events` with `body`.
    Create {
        /// Namespace of the Event.
        namespace: String,
        /// Its name (in `body` too).
        name: String,
        /// The Event.
        body: Value,
    },
    /// `PATCH …/events/{name}` (merge patch) with `body`: the series' new count.
    Series {
        /// Namespace of the Event.
        namespace: String,
        /// Its name.
        name: String,
        /// `{"series": {"count", "lastObservedTime"}}`.
        body: Value,
    },
}

impl Write {
    /// Namespace and name of the Event written.
    pub fn target(&self) -> (&str, &str) {
        match self {
            Write::Create {
                namespace, name, ..
            }
            | Write::Series {
                namespace, name, ..
            } => (namespace, name),
        }
    }
}

/// The writes of one step, and how many the rate limit or the state bound dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// In order.
    pub writes: Vec<Write>,
    /// Not written: no token left, or too many problems tracked.
    pub dropped: u64,
}

/// The Events' memory: which problems are active and which Event tells each.
#[derive(Debug)]
pub struct EventTracker {
    node: String,
    entries: HashMap<ProblemKey, Entry>,
    pending: Pending,
    bucket: TokenBucket,
    seq: u64,
}

impl EventTracker {
    /// For node `node`, writing at most `burst` Events at once and `per_minute` after.
    pub fn new(node: &str, burst: u32, per_minute: u32) -> Self {
        EventTracker {
            node: node.to_owned(),
            entries: HashMap::new(),
            pending: Pending::default(),
            bucket: TokenBucket::new(burst, per_minute),
            seq: 0,
        }
    }

    /// Problems remembered (bounded by [`MAX_TRACKED`]).
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }

    /// Starts waiting for a token (bounded by [`MAX_PENDING`]); while any wait, the caller
    /// steps again when one is [`EventTracker::due`], not only on a new snapshot.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// A held-back start can be told at `mono`: one waits and a token is there (the caller
    /// steps then, and not on every tick in between).
    pub fn due(&self, mono: Instant) -> bool {
        !self.pending.is_empty() && self.bucket.has_token(mono)
    }

    /// Compare with what was active: an Event (or a series update) per problem that started
    /// or cleared since the last step.
    pub fn step(&mut self, seen: &Observed, now: SystemTime, mono: Instant) -> Step {
        let mut step = Step::default();
        // Forget what is long over, and problems of pods that are gone.
        self.entries.retain(|k, e| {
            let gone =
                matches!(k.regarding, Regarding::Pod { .. }) && !seen.pods.contains(&k.regarding);
            let stale = !e.active
                && now
                    .duration_since(e.changed)
                    .is_ok_and(|age| age > SERIES_WINDOW);
            !(gone || stale)
        });
        // Queued starts that recovered (or whose pod is gone) before their turn: never told.
        let entries = &self.entries;
        for key in self
            .pending
            .retain(|k| entries.contains_key(k) && seen.problems.contains_key(k))
        {
            if let Some(e) = self.entries.get_mut(&key) {
                e.active = false;
                e.changed = now;
            }
        }
        // The queue's turn first, oldest first, while tokens last.
        while let Some(key) = self.pending.front().cloned() {
            if !self.bucket.try_take(mono) {
                break;
            }
            self.pending.pop();
            if let Some(note) = seen.problems.get(&key) {
                self.start(&key, note, now, &mut step);
            }
        }
        for (key, note) in &seen.problems {
            if self.entries.get(key).is_some_and(|e| e.active) {
                continue;
            }
            if !self.entries.contains_key(key) && !self.make_room() {
                step.dropped += 1;
                continue;
            }
            let entry = self.entries.entry(key.clone()).or_insert(Entry {
                active: false,
                told: false,
                warning: None,
                recovery: None,
                changed: now,
            });
            entry.active = true;
            entry.told = false;
            entry.changed = now;
            // Behind the queue, so the order stays the order of the starts.
            if self.pending.is_empty() && self.bucket.try_take(mono) {
                self.start(key, note, now, &mut step);
            } else if !self.pending.push(key.clone()) {
                step.dropped += 1;
            }
        }
        let cleared: Vec<ProblemKey> = self
            .entries
            .iter()
            .filter(|(k, e)| e.active && !seen.problems.contains_key(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for key in cleared {
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            entry.active = false;
            entry.changed = now;
            if !std::mem::take(&mut entry.told) {
                // Its start was dropped: nobody heard of the problem, so not of its end.
                continue;
            }
            let prev = entry.recovery.take();
            let note = "the problem is no longer observed".to_owned();
            let (write, record) = self.tell(&key, &note, false, prev, now);
            self.apply(&key, write, record, mono, &mut step);
        }
        step
    }

    /// Tell a start (its token taken): a new Warning, or the next count of its series.
    fn start(&mut self, key: &ProblemKey, note: &str, now: SystemTime, step: &mut Step) {
        let prev = self.entries.get_mut(key).and_then(|e| e.warning.take());
        let (write, record) = self.tell(key, note, true, prev, now);
        if let Some(e) = self.entries.get_mut(key) {
            e.warning = Some(record);
            e.told = true;
        }
        step.writes.push(write);
    }

    /// The Event a create or series update wrote failed: forget it, so the next occurrence
    /// creates a new one instead of patching one that may not exist.
    pub fn failed(&mut self, write: &Write) {
        let (ns, name) = write.target();
        for e in self.entries.values_mut() {
            for slot in [&mut e.warning, &mut e.recovery] {
                if slot
                    .as_ref()
                    .is_some_and(|r| r.namespace == ns && r.name == name)
                {
                    *slot = None;
                }
            }
        }
    }

    /// Room for one more entry: evict the longest-inactive one if full.
    fn make_room(&mut self) -> bool {
        if self.entries.len() < MAX_TRACKED {
            return true;
        }
        let oldest = self
            .entries
            .iter()
            .filter(|(_, e)| !e.active)
            .min_by_key(|(_, e)| e.changed)
            .map(|(k, _)| k.clone());
        oldest.is_some_and(|k| self.entries.remove(&k).is_some())
    }

    /// Keep the recovery's record and its write if a token allows it.
    fn apply(
        &mut self,
        key: &ProblemKey,
        write: Write,
        record: Recorded,
        mono: Instant,
        step: &mut Step,
    ) {
        if !self.bucket.try_take(mono) {
            step.dropped += 1;
            return;
        }
        if let Some(e) = self.entries.get_mut(key) {
            e.recovery = Some(record);
        }
        step.writes.push(write);
    }

    /// A new Event, or the next count of `prev`'s series when it is recent.
    fn tell(
        &mut self,
        key: &ProblemKey,
        note: &str,
        warning: bool,
        prev: Option<Recorded>,
        now: SystemTime,
    ) -> (Write, Recorded) {
        if let Some(prev) = prev.filter(|p| {
            now.duration_since(p.last)
                .map_or(true, |age| age <= SERIES_WINDOW)
        }) {
            let record = Recorded {
                count: prev.count.saturating_add(1).max(2),
                last: now,
                ..prev
            };
            let body = json!({"series": {
                "count": record.count,
                "lastObservedTime": rfc3339(now, true),
            }});
            let write = Write::Series {
                namespace: record.namespace.clone(),
                name: record.name.clone(),
                body,
            };
            return (write, record);
        }
        self.seq += 1;
        let (namespace, object, regarding) = match &key.regarding {
            Regarding::Pod {
                namespace,
                name,
                uid,
            } => (
                namespace.clone(),
                name.clone(),
                json!({"apiVersion": "v1", "kind": "Pod", "namespace": namespace,
                       "name": name, "uid": uid}),
            ),
            // `kubectl describe node` looks for the node's name as its uid, as the kubelet
            // writes it.
            Regarding::Node => (
                NODE_EVENT_NAMESPACE.to_owned(),
                self.node.clone(),
                json!({"apiVersion": "v1", "kind": "Node", "name": self.node,
                       "uid": self.node}),
            ),
        };
        let nanos = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let prefix: String = object.chars().take(200).collect();
        let name = format!("{prefix}.{:x}", nanos.wrapping_add(self.seq));
        let (kind, action, reason) = if warning {
            ("Warning", "Detected", key.reason.to_owned())
        } else {
            ("Normal", "Recovered", format!("{}Resolved", key.reason))
        };
        let body = json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "eventTime": rfc3339(now, true),
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": self.node,
            "action": action,
            "reason": reason,
            "type": kind,
            "note": truncate(note.to_owned(), MAX_NOTE),
            "regarding": regarding,
        });
        let record = Recorded {
            namespace: namespace.clone(),
            name: name.clone(),
            count: 1,
            last: now,
        };
        (
            Write::Create {
                namespace,
                name,
                body,
            },
            record,
        )
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
