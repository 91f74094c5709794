//! Problem starts the Event rate limit held back, oldest first, to be told when tokens
//! return. Bounded: beyond [`MAX_PENDING`] a start is dropped (and counted) rather than queued,
//! so a node where everything breaks at once holds a fixed amount of memory.

use std::collections::VecDeque;

use super::events::ProblemKey;

/// Starts waiting for a token at most.
pub const MAX_PENDING: usize = 256;

/// The queue: each key at most once, in the order the problems started.
#[derive(Debug, Default)]
pub(super) struct Pending {
    keys: VecDeque<ProblemKey>,
}

impl Pending {
    /// Queue `key` behind the others; `false` when full (the start is dropped).
    pub(super) fn push(&mut self, key: ProblemKey) -> bool {
        if self.keys.contains(&key) {
            return true;
        }
        if self.keys.len() >= MAX_PENDING {
            return false;
        }
        self.keys.push_back(key);
        true
    }

    /// The oldest start.
    pub(super) fn front(&self) -> Option<&ProblemKey> {
        self.keys.front()
    }

    /// Take the oldest start (its turn came).
    pub(super) fn pop(&mut self) -> Option<ProblemKey> {
        self.keys.pop_front()
    }

    /// Keep the starts `keep` says are still worth telling; return the others.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&ProblemKey) -> bool) -> Vec<ProblemKey> {
        let mut gone = Vec::new();
        self.keys.retain(|k| {
            let kept = keep(k);
            if !kept {
                gone.push(k.clone());
            }
            kept
        });
        gone
    }

    /// Starts waiting.
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Nothing waiting.
    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::events::Regarding;

    fn key(i: usize) -> ProblemKey {
        ProblemKey {
            regarding: Regarding::Pod {
                namespace: "ns".into(),
                name: format!("p{i}"),
                uid: String::new(),
            },
            reason: "PodRouteMissing",
        }
    }

    #[test]
    fn fifo_bounded_without_duplicates() {
        let mut q = Pending::default();
        for i in 0..MAX_PENDING {
            assert!(q.push(key(i)));
        }
        assert!(q.push(key(3)), "already queued: kept in its place");
        assert!(!q.push(key(MAX_PENDING)), "full");
        assert_eq!(q.len(), MAX_PENDING);
        let gone = q.retain(|k| *k != key(1));
        assert_eq!(gone, vec![key(1)]);
        assert_eq!(q.pop(), Some(key(0)));
        assert_eq!(q.front(), Some(&key(2)));
        assert!(!q.is_empty());
    }
}
