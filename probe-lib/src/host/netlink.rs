//! [`HostNetwork`] over rtnetlink: one socket for dumps (with strict checking, so the kernel
//! honours our filters and target-netnsid requests), one subscribed to change notifications.

use std::io;
use std::time::Duration;

use futures::StreamExt;
use nix::sys::socket::{setsockopt, sockopt};
use rtnetlink::packet_core::{
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkExtentMask, LinkMessage};
use rtnetlink::packet_route::route::RouteMessage;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::proto::{ConnectionHandle, new_connection};
use rtnetlink::sys::{AsyncSocket, SocketAddr, protocols::NETLINK_ROUTE};
use tracing::{debug, warn};

use super::netconf::{KernelMessage, Malformed, NetconfMessage};
use super::types::{Address, Family, HostDump, KernelEvent, MAIN_TABLE};
use super::{EVENT_QUEUE, EventReceiver, HostNetwork, convert, event_channel};
use crate::Error;

/// How long one dump may take before we give up on it and retry later.
const DUMP_TIMEOUT: Duration = Duration::from_secs(10);
/// Dumps interrupted by concurrent changes (`NLM_F_DUMP_INTR`) are retried this often.
const DUMP_ATTEMPTS: u32 = 5;
/// Receive buffer of the notification socket. A burst of route changes must not overflow it;
/// if it does anyway we re-dump (see [`KernelEvent::Overrun`]). Behind it, the queue to the
/// monitor is bounded too ([`EVENT_QUEUE`]).
const EVENT_RCVBUF: usize = 8 << 20;

// rtnetlink multicast groups (`RTMGRP_*`, and `1 << (RTNLGRP_* - 1)` for netconf).
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;
const RTMGRP_IPV4_NETCONF: u32 = 1 << (24 - 1);
const RTMGRP_IPV6_NETCONF: u32 = 1 << (25 - 1);

/// The real host: rtnetlink sockets in the namespace of the thread that created them.
#[derive(Debug)]
pub struct NetlinkHost {
    dumps: ConnectionHandle<KernelMessage>,
}

impl NetlinkHost {
    /// Open the dump socket. Must run inside a tokio runtime (the connection is spawned on it).
    pub fn new() -> Result<Self, Error> {
        let (mut conn, dumps, _unsolicited) =
            new_connection::<KernelMessage>(NETLINK_ROUTE).map_err(Error::Socket)?;
        // Strict checking makes the kernel apply header fields as filters and honour
        // IFA_TARGET_NETNSID; without it a peer address dump silently returns our own.
        conn.socket_mut()
            .socket_mut()
            .set_netlink_get_strict_chk(true)
            .map_err(Error::Socket)?;
        tokio::spawn(conn);
        Ok(NetlinkHost { dumps })
    }

    /// One dump request, each reply converted as it arrives (`keep`): a full message is never
    /// held longer than its conversion, which keeps the re-sync's transient memory small.
    async fn dump_once<T>(
        &self,
        what: &'static str,
        request: KernelMessage,
        mut keep: impl FnMut(KernelMessage, &mut Vec<T>),
    ) -> Result<Vec<T>, Error> {
        for _ in 0..DUMP_ATTEMPTS {
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_DUMP;
            let mut msg =
                NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request.clone()));
            msg.finalize();
            let mut responses = self
                .dumps
                .request(msg, SocketAddr::new(0, 0))
                .map_err(|_| Error::ConnectionClosed(what))?;
            let mut out = Vec::new();
            let mut interrupted = false;
            let mut malformed = MalformedLog::default();
            let collect = async {
                while let Some(resp) = responses.next().await {
                    interrupted |= resp.header.flags & NLM_F_DUMP_INTR != 0;
                    match resp.payload {
                        NetlinkPayload::InnerMessage(KernelMessage::Malformed(m)) => {
                            malformed.note(&m, "skipping a malformed netlink dump entry");
                        }
                        NetlinkPayload::InnerMessage(m) => keep(m, &mut out),
                        NetlinkPayload::Error(e) if e.code.is_some() => {
                            return Err(Error::Kernel {
                                what,
                                source: io::Error::from(e),
                            });
                        }
                        NetlinkPayload::Overrun(_) => interrupted = true,
                        _ => {}
                    }
                }
                Ok(())
            };
            tokio::time::timeout(DUMP_TIMEOUT, collect)
                .await
                .map_err(|_| Error::Timeout(what))??;
            if !interrupted {
                return Ok(out);
            }
            debug!(
                what,
                "netlink dump interrupted by concurrent changes; retrying"
            );
        }
        Err(Error::Interrupted(what, DUMP_ATTEMPTS))
    }

    fn route_request(family: AddressFamily) -> KernelMessage {
        // With strict checking every header field is a filter: leave protocol, scope and type
        // unspecified and ask for the main table only (`ip route show table main`).
        let mut m = RouteMessage::default();
        m.header.address_family = family;
        m.header.table = MAIN_TABLE as u8;
        KernelMessage::Route(RouteNetlinkMessage::GetRoute(m))
    }
}

impl HostNetwork for NetlinkHost {
    /// `ip monitor link route address netconf`.
    async fn subscribe(&self) -> Result<EventReceiver, Error> {
        let (mut conn, handle, mut messages) =
            new_connection::<KernelMessage>(NETLINK_ROUTE).map_err(Error::Socket)?;
        {
            let socket = conn.socket_mut().socket_mut();
            if let Err(e) = setsockopt(&*socket, sockopt::RcvBufForce, &EVENT_RCVBUF) {
                // Without CAP_NET_ADMIN only rmem_max applies; overruns are still handled.
                warn!(error = %e, "cannot enlarge the netlink event buffer");
                socket.set_rx_buf_sz(EVENT_RCVBUF).map_err(Error::Socket)?;
            }
            let groups = RTMGRP_LINK
                | RTMGRP_IPV4_IFADDR
                | RTMGRP_IPV6_IFADDR
                | RTMGRP_IPV4_ROUTE
                | RTMGRP_IPV6_ROUTE
                | RTMGRP_IPV4_NETCONF
                | RTMGRP_IPV6_NETCONF;
            socket
                .bind(&SocketAddr::new(0, groups))
                .map_err(Error::Socket)?;
        }
        tokio::spawn(conn);
        let (tx, rx) = event_channel(EVENT_QUEUE);
        tokio::spawn(async move {
            // Keep the handle: the connection stops once every handle is gone.
            let _handle = handle;
            let mut malformed = MalformedLog::default();
            // Ends with the stream, or as soon as the receiver is dropped (after an overrun
            // the monitor drops this subscription's stale backlog): the socket closes then,
            // not at the next notification.
            loop {
                let next = tokio::select! {
                    m = messages.next() => m,
                    () = tx.closed() => None,
                };
                let Some((msg, _)) = next else { break };
                let event = match msg.payload {
                    NetlinkPayload::InnerMessage(KernelMessage::Malformed(m)) => {
                        malformed.note(&m, "skipping a malformed netlink notification; re-reading");
                        Some(KernelEvent::Malformed)
                    }
                    NetlinkPayload::InnerMessage(m) => convert::event(&m),
                    NetlinkPayload::Overrun(_) => Some(KernelEvent::Overrun),
                    _ => None,
                };
                if let Some(ev) = event
                    && tx.push(ev).await.is_err()
                {
                    break;
                }
            }
            debug!("netlink event stream ended");
        });
        Ok(rx)
    }

    /// `ip link; ip -4 route show table main; ip -6 route show table main; ip addr;
    /// ip -4 netconf; ip -6 netconf`.
    async fn dump(&self) -> Result<HostDump, Error> {
        let mut dump = HostDump::default();
        // Statistics are most of a link message and podnet reads none of them.
        let mut links = LinkMessage::default();
        links
            .attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let links = KernelMessage::Route(RouteNetlinkMessage::GetLink(links));
        dump.links = self
            .dump_once("links", links, |m, out| {
                if let KernelMessage::Route(RouteNetlinkMessage::NewLink(l)) = &m {
                    out.extend(convert::link(l));
                }
            })
            .await?;
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let routes = self
                .dump_once("routes", Self::route_request(family), |m, out| {
                    if let KernelMessage::Route(RouteNetlinkMessage::NewRoute(r)) = &m {
                        out.extend(convert::route(r));
                    }
                })
                .await?;
            dump.routes.extend(routes);
        }
        let addrs =
            KernelMessage::Route(RouteNetlinkMessage::GetAddress(AddressMessage::default()));
        dump.addresses = self.dump_once("addresses", addrs, keep_address).await?;
        for family in [Family::Ipv4, Family::Ipv6] {
            let req = KernelMessage::Netconf(NetconfMessage::Get(family));
            let netconf = self
                .dump_once("netconf", req, |m, out| {
                    if let KernelMessage::Netconf(NetconfMessage::New(nc)) = m {
                        out.push(nc);
                    }
                })
                .await?;
            dump.netconf.extend(netconf);
        }
        Ok(dump)
    }

    /// `ip -n <ns> addr show`, without entering the namespace (`IFA_TARGET_NETNSID`).
    /// Loopback addresses are skipped and at most [`PEER_ADDRESSES_MAX`] kept: the pod
    /// controls this list (NET_ADMIN in its own namespace can add thousands).
    async fn peer_addresses(&self, netnsid: i32) -> Result<Vec<Address>, Error> {
        let mut req = AddressMessage::default();
        req.attributes
            .push(AddressAttribute::TargetNetNsId(netnsid));
        let req = KernelMessage::Route(RouteNetlinkMessage::GetAddress(req));
        self.dump_once("peer addresses", req, |m, out| {
            if out.len() < PEER_ADDRESSES_MAX {
                keep_address(m, out);
                out.retain(|a| !a.ip.is_loopback());
            }
        })
        .await
    }
}

/// One warning for the first malformed message, then at most one a minute with the count
/// since: a kernel (or a bug) sending a stream of them must not flood the log.
#[derive(Debug, Default)]
struct MalformedLog {
    last: Option<std::time::Instant>,
    since: u64,
}

impl MalformedLog {
    const EVERY: Duration = Duration::from_secs(60);

    fn note(&mut self, m: &Malformed, what: &'static str) {
        self.since += 1;
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        warn!(message_type = m.message_type, why = %m.why, count = self.since, "{what}");
        self.last = Some(std::time::Instant::now());
        self.since = 0;
    }
}

/// The most addresses kept from one pod namespace's dump: a pod has a handful (its IPs and
/// link-local addresses); node mode uses one IPv4 and one IPv6 of them.
const PEER_ADDRESSES_MAX: usize = 64;

fn keep_address(m: KernelMessage, out: &mut Vec<Address>) {
    if let KernelMessage::Route(RouteNetlinkMessage::NewAddress(a)) = &m {
        out.extend(convert::address(a));
    }
}
