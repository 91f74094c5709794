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
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::TryStreamExt;
use ipnet::IpNet;
use podnet_probe::cni::veth_name;
use rtnetlink::packet_route::address::AddressHeaderFlags;
use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::packet_route::route::{RouteMessage, RouteProtocol, RouteScope, RouteType};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::netns::{self, NetnsThread};

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

/// `ip link show NAME` → ifindex.
pub async fn index_of(h: &Handle, name: &str) -> Result<u32> {
    let msg = h
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await?
        .ok_or_else(|| anyhow!("no link {name}"))?;
    Ok(msg.header.index)
}

async fn link_up(h: &Handle, name: &str) -> Result<()> {
    set_link(h, index_of(h, name).await?, true).await
}

/// `ip link set dev INDEX up|down`.
pub async fn set_link(h: &Handle, index: u32, up: bool) -> Result<()> {
    let b = LinkUnspec::new_with_index(index);
    let msg = if up { b.up() } else { b.down() }.build();
    h.link().set(msg).execute().await?;
    Ok(())
}

/// `ip link set dev INDEX netns NS`.
async fn move_link(h: &Handle, index: u32, netns: &std::path::Path) -> Result<()> {
    let f = File::open(netns)?;
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .setns_by_fd(f.as_raw_fd())
                .build(),
        )
        .execute()
        .await?;
    Ok(())
}

/// `ip addr add IP/LEN dev INDEX nodad`.
async fn add_address(h: &Handle, index: u32, ip: IpAddr, len: u8) -> Result<()> {
    let mut req = h.address().add(index, ip, len);
    if ip.is_ipv6() {
        req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
    }
    req.execute().await?;
    Ok(())
}

/// A pod's eth0 MAC: locally administered, unique per pod index.
fn pod_mac(index: usize) -> [u8; 6] {
    [
        0x02,
        0x42,
        0x0a,
        (index >> 16) as u8,
        (index >> 8) as u8,
        index as u8,
    ]
}

/// `ip route add 169.254.1.1 dev INDEX scope link` (inside a pod).
fn gateway_route(eth0: u32) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(POD_GATEWAY_IPV4, 32)
        .output_interface(eth0)
        .scope(RouteScope::Link)
        .build()
}

/// `ip route add default via GW dev INDEX`.
fn default_via(gw: IpAddr, oif: u32) -> RouteMessage {
    let b = RouteMessageBuilder::<IpAddr>::new();
    let b = match gw {
        IpAddr::V4(_) => b.destination_prefix(Ipv4Addr::UNSPECIFIED.into(), 0),
        IpAddr::V6(_) => b.destination_prefix(Ipv6Addr::UNSPECIFIED.into(), 0),
    };
    // Both calls only fail on a family mismatch, impossible here.
    let b = b.and_then(|b| b.gateway(gw)).unwrap_or_default();
    b.output_interface(oif).build()
}

/// `ip route add 10.244.0.0/16 via 192.0.2.10` and `fd00::/8 via 2001:db8::10` (outside).
fn outside_return_routes(oif: u32) -> Result<Vec<RouteMessage>> {
    [
        ("10.244.0.0/16", IpAddr::from(NODE_IPV4)),
        ("fd00::/8", IpAddr::from(NODE_IPV6)),
    ]
    .into_iter()
    .map(|(cidr, via)| {
        let net: IpNet = cidr.parse()?;
        Ok(RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(net.addr(), net.prefix_len())?
            .gateway(via)?
            .output_interface(oif)
            .build())
    })
    .collect()
}

/// Calico's host route: `ip route add IP/32 dev caliX scope link proto boot` (`/128` for IPv6).
pub fn pod_route(ip: IpAddr, oif: u32) -> Result<RouteMessage> {
    let len = if ip.is_ipv4() { 32 } else { 128 };
    let scope = if ip.is_ipv4() {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    Ok(RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(ip, len)?
        .output_interface(oif)
        .scope(scope)
        .protocol(RouteProtocol::Boot)
        .build())
}

/// Felix's IPAM block route: `ip route add blackhole BLOCK proto 80`.
pub(crate) fn blackhole(net: IpNet) -> Result<RouteMessage> {
    Ok(RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(net.addr(), net.prefix_len())?
        .kind(RouteType::BlackHole)
        .protocol(RouteProtocol::Other(PROTO_FELIX))
        .build())
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
