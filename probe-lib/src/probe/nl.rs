//! Blocking rtnetlink requests for the namespace thread: it must not run a tokio reactor of
//! its own, and a socket created there belongs to whatever namespace the thread is in.

use std::io;

use rtnetlink::packet_core::{
    NLM_F_DUMP, NLM_F_MULTIPART, NLM_F_REQUEST, NetlinkBuffer, NetlinkDeserializable,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::nsid::{NsidAttribute, NsidMessage};
use rtnetlink::packet_route::route::RouteMessage;
use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::report::PodSide;

/// A blocking rtnetlink socket in the namespace of the thread that opened it.
#[derive(Debug)]
pub(crate) struct BlockingNetlink {
    socket: Socket,
    seq: u32,
}

impl BlockingNetlink {
    /// Open and bind (`socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE)`).
    pub(crate) fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(BlockingNetlink { socket, seq: 0 })
    }

    /// Send one request; the payloads (message type, bytes after the netlink header) of every
    /// answer until the end of the dump or the reply. Parsing is left to the caller, so hot
    /// paths can read just the fixed headers they need.
    fn request_raw(
        &mut self,
        msg: RouteNetlinkMessage,
        dump: bool,
    ) -> io::Result<Vec<(u16, Vec<u8>)>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_owned());
        let mut out = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            let mut offset = 0;
            while offset + 16 <= data.len() {
                let msg = NetlinkBuffer::new_checked(&data[offset..])
                    .map_err(|e| invalid(&e.to_string()))?;
                let len = msg.length() as usize;
                if len < 16 || offset + len > data.len() {
                    return Err(invalid("bad netlink message length"));
                }
                offset += (len + 3) & !3;
                if msg.sequence_number() != self.seq {
                    continue;
                }
                let payload = &data[offset - ((len + 3) & !3) + 16..][..len - 16];
                match msg.message_type() {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = payload
                            .get(..4)
                            .and_then(|b| b.try_into().ok())
                            .map_or(0, i32::from_ne_bytes);
                        return if code < 0 {
                            Err(io::Error::from_raw_os_error(-code))
                        } else {
                            Ok(out)
                        };
                    }
                    t => {
                        out.push((t, payload.to_vec()));
                        if msg.flags() & NLM_F_MULTIPART == 0 {
                            return Ok(out);
                        }
                    }
                }
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
        let up = self
            .request_raw(RouteNetlinkMessage::GetLink(link), false)?
            .iter()
            .filter(|(t, p)| *t == RTM_NEWLINK && p.len() >= 16)
            .any(|(_, p)| {
                // struct ifinfomsg { u8 family, pad; u16 type; i32 index; u32 flags; u32 change }
                let flags = u32::from_ne_bytes([p[8], p[9], p[10], p[11]]);
                flags & IFF_UP != 0 && flags & IFF_LOWER_UP != 0
            });
        // One dump of both families; default routes of the main table.
        let (mut default_v4, mut default_v6) = (false, false);
        for (t, p) in
            self.request_raw(RouteNetlinkMessage::GetRoute(RouteMessage::default()), true)?
        {
            // struct rtmsg { u8 family, dst_len, src_len, tos, table, protocol, scope, type; u32 flags }
            if t != RTM_NEWROUTE || p.len() < 12 {
                continue;
            }
            let is_default =
                p[1] == 0 && u32::from(p[4]) == crate::host::MAIN_TABLE && p[7] == RTN_UNICAST;
            match p[0] {
                AF_INET => default_v4 |= is_default,
                AF_INET6 => default_v6 |= is_default,
                _ => {}
            }
        }
        Ok(PodSide {
            interface_up: up,
            default_route_v4: v4.then_some(default_v4),
            default_route_v6: v6.then_some(default_v6),
        })
    }
}

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWROUTE: u16 = 24;
const RTN_UNICAST: u8 = 1;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
