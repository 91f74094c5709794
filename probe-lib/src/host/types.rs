//! Our own view of the kernel objects podnet cares about: links, routes, addresses and the
//! per-interface settings the kernel reports through netconf. Nothing here knows netlink; the
//! conversion lives in `convert.rs`, so the verdict logic and its tests never touch the kernel.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

/// The routing table Calico and most CNIs program pod routes into (`ip route show table main`).
pub const MAIN_TABLE: u32 = 254;

/// Address family of a route, address or netconf entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4 (`AF_INET`).
    Ipv4,
    /// IPv6 (`AF_INET6`).
    Ipv6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// Stable lower-case name, as used in logs and `/status`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// Operational state of a link (`IFLA_OPERSTATE`, RFC 2863).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OperState {
    /// Carrier up, ready to pass packets.
    Up,
    /// Down.
    Down,
    /// Down because a lower layer is down (a veth whose peer is down).
    LowerLayerDown,
    /// Waiting for an external event.
    Dormant,
    /// The driver does not report a state (loopback, some virtual devices).
    Unknown,
    /// Missing component, testing mode, or a value this build does not know.
    Other,
}

/// One network interface of the host (`ip -d link show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index (`ifindex`).
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Link kind from `IFLA_INFO_KIND` (`veth`, `vxlan`, ...), if the kernel reported one.
    pub kind: Option<String>,
    /// Administratively up (`IFF_UP`): `ip link set X up`.
    pub admin_up: bool,
    /// Operational state.
    pub oper: OperState,
    /// For a veth whose peer lives in another network namespace: that namespace's id as seen
    /// from here (`IFLA_LINK_NETNSID`, `link-netnsid` in `ip link`).
    pub peer_netnsid: Option<i32>,
    /// Interface index of the peer inside its namespace (`IFLA_LINK`).
    pub peer_index: Option<u32>,
    /// The bridge (or bond, VRF) this link is a port of (`IFLA_MASTER`, `master` in `ip link`).
    pub master: Option<u32>,
}

impl Link {
    /// The link passes traffic: admin up and carrier up. `Unknown` counts as up because
    /// several virtual drivers never report anything else.
    pub fn is_up(&self) -> bool {
        self.admin_up && matches!(self.oper, OperState::Up | OperState::Unknown)
    }

    /// A veth whose other end lives in another network namespace.
    pub fn is_veth_to_other_netns(&self) -> bool {
        self.kind.as_deref() == Some("veth") && self.peer_netnsid.is_some()
    }

    /// A Linux bridge (`ip link add X type bridge`).
    pub fn is_bridge(&self) -> bool {
        self.kind.as_deref() == Some("bridge")
    }
}

/// Route type (`rtm_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    /// A normal route: traffic goes out of `oif` (or via a gateway).
    Unicast,
    /// Silently dropped (`ip route add blackhole ...`).
    Blackhole,
    /// Dropped with ICMP unreachable.
    Unreachable,
    /// Dropped with ICMP administratively prohibited.
    Prohibit,
    /// A local address (only in the local table).
    Local,
    /// Anything else (broadcast, multicast, throw, nat, ...).
    Other,
}

impl RouteKind {
    /// Stable lower-case name, as used in `/status`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RouteKind::Unicast => "unicast",
            RouteKind::Blackhole => "blackhole",
            RouteKind::Unreachable => "unreachable",
            RouteKind::Prohibit => "prohibit",
            RouteKind::Local => "local",
            RouteKind::Other => "other",
        }
    }
}

/// Scope of a route (`rtm_scope`); kept as the kernel's number.
pub type RouteScope = u8;
/// `RT_SCOPE_LINK`: destination directly attached (`scope link`).
pub const SCOPE_LINK: RouteScope = 253;
/// `RT_SCOPE_HOST`: a route to this host only (`scope host`; ptp's pod routes).
pub const SCOPE_HOST: RouteScope = 254;
/// `RT_SCOPE_UNIVERSE`: the default scope (and always IPv6's).
pub const SCOPE_UNIVERSE: RouteScope = 0;

/// One route of the main table (`ip route show table main`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix; `0.0.0.0/0` or `::/0` for a default route.
    pub dst: IpNet,
    /// Routing table id.
    pub table: u32,
    /// Route type.
    pub kind: RouteKind,
    /// Scope, as the kernel's number (see [`SCOPE_LINK`]).
    pub scope: RouteScope,
    /// Routing protocol that installed it (`proto`): 3 boot (Calico CNI), 80 felix, 12 bird...
    pub protocol: u8,
    /// Output interface, if the route has exactly one.
    pub oif: Option<u32>,
    /// Gateway, if any.
    pub gateway: Option<IpAddr>,
    /// Metric (`RTA_PRIORITY`); the kernel prefers the lowest.
    pub priority: u32,
    /// Type of service selector (IPv4 only; part of the route's identity).
    pub tos: u8,
}

/// What identifies a route in the kernel: adding another route with the same key replaces it,
/// deleting by this key removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteKey {
    /// Destination prefix.
    pub dst: IpNet,
    /// Table id.
    pub table: u32,
    /// Metric.
    pub priority: u32,
    /// Type of service.
    pub tos: u8,
}

impl Route {
    /// The kernel's identity of this route.
    pub fn key(&self) -> RouteKey {
        RouteKey {
            dst: self.dst,
            table: self.table,
            priority: self.priority,
            tos: self.tos,
        }
    }
}

/// One interface address (`ip addr show`), on the host or inside a pod's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address {
    /// Index of the interface holding it (in the namespace it was read from).
    pub index: u32,
    /// The address itself.
    pub ip: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Scope (`RT_SCOPE_*`): 0 global, 253 link, 254 host.
    pub scope: u8,
}

impl Address {
    /// A global-scope address: what a pod's IP is (not loopback, not link-local).
    pub fn is_global(&self) -> bool {
        self.scope == SCOPE_UNIVERSE && !self.ip.is_loopback()
    }
}

/// Which interface a netconf entry applies to (`NETCONFA_IFINDEX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetconfScope {
    /// `net.ipv4.conf.all` / `net.ipv6.conf.all` (`NETCONFA_IFINDEX_ALL`, -1).
    All,
    /// `net.*.conf.default` (`NETCONFA_IFINDEX_DEFAULT`, -2): the template for new interfaces.
    Default,
    /// One interface.
    Interface(u32),
}

/// Per-interface settings reported by the kernel's netconf messages (`ip -d netconf`). A change
/// notification carries only the field that changed, so every field is optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Netconf {
    /// Family the settings belong to.
    pub family: Family,
    /// Interface (or all/default) they apply to.
    pub scope: NetconfScope,
    /// `forwarding`.
    pub forwarding: Option<bool>,
    /// `proxy_arp` (IPv4) or `proxy_ndp` (IPv6).
    pub proxy_neigh: Option<bool>,
}

/// One change the kernel told us about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    /// `RTM_NEWLINK`: a link appeared or changed.
    LinkChanged(Link),
    /// `RTM_DELLINK`: a link vanished (deleted, or moved to another namespace).
    LinkRemoved(u32),
    /// `RTM_NEWROUTE` in the main table.
    RouteAdded(Route),
    /// `RTM_DELROUTE` in the main table.
    RouteRemoved(Route),
    /// `RTM_NEWADDR` on the host.
    AddressAdded(Address),
    /// `RTM_DELADDR` on the host.
    AddressRemoved(Address),
    /// `RTM_NEWNETCONF`: forwarding or proxy ARP/NDP changed.
    NetconfChanged(Netconf),
    /// The kernel dropped notifications (`ENOBUFS`): our view may be wrong until a re-dump.
    Overrun,
    /// A notification did not decode: whatever it said is missing until a re-dump.
    Malformed,
}

/// Everything a full re-sync reads from the host's own namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostDump {
    /// All links.
    pub links: Vec<Link>,
    /// Main-table IPv4 and IPv6 routes.
    pub routes: Vec<Route>,
    /// The host's own addresses.
    pub addresses: Vec<Address>,
    /// IPv4 and IPv6 netconf of every interface plus `all` and `default`.
    pub netconf: Vec<Netconf>,
}
