//! Property tests of the kernel-facing parsers: rtnetlink link/route/address messages built
//! with netlink-packet-route, serialized, corrupted and parsed back the way the event reader
//! and the dumps receive them (netlink-proto's codec, then [`KernelMessage`] and `convert`);
//! and the netconf parser. Never a panic, never an error out of [`KernelMessage`] (a body
//! that does not decode is `Malformed`, counted and skipped), and what decodes converts
//! exactly as the message it came from.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::BytesMut;
use proptest::prelude::*;
use rtnetlink::packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::proto::{NetlinkCodec, NetlinkMessageCodec};

use super::convert;
use super::netconf::{KernelMessage, MALFORMED_WHY_MAX, parse_netconf};
use super::types::{KernelEvent, NetconfScope};
use crate::util::props::{cases, mutate, mutation};

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::from(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::from(Ipv6Addr::from(b))),
    ]
}

/// Interface names as a kernel or a hostile pod (it names its side) could make them; no NUL,
/// which netlink strings cannot carry.
fn ifname() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9@._-]{0,16}", "[^\u{0}]{0,40}"]
}

fn family(consistent: Option<bool>) -> BoxedStrategy<AddressFamily> {
    match consistent {
        Some(true) => Just(AddressFamily::Inet).boxed(),
        Some(false) => Just(AddressFamily::Inet6).boxed(),
        None => any::<u8>().prop_map(AddressFamily::from).boxed(),
    }
}

fn link_msg() -> impl Strategy<Value = LinkMessage> {
    let attr = prop_oneof![
        ifname().prop_map(LinkAttribute::IfName),
        any::<u8>().prop_map(|s| LinkAttribute::OperState(State::from(s))),
        any::<i32>().prop_map(LinkAttribute::LinkNetNsId),
        any::<u32>().prop_map(LinkAttribute::Link),
        any::<u32>().prop_map(LinkAttribute::Controller),
        any::<u32>().prop_map(LinkAttribute::Mtu),
        prop_oneof![
            Just(InfoKind::Veth),
            Just(InfoKind::Bridge),
            Just(InfoKind::Vxlan),
            "[a-z]{1,10}".prop_map(InfoKind::Other),
        ]
        .prop_map(|k| LinkAttribute::LinkInfo(vec![LinkInfo::Kind(k)])),
    ];
    (
        prop_oneof![Just(0u8), Just(7), any::<u8>()],
        prop_oneof![Just(0u32), 1..64u32, any::<u32>()],
        any::<u32>(),
        proptest::collection::vec(attr, 0..8),
    )
        .prop_map(|(fam, index, flags, attributes)| {
            let mut m = LinkMessage::default();
            m.header.interface_family = AddressFamily::from(fam);
            m.header.index = index;
            m.header.flags = LinkFlags::from_bits_retain(flags);
            m.attributes = attributes;
            m
        })
}

/// A route message; with `v4` set, its family and every address agree (so it must survive
/// the wire), otherwise anything goes.
fn route_msg(v4: Option<bool>) -> impl Strategy<Value = RouteMessage> {
    let addr = move || match v4 {
        Some(true) => any::<[u8; 4]>()
            .prop_map(|b| RouteAddress::Inet(b.into()))
            .boxed(),
        Some(false) => any::<[u8; 16]>()
            .prop_map(|b| RouteAddress::Inet6(b.into()))
            .boxed(),
        None => ip().prop_map(RouteAddress::from).boxed(),
    };
    let attr = prop_oneof![
        addr().prop_map(RouteAttribute::Destination),
        addr().prop_map(RouteAttribute::Gateway),
        addr().prop_map(RouteAttribute::PrefSource),
        any::<u32>().prop_map(RouteAttribute::Oif),
        any::<u32>().prop_map(RouteAttribute::Priority),
        any::<u32>().prop_map(RouteAttribute::Table),
    ];
    (
        family(v4),
        prop_oneof![Just(32u8), Just(128), 0..=129u8, any::<u8>()],
        any::<[u8; 6]>(),
        any::<u32>(),
        proptest::collection::vec(attr, 0..8),
    )
        .prop_map(|(fam, len, h, flags, attributes)| {
            let mut m = RouteMessage::default();
            m.header.address_family = fam;
            m.header.destination_prefix_length = len;
            m.header.tos = h[0];
            m.header.table = h[1];
            m.header.protocol = RouteProtocol::from(h[2]);
            m.header.scope = RouteScope::from(h[3]);
            m.header.kind = RouteType::from(h[4]);
            m.header.flags = RouteFlags::from_bits_retain(flags);
            m.attributes = attributes;
            m
        })
}

fn address_msg(v4: Option<bool>) -> impl Strategy<Value = AddressMessage> {
    let addr = move || match v4 {
        Some(true) => any::<[u8; 4]>().prop_map(IpAddr::from).boxed(),
        Some(false) => any::<[u8; 16]>().prop_map(IpAddr::from).boxed(),
        None => ip().boxed(),
    };
    let attr = prop_oneof![
        addr().prop_map(AddressAttribute::Local),
        addr().prop_map(AddressAttribute::Address),
        "[a-z0-9:]{0,15}".prop_map(AddressAttribute::Label),
    ];
    (
        family(v4),
        any::<u8>(),
        any::<u8>(),
        any::<u32>(),
        proptest::collection::vec(attr, 0..5),
    )
        .prop_map(|(fam, prefix_len, scope, index, attributes)| {
            let mut m = AddressMessage::default();
            m.header.family = fam;
            m.header.prefix_len = prefix_len;
            m.header.scope = AddressScope::from(scope);
            m.header.index = index;
            m.attributes = attributes;
            m
        })
}

/// Any message the event reader is subscribed to.
fn kernel_msg(v4: Option<bool>) -> impl Strategy<Value = RouteNetlinkMessage> {
    prop_oneof![
        link_msg().prop_map(RouteNetlinkMessage::NewLink),
        link_msg().prop_map(RouteNetlinkMessage::DelLink),
        route_msg(v4).prop_map(RouteNetlinkMessage::NewRoute),
        route_msg(v4).prop_map(RouteNetlinkMessage::DelRoute),
        address_msg(v4).prop_map(RouteNetlinkMessage::NewAddress),
        address_msg(v4).prop_map(RouteNetlinkMessage::DelAddress),
    ]
}

fn wire(m: RouteNetlinkMessage) -> Vec<u8> {
    let mut msg = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::InnerMessage(KernelMessage::Route(m)),
    );
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// Decode a datagram as the event reader does (netlink-proto's codec until it has no more)
/// and convert every message; `limit` guards against a codec that would never finish.
fn receive(datagram: &[u8]) -> Vec<Option<KernelEvent>> {
    let mut src = BytesMut::from(datagram);
    let mut out = Vec::new();
    while let Ok(Some(msg)) = NetlinkCodec::decode::<KernelMessage>(&mut src) {
        assert!(
            out.len() <= datagram.len() / 16,
            "more messages than 16-byte headers"
        );
        if let NetlinkPayload::InnerMessage(m) = msg.payload {
            if let KernelMessage::Malformed(bad) = &m {
                assert!(bad.why.len() <= MALFORMED_WHY_MAX);
            }
            out.push(convert::event(&m));
        }
    }
    out
}

/// What a converted event may hold, whatever the kernel said.
fn check_event(ev: &KernelEvent) {
    match ev {
        KernelEvent::LinkChanged(l) => assert!(!l.name.is_empty() && l.index != 0),
        KernelEvent::RouteAdded(r) | KernelEvent::RouteRemoved(r) => {
            assert_eq!(
                r.dst,
                r.dst.trunc(),
                "route destinations are network addresses"
            );
        }
        KernelEvent::AddressAdded(a) | KernelEvent::AddressRemoved(a) => {
            assert!(a.prefix_len <= if a.ip.is_ipv4() { 32 } else { 128 });
        }
        KernelEvent::NetconfChanged(nc) => {
            if let NetconfScope::Interface(i) = nc.scope {
                assert!(i > 0);
            }
        }
        KernelEvent::LinkRemoved(_) | KernelEvent::Overrun | KernelEvent::Malformed => {}
    }
}

proptest! {
    #![proptest_config(cases(256))]

    /// Any message, however inconsistent its fields, converts without a panic into an
    /// event that keeps the model's invariants, or into nothing.
    #[test]
    fn props_convert_keeps_the_model_invariants(m in kernel_msg(None)) {
        if let Some(ev) = convert::event(&KernelMessage::Route(m)) {
            check_event(&ev);
        }
    }

    /// A consistent message survives the wire: what the reader converts from the bytes is
    /// what it would convert from the message.
    #[test]
    fn props_wire_round_trip_converts_identically(v4 in any::<bool>(), m in kernel_msg(Some(true)), m6 in kernel_msg(Some(false))) {
        let m = if v4 { m } else { m6 };
        let want = convert::event(&KernelMessage::Route(m.clone()));
        let got = receive(&wire(m));
        prop_assert_eq!(got, vec![want]);
    }

    /// Corrupted datagrams (truncated, flipped, hostile lengths, duplicated attributes,
    /// trailing garbage) of several messages: no panic, no error out of `KernelMessage`,
    /// every result an event that keeps the invariants, nothing or `Malformed`.
    #[test]
    fn props_corrupt_datagrams_are_skipped_or_converted(
        msgs in proptest::collection::vec(kernel_msg(None), 1..4),
        muts in proptest::collection::vec(mutation(), 1..6),
    ) {
        let datagram: Vec<u8> = msgs.into_iter().flat_map(wire).collect();
        for ev in receive(&mutate(datagram, &muts)).into_iter().flatten() {
            check_event(&ev);
        }
    }

    /// Netconf payloads built attribute by attribute with hostile lengths and values: never
    /// a panic; what parses has an ifindex and a known family.
    #[test]
    fn props_netconf_hostile_attributes(
        family in prop_oneof![Just(2u8), Just(10), any::<u8>()],
        attrs in proptest::collection::vec((prop_oneof![0..8u16, any::<u16>()], prop_oneof![Just(None), (0..12u16).prop_map(Some), any::<u16>().prop_map(Some)], proptest::collection::vec(any::<u8>(), 0..12)), 0..6),
        muts in proptest::collection::vec(mutation(), 0..3),
    ) {
        let mut p = vec![family, 0, 0, 0];
        for (kind, len, value) in attrs {
            let len = len.unwrap_or(4 + value.len() as u16);
            p.extend_from_slice(&len.to_ne_bytes());
            p.extend_from_slice(&kind.to_ne_bytes());
            p.extend_from_slice(&value);
            p.resize(p.len().next_multiple_of(4), 0);
        }
        let p = mutate(p, &muts);
        if let Ok(nc) = parse_netconf(&p) {
            check_event(&KernelEvent::NetconfChanged(nc));
        }
        let mut h = NetlinkHeader::default();
        h.message_type = super::netconf::RTM_NEWNETCONF;
        let m = <KernelMessage as rtnetlink::packet_core::NetlinkDeserializable>::deserialize(&h, &p);
        prop_assert!(m.is_ok(), "KernelMessage never fails: {:?}", m);
    }

    /// Netconf round trip: the attributes the kernel sends, in any order, with unknown ones
    /// between them, parse to exactly what they say.
    #[test]
    fn props_netconf_round_trip(
        v4 in any::<bool>(),
        ifindex in prop_oneof![Just(-1i32), Just(-2), 1..i32::MAX],
        forwarding in proptest::option::of(any::<i32>()),
        proxy in proptest::option::of(any::<i32>()),
        unknown in proptest::collection::vec((6..100u16, any::<i32>()), 0..3),
        order in any::<u64>(),
    ) {
        let mut attrs = vec![(1u16, ifindex)];
        attrs.extend(forwarding.map(|f| (2, f)));
        attrs.extend(proxy.map(|p| (5, p)));
        attrs.extend(unknown);
        let n = attrs.len();
        attrs.rotate_left((order as usize) % n);
        let mut p = vec![if v4 { 2 } else { 10 }, 0, 0, 0];
        for (k, v) in attrs {
            p.extend_from_slice(&8u16.to_ne_bytes());
            p.extend_from_slice(&k.to_ne_bytes());
            p.extend_from_slice(&v.to_ne_bytes());
        }
        let nc = parse_netconf(&p).unwrap();
        prop_assert_eq!(nc.family == super::types::Family::Ipv4, v4);
        prop_assert_eq!(nc.forwarding, forwarding.map(|f| f != 0));
        prop_assert_eq!(nc.proxy_neigh, proxy.map(|p| p != 0));
        let want = match ifindex {
            -1 => NetconfScope::All,
            -2 => NetconfScope::Default,
            i => NetconfScope::Interface(i as u32),
        };
        prop_assert_eq!(nc.scope, want);
    }
}

/// A route message whose destination does not fit its family is one `Malformed` message,
/// not a decode error that netlink-proto would drop without a word; it asks for a re-sync.
#[test]
fn malformed_route_notification_is_a_resync_not_a_silent_drop() {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = 32;
    m.attributes = vec![RouteAttribute::Destination(RouteAddress::Inet6(
        Ipv6Addr::LOCALHOST,
    ))];
    let got = receive(&wire(RouteNetlinkMessage::NewRoute(m)));
    assert_eq!(got, vec![Some(KernelEvent::Malformed)]);
    let mut state = super::HostState::default();
    assert_eq!(
        state.apply(&KernelEvent::Malformed),
        Some(crate::model::ResyncCause::Malformed)
    );
}
