//! The cross-node probe's findings: for every other node sampled so far, its pod-network-side
//! address and the outcome of its last few samples. Written by the peer prober
//! (`probe/peers.rs`), judged by `verdict/peers.rs`.

use std::net::IpAddr;

use serde::Serialize;

use super::NodeName;

/// Most peers held (the rest of a larger node list is counted, not probed).
pub const MAX_PEERS: usize = 10_000;
/// Samples remembered per peer (bits of [`PeerState::failures`]).
pub const PEER_HISTORY: u8 = 8;

/// One other node as this node last sampled it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerState {
    /// The node's name.
    #[serde(serialize_with = "super::blocks::name_str")]
    pub node: NodeName,
    /// The address probed: its Calico tunnel address, else its node address.
    pub address: IpAddr,
    /// The last [`PEER_HISTORY`] samples, newest in bit 0: 1 = failed (no answer from the pod
    /// nor from the host).
    pub failures: u8,
    /// Samples taken so far, up to [`PEER_HISTORY`].
    pub samples: u8,
    /// The round of its latest sample.
    pub last_round: u64,
    /// The latest sample from a local pod: answered or not (`None`: no pod probed it).
    pub from_pod: Option<bool>,
    /// The latest sample from the host: answered or not.
    pub from_host: Option<bool>,
}

impl PeerState {
    /// Failed samples in a row, newest first.
    pub fn consecutive_failures(&self) -> u32 {
        let bits = u32::from(self.failures) | (1 << self.samples.min(PEER_HISTORY));
        bits.trailing_ones().min(u32::from(self.samples))
    }

    /// Whether the latest sample failed.
    pub fn last_failed(&self) -> bool {
        self.samples > 0 && self.failures & 1 == 1
    }
}

/// The peer prober's latest view, published after every round.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeerView {
    /// Peers in the node list (this node excluded), at most [`MAX_PEERS`].
    pub known: usize,
    /// Peers beyond [`MAX_PEERS`], or without a usable address: not probed.
    pub ignored: usize,
    /// Peers probed per round (`--peer-probes`).
    pub per_round: usize,
    /// Rounds run so far.
    pub rounds: u64,
    /// Every sampled peer still in the node list, by name.
    pub peers: Vec<PeerState>,
}

impl PeerView {
    /// Rounds one rotation takes: ⌈known / per_round⌉ (at least 1).
    pub fn rotation(&self) -> u64 {
        self.known.div_ceil(self.per_round.max(1)).max(1) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(failures: u8, samples: u8) -> PeerState {
        PeerState {
            node: "b".into(),
            address: [10, 244, 1, 0].into(),
            failures,
            samples,
            last_round: 0,
            from_pod: None,
            from_host: None,
        }
    }

    #[test]
    fn consecutive_failures_count_only_taken_samples() {
        assert_eq!(state(0, 0).consecutive_failures(), 0);
        assert_eq!(state(0b1, 1).consecutive_failures(), 1);
        assert_eq!(state(0b011, 3).consecutive_failures(), 2);
        assert_eq!(state(0b110, 3).consecutive_failures(), 0);
        assert_eq!(state(0xff, 8).consecutive_failures(), 8);
        assert!(state(0b1, 1).last_failed() && !state(0b10, 2).last_failed());
        let v = PeerView {
            known: 49,
            per_round: 8,
            ..PeerView::default()
        };
        assert_eq!(v.rotation(), 7);
        assert_eq!(PeerView::default().rotation(), 1);
    }
}
