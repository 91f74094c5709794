//! Which of a pod's destinations go unanswered: a pure state machine over its `SYN_SENT`
//! dumps. A connect in progress is normal for a moment; a destination counts once sockets to
//! it have retransmitted their SYN at least `min_retransmits` times in `rounds` dumps in a
//! row, and clears at the first dump without such sockets (the connects stopped, failed or
//! succeeded).

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::Serialize;

use super::sockdiag::{MAX_DESTS, SynSentDump};
use crate::model::PodIpOwner;

/// When a destination counts as unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnansweredConfig {
    /// Consecutive dumps showing it.
    pub rounds: u32,
    /// SYN retransmissions (the kernel's first is after 1 s) of its worst socket.
    pub min_retransmits: u8,
}

impl Default for UnansweredConfig {
    fn default() -> Self {
        UnansweredConfig {
            rounds: 2,
            min_retransmits: 1,
        }
    }
}

/// A destination one pod keeps failing to connect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnansweredDest {
    /// Address and port.
    pub dest: SocketAddr,
    /// Its sockets in `SYN_SENT` in the latest dump.
    pub sockets: u32,
    /// The most SYN retransmissions of one of them in the latest dump.
    pub retransmits: u8,
    /// Consecutive dumps it was seen in (at least `rounds` once reported).
    pub rounds: u32,
    /// Whose the address is, where it was asked (addresses in the cluster's pod network
    /// that are not this node's pods).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<PodIpOwner>,
}

/// One pod's tracker.
#[derive(Debug, Clone, Default)]
pub struct Unanswered {
    streak: HashMap<SocketAddr, u32>,
    /// Destinations dropped over the bounds in the latest dump (sockets, not destinations,
    /// when the dump itself was cut short).
    pub dropped: u32,
}

impl Unanswered {
    /// Fold in one dump; the destinations unanswered now, most sockets first.
    pub fn observe(&mut self, dump: &SynSentDump, config: UnansweredConfig) -> Vec<UnansweredDest> {
        let mut next = HashMap::with_capacity(dump.dests.len().min(MAX_DESTS));
        let mut out = Vec::new();
        for d in dump.dests.iter().take(MAX_DESTS) {
            if d.retransmits < config.min_retransmits.max(1) {
                continue;
            }
            let rounds = self
                .streak
                .get(&d.dest)
                .copied()
                .unwrap_or(0)
                .saturating_add(1);
            next.insert(d.dest, rounds);
            if rounds >= config.rounds.max(1) {
                out.push(UnansweredDest {
                    dest: d.dest,
                    sockets: d.sockets,
                    retransmits: d.retransmits,
                    rounds,
                    owner: None,
                });
            }
        }
        self.streak = next;
        self.dropped = dump.dropped;
        out
    }

    /// Some destination is unanswered or on its way to be.
    pub fn is_tracking(&self) -> bool {
        !self.streak.is_empty()
    }

    /// No dump this round (the namespace could not be entered): nothing is known, so
    /// nothing stays reported and streaks start again.
    pub fn reset(&mut self) {
        self.streak.clear();
        self.dropped = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::super::sockdiag::SynSentDest;
    use super::*;

    fn dump(entries: &[(&str, u32, u8)]) -> SynSentDump {
        SynSentDump {
            dests: entries
                .iter()
                .map(|(a, sockets, retransmits)| SynSentDest {
                    dest: a.parse().unwrap(),
                    sockets: *sockets,
                    retransmits: *retransmits,
                })
                .collect(),
            dropped: 0,
        }
    }

    #[test]
    fn reported_after_consecutive_rounds_and_cleared_at_once() {
        let c = UnansweredConfig::default();
        let mut u = Unanswered::default();
        let stuck = "10.244.0.9:80";
        assert!(
            u.observe(&dump(&[(stuck, 3, 2)]), c).is_empty(),
            "one round"
        );
        let out = u.observe(&dump(&[(stuck, 3, 4)]), c);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].dest, stuck.parse().unwrap());
        assert_eq!(
            (out[0].sockets, out[0].retransmits, out[0].rounds),
            (3, 4, 2)
        );
        assert_eq!(u.observe(&dump(&[(stuck, 1, 5)]), c)[0].rounds, 3);
        // Gone (answered, or the client gave up): cleared, and the streak starts again.
        assert!(u.observe(&dump(&[]), c).is_empty());
        assert!(u.observe(&dump(&[(stuck, 1, 5)]), c).is_empty());
    }

    #[test]
    fn fresh_connects_do_not_count() {
        let c = UnansweredConfig::default();
        let mut u = Unanswered::default();
        // Connects in progress without a retransmission yet, every round: a busy client.
        for _ in 0..5 {
            assert!(u.observe(&dump(&[("10.244.0.9:80", 50, 0)]), c).is_empty());
        }
        // A gap (no retransmission in one round) breaks the streak.
        u.observe(&dump(&[("10.244.0.9:80", 1, 1)]), c);
        u.observe(&dump(&[("10.244.0.9:80", 1, 0)]), c);
        assert!(u.observe(&dump(&[("10.244.0.9:80", 1, 1)]), c).is_empty());
        u.reset();
        assert!(u.observe(&dump(&[("10.244.0.9:80", 1, 1)]), c).is_empty());
    }

    #[test]
    fn bounded_per_pod() {
        let c = UnansweredConfig {
            rounds: 1,
            min_retransmits: 1,
        };
        let mut u = Unanswered::default();
        let mut d = dump(&[]);
        d.dests = (0..MAX_DESTS as u16 * 3)
            .map(|p| SynSentDest {
                dest: SocketAddr::from(([10, 244, 0, 9], p)),
                sockets: 1,
                retransmits: 1,
            })
            .collect();
        d.dropped = 7;
        assert_eq!(u.observe(&d, c).len(), MAX_DESTS);
        assert_eq!(u.streak.len(), MAX_DESTS);
        assert_eq!(u.dropped, 7);
    }
}
