//! The netconf part of rtnetlink (`RTM_NEWNETCONF`, `RTM_GETNETCONF`), which
//! netlink-packet-route does not model, and [`KernelMessage`], the message type podnet's
//! netlink sockets speak: every rtnetlink message netlink-packet-route knows, plus netconf.
//!
//! Netconf is how the kernel reports forwarding and proxy ARP/NDP per interface, both in
//! dumps (`ip netconf show`) and as change notifications, so podnet never polls `/proc/sys`.

use rtnetlink::packet_core::{
    DecodeError, NetlinkDeserializable, NetlinkHeader, NetlinkSerializable, NlasIterator,
};
use rtnetlink::packet_route::RouteNetlinkMessage;

use super::types::{Family, Netconf, NetconfScope};

/// `RTM_NEWNETCONF`.
pub const RTM_NEWNETCONF: u16 = 80;
/// `RTM_DELNETCONF`.
pub const RTM_DELNETCONF: u16 = 81;
/// `RTM_GETNETCONF`.
pub const RTM_GETNETCONF: u16 = 82;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const NETCONFA_IFINDEX: u16 = 1;
const NETCONFA_FORWARDING: u16 = 2;
const NETCONFA_PROXY_NEIGH: u16 = 5;
const NETCONFA_IFINDEX_ALL: i32 = -1;
const NETCONFA_IFINDEX_DEFAULT: i32 = -2;
/// `struct netconfmsg` is one byte, padded to the netlink alignment of four.
const NETCONFMSG_LEN: usize = 4;

/// A netconf message, as sent or received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetconfMessage {
    /// `RTM_NEWNETCONF` (dump entry or change notification).
    New(Netconf),
    /// `RTM_DELNETCONF` (an interface's settings went away with it).
    Del(Netconf),
    /// `RTM_GETNETCONF` request for one family (sent with `NLM_F_DUMP`).
    Get(Family),
}

/// Every message podnet's rtnetlink sockets send or receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelMessage {
    /// Anything netlink-packet-route understands (links, routes, addresses, nsid...).
    Route(RouteNetlinkMessage),
    /// Netconf.
    Netconf(NetconfMessage),
    /// A message that did not decode: kept as a value (never an error) so the reader can
    /// count and report it instead of netlink-proto dropping it silently (it logs through
    /// `log`, which podnet does not collect).
    Malformed(Malformed),
}

/// A message of a known type whose body did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// The netlink message type (`RTM_NEWROUTE`, ...).
    pub message_type: u16,
    /// Why, at most [`MALFORMED_WHY_MAX`] bytes: a decoder error may quote the input.
    pub why: String,
}

/// Longest reason kept for a [`Malformed`] message.
pub const MALFORMED_WHY_MAX: usize = 200;

impl Malformed {
    fn new(message_type: u16, e: &DecodeError) -> Self {
        let mut why = e.to_string();
        if why.len() > MALFORMED_WHY_MAX {
            let mut cut = MALFORMED_WHY_MAX;
            while !why.is_char_boundary(cut) {
                cut -= 1;
            }
            why.truncate(cut);
        }
        Malformed { message_type, why }
    }
}

impl From<RouteNetlinkMessage> for KernelMessage {
    fn from(m: RouteNetlinkMessage) -> Self {
        KernelMessage::Route(m)
    }
}

fn family_byte(f: Family) -> u8 {
    match f {
        Family::Ipv4 => AF_INET,
        Family::Ipv6 => AF_INET6,
    }
}

/// Parse the payload of a netconf message (after the netlink header). Malformed input is an
/// error, never a panic.
pub fn parse_netconf(payload: &[u8]) -> Result<Netconf, DecodeError> {
    let family = match payload.first() {
        Some(&AF_INET) => Family::Ipv4,
        Some(&AF_INET6) => Family::Ipv6,
        Some(other) => return Err(format!("netconf: unsupported family {other}").into()),
        None => return Err("netconf: empty message".into()),
    };
    let mut nc = Netconf {
        family,
        scope: NetconfScope::All,
        forwarding: None,
        proxy_neigh: None,
    };
    let mut ifindex = None;
    let attrs = payload.get(NETCONFMSG_LEN..).unwrap_or_default();
    for nla in NlasIterator::new(attrs) {
        let nla = nla?;
        let value = nla.value();
        let as_i32 = || -> Result<i32, DecodeError> {
            let bytes: [u8; 4] = value
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| DecodeError::from("netconf: attribute shorter than 4 bytes"))?;
            Ok(i32::from_ne_bytes(bytes))
        };
        match nla.kind() {
            NETCONFA_IFINDEX => ifindex = Some(as_i32()?),
            NETCONFA_FORWARDING => nc.forwarding = Some(as_i32()? != 0),
            NETCONFA_PROXY_NEIGH => nc.proxy_neigh = Some(as_i32()? != 0),
            _ => {}
        }
    }
    nc.scope = match ifindex {
        Some(NETCONFA_IFINDEX_ALL) => NetconfScope::All,
        Some(NETCONFA_IFINDEX_DEFAULT) => NetconfScope::Default,
        Some(i) if i > 0 => NetconfScope::Interface(i as u32),
        Some(i) => return Err(format!("netconf: invalid ifindex {i}").into()),
        None => return Err("netconf: no ifindex".into()),
    };
    Ok(nc)
}

impl NetlinkSerializable for KernelMessage {
    fn message_type(&self) -> u16 {
        match self {
            KernelMessage::Route(m) => m.message_type(),
            KernelMessage::Netconf(NetconfMessage::New(_)) => RTM_NEWNETCONF,
            KernelMessage::Netconf(NetconfMessage::Del(_)) => RTM_DELNETCONF,
            KernelMessage::Netconf(NetconfMessage::Get(_)) => RTM_GETNETCONF,
            KernelMessage::Malformed(m) => m.message_type,
        }
    }

    fn buffer_len(&self) -> usize {
        match self {
            KernelMessage::Route(m) => m.buffer_len(),
            // We only ever send GETNETCONF dump requests: the bare, padded header.
            KernelMessage::Netconf(_) => NETCONFMSG_LEN,
            // Never sent.
            KernelMessage::Malformed(_) => 0,
        }
    }

    fn serialize(&self, buffer: &mut [u8]) {
        match self {
            KernelMessage::Route(m) => m.serialize(buffer),
            KernelMessage::Netconf(m) => {
                let family = match m {
                    NetconfMessage::New(nc) | NetconfMessage::Del(nc) => nc.family,
                    NetconfMessage::Get(f) => *f,
                };
                buffer[..NETCONFMSG_LEN].fill(0);
                buffer[0] = family_byte(family);
            }
            KernelMessage::Malformed(_) => {}
        }
    }
}

impl NetlinkDeserializable for KernelMessage {
    type Error = DecodeError;

    /// Never an error: a body that does not decode is a [`KernelMessage::Malformed`], so one
    /// bad message is counted and skipped by the reader, not lost without a word.
    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, Self::Error> {
        let t = header.message_type;
        let parsed = match t {
            RTM_NEWNETCONF => {
                parse_netconf(payload).map(|nc| KernelMessage::Netconf(NetconfMessage::New(nc)))
            }
            RTM_DELNETCONF => {
                parse_netconf(payload).map(|nc| KernelMessage::Netconf(NetconfMessage::Del(nc)))
            }
            _ => RouteNetlinkMessage::deserialize(header, payload).map(KernelMessage::Route),
        };
        Ok(parsed.unwrap_or_else(|e| KernelMessage::Malformed(Malformed::new(t, &e))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(kind: u16, value: i32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&8u16.to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(&value.to_ne_bytes());
        v
    }

    fn msg(family: u8, attrs: &[(u16, i32)]) -> Vec<u8> {
        let mut v = vec![family, 0, 0, 0];
        for (k, val) in attrs {
            v.extend(nla(*k, *val));
        }
        v
    }

    #[test]
    fn parses_full_interface_entry() {
        let nc = parse_netconf(&msg(
            AF_INET,
            &[
                (NETCONFA_IFINDEX, 7),
                (NETCONFA_FORWARDING, 1),
                (3, 1),
                (NETCONFA_PROXY_NEIGH, 0),
            ],
        ))
        .unwrap();
        assert_eq!(nc.family, Family::Ipv4);
        assert_eq!(nc.scope, NetconfScope::Interface(7));
        assert_eq!(nc.forwarding, Some(true));
        assert_eq!(nc.proxy_neigh, Some(false));
    }

    #[test]
    fn parses_partial_notification_for_all() {
        let nc = parse_netconf(&msg(
            AF_INET6,
            &[(NETCONFA_IFINDEX, -1), (NETCONFA_FORWARDING, 0)],
        ))
        .unwrap();
        assert_eq!(nc.family, Family::Ipv6);
        assert_eq!(nc.scope, NetconfScope::All);
        assert_eq!(nc.forwarding, Some(false));
        assert_eq!(nc.proxy_neigh, None);
        let d = parse_netconf(&msg(AF_INET, &[(NETCONFA_IFINDEX, -2)])).unwrap();
        assert_eq!(d.scope, NetconfScope::Default);
    }

    #[test]
    fn rejects_malformed_input_without_panicking() {
        assert!(parse_netconf(&[]).is_err());
        assert!(parse_netconf(&[99, 0, 0, 0]).is_err());
        // No ifindex.
        assert!(parse_netconf(&msg(AF_INET, &[(NETCONFA_FORWARDING, 1)])).is_err());
        // Invalid ifindex.
        assert!(parse_netconf(&msg(AF_INET, &[(NETCONFA_IFINDEX, 0)])).is_err());
        // Truncated attribute: length says 8, only 6 bytes present.
        let mut m = msg(AF_INET, &[(NETCONFA_IFINDEX, 3)]);
        m.truncate(m.len() - 2);
        assert!(parse_netconf(&m).is_err());
        // Attribute with a short value.
        let mut m = vec![AF_INET, 0, 0, 0];
        m.extend_from_slice(&6u16.to_ne_bytes());
        m.extend_from_slice(&NETCONFA_IFINDEX.to_ne_bytes());
        m.extend_from_slice(&[1, 0, 0, 0]);
        assert!(parse_netconf(&m).is_err());
        // Header shorter than the padded netconfmsg: no attributes, so no ifindex.
        assert!(parse_netconf(&[AF_INET]).is_err());
        // Every prefix of a valid message is handled without panicking.
        let full = msg(AF_INET, &[(NETCONFA_IFINDEX, 3), (NETCONFA_FORWARDING, 1)]);
        for n in 0..full.len() {
            let _ = parse_netconf(&full[..n]);
        }
    }

    #[test]
    fn get_request_is_a_padded_family_byte() {
        let m = KernelMessage::Netconf(NetconfMessage::Get(Family::Ipv6));
        assert_eq!(m.message_type(), RTM_GETNETCONF);
        assert_eq!(m.buffer_len(), 4);
        let mut buf = [0xffu8; 4];
        m.serialize(&mut buf);
        assert_eq!(buf, [AF_INET6, 0, 0, 0]);
    }
}
