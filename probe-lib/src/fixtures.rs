//! Builders shared by the unit tests.

use ipnet::IpNet;

use crate::host::{HostDump, HostState, Link, MAIN_TABLE, OperState, Route, RouteKind, SCOPE_LINK};

/// An up veth named `name` whose peer (ifindex 2) lives in namespace `nsid`.
pub(crate) fn veth(index: u32, name: &str, nsid: i32) -> Link {
    Link {
        index,
        name: name.into(),
        kind: Some("veth".into()),
        admin_up: true,
        oper: OperState::Up,
        peer_netnsid: Some(nsid),
        peer_index: Some(2),
        master: None,
    }
}

/// A main-table unicast route as Calico's CNI adds it: `dst dev <oif> scope link proto boot`.
pub(crate) fn route(dst: &str, oif: Option<u32>) -> Route {
    Route {
        dst: dst.parse::<IpNet>().expect("test prefix"),
        table: MAIN_TABLE,
        kind: RouteKind::Unicast,
        scope: SCOPE_LINK,
        protocol: 3,
        oif,
        gateway: None,
        priority: 0,
        tos: 0,
    }
}

/// A host state holding just these routes and links.
pub(crate) fn host_with(routes: Vec<Route>, links: Vec<Link>) -> HostState {
    HostState::from_dump(
        HostDump {
            links,
            routes,
            ..HostDump::default()
        },
        Default::default(),
    )
}

/// A verdict on pod `ns/<interface>` with IP 10.244.0.1 on host interface `interface`, its
/// link present or not, with one problem per reason given.
pub(crate) fn pod_verdict(
    interface: &str,
    link: bool,
    reasons: &[crate::verdict::PodReason],
) -> crate::verdict::PodVerdict {
    use crate::verdict::{PodLink, PodProblem, PodVerdict};
    let ip = std::net::IpAddr::from([10, 244, 0, 1]);
    PodVerdict {
        pod: crate::model::ExpectedPod {
            id: crate::model::PodId {
                namespace: "ns".into(),
                name: interface.into(),
            },
            interface: interface.into(),
            ips: vec![ip],
            in_grace: false,
            meta: Default::default(),
            uid: String::new(),
        },
        link: link.then_some(PodLink {
            index: 5,
            netnsid: Some(1),
            peer_index: Some(2),
            admin_up: true,
        }),
        problems: reasons
            .iter()
            .map(|&reason| PodProblem {
                reason,
                ip: Some(ip),
                detail: String::new(),
            })
            .collect(),
        pod_side: None,
        probes: Vec::new(),
        gateways: Vec::new(),
        probes_skipped: None,
    }
}
