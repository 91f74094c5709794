//! Folding a finished round into its pod's state: results, path-MTU states, unanswered
//! connects and their owners, then the report sent to the monitor.

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use super::*;
use crate::probe::driver::{PodNetwork, RoundResult};
use crate::probe::plan::PlannedProbe;
use crate::probe::report::{DestState, PathMtuObservation, PathMtuState};
use crate::probe::target::Direction;

/// Follow the path-MTU probes (sent only in rounds that read the pod's side): a family probed
/// this round gets its new state; one no longer probed (no gateway of that family planned, or
/// the pod's namespace could not be entered) is forgotten; otherwise the last state stays.
/// A lost large echo that is not [`conclusive`] leaves the family's state as it was.
fn record_path_mtu(
    states: &mut Vec<PathMtuState>,
    probes: &[PlannedProbe],
    result: &RoundResult,
    timeout: Duration,
) {
    let gateway_planned = |ip: &IpAddr| {
        result.error.is_none()
            && probes.iter().any(|p| {
                p.gateway
                    && p.direction == Direction::PodToTarget
                    && p.address.is_ipv4() == ip.is_ipv4()
            })
    };
    states.retain(|s| gateway_planned(&s.address));
    for obs in result
        .path_mtu
        .iter()
        .filter(|o| conclusive(o, probes, result, timeout))
    {
        let i = states
            .iter()
            .position(|s| s.address.is_ipv4() == obs.address.is_ipv4());
        let next = PathMtuState::next(i.map(|i| &states[i]), obs);
        match i {
            Some(i) => states[i] = next,
            None => states.push(next),
        }
    }
}

/// Whether a path-MTU result says something about the path. An answer always does. A lost
/// large echo does only when the same round's small echo to the same gateway was answered
/// within half the probe timeout: both go out together, and when the agent is starved of CPU
/// (a loaded node) replies wait in their sockets until the timers have fired, so the large
/// echo's "loss" is the agent's, not the path's. The small echo's RTT, measured the same way,
/// shows such a stall; on a real MTU mismatch it is answered in microseconds.
fn conclusive(
    obs: &PathMtuObservation,
    probes: &[PlannedProbe],
    result: &RoundResult,
    timeout: Duration,
) -> bool {
    !obs.observation.result.is_failure()
        || probes.iter().zip(&result.observations).any(|(p, o)| {
            p.gateway
                && p.direction == Direction::PodToTarget
                && p.address.ip() == obs.address
                && !o.result.is_failure()
                && o.rtt.is_some_and(|rtt| rtt <= timeout / 2)
        })
}

impl<N: PodNetwork> Prober<N> {
    pub(super) fn finish(&mut self, (key, probes, result, owners): Done) {
        let others: usize = self
            .pods
            .iter()
            .filter(|(k, _)| **k != key)
            .map(|(_, p)| p.state.unanswered.len())
            .sum();
        let Some(pod) = self.pods.get_mut(&key) else {
            return; // The pod went away while it was probed.
        };
        pod.tcp_retrans = result.tcp_retrans;
        if let Some(config) = self.config.unanswered {
            match &result.syn_sent {
                Some(dump) => {
                    let mut found = pod.unanswered.observe(dump, config);
                    let room = MAX_NODE_UNANSWERED.saturating_sub(others);
                    let over = found.len().saturating_sub(room);
                    found.truncate(room);
                    for d in &mut found {
                        d.owner = owners.get(&d.dest.ip()).cloned();
                    }
                    pod.state.unanswered = found;
                    pod.state.unanswered_dropped =
                        pod.unanswered.dropped.saturating_add(over as u32);
                    pod.state.client_hint = if pod.state.unanswered.is_empty() {
                        None
                    } else {
                        result.hint.clone()
                    };
                }
                None => {
                    pod.unanswered.reset();
                    pod.state.unanswered.clear();
                    pod.state.unanswered_dropped = 0;
                    pod.state.client_hint = None;
                }
            }
        }
        pod.in_flight = false;
        if pod.scope.skipped.is_some() {
            return; // Opted out while it was probed: the monitor was told.
        }
        let threshold = self.config.failure_threshold.max(1);
        match result.pod_side {
            Some(side) if !side.is_healthy() => {
                pod.pod_side_problems = pod.pod_side_problems.saturating_add(1);
                if pod.pod_side_problems >= threshold {
                    pod.state.pod_side = Some(side);
                }
            }
            Some(side) => {
                pod.pod_side_problems = 0;
                pod.state.pod_side = Some(side);
            }
            None if result.error.is_some() => {
                pod.pod_side_problems = 0;
                pod.state.pod_side = None;
            }
            None => {}
        }
        pod.state.error = result.error.as_ref().map(ToString::to_string);
        let mut dests = Vec::with_capacity(probes.len());
        for (p, obs) in probes.iter().zip(&result.observations) {
            let port = (p.address.port() != 0).then_some(p.address.port());
            let mut d = pod
                .state
                .dests
                .iter()
                .find(|d| d.target == p.target && d.address == p.address.ip() && d.port == port)
                .cloned()
                .unwrap_or_else(|| {
                    DestState::new(&p.target, p.protocol, p.direction, p.address.ip(), port)
                });
            d.record_at(obs, result.sent);
            self.metrics
                .observe(&p.target, p.protocol, p.direction, obs);
            dests.push(d);
        }
        pod.state.dests = dests;
        record_path_mtu(
            &mut pod.state.path_mtu,
            &probes,
            &result,
            self.config.timeout,
        );
        let unconfirmed = pod
            .state
            .dests
            .iter()
            .any(|d| d.last.is_failure() && d.consecutive_failures < threshold)
            || (pod.pod_side_problems > 0 && pod.pod_side_problems < threshold)
            || pod
                .state
                .path_mtu
                .iter()
                .any(|m| m.last.is_failure() && m.consecutive_failures < threshold);
        let now = Instant::now();
        let interval = self.config.interval.max(Duration::from_millis(100));
        while pod.regular <= now {
            pod.regular += interval;
        }
        pod.due = if unconfirmed {
            (now + self.config.recheck).min(pod.regular)
        } else {
            pod.regular
        };
        self.queue.insert((pod.due, key.clone()));
        debug!(interface = %key, unconfirmed, "probe round done");
        let _ = self.sink.send(pod.state.clone());
    }
}
