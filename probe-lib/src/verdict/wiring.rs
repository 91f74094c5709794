//! Per-pod wiring checks by CNI profile: the core check ([`super::route`]) and the link's state
//! for every CNI, then what that CNI, and only that CNI, guarantees:
//!
//! | profile       | on top of the core check                                               |
//! |---------------|------------------------------------------------------------------------|
//! | `calico`      | proxy ARP on the host veth (answers 169.254.1.1), forwarding on it     |
//! | `aws-vpc-cni` | forwarding on the host veth (the pod resolves 169.254.1.1 statically)  |
//! | `ptp`         | the host veth holds a gateway address of the pod's family, forwarding  |
//! | `bridge`      | the veth is a port of a bridge, the bridge is up and holds an address  |
//! | `generic`     | nothing                                                                |

use std::net::IpAddr;

use super::route::route_problem;
use super::{PodProblem, PodReason};
use crate::cni::Cni;
use crate::host::{Family, HostState, Link, NetconfScope, SCOPE_LINK};
use crate::pods::ExpectedPod;

/// Everything wrong with one pod's host-side wiring under `cni`'s profile.
pub(super) fn pod_problems(
    cni: &Cni,
    pod: &ExpectedPod,
    host: &HostState,
    node_forwarding_off: &dyn Fn(Family) -> bool,
) -> Vec<PodProblem> {
    let mut out = Vec::new();
    let problem = |reason, ip, detail: String| PodProblem { reason, ip, detail };
    if pod.interface.is_empty() {
        // No naming rule and no veth found for the IP: all that can be said is about the
        // routes. A route to a bridge may well reach the pod through a port we cannot name.
        let bridged = matches!(cni, Cni::Bridge | Cni::Generic);
        for &ip in &pod.ips {
            out.extend(route_problem(ip, None, host).filter(|p| {
                !(bridged
                    && p.reason == PodReason::RouteWrongInterface
                    && routed_to_a_bridge(ip, host))
            }));
        }
        return out;
    }
    let Some(link) = host.link_by_name(&pod.interface) else {
        if pod.in_grace {
            return out; // The CNI may still be wiring it.
        }
        out.push(problem(
            PodReason::InterfaceMissing,
            pod.ips.first().copied(),
            format!("no interface {}", pod.interface),
        ));
        // A route for the IP elsewhere (IP reuse) or a blackhole is worth saying too; a
        // missing route is implied by the missing interface.
        for &ip in &pod.ips {
            out.extend(
                route_problem(ip, None, host).filter(|p| p.reason != PodReason::RouteMissing),
            );
        }
        return out;
    };
    if !link.is_up() {
        let detail = if link.admin_up {
            format!("{} has no carrier (oper state {:?})", link.name, link.oper)
        } else {
            format!("{} is administratively down", link.name)
        };
        per_ip(&mut out, pod, PodReason::InterfaceDown, &detail);
    }
    let bridge = if *cni == Cni::Bridge {
        match bridge_problems(&mut out, pod, link, host) {
            Some(b) => Some(b),
            // Not on a bridge: the route to the bridge cannot reach the pod, which is the
            // port's fault, said once; other routes for the IP are still judged.
            None => {
                for &ip in &pod.ips {
                    out.extend(
                        route_problem(ip, Some(link), host)
                            .filter(|_| !routed_to_a_bridge(ip, host)),
                    );
                }
                return out;
            }
        }
    } else {
        None
    };
    for &ip in &pod.ips {
        out.extend(route_problem(ip, Some(link), host));
        let family = Family::of(&ip);
        let conf = host.netconf(family, NetconfScope::Interface(link.index));
        match cni {
            Cni::Calico if family == Family::Ipv4 && conf.proxy_neigh == Some(false) => {
                out.push(problem(
                    PodReason::ProxyArpDisabled,
                    Some(ip),
                    format!("net.ipv4.conf.{}.proxy_arp = 0", link.name),
                ));
            }
            Cni::Ptp if gateway_address(link, family, host).is_none() => {
                out.push(problem(
                    PodReason::GatewayAddressMissing,
                    Some(ip),
                    format!("{} holds no {} gateway address", link.name, family.as_str()),
                ));
            }
            _ => {}
        }
        // Routed CNIs forward the pod's traffic from its veth; bridge CNIs from the bridge.
        let forwarding_on = match (cni, bridge) {
            (Cni::Calico | Cni::AwsVpcCni | Cni::Ptp, _) => Some(link),
            (Cni::Bridge, Some(b)) => Some(b),
            _ => None,
        };
        if let Some(l) = forwarding_on {
            let conf = host.netconf(family, NetconfScope::Interface(l.index));
            if conf.forwarding == Some(false) && !node_forwarding_off(family) {
                out.push(problem(
                    PodReason::ForwardingDisabled,
                    Some(ip),
                    format!("net.{}.conf.{}.forwarding = 0", family.as_str(), l.name),
                ));
            }
        }
    }
    out
}

/// The bridge profile's own checks: the veth is a port of a bridge, which is up and holds an
/// address of each of the pod's families. Returns the bridge, `None` when the veth is on none
/// (reported as `veth_not_on_bridge`).
fn bridge_problems<'h>(
    out: &mut Vec<PodProblem>,
    pod: &ExpectedPod,
    link: &Link,
    host: &'h HostState,
) -> Option<&'h Link> {
    let Some(bridge) = link
        .master
        .and_then(|m| host.link(m))
        .filter(|b| b.is_bridge())
    else {
        per_ip(
            out,
            pod,
            PodReason::VethNotOnBridge,
            &format!("{} is not a port of any bridge", link.name),
        );
        return None;
    };
    // A bridge without carrier only means its ports are down, said on each port; the
    // bridge's own fault is being set down (which also drops the pod subnet's route).
    if !bridge.admin_up {
        per_ip(
            out,
            pod,
            PodReason::BridgeDown,
            &format!("bridge {} is administratively down", bridge.name),
        );
    }
    for &ip in &pod.ips {
        let family = Family::of(&ip);
        if gateway_address(bridge, family, host).is_none() {
            out.push(PodProblem {
                reason: PodReason::GatewayAddressMissing,
                ip: Some(ip),
                detail: format!(
                    "bridge {} holds no {} address",
                    bridge.name,
                    family.as_str()
                ),
            });
        }
    }
    Some(bridge)
}

fn per_ip(out: &mut Vec<PodProblem>, pod: &ExpectedPod, reason: PodReason, detail: &str) {
    if pod.ips.is_empty() {
        out.push(PodProblem {
            reason,
            ip: None,
            detail: detail.to_owned(),
        });
    }
    for &ip in &pod.ips {
        out.push(PodProblem {
            reason,
            ip: Some(ip),
            detail: detail.to_owned(),
        });
    }
}

fn routed_to_a_bridge(ip: IpAddr, host: &HostState) -> bool {
    host.route_lookup(ip)
        .and_then(|r| r.oif)
        .and_then(|i| host.link(i))
        .is_some_and(Link::is_bridge)
}

/// The gateway address `link` holds for `family`: a global one first (what bridge assigns),
/// else a link-scope one (ptp's, and an IPv6 link-local).
fn gateway_address(link: &Link, family: Family, host: &HostState) -> Option<IpAddr> {
    let mine = || {
        host.addresses()
            .iter()
            .filter(move |a| a.index == link.index && Family::of(&a.ip) == family)
    };
    mine()
        .filter(|a| a.is_global())
        .map(|a| a.ip)
        .min()
        .or_else(|| mine().filter(|a| a.scope == SCOPE_LINK).map(|a| a.ip).min())
}

/// The pod's gateways as the profile derives them from the host: ptp's are on the host veth,
/// bridge's on the bridge, a generic CNI's on whichever of the two holds addresses; empty for
/// CNIs whose gateway is fixed (the prober's default, 169.254.1.1).
pub(super) fn gateways(cni: &Cni, link: &Link, host: &HostState) -> Vec<IpAddr> {
    let master = || link.master.and_then(|m| host.link(m));
    let holder = match cni {
        Cni::Ptp => Some(link),
        Cni::Bridge => master(),
        Cni::Generic => {
            let has_v4 = |l: &Link| gateway_address(l, Family::Ipv4, host).is_some();
            Some(link)
                .filter(|l| has_v4(l))
                .or_else(|| master().filter(|b| has_v4(b)))
        }
        Cni::Calico | Cni::AwsVpcCni => None,
    };
    holder.map_or_else(Vec::new, |l| {
        [Family::Ipv4, Family::Ipv6]
            .into_iter()
            .filter_map(|f| gateway_address(l, f, host))
            .collect()
    })
}

#[cfg(test)]
#[path = "wiring_tests.rs"]
mod tests;
