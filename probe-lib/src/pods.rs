//! The pods podnet expects on this node, and how to learn them from the node alone.

use std::net::IpAddr;

use std::time::{Duration, Instant};

use crate::cni::Cni;
use crate::host::HostState;
use crate::kube::KubeView;
pub use crate::model::{ExpectedPod, PodId};

/// Node mode: every veth whose name starts with `prefix` and whose peer lives in another
/// network namespace is a local pod, with the global addresses of that peer as its IPs.
/// Sorted by interface name.
pub fn discover_from_links(host: &HostState, prefix: &str) -> Vec<ExpectedPod> {
    let mut pods: Vec<ExpectedPod> = host
        .links()
        .filter(|l| l.name.starts_with(prefix) && l.is_veth_to_other_netns())
        .map(|l| ExpectedPod {
            id: PodId::default(),
            interface: l.name.clone(),
            ips: cap_node_mode_ips(peer_global_ips(host, l)),
            in_grace: false,
            meta: Default::default(),
            uid: String::new(),
        })
        .collect();
    pods.sort_by(|a, b| a.interface.cmp(&b.interface));
    pods
}

/// Node mode's pod IPs from the addresses on the pod's interface, which the pod controls
/// (NET_ADMIN in its own namespace): at most one IPv4 and one IPv6 address, the lowest of
/// each, so the choice is stable from one dump to the next. Otherwise a pod adding 10,000
/// addresses would get 10,000 pod alarms, series and host pings to addresses it chose.
/// (Kubernetes mode takes the API's `podIPs` instead.)
pub fn cap_node_mode_ips(mut ips: Vec<IpAddr>) -> Vec<IpAddr> {
    ips.sort();
    ips.dedup();
    let v4 = ips.iter().find(|ip| ip.is_ipv4()).copied();
    let v6 = ips.iter().find(|ip| ip.is_ipv6()).copied();
    v4.into_iter().chain(v6).collect()
}

/// How many of a pod interface's global addresses node mode ignores (see
/// [`cap_node_mode_ips`]), over all pods: for a gauge or a log line.
pub fn ignored_node_mode_ips(host: &HostState, prefix: &str) -> usize {
    host.links()
        .filter(|l| l.name.starts_with(prefix) && l.is_veth_to_other_netns())
        .map(|l| {
            let mut ips = peer_global_ips(host, l);
            ips.sort();
            ips.dedup();
            ips.len().saturating_sub(cap_node_mode_ips(ips).len())
        })
        .sum()
}

/// The global addresses on a pod veth's peer (`ip -n <pod> addr show dev eth0 scope global`).
fn peer_global_ips(host: &HostState, l: &crate::host::Link) -> Vec<IpAddr> {
    l.peer_netnsid
        .and_then(|ns| host.peer_addresses(ns))
        .unwrap_or_default()
        .iter()
        .filter(|a| Some(a.index) == l.peer_index && a.is_global())
        .map(|a| a.ip)
        .collect()
}

/// The pods the API puts on this node, each with the interface its CNI gives it. Pods without
/// an IP yet and terminating pods are not expected to be wired. With a CNI that names interfaces
/// unpredictably, the interface is the one the pod IP's route uses (empty without a route).
pub fn expected_from_api(
    view: &KubeView,
    cni: &Cni,
    prefix: Option<&str>,
    host: &HostState,
    now: Instant,
    grace: Duration,
) -> Vec<ExpectedPod> {
    view.pods
        .iter()
        .filter(|t| !t.pod.terminating && !t.pod.ips.is_empty())
        .map(|t| {
            let p = &t.pod;
            let interface = cni
                .interface_for(prefix, &p.namespace, &p.name)
                .or_else(|| interface_of_ips(&p.ips, host))
                .unwrap_or_default();
            ExpectedPod {
                id: PodId {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                },
                interface,
                ips: p.ips.clone(),
                in_grace: t.ips_since.is_some_and(|since| now < since + grace),
                meta: p.meta.clone(),
                uid: p.uid.clone(),
            }
        })
        .collect()
}

/// For CNIs without a naming rule: the veth whose peer namespace holds one of `ips` (known
/// once its addresses were read), else the veth the kernel routes the IP to (never the
/// uplink of a default route, nor a bridge: bridge CNIs route the whole subnet to it).
fn interface_of_ips(ips: &[IpAddr], host: &HostState) -> Option<String> {
    let by_peer = host.links().find(|l| {
        l.is_veth_to_other_netns()
            && l.peer_netnsid
                .and_then(|ns| host.peer_addresses(ns))
                .is_some_and(|addrs| {
                    addrs
                        .iter()
                        .any(|a| Some(a.index) == l.peer_index && ips.contains(&a.ip))
                })
    });
    by_peer
        .or_else(|| {
            ips.iter()
                .find_map(|ip| host.route_lookup(*ip)?.oif)
                .and_then(|i| host.link(i))
                .filter(|l| l.is_veth_to_other_netns())
        })
        .map(|l| l.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{Address, HostDump, Link, OperState, SCOPE_LINK};

    fn link(index: u32, name: &str, kind: &str, nsid: Option<i32>) -> Link {
        Link {
            index,
            name: name.into(),
            kind: Some(kind.into()),
            admin_up: true,
            oper: OperState::Up,
            peer_netnsid: nsid,
            peer_index: nsid.map(|_| 2),
            master: None,
        }
    }

    fn addr(index: u32, ip: &str, scope: u8) -> Address {
        Address {
            index,
            ip: ip.parse().unwrap(),
            prefix_len: 32,
            scope,
        }
    }

    #[test]
    fn finds_prefixed_veths_with_peer_ips() {
        let dump = HostDump {
            links: vec![
                link(1, "lo", "loopback", None),
                link(5, "calib", "veth", Some(1)),
                link(6, "calia", "veth", Some(2)),
                // A cali veth whose peer is in our own namespace is not a pod.
                link(7, "calic", "veth", None),
                // Prefix matches, but not a veth (Calico's VXLAN device is named differently
                // anyway; this guards against e.g. a bridge called cali-br).
                link(8, "cali-br", "bridge", Some(3)),
                link(9, "eni123", "veth", Some(4)),
            ],
            ..HostDump::default()
        };
        let mut host = HostState::from_dump(dump, Default::default());
        host.set_peer_addresses(
            1,
            vec![
                addr(2, "10.244.0.5", 0),
                addr(2, "fd00::5", 0),
                addr(2, "fe80::1", SCOPE_LINK),
                addr(1, "127.0.0.1", 254),
                // Another interface in the same pod namespace.
                addr(3, "10.9.9.9", 0),
            ],
        );
        let pods = discover_from_links(&host, "cali");
        let names: Vec<_> = pods.iter().map(|p| p.interface.as_str()).collect();
        assert_eq!(names, ["calia", "calib"]);
        assert!(pods[0].ips.is_empty(), "addresses of nsid 2 not read yet");
        let ips: Vec<String> = pods[1].ips.iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["10.244.0.5", "fd00::5"]);
        assert!(pods.iter().all(|p| p.id == PodId::default()));
        assert_eq!(discover_from_links(&host, "eni").len(), 1);
    }

    #[test]
    fn node_mode_takes_one_ip_per_family_the_lowest() {
        let ips = |v: &[&str]| -> Vec<IpAddr> { v.iter().map(|s| s.parse().unwrap()).collect() };
        assert_eq!(
            cap_node_mode_ips(ips(&[
                "10.244.0.9",
                "fd00::2",
                "10.244.0.5",
                "fd00::1",
                "10.244.0.5"
            ])),
            ips(&["10.244.0.5", "fd00::1"])
        );
        let mut host = HostState::from_dump(
            HostDump {
                links: vec![link(5, "calib", "veth", Some(1))],
                ..HostDump::default()
            },
            Default::default(),
        );
        let many: Vec<Address> = (0..1000u32)
            .map(|i| addr(2, &format!("10.244.{}.{}", 1 + i / 250, 1 + i % 250), 0))
            .collect();
        host.set_peer_addresses(1, many);
        let pods = discover_from_links(&host, "cali");
        assert_eq!(pods[0].ips, ips(&["10.244.1.1"]));
        assert_eq!(ignored_node_mode_ips(&host, "cali"), 999);
    }

    fn view(pods: &[(&str, Option<&str>, bool, Option<Instant>)]) -> KubeView {
        KubeView {
            synced: true,
            pods: pods
                .iter()
                .map(|(name, ip, terminating, since)| crate::kube::Tracked {
                    pod: crate::kube::KubePod {
                        namespace: "default".into(),
                        name: (*name).into(),
                        uid: String::new(),
                        ips: ip.iter().map(|i| i.parse().unwrap()).collect(),
                        terminating: *terminating,
                        meta: Default::default(),
                    },
                    ips_since: *since,
                })
                .collect(),
            ..KubeView::default()
        }
    }

    #[test]
    fn api_pods_get_their_cni_interface_and_grace() {
        let now = Instant::now();
        let grace = Duration::from_secs(30);
        let v = view(&[
            (
                "web-0",
                Some("10.244.0.5"),
                false,
                Some(now - Duration::from_secs(60)),
            ),
            (
                "new",
                Some("10.244.0.6"),
                false,
                Some(now - Duration::from_secs(5)),
            ),
            ("pending", None, false, None),
            (
                "leaving",
                Some("10.244.0.7"),
                true,
                Some(now - Duration::from_secs(60)),
            ),
        ]);
        let host = HostState::default();
        let pods = expected_from_api(&v, &Cni::Calico, None, &host, now, grace);
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[0].interface, "cali0d7763386da");
        assert_eq!(pods[0].id.name, "web-0");
        assert!(!pods[0].in_grace);
        assert!(pods[1].in_grace);
        let eni = expected_from_api(&v, &Cni::AwsVpcCni, None, &host, now, grace);
        assert_eq!(eni[0].interface, "eni0d7763386da");
    }

    #[test]
    fn generic_cni_uses_the_routes_interface() {
        let now = Instant::now();
        let v = view(&[
            ("web-0", Some("10.244.0.5"), false, None),
            ("x", Some("10.244.0.9"), false, None),
        ]);
        let host = HostState::from_dump(
            HostDump {
                links: vec![link(7, "veth1234", "veth", Some(1))],
                routes: vec![crate::fixtures::route("10.244.0.5/32", Some(7))],
                ..HostDump::default()
            },
            Default::default(),
        );
        let pods = expected_from_api(&v, &Cni::Generic, None, &host, now, Duration::ZERO);
        assert_eq!(pods[0].interface, "veth1234");
        assert_eq!(pods[1].interface, "", "no route, no interface");
    }
}
