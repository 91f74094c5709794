//! Probe results into verdicts: pod-side wiring problems, which pods fail which targets and
//! why, and node-wide target failures reported once instead of once per pod.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde::Serialize;

use super::{NodeProblem, NodeReason, PodProblem, PodReason, PodVerdict};
use crate::probe::report::{DestState, PodProbes};
use crate::probe::target::{Direction, GATEWAY_TARGET};

/// Probe results and how to judge them.
#[derive(Debug, Clone, Copy)]
pub struct ProbeView<'a> {
    /// Latest round per pod, by host interface.
    pub reports: &'a HashMap<String, PodProbes>,
    /// Consecutive failures before a destination counts as failing.
    pub failure_threshold: u32,
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
    /// Why it fails, when the node can tell (a wiring reason, `forwarding_disabled`,
    /// `gateway_unreachable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<&'static str>,
}

impl TargetVerdict {
    /// Failing and not explained at node level: a pod alarm.
    pub fn is_pod_failure(&self) -> bool {
        self.failing && !self.node_wide
    }
}

/// Add pod-side problems, target verdicts and node-wide target failures.
pub(super) fn judge(pods: &mut [PodVerdict], view: &ProbeView<'_>, node: &mut Vec<NodeProblem>) {
    for pv in pods.iter_mut() {
        let Some(report) = view.reports.get(&pv.pod.interface) else {
            continue;
        };
        pv.pod_side = report.pod_side;
        if let Some(side) = report.pod_side {
            // The host side down takes the pod's carrier with it: said once, on the host side.
            let host_down = pv
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
                diagnosis: None,
            })
            .collect();
    }
    for target in node_wide_failures(pods) {
        for pv in pods.iter_mut() {
            for t in pv.probes.iter_mut().filter(|t| t.state.target == target) {
                if t.failing {
                    t.node_wide = true;
                    t.diagnosis = Some(NodeReason::TargetUnreachable.as_str());
                }
            }
        }
        node.push(NodeProblem {
            reason: NodeReason::TargetUnreachable,
            detail: target,
        });
    }
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
        for t in pv.probes.iter_mut().filter(|t| t.is_pod_failure()) {
            let v4 = t.state.address.is_ipv4();
            if (v4 && off_v4) || (!v4 && off_v6) {
                t.node_wide = true;
                t.diagnosis = Some(NodeReason::ForwardingDisabled.as_str());
            } else {
                t.diagnosis = diagnose(t, &problems, gateway_failing);
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
                    let mut gw = p
                        .probes
                        .iter()
                        .filter(|t| t.state.target == GATEWAY_TARGET)
                        .peekable();
                    gw.peek().is_some() && gw.all(|t| !t.failing)
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
