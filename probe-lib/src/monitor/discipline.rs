//! What keeps a misbehaving pod from making the monitor work or talk without limit: re-syncs
//! spaced and retried with backoff ([`ResyncSchedule`]), problem-change logs rate-limited
//! ([`LogLimiter`]). Pure: the caller passes the time.

use std::time::Duration;

use tokio::time::Instant;

use crate::model::ResyncCause;
use crate::util::backoff::Backoff;

/// Event-triggered re-syncs start at least this far apart: a pod flapping its interface
/// every 100 ms causes one re-sync a second, not one per flap.
pub(super) const MIN_RESYNC_SPACING: Duration = Duration::from_secs(1);
/// Retries of a failed re-sync: from 1 s (the spacing) up to 30 s.
const RETRY_MIN: Duration = MIN_RESYNC_SPACING;
const RETRY_MAX: Duration = Duration::from_secs(30);

/// When the next full re-sync may run. Requests arriving while one is pending coalesce into
/// it (the first cause is the one counted).
#[derive(Debug)]
pub(super) struct ResyncSchedule {
    pending: Option<ResyncCause>,
    last_start: Option<Instant>,
    /// After a failure: not before this.
    retry_at: Option<Instant>,
    backoff: Backoff,
}

impl Default for ResyncSchedule {
    fn default() -> Self {
        ResyncSchedule {
            pending: None,
            last_start: None,
            retry_at: None,
            backoff: Backoff::new(RETRY_MIN, RETRY_MAX),
        }
    }
}

impl ResyncSchedule {
    /// Ask for a re-sync.
    pub(super) fn request(&mut self, cause: ResyncCause) {
        self.pending.get_or_insert(cause);
    }

    /// The earliest start allowed by spacing and backoff (`None`: any time).
    fn not_before(&self) -> Option<Instant> {
        let spaced = self.last_start.map(|t| t + MIN_RESYNC_SPACING);
        spaced.max(self.retry_at)
    }

    /// When the pending re-sync is due, if one is pending.
    pub(super) fn due(&self) -> Option<Instant> {
        self.pending?;
        Some(self.not_before().unwrap_or_else(Instant::now))
    }

    /// The pending cause if it is due at `now`; marks the re-sync started.
    pub(super) fn start(&mut self, now: Instant) -> Option<ResyncCause> {
        self.pending?;
        if self.not_before().is_some_and(|t| t > now) {
            return None;
        }
        self.last_start = Some(now);
        self.pending
    }

    /// A re-sync (pending or not) started at `now` outside the schedule (at subscription).
    pub(super) fn started_now(&mut self, now: Instant) {
        self.last_start = Some(now);
    }

    /// The re-sync succeeded: nothing pending, backoff reset.
    pub(super) fn succeeded(&mut self) {
        self.pending = None;
        self.retry_at = None;
        self.backoff.reset();
    }

    /// The re-sync failed at `now`: retry `cause` after the next backoff delay; returns it.
    pub(super) fn failed(&mut self, cause: ResyncCause, now: Instant) -> Duration {
        self.pending.get_or_insert(cause);
        let delay = self.backoff.next_delay();
        self.retry_at = Some(now + delay);
        delay
    }
}

/// Problem-change log lines per window at most, per node (this agent).
pub(super) const LOG_LINES_PER_WINDOW: u32 = 20;
/// The window of [`LOG_LINES_PER_WINDOW`].
pub(super) const LOG_WINDOW: Duration = Duration::from_secs(10);

/// A fixed-window rate limit on log lines; what it holds back is counted.
#[derive(Debug, Default)]
pub(super) struct LogLimiter {
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// Start a new window if the current one is over; returns how many lines the closed
    /// window suppressed (for one summary line), if any.
    pub(super) fn roll(&mut self, now: Instant) -> Option<u64> {
        let over = self
            .window_start
            .is_none_or(|s| now.saturating_duration_since(s) >= LOG_WINDOW);
        if !over {
            return None;
        }
        self.window_start = Some(now);
        self.used = 0;
        let s = std::mem::take(&mut self.suppressed);
        (s > 0).then_some(s)
    }

    /// May one more line be written in this window? A refused line is counted.
    pub(super) fn allow(&mut self) -> bool {
        if self.used < LOG_LINES_PER_WINDOW {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flapping_requests_coalesce_one_per_second() {
        let t0 = Instant::now();
        let mut s = ResyncSchedule::default();
        let mut started = 0;
        // A link flapping every 100 ms for 10 s.
        for i in 0..100u32 {
            let now = t0 + Duration::from_millis(100) * i;
            s.request(ResyncCause::LinkDown);
            if s.start(now).is_some() {
                started += 1;
                s.succeeded();
            }
        }
        assert!((9..=10).contains(&started), "{started} re-syncs in 10 s");
    }

    #[test]
    fn failures_back_off_and_success_resets() {
        let t0 = Instant::now();
        let mut s = ResyncSchedule::default();
        s.request(ResyncCause::Overrun);
        assert_eq!(s.start(t0), Some(ResyncCause::Overrun));
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..6 {
            let d = s.failed(ResyncCause::Overrun, now);
            delays.push(d);
            assert_eq!(s.start(now + d / 2), None, "retried before its delay");
            now = s.due().unwrap();
            assert_eq!(s.start(now), Some(ResyncCause::Overrun));
        }
        // Growing (within jitter), capped, and far from a fixed 500 ms.
        assert!(delays[5] > delays[0] * 8, "{delays:?}");
        assert!(delays.iter().all(|d| *d <= RETRY_MAX));
        s.succeeded();
        assert_eq!(s.due(), None);
        s.request(ResyncCause::Periodic);
        let d = s.failed(ResyncCause::Periodic, now);
        assert!(d < RETRY_MIN * 2, "backoff not reset: {d:?}");
    }

    #[test]
    fn nothing_pending_nothing_due() {
        let mut s = ResyncSchedule::default();
        assert_eq!(s.due(), None);
        assert_eq!(s.start(Instant::now()), None);
    }

    #[test]
    fn log_lines_limited_per_window_and_counted() {
        let t0 = Instant::now();
        let mut l = LogLimiter::default();
        assert_eq!(l.roll(t0), None);
        let allowed = (0..100).filter(|_| l.allow()).count();
        assert_eq!(allowed, LOG_LINES_PER_WINDOW as usize);
        assert_eq!(l.roll(t0 + Duration::from_secs(5)), None, "same window");
        assert!(!l.allow());
        assert_eq!(l.roll(t0 + LOG_WINDOW), Some(81));
        assert!(l.allow());
        assert_eq!(l.roll(t0 + LOG_WINDOW * 3), None);
    }
}
