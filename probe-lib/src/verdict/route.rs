//! The CNI-agnostic core check: the kernel's own answer for a pod IP. Whatever the CNI, the
//! route the kernel picks for the pod's IP (`ip route get <podIP>`, derived from the mirrored
//! main table by [`HostState::route_lookup`]) must leave through the pod's host-side interface,
//! or through the bridge that interface is a port of.

use std::net::IpAddr;

use super::{PodProblem, PodReason};
use crate::host::{HostState, Link, Route, RouteKind};

/// The route problem of one pod IP, given the pod's link (if it exists); `None` when the kernel
/// would deliver the IP to the pod's interface (or its bridge).
///
/// - no route, only the default route, or only a covering non-unicast aggregate (Calico's IPAM
///   blackhole block) → `route_missing`: nothing routes to this pod;
/// - a host route (`/32`, `/128`) that is a blackhole, unreachable or prohibit →
///   `route_not_unicast`;
/// - a unicast route (host or a covering subnet) out of another device → `route_wrong_interface`.
pub(super) fn route_problem(
    ip: IpAddr,
    link: Option<&Link>,
    host: &HostState,
) -> Option<PodProblem> {
    let problem = |reason, detail| {
        Some(PodProblem {
            reason,
            ip: Some(ip),
            detail,
        })
    };
    let Some(route) = host.route_lookup(ip) else {
        return problem(
            PodReason::RouteMissing,
            format!("no route for {ip} in the main table"),
        );
    };
    let unicast = route.kind == RouteKind::Unicast;
    if unicast && link.is_some_and(|l| reaches(route, l)) {
        return None;
    }
    let host_prefix = route.dst.prefix_len() == route.dst.max_prefix_len();
    if host_prefix && !unicast {
        return problem(
            PodReason::RouteNotUnicast,
            format!("route for {} is {}", route.dst, route.kind.as_str()),
        );
    }
    if !host_prefix && (!unicast || route.dst.prefix_len() == 0) {
        return problem(
            PodReason::RouteMissing,
            format!(
                "no route for {ip}: the kernel would use {} ({})",
                route.dst,
                describe(route, host)
            ),
        );
    }
    problem(
        PodReason::RouteWrongInterface,
        format!("route for {} goes via {}", route.dst, via(route, host)),
    )
}

/// The route leaves through the pod's link or through the bridge it is a port of.
pub(super) fn reaches(route: &Route, link: &Link) -> bool {
    route
        .oif
        .is_some_and(|oif| oif == link.index || Some(oif) == link.master)
}

/// A link's name for messages, or its index when the link is not (or no longer) known.
pub(super) fn link_name(host: &HostState, index: u32) -> String {
    host.link(index)
        .map_or_else(|| format!("ifindex {index}"), |l| l.name.clone())
}

fn via(route: &Route, host: &HostState) -> String {
    route
        .oif
        .map(|i| link_name(host, i))
        .or_else(|| route.gateway.map(|g| format!("gateway {g}")))
        .unwrap_or_else(|| "a multipath route".to_owned())
}

fn describe(route: &Route, host: &HostState) -> String {
    if route.kind == RouteKind::Unicast {
        format!("via {}", via(route, host))
    } else {
        route.kind.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    use crate::fixtures::host_with as host;

    fn reason(ip: &str, link: Option<&Link>, h: &HostState) -> Option<&'static str> {
        route_problem(ip.parse().unwrap(), link, h).map(|p| p.reason.as_str())
    }

    fn bridge(index: u32) -> Link {
        let mut b = fixtures::veth(index, "cni0", 0);
        b.kind = Some("bridge".into());
        b.peer_netnsid = None;
        b.peer_index = None;
        b
    }

    #[test]
    fn bridge_subnet_reaches_its_ports_only() {
        let mut port = fixtures::veth(10, "veth1", 1);
        port.master = Some(4);
        let other = fixtures::veth(11, "veth2", 2);
        let h = host(
            vec![
                fixtures::route("10.244.1.0/24", Some(4)),
                fixtures::route("0.0.0.0/0", Some(2)),
            ],
            vec![bridge(4), port.clone(), other.clone()],
        );
        assert_eq!(reason("10.244.1.5", Some(&port), &h), None);
        // Not a port of the bridge: the kernel sends the IP to the bridge, not to this veth.
        assert_eq!(
            reason("10.244.1.6", Some(&other), &h),
            Some("route_wrong_interface")
        );
        // Outside the subnet only the default route answers: no route to the pod.
        let p = route_problem("10.244.2.5".parse().unwrap(), Some(&port), &h).unwrap();
        assert_eq!(p.reason, PodReason::RouteMissing);
        assert!(p.detail.contains("0.0.0.0/0"), "{}", p.detail);
    }

    #[test]
    fn host_routes_shadow_the_subnet_and_aggregates_do_not_count() {
        let mut port = fixtures::veth(10, "veth1", 1);
        port.master = Some(4);
        let wrong = fixtures::route("10.244.1.5/32", Some(11));
        let mut blackhole = fixtures::route("10.244.1.6/32", None);
        blackhole.kind = RouteKind::Blackhole;
        let mut block = fixtures::route("10.244.2.0/26", None);
        block.kind = RouteKind::Unreachable;
        let h = host(
            vec![
                fixtures::route("10.244.1.0/24", Some(4)),
                wrong,
                blackhole,
                block,
            ],
            vec![bridge(4), port.clone(), fixtures::veth(11, "veth2", 2)],
        );
        assert_eq!(
            reason("10.244.1.5", Some(&port), &h),
            Some("route_wrong_interface")
        );
        assert_eq!(
            reason("10.244.1.6", Some(&port), &h),
            Some("route_not_unicast")
        );
        assert_eq!(reason("10.244.1.7", Some(&port), &h), None);
        assert_eq!(reason("10.244.2.1", Some(&port), &h), Some("route_missing"));
        assert_eq!(reason("10.244.3.1", Some(&port), &h), Some("route_missing"));
        // Without the pod's link, even the right-looking subnet is not the pod's.
        assert_eq!(
            reason("10.244.1.7", None, &h),
            Some("route_wrong_interface")
        );
    }
}
