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
