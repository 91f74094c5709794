//! Judging the cross-node probe (`--peer-probes`): which other nodes fail from here, and when
//! so many fail that the problem is this node's own. Pure.
//!
//! A sample fails only if neither the local pod nor the host got an answer (one lost packet
//! fails one direction, not both); a peer is unreachable after [`CONFIRM`] failed samples in
//! a row (one per rotation: reported within two rotations of the break). When, over the last
//! [`MASS_ROUNDS`] rounds (the whole rotation if shorter), at least half of the peers sampled
//! — and at least [`MIN_MASS`] — failed their latest sample, that is one node-level
//! `peers_unreachable` of this node and no per-peer series: an uplink or overlay failure here
//! must not page once per remote node. The window is a few rounds, not a rotation: at 5,000
//! nodes a rotation is hours, and a node cut off must not wait half of one.

use serde::Serialize;

use super::BlockProblem;
use super::{NodeProblem, NodeReason};
use crate::model::{BlockReason, PeerView};

/// Failed samples in a row before a peer is reported.
pub const CONFIRM: u32 = 2;
/// Fewest failing peers that make a node-level problem (two nodes failing is two nodes).
pub const MIN_MASS: usize = 4;
/// Rounds whose samples the node-level judgement weighs (fewer when a rotation is shorter).
pub const MASS_ROUNDS: u64 = 6;
/// Most peers reported one by one (the rest are counted).
pub const MAX_PEER_SERIES: usize = 64;

/// One other node unreachable from here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerProblem {
    /// The remote node.
    pub peer: String,
    /// The address probed.
    pub address: std::net::IpAddr,
    /// Failed samples in a row.
    pub consecutive_failures: u32,
    /// What explains it, when podnet can tell: this node has no correct route to the peer's
    /// pod blocks (`remote_block_route_missing`, `remote_block_route_wrong_next_hop`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explained_by: Option<BlockReason>,
}

/// The cross-node verdicts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    /// Other nodes in the list.
    pub known: usize,
    /// Other nodes not probed (beyond the bound, or without an address).
    pub ignored: usize,
    /// Rounds run so far.
    pub rounds: u64,
    /// Rounds one rotation over every peer takes: ⌈known / k⌉.
    pub rotation: u64,
    /// Peers sampled within the last rotation.
    pub sampled: usize,
    /// Of those, failing their latest sample.
    pub failing: usize,
    /// Unreachable peers, by name, at most [`MAX_PEER_SERIES`] (none while the node-level
    /// problem holds).
    pub unreachable: Vec<PeerProblem>,
    /// Unreachable peers in all, listed or not.
    pub unreachable_total: usize,
    /// The node-level problem, when most peers fail.
    #[serde(skip)]
    pub node_problem: Option<NodeProblem>,
}

/// Judge `view`; `blocks` are this node's remote block problems (they explain a peer).
pub fn judge_peers(view: &PeerView, blocks: &[BlockProblem]) -> PeerStatus {
    let rotation = view.rotation();
    // Sampled in the last `rounds` rounds, and of those, failing their latest sample.
    let within = |rounds: u64| {
        let recent = view
            .peers
            .iter()
            .filter(|p| p.last_round + rounds > view.rounds);
        let failing = recent.clone().filter(|p| p.last_failed()).count();
        (recent.count(), failing)
    };
    let (sampled, failing) = within(rotation);
    let window = rotation.min(MASS_ROUNDS);
    let (mass_sampled, mass_failing) = within(window);
    let mut status = PeerStatus {
        known: view.known,
        ignored: view.ignored,
        rounds: view.rounds,
        rotation,
        sampled,
        failing,
        ..PeerStatus::default()
    };
    let confirmed = view
        .peers
        .iter()
        .filter(|p| p.consecutive_failures() >= CONFIRM);
    status.unreachable_total = confirmed.clone().count();
    if view.rounds >= window && mass_failing >= MIN_MASS && 2 * mass_failing >= mass_sampled {
        status.node_problem = Some(NodeProblem {
            reason: NodeReason::PeersUnreachable,
            detail: format!("{mass_failing} of {mass_sampled}"),
        });
        return status;
    }
    status.unreachable = confirmed
        .take(MAX_PEER_SERIES)
        .map(|p| PeerProblem {
            peer: p.node.to_string(),
            address: p.address,
            consecutive_failures: p.consecutive_failures(),
            explained_by: blocks.iter().find(|b| b.node == *p.node).map(|b| b.reason),
        })
        .collect();
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PeerState;

    /// `n` peers, `failing[i]` = failure bits of peer i (0 when absent), all sampled in the
    /// last round of a view of `rounds` rounds.
    fn view(n: usize, per_round: usize, rounds: u64, failing: &[(usize, u8)]) -> PeerView {
        PeerView {
            known: n,
            ignored: 0,
            per_round,
            rounds,
            peers: (0..n)
                .map(|i| {
                    let bits = failing.iter().find(|(j, _)| *j == i).map_or(0, |f| f.1);
                    PeerState {
                        node: format!("node-{i:02}").into(),
                        address: [10, 244, i as u8, 0].into(),
                        failures: bits,
                        samples: 4,
                        last_round: rounds,
                        from_pod: Some(bits & 1 == 0),
                        from_host: Some(bits & 1 == 0),
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn all_answer_nothing_reported() {
        let s = judge_peers(&view(10, 8, 4, &[]), &[]);
        assert_eq!((s.sampled, s.failing, s.unreachable_total), (10, 0, 0));
        assert!(s.unreachable.is_empty() && s.node_problem.is_none());
    }

    #[test]
    fn one_lost_sample_does_not_page_two_in_a_row_do() {
        let s = judge_peers(&view(10, 8, 4, &[(3, 0b1)]), &[]);
        assert!(s.unreachable.is_empty());
        assert_eq!(s.failing, 1);
        let s = judge_peers(&view(10, 8, 4, &[(3, 0b0101)]), &[]);
        assert!(s.unreachable.is_empty(), "not in a row");
        let s = judge_peers(&view(10, 8, 4, &[(3, 0b11)]), &[]);
        assert_eq!(s.unreachable.len(), 1);
        assert_eq!(s.unreachable[0].peer, "node-03");
        assert_eq!(s.unreachable[0].consecutive_failures, 2);
        assert!(s.node_problem.is_none());
    }

    #[test]
    fn a_missing_block_route_explains_the_peer() {
        let block = BlockProblem {
            reason: BlockReason::RemoteBlockRouteMissing,
            block: "10.244.3.0/26".parse().unwrap(),
            node: "node-03".into(),
            detail: String::new(),
        };
        let s = judge_peers(&view(10, 8, 4, &[(3, 0b11)]), &[block]);
        assert_eq!(
            s.unreachable[0].explained_by,
            Some(BlockReason::RemoteBlockRouteMissing)
        );
    }

    #[test]
    fn most_peers_failing_is_one_node_problem() {
        let failing: Vec<(usize, u8)> = (0..6).map(|i| (i, 0b11)).collect();
        let s = judge_peers(&view(10, 8, 4, &failing), &[]);
        let p = s.node_problem.expect("node-level");
        assert_eq!(p.reason, NodeReason::PeersUnreachable);
        assert_eq!(p.detail, "6 of 10");
        assert!(s.unreachable.is_empty(), "no per-peer series then");
        assert_eq!(s.unreachable_total, 6);
        // Exactly half is enough; fewer than half is per peer.
        let half: Vec<(usize, u8)> = (0..5).map(|i| (i, 0b1)).collect();
        assert!(
            judge_peers(&view(10, 8, 4, &half), &[])
                .node_problem
                .is_some()
        );
        let four: Vec<(usize, u8)> = (0..4).map(|i| (i, 0b11)).collect();
        let s = judge_peers(&view(10, 8, 4, &four), &[]);
        assert!(s.node_problem.is_none());
        assert_eq!(s.unreachable.len(), 4);
    }

    #[test]
    fn few_peers_never_make_a_node_problem() {
        // A two-node cluster whose one peer fails: that peer, not this node.
        let s = judge_peers(&view(1, 8, 4, &[(0, 0b11)]), &[]);
        assert!(s.node_problem.is_none());
        assert_eq!(s.unreachable.len(), 1);
        let three: Vec<(usize, u8)> = (0..3).map(|i| (i, 0b11)).collect();
        assert!(
            judge_peers(&view(3, 8, 4, &three), &[])
                .node_problem
                .is_none()
        );
    }

    #[test]
    fn not_before_a_window_and_only_recent_samples() {
        let failing: Vec<(usize, u8)> = (0..40).map(|i| (i, 0b1)).collect();
        // 50 peers, 8 per round: a rotation is 7 rounds, the window 6; after 3 rounds the
        // mass is not judged yet.
        let s = judge_peers(&view(50, 8, 3, &failing), &[]);
        assert!(s.node_problem.is_none());
        let s = judge_peers(&view(50, 8, 6, &failing), &[]);
        assert!(s.node_problem.is_some());
        // Samples older than a rotation do not count toward the mass.
        let mut v = view(50, 8, 20, &failing);
        for p in &mut v.peers[..40] {
            p.last_round = 5;
        }
        let s = judge_peers(&v, &[]);
        assert_eq!((s.sampled, s.failing), (10, 0));
        assert!(s.node_problem.is_none());
    }

    #[test]
    fn a_large_cluster_is_judged_on_its_last_rounds_not_a_whole_rotation() {
        // 5,000 peers, 8 a round (a rotation of 625 rounds): fine until round 1,000, then
        // every sample fails; 6 rounds later (48 samples) that is this node's problem.
        let mut v = view(5000, 8, 1006, &[]);
        for (i, p) in v.peers.iter_mut().enumerate() {
            p.last_round = 1006 - (i as u64 / 8 % 625);
            if p.last_round > 1000 {
                p.failures = 0b1;
            }
        }
        let s = judge_peers(&v, &[]);
        let p = s.node_problem.expect("node-level within the window");
        assert_eq!(p.detail, "48 of 48");
    }

    #[test]
    fn per_peer_series_are_bounded() {
        // 200 of 1,000 failing: below half, reported per peer, at most 64.
        let failing: Vec<(usize, u8)> = (0..200).map(|i| (i, 0b11)).collect();
        let s = judge_peers(&view(1000, 8, 200, &failing), &[]);
        assert!(s.node_problem.is_none());
        assert_eq!(s.unreachable.len(), MAX_PEER_SERIES);
        assert_eq!(s.unreachable_total, 200);
    }
}
