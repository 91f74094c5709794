//! What podnet last read from calico-node's felix on this node: its health endpoint and, if
//! enabled, its Prometheus endpoint. Written by the felix reader, exported by the metrics.

use tokio::sync::watch;

/// One reading of felix. `None` is "could not be read", never "healthy".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FelixStatus {
    /// The health endpoint answered (any HTTP status).
    pub health_up: bool,
    /// `/readiness`: 200/204 → true, 503 → false; unreadable or another status → `None`.
    pub ready: Option<bool>,
    /// `/liveness`, likewise.
    pub live: Option<bool>,
    /// The metrics endpoint answered 200 with a parseable exposition.
    pub metrics_up: bool,
    /// `felix_active_local_endpoints`: the workloads felix knows on this node.
    pub active_local_endpoints: Option<u64>,
    /// `felix_resync_state` (1 wait for datastore, 2 resyncing, 3 in sync).
    pub resync_state: Option<u8>,
}

/// The latest reading, shared between the reader, the monitor (woken on every change) and
/// the exporter.
#[derive(Debug, Clone)]
pub struct Felix(watch::Sender<FelixStatus>);

impl Default for Felix {
    fn default() -> Self {
        Felix(watch::Sender::new(FelixStatus::default()))
    }
}

impl Felix {
    /// Replace the reading; wakes subscribers only when it changed.
    pub fn set(&self, status: FelixStatus) {
        self.0.send_if_modified(|old| {
            let changed = *old != status;
            *old = status;
            changed
        });
    }

    /// The latest reading.
    pub fn get(&self) -> FelixStatus {
        self.0.borrow().clone()
    }

    /// A receiver woken on every change.
    pub fn subscribe(&self) -> watch::Receiver<FelixStatus> {
        self.0.subscribe()
    }
}
