//! A second simulated node, node B, joined to a [`SimNode`] (node A) by Calico's VXLAN
//! overlay, for the cross-node probe.
//!
//! ```text
//!  node A netns                    outside netns (the underlay L2)      node B netns
//!  eth0 192.0.2.10/24 ── veth ──── eth0 ┐                               eth0 192.0.2.20/24
//!                                        ul0 bridge 192.0.2.1/24 ───────── veth (ul-b)
//!  vxlan.calico 10.244.0.1/32      (VNI 4096, dstport 4789, no learning)   vxlan.calico 10.244.200.1/32
//!   fdb 66:..:0b dst 192.0.2.20                                             fdb 66:..:0a dst 192.0.2.10
//!   neigh 10.244.200.1 lladdr 66:..:0b                                      neigh 10.244.0.1 lladdr 66:..:0a
//!   10.244.200.0/26 via 10.244.200.1 onlink                                10.244.0.0/26 via 10.244.0.1 onlink
//!                                                                           calib0 ── pod 10.244.200.2/32
//! ```
//!
//! As felix programs VXLAN mode: a VTEP per node with its tunnel address from the node's
//! block, a static FDB entry and a permanent neighbour per remote VTEP, and each remote block
//! routed via the remote tunnel address `onlink`. Node B is named after node A's namespaces
//! (`…-peer`, `…-peerpod`), so [`crate::netns::cleanup_leftovers`] finds them too; they are
//! removed on drop, also when a test panics.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, Result, bail};
use podnet_kube_double::{KubeApiServer, block_affinity, calico_node};

use crate::netns::{self, NetnsThread};
use crate::simnode::SimNode;

/// Node B's address on the underlay.
pub const PEER_IPV4: &str = "192.0.2.20";
/// Node B's VXLAN tunnel address (its `projectcalico.org/IPv4VXLANTunnelAddr`).
pub const PEER_TUNNEL: &str = "10.244.200.1";
/// Node B's block.
pub const PEER_BLOCK: &str = "10.244.200.0/26";
/// Node B's pod.
pub const PEER_POD: &str = "10.244.200.2";
/// Node A's tunnel address (an unused address of its first block).
pub const LOCAL_TUNNEL: &str = "10.244.0.1";
/// Node A's first block.
pub const LOCAL_BLOCK: &str = "10.244.0.0/26";
const MAC_A: &str = "66:00:00:00:00:0a";
const MAC_B: &str = "66:00:00:00:00:0b";

/// Node B with its pod, and the overlay between it and node A.
#[derive(Debug)]
pub struct VxlanPeer {
    node_a: String,
    peer: NetnsThread,
    pod: NetnsThread,
    extra_addresses: Vec<String>,
}

/// `ip ARGS…` (or another iproute2 tool); an error carries its stderr.
fn run(tool: &str, args: &str) -> Result<()> {
    let out = Command::new(tool)
        .args(args.split_whitespace())
        .output()
        .with_context(|| format!("running {tool}"))?;
    if !out.status.success() {
        bail!(
            "{tool} {args}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl VxlanPeer {
    /// Build node B next to `a` and the overlay between them. The outside namespace's end
    /// of `a`'s uplink becomes a port of the underlay bridge (its addresses and routes move
    /// to the bridge, so `a`'s default route still works).
    pub fn new(a: &SimNode) -> Result<Self> {
        let base = a.node_netns().trim_end_matches("-node").to_owned();
        let peer = NetnsThread::create(&format!("{base}-peer"))?;
        let pod = match NetnsThread::create(&format!("{base}-peerpod")) {
            Ok(p) => p,
            Err(e) => {
                drop(peer);
                let _ = netns::delete(&format!("{base}-peer"));
                return Err(e);
            }
        };
        let v = VxlanPeer {
            node_a: a.node_netns().to_owned(),
            peer,
            pod,
            extra_addresses: Vec::new(),
        };
        v.build(a.outside_netns()).context("building node B")?;
        Ok(v)
    }

    fn build(&self, out: &str) -> Result<()> {
        let (a, b, p) = (&self.node_a, self.peer.name(), self.pod.name());
        // The underlay: a bridge in the outside namespace.
        run("ip", &format!("-n {out} link add ul0 type bridge"))?;
        run("ip", &format!("-n {out} link set ul0 up"))?;
        run("ip", &format!("-n {out} addr flush dev eth0 scope global"))?;
        run("ip", &format!("-n {out} link set eth0 master ul0"))?;
        run("ip", &format!("-n {out} addr add 192.0.2.1/24 dev ul0"))?;
        run(
            "ip",
            &format!("-n {out} addr add 2001:db8::1/64 dev ul0 nodad"),
        )?;
        run(
            "ip",
            &format!("-n {out} route replace 10.244.0.0/16 via 192.0.2.10"),
        )?;
        run(
            "ip",
            &format!("-n {out} route replace fd00::/8 via 2001:db8::10"),
        )?;
        // Node B on the underlay.
        run("ip", &format!("-n {b} link set lo up"))?;
        run(
            "ip",
            &format!("-n {out} link add ul-b type veth peer name eth0 netns {b}"),
        )?;
        run("ip", &format!("-n {out} link set ul-b master ul0 up"))?;
        run("ip", &format!("-n {b} addr add {PEER_IPV4}/24 dev eth0"))?;
        run("ip", &format!("-n {b} link set eth0 up"))?;
        self.peer.sysctl("net.ipv4.ip_forward", "1")?;
        // The VTEPs, as felix creates them.
        for (ns, local, mac, tunnel) in [
            (a.as_str(), "192.0.2.10", MAC_A, LOCAL_TUNNEL),
            (b, PEER_IPV4, MAC_B, PEER_TUNNEL),
        ] {
            run(
                "ip",
                &format!(
                    "-n {ns} link add vxlan.calico address {mac} type vxlan id 4096 dstport 4789 local {local} dev eth0 nolearning"
                ),
            )?;
            run("ip", &format!("-n {ns} link set vxlan.calico mtu 1450 up"))?;
            run(
                "ip",
                &format!("-n {ns} addr add {tunnel}/32 dev vxlan.calico"),
            )?;
        }
        self.restore_fdb()?;
        run(
            "bridge",
            &format!("-n {b} fdb append {MAC_A} dev vxlan.calico dst 192.0.2.10"),
        )?;
        run(
            "ip",
            &format!(
                "-n {a} neigh replace {PEER_TUNNEL} lladdr {MAC_B} dev vxlan.calico nud permanent"
            ),
        )?;
        run(
            "ip",
            &format!(
                "-n {b} neigh replace {LOCAL_TUNNEL} lladdr {MAC_A} dev vxlan.calico nud permanent"
            ),
        )?;
        self.restore_route()?;
        run(
            "ip",
            &format!(
                "-n {b} route replace {LOCAL_BLOCK} via {LOCAL_TUNNEL} dev vxlan.calico onlink proto 80"
            ),
        )?;
        // Node B's pod, wired as Calico's CNI plugin wires it.
        run("ip", &format!("-n {p} link set lo up"))?;
        run(
            "ip",
            &format!("-n {p} link add eth0 type veth peer name calib0 netns {b}"),
        )?;
        run("ip", &format!("-n {p} addr add {PEER_POD}/32 dev eth0"))?;
        run("ip", &format!("-n {p} link set eth0 up"))?;
        run(
            "ip",
            &format!("-n {p} route add 169.254.1.1 dev eth0 scope link"),
        )?;
        run(
            "ip",
            &format!("-n {p} route add default via 169.254.1.1 dev eth0"),
        )?;
        run(
            "ip",
            &format!("-n {b} link set calib0 address ee:ee:ee:ee:ee:ee up"),
        )?;
        self.peer.sysctl("net.ipv4.conf.calib0.proxy_arp", "1")?;
        run(
            "ip",
            &format!("-n {b} route add {PEER_POD}/32 dev calib0 scope link"),
        )?;
        Ok(())
    }

    /// Node B's namespace.
    pub fn netns(&self) -> &str {
        self.peer.name()
    }

    /// Break the overlay on node A: remove its FDB entry for node B's VTEP
    /// (`bridge fdb del <mac> dev vxlan.calico dst <B>`): encapsulated packets have nowhere
    /// to go.
    pub fn break_fdb(&self) -> Result<()> {
        run(
            "bridge",
            &format!(
                "-n {} fdb del {MAC_B} dev vxlan.calico dst {PEER_IPV4}",
                self.node_a
            ),
        )
    }

    /// Put node A's FDB entry for node B back.
    pub fn restore_fdb(&self) -> Result<()> {
        run(
            "bridge",
            &format!(
                "-n {} fdb append {MAC_B} dev vxlan.calico dst {PEER_IPV4}",
                self.node_a
            ),
        )
    }

    /// Remove node A's route to node B's block (a felix that stopped programming routes).
    pub fn remove_route(&self) -> Result<()> {
        run("ip", &format!("-n {} route del {PEER_BLOCK}", self.node_a))
    }

    /// Node A's route to node B's block, as felix programs it.
    pub fn restore_route(&self) -> Result<()> {
        run(
            "ip",
            &format!(
                "-n {} route replace {PEER_BLOCK} via {PEER_TUNNEL} dev vxlan.calico onlink proto 80",
                self.node_a
            ),
        )
    }

    /// Give node B `addr` (on its underlay interface) too: a "node" answering there.
    pub fn add_address(&mut self, addr: &str) -> Result<()> {
        run(
            "ip",
            &format!("-n {} addr add {addr}/32 dev eth0", self.peer.name()),
        )?;
        self.extra_addresses.push(addr.to_owned());
        Ok(())
    }

    /// Take every address given by [`VxlanPeer::add_address`] away again.
    pub fn remove_addresses(&mut self) -> Result<()> {
        for addr in std::mem::take(&mut self.extra_addresses) {
            run(
                "ip",
                &format!("-n {} addr del {addr}/32 dev eth0", self.peer.name()),
            )?;
        }
        Ok(())
    }

    /// Put node B (`node-b`: its address, tunnel address and block) and node A's first block
    /// (node A named `node_a`) in the API, as Calico's Node annotations and BlockAffinities.
    pub fn register(&self, api: &KubeApiServer, node_a: &str) {
        api.apply_object(calico_node("node-b", PEER_IPV4, Some(PEER_TUNNEL)));
        api.apply_object(block_affinity("node-b", PEER_BLOCK));
        api.apply_object(block_affinity(node_a, LOCAL_BLOCK));
    }

    /// `n` more nodes in the API that answer, each an address of node B's underlay interface
    /// (no tunnel address, so probed there): `node-rNN` at `192.0.2.(100 + i)`, at most 150.
    pub fn add_answering_nodes(&mut self, api: &KubeApiServer, n: usize) -> Result<()> {
        if n > 150 {
            bail!("{n} answering nodes: at most 150 fit in 192.0.2.100-249");
        }
        for i in 0..n {
            let ip = format!("192.0.2.{}", 100 + i);
            self.add_address(&ip)?;
            api.apply_object(calico_node(&format!("node-r{i:02}"), &ip, None));
        }
        Ok(())
    }

    /// Tear node B down (also done on drop); node A's side goes with node A.
    pub fn teardown(&mut self) -> Result<()> {
        let mut first_err = None;
        for t in [&mut self.pod, &mut self.peer] {
            t.stop();
            if let Err(e) = netns::delete(t.name()) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for VxlanPeer {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("tearing down node B: {e:#}");
        }
    }
}

/// `n` nodes in the API at addresses nothing answers, `node-uNN` at `first + i`. From node A
/// they are beyond the outside router: without a route there an ICMP net unreachable comes
/// back at once; behind [`blackhole_outside`] nothing does (each probe waits its timeout).
pub fn add_dead_nodes(api: &KubeApiServer, n: usize, first: Ipv4Addr) {
    for i in 0..n {
        let ip = Ipv4Addr::from(u32::from(first).wrapping_add(i as u32));
        api.apply_object(calico_node(&format!("node-u{i:02}"), &ip.to_string(), None));
    }
}

/// Let the outside router drop traffic to `prefix` silently (`ip route add blackhole PREFIX`
/// in node A's outside namespace), as a dead node's network does: no ICMP error comes back.
pub fn blackhole_outside(a: &SimNode, prefix: &str) -> Result<()> {
    run(
        "ip",
        &format!("-n {} route add blackhole {prefix}", a.outside_netns()),
    )
}
