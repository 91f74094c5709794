//! Probe results into verdicts: pod-side wiring problems, which pods fail which targets and
//! why, and node-wide target failures reported once instead of once per pod.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde::Serialize;

use super::policy::{NETWORK_POLICY, NODE_TARGET_HINT, PolicyEngine, pod_hint};
use super::{NodeProblem, NodeReason, PodProblem, PodReason, PodVerdict};
use crate::probe::report::{DestState, PodProbes};
use crate::probe::target::{Direction, GATEWAY_TARGET, NODE_TARGET};

/// Probe results and how to judge them.
#[derive(Debug, Clone, Copy)]
pub struct ProbeView<'a> {
    /// Latest round per pod, by host interface.
    pub reports: &'a HashMap<String, PodProbes>,
    /// Consecutive failures before a destination counts as failing.
    pub failure_threshold: u32,
    /// The policy engine on this node, if any: a failure behind clean wiring may be a policy.
    pub policy_engine: Option<PolicyEngine>,
}

/// The verdict on one probed destination of one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetVerdict {
    /// The destination's history.
    #[serde(flatten)]
    pub state: DestState,
    /// Failed `failure_threshold` times in a row.
    pub failing: bool,
    /// Failing for a quorum of pods while their gateways answer: reported once, at node level
    /// (`target_unreachable`), not as a pod failure.
    pub node_wide: bool,
    /// Failing, but not reported yet: a target beyond the pod that no other pod reached all
    /// through this pod's failures, while some other pod has not probed it since they began
    /// (or is confirming its own failure) — it may turn out node-wide — or reaches it again
    /// since this pod last probed it — it may be back. Lasts at most about one probe interval.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
    /// Why it fails, when the node can tell (a wiring reason, `forwarding_disabled`,
    /// `gateway_unreachable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<&'static str>,
    /// What the diagnosis means and how to check it, when podnet can say more than a reason
    /// (a possible network or host policy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl TargetVerdict {
    /// Failing, not explained at node level and not pending: a pod alarm.
    pub fn is_pod_failure(&self) -> bool {
        self.failing && !self.node_wide && !self.pending
    }
}

/// Add pod-side problems, target verdicts and node-wide target failures.
pub(super) fn judge(pods: &mut [PodVerdict], view: &ProbeView<'_>, node: &mut Vec<NodeProblem>) {
    for pv in pods.iter_mut() {
        let Some(report) = view.reports.get(&pv.pod.interface) else {
            continue;
        };
        pv.pod_side = report.pod_side;
        pv.probes_skipped = report.skipped;
        if let Some(side) = report.pod_side {
            // The host side set down takes the pod's carrier with it: said once, on the host
            // side. (The pod's eth0 set down takes the host side's carrier instead: then both
            // are said, the pod side being the cause.)
            let host_down = pv.link.is_some_and(|l| !l.admin_up)
                && pv
                    .problems
                    .iter()
                    .any(|p| p.reason == PodReason::InterfaceDown);
            pv.problems.extend(
                pod_side_problems(&pv.pod.ips, side)
                    .into_iter()
                    .filter(|p| !(host_down && p.reason == PodReason::PodInterfaceDown)),
            );
        }
        pv.probes = report
            .dests
            .iter()
            .map(|d| TargetVerdict {
                state: d.clone(),
                failing: d.is_failing(view.failure_threshold),
                node_wide: false,
                pending: false,
                diagnosis: None,
                hint: None,
            })
            .collect();
        pv.problems.extend(super::path_mtu::path_mtu_problems(
            &pv.pod.ips,
            &report.path_mtu,
            &pv.probes,
            view.failure_threshold,
        ));
    }
    for target in node_wide_failures(pods) {
        for pv in pods.iter_mut() {
            for t in pv.probes.iter_mut().filter(|t| t.state.target == target) {
                if t.failing {
                    t.node_wide = true;
                    t.diagnosis = Some(NodeReason::TargetUnreachable.as_str());
                    if target == NODE_TARGET {
                        t.hint = Some(NODE_TARGET_HINT.to_owned());
                    }
                }
            }
        }
        node.push(NodeProblem {
            reason: NodeReason::TargetUnreachable,
            detail: target,
        });
    }
    mark_pending(pods);
    // Forwarding off on the node cuts every pod off: the kernel neither forwards nor answers
    // ARP for the gateway (proxy ARP needs forwarding) nor sends ICMP errors. One node
    // problem, not a pod alarm per pod and target.
    let forwarding_off = |v4: bool| {
        node.iter().any(|p| {
            p.reason == NodeReason::ForwardingDisabled
                && p.detail == if v4 { "ipv4" } else { "ipv6" }
        })
    };
    let (off_v4, off_v6) = (forwarding_off(true), forwarding_off(false));
    for pv in pods.iter_mut() {
        let gateway_failing = pv
            .probes
            .iter()
            .any(|t| t.state.target == GATEWAY_TARGET && t.failing);
        let problems = pv.problems.clone();
        let namespace = pv.pod.id.namespace.as_str();
        for t in pv.probes.iter_mut().filter(|t| t.is_pod_failure()) {
            let v4 = t.state.address.is_ipv4();
            if (v4 && off_v4) || (!v4 && off_v6) {
                t.node_wide = true;
                t.diagnosis = Some(NodeReason::ForwardingDisabled.as_str());
            } else {
                t.diagnosis = diagnose(t, &problems, gateway_failing);
                // Wiring clean, gateway answering, a policy engine enforcing: most likely a
                // policy, not the path.
                if let (None, Some(engine)) = (t.diagnosis, view.policy_engine)
                    && t.state.target != GATEWAY_TARGET
                {
                    t.diagnosis = Some(NETWORK_POLICY);
                    t.hint = Some(pod_hint(
                        engine,
                        &t.state.target,
                        t.state.direction,
                        namespace,
                    ));
                }
            }
        }
    }
}

fn pod_side_problems(ips: &[IpAddr], side: crate::probe::report::PodSide) -> Vec<PodProblem> {
    let mut out = Vec::new();
    if !side.interface_up {
        for &ip in ips {
            out.push(PodProblem {
                reason: PodReason::PodInterfaceDown,
                ip: Some(ip),
                detail: "the pod's eth0 is down inside its namespace".into(),
            });
        }
    }
    for &ip in ips {
        let has_default = if ip.is_ipv4() {
            side.default_route_v4
        } else {
            side.default_route_v6
        };
        if has_default == Some(false) {
            out.push(PodProblem {
                reason: PodReason::PodDefaultRouteMissing,
                ip: Some(ip),
                detail: format!(
                    "no default {} route inside the pod's namespace",
                    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
                ),
            });
        }
    }
    out
}

/// A target is failing node-wide when at least this share of the pods that can tell (they
/// probe it and their gateway answers) fail it ...
pub const NODE_WIDE_QUORUM: (usize, usize) = (2, 3);
/// ... and at least this many do.
pub const NODE_WIDE_MIN_PODS: usize = 2;

/// Targets (other than the gateway) failed by a quorum of the pods that probe them with a
/// healthy gateway: the target, or the path beyond the node, is broken.
///
/// A quorum, not "every pod": a pod answers for whatever it likes (the target's address on
/// its own loopback, a forged reply with NET_RAW), and one such pod must not turn a
/// node-wide failure into per-pod warnings. Two thirds: one pod cannot hide a failure of
/// the others once three pods probe the target. A quorum that is too low would call a
/// failure shared by most but not all pods (e.g. a NetworkPolicy denying most pods' egress)
/// node-wide; that still alerts, only at node level, which is why the quorum errs low.
fn node_wide_failures(pods: &[PodVerdict]) -> Vec<String> {
    let mut names: Vec<&str> = pods
        .iter()
        .flat_map(|p| &p.probes)
        .filter(|t| t.state.direction == Direction::PodToTarget && t.state.target != GATEWAY_TARGET)
        .map(|t| t.state.target.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    names.sort_unstable();
    names
        .into_iter()
        .filter(|name| {
            // Pods that probe the target and whose gateway answers: their verdict on the
            // target is about the path beyond the node.
            let fails: Vec<bool> = pods
                .iter()
                .filter(|p| p.probes.iter().any(|t| t.state.target == *name))
                .filter(|p| {
                    // (No gateway probe: it is switched off, or the pod skips it. The pod still
                    // tells, as it would if its gateway answered.)
                    p.probes
                        .iter()
                        .filter(|t| t.state.target == GATEWAY_TARGET)
                        .all(|t| !t.failing)
                })
                .map(|p| {
                    p.probes
                        .iter()
                        .any(|t| t.state.target == *name && t.failing)
                })
                .collect();
            let failing = fails.iter().filter(|f| **f).count();
            let (num, den) = NODE_WIDE_QUORUM;
            failing >= NODE_WIDE_MIN_PODS && failing * den >= fails.len() * num
        })
        .map(str::to_owned)
        .collect()
}

/// Hold back pod failures of targets beyond the pod that may yet turn out node-wide (see
/// [`TargetVerdict::pending`]). Pods are probed at different points of the interval: without
/// this, when a target goes down for everyone, each pod raised its own alarm until the last
/// one had failed and the node-level verdict formed.
fn mark_pending(pods: &mut [PodVerdict]) {
    let candidate = |t: &TargetVerdict| {
        t.state.direction == Direction::PodToTarget && t.state.target != GATEWAY_TARGET
    };
    // What every pod's latest result says about each target, gathered once (a pod failing a
    // target never counts as reaching it, so no pod needs to be left out of its own view).
    let mut seen: HashMap<&str, Reached> = HashMap::new();
    for t in pods.iter().flat_map(|p| &p.probes).filter(|t| candidate(t)) {
        let r = seen.entry(t.state.target.as_str()).or_default();
        match t.state.ok_since {
            Some(ok_since) if !t.state.last.is_failure() => {
                r.oks.push((ok_since, t.state.stamp));
                r.earliest_ok = r.earliest_ok.min(t.state.stamp);
            }
            _ => r.confirming |= !t.failing,
        }
    }
    for r in seen.values_mut() {
        r.oks.sort_unstable();
        let mut latest = 0;
        for (_, stamp) in &mut r.oks {
            latest = latest.max(*stamp);
            *stamp = latest; // now: the latest stamp of any pod whose successes began earlier
        }
    }
    let mut pending = Vec::new();
    for (i, pv) in pods.iter().enumerate() {
        for (k, t) in pv.probes.iter().enumerate() {
            if !candidate(t) || !t.failing || t.node_wide {
                continue;
            }
            let Some(r) = seen.get(t.state.target.as_str()) else {
                continue;
            };
            let since = t.state.failing_since.unwrap_or(0);
            // Another pod reached it all through this pod's failures: its run of successes
            // began no later than this pod's latest failure and goes on after the first.
            let began_before = r.oks.partition_point(|(s, _)| *s <= t.state.stamp);
            let reached_throughout = began_before > 0 && r.oks[began_before - 1].1 > since;
            // Another pod has not probed it since, or is confirming its own failure: the
            // target may be down for everyone.
            let undecided = r.confirming || r.earliest_ok < since;
            // Another pod reaches it again since this pod last probed it: it may be back.
            let stale = began_before < r.oks.len();
            if !reached_throughout && (undecided || stale) {
                pending.push((i, k));
            }
        }
    }
    for (i, k) in pending {
        pods[i].probes[k].pending = true;
    }
}

/// One target's latest results over all pods (for [`mark_pending`]).
#[derive(Debug)]
struct Reached {
    /// Some pod failed it and has not confirmed the failure yet.
    confirming: bool,
    /// The oldest latest-probe stamp among pods that reach it (`u64::MAX`: none).
    earliest_ok: u64,
    /// Pods that reach it: `(first success of their current run, latest probe stamp of any
    /// pod whose run began no later)`, by the first.
    oks: Vec<(u64, u64)>,
}

impl Default for Reached {
    fn default() -> Self {
        Reached {
            confirming: false,
            earliest_ok: u64::MAX,
            oks: Vec::new(),
        }
    }
}

fn diagnose(
    t: &TargetVerdict,
    problems: &[PodProblem],
    gateway_failing: bool,
) -> Option<&'static str> {
    let family_v4 = t.state.address.is_ipv4();
    // The pod's own wiring problem of the same family explains everything.
    if let Some(p) = problems
        .iter()
        .find(|p| p.ip.is_none_or(|ip| ip.is_ipv4() == family_v4))
    {
        return Some(p.reason.as_str());
    }
    if gateway_failing && t.state.target != GATEWAY_TARGET {
        return Some("gateway_unreachable");
    }
    None
}
