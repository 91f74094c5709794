//! Publishing: judge the pods from the current state and publish a new snapshot (and pod set),
//! logging what changed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use super::changes::log_changes;
use super::peers::log_peer_changes;
use super::source::PodSource;
use super::*;
use crate::host::HostNetwork;
use crate::model::Felix;
use crate::pods::ExpectedPod;
use crate::snapshot::Snapshot;
use crate::verdict::{
    BlockProblem, ProbeView, calico_node_stale, evaluate, judge_peers, unanswered_connects,
    unanswered_dropped,
};

/// One line per remote block that starts or stops failing (bounded by the block count).
fn log_block_changes(old: &[BlockProblem], new: &[BlockProblem]) {
    for p in new.iter().filter(|p| !old.contains(p)) {
        warn!(block = %p.block, node = %p.node, reason = p.reason.as_str(), detail = %p.detail, "remote block route problem");
    }
    for p in old
        .iter()
        .filter(|o| !new.iter().any(|n| n.block == o.block))
    {
        info!(block = %p.block, node = %p.node, "remote block route repaired");
    }
}

impl<H: HostNetwork> Monitor<H> {
    /// Judge the pods and publish a new snapshot; log what changed.
    pub(super) fn publish(&mut self) {
        let expectation = self.expected.get_or_insert_with(|| {
            self.source_state
                .expect(&self.config.pods, &self.state, Instant::now())
        });
        let pods: &[ExpectedPod] = &expectation.pods;
        // Reports of pods that went away must not come back with a new pod of the same name.
        let live: HashSet<&str> = pods.iter().map(|p| p.interface.as_str()).collect();
        self.probe_reports.retain(|k, _| live.contains(k.as_str()));
        let view = self.config.probes.as_ref().map(|p| ProbeView {
            reports: &self.probe_reports,
            failure_threshold: p.failure_threshold,
            policy_engine: p.policy_engine,
        });
        let mut verdicts = evaluate(&self.config.cni, pods, &self.state, view.as_ref());
        verdicts
            .node
            .extend(expectation.node_problems.iter().cloned());
        let removed = self.route_history.observe(&verdicts.pods, Instant::now());
        self.metrics.pod_routes_removed(removed);
        // Read once: the verdict and the exported reading are the same one.
        let felix = self.config.felix.as_ref().map(Felix::get);
        if let (Some(felix), PodSource::Kubernetes { .. }) = (&felix, &self.config.pods) {
            let vanished = self.route_history.vanished();
            let calico_node = expectation
                .kube
                .as_ref()
                .and_then(|k| k.calico_node.as_ref());
            verdicts.node.extend(calico_node_stale(
                felix,
                &verdicts.pods,
                &vanished,
                calico_node,
            ));
        }
        if let Some(n) = self.logs.roll(tokio::time::Instant::now()) {
            warn!(
                suppressed = n,
                "problem-change log lines suppressed by the rate limit in the last window"
            );
        }
        // Up to date on every publish, so on every route event, like the pods' routes (judged
        // again only when a covering route or the map changed).
        let (remote_blocks, remote_blocks_checked) = match &self.config.remote_blocks {
            Some(rx) => {
                let map = Arc::clone(&rx.borrow());
                self.block_cache
                    .judge(&self.config.node_name, &map, &self.state)
            }
            None => Default::default(),
        };
        if !Arc::ptr_eq(&self.last.remote_blocks, &remote_blocks) {
            log_block_changes(&self.last.remote_blocks, &remote_blocks);
        }
        let peers = self.peers.as_ref().map(|rx| {
            let status = judge_peers(&rx.borrow(), &remote_blocks);
            verdicts.node.extend(status.node_problem.clone());
            log_peer_changes(self.last.peers.as_ref(), &status);
            status
        });
        let suppressed = log_changes(
            &self.last.verdicts,
            &verdicts,
            !self.last.synced,
            &mut self.logs,
            &self.metrics,
        );
        self.metrics.log_lines_suppressed(suppressed);
        let unanswered_connects = self.config.probes.as_ref().map_or_else(Vec::new, |p| {
            unanswered_connects(&verdicts.pods, &self.probe_reports, &p.networks)
        });
        let unanswered_dropped = unanswered_dropped(&verdicts.pods, &self.probe_reports);
        let snap = Arc::new(Snapshot {
            node: self.config.node_name.clone(),
            pod_source: expectation.source_name,
            kube: expectation.kube.clone(),
            synced: true,
            last_full_sync: self.last_full_sync,
            generation: self.last.generation + 1,
            links: self.state.links().count(),
            routes: self.state.route_count(),
            node_ips: self.state.node_addresses(),
            probe_targets: self
                .config
                .probes
                .as_ref()
                .map(|p| p.targets.clone())
                .unwrap_or_default(),
            control_plane: self.control_plane_status(&verdicts, &remote_blocks),
            verdicts,
            remote_blocks,
            remote_blocks_checked,
            unanswered_connects,
            unanswered_dropped,
            felix,
            service_targets: self
                .config
                .services
                .as_ref()
                .map_or_else(Vec::new, crate::model::ServiceTargets::status),
            peers,
        });
        if !self.last.synced {
            info!(
                pods = snap.verdicts.pods.len(),
                pods_with_problems = snap.verdicts.pods_with_problems(),
                routes = snap.routes,
                "initial sync complete"
            );
        }
        let pod_set = snap.pod_set();
        self.pod_set.send_if_modified(|current| {
            if **current == pod_set {
                false
            } else {
                *current = Arc::new(pod_set);
                true
            }
        });
        self.publisher.send_replace(Arc::clone(&snap));
        self.last = snap;
    }
}
