use std::collections::HashSet;

use ipnet::IpNet;

use super::*;
use crate::host::{HostDump, HostState, Link, Netconf, OperState, Route, RouteKind};
use crate::pods::{ExpectedPod, PodId};

const POD_A: &str = "caliaaaaaaaaaaa";
const POD_B: &str = "calibbbbbbbbbbb";

/// A node with two wired pods: A (10.244.0.2, fd00::2) on ifindex 10, B (10.244.0.3) on 11,
/// Calico's IPAM blackhole for 10.244.0.0/26, forwarding and proxy ARP on everywhere.
struct Node {
    dump: HostDump,
}

fn veth(index: u32, name: &str) -> Link {
    crate::fixtures::veth(index, name, index as i32)
}

fn route(dst: &str, oif: Option<u32>, kind: RouteKind) -> Route {
    Route {
        kind,
        ..crate::fixtures::route(dst, oif)
    }
}

fn netconf(family: Family, scope: NetconfScope, fwd: bool, proxy: bool) -> Netconf {
    Netconf {
        family,
        scope,
        forwarding: Some(fwd),
        proxy_neigh: Some(proxy),
    }
}

impl Node {
    fn healthy() -> Self {
        let mut dump = HostDump {
            links: vec![veth(10, POD_A), veth(11, POD_B)],
            routes: vec![
                route("10.244.0.2/32", Some(10), RouteKind::Unicast),
                route("fd00::2/128", Some(10), RouteKind::Unicast),
                route("10.244.0.3/32", Some(11), RouteKind::Unicast),
                route("10.244.0.0/26", None, RouteKind::Blackhole),
            ],
            ..HostDump::default()
        };
        for f in [Family::Ipv4, Family::Ipv6] {
            dump.netconf
                .push(netconf(f, NetconfScope::All, true, false));
            for i in [10, 11] {
                dump.netconf
                    .push(netconf(f, NetconfScope::Interface(i), true, true));
            }
        }
        Node { dump }
    }

    fn pods() -> Vec<ExpectedPod> {
        vec![
            ExpectedPod {
                id: PodId {
                    namespace: "ns".into(),
                    name: "a".into(),
                },
                interface: POD_A.into(),
                ips: vec!["10.244.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
                in_grace: false,
                meta: Default::default(),
                uid: String::new(),
            },
            ExpectedPod {
                id: PodId {
                    namespace: "ns".into(),
                    name: "b".into(),
                },
                interface: POD_B.into(),
                ips: vec!["10.244.0.3".parse().unwrap()],
                in_grace: false,
                meta: Default::default(),
                uid: String::new(),
            },
        ]
    }

    fn without_route(mut self, dst: &str) -> Self {
        let dst: IpNet = dst.parse().unwrap();
        self.dump.routes.retain(|r| r.dst != dst);
        self
    }

    fn with_route(mut self, r: Route) -> Self {
        self.dump.routes.push(r);
        self
    }

    fn with_link(mut self, f: impl FnOnce(&mut Link), name: &str) -> Self {
        f(self.dump.links.iter_mut().find(|l| l.name == name).unwrap());
        self
    }

    fn with_netconf(mut self, nc: Netconf) -> Self {
        self.dump.netconf.push(nc);
        self
    }

    fn evaluate(self) -> Verdicts {
        evaluate(
            &Cni::Calico,
            &Node::pods(),
            &HostState::from_dump(self.dump, Default::default()),
            None,
        )
    }
}

/// `(pod name, reason, ip)` triples, for compact assertions.
fn problems(v: &Verdicts) -> Vec<(String, &'static str, Option<String>)> {
    v.pods
        .iter()
        .flat_map(|p| {
            p.problems.iter().map(|pr| {
                (
                    p.pod.id.name.clone(),
                    pr.reason.as_str(),
                    pr.ip.map(|i| i.to_string()),
                )
            })
        })
        .collect()
}

fn one(pod: &str, reason: &'static str, ip: &str) -> Vec<(String, &'static str, Option<String>)> {
    vec![(pod.to_owned(), reason, Some(ip.to_owned()))]
}

#[test]
fn healthy_node_has_no_problems() {
    let v = Node::healthy().evaluate();
    assert_eq!(v.pods.len(), 2);
    assert!(v.pods.iter().all(PodVerdict::is_healthy));
    assert!(v.node.is_empty());
    assert_eq!(v.pods_with_problems(), 0);
}

#[test]
fn route_missing_is_reported_for_exactly_that_ip() {
    let v = Node::healthy().without_route("10.244.0.3/32").evaluate();
    assert_eq!(problems(&v), one("b", "route_missing", "10.244.0.3"));
    assert_eq!(v.pods_with_problems(), 1);
    let v = Node::healthy().without_route("fd00::2/128").evaluate();
    assert_eq!(problems(&v), one("a", "route_missing", "fd00::2"));
}

#[test]
fn ipam_blackhole_block_does_not_count_as_the_pod_route() {
    // The /26 blackhole covers the pod IP, but only a /32 via the pod's interface wires it.
    let v = Node::healthy().without_route("10.244.0.2/32").evaluate();
    assert_eq!(problems(&v), one("a", "route_missing", "10.244.0.2"));
}

#[test]
fn route_via_another_interface() {
    let v = Node::healthy()
        .without_route("10.244.0.3/32")
        .with_route(route("10.244.0.3/32", Some(10), RouteKind::Unicast))
        .evaluate();
    assert_eq!(
        problems(&v),
        one("b", "route_wrong_interface", "10.244.0.3")
    );
    assert!(v.pods[1].problems[0].detail.contains(POD_A));
}

#[test]
fn route_via_a_gateway_is_the_wrong_interface() {
    let mut r = route("10.244.0.3/32", None, RouteKind::Unicast);
    r.gateway = Some("192.0.2.1".parse().unwrap());
    let v = Node::healthy()
        .without_route("10.244.0.3/32")
        .with_route(r)
        .evaluate();
    assert_eq!(
        problems(&v),
        one("b", "route_wrong_interface", "10.244.0.3")
    );
    assert!(v.pods[1].problems[0].detail.contains("gateway 192.0.2.1"));
}

#[test]
fn non_unicast_routes() {
    for kind in [
        RouteKind::Blackhole,
        RouteKind::Unreachable,
        RouteKind::Prohibit,
    ] {
        let v = Node::healthy()
            .without_route("10.244.0.3/32")
            .with_route(route("10.244.0.3/32", None, kind))
            .evaluate();
        assert_eq!(
            problems(&v),
            one("b", "route_not_unicast", "10.244.0.3"),
            "{kind:?}"
        );
        assert!(v.pods[1].problems[0].detail.contains(kind.as_str()));
    }
}

#[test]
fn lowest_metric_route_wins() {
    let mut worse = route("10.244.0.3/32", None, RouteKind::Blackhole);
    worse.priority = 100;
    let v = Node::healthy().with_route(worse.clone()).evaluate();
    assert!(problems(&v).is_empty());
    // And the other way round: a preferred blackhole shadows the good route.
    let mut better = worse;
    better.priority = 0;
    let mut good = route("10.244.0.3/32", Some(11), RouteKind::Unicast);
    good.priority = 10;
    let v = Node::healthy()
        .without_route("10.244.0.3/32")
        .with_route(good)
        .with_route(better)
        .evaluate();
    assert_eq!(problems(&v), one("b", "route_not_unicast", "10.244.0.3"));
}

#[test]
fn interface_without_carrier_is_down_for_every_ip() {
    let v = Node::healthy()
        .with_link(|l| l.oper = OperState::LowerLayerDown, POD_A)
        .evaluate();
    assert_eq!(
        problems(&v),
        vec![
            ("a".into(), "interface_down", Some("10.244.0.2".into())),
            ("a".into(), "interface_down", Some("fd00::2".into())),
        ]
    );
    assert!(v.pods[0].problems[0].detail.contains("no carrier"));
}

#[test]
fn interface_admin_down() {
    let v = Node::healthy()
        .with_link(|l| l.admin_up = false, POD_B)
        .evaluate();
    assert_eq!(problems(&v), one("b", "interface_down", "10.244.0.3"));
    assert!(
        v.pods[1].problems[0]
            .detail
            .contains("administratively down")
    );
}

#[test]
fn interface_down_without_known_ips() {
    let mut pods = Node::pods();
    pods[1].ips.clear();
    let n = Node::healthy().with_link(|l| l.admin_up = false, POD_B);
    let v = evaluate(
        &Cni::Calico,
        &pods,
        &HostState::from_dump(n.dump, Default::default()),
        None,
    );
    assert_eq!(problems(&v), vec![("b".into(), "interface_down", None)]);
}

#[test]
fn interface_missing_implies_no_route_but_reports_capture() {
    let mut n = Node::healthy();
    n.dump.links.retain(|l| l.name != POD_B);
    n.dump.routes.retain(|r| r.oif != Some(11));
    let v = n.evaluate();
    assert_eq!(problems(&v), one("b", "interface_missing", "10.244.0.3"));

    // The IP's route still points at another pod's interface (IP reused).
    let mut n = Node::healthy();
    n.dump.links.retain(|l| l.name != POD_B);
    n.dump.routes.retain(|r| r.oif != Some(11));
    let v = n
        .with_route(route("10.244.0.3/32", Some(10), RouteKind::Unicast))
        .evaluate();
    assert_eq!(
        problems(&v),
        vec![
            ("b".into(), "interface_missing", Some("10.244.0.3".into())),
            (
                "b".into(),
                "route_wrong_interface",
                Some("10.244.0.3".into())
            ),
        ]
    );
}

#[test]
fn proxy_arp_disabled_concerns_ipv4_only() {
    let v = Node::healthy()
        .with_netconf(netconf(
            Family::Ipv4,
            NetconfScope::Interface(10),
            true,
            false,
        ))
        .evaluate();
    assert_eq!(problems(&v), one("a", "proxy_arp_disabled", "10.244.0.2"));
    // proxy_ndp off is not a wiring fault: IPv6 pods route via the host's link-local.
    let v = Node::healthy()
        .with_netconf(netconf(
            Family::Ipv6,
            NetconfScope::Interface(10),
            true,
            false,
        ))
        .evaluate();
    assert!(problems(&v).is_empty());
}

#[test]
fn unknown_netconf_is_not_a_problem() {
    let mut n = Node::healthy();
    n.dump.netconf.clear();
    assert!(problems(&n.evaluate()).is_empty());
}

#[test]
fn interface_forwarding_off_is_a_pod_problem() {
    let v = Node::healthy()
        .with_netconf(netconf(
            Family::Ipv4,
            NetconfScope::Interface(11),
            false,
            true,
        ))
        .evaluate();
    assert_eq!(problems(&v), one("b", "forwarding_disabled", "10.244.0.3"));
    assert!(v.node.is_empty());
}

#[test]
fn node_forwarding_off_without_pods_is_no_problem() {
    let mut n = Node::healthy();
    for nc in &mut n.dump.netconf {
        nc.forwarding = Some(false);
    }
    let state = HostState::from_dump(n.dump, Default::default());
    let v = evaluate(&Cni::Calico, &[], &state, None);
    assert!(v.node.is_empty(), "{:?}", v.node);
    // With pods, the same node has the problem (the test can fail).
    assert!(
        !evaluate(&Cni::Calico, &Node::pods(), &state, None)
            .node
            .is_empty()
    );
}

#[test]
fn node_forwarding_off_is_one_node_problem_not_n_pod_problems() {
    // Writing net.ipv4.ip_forward=0 turns every interface's forwarding off too.
    let mut n = Node::healthy();
    for nc in &mut n.dump.netconf {
        if nc.family == Family::Ipv4 {
            nc.forwarding = Some(false);
        }
    }
    let v = n.evaluate();
    assert!(problems(&v).is_empty(), "{:?}", problems(&v));
    assert_eq!(v.node.len(), 1);
    assert_eq!(v.node[0].reason.as_str(), "forwarding_disabled");
    assert_eq!(v.node[0].detail, "ipv4");
}

#[test]
fn ipv6_forwarding_matters_only_with_ipv6_pods() {
    let n = Node::healthy().with_netconf(netconf(Family::Ipv6, NetconfScope::All, false, false));
    let v = n.evaluate();
    assert_eq!(v.node.len(), 1);
    assert_eq!(v.node[0].detail, "ipv6");
    let n = Node::healthy().with_netconf(netconf(Family::Ipv6, NetconfScope::All, false, false));
    let mut pods = Node::pods();
    pods[0].ips.retain(IpAddr::is_ipv4);
    let v = evaluate(
        &Cni::Calico,
        &pods,
        &HostState::from_dump(n.dump, Default::default()),
        None,
    );
    assert!(v.node.is_empty());
}

#[test]
fn several_problems_on_one_pod() {
    let v = Node::healthy()
        .without_route("10.244.0.2/32")
        .with_netconf(netconf(
            Family::Ipv4,
            NetconfScope::Interface(10),
            true,
            false,
        ))
        .evaluate();
    assert_eq!(
        problems(&v),
        vec![
            ("a".into(), "route_missing", Some("10.244.0.2".into())),
            ("a".into(), "proxy_arp_disabled", Some("10.244.0.2".into())),
        ]
    );
    assert_eq!(v.pods_with_problems(), 1);
}

#[test]
fn reason_strings_are_distinct_snake_case() {
    let pod: Vec<_> = PodReason::ALL.iter().map(|r| r.as_str()).collect();
    let node: Vec<_> = NodeReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(pod.iter().collect::<HashSet<_>>().len(), pod.len());
    for s in pod.iter().chain(&node) {
        assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{s}");
    }
    let json = serde_json::to_string(&PodReason::RouteMissing).unwrap();
    assert_eq!(json, "\"route_missing\"");
}

#[test]
fn no_pods_no_verdicts() {
    let v = evaluate(&Cni::Calico, &[], &HostState::default(), None);
    assert!(v.pods.is_empty() && v.node.is_empty());
}
