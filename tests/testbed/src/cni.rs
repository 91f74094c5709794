//! A node whose pods are wired by the real CNI reference plugins (`ptp`, `bridge` from Debian's
//! `containernetworking-plugins`, with `host-local` IPAM), called exactly as a container runtime
//! calls them: the CNI protocol's environment (`CNI_COMMAND=ADD`, `CNI_CONTAINERID`,
//! `CNI_NETNS`, `CNI_IFNAME`, `CNI_PATH`) and the network configuration on stdin, run inside the
//! simulated node's namespace (`ip netns exec <node>`).
//!
//! ```text
//!  node netns (SimNode::empty: eth0 192.0.2.10/24, default via 192.0.2.1)
//!   ptp:    vethXXXX 10.244.0.1/32    10.244.0.N dev vethXXXX scope host   (one per pod)
//!   bridge: cni0 10.244.1.1/24        10.244.1.0/24 dev cni0 proto kernel
//!           vethXXXX master cni0                                            (one per pod)
//! ```
//!
//! host-local keeps its leases in a `dataDir` under a temporary directory of this node only;
//! teardown calls `CNI_COMMAND=DEL` for every pod, deletes the pod namespaces, the node, and
//! that directory, also when a test panics (on drop).

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, anyhow, bail};

use crate::netns::{self, NetnsThread};
use crate::simnode::SimNode;

/// Where Debian installs the reference plugins.
pub const CNI_PATH: &str = "/usr/lib/cni";
/// The bridge the `bridge` plugin creates in the node.
pub const BRIDGE: &str = "cni0";

static INSTANCES: AtomicUsize = AtomicUsize::new(0);

/// Which reference plugin wires the pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    /// `ptp`: a routed veth per pod (kind's kindnet wires pods this way).
    Ptp,
    /// `bridge` with `isGateway`: every pod's veth on one bridge (flannel, kubenet).
    Bridge,
}

impl Plugin {
    /// The plugin's binary name, also podnet's `--cni` value.
    pub fn name(self) -> &'static str {
        match self {
            Plugin::Ptp => "ptp",
            Plugin::Bridge => "bridge",
        }
    }

    /// The pod subnet this test bed gives the plugin.
    pub fn subnet(self) -> &'static str {
        match self {
            Plugin::Ptp => "10.244.0.0/24",
            Plugin::Bridge => "10.244.1.0/24",
        }
    }
}

/// One pod as the plugin wired it.
#[derive(Debug, Clone)]
pub struct CniPod {
    /// Its network namespace's name (`/run/netns/<netns>`).
    pub netns: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// The host-side veth the plugin created.
    pub interface: String,
    /// The address host-local gave it.
    pub ip: Ipv4Addr,
    /// Its gateway as the plugin reported it.
    pub gateway: Ipv4Addr,
}

/// A simulated node (no Calico wiring) whose pods the real plugin wires.
#[derive(Debug)]
pub struct CniNode {
    sim: SimNode,
    plugin: Plugin,
    network: String,
    data_dir: PathBuf,
    pods: Vec<CniPod>,
}

impl CniNode {
    /// A node with `pods` pods wired by `plugin`. Fails (after cleaning up) when the plugins
    /// are not installed: `apt-get install containernetworking-plugins`.
    pub fn new(plugin: Plugin, pods: usize) -> Result<Self> {
        for bin in [plugin.name(), "host-local"] {
            let p = PathBuf::from(CNI_PATH).join(bin);
            if !p.is_file() {
                bail!(
                    "{} missing: apt-get install containernetworking-plugins",
                    p.display()
                );
            }
        }
        let sim = SimNode::empty()?;
        let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let network = format!("podnet-{}-{}x{n}", plugin.name(), std::process::id());
        let data_dir = std::env::temp_dir().join(&network);
        let mut node = CniNode {
            sim,
            plugin,
            network,
            data_dir,
            pods: Vec::new(),
        };
        for _ in 0..pods {
            node.add_pod()?;
        }
        Ok(node)
    }

    /// The simulated node (for [`crate::agent::Agent`]).
    pub fn sim(&self) -> &SimNode {
        &self.sim
    }

    /// host-local's `dataDir` for this node (removed on teardown).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The pods, in the order they were added.
    pub fn pods(&self) -> &[CniPod] {
        &self.pods
    }

    /// The network configuration the plugin gets on stdin. The default route comes from
    /// host-local's `routes`, as in kind's kindnet configuration: without it the plugins wire a
    /// pod that reaches only its subnet (podnet says `pod_default_route_missing`).
    fn config(&self) -> String {
        let ipam = format!(
            r#"{{"type":"host-local","ranges":[[{{"subnet":"{}"}}]],"routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"{}"}}"#,
            self.plugin.subnet(),
            self.data_dir.display()
        );
        let extra = match self.plugin {
            Plugin::Ptp => String::new(),
            Plugin::Bridge => format!(r#""bridge":"{BRIDGE}","isGateway":true,"#),
        };
        format!(
            r#"{{"cniVersion":"1.0.0","name":"{}","type":"{}",{extra}"ipMasq":false,"ipam":{ipam}}}"#,
            self.network,
            self.plugin.name()
        )
    }

    /// Run the plugin with `command` (`ADD`, `DEL`) for a pod, inside the node's namespace.
    fn call(&self, command: &str, netns: &str, container_id: &str) -> Result<serde_json::Value> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.sim.node_netns()])
            .arg(PathBuf::from(CNI_PATH).join(self.plugin.name()))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_NETNS", format!("/var/run/netns/{netns}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", CNI_PATH)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the CNI plugin")?;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("no stdin"))?
            .write_all(self.config().as_bytes())?;
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "{} {command} failed ({}): {stdout} {}",
                self.plugin.name(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if stdout.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&stdout).with_context(|| format!("plugin result: {stdout}"))
    }

    /// Create a pod namespace and let the plugin wire it (`CNI_COMMAND=ADD`).
    pub fn add_pod(&mut self) -> Result<&CniPod> {
        let i = self.pods.len();
        let netns = format!("{}-cni{i}", self.sim.node_netns().trim_end_matches("-node"));
        // The namespace outlives the thread that made it (it is bind-mounted).
        NetnsThread::create(&netns)?;
        let container_id = format!("{}-{i}", self.network);
        let result = match self.call("ADD", &netns, &container_id) {
            Ok(r) => r,
            Err(e) => {
                let _ = netns::delete(&netns);
                return Err(e);
            }
        };
        let pod = parse_result(&result, netns.clone(), container_id.clone());
        match pod {
            Ok(pod) => {
                self.pods.push(pod);
                Ok(&self.pods[i])
            }
            Err(e) => {
                let _ = self.call("DEL", &netns, &container_id);
                let _ = netns::delete(&netns);
                Err(e)
            }
        }
    }

    /// `ip -n <node> ARGS`: change the node's wiring as an operator (or a fault) would.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let out = Command::new("ip")
            .args(["-n", self.sim.node_netns()])
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Tear down: `CNI_COMMAND=DEL` for every pod, then the namespaces and host-local's state.
    pub fn teardown(&mut self) -> Result<()> {
        let mut first_err = None;
        for pod in std::mem::take(&mut self.pods) {
            if let Err(e) = self.call("DEL", &pod.netns, &pod.container_id) {
                first_err.get_or_insert(e);
            }
            if let Err(e) = netns::delete(&pod.netns) {
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = self.sim.teardown() {
            first_err.get_or_insert(e);
        }
        match std::fs::remove_dir_all(&self.data_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                first_err.get_or_insert(e.into());
            }
            _ => {}
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for CniNode {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("tearing down CNI node {}: {e:#}", self.network);
        }
    }
}

/// The pod out of a CNI result: the host-side veth is the interface without a sandbox whose
/// name starts with `veth`; the first IPv4 address and its gateway.
fn parse_result(r: &serde_json::Value, netns: String, container_id: String) -> Result<CniPod> {
    let interface = r["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| {
            i.get("sandbox").is_none() && i["name"].as_str().is_some_and(|n| n.starts_with("veth"))
        })
        .and_then(|i| i["name"].as_str())
        .ok_or_else(|| anyhow!("no host veth in the CNI result {r}"))?
        .to_owned();
    let ip = r["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|ip| {
            let addr: Ipv4Addr = ip["address"].as_str()?.split('/').next()?.parse().ok()?;
            let gw: Ipv4Addr = ip["gateway"].as_str()?.parse().ok()?;
            Some((addr, gw))
        })
        .ok_or_else(|| anyhow!("no IPv4 address in the CNI result {r}"))?;
    Ok(CniPod {
        netns,
        container_id,
        interface,
        ip: ip.0,
        gateway: ip.1,
    })
}
