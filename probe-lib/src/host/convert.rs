//! netlink-packet-route messages to podnet's own types. Pure functions: a message that does
//! not describe something podnet can use yields `None`, never a panic.

use std::net::IpAddr;

use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use super::netconf::{KernelMessage, NetconfMessage};
use super::types::{Address, KernelEvent, Link, OperState, Route, RouteKind};

/// A link message as our [`Link`]; `None` without a name.
pub(crate) fn link(msg: &LinkMessage) -> Option<Link> {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        admin_up: msg.header.flags.contains(LinkFlags::Up),
        oper: OperState::Unknown,
        peer_netnsid: None,
        peer_index: None,
        master: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name.clone_from(n),
            LinkAttribute::OperState(s) => link.oper = oper_state(*s),
            LinkAttribute::LinkNetNsId(id) => link.peer_netnsid = Some(*id),
            LinkAttribute::Link(i) => link.peer_index = Some(*i),
            LinkAttribute::Controller(i) => link.master = Some(*i).filter(|i| *i != 0),
            LinkAttribute::LinkInfo(infos) => {
                link.kind = infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(kind_name(k)),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    (!link.name.is_empty() && link.index != 0).then_some(link)
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Veth => "veth".to_owned(),
        other => other.to_string(),
    }
}

fn oper_state(s: State) -> OperState {
    match s {
        State::Up => OperState::Up,
        State::Down => OperState::Down,
        State::LowerLayerDown => OperState::LowerLayerDown,
        State::Dormant => OperState::Dormant,
        State::Unknown => OperState::Unknown,
        _ => OperState::Other,
    }
}

fn ip(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// A route message as our [`Route`]; `None` for cache clones, non-IP families and malformed
/// prefixes.
pub(crate) fn route(msg: &RouteMessage) -> Option<Route> {
    let h = &msg.header;
    if h.flags.contains(RouteFlags::Cloned) {
        return None;
    }
    let unspecified = match h.address_family {
        AddressFamily::Inet => IpAddr::from([0u8; 4]),
        AddressFamily::Inet6 => IpAddr::from([0u16; 8]),
        _ => return None,
    };
    let mut dst = unspecified;
    let mut route = Route {
        dst: IpNet::from(unspecified),
        table: u32::from(h.table),
        kind: route_kind(h.kind),
        scope: u8::from(h.scope),
        protocol: u8::from(h.protocol),
        oif: None,
        gateway: None,
        priority: 0,
        tos: h.tos,
    };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = ip(a)?,
            RouteAttribute::Table(t) => route.table = *t,
            RouteAttribute::Oif(i) => route.oif = Some(*i),
            RouteAttribute::Priority(p) => route.priority = *p,
            RouteAttribute::Gateway(g) => route.gateway = ip(g),
            _ => {}
        }
    }
    if dst.is_ipv4() != unspecified.is_ipv4() {
        return None;
    }
    route.dst = IpNet::new(dst, h.destination_prefix_length).ok()?.trunc();
    Some(route)
}

fn route_kind(k: RouteType) -> RouteKind {
    match k {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::BlackHole => RouteKind::Blackhole,
        RouteType::Unreachable => RouteKind::Unreachable,
        RouteType::Prohibit => RouteKind::Prohibit,
        RouteType::Local => RouteKind::Local,
        _ => RouteKind::Other,
    }
}

/// An address message as our [`Address`]; `IFA_LOCAL` wins over `IFA_ADDRESS` (they differ
/// only on point-to-point links, where LOCAL is ours).
pub(crate) fn address(msg: &AddressMessage) -> Option<Address> {
    let mut local = None;
    let mut addr = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => addr = Some(*a),
            _ => {}
        }
    }
    let ip = local.or(addr)?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (msg.header.prefix_len <= max).then_some(Address {
        index: msg.header.index,
        ip,
        prefix_len: msg.header.prefix_len,
        scope: u8::from(msg.header.scope),
    })
}

/// A notification as a [`KernelEvent`]; `None` for messages podnet does not track.
pub(crate) fn event(msg: &KernelMessage) -> Option<KernelEvent> {
    match msg {
        KernelMessage::Route(m) => match m {
            // The bridge layer's own link messages (AF_BRIDGE) describe a port, not the
            // link: they lack the veth's kind and peer, and its RTM_DELLINK means "left the
            // bridge" (`ip link set X nomaster`), not "deleted". The AF_UNSPEC message that
            // accompanies every real change carries the truth.
            RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::DelLink(l)
                if l.header.interface_family == AddressFamily::Bridge =>
            {
                None
            }
            RouteNetlinkMessage::NewLink(l) => link(l).map(KernelEvent::LinkChanged),
            RouteNetlinkMessage::DelLink(l) => Some(KernelEvent::LinkRemoved(l.header.index)),
            RouteNetlinkMessage::NewRoute(r) => route(r).map(KernelEvent::RouteAdded),
            RouteNetlinkMessage::DelRoute(r) => route(r).map(KernelEvent::RouteRemoved),
            RouteNetlinkMessage::NewAddress(a) => address(a).map(KernelEvent::AddressAdded),
            RouteNetlinkMessage::DelAddress(a) => address(a).map(KernelEvent::AddressRemoved),
            _ => None,
        },
        KernelMessage::Netconf(NetconfMessage::New(nc)) => Some(KernelEvent::NetconfChanged(*nc)),
        KernelMessage::Netconf(_) => None,
        KernelMessage::Malformed(_) => Some(KernelEvent::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use rtnetlink::packet_route::route::{RouteProtocol, RouteScope};

    use super::*;
    use crate::host::types::{MAIN_TABLE, SCOPE_LINK};

    fn veth_msg() -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = 9;
        m.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
        m.attributes = vec![
            LinkAttribute::IfName("cali1234567890a".into()),
            LinkAttribute::OperState(State::Up),
            LinkAttribute::LinkNetNsId(3),
            LinkAttribute::Link(2),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
        ];
        m
    }

    #[test]
    fn bridge_layer_messages_are_not_link_changes() {
        let mut m = veth_msg();
        m.header.interface_family = AddressFamily::Bridge;
        let new = KernelMessage::Route(RouteNetlinkMessage::NewLink(m.clone()));
        let del = KernelMessage::Route(RouteNetlinkMessage::DelLink(m.clone()));
        assert_eq!(event(&new), None);
        assert_eq!(
            event(&del),
            None,
            "a port leaving its bridge is not a deleted link"
        );
        m.header.interface_family = AddressFamily::Unspec;
        let del = KernelMessage::Route(RouteNetlinkMessage::DelLink(m));
        assert_eq!(event(&del), Some(KernelEvent::LinkRemoved(9)));
    }

    #[test]
    fn bridge_port_has_its_master() {
        let mut m = veth_msg();
        assert_eq!(link(&m).unwrap().master, None);
        m.attributes.push(LinkAttribute::Controller(4));
        assert_eq!(link(&m).unwrap().master, Some(4));
        // `ip link set X nomaster` reports master 0 on some kernels: no master.
        m.attributes.pop();
        m.attributes.push(LinkAttribute::Controller(0));
        assert_eq!(link(&m).unwrap().master, None);
    }

    #[test]
    fn link_fields() {
        let l = link(&veth_msg()).unwrap();
        assert_eq!(l.index, 9);
        assert_eq!(l.name, "cali1234567890a");
        assert_eq!(l.kind.as_deref(), Some("veth"));
        assert!(l.admin_up && l.is_up());
        assert_eq!(l.peer_netnsid, Some(3));
        assert_eq!(l.peer_index, Some(2));
        assert!(l.is_veth_to_other_netns());
    }

    #[test]
    fn link_without_name_is_skipped() {
        let mut m = veth_msg();
        m.attributes
            .retain(|a| !matches!(a, LinkAttribute::IfName(_)));
        assert!(link(&m).is_none());
    }

    #[test]
    fn link_down_states() {
        let mut m = veth_msg();
        m.attributes[1] = LinkAttribute::OperState(State::LowerLayerDown);
        let l = link(&m).unwrap();
        assert_eq!(l.oper, OperState::LowerLayerDown);
        assert!(!l.is_up());
        m.header.flags = LinkFlags::empty();
        m.attributes[1] = LinkAttribute::OperState(State::Down);
        assert!(!link(&m).unwrap().admin_up);
    }

    fn route_msg(dst: IpAddr, len: u8) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = if dst.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.header.destination_prefix_length = len;
        m.header.table = MAIN_TABLE as u8;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Link;
        m.header.kind = RouteType::Unicast;
        m.attributes = vec![
            RouteAttribute::Destination(dst.into()),
            RouteAttribute::Oif(9),
            RouteAttribute::Table(MAIN_TABLE),
        ];
        m
    }

    #[test]
    fn pod_route_fields() {
        let r = route(&route_msg(Ipv4Addr::new(10, 244, 0, 5).into(), 32)).unwrap();
        assert_eq!(r.dst, "10.244.0.5/32".parse::<IpNet>().unwrap());
        assert_eq!(r.oif, Some(9));
        assert_eq!(r.kind, RouteKind::Unicast);
        assert_eq!(r.scope, SCOPE_LINK);
        assert_eq!(r.protocol, 3);
        assert_eq!(r.table, MAIN_TABLE);
    }

    #[test]
    fn blackhole_block_and_default_route() {
        let mut m = route_msg(Ipv4Addr::new(10, 244, 1, 0).into(), 26);
        m.header.kind = RouteType::BlackHole;
        m.header.protocol = RouteProtocol::Other(80);
        m.attributes
            .retain(|a| !matches!(a, RouteAttribute::Oif(_)));
        let r = route(&m).unwrap();
        assert_eq!(r.kind, RouteKind::Blackhole);
        assert_eq!(r.protocol, 80);
        assert_eq!(r.oif, None);
        let mut d = route_msg(Ipv6Addr::UNSPECIFIED.into(), 0);
        d.attributes
            .retain(|a| !matches!(a, RouteAttribute::Destination(_)));
        assert_eq!(route(&d).unwrap().dst, "::/0".parse::<IpNet>().unwrap());
    }

    #[test]
    fn malformed_routes_are_skipped() {
        // Prefix longer than the address.
        assert!(route(&route_msg(Ipv4Addr::new(10, 0, 0, 1).into(), 33)).is_none());
        // Family says IPv4, destination is IPv6.
        let mut m = route_msg(Ipv6Addr::LOCALHOST.into(), 128);
        m.header.address_family = AddressFamily::Inet;
        assert!(route(&m).is_none());
        // Cache clone.
        let mut c = route_msg(Ipv4Addr::new(10, 0, 0, 1).into(), 32);
        c.header.flags = RouteFlags::Cloned;
        assert!(route(&c).is_none());
        // Not an IP family.
        let mut x = route_msg(Ipv4Addr::new(10, 0, 0, 1).into(), 32);
        x.header.address_family = AddressFamily::Unspec;
        assert!(route(&x).is_none());
    }

    #[test]
    fn address_prefers_local() {
        let mut m = AddressMessage::default();
        m.header.index = 2;
        m.header.prefix_len = 32;
        m.attributes = vec![
            AddressAttribute::Address(Ipv4Addr::new(10, 244, 0, 9).into()),
            AddressAttribute::Local(Ipv4Addr::new(10, 244, 0, 5).into()),
        ];
        let a = address(&m).unwrap();
        assert_eq!(a.ip, IpAddr::from(Ipv4Addr::new(10, 244, 0, 5)));
        assert!(a.is_global());
        m.header.prefix_len = 40;
        assert!(address(&m).is_none());
        m.attributes.clear();
        assert!(address(&m).is_none());
    }
}
