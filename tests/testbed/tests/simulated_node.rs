//! The simulated node is wired as Calico wires a pod, and its pods can really talk: traffic
//! from inside each pod reaches the node and the outside host, and stops when the route goes.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use futures::TryStreamExt;
use podnet_testbed::netns::{self, NetnsThread};
use podnet_testbed::simnode::{
    CALI_MAC, NODE_IPV4, NODE_IPV6, OUTSIDE_IPV4, OUTSIDE_IPV6, PROTO_FELIX, SimNode,
};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{
    RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};

/// An echo server on `addr` inside `ns` (one line in, the same line out).
fn echo_server(ns: &NetnsThread, addr: SocketAddr) -> SocketAddr {
    ns.run_blocking(move || {
        let l = TcpListener::bind(addr)?;
        let local = l.local_addr()?;
        std::thread::spawn(move || {
            for mut c in l.incoming().flatten() {
                let mut buf = [0u8; 64];
                if let Ok(n) = c.read(&mut buf) {
                    let _ = c.write_all(&buf[..n]);
                }
            }
        });
        Ok(local)
    })
    .unwrap()
}

/// Connect from inside `ns` and exchange one message.
fn talk(ns: &str, to: SocketAddr) -> anyhow::Result<()> {
    NetnsThread::join(ns)?.run_blocking(move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"ping\n")?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf)?;
        anyhow::ensure!(&buf == b"ping\n", "bad echo");
        Ok(())
    })
}

#[test]
fn pods_reach_the_node_and_the_outside_over_both_families() {
    let node = SimNode::new(3, &[0]).unwrap();
    let outside4 = echo_server(node.outside(), SocketAddr::new(OUTSIDE_IPV4.into(), 0));
    let outside6 = echo_server(node.outside(), SocketAddr::new(OUTSIDE_IPV6.into(), 0));
    let node4 = echo_server(node.node(), SocketAddr::new(NODE_IPV4.into(), 0));
    let node6 = echo_server(node.node(), SocketAddr::new(NODE_IPV6.into(), 0));
    for pod in node.pods() {
        talk(&pod.netns, outside4).unwrap_or_else(|e| panic!("{} -> outside: {e:#}", pod.name));
        talk(&pod.netns, node4).unwrap_or_else(|e| panic!("{} -> node: {e:#}", pod.name));
        if pod.ipv6.is_some() {
            talk(&pod.netns, outside6)
                .unwrap_or_else(|e| panic!("{} -> outside v6: {e:#}", pod.name));
            talk(&pod.netns, node6).unwrap_or_else(|e| panic!("{} -> node v6: {e:#}", pod.name));
        }
    }
    // Without its host route, the pod is cut off, exactly as in the incident.
    let pod = node.pod(1).clone();
    node.delete_route(1, pod.ipv4.into()).unwrap();
    assert!(talk(&pod.netns, outside4).is_err());
    assert!(
        talk(&node.pod(2).netns, outside4).is_ok(),
        "other pods are unaffected"
    );
    node.restore_routes(1).unwrap();
    talk(&pod.netns, outside4).unwrap();
}

fn dst(r: &RouteMessage) -> Option<IpAddr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(d) => match d {
            rtnetlink::packet_route::route::RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
            rtnetlink::packet_route::route::RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
            _ => None,
        },
        _ => None,
    })
}

#[test]
fn host_side_is_wired_as_calico_does() {
    let node = SimNode::new(2, &[1]).unwrap();
    let pods: Vec<_> = node.pods().cloned().collect();
    // Host veth: MAC ee:ee:ee:ee:ee:ee, peer in the pod's namespace.
    let p0 = pods[0].clone();
    let attrs = node
        .node()
        .run(move |h| async move {
            let l = h
                .link()
                .get()
                .match_index(p0.host_index)
                .execute()
                .try_next()
                .await?
                .unwrap();
            Ok(l.attributes)
        })
        .unwrap();
    assert!(attrs.contains(&LinkAttribute::Address(CALI_MAC.to_vec())));
    assert!(
        attrs
            .iter()
            .any(|a| matches!(a, LinkAttribute::LinkNetNsId(_)))
    );
    // Host routes: /32 (and /128) dev caliX scope link proto boot; IPAM blackholes proto 80.
    let routes = node
        .node()
        .run(|h| async move {
            let mut all = Vec::new();
            // No destination: a dump (`ip route show`), not a lookup.
            let v4 = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build();
            let v6 = rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new().build();
            for msg in [v4, v6] {
                let mut s = h.route().get(msg).execute();
                while let Some(r) = s.try_next().await? {
                    all.push(r);
                }
            }
            Ok(all)
        })
        .unwrap();
    for pod in &pods {
        for ip in pod.ips() {
            let r = routes
                .iter()
                .find(|r| dst(r) == Some(ip) && r.header.kind == RouteType::Unicast)
                .unwrap_or_else(|| panic!("no route for {ip}"));
            assert!(r.attributes.contains(&RouteAttribute::Oif(pod.host_index)));
            assert_eq!(r.header.protocol, RouteProtocol::Boot);
            if ip.is_ipv4() {
                assert_eq!(r.header.scope, RouteScope::Link);
                assert_eq!(r.header.destination_prefix_length, 32);
            } else {
                assert_eq!(r.header.destination_prefix_length, 128);
            }
        }
    }
    let blackholes: Vec<_> = routes
        .iter()
        .filter(|r| r.header.kind == RouteType::BlackHole)
        .collect();
    assert_eq!(blackholes.len(), 2, "one IPv4 /26 and one IPv6 /122 block");
    assert!(
        blackholes
            .iter()
            .all(|r| r.header.protocol == RouteProtocol::Other(PROTO_FELIX))
    );
    // Host-side sysctls.
    for (key, want) in [
        ("net.ipv4.conf.{}.proxy_arp", "1"),
        ("net.ipv4.neigh.{}.proxy_delay", "0"),
        ("net.ipv4.conf.{}.forwarding", "1"),
        ("net.ipv6.conf.{}.proxy_ndp", "1"),
    ] {
        let key = key.replace("{}", &pods[0].interface);
        assert_eq!(node.node().read_sysctl(&key).unwrap(), want, "{key}");
    }
}

#[test]
fn teardown_removes_every_namespace() {
    let mut node = SimNode::new(2, &[]).unwrap();
    let mut names = vec![
        node.node_netns().to_owned(),
        node.outside_netns().to_owned(),
    ];
    names.extend(node.pods().map(|p| p.netns.clone()));
    let removed = node.remove_pod(0).unwrap();
    assert!(!netns::path(&removed.netns).exists());
    node.teardown().unwrap();
    for n in &names {
        assert!(!netns::path(n).exists(), "{n} left behind");
    }
}

#[test]
fn teardown_happens_on_panic() {
    let names = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let node = SimNode::new(1, &[]).unwrap();
        names.lock().unwrap().push(node.node_netns().to_owned());
        names.lock().unwrap().push(node.pod(0).netns.clone());
        panic!("test failure inside a simulated node");
    });
    assert!(result.is_err());
    for n in names.lock().unwrap().iter() {
        assert!(!netns::path(n).exists(), "{n} left behind after a panic");
    }
}
