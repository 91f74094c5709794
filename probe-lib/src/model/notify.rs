//! The counters the Kubernetes writers (node condition, Events) update and `metrics` registers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Labels of `podnet_kube_writes_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct WriteLabels {
    object: &'static str,
    result: &'static str,
}

/// What a write was about (the `object` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteObject {
    /// The node condition (`PATCH nodes/<name>/status`).
    Condition,
    /// An Event (create or series update).
    Event,
}

impl WriteObject {
    /// Every value.
    pub const ALL: [WriteObject; 2] = [WriteObject::Condition, WriteObject::Event];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            WriteObject::Condition => "condition",
            WriteObject::Event => "event",
        }
    }
}

/// The handles the condition and Event writers update.
#[derive(Debug, Clone)]
pub struct NotifyMetrics {
    pub(crate) writes: Family<WriteLabels, Counter>,
    pub(crate) events_dropped: Counter,
    pub(crate) events_pending: Gauge,
}

impl Default for NotifyMetrics {
    /// Every object × result present at zero.
    fn default() -> Self {
        let m = NotifyMetrics {
            writes: Family::default(),
            events_dropped: Counter::default(),
            events_pending: Gauge::default(),
        };
        for object in WriteObject::ALL {
            for result in ["ok", "error"] {
                let _ = m.writes.get_or_create(&WriteLabels {
                    object: object.as_str(),
                    result,
                });
            }
        }
        m
    }
}

impl NotifyMetrics {
    /// One write answered (`ok`) or failed (`error`: an error status, a timeout, no
    /// connection).
    pub fn write(&self, object: WriteObject, ok: bool) {
        self.writes
            .get_or_create(&WriteLabels {
                object: object.as_str(),
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// Events left out by the rate limit or the bound on tracked problems.
    pub fn dropped(&self, n: u64) {
        self.events_dropped.inc_by(n);
    }

    /// Problem starts held back by the rate limit, waiting for a token.
    pub fn pending(&self, n: usize) {
        self.events_pending
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}
