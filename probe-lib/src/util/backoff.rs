//! The one retry backoff: exponential, capped, with jitter so that the agents of a whole
//! cluster do not retry an API server (or a kernel) in lock step after a shared failure.

use std::time::Duration;

/// Jittered, capped exponential backoff. Each delay is the current step times a factor in
/// [0.75, 1.25), never more than `max`; the step then doubles up to `max`. `reset` after a
/// success starts again from `min`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
    /// xorshift64 state; never 0.
    rng: u64,
}

impl Backoff {
    /// From `min` to `max`, seeded from the process id (different per node, no global RNG).
    pub fn new(min: Duration, max: Duration) -> Self {
        Self::with_seed(min, max, u64::from(std::process::id()))
    }

    /// With a fixed seed (tests).
    pub fn with_seed(min: Duration, max: Duration, seed: u64) -> Self {
        let min = min.min(max);
        Backoff {
            min,
            max,
            step: min,
            rng: seed | 1,
        }
    }

    /// The delay to wait now; advances the step.
    pub fn next_delay(&mut self) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let factor = 0.75 + (self.rng % 1000) as f64 / 2000.0;
        let delay = self.step.mul_f64(factor).min(self.max);
        self.step = (self.step * 2).min(self.max);
        delay
    }

    /// Back to `min` (after a success).
    pub fn reset(&mut self) {
        self.step = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn within(d: Duration, step: Duration) -> bool {
        d >= step.mul_f64(0.75) && d < step.mul_f64(1.25) && d <= MAX
    }

    #[test]
    fn grows_exponentially_within_jitter_bounds() {
        let mut b = Backoff::with_seed(MIN, MAX, 42);
        let mut step = MIN;
        for _ in 0..6 {
            let d = b.next_delay();
            assert!(within(d, step), "{d:?} for step {step:?}");
            step = (step * 2).min(MAX);
        }
    }

    #[test]
    fn capped() {
        let mut b = Backoff::with_seed(MIN, MAX, 7);
        for _ in 0..200 {
            assert!(b.next_delay() <= MAX);
        }
        // At the cap, the jitter still spreads retries (only downwards).
        let ds: Vec<Duration> = (0..50).map(|_| b.next_delay()).collect();
        assert!(ds.iter().all(|d| *d >= MAX.mul_f64(0.75)));
        assert!(ds.iter().any(|d| *d < MAX), "no jitter at the cap");
    }

    #[test]
    fn jitter_differs_between_seeds_and_is_not_constant() {
        let a: Vec<Duration> = {
            let mut b = Backoff::with_seed(MIN, MAX, 1);
            (0..5).map(|_| b.next_delay()).collect()
        };
        let b: Vec<Duration> = {
            let mut b = Backoff::with_seed(MIN, MAX, 99);
            (0..5).map(|_| b.next_delay()).collect()
        };
        assert_ne!(a, b);
        let mut one = Backoff::with_seed(MIN, MIN, 3);
        let same: Vec<Duration> = (0..20).map(|_| one.next_delay()).collect();
        assert!(same.windows(2).any(|w| w[0] != w[1]), "no jitter: {same:?}");
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::with_seed(MIN, MAX, 5);
        for _ in 0..10 {
            b.next_delay();
        }
        assert!(b.next_delay() >= MAX.mul_f64(0.75));
        b.reset();
        assert!(within(b.next_delay(), MIN));
        assert!(within(b.next_delay(), MIN * 2));
    }
}
