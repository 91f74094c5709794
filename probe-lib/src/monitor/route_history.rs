//! Host routes that appear and vanish while their pod lives: the incident's exact tell. The
//! CNI adds a new pod's route; felix, which never heard of the endpoint (its datastore watch
//! looping, calico#6032), removes it after its route-cleanup grace (~10 s) while the pod and its
//! interface stay. Judging only the present state, this looks like a pod that was never
//! wired; the history says someone took the route away.
//!
//! Bounded: one small record per expected pod, dropped with the pod.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::verdict::{PodReason, PodVerdict, VanishedRoute};

/// What is remembered of one pod's host route.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// The route was present at the last evaluation.
    routed: bool,
    /// When it last appeared (`None`: not seen present since the pod was first seen).
    appeared: Option<Instant>,
    /// Removals while the pod and its interface lived (saturating).
    removals: u32,
    /// How long the route lived before its last removal.
    last_lifetime: Option<Duration>,
}

/// Per-pod route history, keyed by the pod's host interface (unique per pod on a node, in
/// both pod sources).
#[derive(Debug, Default)]
pub(super) struct RouteHistory {
    pods: HashMap<String, Record>,
}

impl RouteHistory {
    /// Fold in one evaluation at `now`; returns the removals it saw (for the counter). A
    /// removal is a pod whose route was present at the previous evaluation and is missing
    /// now while its interface exists and is up (a link set down loses its routes by itself;
    /// a deleted pod leaves the expected pods, and its record with it).
    pub(super) fn observe(&mut self, pods: &[PodVerdict], now: Instant) -> u64 {
        let mut removed = 0;
        let mut next = HashMap::with_capacity(pods.len());
        for p in pods {
            if p.pod.interface.is_empty() || p.pod.ips.is_empty() {
                continue;
            }
            let has = |r: PodReason| p.problems.iter().any(|x| x.reason == r);
            let link_up = p.link.is_some() && !has(PodReason::InterfaceDown);
            let routed = link_up && !has(PodReason::RouteMissing);
            let old = self.pods.get(&p.pod.interface).copied();
            let mut rec = old.unwrap_or(Record {
                routed: false,
                appeared: None,
                removals: 0,
                last_lifetime: None,
            });
            if routed && !rec.routed {
                rec.appeared = Some(now);
            } else if !routed && rec.routed && link_up {
                rec.removals = rec.removals.saturating_add(1);
                rec.last_lifetime = rec.appeared.map(|a| now.saturating_duration_since(a));
                removed += 1;
            }
            rec.routed = routed;
            next.insert(p.pod.interface.clone(), rec);
        }
        self.pods = next;
        removed
    }

    /// The pods whose route was removed at least once while they lived, by interface.
    pub(super) fn vanished(&self) -> HashMap<&str, VanishedRoute> {
        self.pods
            .iter()
            .filter(|(_, r)| r.removals > 0)
            .map(|(k, r)| {
                (
                    k.as_str(),
                    VanishedRoute {
                        removals: r.removals,
                        last_lifetime: r.last_lifetime,
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::pod_verdict;

    fn verdict(link: bool, problems: &[PodReason]) -> PodVerdict {
        pod_verdict("calia", link, problems)
    }

    #[test]
    fn a_route_removed_while_the_pod_lives_is_remembered() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut h = RouteHistory::default();
        // Wired without a route at first (the CNI still working): no removal.
        assert_eq!(
            h.observe(&[verdict(true, &[PodReason::RouteMissing])], at(0)),
            0
        );
        assert_eq!(h.observe(&[verdict(true, &[])], at(1)), 0);
        assert!(h.vanished().is_empty());
        // Removed 10 s after it appeared.
        assert_eq!(
            h.observe(&[verdict(true, &[PodReason::RouteMissing])], at(11)),
            1
        );
        let v = h.vanished()["calia"];
        assert_eq!(v.removals, 1);
        assert_eq!(v.last_lifetime, Some(Duration::from_secs(10)));
        // Still missing: no second count; back and gone again: two.
        assert_eq!(
            h.observe(&[verdict(true, &[PodReason::RouteMissing])], at(12)),
            0
        );
        h.observe(&[verdict(true, &[])], at(13));
        assert_eq!(
            h.observe(&[verdict(true, &[PodReason::RouteMissing])], at(16)),
            1
        );
        let v = h.vanished()["calia"];
        assert_eq!(
            (v.removals, v.last_lifetime),
            (2, Some(Duration::from_secs(3)))
        );
        // The pod leaves: its record goes with it.
        h.observe(&[], at(17));
        assert!(h.pods.is_empty());
    }

    #[test]
    fn routes_lost_with_the_interface_are_not_removals() {
        let t0 = Instant::now();
        let mut h = RouteHistory::default();
        h.observe(&[verdict(true, &[])], t0);
        // Set down: the kernel flushed the route.
        let down = [PodReason::InterfaceDown, PodReason::RouteMissing];
        assert_eq!(h.observe(&[verdict(true, &down)], t0), 0);
        h.observe(&[verdict(true, &[])], t0);
        // Interface gone (the pod being torn down).
        assert_eq!(
            h.observe(&[verdict(false, &[PodReason::InterfaceMissing])], t0),
            0
        );
        assert!(h.vanished().is_empty());
    }
}
