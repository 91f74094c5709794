//! What a snapshot says Events should be about: each problem (pod wiring on the Pod;
//! node-level, remote block and control-plane problems on the Node; connects to a vanished pod
//! IP on the client Pod) with its evidence, and the pods it still has.

use std::collections::{BTreeMap, HashSet};

use super::condition::truncate;
use super::controlplane;
use super::events::{MAX_NOTE, ProblemKey, Regarding};
use super::reasons::{block_reason, connect_reason, node_reason, pod_reason};
use crate::model::SourceName;
use crate::snapshot::Snapshot;

/// The problems of one snapshot, and the pods it still has (a pod that is gone gets no
/// recovery Event).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Problem → its evidence.
    pub problems: BTreeMap<ProblemKey, String>,
    /// Every pod in the snapshot.
    pub pods: HashSet<Regarding>,
}

/// What the snapshot says Events should be about; `None` when Events cannot be told: before
/// the first full read, or without pod identities (node mode).
pub fn observe(snap: &Snapshot) -> Option<Observed> {
    if !snap.synced || snap.pod_source != SourceName::Kubernetes {
        return None;
    }
    let mut out = Observed::default();
    let total = snap.verdicts.pods.len();
    let healthy = total - snap.verdicts.pods_with_problems();
    let mut add = |key: ProblemKey, evidence: String| {
        let note = out.problems.entry(key).or_default();
        if !note.is_empty() {
            note.push_str("; ");
        }
        if note.len() < MAX_NOTE {
            note.push_str(&evidence);
        }
    };
    for pod in &snap.verdicts.pods {
        if pod.pod.id.name.is_empty() {
            continue;
        }
        let regarding = Regarding::Pod {
            namespace: pod.pod.id.namespace.clone(),
            name: pod.pod.id.name.clone(),
            uid: pod.pod.uid.clone(),
        };
        for p in &pod.problems {
            let ip = p.ip.map(|ip| format!("{ip}: ")).unwrap_or_default();
            let key = ProblemKey {
                regarding: regarding.clone(),
                reason: pod_reason(p.reason),
            };
            add(
                key,
                format!("{ip}{} (host interface {:?})", p.detail, pod.pod.interface),
            );
        }
    }
    for p in &snap.verdicts.node {
        let key = ProblemKey {
            regarding: Regarding::Node,
            reason: node_reason(p.reason),
        };
        add(key, p.detail.clone());
    }
    for b in snap.remote_blocks.iter() {
        let key = ProblemKey {
            regarding: Regarding::Node,
            reason: block_reason(b.reason),
        };
        add(key, format!("{} of node {}: {}", b.block, b.node, b.detail));
    }
    for note in out.problems.values_mut() {
        note.push_str(&format!(
            "; {healthy} of {total} pods on the node are wired correctly"
        ));
        *note = truncate(std::mem::take(note), MAX_NOTE);
    }
    // Told after the wiring count: it says nothing about them.
    for (reason, note) in controlplane::notes(snap) {
        let key = ProblemKey {
            regarding: Regarding::Node,
            reason,
        };
        out.problems.insert(key, truncate(note, MAX_NOTE));
    }
    for c in &snap.unanswered_connects {
        let Some(reason) = connect_reason(c.class) else {
            continue;
        };
        let Some(client) = snap.verdicts.pods.iter().find(|p| p.pod.id == c.pod) else {
            continue;
        };
        if client.pod.id.name.is_empty() {
            continue;
        }
        let key = ProblemKey {
            regarding: Regarding::Pod {
                namespace: c.pod.namespace.clone(),
                name: c.pod.name.clone(),
                uid: client.pod.uid.clone(),
            },
            reason,
        };
        let note = out.problems.entry(key).or_default();
        if note.len() < MAX_NOTE {
            if !note.is_empty() {
                note.push_str("; ");
            }
            note.push_str(&format!(
                "connects to {} unanswered; that IP belongs to no pod ({} rounds): {}",
                c.destination, c.rounds, c.diagnosis
            ));
            *note = truncate(std::mem::take(note), MAX_NOTE);
        }
    }
    out.pods = snap
        .verdicts
        .pods
        .iter()
        .filter(|p| !p.pod.id.name.is_empty())
        .map(|p| Regarding::Pod {
            namespace: p.pod.id.namespace.clone(),
            name: p.pod.id.name.clone(),
            uid: p.pod.uid.clone(),
        })
        .collect();
    Some(out)
}
