//! Host wiring that belongs to no pod of this node: pod interfaces without a pod and pod routes
//! for IPs nobody here owns (e.g. left behind by a deleted pod, ready to capture a reused IP).

use std::collections::HashSet;
use std::net::IpAddr;

use super::NodeReason;
use crate::host::{HostState, RouteKind};
use crate::pods::ExpectedPod;

/// One orphan: what it is and a stable key (to age it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Orphan {
    /// `OrphanedRoute` or `OrphanedInterface`.
    pub reason: NodeReason,
    /// Human-readable: `10.244.0.9/32 via cali1234567890a`, or the interface name.
    pub detail: String,
}

/// Interfaces with `prefix` whose peer is in another namespace and that no expected pod uses,
/// and unicast host routes via such interfaces to IPs not in `owned_ips` (every IP the API gives
/// a pod here, terminating pods included).
pub fn find_orphans(
    pods: &[ExpectedPod],
    owned_ips: &HashSet<IpAddr>,
    host: &HostState,
    prefix: &str,
) -> Vec<Orphan> {
    let used: HashSet<&str> = pods.iter().map(|p| p.interface.as_str()).collect();
    let mut out: Vec<Orphan> = host
        .links()
        .filter(|l| l.name.starts_with(prefix) && l.is_veth_to_other_netns())
        .filter(|l| !used.contains(l.name.as_str()))
        .map(|l| Orphan {
            reason: NodeReason::OrphanedInterface,
            detail: l.name.clone(),
        })
        .collect();
    for r in host.routes() {
        let is_host_prefix = r.dst.prefix_len() == r.dst.max_prefix_len();
        let via = r.oif.and_then(|i| host.link(i));
        if let Some(link) = via
            && is_host_prefix
            && r.kind == RouteKind::Unicast
            && link.name.starts_with(prefix)
            && !owned_ips.contains(&r.dst.addr())
        {
            out.push(Orphan {
                reason: NodeReason::OrphanedRoute,
                detail: format!("{} via {}", r.dst, link.name),
            });
        }
    }
    out.sort_by(|a, b| (a.reason, &a.detail).cmp(&(b.reason, &b.detail)));
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::fixtures::{route, veth};
    use crate::host::HostDump;
    use crate::pods::PodId;

    #[test]
    fn finds_interfaces_and_routes_nobody_owns() {
        let host = HostState::from_dump(
            HostDump {
                links: vec![veth(5, "calia", 1), veth(6, "calib", 2), veth(7, "eth1", 3)],
                routes: vec![
                    route("10.244.0.2/32", Some(5)),
                    route("10.244.0.9/32", Some(5)),
                    route("10.244.0.3/32", Some(6)),
                    route("10.244.0.0/26", Some(5)),
                    route("192.0.2.0/24", Some(7)),
                ],
                ..HostDump::default()
            },
            HashMap::new(),
        );
        let pods = vec![ExpectedPod {
            id: PodId::default(),
            interface: "calia".into(),
            ips: vec!["10.244.0.2".parse().unwrap()],
            in_grace: false,
            meta: Default::default(),
            uid: String::new(),
        }];
        // 10.244.0.3 belongs to a terminating pod: owned, not an orphan.
        let owned: HashSet<IpAddr> = ["10.244.0.2", "10.244.0.3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let o = find_orphans(&pods, &owned, &host, "cali");
        assert_eq!(
            o,
            vec![
                Orphan {
                    reason: NodeReason::OrphanedRoute,
                    detail: "10.244.0.9/32 via calia".into()
                },
                Orphan {
                    reason: NodeReason::OrphanedInterface,
                    detail: "calib".into()
                },
            ]
        );
    }
}
