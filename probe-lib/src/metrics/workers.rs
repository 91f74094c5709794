//! `podnet_worker_up{worker}`: the registry of workers rendered at scrape time.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::model::{WorkerState, Workers};

/// Renders every registered worker's state.
#[derive(Debug)]
pub(super) struct WorkerCollector {
    pub(super) workers: Workers,
}

impl Collector for WorkerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut e = encoder.encode_descriptor(
            "podnet_worker_up",
            "1 while this worker (task or thread) runs and makes progress; 0 once it stopped, panicked or stalled",
            None,
            MetricType::Gauge,
        )?;
        for (name, state) in self.workers.states(std::time::Instant::now()) {
            let up = i64::from(state == WorkerState::Running);
            ConstGauge::new(up).encode(e.encode_family(&[("worker", name)])?)?;
        }
        Ok(())
    }
}
