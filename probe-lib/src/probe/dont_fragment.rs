//! Don't-fragment on the path-MTU probe's ICMP sockets: a probe as large as the pod's MTU must
//! reach the gateway whole, or not at all.
//!
//! `IP_PMTUDISC_PROBE` (not `_DO`): the kernel sets DF but sizes by the interface MTU only,
//! ignoring the path MTU it cached from an earlier "fragmentation needed" — so every probe
//! tests the path again (a repaired path shows at the next probe, not when the cache entry
//! expires ten minutes later), and a larger-than-path probe is sent and lost or rejected by the
//! path rather than refused locally. IPv6 routers never fragment; `IPV6_DONTFRAG` also stops the
//! pod's own kernel from fragmenting it. (`ping -M probe -s SIZE` does the same.)

use std::os::fd::RawFd;

use nix::libc;
use nix::sys::socket::setsockopt;
use nix::{setsockopt_impl, sockopt_impl};

use super::icmp_filter::with_borrowed;

sockopt_impl!(
    /// `setsockopt(IPPROTO_IP, IP_MTU_DISCOVER)`.
    IpMtuDiscover,
    SetOnly,
    libc::IPPROTO_IP,
    libc::IP_MTU_DISCOVER,
    libc::c_int
);
sockopt_impl!(
    /// `setsockopt(IPPROTO_IPV6, IPV6_MTU_DISCOVER)`.
    Ipv6MtuDiscover,
    SetOnly,
    libc::IPPROTO_IPV6,
    libc::IPV6_MTU_DISCOVER,
    libc::c_int
);
sockopt_impl!(
    /// `setsockopt(IPPROTO_IPV6, IPV6_DONTFRAG)`.
    Ipv6DontFrag,
    SetOnly,
    libc::IPPROTO_IPV6,
    libc::IPV6_DONTFRAG,
    libc::c_int
);

/// IPv4 and ICMPv4 headers: the echo payload that fills an MTU is `mtu - 28`.
pub(crate) const V4_HEADERS: u32 = 20 + 8;
/// IPv6 and ICMPv6 headers: `mtu - 48`.
pub(crate) const V6_HEADERS: u32 = 40 + 8;
/// Smallest MTU each family must carry (RFC 791, RFC 8200): below it no probe is sent.
pub(crate) const V4_MIN_MTU: u32 = 68;
/// IPv6's minimum link MTU.
pub(crate) const V6_MIN_MTU: u32 = 1280;
/// Largest IP packet: an MTU above it (a pod can set anything on its own eth0) is capped.
pub(crate) const MAX_PACKET: u32 = 65_535;

/// The echo payload that makes a packet of exactly the pod's MTU, if the MTU is sane.
pub(crate) fn payload_for(mtu: u32, v6: bool) -> Option<usize> {
    let (headers, min) = if v6 {
        (V6_HEADERS, V6_MIN_MTU)
    } else {
        (V4_HEADERS, V4_MIN_MTU)
    };
    (mtu >= min).then(|| (mtu.min(MAX_PACKET) - headers) as usize)
}

/// Set don't-fragment (probe mode) on surge-ping's socket `fd`.
pub(crate) fn apply(fd: RawFd, v6: bool) -> std::io::Result<()> {
    with_borrowed(fd, |fd| {
        if v6 {
            setsockopt(&fd, Ipv6MtuDiscover, &libc::IPV6_PMTUDISC_PROBE)?;
            setsockopt(&fd, Ipv6DontFrag, &1)
        } else {
            setsockopt(&fd, IpMtuDiscover, &libc::IP_PMTUDISC_PROBE)
        }
    })
    .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_fills_the_mtu_exactly_and_insane_mtus_are_bounded() {
        assert_eq!(payload_for(1500, false), Some(1472), "ping -M do -s 1472");
        assert_eq!(payload_for(1500, true), Some(1452));
        assert_eq!(payload_for(9001, false), Some(8973));
        assert_eq!(payload_for(67, false), None);
        assert_eq!(payload_for(1279, true), None);
        assert_eq!(payload_for(u32::MAX, false), Some(65_507));
    }
}
