//! Logging the cross-node probe's verdict changes (judged in `verdict/peers.rs`).

use std::collections::HashSet;

use tracing::{info, warn};

use crate::verdict::PeerStatus;

/// One line per peer that became unreachable or reachable again (a peer changes at most once
/// per rotation, and at most [`crate::verdict::MAX_PEER_SERIES`] peers are listed).
pub(super) fn log_peer_changes(last: Option<&PeerStatus>, now: &PeerStatus) {
    // While most peers fail the node problem says it (logged with the other node problems);
    // the listed peers are not "reachable again".
    if now.node_problem.is_some() {
        return;
    }
    let was: HashSet<&str> = last
        .map(|l| l.unreachable.iter().map(|p| p.peer.as_str()).collect())
        .unwrap_or_default();
    let is: HashSet<&str> = now.unreachable.iter().map(|p| p.peer.as_str()).collect();
    for p in now
        .unreachable
        .iter()
        .filter(|p| !was.contains(p.peer.as_str()))
    {
        warn!(peer = %p.peer, address = %p.address, explained_by = p.explained_by.map(|r| r.as_str()),
              "peer node unreachable from here");
    }
    for p in was.difference(&is) {
        info!(peer = %p, "peer node reachable again");
    }
}
