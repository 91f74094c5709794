//! A background scraper that asserts, at every scrape, that nothing outside an allowed set is
//! flagged: the "healthy control pods were never flagged in between" half of a fault test.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;

use crate::agent::{HttpClient, PORT};
use crate::exposition::Samples;

/// What may be flagged right now: pod interfaces and node reasons.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    /// Interfaces that may carry route problems or failing probes.
    pub interfaces: BTreeSet<String>,
    /// Node reasons that may be present.
    pub node: BTreeSet<String>,
    /// Probe targets any pod may fail for now without it counting as a violation: a known,
    /// transient flaw under test. Such scrapes are counted instead ([`Sentinel::tolerated`]).
    pub tolerated_targets: BTreeSet<String>,
}

/// Violations kept (the first ones; the count goes on).
const KEPT: usize = 20;

#[derive(Debug, Default)]
struct Shared {
    allowed: Mutex<Allowed>,
    violations: Mutex<Vec<String>>,
    scrapes: AtomicU64,
    tolerated: AtomicU64,
    stop: AtomicBool,
}

/// Scrapes `/metrics` of the agent in `netns` every `period` until dropped.
#[derive(Debug)]
pub struct Sentinel {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Sentinel {
    /// Start scraping the agent listening on [`PORT`] inside `netns`; nothing is allowed.
    pub fn start(netns: &str, period: Duration) -> Result<Self> {
        let client = HttpClient::new(netns, PORT)?;
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let started = std::time::Instant::now();
        let thread = std::thread::Builder::new()
            .name("sentinel".into())
            .spawn(move || {
                while !s.stop.load(Ordering::Relaxed) {
                    // The lock spans scrape and check: a change of the allowed set waits for
                    // the scrape in flight, so a scrape is never judged by a newer rule.
                    let allowed = s.allowed.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Ok((200, body)) = client.get("/metrics") {
                        let m = Samples::parse(&body);
                        let found = violations(&m, &allowed);
                        s.scrapes.fetch_add(1, Ordering::Relaxed);
                        if tolerated(&m, &allowed) {
                            s.tolerated.fetch_add(1, Ordering::Relaxed);
                        }
                        let mut v = s.violations.lock().unwrap_or_else(PoisonError::into_inner);
                        for f in found {
                            if v.len() < KEPT {
                                v.push(format!("t+{:.2}s {f}", started.elapsed().as_secs_f64()));
                            }
                        }
                    }
                    drop(allowed);
                    std::thread::sleep(period);
                }
            })?;
        Ok(Sentinel {
            shared,
            thread: Some(thread),
        })
    }

    /// Replace the allowed set (after the scrape in flight).
    pub fn allow(&self, allowed: Allowed) {
        *self
            .shared
            .allowed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = allowed;
    }

    /// Scrapes judged so far.
    pub fn scrapes(&self) -> u64 {
        self.shared.scrapes.load(Ordering::Relaxed)
    }

    /// Scrapes that showed a failure on a tolerated target outside the allowed interfaces.
    pub fn tolerated(&self) -> u64 {
        self.shared.tolerated.load(Ordering::Relaxed)
    }

    /// What was flagged outside the allowed set so far (the first few).
    pub fn violations(&self) -> Vec<String> {
        self.shared
            .violations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Everything in one scrape that `allowed` does not cover.
pub fn violations(m: &Samples, allowed: &Allowed) -> Vec<String> {
    let mut out = Vec::new();
    for (iface, ip, reason) in m.problems() {
        if !allowed.interfaces.contains(&iface) {
            out.push(format!("route problem {reason} on {iface} {ip}"));
        }
    }
    for s in m.named("podnet_pod_probe_failing") {
        let iface = s.labels.get("interface").cloned().unwrap_or_default();
        let target = s.labels.get("target").cloned().unwrap_or_default();
        if !allowed.interfaces.contains(&iface) && !allowed.tolerated_targets.contains(&target) {
            out.push(format!("probe failing on {iface}: {:?}", s.labels));
        }
    }
    for reason in m.node_problems() {
        if !allowed.node.contains(&reason) {
            out.push(format!("node problem {reason}"));
        }
    }
    out
}

/// The scrape shows a pod outside the allowed interfaces failing a tolerated target.
fn tolerated(m: &Samples, allowed: &Allowed) -> bool {
    m.named("podnet_pod_probe_failing").any(|s| {
        let label = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
        !allowed.interfaces.contains(&label("interface"))
            && allowed.tolerated_targets.contains(&label("target"))
    })
}
