//! The Event rate limit: a token bucket per node, so a node where everything breaks at once
//! (200 pods losing their routes) writes a burst and then a trickle, not one Event per pod.

use std::time::{Duration, Instant};

/// `burst` tokens, refilled at `per_minute`; each Event write (create or series update)
/// takes one. Pure: the caller passes the time.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    burst: f64,
    per_sec: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl TokenBucket {
    /// Full at the start.
    pub fn new(burst: u32, per_minute: u32) -> Self {
        TokenBucket {
            burst: f64::from(burst),
            per_sec: f64::from(per_minute) / 60.0,
            tokens: f64::from(burst),
            at: None,
        }
    }

    /// Tokens there at `now`.
    fn level(&self, now: Instant) -> f64 {
        match self.at {
            Some(at) => {
                let elapsed = now.saturating_duration_since(at);
                (self.tokens + elapsed.as_secs_f64() * self.per_sec).min(self.burst)
            }
            None => self.tokens,
        }
    }

    /// Whether [`TokenBucket::try_take`] would succeed at `now` (takes nothing).
    pub fn has_token(&self, now: Instant) -> bool {
        self.level(now) >= 1.0
    }

    /// Take a token if one is there.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.tokens = self.level(now);
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The most writes allowed over `span` from a full bucket (for tests and docs).
    pub fn max_over(&self, span: Duration) -> u64 {
        (self.burst + span.as_secs_f64() * self.per_sec).floor() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_then_cap() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, 60);
        assert!((0..3).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0));
        // One per second.
        assert!(!b.try_take(t0 + Duration::from_millis(500)));
        assert!(!b.has_token(t0 + Duration::from_millis(900)));
        assert!(b.has_token(t0 + Duration::from_millis(1000)));
        assert!(b.try_take(t0 + Duration::from_millis(1000)));
        assert!(!b.try_take(t0 + Duration::from_millis(1100)));
        // A long quiet spell refills to the burst, no further.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| b.try_take(later)).count(), 3);
        assert_eq!(b.max_over(Duration::from_secs(10)), 13);
    }

    #[test]
    fn zero_rate_is_the_burst_only_and_time_going_backwards_is_harmless() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(1, 0);
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0 + Duration::from_secs(1000)));
        assert!(!b.try_take(t0 - Duration::from_secs(5)));
    }
}
