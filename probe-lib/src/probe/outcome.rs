//! The result of one probe, and how errors and ICMP replies map onto it.

use std::io;

pub use crate::model::{Observation, ProbeResult};

/// The socket the pod's namespace thread opened for a probe, or the observation that says why
/// there is none (`None`: the visit made no socket for it).
pub fn opened<T>(socket: Option<io::Result<T>>) -> Result<T, Observation> {
    match socket {
        Some(Ok(s)) => Ok(s),
        Some(Err(e)) => Err(Observation::failed(
            ProbeResult::Error,
            format!("socket: {e}"),
        )),
        None => Err(Observation::failed(ProbeResult::Error, "no socket")),
    }
}

/// Classify a socket error from sending a probe or connecting.
pub fn classify_io(e: &io::Error) -> ProbeResult {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => return ProbeResult::Refused,
        io::ErrorKind::TimedOut => return ProbeResult::Timeout,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            return ProbeResult::Unreachable;
        }
        _ => {}
    }
    match e.raw_os_error() {
        // No route, a prohibit/unreachable route, or a blackhole route (EINVAL on send).
        Some(libc_errno::EHOSTUNREACH | libc_errno::ENETUNREACH | libc_errno::EACCES) => {
            ProbeResult::Unreachable
        }
        Some(libc_errno::EINVAL) => ProbeResult::Unreachable,
        Some(libc_errno::ECONNREFUSED) => ProbeResult::Refused,
        _ => ProbeResult::Error,
    }
}

/// ICMP message types a probe can get back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpReply {
    /// Echo reply.
    Echo,
    /// Destination unreachable.
    Unreachable,
    /// Time (hop limit) exceeded: a router on the way answered.
    TimeExceeded,
    /// Anything else.
    Other(u8),
}

impl IcmpReply {
    /// From an ICMPv4 type.
    pub fn from_v4(t: u8) -> Self {
        match t {
            0 => IcmpReply::Echo,
            3 => IcmpReply::Unreachable,
            11 => IcmpReply::TimeExceeded,
            o => IcmpReply::Other(o),
        }
    }

    /// From an ICMPv6 type.
    pub fn from_v6(t: u8) -> Self {
        match t {
            129 => IcmpReply::Echo,
            1 => IcmpReply::Unreachable,
            3 => IcmpReply::TimeExceeded,
            o => IcmpReply::Other(o),
        }
    }

    /// The result for a normal target: only an echo reply is success.
    pub fn result(self) -> ProbeResult {
        match self {
            IcmpReply::Echo => ProbeResult::Ok,
            IcmpReply::Unreachable => ProbeResult::Unreachable,
            IcmpReply::TimeExceeded | IcmpReply::Other(_) => ProbeResult::Error,
        }
    }

    /// The result for the gateway probe, which is sent with a hop limit of 1: the gateway
    /// answering at all (echo, time exceeded, or unreachable when it will not forward) proves
    /// the link to it, its proxy ARP and its route back to the pod.
    pub fn gateway_result(self) -> ProbeResult {
        match self {
            IcmpReply::Echo | IcmpReply::TimeExceeded | IcmpReply::Unreachable => ProbeResult::Ok,
            IcmpReply::Other(_) => ProbeResult::Error,
        }
    }
}

/// errno values (Linux), without pulling libc into the library's API.
mod libc_errno {
    pub const EACCES: i32 = 13;
    pub const EINVAL: i32 = 22;
    pub const ENETUNREACH: i32 = 101;
    pub const ECONNREFUSED: i32 = 111;
    pub const EHOSTUNREACH: i32 = 113;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(classify_io(&e(111)), ProbeResult::Refused);
        assert_eq!(classify_io(&e(113)), ProbeResult::Unreachable);
        assert_eq!(classify_io(&e(101)), ProbeResult::Unreachable);
        assert_eq!(classify_io(&e(22)), ProbeResult::Unreachable);
        assert_eq!(classify_io(&e(13)), ProbeResult::Unreachable);
        assert_eq!(classify_io(&e(110)), ProbeResult::Timeout);
        assert_eq!(classify_io(&e(24)), ProbeResult::Error);
    }

    #[test]
    fn icmp_replies() {
        assert_eq!(IcmpReply::from_v4(0).result(), ProbeResult::Ok);
        assert_eq!(IcmpReply::from_v4(3).result(), ProbeResult::Unreachable);
        assert_eq!(IcmpReply::from_v6(129).result(), ProbeResult::Ok);
        assert_eq!(IcmpReply::from_v6(1).result(), ProbeResult::Unreachable);
        assert_eq!(IcmpReply::from_v4(11).result(), ProbeResult::Error);
        assert_eq!(IcmpReply::from_v4(11).gateway_result(), ProbeResult::Ok);
        assert_eq!(IcmpReply::from_v6(3).gateway_result(), ProbeResult::Ok);
        assert_eq!(IcmpReply::from_v4(3).gateway_result(), ProbeResult::Ok);
        assert_eq!(IcmpReply::from_v4(5).gateway_result(), ProbeResult::Error);
    }

    #[test]
    fn failures() {
        assert!(!ProbeResult::Ok.is_failure());
        assert!(!ProbeResult::Refused.is_failure());
        for r in [
            ProbeResult::Timeout,
            ProbeResult::Unreachable,
            ProbeResult::Error,
        ] {
            assert!(r.is_failure());
        }
    }
}
