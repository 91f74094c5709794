//! Which probes one pod gets in a round. Pure.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};

use super::target::{Destination, Direction, Gateways, HOST_TO_POD_TARGET, Protocol, Target};

/// One probe to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedProbe {
    /// Target name.
    pub target: String,
    /// ICMP or TCP.
    pub protocol: Protocol,
    /// From the pod or from the host.
    pub direction: Direction,
    /// The gateway probe (ICMP with a hop limit of 1; any answer from the gateway counts).
    pub gateway: bool,
    /// Destination; port 0 for ICMP, scope id set for link-local IPv6.
    pub address: SocketAddr,
    /// For HTTP(S) targets: the request and the expected status.
    pub http: Option<std::sync::Arc<super::http::HttpSpec>>,
}

/// The probes for a pod with these IPs. `peer_index` is the pod's interface index inside its
/// namespace (the scope of the IPv6 link-local gateway); without it there are no in-pod probes.
/// `targets` are the ones this pod is probed against; `host_to_pod`: the host probes it too.
pub fn plan(
    ips: &[IpAddr],
    node_ips: &[IpAddr],
    targets: &[Target],
    gateways: &Gateways,
    peer_index: Option<u32>,
    host_to_pod: bool,
) -> Vec<PlannedProbe> {
    let has_v4 = ips.iter().any(IpAddr::is_ipv4);
    let has_v6 = ips.iter().any(IpAddr::is_ipv6);
    let family_ok = |ip: &IpAddr| (ip.is_ipv4() && has_v4) || (ip.is_ipv6() && has_v6);
    let mut out = Vec::new();
    if let Some(scope) = peer_index {
        for t in targets {
            let probe = |address: SocketAddr, gateway: bool| PlannedProbe {
                target: t.name.clone(),
                protocol: t.protocol,
                direction: Direction::PodToTarget,
                gateway,
                address,
                http: t.http.clone(),
            };
            match t.destination {
                Destination::Gateway => {
                    if has_v4 {
                        out.push(probe(SocketAddr::new(gateways.ipv4.into(), 0), true));
                    }
                    if has_v6 {
                        let sa = SocketAddrV6::new(gateways.ipv6, 0, 0, scope);
                        out.push(probe(SocketAddr::V6(sa), true));
                    }
                }
                Destination::Node => {
                    for ip in node_ips.iter().filter(|ip| family_ok(ip)) {
                        out.push(probe(SocketAddr::new(*ip, 0), false));
                    }
                }
                Destination::Address(sa) => {
                    if family_ok(&sa.ip()) {
                        out.push(probe(sa, false));
                    }
                }
                // Resolved to an address by the prober before planning; unresolved, not probed.
                Destination::Service => {}
            }
        }
    }
    for ip in ips.iter().filter(|_| host_to_pod) {
        out.push(PlannedProbe {
            target: HOST_TO_POD_TARGET.to_owned(),
            protocol: Protocol::Icmp,
            direction: Direction::HostToPod,
            gateway: false,
            address: SocketAddr::new(*ip, 0),
            http: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dual_stack_pod_gets_both_families() {
        let mut targets = Target::defaults().to_vec();
        targets.push("icmp:198.51.100.1".parse().unwrap());
        targets.push("tcp:[2001:db8:100::1]:443".parse().unwrap());
        let ips: Vec<IpAddr> = vec!["10.244.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        let node: Vec<IpAddr> = vec![
            "192.0.2.10".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        ];
        let p = plan(&ips, &node, &targets, &Gateways::default(), Some(7), true);
        let names: Vec<(&str, String)> = p
            .iter()
            .map(|p| (p.target.as_str(), p.address.to_string()))
            .collect();
        assert_eq!(
            names,
            [
                ("gateway", "169.254.1.1:0".to_owned()),
                ("gateway", "[fe80::ecee:eeff:feee:eeee%7]:0".to_owned()),
                ("node", "192.0.2.10:0".to_owned()),
                ("node", "[2001:db8::10]:0".to_owned()),
                ("icmp:198.51.100.1", "198.51.100.1:0".to_owned()),
                (
                    "tcp:[2001:db8:100::1]:443",
                    "[2001:db8:100::1]:443".to_owned()
                ),
                ("pod", "10.244.0.2:0".to_owned()),
                ("pod", "[fd00::2]:0".to_owned()),
            ]
        );
        assert!(p[0].gateway && p[1].gateway && !p[2].gateway);
        assert_eq!(p[6].direction, Direction::HostToPod);
    }

    #[test]
    fn ipv4_pod_skips_ipv6_targets_and_no_netns_means_host_probes_only() {
        let mut targets = Target::defaults().to_vec();
        targets.push("icmp:2001:db8::1".parse().unwrap());
        let ips: Vec<IpAddr> = vec!["10.244.0.2".parse().unwrap()];
        let node: Vec<IpAddr> = vec![
            "192.0.2.10".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        ];
        assert_eq!(
            plan(&ips, &node, &targets, &Gateways::default(), Some(2), true).len(),
            3
        );
        let host_only = plan(&ips, &node, &targets, &Gateways::default(), None, true);
        assert_eq!(host_only.len(), 1);
        assert_eq!(host_only[0].direction, Direction::HostToPod);
        let no_host = plan(
            &ips,
            &node,
            &targets[..1],
            &Gateways::default(),
            Some(2),
            false,
        );
        assert_eq!(no_host.len(), 1, "{no_host:?}");
        assert_eq!(no_host[0].target, "gateway");
    }
}
