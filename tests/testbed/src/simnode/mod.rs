//! A simulated Calico node, built from real network namespaces, veth pairs and routes.
//!
//! ```text
//!  outside netns                    node netns                         pod netns (one per pod)
//!  lo 198.51.100.1/32               eth0 192.0.2.10/24, 2001:db8::10   eth0 10.244.x.y/32 [fd00:10:244::n/128]
//!     2001:db8:100::1/128             default via 192.0.2.1            169.254.1.1 dev eth0 scope link
//!  eth0 192.0.2.1/24 ─── veth ───   caliXXXXXXXXXXX (ee:ee:ee:ee:ee:ee) default via 169.254.1.1 dev eth0
//!  10.244.0.0/16 via 192.0.2.10       <podIP>/32 dev caliX scope link  default via fe80::ecee:eeff:feee:eeee
//!  fd00::/8 via 2001:db8::10           blackhole 10.244.x.0/26 proto 80
//! ```
//!
//! Each pod is wired in the order Calico's CNI plugin uses (`cni-plugin/pkg/dataplane/linux`):
//! the veth pair is created inside the pod namespace, the pod side gets its address and routes,
//! the host side (MAC `ee:ee:ee:ee:ee:ee`) is moved to the node, gets its sysctls, is set up,
//! and finally gets its host route and a permanent neighbour entry (as felix adds).
//!
//! Every namespace is named `pn<pid>x<n>-…`, unique per instance, and removed on drop, also
//! when a test panics; [`crate::netns::cleanup_leftovers`] removes those of dead processes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use ipnet::IpNet;
use rtnetlink::{LinkUnspec, LinkVeth};

use crate::netns::{self, NetnsThread};

mod faults;
mod lifecycle;
mod netlink;

pub(crate) use netlink::blackhole;
use netlink::{add_address, default_via, link_up, move_link, outside_return_routes};
pub use netlink::{index_of, pod_route, set_link};

/// The node's uplink address.
pub const NODE_IPV4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// The node's IPv6 uplink address.
pub const NODE_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
/// The outside router (the node's default gateway).
pub const GATEWAY_IPV4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The outside router's IPv6 address.
pub const GATEWAY_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// A host "outside the cluster", on the outside namespace's loopback.
pub const OUTSIDE_IPV4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// Its IPv6 address.
pub const OUTSIDE_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
/// Calico's gateway address inside every pod.
pub const POD_GATEWAY_IPV4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// Calico's IPv6 gateway inside pods: the link-local of a host veth with MAC ee:ee:ee:ee:ee:ee.
pub const POD_GATEWAY_IPV6: Ipv6Addr =
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);
/// MAC address of every Calico host veth.
pub const CALI_MAC: [u8; 6] = [0xee; 6];
/// Felix's route protocol for IPAM block blackholes.
pub const PROTO_FELIX: u8 = 80;
/// Pods per IPAM block (/26 IPv4, /122 IPv6; two addresses of each block unused).
const PODS_PER_BLOCK: usize = 60;

static INSTANCES: AtomicUsize = AtomicUsize::new(0);

/// What a new pod looks like.
#[derive(Debug, Clone)]
pub struct PodSpec {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Also give it an IPv6 address.
    pub dual_stack: bool,
    /// Its IPv4 address, if not the next free one (e.g. an IP reused from a deleted pod).
    pub ipv4: Option<Ipv4Addr>,
    /// Add its host routes (the CNI's last step). Off: the route step never happened.
    pub host_route: bool,
}

impl PodSpec {
    /// The default spec for the n-th pod: spread over a few namespaces.
    pub fn numbered(n: usize, dual_stack: bool) -> Self {
        const NAMESPACES: [&str; 4] = ["default", "shop", "payments", "kube-system"];
        PodSpec {
            namespace: NAMESPACES[n % NAMESPACES.len()].to_owned(),
            name: format!("app-{n}"),
            dual_stack,
            ipv4: None,
            host_route: true,
        }
    }

    /// A pod with this namespace and name.
    pub fn named(namespace: &str, name: &str) -> Self {
        PodSpec {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            dual_stack: false,
            ipv4: None,
            host_route: true,
        }
    }

    /// Use this IPv4 address.
    pub fn with_ipv4(mut self, ip: Ipv4Addr) -> Self {
        self.ipv4 = Some(ip);
        self
    }

    /// Do not add its host routes.
    pub fn without_host_route(mut self) -> Self {
        self.host_route = false;
        self
    }
}

/// One simulated pod.
#[derive(Debug, Clone)]
pub struct SimPod {
    /// Index, unique in this node (never reused).
    pub index: usize,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Name of its network namespace.
    pub netns: String,
    /// Host-side interface (`cali…`).
    pub interface: String,
    /// Host-side interface index in the node namespace.
    pub host_index: u32,
    /// IPv4 address.
    pub ipv4: Ipv4Addr,
    /// IPv6 address, for dual-stack pods.
    pub ipv6: Option<Ipv6Addr>,
    /// MAC of its eth0.
    pub mac: [u8; 6],
    /// When the namespace has no bind mount any more: the process that holds it.
    pub holder: Option<u32>,
}

impl SimPod {
    /// A file that is the pod's namespace.
    pub fn netns_path(&self) -> PathBuf {
        match self.holder {
            Some(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            None => netns::path(&self.netns),
        }
    }

    /// All its IPs.
    pub fn ips(&self) -> Vec<IpAddr> {
        let mut v = vec![IpAddr::V4(self.ipv4)];
        v.extend(self.ipv6.map(IpAddr::V6));
        v
    }
}

fn pod_ipv4(i: usize) -> Ipv4Addr {
    let offset = (i / PODS_PER_BLOCK) * 64 + i % PODS_PER_BLOCK + 2;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + offset as u32)
}

fn pod_ipv6(i: usize) -> Ipv6Addr {
    let offset = (i / PODS_PER_BLOCK) * 64 + i % PODS_PER_BLOCK + 2;
    Ipv6Addr::from(u128::from(Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, 0)) + offset as u128)
}

fn block_of(ip: IpAddr) -> IpNet {
    let len = if ip.is_ipv4() { 26 } else { 122 };
    IpNet::new(ip, len)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| IpNet::from(ip))
}

/// A pod sandbox whose namespace exists but is not wired yet ([`SimNode::create_pod_netns`]).
#[derive(Debug)]
pub struct PendingPod {
    index: usize,
    spec: PodSpec,
    netns: String,
}

impl PendingPod {
    /// Name of its network namespace.
    pub fn netns(&self) -> &str {
        &self.netns
    }
}

/// A simulated Calico node. Dropping it tears everything down.
#[derive(Debug)]
pub struct SimNode {
    base: String,
    pub(crate) node: NetnsThread,
    outside: NetnsThread,
    pub(crate) pods: BTreeMap<usize, SimPod>,
    /// Namespaces of pods created but not wired.
    pending: BTreeSet<String>,
    next_index: usize,
    blocks: BTreeSet<IpNet>,
    holders: BTreeMap<usize, Child>,
    pub(crate) listeners: Vec<Listener>,
    wiring: Wiring,
    /// Namespaces whose bind mount was removed, kept alive by an open file (see `faults`).
    pub(crate) detached: BTreeMap<usize, File>,
}

/// Whose CNI wires the simulated pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wiring {
    /// Calico's (the default): `cali…`, proxy ARP, IPAM block blackholes, felix's neighbours.
    Calico,
    /// AWS VPC CNI's (`cmd/routed-eni-cni-plugin/driver`): `eni…`, the same `/32 scope link`
    /// host route, the gateway 169.254.1.1 resolved by a permanent neighbour inside the pod
    /// (the host veth's MAC), no proxy ARP, no blackhole blocks.
    AwsVpcCni,
}

/// A TCP listener on a thread that accepts and drops connections until stopped.
#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl SimNode {
    /// A node with `pods` pods; those whose index is in `dual_stack` also get IPv6.
    pub fn new(pods: usize, dual_stack: &[usize]) -> Result<Self> {
        let mut node = Self::empty()?;
        for i in 0..pods {
            node.add_pod(PodSpec::numbered(i, dual_stack.contains(&i)))?;
        }
        Ok(node)
    }

    /// A node with `pods` IPv4 pods wired as AWS VPC CNI wires them.
    pub fn aws_vpc_cni(pods: usize) -> Result<Self> {
        let mut node = Self::empty()?;
        node.wiring = Wiring::AwsVpcCni;
        for i in 0..pods {
            node.add_pod(PodSpec::numbered(i, false))?;
        }
        Ok(node)
    }

    /// A node and its outside network, without pods.
    pub fn empty() -> Result<Self> {
        netns::require_root()?;
        netns::cleanup_leftovers()?;
        let base = format!(
            "{}{}x{}",
            netns::NAME_PREFIX,
            std::process::id(),
            INSTANCES.fetch_add(1, Ordering::Relaxed)
        );
        let node = NetnsThread::create(&format!("{base}-node"))?;
        let outside = match NetnsThread::create(&format!("{base}-out")) {
            Ok(o) => o,
            Err(e) => {
                drop(node);
                let _ = netns::delete(&format!("{base}-node"));
                return Err(e);
            }
        };
        let mut sim = SimNode {
            base,
            node,
            outside,
            pods: BTreeMap::new(),
            pending: BTreeSet::new(),
            next_index: 0,
            blocks: BTreeSet::new(),
            holders: BTreeMap::new(),
            listeners: Vec::new(),
            wiring: Wiring::Calico,
            detached: BTreeMap::new(),
        };
        sim.wire_uplink().context("wiring the node's uplink")?;
        Ok(sim)
    }

    fn wire_uplink(&mut self) -> Result<()> {
        for ns in [&self.node, &self.outside] {
            ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        }
        self.node.sysctl("net.ipv4.ip_forward", "1")?;
        self.node.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        let outside_path = netns::path(self.outside.name());
        self.node.run(move |h| async move {
            link_up(&h, "lo").await?;
            h.link()
                .add(LinkVeth::new("eth0", "uplink-peer").build())
                .execute()
                .await?;
            let peer = index_of(&h, "uplink-peer").await?;
            move_link(&h, peer, &outside_path).await?;
            let eth0 = index_of(&h, "eth0").await?;
            add_address(&h, eth0, NODE_IPV4.into(), 24).await?;
            add_address(&h, eth0, NODE_IPV6.into(), 64).await?;
            set_link(&h, eth0, true).await?;
            h.route()
                .add(default_via(GATEWAY_IPV4.into(), eth0))
                .execute()
                .await?;
            h.route()
                .add(default_via(GATEWAY_IPV6.into(), eth0))
                .execute()
                .await?;
            Ok(())
        })?;
        self.outside.run(move |h| async move {
            link_up(&h, "lo").await?;
            let lo = index_of(&h, "lo").await?;
            add_address(&h, lo, OUTSIDE_IPV4.into(), 32).await?;
            add_address(&h, lo, OUTSIDE_IPV6.into(), 128).await?;
            let peer = index_of(&h, "uplink-peer").await?;
            h.link()
                .set(LinkUnspec::new_with_index(peer).name("eth0").build())
                .execute()
                .await?;
            add_address(&h, peer, GATEWAY_IPV4.into(), 24).await?;
            add_address(&h, peer, GATEWAY_IPV6.into(), 64).await?;
            set_link(&h, peer, true).await?;
            for msg in outside_return_routes(peer)? {
                h.route().add(msg).execute().await?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Name of the node's network namespace (where the agent runs).
    pub fn node_netns(&self) -> &str {
        self.node.name()
    }

    /// Name of the outside network's namespace.
    pub fn outside_netns(&self) -> &str {
        self.outside.name()
    }

    /// A thread inside the node namespace.
    pub fn node(&self) -> &NetnsThread {
        &self.node
    }

    /// A thread inside the outside namespace.
    pub fn outside(&self) -> &NetnsThread {
        &self.outside
    }

    /// The pods, by index.
    pub fn pods(&self) -> impl Iterator<Item = &SimPod> {
        self.pods.values()
    }

    /// One pod. Panics if there is no such pod (a test bug).
    pub fn pod(&self, index: usize) -> &SimPod {
        self.pods
            .get(&index)
            .unwrap_or_else(|| panic!("no pod {index}"))
    }

    /// A TCP listener on `addr` in the outside namespace (`198.51.100.1:PORT`), accepting and
    /// closing connections until the node is torn down.
    pub fn listen_outside(&mut self, addr: SocketAddr) -> Result<()> {
        let listener = self.outside.run_blocking(move || {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => drop(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        self.listeners.push(Listener {
            addr,
            stop,
            thread: Some(thread),
        });
        Ok(())
    }

    /// Tear everything down (also done on drop).
    pub fn teardown(&mut self) -> Result<()> {
        let mut first_err = None;
        for l in &mut self.listeners {
            l.stop();
        }
        self.listeners.clear();
        for (_, mut holder) in std::mem::take(&mut self.holders) {
            let _ = holder.kill();
            let _ = holder.wait();
        }
        self.detached.clear();
        for pod in std::mem::take(&mut self.pods).into_values() {
            if let Err(e) = netns::delete(&pod.netns) {
                first_err.get_or_insert(e);
            }
        }
        for name in std::mem::take(&mut self.pending) {
            if let Err(e) = netns::delete(&name) {
                first_err.get_or_insert(e);
            }
        }
        for t in [&mut self.node, &mut self.outside] {
            t.stop();
            if let Err(e) = netns::delete(t.name()) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for SimNode {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("tearing down simulated node {}: {e:#}", self.base);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addressing() {
        assert_eq!(pod_ipv4(0), Ipv4Addr::new(10, 244, 0, 2));
        assert_eq!(pod_ipv4(59), Ipv4Addr::new(10, 244, 0, 61));
        assert_eq!(pod_ipv4(60), Ipv4Addr::new(10, 244, 0, 66));
        assert_eq!(pod_ipv4(249), Ipv4Addr::new(10, 244, 1, 11));
        assert_eq!(
            block_of(pod_ipv4(60).into()),
            "10.244.0.64/26".parse::<IpNet>().unwrap()
        );
        assert_eq!(pod_ipv6(0), "fd00:10:244::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            block_of(pod_ipv6(61).into()),
            "fd00:10:244::40/122".parse::<IpNet>().unwrap()
        );
    }
}
