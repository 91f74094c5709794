//! Blocking rtnetlink requests for the namespace thread: it must not run a tokio reactor of
//! its own, and a socket created there belongs to whatever namespace the thread is in.

use std::io;
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout};
use nix::sys::time::TimeVal;

use rtnetlink::packet_core::{
    NLM_F_DUMP, NLM_F_MULTIPART, NLM_F_REQUEST, NetlinkBuffer, NetlinkDeserializable,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::nsid::{NsidAttribute, NsidMessage};
use rtnetlink::packet_route::route::{RouteMessage, RouteType};
use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::report::PodSide;

/// Longest one request may take, all its `recv`s together. The namespace thread serves every
/// pod in turn: a pod's namespace (routes, addresses: the pod controls them with NET_ADMIN)
/// must not hold it longer than this per request.
pub(crate) const REQUEST_DEADLINE: Duration = Duration::from_millis(100);

/// Most messages one answer may have. A pod with NET_ADMIN can give its namespace a million
/// routes; we read the few we need and give up beyond this, without buffering the rest.
pub(crate) const MAX_MESSAGES: usize = 4096;

/// A blocking rtnetlink socket in the namespace of the thread that opened it.
#[derive(Debug)]
pub(crate) struct BlockingNetlink {
    socket: Socket,
    seq: u32,
}

/// What to do after one message of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    /// Enough read: stop without draining the rest (the caller closes the socket or skips
    /// the stale answers by sequence number).
    Stop,
}

impl BlockingNetlink {
    /// Open and bind (`socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE)`), with strict checking of
    /// dump requests (`NETLINK_GET_STRICT_CHK`, so the kernel filters route dumps by table and
    /// type) where the kernel has it (4.20+; older kernels dump everything and we filter here).
    pub(crate) fn open() -> io::Result<Self> {
        let socket = Self::open_protocol(NETLINK_ROUTE)?;
        let _ = socket.socket.set_netlink_get_strict_chk(true);
        Ok(socket)
    }

    /// Open and bind a netlink socket of `protocol` (`NETLINK_SOCK_DIAG` for `ss`' dumps).
    pub(crate) fn open_protocol(protocol: isize) -> io::Result<Self> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(BlockingNetlink { socket, seq: 0 })
    }

    /// One `recv` of at most the time left until `deadline` (`SO_RCVTIMEO`): the kernel side
    /// of a pod namespace must never block the namespace thread for good.
    fn recv_until(&mut self, deadline: Instant) -> io::Result<Vec<u8>> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "netlink answer too slow",
            ));
        }
        // Below 1 µs the kernel would read 0: no timeout at all.
        let left = left.max(Duration::from_micros(1));
        let timeout = TimeVal::new(
            i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            i64::from(left.subsec_micros()),
        );
        setsockopt(&self.socket, ReceiveTimeout, &timeout)?;
        match self.socket.recv_from_full() {
            Ok((data, _)) => Ok(data),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "netlink answer too slow",
            )),
            Err(e) => Err(e),
        }
    }

    /// Send one request; the payloads (message type, bytes after the netlink header) of every
    /// answer until the end of the dump or the reply. Parsing is left to the caller, so hot
    /// paths can read just the fixed headers they need.
    fn request_raw(
        &mut self,
        msg: RouteNetlinkMessage,
        dump: bool,
    ) -> io::Result<Vec<(u16, Vec<u8>)>> {
        let mut out = Vec::new();
        self.request_each(msg, dump, |t, p| {
            out.push((t, p.to_vec()));
            Flow::Continue
        })?;
        Ok(out)
    }

    /// Send one request and hand each answer's (type, payload) to `f` as it arrives, at most
    /// [`MAX_MESSAGES`] of them and within [`REQUEST_DEADLINE`]; nothing is buffered beyond
    /// one datagram.
    fn request_each(
        &mut self,
        msg: RouteNetlinkMessage,
        dump: bool,
        f: impl FnMut(u16, &[u8]) -> Flow,
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        self.exchange(&buf, f)
    }

    /// A dump request of `message_type` with this payload (a protocol whose messages
    /// netlink-packet-route does not know, e.g. `SOCK_DIAG_BY_FAMILY`), answers handed to
    /// `f` as for [`Self::request_each`].
    pub(crate) fn dump_raw(
        &mut self,
        message_type: u16,
        payload: &[u8],
        f: impl FnMut(u16, &[u8]) -> Flow,
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let len = 16 + payload.len();
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
        buf.extend_from_slice(&message_type.to_ne_bytes());
        buf.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        buf.extend_from_slice(&self.seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(payload);
        self.exchange(&buf, f)
    }

    /// Send a serialized request (sequence number `self.seq`) and read its answers.
    fn exchange(&mut self, buf: &[u8], mut f: impl FnMut(u16, &[u8]) -> Flow) -> io::Result<()> {
        let deadline = Instant::now() + REQUEST_DEADLINE;
        self.socket.send(buf, 0)?;
        let mut count = 0usize;
        loop {
            let data = self.recv_until(deadline)?;
            if let Some(end) = scan_datagram(&data, self.seq, &mut count, &mut f) {
                return end;
            }
        }
    }

    /// Send one request and parse every answer.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        dump: bool,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.request_raw(msg, dump)?
            .into_iter()
            .map(|(t, payload)| {
                let mut header = NetlinkHeader::default();
                header.message_type = t;
                RouteNetlinkMessage::deserialize(&header, &payload)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
            })
            .collect()
    }

    /// `ip netns identify`-like: the id this namespace (open file `fd`) has as seen from here
    /// (`RTM_GETNSID` with `NETNSA_FD`); `None` if it has none.
    pub(crate) fn netnsid_of(&mut self, fd: &impl std::os::fd::AsRawFd) -> io::Result<Option<i32>> {
        let mut m = NsidMessage::default();
        m.attributes.push(NsidAttribute::Fd(fd.as_raw_fd() as u32));
        let answers = self.request(RouteNetlinkMessage::GetNsId(m), false)?;
        Ok(answers.iter().find_map(|a| match a {
            RouteNetlinkMessage::NewNsId(n) => n.attributes.iter().find_map(|x| match x {
                NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                _ => None,
            }),
            _ => None,
        }))
    }

    /// Inside a pod's namespace: is its interface `index` up, and does it have default routes
    /// (`ip link show dev eth0; ip route show default; ip -6 route show default`)? Only the
    /// fixed `ifinfomsg` / `rtmsg` headers are read: this runs for every pod every round.
    pub(crate) fn pod_side(&mut self, index: u32, v4: bool, v6: bool) -> io::Result<PodSide> {
        const IFF_UP: u32 = 0x1;
        const IFF_LOWER_UP: u32 = 0x10000;
        let mut link = LinkMessage::default();
        link.header.index = index;
        let links = self.request_raw(RouteNetlinkMessage::GetLink(link), false)?;
        let link = links
            .iter()
            .find(|(t, p)| *t == RTM_NEWLINK && p.len() >= 16)
            .map(|(_, p)| p.as_slice());
        let up = link.is_some_and(|p| {
            // struct ifinfomsg { u8 family, pad; u16 type; i32 index; u32 flags; u32 change }
            let flags = u32::from_ne_bytes([p[8], p[9], p[10], p[11]]);
            flags & IFF_UP != 0 && flags & IFF_LOWER_UP != 0
        });
        Ok(PodSide {
            interface_up: up,
            mtu: link.and_then(link_mtu),
            default_route_v4: if v4 {
                Some(self.has_default_route(AF_INET)?)
            } else {
                None
            },
            default_route_v6: if v6 {
                Some(self.has_default_route(AF_INET6)?)
            } else {
                None
            },
        })
    }

    /// `ip [-6] route show default table main`: a dump of the main table's unicast routes of
    /// one family (the kernel filters by table and type under strict checking; it rejects a
    /// `rtm_dst_len` filter in dump requests, so "default" is checked here), stopped at the
    /// first default route. The kernel walks its tables in prefix order, so the default
    /// route comes first and a pod's many other routes are never read; a pod with more than
    /// [`MAX_MESSAGES`] routes before any default gets an error, not our memory.
    fn has_default_route(&mut self, family: u8) -> io::Result<bool> {
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::from(family);
        req.header.table = crate::host::MAIN_TABLE as u8;
        req.header.kind = RouteType::Unicast;
        let mut found = false;
        self.request_each(RouteNetlinkMessage::GetRoute(req), true, |t, p| {
            // struct rtmsg { u8 family, dst_len, src_len, tos, table, protocol, scope, type; u32 flags }
            if t == RTM_NEWROUTE && p.len() >= 12 {
                found = is_default_route(p, family);
            }
            if found { Flow::Stop } else { Flow::Continue }
        })?;
        Ok(found)
    }
}

/// `IFLA_MTU` of an `RTM_NEWLINK` payload (`ip link show` prints it as `mtu N`): the
/// attributes after the 16-byte `ifinfomsg`, walked with every length checked (the pod's
/// namespace answers; nothing in it is trusted).
fn link_mtu(p: &[u8]) -> Option<u32> {
    const IFLA_MTU: u16 = 4;
    let mut rest = p.get(16..)?;
    while rest.len() >= 4 {
        // struct rtattr { u16 len; u16 type } then the value, padded to 4 bytes.
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        if kind == IFLA_MTU && len == 8 {
            return Some(u32::from_ne_bytes([rest[4], rest[5], rest[6], rest[7]]));
        }
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    None
}

/// The messages of one received datagram for request `seq` (others are stale answers and
/// skipped), each handed to `f`, `count` across datagrams capped at [`MAX_MESSAGES`].
/// `Some` when the answer ended (done, an error, `f` had enough, or a lone reply), `None`
/// when more datagrams follow. Lengths are checked, never trusted: the datagram comes from
/// the kernel side of a pod's namespace.
fn scan_datagram(
    data: &[u8],
    seq: u32,
    count: &mut usize,
    f: &mut impl FnMut(u16, &[u8]) -> Flow,
) -> Option<io::Result<()>> {
    let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_owned());
    let mut offset = 0;
    while offset + 16 <= data.len() {
        let msg = match NetlinkBuffer::new_checked(&data[offset..]) {
            Ok(m) => m,
            Err(e) => return Some(Err(invalid(&e.to_string()))),
        };
        let len = msg.length() as usize;
        if len < 16 || offset + len > data.len() {
            return Some(Err(invalid("bad netlink message length")));
        }
        let payload = &data[offset + 16..offset + len];
        offset += (len + 3) & !3;
        if msg.sequence_number() != seq {
            continue;
        }
        match msg.message_type() {
            NLMSG_DONE => return Some(Ok(())),
            NLMSG_ERROR => {
                let code = payload
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, i32::from_ne_bytes);
                return Some(if code < 0 {
                    Err(io::Error::from_raw_os_error(code.saturating_neg()))
                } else {
                    Ok(())
                });
            }
            t => {
                *count += 1;
                if *count > MAX_MESSAGES {
                    return Some(Err(invalid("answer has too many messages")));
                }
                if f(t, payload) == Flow::Stop || msg.flags() & NLM_F_MULTIPART == 0 {
                    return Some(Ok(()));
                }
            }
        }
    }
    None
}

/// Is this `rtmsg` a default unicast route of `family` in the main table?
fn is_default_route(p: &[u8], family: u8) -> bool {
    p.len() >= 12
        && p[0] == family
        && p[1] == 0
        && u32::from(p[4]) == crate::host::MAIN_TABLE
        && p[7] == RTN_UNICAST
}

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWROUTE: u16 = 24;
const RTN_UNICAST: u8 = 1;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

#[cfg(test)]
#[path = "nl_props.rs"]
mod props;

#[cfg(test)]
#[path = "nl_tests.rs"]
mod tests;
