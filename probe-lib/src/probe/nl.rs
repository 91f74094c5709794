//! Blocking rtnetlink requests for the namespace thread: it must not run a tokio reactor of
//! its own, and a socket created there belongs to whatever namespace the thread is in.

use std::io;

use rtnetlink::packet_core::{
    NLM_F_DUMP, NLM_F_MULTIPART, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkFlags, LinkMessage};
use rtnetlink::packet_route::nsid::{NsidAttribute, NsidMessage};
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage, RouteType};
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

    /// Send one request and collect every answer until the end of the dump or the reply.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        dump: bool,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            let mut offset = 0;
            while offset < data.len() {
                let bytes = &data[offset..];
                let len = NetlinkBuffer::new_checked(bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
                    .length() as usize;
                if len == 0 || len > bytes.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "bad netlink length",
                    ));
                }
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..len])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                offset += (len + 3) & !3;
                if msg.header.sequence_number != self.seq {
                    continue;
                }
                let multipart = msg.header.flags & NLM_F_MULTIPART != 0;
                match msg.payload {
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m);
                        if !multipart {
                            return Ok(out);
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => match e.code {
                        Some(_) => return Err(io::Error::from(e)),
                        None => return Ok(out),
                    },
                    _ => {}
                }
            }
        }
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
    /// (`ip link show dev eth0; ip route show default; ip -6 route show default`)?
    pub(crate) fn pod_side(&mut self, index: u32, v4: bool, v6: bool) -> io::Result<PodSide> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        let up = self
            .request(RouteNetlinkMessage::GetLink(link), false)?
            .iter()
            .any(|m| matches!(m, RouteNetlinkMessage::NewLink(l) if l.header.flags.contains(LinkFlags::Up) && l.header.flags.contains(LinkFlags::LowerUp)));
        let mut has_default = |family| -> io::Result<bool> {
            let mut r = RouteMessage::default();
            r.header.address_family = family;
            Ok(self
                .request(RouteNetlinkMessage::GetRoute(r), true)?
                .iter()
                .any(|m| match m {
                    RouteNetlinkMessage::NewRoute(r) => {
                        r.header.destination_prefix_length == 0
                            && r.header.kind == RouteType::Unicast
                            && !r
                                .attributes
                                .iter()
                                .any(|a| matches!(a, RouteAttribute::Destination(_)))
                            && u32::from(r.header.table) == crate::host::MAIN_TABLE
                    }
                    _ => false,
                }))
        };
        Ok(PodSide {
            interface_up: up,
            default_route_v4: if v4 {
                Some(has_default(AddressFamily::Inet)?)
            } else {
                None
            },
            default_route_v6: if v6 {
                Some(has_default(AddressFamily::Inet6)?)
            } else {
                None
            },
        })
    }
}
