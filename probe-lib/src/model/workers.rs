//! Which of the agent's long-running workers (tasks and threads) are alive: the truth behind
//! `/healthz` and `podnet_worker_up`. A worker holds a [`WorkerGuard`]; dropping it — the
//! worker returned, or unwound from a panic — marks the worker dead, so no exit path can leave
//! it counted as alive. A worker that can hang without ending also [`WorkerGuard::beat`]s
//! and is judged by how long it has been silent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::lock;

/// Workers at most (names come from the agent's code, never from input; this only keeps a
/// programming error from growing the map).
const MAX_WORKERS: usize = 32;

/// What a worker is doing, as far as its guard knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Running (and beating in time, if it beats).
    Running,
    /// Returned: its guard was dropped without a panic.
    Stopped,
    /// Its guard was dropped while its thread was panicking.
    Panicked,
    /// Running, but silent for longer than it promised.
    Stalled,
}

impl WorkerState {
    /// Lower-case word for `/healthz`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Running => "running",
            WorkerState::Stopped => "stopped",
            WorkerState::Panicked => "panicked",
            WorkerState::Stalled => "stalled",
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// Which registration this is: a stale guard must not end its successor.
    id: u64,
    ended: Option<WorkerState>,
    last_beat: Instant,
    /// Longest allowed silence, for workers that beat.
    max_silence: Option<Duration>,
}

#[derive(Debug, Default)]
struct Inner {
    workers: BTreeMap<&'static str, Entry>,
    next_id: u64,
    /// A fault to inject, for tests (see [`Workers::inject_fault`]).
    fault: Option<(String, Fault)>,
}

/// A test-only fault a worker is asked to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Panic.
    Kill,
    /// Ignore shutdown and never finish.
    Hang,
}

/// The registry. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Workers {
    inner: Arc<Mutex<Inner>>,
}

impl Workers {
    /// Register a running worker; it is alive while the returned guard lives. Registering a
    /// name again replaces the old entry (a restarted worker).
    pub fn register(&self, name: &'static str) -> WorkerGuard {
        let mut inner = lock(&self.inner);
        inner.next_id += 1;
        let id = inner.next_id;
        if inner.workers.len() < MAX_WORKERS || inner.workers.contains_key(name) {
            inner.workers.insert(
                name,
                Entry {
                    id,
                    ended: None,
                    last_beat: Instant::now(),
                    max_silence: None,
                },
            );
        }
        WorkerGuard {
            workers: self.clone(),
            name,
            id,
        }
    }

    /// Every worker and its state at `now`, by name.
    pub fn states(&self, now: Instant) -> Vec<(&'static str, WorkerState)> {
        lock(&self.inner)
            .workers
            .iter()
            .map(|(name, e)| {
                let state = e.ended.unwrap_or_else(|| {
                    let silent = now.saturating_duration_since(e.last_beat);
                    if e.max_silence.is_some_and(|max| silent > max) {
                        WorkerState::Stalled
                    } else {
                        WorkerState::Running
                    }
                });
                (*name, state)
            })
            .collect()
    }

    /// The workers that are not running, e.g. `["prober: panicked"]`; empty when all are.
    pub fn problems(&self, now: Instant) -> Vec<String> {
        self.states(now)
            .into_iter()
            .filter(|(_, s)| *s != WorkerState::Running)
            .map(|(n, s)| format!("{n}: {}", s.as_str()))
            .collect()
    }

    /// Ask worker `name` to simulate `fault` (tests only: the agent sets this from the
    /// `PODNET_TEST_FAULT` environment variable at start, never from the network).
    pub fn inject_fault(&self, name: &str, fault: Fault) {
        lock(&self.inner).fault = Some((name.to_owned(), fault));
    }

    /// The fault injected for worker `name`, if any (tests only).
    pub fn fault(&self, name: &str) -> Option<Fault> {
        match &lock(&self.inner).fault {
            Some((n, f)) if n == name => Some(*f),
            _ => None,
        }
    }

    /// A supervisor caught worker `name`'s panic (e.g. from a task's `JoinHandle`): its
    /// guard may have been dropped outside the unwinding, as tokio drops a panicked task's
    /// future only after catching the panic.
    pub fn mark_panicked(&self, name: &str) {
        if let Some(e) = lock(&self.inner).workers.get_mut(name) {
            e.ended = Some(WorkerState::Panicked);
        }
    }

    /// The first end recorded wins (a supervisor's verdict is not overwritten by the guard's
    /// later drop).
    fn end(&self, name: &'static str, id: u64, state: WorkerState) {
        if let Some(e) = lock(&self.inner).workers.get_mut(name)
            && e.id == id
            && e.ended.is_none()
        {
            e.ended = Some(state);
        }
    }
}

/// A worker's membership in [`Workers`]; dropping it marks the worker stopped (or panicked,
/// when dropped during unwinding).
#[derive(Debug)]
pub struct WorkerGuard {
    workers: Workers,
    name: &'static str,
    id: u64,
}

impl WorkerGuard {
    /// The worker's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Promise to [`beat`](Self::beat) at least every `max_silence`; longer silence counts
    /// as a hang.
    pub fn expect_beats(&self, max_silence: Duration) {
        if let Some(e) = lock(&self.workers.inner).workers.get_mut(self.name) {
            e.max_silence = Some(max_silence);
            e.last_beat = Instant::now();
        }
    }

    /// The worker is making progress.
    pub fn beat(&self) {
        if let Some(e) = lock(&self.workers.inner).workers.get_mut(self.name) {
            e.last_beat = Instant::now();
        }
    }

    /// The fault injected for this worker, if any (tests only).
    pub fn fault(&self) -> Option<Fault> {
        self.workers.fault(self.name)
    }
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        let state = if std::thread::panicking() {
            WorkerState::Panicked
        } else {
            WorkerState::Stopped
        };
        self.workers.end(self.name, self.id, state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_and_panic_mark_the_worker() {
        let w = Workers::default();
        let a = w.register("a");
        let b = w.register("b");
        let c = w.register("c");
        assert!(w.problems(Instant::now()).is_empty());
        drop(a);
        let r = std::thread::spawn(move || {
            let _b = b;
            panic!("boom");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(
            w.states(Instant::now()),
            [
                ("a", WorkerState::Stopped),
                ("b", WorkerState::Panicked),
                ("c", WorkerState::Running)
            ]
        );
        assert_eq!(w.problems(Instant::now()), ["a: stopped", "b: panicked"]);
        drop(c);
    }

    #[test]
    fn silence_beyond_the_promise_is_a_stall() {
        let w = Workers::default();
        let g = w.register("monitor");
        g.expect_beats(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(w.states(t0)[0].1, WorkerState::Running);
        assert_eq!(
            w.states(t0 + Duration::from_secs(6))[0].1,
            WorkerState::Stalled
        );
        // A restarted worker is running again.
        let g2 = w.register("monitor");
        assert_eq!(w.states(Instant::now())[0].1, WorkerState::Running);
        drop(g);
        assert!(
            w.problems(Instant::now()).is_empty(),
            "a stale guard ended its successor"
        );
        drop(g2);
        assert_eq!(w.problems(Instant::now()), ["monitor: stopped"]);
    }

    #[test]
    fn a_supervisor_verdict_stands() {
        let w = Workers::default();
        let g = w.register("prober");
        drop(g);
        w.mark_panicked("prober");
        assert_eq!(w.problems(Instant::now()), ["prober: panicked"]);
        let g = w.register("prober");
        w.mark_panicked("prober");
        drop(g);
        assert_eq!(w.problems(Instant::now()), ["prober: panicked"]);
    }

    #[test]
    fn faults_reach_only_their_worker() {
        let w = Workers::default();
        let a = w.register("a");
        let b = w.register("b");
        w.inject_fault("b", Fault::Kill);
        assert_eq!((a.fault(), b.fault()), (None, Some(Fault::Kill)));
    }

    #[test]
    fn bounded() {
        let w = Workers::default();
        let names: Vec<&'static str> = (0..100)
            .map(|i| &*Box::leak(format!("w{i}").into_boxed_str()))
            .collect();
        let guards: Vec<_> = names.iter().map(|n| w.register(n)).collect();
        assert_eq!(w.states(Instant::now()).len(), MAX_WORKERS);
        drop(guards);
    }
}
