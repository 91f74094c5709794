//! Injected faults and request accounting, shared between the test and the server thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// How the server behaves during an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// The listening socket is closed: new connections are refused (an apiserver restart).
    Refuse,
    /// Every request gets 503 ServiceUnavailable (an apiserver behind a load balancer).
    Unavailable,
}

/// What a request was, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RequestKind {
    /// A pod list.
    List,
    /// A pod watch.
    Watch,
    /// A GET of one object (pod or node).
    Get,
    /// `/version`, `/api`, `/apis`, `/api/v1`.
    Discovery,
    /// Anything else (unknown paths, other methods).
    Other,
}

/// One received request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// What it was.
    pub kind: RequestKind,
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Raw query string (still percent-encoded).
    pub query: String,
    /// The `Accept` header asked for `PartialObjectMetadata`.
    pub metadata_only: bool,
}

/// Request counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestStats {
    /// Requests by kind.
    pub by_kind: BTreeMap<RequestKind, u64>,
    /// Requests by URL path.
    pub by_path: BTreeMap<String, u64>,
}

impl RequestStats {
    /// Requests of one kind.
    pub fn count(&self, kind: RequestKind) -> u64 {
        self.by_kind.get(&kind).copied().unwrap_or(0)
    }

    /// List requests.
    pub fn lists(&self) -> u64 {
        self.count(RequestKind::List)
    }

    /// Watch requests.
    pub fn watches(&self) -> u64 {
        self.count(RequestKind::Watch)
    }
}

/// Faults and accounting. Everything is callable from any thread.
#[derive(Debug)]
pub(crate) struct Control {
    fail_next: AtomicU32,
    fail_all: AtomicBool,
    /// While set, every other watch from a resourceVersion is answered as compacted.
    expire_every_other: AtomicBool,
    expire_count: AtomicU64,
    delay_ms: AtomicU64,
    /// The current outage, if any.
    pub outage: watch::Sender<Option<Outage>>,
    /// Open watch streams send nothing while true.
    pub stalled: watch::Sender<bool>,
    /// Bumped to close every open watch stream.
    pub close_epoch: watch::Sender<u64>,
    /// Set when the server stops.
    pub stop: watch::Sender<bool>,
    open_watches: Arc<AtomicUsize>,
    stats: Mutex<RequestStats>,
    log: Mutex<Vec<RequestRecord>>,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            fail_next: AtomicU32::new(0),
            fail_all: AtomicBool::new(false),
            expire_every_other: AtomicBool::new(false),
            expire_count: AtomicU64::new(0),
            delay_ms: AtomicU64::new(0),
            outage: watch::Sender::new(None),
            stalled: watch::Sender::new(false),
            close_epoch: watch::Sender::new(0),
            stop: watch::Sender::new(false),
            open_watches: Arc::new(AtomicUsize::new(0)),
            stats: Mutex::new(RequestStats::default()),
            log: Mutex::new(Vec::new()),
        }
    }
}

/// Decrements the open-watch count when a watch stream ends.
#[derive(Debug)]
pub(crate) struct OpenWatch(Arc<AtomicUsize>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Control {
    /// The next `n` requests answer 500.
    pub fn fail_next(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Every request answers 500 while `on`.
    pub fn fail_all(&self, on: bool) {
        self.fail_all.store(on, Ordering::SeqCst);
    }

    /// Whether this request must fail (consumes one of the "next N").
    pub fn take_failure(&self) -> bool {
        self.fail_all.load(Ordering::SeqCst)
            || self
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }

    /// While `on`, every other watch from a resourceVersion gets 410 Expired (the first one
    /// after switching on does).
    pub fn expire_every_other_watch(&self, on: bool) {
        self.expire_count.store(0, Ordering::SeqCst);
        self.expire_every_other.store(on, Ordering::SeqCst);
    }

    /// Whether this watch must be answered as if its resourceVersion were compacted.
    pub fn take_forced_expiry(&self) -> bool {
        self.expire_every_other.load(Ordering::SeqCst)
            && self
                .expire_count
                .fetch_add(1, Ordering::SeqCst)
                .is_multiple_of(2)
    }

    /// Delay every response by `d`.
    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// The response delay.
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms.load(Ordering::SeqCst))
    }

    /// Close every open watch stream.
    pub fn close_watches(&self) {
        self.close_epoch.send_modify(|e| *e += 1);
    }

    /// Start or end an outage; starting one closes every open watch stream.
    pub fn set_outage(&self, outage: Option<Outage>) {
        self.outage.send_replace(outage);
        if outage.is_some() {
            self.close_watches();
        }
    }

    /// Account for a request.
    pub fn record(&self, record: RequestRecord) {
        if let Ok(mut s) = self.stats.lock() {
            *s.by_kind.entry(record.kind).or_default() += 1;
            *s.by_path.entry(record.path.clone()).or_default() += 1;
        }
        if let Ok(mut l) = self.log.lock() {
            l.push(record);
        }
    }

    /// The counters.
    pub fn stats(&self) -> RequestStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<RequestRecord> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Reset counters and log.
    pub fn clear(&self) {
        if let Ok(mut s) = self.stats.lock() {
            *s = RequestStats::default();
        }
        if let Ok(mut l) = self.log.lock() {
            l.clear();
        }
    }

    /// Count an open watch stream until the guard drops.
    pub fn open_watch(&self) -> OpenWatch {
        self.open_watches.fetch_add(1, Ordering::SeqCst);
        OpenWatch(self.open_watches.clone())
    }

    /// Number of open watch streams.
    pub fn open_watches(&self) -> usize {
        self.open_watches.load(Ordering::SeqCst)
    }
}
