//! The node's network state as the kernel reports it: links, main-table routes, host
//! addresses, netconf settings and the addresses inside each pod's namespace.
//!
//! [`HostState`] is plain data updated by [`HostState::apply`] from [`KernelEvent`]s and
//! replaced wholesale by a re-dump; [`HostNetwork`] is the boundary to the kernel, with the
//! netlink implementation in [`netlink`] and a scripted fake in [`fake`].

mod convert;
pub mod fake;
pub mod netconf;
pub mod netlink;
mod types;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;

use ipnet::IpNet;
use tokio::sync::mpsc;

pub use types::*;

use crate::Error;
pub use crate::model::ResyncCause;

/// Receiving end of a kernel event subscription.
pub type EventReceiver = mpsc::Receiver<KernelEvent>;

/// Kernel events queued between the socket reader and the monitor, at most (a few MiB). A
/// burst beyond it is not buffered: it becomes one [`KernelEvent::Overrun`], i.e. a re-dump,
/// exactly like an overrun of the kernel's own socket buffer (`cause="overrun"`).
pub const EVENT_QUEUE: usize = 16 * 1024;

/// Sending end of a kernel event subscription: bounded, overflow turned into a re-sync.
#[derive(Debug)]
pub struct EventSender {
    tx: mpsc::Sender<KernelEvent>,
}

/// The receiver is gone; stop reading events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionClosed;

/// A bounded event queue of `capacity` events.
pub fn event_channel(capacity: usize) -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(2));
    (EventSender { tx }, rx)
}

impl EventSender {
    /// Completes when the receiver is gone (the monitor dropped this subscription).
    pub async fn closed(&self) {
        self.tx.closed().await;
    }

    /// Queue `ev`. When the queue is full, `ev` is dropped and an [`KernelEvent::Overrun`]
    /// is queued as soon as there is room (waiting for it: meanwhile the kernel buffers, or
    /// reports its own overrun), so the monitor re-dumps whatever was lost.
    pub async fn push(&self, ev: KernelEvent) -> Result<(), SubscriptionClosed> {
        match self.tx.try_send(ev) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SubscriptionClosed),
            Err(mpsc::error::TrySendError::Full(_)) => self
                .tx
                .send(KernelEvent::Overrun)
                .await
                .map_err(|_| SubscriptionClosed),
        }
    }
}

/// The boundary to the kernel: everything podnet reads about the host's network.
pub trait HostNetwork: Send + Sync + 'static {
    /// Subscribe to link, route, address and netconf changes (`ip monitor link route address
    /// netconf`). Events that happen after this returns are delivered in kernel order.
    fn subscribe(&self) -> impl Future<Output = Result<EventReceiver, Error>> + Send;

    /// Read everything at once: `ip link`, `ip route show table main` (IPv4 and IPv6),
    /// `ip addr`, `ip netconf show`.
    fn dump(&self) -> impl Future<Output = Result<HostDump, Error>> + Send;

    /// The addresses inside the namespace a link peer lives in, read from here without
    /// entering it: `ip -n <ns> addr show` via `IFA_TARGET_NETNSID`.
    fn peer_addresses(
        &self,
        netnsid: i32,
    ) -> impl Future<Output = Result<Vec<Address>, Error>> + Send;
}

/// Forwarding and proxy ARP/NDP of one interface (or `all`/`default`), merged from the dump
/// and subsequent partial notifications.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetconfValues {
    /// `forwarding`, if known.
    pub forwarding: Option<bool>,
    /// `proxy_arp` / `proxy_ndp`, if known.
    pub proxy_neigh: Option<bool>,
}

/// The observed state of the node's network, kept current from kernel events.
#[derive(Debug, Clone, Default)]
pub struct HostState {
    links: HashMap<u32, Link>,
    names: HashMap<String, u32>,
    routes: HashMap<IpNet, Vec<Route>>,
    route_count: usize,
    addresses: Vec<Address>,
    netconf: HashMap<(Family, NetconfScope), NetconfValues>,
    peers: HashMap<i32, Vec<Address>>,
    /// Counts the events that may change what covers a network wider than one address:
    /// everything but host routes (`/32`, `/128`: pod routes) added or removed.
    cover_generation: u64,
}

impl HostState {
    /// Build the state from a full dump. Peer addresses are kept for namespaces that are still
    /// referenced by a link; the caller refreshes them.
    pub fn from_dump(dump: HostDump, previous_peers: HashMap<i32, Vec<Address>>) -> Self {
        let mut state = HostState {
            addresses: dump.addresses,
            ..HostState::default()
        };
        for link in dump.links {
            state.upsert_link(link);
        }
        for route in dump.routes {
            state.upsert_route(route);
        }
        for nc in dump.netconf {
            state.merge_netconf(&nc);
        }
        state.peers = previous_peers;
        state.forget_unreferenced_peers();
        state
    }

    /// Apply one kernel event. Returns a re-sync cause when the event means our view can no
    /// longer be trusted without a re-dump.
    pub fn apply(&mut self, event: &KernelEvent) -> Option<ResyncCause> {
        match event {
            KernelEvent::RouteAdded(r) | KernelEvent::RouteRemoved(r)
                if r.dst.prefix_len() == r.dst.max_prefix_len() => {}
            _ => self.cover_generation = self.cover_generation.wrapping_add(1),
        }
        match event {
            KernelEvent::LinkChanged(link) => {
                let old = self.links.get(&link.index);
                let set_down = old.is_some_and(|o| o.admin_up && !link.admin_up);
                let went_down = old.is_some_and(|o| o.is_up() && !link.is_up());
                let renumbered = old.is_some_and(|o| o.peer_netnsid != link.peer_netnsid);
                if set_down {
                    // The kernel flushes the routes of a device set down, without
                    // RTM_DELROUTE; mirror that now, the re-dump confirms it. IPv4 routes of
                    // scope host (ptp's `<podIP> dev vethX scope host`) survive: their next hop
                    // has no scope to lose (`fib_sync_down_dev` skips RT_SCOPE_NOWHERE).
                    self.remove_routes_via(link.index, |r| {
                        !(r.dst.addr().is_ipv4() && r.scope == SCOPE_HOST)
                    });
                }
                self.upsert_link(link.clone());
                if renumbered {
                    self.forget_unreferenced_peers();
                }
                went_down.then_some(ResyncCause::LinkDown)
            }
            KernelEvent::LinkRemoved(index) => {
                if let Some(old) = self.links.remove(index) {
                    if self.names.get(&old.name) == Some(index) {
                        self.names.remove(&old.name);
                    }
                    self.remove_routes_via(*index, |_| true);
                    self.netconf
                        .retain(|(_, scope), _| *scope != NetconfScope::Interface(*index));
                    self.forget_unreferenced_peers();
                    Some(ResyncCause::LinkDown)
                } else {
                    None
                }
            }
            KernelEvent::RouteAdded(route) => {
                self.upsert_route(route.clone());
                None
            }
            KernelEvent::RouteRemoved(route) => {
                self.remove_route(route);
                None
            }
            KernelEvent::AddressAdded(addr) => {
                if !self.addresses.contains(addr) {
                    self.addresses.push(*addr);
                }
                None
            }
            KernelEvent::AddressRemoved(addr) => {
                self.addresses.retain(|a| a != addr);
                None
            }
            KernelEvent::NetconfChanged(nc) => {
                self.merge_netconf(nc);
                None
            }
            KernelEvent::Overrun => Some(ResyncCause::Overrun),
            KernelEvent::Malformed => Some(ResyncCause::Malformed),
        }
    }

    /// Record the addresses found inside the namespace with id `netnsid`; ignored when no
    /// link refers to that namespace any more (its pod went away while we were reading).
    pub fn set_peer_addresses(&mut self, netnsid: i32, addresses: Vec<Address>) {
        if self.links.values().any(|l| l.peer_netnsid == Some(netnsid)) {
            self.peers.insert(netnsid, addresses);
        }
    }

    /// Addresses known for a peer namespace; `None` if never read.
    pub fn peer_addresses(&self, netnsid: i32) -> Option<&[Address]> {
        self.peers.get(&netnsid).map(Vec::as_slice)
    }

    /// Take the peer-address cache (to carry it across a re-dump).
    pub fn take_peers(&mut self) -> HashMap<i32, Vec<Address>> {
        std::mem::take(&mut self.peers)
    }

    /// All links.
    pub fn links(&self) -> impl Iterator<Item = &Link> {
        self.links.values()
    }

    /// Link by index.
    pub fn link(&self, index: u32) -> Option<&Link> {
        self.links.get(&index)
    }

    /// Link by name.
    pub fn link_by_name(&self, name: &str) -> Option<&Link> {
        self.names.get(name).and_then(|i| self.links.get(i))
    }

    /// The route the kernel would use for exactly this host prefix (`<ip>/32` or `/128`) in
    /// the main table: among routes with that destination, the lowest metric.
    pub fn host_route(&self, ip: IpAddr) -> Option<&Route> {
        self.routes
            .get(&IpNet::from(ip))
            .and_then(|rs| rs.iter().min_by_key(|r| r.priority))
    }

    /// The route the kernel would pick for `ip` from the main table (`ip route get <ip>`,
    /// without policy rules or the local table): the longest prefix containing `ip`, and among
    /// routes of that prefix the lowest metric. Derived from the mirrored table, so it follows
    /// every route event without asking the kernel: at most 33 (IPv4) or 129 (IPv6) hash
    /// look-ups.
    pub fn route_lookup(&self, ip: IpAddr) -> Option<&Route> {
        self.route_covering(IpNet::from(ip))
    }

    /// The route the kernel would pick for every address of `net`: the longest main-table
    /// prefix that contains the whole of `net`, lowest metric first (`ip route get` of the
    /// block's addresses, ignoring routes more specific than `net` such as borrowed `/32`s).
    pub fn route_covering(&self, net: IpNet) -> Option<&Route> {
        let net = net.trunc();
        (0..=net.prefix_len()).rev().find_map(|len| {
            let cover = IpNet::new(net.addr(), len).ok()?.trunc();
            // A route with a TOS selector only matches packets of that TOS; the lookup is for
            // ordinary (TOS 0) traffic.
            self.routes
                .get(&cover)
                .and_then(|rs| rs.iter().filter(|r| r.tos == 0).min_by_key(|r| r.priority))
        })
    }

    /// Changes when [`HostState::route_covering`] may answer differently for a network wider
    /// than one address (any event but a host route added or removed); within one state, equal
    /// generations mean equal answers. A re-dump starts a new state: compare generations of
    /// the same state only.
    pub fn cover_generation(&self) -> u64 {
        self.cover_generation
    }

    /// All main-table routes.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values().flatten()
    }

    /// Number of main-table routes held.
    pub fn route_count(&self) -> usize {
        self.route_count
    }

    /// The host's own addresses.
    pub fn addresses(&self) -> &[Address] {
        &self.addresses
    }

    /// The node's own address per family: the first global address of the interface holding
    /// the default route (`ip route get` to the outside, in effect).
    pub fn node_addresses(&self) -> Vec<IpAddr> {
        let mut out = Vec::new();
        for v4 in [true, false] {
            let default = self
                .routes()
                .filter(|r| r.dst.prefix_len() == 0 && r.dst.addr().is_ipv4() == v4)
                .filter(|r| r.kind == RouteKind::Unicast)
                .min_by_key(|r| r.priority);
            let Some(oif) = default.and_then(|r| r.oif) else {
                continue;
            };
            let mut candidates: Vec<IpAddr> = self
                .addresses
                .iter()
                .filter(|a| a.index == oif && a.is_global() && a.ip.is_ipv4() == v4)
                .map(|a| a.ip)
                .collect();
            candidates.sort();
            out.extend(candidates.first());
        }
        out
    }

    /// Netconf values for a family and interface (or all/default).
    pub fn netconf(&self, family: Family, scope: NetconfScope) -> NetconfValues {
        self.netconf
            .get(&(family, scope))
            .copied()
            .unwrap_or_default()
    }

    fn upsert_link(&mut self, link: Link) {
        if let Some(old) = self.links.get(&link.index)
            && old.name != link.name
            && self.names.get(&old.name) == Some(&link.index)
        {
            self.names.remove(&old.name);
        }
        self.names.insert(link.name.clone(), link.index);
        self.links.insert(link.index, link);
    }

    fn upsert_route(&mut self, route: Route) {
        if route.table != MAIN_TABLE {
            return;
        }
        let bucket = self.routes.entry(route.dst).or_default();
        let key = route.key();
        if let Some(existing) = bucket.iter_mut().find(|r| r.key() == key) {
            *existing = route;
        } else {
            bucket.push(route);
            self.route_count += 1;
        }
    }

    fn remove_route(&mut self, route: &Route) {
        let key = route.key();
        if let Some(bucket) = self.routes.get_mut(&route.dst) {
            let before = bucket.len();
            bucket.retain(|r| r.key() != key);
            self.route_count -= before - bucket.len();
            if bucket.is_empty() {
                self.routes.remove(&route.dst);
            }
        }
    }

    /// Drop the routes out of `index` that `flushed` says the kernel drops.
    fn remove_routes_via(&mut self, index: u32, flushed: impl Fn(&Route) -> bool) {
        let mut removed = 0;
        self.routes.retain(|_, bucket| {
            let before = bucket.len();
            bucket.retain(|r| r.oif != Some(index) || !flushed(r));
            removed += before - bucket.len();
            !bucket.is_empty()
        });
        self.route_count -= removed;
    }

    fn merge_netconf(&mut self, nc: &Netconf) {
        let entry = self.netconf.entry((nc.family, nc.scope)).or_default();
        if nc.forwarding.is_some() {
            entry.forwarding = nc.forwarding;
        }
        if nc.proxy_neigh.is_some() {
            entry.proxy_neigh = nc.proxy_neigh;
        }
    }

    /// Namespace ids are reused by the kernel once a namespace dies: forget addresses of ids
    /// no link points to any more, so a new pod never inherits an old pod's IPs.
    fn forget_unreferenced_peers(&mut self) {
        let links = &self.links;
        self.peers
            .retain(|nsid, _| links.values().any(|l| l.peer_netnsid == Some(*nsid)));
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
