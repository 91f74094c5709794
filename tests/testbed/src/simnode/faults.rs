//! The faults a test injects into a wired node: routes deleted, redirected or black-holed,
//! links set down, sysctls (proxy ARP, forwarding) turned off, and their repairs.

use std::future::Future;
use std::net::IpAddr;

use anyhow::Result;
use ipnet::IpNet;
use rtnetlink::Handle;
use rtnetlink::packet_route::route::RouteProtocol;

use super::netlink::{default_via, gateway_route, outside_return_routes};
use super::*;
use crate::netns::{self};

impl SimNode {
    /// `ip route del default` inside the pod (IPv4, or IPv6).
    pub fn delete_pod_default_route(&self, index: usize, ipv4: bool) -> Result<()> {
        let gw = if ipv4 {
            IpAddr::V4(POD_GATEWAY_IPV4)
        } else {
            IpAddr::V6(POD_GATEWAY_IPV6)
        };
        netns::with_netns(&self.pod(index).netns_path(), move |h| async move {
            let eth0 = index_of(&h, "eth0").await?;
            h.route().del(default_via(gw, eth0)).execute().await?;
            Ok(())
        })
    }

    /// Put the pod's default routes back, and the on-link route to its gateway (both go when
    /// its eth0 goes down).
    pub fn restore_pod_default_routes(&self, index: usize) -> Result<()> {
        let v6 = self.pod(index).ipv6.is_some();
        netns::with_netns(&self.pod(index).netns_path(), move |h| async move {
            let eth0 = index_of(&h, "eth0").await?;
            h.route()
                .add(gateway_route(eth0))
                .replace()
                .execute()
                .await?;
            h.route()
                .add(default_via(POD_GATEWAY_IPV4.into(), eth0))
                .replace()
                .execute()
                .await?;
            if v6 {
                h.route()
                    .add(default_via(POD_GATEWAY_IPV6.into(), eth0))
                    .replace()
                    .execute()
                    .await?;
            }
            Ok(())
        })
    }

    fn node_run<F, Fut>(&self, f: F) -> Result<()>
    where
        F: FnOnce(Handle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>>,
    {
        self.node.run(f)
    }

    /// The incident: `ip route del <podIP>/32 dev caliX` for one of the pod's IPs.
    pub fn delete_route(&self, index: usize, ip: IpAddr) -> Result<()> {
        let oif = self.pod(index).host_index;
        self.node_run(move |h| async move {
            h.route().del(pod_route(ip, oif)?).execute().await?;
            Ok(())
        })
    }

    /// Repair: put every host route of the pod back as Calico has it (`ip route replace`).
    pub fn restore_routes(&self, index: usize) -> Result<()> {
        let pod = self.pod(index);
        let (oif, ips) = (pod.host_index, pod.ips());
        self.node_run(move |h| async move {
            for ip in ips {
                h.route()
                    .add(pod_route(ip, oif)?)
                    .replace()
                    .execute()
                    .await?;
            }
            Ok(())
        })
    }

    /// Point the pod's IPv4 route at another pod's interface (a stale route after IP reuse).
    pub fn route_via_other_pod(&self, index: usize, other: usize) -> Result<()> {
        let ip = IpAddr::V4(self.pod(index).ipv4);
        let oif = self.pod(other).host_index;
        self.node_run(move |h| async move {
            h.route()
                .add(pod_route(ip, oif)?)
                .replace()
                .execute()
                .await?;
            Ok(())
        })
    }

    /// Replace the pod's IPv4 route with a blackhole route.
    pub fn blackhole_route(&self, index: usize) -> Result<()> {
        let net = IpNet::from(IpAddr::V4(self.pod(index).ipv4));
        self.node_run(move |h| async move {
            let mut msg = blackhole(net)?;
            msg.header.protocol = RouteProtocol::Boot;
            h.route().add(msg).replace().execute().await?;
            Ok(())
        })
    }

    /// `ip link set caliX up|down` on the node.
    pub fn set_host_link(&self, index: usize, up: bool) -> Result<()> {
        let idx = self.pod(index).host_index;
        self.node_run(move |h| async move { set_link(&h, idx, up).await })
    }

    /// `ip link set eth0 up|down` inside the pod: the host side loses its carrier.
    pub fn set_pod_link(&self, index: usize, up: bool) -> Result<()> {
        netns::with_netns(&self.pod(index).netns_path(), move |h| async move {
            let eth0 = index_of(&h, "eth0").await?;
            set_link(&h, eth0, up).await
        })
    }

    /// The outside network's routes back to the pods: without them every pod reaches its
    /// gateway and the node, and nothing beyond.
    pub fn set_outside_return_routes(&self, present: bool) -> Result<()> {
        self.outside.run(move |h| async move {
            let eth0 = index_of(&h, "eth0").await?;
            for msg in outside_return_routes(eth0)? {
                if present {
                    h.route().add(msg).replace().execute().await?;
                } else {
                    h.route().del(msg).execute().await?;
                }
            }
            Ok(())
        })
    }

    /// `sysctl net.ipv4.conf.caliX.proxy_arp`.
    pub fn set_proxy_arp(&self, index: usize, on: bool) -> Result<()> {
        let key = format!("net.ipv4.conf.{}.proxy_arp", self.pod(index).interface);
        self.node.sysctl(&key, if on { "1" } else { "0" })
    }

    /// `sysctl net.ipv4.conf.caliX.forwarding`.
    pub fn set_interface_forwarding(&self, index: usize, on: bool) -> Result<()> {
        let key = format!("net.ipv4.conf.{}.forwarding", self.pod(index).interface);
        self.node.sysctl(&key, if on { "1" } else { "0" })
    }

    /// `sysctl net.ipv4.ip_forward` on the node. Turning it on again also turns it on for every
    /// interface, as the kernel does.
    pub fn set_forwarding(&self, on: bool) -> Result<()> {
        self.node
            .sysctl("net.ipv4.ip_forward", if on { "1" } else { "0" })
    }
}
