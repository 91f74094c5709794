//! The profiles against the wiring the real plugins make (as `ip` shows it after
//! `CNI_COMMAND=ADD`) and their faults.

use crate::cni::Cni;
use crate::fixtures;
use crate::host::{Address, Family, HostDump, HostState, Link, Netconf, NetconfScope, SCOPE_LINK};
use crate::pods::{ExpectedPod, PodId};
use crate::verdict::evaluate;

fn pod(interface: &str, ip: &str) -> ExpectedPod {
    ExpectedPod {
        id: PodId::default(),
        interface: interface.into(),
        ips: vec![ip.parse().unwrap()],
        in_grace: false,
        meta: Default::default(),
        uid: String::new(),
    }
}

fn addr(index: u32, ip: &str, prefix_len: u8, scope: u8) -> Address {
    Address {
        index,
        ip: ip.parse().unwrap(),
        prefix_len,
        scope,
    }
}

fn reasons(cni: &Cni, pods: &[ExpectedPod], dump: HostDump) -> Vec<(String, &'static str)> {
    let v = evaluate(
        cni,
        pods,
        &HostState::from_dump(dump, Default::default()),
        None,
    );
    v.pods
        .iter()
        .flat_map(|p| {
            p.problems
                .iter()
                .map(|pr| (p.pod.interface.clone(), pr.reason.as_str()))
        })
        .collect()
}

fn one(interface: &str, reason: &'static str) -> Vec<(String, &'static str)> {
    vec![(interface.to_owned(), reason)]
}

/// ptp: `10.244.0.5 dev veth1 scope host`, veth1 holds 10.244.0.1/32; eth0 the default.
fn ptp() -> (HostDump, Vec<ExpectedPod>) {
    let mut r = fixtures::route("10.244.0.5/32", Some(10));
    r.scope = 254;
    let dump = HostDump {
        links: vec![
            fixtures::veth(10, "veth1", 1),
            fixtures::veth(11, "veth2", 2),
        ],
        routes: vec![
            r,
            fixtures::route("10.244.0.6/32", Some(11)),
            fixtures::route("0.0.0.0/0", Some(2)),
        ],
        addresses: vec![
            addr(10, "10.244.0.1", 32, SCOPE_LINK),
            addr(11, "10.244.0.1", 32, SCOPE_LINK),
        ],
        netconf: Vec::new(),
    };
    (
        dump,
        vec![pod("veth1", "10.244.0.5"), pod("veth2", "10.244.0.6")],
    )
}

/// bridge: `10.244.1.0/24 dev cni0 proto kernel`, cni0 holds 10.244.1.1/24, both veths ports.
fn bridge() -> (HostDump, Vec<ExpectedPod>) {
    let mut cni0 = fixtures::veth(4, "cni0", 0);
    cni0.kind = Some("bridge".into());
    cni0.peer_netnsid = None;
    cni0.peer_index = None;
    let port = |i, name: &str, ns| Link {
        master: Some(4),
        ..fixtures::veth(i, name, ns)
    };
    let dump = HostDump {
        links: vec![cni0, port(10, "veth1", 1), port(11, "veth2", 2)],
        routes: vec![
            fixtures::route("10.244.1.0/24", Some(4)),
            fixtures::route("0.0.0.0/0", Some(2)),
        ],
        addresses: vec![addr(4, "10.244.1.1", 24, 0)],
        netconf: Vec::new(),
    };
    (
        dump,
        vec![pod("veth1", "10.244.1.5"), pod("veth2", "10.244.1.6")],
    )
}

fn no_proxy_arp() -> Vec<Netconf> {
    [10, 11]
        .map(|i| Netconf {
            family: Family::Ipv4,
            scope: NetconfScope::Interface(i),
            forwarding: Some(true),
            proxy_neigh: Some(false),
        })
        .to_vec()
}

#[test]
fn healthy_ptp_and_bridge_nodes_have_no_problems_under_their_profile_or_generic() {
    for (cni, (mut dump, pods)) in [(Cni::Ptp, ptp()), (Cni::Bridge, bridge())] {
        // Neither plugin uses proxy ARP: off is not a fault.
        dump.netconf = no_proxy_arp();
        assert_eq!(reasons(&cni, &pods, dump.clone()), [], "{cni:?}");
        assert_eq!(
            reasons(&Cni::Generic, &pods, dump),
            [],
            "{cni:?} as generic"
        );
    }
    // What the issue saw: Calico's rules on ptp wiring page for proxy ARP on healthy pods.
    let (mut dump, pods) = ptp();
    dump.netconf = no_proxy_arp();
    assert_eq!(reasons(&Cni::Calico, &pods, dump).len(), 2);
}

#[test]
fn aws_vpc_cni_does_not_need_proxy_arp() {
    let (mut dump, pods) = ptp();
    dump.netconf = no_proxy_arp();
    assert_eq!(reasons(&Cni::AwsVpcCni, &pods, dump), []);
}

#[test]
fn ptp_faults() {
    let (dump, pods) = ptp();
    let mut d = dump.clone();
    d.routes.remove(0);
    assert_eq!(reasons(&Cni::Ptp, &pods, d), one("veth1", "route_missing"));
    let mut d = dump.clone();
    d.routes[0].oif = Some(11);
    assert_eq!(
        reasons(&Cni::Ptp, &pods, d),
        one("veth1", "route_wrong_interface")
    );
    let mut d = dump.clone();
    d.addresses.remove(1);
    assert_eq!(
        reasons(&Cni::Ptp, &pods, d),
        one("veth2", "gateway_address_missing")
    );
    let mut d = dump.clone();
    d.links[0].admin_up = false;
    assert_eq!(reasons(&Cni::Ptp, &pods, d), one("veth1", "interface_down"));
    let mut d = dump;
    d.netconf.push(Netconf {
        family: Family::Ipv4,
        scope: NetconfScope::Interface(11),
        forwarding: Some(false),
        proxy_neigh: None,
    });
    assert_eq!(
        reasons(&Cni::Ptp, &pods, d),
        one("veth2", "forwarding_disabled")
    );
}

#[test]
fn bridge_faults_in_bridge_terms() {
    let (dump, pods) = bridge();
    // The veth taken off the bridge: one reason, not a route problem on top.
    let mut d = dump.clone();
    d.links[1].master = None;
    assert_eq!(
        reasons(&Cni::Bridge, &pods, d.clone()),
        one("veth1", "veth_not_on_bridge")
    );
    let v = evaluate(
        &Cni::Bridge,
        &pods,
        &HostState::from_dump(d, Default::default()),
        None,
    );
    assert!(!v.pods[0].problems[0].detail.contains("cali"));
    // ... but a wrong host route for its IP is still said.
    let mut d = dump.clone();
    d.links[1].master = None;
    d.routes.push(fixtures::route("10.244.1.5/32", Some(11)));
    assert_eq!(
        reasons(&Cni::Bridge, &pods, d),
        [
            ("veth1".to_owned(), "veth_not_on_bridge"),
            ("veth1".to_owned(), "route_wrong_interface")
        ]
    );
    // The bridge set down: the kernel drops its subnet route too.
    let mut d = dump.clone();
    d.links[0].admin_up = false;
    d.routes.remove(0);
    let r = reasons(&Cni::Bridge, &pods, d);
    assert_eq!(
        r,
        [
            ("veth1".to_owned(), "bridge_down"),
            ("veth1".to_owned(), "route_missing"),
            ("veth2".to_owned(), "bridge_down"),
            ("veth2".to_owned(), "route_missing"),
        ]
    );
    // The subnet route deleted.
    let mut d = dump.clone();
    d.routes.remove(0);
    assert_eq!(reasons(&Cni::Bridge, &pods, d).len(), 2);
    // A port down is that pod's interface_down; the bridge keeps serving the others.
    let mut d = dump.clone();
    d.links[2].admin_up = false;
    assert_eq!(
        reasons(&Cni::Bridge, &pods, d),
        one("veth2", "interface_down")
    );
    // The bridge lost its address (and with it the connected route).
    let mut d = dump.clone();
    d.addresses.clear();
    d.routes.remove(0);
    assert_eq!(
        reasons(&Cni::Bridge, &pods, d)
            .iter()
            .filter(|(_, r)| *r == "gateway_address_missing")
            .count(),
        2
    );
    // A wrong host route shadows the bridge's subnet.
    let mut d = dump;
    d.routes.push(fixtures::route("10.244.1.6/32", Some(10)));
    assert_eq!(
        reasons(&Cni::Bridge, &pods, d),
        one("veth2", "route_wrong_interface")
    );
}

#[test]
fn a_pod_without_a_known_port_is_judged_by_its_route_alone() {
    // From the API without --interface-prefix, a bridge pod's veth cannot be named: its IP
    // routed to the bridge is fine, routed elsewhere or nowhere is not.
    let (dump, _) = bridge();
    let mut p = pod("", "10.244.1.5");
    assert_eq!(reasons(&Cni::Bridge, &[p.clone()], dump.clone()), []);
    assert_eq!(reasons(&Cni::Generic, &[p.clone()], dump.clone()), []);
    p.ips = vec!["10.244.2.5".parse().unwrap()];
    assert_eq!(
        reasons(&Cni::Bridge, &[p.clone()], dump.clone()),
        one("", "route_missing")
    );
    let mut d = dump;
    d.routes.push(fixtures::route("10.244.2.0/24", Some(10)));
    assert_eq!(
        reasons(&Cni::Bridge, &[p], d),
        one("", "route_wrong_interface")
    );
}

#[test]
fn gateways_come_from_the_host_side_of_the_profile() {
    let (dump, pods) = ptp();
    let host = HostState::from_dump(dump, Default::default());
    let v = evaluate(&Cni::Ptp, &pods, &host, None);
    assert_eq!(
        v.pods[0].gateways,
        ["10.244.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    assert!(
        evaluate(&Cni::Calico, &pods, &host, None).pods[0]
            .gateways
            .is_empty()
    );
    let (dump, pods) = bridge();
    let host = HostState::from_dump(dump, Default::default());
    let v = evaluate(&Cni::Bridge, &pods, &host, None);
    assert_eq!(
        v.pods[1].gateways,
        ["10.244.1.1".parse::<std::net::IpAddr>().unwrap()]
    );
    // A generic CNI: wherever the address is; none (Calico-like) leaves the fixed gateway.
    let g = evaluate(&Cni::Generic, &pods, &host, None);
    assert_eq!(g.pods[1].gateways, v.pods[1].gateways);
    let (dump, pods) = ptp();
    let host = HostState::from_dump(dump, Default::default());
    let g = evaluate(&Cni::Generic, &pods, &host, None);
    assert_eq!(
        g.pods[0].gateways,
        ["10.244.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    let mut dump = ptp().0;
    dump.addresses.clear();
    let host = HostState::from_dump(dump, Default::default());
    assert!(
        evaluate(&Cni::Generic, &pods, &host, None).pods[0]
            .gateways
            .is_empty()
    );
}
