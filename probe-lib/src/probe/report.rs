//! What the prober knows about one pod after its latest round: the pod-side wiring seen inside
//! its namespace and the history of every probed destination. Plain data, sent to the monitor.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::outcome::{Observation, ProbeResult};
use super::target::{Direction, Protocol};
use super::unanswered::UnansweredDest;

/// The pod's own side of its wiring, read inside its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PodSide {
    /// The pod's end of the veth (`eth0`) is up.
    pub interface_up: bool,
    /// A default IPv4 route exists; `None` when the pod has no IPv4 address.
    pub default_route_v4: Option<bool>,
    /// A default IPv6 route exists; `None` when the pod has no IPv6 address.
    pub default_route_v6: Option<bool>,
    /// The MTU of the pod's end of the veth (`ip link show eth0`), if the kernel said: what
    /// the path-MTU probe is sized to.
    pub mtu: Option<u32>,
}

impl PodSide {
    /// Interface up and every default route the pod needs present.
    pub fn is_healthy(&self) -> bool {
        self.interface_up
            && self.default_route_v4 != Some(false)
            && self.default_route_v6 != Some(false)
    }
}

/// History of one probed destination of one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestState {
    /// Target name (label value).
    pub target: String,
    /// ICMP or TCP.
    pub protocol: Protocol,
    /// From the pod, or from the host to the pod.
    pub direction: Direction,
    /// The address probed.
    pub address: IpAddr,
    /// The TCP port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Latest result.
    pub last: ProbeResult,
    /// Latest round-trip time, if answered.
    #[serde(serialize_with = "secs")]
    pub rtt: Option<Duration>,
    /// Latest evidence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Failures in a row (0 after a success).
    pub consecutive_failures: u32,
    /// Probes sent so far.
    pub probes: u64,
    /// When the latest probe was recorded, as a process-wide increasing stamp: orders results
    /// across pods (has another pod probed this target since this one started failing?).
    #[serde(skip)]
    pub stamp: u64,
    /// Stamp of the first failure of the current run of failures.
    #[serde(skip)]
    pub failing_since: Option<u64>,
    /// Stamp of the first success of the current run of successes.
    #[serde(skip)]
    pub ok_since: Option<u64>,
}

/// Source of [`DestState::stamp`].
static STAMPS: AtomicU64 = AtomicU64::new(1);

/// A new stamp, later than every one before: taken when a round's probes are *sent*, so a probe
/// that waits for its timeout across a change is ordered by when it was sent.
pub fn next_stamp() -> u64 {
    STAMPS.fetch_add(1, Ordering::Relaxed)
}

fn secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl DestState {
    /// A destination not probed yet.
    pub fn new(
        target: &str,
        protocol: Protocol,
        direction: Direction,
        address: IpAddr,
        port: Option<u16>,
    ) -> Self {
        DestState {
            target: target.to_owned(),
            protocol,
            direction,
            address,
            port,
            last: ProbeResult::Ok,
            rtt: None,
            detail: None,
            consecutive_failures: 0,
            probes: 0,
            stamp: 0,
            failing_since: None,
            ok_since: None,
        }
    }

    /// Record one probe, sent now.
    pub fn record(&mut self, obs: &Observation) {
        self.record_at(obs, next_stamp());
    }

    /// Record one probe sent at `stamp` (from [`next_stamp`]).
    pub fn record_at(&mut self, obs: &Observation, stamp: u64) {
        self.last = obs.result;
        self.rtt = obs.rtt;
        self.detail.clone_from(&obs.detail);
        self.probes += 1;
        self.stamp = stamp;
        if obs.result.is_failure() {
            self.consecutive_failures += 1;
            self.failing_since.get_or_insert(self.stamp);
            self.ok_since = None;
        } else {
            self.consecutive_failures = 0;
            self.failing_since = None;
            self.ok_since.get_or_insert(self.stamp);
        }
    }

    /// Failing once `threshold` probes in a row failed.
    pub fn is_failing(&self, threshold: u32) -> bool {
        self.last.is_failure() && self.consecutive_failures >= threshold.max(1)
    }
}

/// One path-MTU probe: a don't-fragment echo as large as the pod's MTU, to its gateway.
#[derive(Debug, Clone)]
pub struct PathMtuObservation {
    /// The gateway it went to (the family's gateway probe's address).
    pub address: IpAddr,
    /// The pod's eth0 MTU it was sized to.
    pub mtu: u32,
    /// The packet's size in bytes (IP header included): the MTU, capped at 65,535.
    pub size: u32,
    /// What came back.
    pub observation: Observation,
}

/// History of the path-MTU probe of one family of one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathMtuState {
    /// The gateway probed.
    pub address: IpAddr,
    /// The pod's MTU at the latest probe.
    pub mtu: u32,
    /// The latest probe's packet size.
    pub size: u32,
    /// Latest result.
    pub last: ProbeResult,
    /// Latest evidence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Failures in a row (0 after a success).
    pub consecutive_failures: u32,
}

impl PathMtuState {
    /// The state after `obs`, following `prev` (the same family's state, if any).
    pub fn next(prev: Option<&PathMtuState>, obs: &PathMtuObservation) -> PathMtuState {
        let failed = obs.observation.result.is_failure();
        PathMtuState {
            address: obs.address,
            mtu: obs.mtu,
            size: obs.size,
            last: obs.observation.result,
            detail: obs.observation.detail.clone(),
            consecutive_failures: match (failed, prev) {
                (false, _) => 0,
                (true, Some(p)) => p.consecutive_failures.saturating_add(1),
                (true, None) => 1,
            },
        }
    }

    /// Failing once `threshold` probes in a row failed.
    pub fn is_failing(&self, threshold: u32) -> bool {
        self.last.is_failure() && self.consecutive_failures >= threshold.max(1)
    }
}

/// One pod's probe state after its latest round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodProbes {
    /// The pod's host interface (its key).
    pub interface: String,
    /// Seen inside the pod's namespace; `None` if the namespace could not be entered.
    pub pod_side: Option<PodSide>,
    /// Every destination probed for this pod.
    pub dests: Vec<DestState>,
    /// Why the pod's namespace could not be used, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Destinations the pod keeps failing to connect to (its own `SYN_SENT` sockets).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unanswered: Vec<UnansweredDest>,
    /// Unanswered destinations not kept: over the per-pod or per-node bound.
    #[serde(skip_serializing_if = "is_zero")]
    pub unanswered_dropped: u32,
    /// What the pod's client software says (Kong's `/status`), read while it has
    /// unanswered destinations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_hint: Option<super::hints::Hint>,
    /// The path-MTU probe, per family (sent in rounds that read the pod's side).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub path_mtu: Vec<PathMtuState>,
    /// Not probed at all (it or its namespace opted out), and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<crate::model::ProbeSkip>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_failures_and_threshold() {
        let mut d = DestState::new(
            "t",
            Protocol::Icmp,
            Direction::PodToTarget,
            [1, 2, 3, 4].into(),
            None,
        );
        let fail = Observation::failed(ProbeResult::Timeout, "no reply");
        let ok = Observation::answered(ProbeResult::Ok, Duration::from_micros(80));
        d.record(&fail);
        assert!(!d.is_failing(2), "one lost packet pages nobody");
        d.record(&fail);
        assert!(d.is_failing(2));
        d.record(&ok);
        assert!(!d.is_failing(2));
        assert_eq!(d.consecutive_failures, 0);
        assert_eq!(d.probes, 3);
        d.record(&Observation::answered(
            ProbeResult::Refused,
            Duration::from_micros(50),
        ));
        assert!(!d.is_failing(1), "refused means the path works");
    }
}
