//! Problem-change log lines: one per pod problem that appeared or cleared and per node
//! problem, within the rate limit of [`LogLimiter`].

use std::collections::HashMap;

use tracing::{info, warn};

use super::discipline::LogLimiter;
use crate::model::MonitorMetrics;
use crate::pods::ExpectedPod;
use crate::verdict::{PodProblem, Verdicts};

type ProblemKey<'a> = (&'a str, &'static str, Option<std::net::IpAddr>);

fn problem_set(v: &Verdicts) -> HashMap<ProblemKey<'_>, (&ExpectedPod, &PodProblem)> {
    v.pods
        .iter()
        .flat_map(|pv| {
            pv.problems.iter().map(move |p| {
                (
                    (pv.pod.interface.as_str(), p.reason.as_str(), p.ip),
                    (&pv.pod, p),
                )
            })
        })
        .collect()
}

fn display_ip(ip: Option<std::net::IpAddr>) -> String {
    ip.map(|i| i.to_string()).unwrap_or_default()
}

/// One log line per problem that appeared or cleared, and per node problem, as far as
/// `limit` allows; returns how many lines it held back.
pub(super) fn log_changes(
    before: &Verdicts,
    after: &Verdicts,
    initial: bool,
    limit: &mut LogLimiter,
    metrics: &MonitorMetrics,
) -> u64 {
    let old = problem_set(before);
    let new = problem_set(after);
    let mut suppressed = 0;
    let mut allow = || {
        let ok = limit.allow();
        suppressed += u64::from(!ok);
        ok
    };
    for (key, (pod, p)) in &new {
        if old.contains_key(key) {
            continue;
        }
        // Counted always, logged within the rate limit: flaps stay visible either way.
        metrics.problem_raised(p.reason);
        if allow() {
            warn!(
                namespace = %pod.id.namespace, pod = %pod.id.name, interface = %pod.interface,
                ip = %display_ip(p.ip), reason = p.reason.as_str(), detail = %p.detail,
                "pod wiring problem"
            );
        }
    }
    if !initial {
        for (key, (pod, p)) in &old {
            if !new.contains_key(key) && allow() {
                info!(
                    namespace = %pod.id.namespace, pod = %pod.id.name, interface = %pod.interface,
                    ip = %display_ip(p.ip), reason = p.reason.as_str(), "pod wiring problem cleared"
                );
            }
        }
    }
    for p in &after.node {
        if !before.node.contains(p) && allow() {
            warn!(reason = p.reason.as_str(), detail = %p.detail, "node problem");
        }
    }
    for p in &before.node {
        if !after.node.contains(p) && allow() {
            info!(reason = p.reason.as_str(), detail = %p.detail, "node problem cleared");
        }
    }
    suppressed
}
