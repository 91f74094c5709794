//! Fault injection on a simulated node beyond the wiring faults of [`SimNode`] itself: each
//! helper is one `ip` command (named in its doc) and has its repair next to it; and what a
//! leak check reads back.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use anyhow::{Context, Result, anyhow};
use futures::TryStreamExt;
use ipnet::IpNet;
use nix::mount::{MsFlags, mount};

use crate::netns;
use crate::simnode::{SimNode, blackhole, index_of, pod_route};

impl SimNode {
    /// `ip link del caliX` on the node while the pod lives: the kernel removes both ends of
    /// the veth and the host routes; the pod's namespace stays. Repair: [`SimNode::wire`].
    pub fn delete_host_link(&self, index: usize) -> Result<()> {
        let idx = self.pod(index).host_index;
        self.node.run(move |h| async move {
            h.link().del(idx).execute().await?;
            Ok(())
        })
    }

    /// `umount /run/netns/<pod>; rm /run/netns/<pod>` while something else keeps the namespace
    /// alive (here: an open file in this process, found by no `/proc/<pid>/ns/net`): the veth
    /// and route remain, and nobody can enter the namespace by name any more.
    pub fn detach_pod_netns(&mut self, index: usize) -> Result<()> {
        let name = self.pod(index).netns.clone();
        let file = File::open(netns::path(&name)).context("opening the pod namespace")?;
        netns::delete(&name)?;
        self.detached.insert(index, file);
        Ok(())
    }

    /// Undo [`SimNode::detach_pod_netns`]: `touch /run/netns/<pod>; mount --bind
    /// /proc/self/fd/N /run/netns/<pod>`.
    pub fn reattach_pod_netns(&mut self, index: usize) -> Result<()> {
        let file = self
            .detached
            .remove(&index)
            .ok_or_else(|| anyhow!("pod {index}'s namespace is not detached"))?;
        let target = netns::path(&self.pod(index).netns);
        File::create(&target).with_context(|| format!("creating {}", target.display()))?;
        let source = format!("/proc/self/fd/{}", file.as_raw_fd());
        mount(
            Some(source.as_str()),
            &target,
            Some("none"),
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("bind-mounting the namespace at {}", target.display()))?;
        Ok(())
    }

    /// Stop the TCP listener on `addr` in the outside namespace: connections are refused.
    /// Repair: [`SimNode::listen_outside`].
    pub fn close_outside(&mut self, addr: SocketAddr) -> Result<()> {
        let at = self
            .listeners
            .iter()
            .position(|l| l.addr == addr)
            .ok_or_else(|| anyhow!("no listener on {addr}"))?;
        self.listeners.remove(at).stop();
        Ok(())
    }

    /// `ip route add|del blackhole IP/32` (`/128`) on the node: what the pods send to `ip` is
    /// dropped by the node without an answer.
    pub fn set_node_blackhole(&self, ip: IpAddr, present: bool) -> Result<()> {
        let msg = blackhole(IpNet::from(ip))?;
        self.node.run(move |h| async move {
            if present {
                h.route().add(msg).replace().execute().await?;
            } else {
                h.route().del(msg).execute().await?;
            }
            Ok(())
        })
    }

    /// `ip -o link show | grep PREFIX` on the node: names of the node's links with `prefix`.
    pub fn node_links(&self, prefix: &str) -> Result<BTreeSet<String>> {
        let prefix = prefix.to_owned();
        self.node.run(move |h| async move {
            let mut names = BTreeSet::new();
            let mut links = h.link().get().execute();
            while let Some(l) = links.try_next().await? {
                for a in l.attributes {
                    if let rtnetlink::packet_route::link::LinkAttribute::IfName(n) = a
                        && n.starts_with(&prefix)
                    {
                        names.insert(n);
                    }
                }
            }
            Ok(names)
        })
    }

    /// A burst of `changes` kernel changes on the node, as fast as netlink takes them (`ip
    /// -batch`): of every five, four toggle a random pod host route (`ip route del|add`) and
    /// one sets a random pod veth's MTU (`ip link set caliX mtu 1400|1500`, ending at 1500).
    /// Deterministic for a `seed`; returns the host routes that end deleted, as `(ip, oif)`.
    pub fn storm(&self, changes: usize, seed: u64) -> Result<Vec<(IpAddr, u32)>> {
        let routes: Vec<(IpAddr, u32)> = self
            .pods()
            .flat_map(|p| p.ips().into_iter().map(move |ip| (ip, p.host_index)))
            .collect();
        let links: Vec<u32> = self.pods().map(|p| p.host_index).collect();
        if routes.is_empty() {
            return Ok(Vec::new());
        }
        self.node.run(move |h| async move {
            let mut present = vec![true; routes.len()];
            let mut x = seed | 1;
            for n in 0..changes {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if n % 5 == 4 {
                    let link = links[(x % links.len() as u64) as usize];
                    let mtu = if n % 10 == 4 { 1400 } else { 1500 };
                    let msg = rtnetlink::LinkUnspec::new_with_index(link).mtu(mtu).build();
                    h.link().set(msg).execute().await?;
                    continue;
                }
                let k = (x % routes.len() as u64) as usize;
                let (ip, oif) = routes[k];
                if present[k] {
                    h.route().del(pod_route(ip, oif)?).execute().await?;
                } else {
                    h.route().add(pod_route(ip, oif)?).execute().await?;
                }
                present[k] = !present[k];
            }
            for &link in &links {
                let msg = rtnetlink::LinkUnspec::new_with_index(link)
                    .mtu(1500)
                    .build();
                h.link().set(msg).execute().await?;
            }
            Ok(routes
                .iter()
                .zip(present)
                .filter(|(_, p)| !p)
                .map(|(r, _)| *r)
                .collect())
        })
    }

    /// `ip link set dev caliX mtu MTU` on the node: below the pod's eth0 MTU, the veth drops
    /// every packet from the pod larger than this, silently (the MTU mismatch users hit when
    /// a CNI's MTU setting and existing pods disagree). Repair: the same with the pod's MTU.
    pub fn set_host_mtu(&self, index: usize, mtu: u32) -> Result<()> {
        let idx = self.pod(index).host_index;
        self.node.run(move |h| async move {
            h.link()
                .set(rtnetlink::LinkUnspec::new_with_index(idx).mtu(mtu).build())
                .execute()
                .await?;
            Ok(())
        })
    }

    /// `ip link set dev eth0 mtu MTU` inside the pod.
    pub fn set_pod_mtu(&self, index: usize, mtu: u32) -> Result<()> {
        netns::with_netns(&self.pod(index).netns_path(), move |h| async move {
            let eth0 = index_of(&h, "eth0").await?;
            h.link()
                .set(rtnetlink::LinkUnspec::new_with_index(eth0).mtu(mtu).build())
                .execute()
                .await?;
            Ok(())
        })
    }
}
