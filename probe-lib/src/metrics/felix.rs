//! felix's health and metrics as the snapshot's verdicts saw them (`podnet_calico_felix_*`).

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use tokio::sync::watch;

use super::gauge;
use crate::snapshot::Snapshot;

/// Renders felix's state from the latest snapshot at scrape time.
#[derive(Debug)]
pub(super) struct FelixCollector {
    pub(super) snapshots: watch::Receiver<Arc<Snapshot>>,
}

impl Collector for FelixCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        // Unread until the first snapshot: all zero, never healthy.
        let s = self.snapshots.borrow().felix.clone().unwrap_or_default();
        let up = "1 while calico-node's felix health endpoint on this node answers";
        gauge(
            &mut encoder,
            "podnet_calico_felix_up",
            up,
            i64::from(s.health_up),
        )?;
        let ready =
            "1 while felix reports ready; 0 when not ready or not readable (never 1 unread)";
        let is_ready = s.ready == Some(true);
        gauge(
            &mut encoder,
            "podnet_calico_felix_ready",
            ready,
            i64::from(is_ready),
        )?;
        let live = "1 while felix reports live; 0 when not live or not readable";
        let is_live = s.live == Some(true);
        gauge(
            &mut encoder,
            "podnet_calico_felix_live",
            live,
            i64::from(is_live),
        )?;
        let mup = "1 while felix's Prometheus endpoint answers (off by default in Calico)";
        gauge(
            &mut encoder,
            "podnet_calico_felix_metrics_up",
            mup,
            i64::from(s.metrics_up),
        )?;
        if let Some(n) = s.active_local_endpoints {
            let help = "felix_active_local_endpoints: workloads felix knows on this node; absent when unread";
            gauge(
                &mut encoder,
                "podnet_calico_felix_active_local_endpoints",
                help,
                n as i64,
            )?;
        }
        if let Some(n) = s.resync_state {
            let help = "felix_resync_state (1 wait for datastore, 2 resyncing, 3 in sync); absent when unread";
            gauge(
                &mut encoder,
                "podnet_calico_felix_resync_state",
                help,
                i64::from(n),
            )?;
        }
        Ok(())
    }
}
