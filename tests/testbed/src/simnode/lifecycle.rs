//! A pod's lifecycle on the simulated node: its namespace created, wired in the order
//! Calico's CNI plugin uses, held by a process, removed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use podnet_probe::cni::veth_name;
use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::{LinkUnspec, LinkVeth};

use super::netlink::{add_address, default_via, gateway_route, link_up, move_link, pod_mac};
use super::*;
use crate::netns::{self, NetnsThread};

impl SimNode {
    /// Add a pod, wired as Calico's CNI plugin does. Returns its index.
    pub fn add_pod(&mut self, spec: PodSpec) -> Result<usize> {
        let pending = self.create_pod_netns(spec)?;
        self.wire_pending(pending)
    }

    /// The host-side veth name prefix of this node's CNI.
    fn prefix(&self) -> &'static str {
        match self.wiring {
            Wiring::Calico => "cali",
            Wiring::AwsVpcCni => "eni",
        }
    }

    /// The first half of [`SimNode::add_pod`]: the sandbox's network namespace (bind-mounted,
    /// only `lo`), before the CNI runs. The node sees no veth and the namespace has no id
    /// in the node's namespace yet. Torn down with the node if never wired.
    pub fn create_pod_netns(&mut self, spec: PodSpec) -> Result<PendingPod> {
        let index = self.next_index;
        self.next_index += 1;
        let netns = format!("{}-p{index}", self.base);
        self.pending.insert(netns.clone());
        NetnsThread::create(&netns)?;
        Ok(PendingPod { index, spec, netns })
    }

    /// The second half of [`SimNode::add_pod`]: the CNI wires a pending pod.
    pub fn wire_pending(&mut self, pending: PendingPod) -> Result<usize> {
        let PendingPod {
            index,
            spec,
            netns: netns_name,
        } = pending;
        let interface = veth_name(self.prefix(), &spec.namespace, &spec.name);
        let ipv4 = spec.ipv4.unwrap_or_else(|| pod_ipv4(index));
        let ipv6 = spec.dual_stack.then(|| pod_ipv6(index));
        let mac = pod_mac(index);
        let wired = NetnsThread::join(&netns_name).and_then(|pod_ns| {
            self.wire_pod(&pod_ns, &interface, ipv4, ipv6, mac, spec.host_route)
        });
        self.pending.remove(&netns_name);
        let host_index = match wired {
            Ok(i) => i,
            Err(e) => {
                let _ = netns::delete(&netns_name);
                return Err(e.context(format!("wiring pod {}/{}", spec.namespace, spec.name)));
            }
        };
        self.pods.insert(
            index,
            SimPod {
                index,
                namespace: spec.namespace,
                name: spec.name,
                netns: netns_name,
                interface,
                host_index,
                ipv4,
                ipv6,
                mac,
                holder: None,
            },
        );
        Ok(index)
    }

    /// The CNI's first step only: the pod's namespace (`ip netns add`), without a veth yet,
    /// registered as a pod whose `host_index` is 0 until [`SimNode::wire`] (which can also
    /// re-wire it later). Returns its index. (See [`SimNode::create_pod_netns`] for a sandbox
    /// that is not a pod until wired.)
    pub fn add_pod_netns(&mut self, spec: PodSpec) -> Result<usize> {
        let index = self.next_index;
        self.next_index += 1;
        let netns_name = format!("{}-p{index}", self.base);
        NetnsThread::create(&netns_name)?;
        self.pods.insert(
            index,
            SimPod {
                index,
                interface: veth_name(self.prefix(), &spec.namespace, &spec.name),
                namespace: spec.namespace,
                name: spec.name,
                netns: netns_name,
                host_index: 0,
                ipv4: spec.ipv4.unwrap_or_else(|| pod_ipv4(index)),
                ipv6: spec.dual_stack.then(|| pod_ipv6(index)),
                mac: pod_mac(index),
                holder: None,
            },
        );
        Ok(index)
    }

    /// The CNI's later steps for a pod whose namespace exists: veth, addresses, pod routes,
    /// host sysctls, and (with `host_route`) its host routes. Also re-wires a pod whose veth
    /// was deleted.
    pub fn wire(&mut self, index: usize, host_route: bool) -> Result<()> {
        let p = self.pod(index).clone();
        let pod_ns = NetnsThread::join_path(&p.netns, &p.netns_path())?;
        let wired = self.wire_pod(&pod_ns, &p.interface, p.ipv4, p.ipv6, p.mac, host_route);
        drop(pod_ns);
        let host_index = wired.with_context(|| format!("wiring pod {}/{}", p.namespace, p.name))?;
        if let Some(p) = self.pods.get_mut(&index) {
            p.host_index = host_index;
        }
        Ok(())
    }

    fn wire_pod(
        &mut self,
        pod_ns: &NetnsThread,
        interface: &str,
        ipv4: Ipv4Addr,
        ipv6: Option<Ipv6Addr>,
        mac: [u8; 6],
        host_route: bool,
    ) -> Result<u32> {
        pod_ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        pod_ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        let node_path = netns::path(self.node.name());
        let iface = interface.to_owned();
        let aws = self.wiring == Wiring::AwsVpcCni;
        // Pod side, inside the pod namespace (CNI: DoNetworking).
        pod_ns.run(move |h| async move {
            link_up(&h, "lo").await?;
            h.link()
                .add(LinkVeth::new("eth0", &iface).build())
                .execute()
                .await?;
            let eth0 = index_of(&h, "eth0").await?;
            let host = index_of(&h, &iface).await?;
            h.link()
                .set(
                    LinkUnspec::new_with_index(host)
                        .address(CALI_MAC.to_vec())
                        .build(),
                )
                .execute()
                .await?;
            h.link()
                .set(
                    LinkUnspec::new_with_index(eth0)
                        .address(mac.to_vec())
                        .up()
                        .build(),
                )
                .execute()
                .await?;
            add_address(&h, eth0, ipv4.into(), 32).await?;
            if let Some(v6) = ipv6 {
                add_address(&h, eth0, v6.into(), 128).await?;
            }
            h.route().add(gateway_route(eth0)).execute().await?;
            h.route()
                .add(default_via(POD_GATEWAY_IPV4.into(), eth0))
                .execute()
                .await?;
            if aws {
                // AWS VPC CNI: `ip neigh add 169.254.1.1 lladdr <host veth MAC> dev eth0
                // nud permanent` instead of proxy ARP on the host.
                h.neighbours()
                    .add(eth0, POD_GATEWAY_IPV4.into())
                    .link_layer_address(&CALI_MAC)
                    .state(NeighbourState::Permanent)
                    .execute()
                    .await?;
            }
            if ipv6.is_some() {
                h.route()
                    .add(default_via(POD_GATEWAY_IPV6.into(), eth0))
                    .execute()
                    .await?;
            }
            // Hand the host side to the node.
            move_link(&h, host, &node_path).await?;
            Ok(())
        })?;
        // Host side (CNI: configureSysctls, then SetupRoutes; felix: static ARP). AWS VPC CNI
        // sets no proxy ARP/NDP, adds no neighbour for the pod and has no IPAM blocks.
        let proxy = if aws { "0" } else { "1" };
        for (k, v) in [
            ("net.ipv4.conf.{}.proxy_arp", proxy),
            ("net.ipv4.neigh.{}.proxy_delay", "0"),
            ("net.ipv4.conf.{}.forwarding", "1"),
            ("net.ipv4.conf.{}.route_localnet", "1"),
            ("net.ipv6.conf.{}.accept_dad", "0"),
            ("net.ipv6.conf.{}.accept_ra", "0"),
            ("net.ipv6.conf.{}.proxy_ndp", proxy),
            ("net.ipv6.conf.{}.forwarding", "1"),
        ] {
            self.node.sysctl(&k.replace("{}", interface), v)?;
        }
        let iface = interface.to_owned();
        let host_index = self.node.run(move |h| async move {
            let idx = index_of(&h, &iface).await?;
            set_link(&h, idx, true).await?;
            if host_route {
                h.route()
                    .add(pod_route(ipv4.into(), idx)?)
                    .execute()
                    .await?;
                if let Some(v6) = ipv6 {
                    h.route().add(pod_route(v6.into(), idx)?).execute().await?;
                }
            }
            // Replace, as felix does (`ip neigh replace`): the agent may already have
            // probed the pod through its new route, leaving an incomplete entry.
            if !aws {
                h.neighbours()
                    .add(idx, ipv4.into())
                    .link_layer_address(&mac)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await?;
            }
            Ok(idx)
        })?;
        for ip in [Some(IpAddr::V4(ipv4)), ipv6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
            .filter(|_| !aws)
        {
            let block = block_of(ip);
            if self.blocks.insert(block) {
                self.node.run(move |h| async move {
                    h.route().add(blackhole(block)?).execute().await?;
                    Ok(())
                })?;
            }
        }
        Ok(host_index)
    }

    /// Delete a pod: its namespace goes, and the kernel removes its veth and host route.
    pub fn remove_pod(&mut self, index: usize) -> Result<SimPod> {
        let pod = self
            .pods
            .remove(&index)
            .ok_or_else(|| anyhow!("no pod {index}"))?;
        if let Some(mut holder) = self.holders.remove(&index) {
            let _ = holder.kill();
            let _ = holder.wait();
        }
        self.detached.remove(&index);
        netns::delete(&pod.netns)?;
        Ok(pod)
    }

    /// Make a pod's namespace reachable only through a process, as for containers whose
    /// runtime does not bind-mount it: a process is started inside, the bind mount removed.
    pub fn hold_by_process(&mut self, index: usize) -> Result<u32> {
        let netns_name = self.pod(index).netns.clone();
        let want = netns::inode(&netns::path(&netns_name)).context("pod namespace inode")?;
        let child = Command::new("ip")
            .args(["netns", "exec", &netns_name, "sleep", "1000000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting the process that holds the pod's namespace")?;
        let pid = child.id();
        self.holders.insert(index, child);
        let proc_ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while netns::inode(&proc_ns) != Some(want) {
            if Instant::now() > deadline {
                bail!("the holder process did not enter the pod's namespace");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        netns::delete(&netns_name)?;
        if let Some(p) = self.pods.get_mut(&index) {
            p.holder = Some(pid);
        }
        Ok(pid)
    }
}
