//! `ICMP_FILTER` / `ICMP6_FILTER` on raw ICMP sockets: only the reply types a probe can use.
//!
//! Why: a raw ICMP socket gets a copy of *every* ICMP packet the namespace receives. The
//! host's sockets see the whole node's ICMP (any peer can send it, at line rate) and each copy
//! costs a wakeup, a decode and a map lookup on the runtime. With the filter the kernel drops
//! everything but echo reply, destination unreachable and time exceeded before queueing it
//! (`ping` sets the same filter). Replies that pass are still matched against what was sent
//! (identifier, sequence, target) by surge-ping.

use std::os::fd::{AsFd, BorrowedFd, RawFd};

use nix::libc;
use nix::sys::socket::setsockopt;
use nix::{setsockopt_impl, sockopt_impl};

/// `ICMP_FILTER` (linux/icmp.h): a `u32` mask, bit N set = ICMPv4 type N dropped.
const ICMP_FILTER: libc::c_int = 1;
/// `ICMP6_FILTER` (linux/icmpv6.h): `struct icmp6_filter { u32 data[8] }`, bit set = dropped.
const ICMP6_FILTER: libc::c_int = 1;

sockopt_impl!(
    /// `setsockopt(SOL_RAW, ICMP_FILTER)`.
    IcmpFilter,
    SetOnly,
    libc::SOL_RAW,
    ICMP_FILTER,
    u32
);
sockopt_impl!(
    /// `setsockopt(IPPROTO_ICMPV6, ICMP6_FILTER)`.
    Icmp6Filter,
    SetOnly,
    libc::IPPROTO_ICMPV6,
    ICMP6_FILTER,
    [u32; 8]
);

/// ICMPv4 types delivered: echo reply (0), destination unreachable (3), time exceeded (11).
pub(crate) const V4_PASS: [u8; 3] = [0, 3, 11];
/// ICMPv6 types delivered: destination unreachable (1), time exceeded (3), echo reply (129).
pub(crate) const V6_PASS: [u8; 3] = [1, 3, 129];

/// The `ICMP_FILTER` mask: every type blocked but [`V4_PASS`].
pub(crate) fn v4_mask() -> u32 {
    V4_PASS.iter().fold(u32::MAX, |m, t| m & !(1u32 << t))
}

/// The `icmp6_filter` words: every type blocked but [`V6_PASS`].
pub(crate) fn v6_mask() -> [u32; 8] {
    let mut words = [u32::MAX; 8];
    for t in V6_PASS {
        words[usize::from(t >> 5)] &= !(1u32 << (t & 31));
    }
    words
}

/// Set the filter on raw ICMP socket `fd` (v4 or v6).
pub(crate) fn apply(fd: RawFd, v6: bool) -> std::io::Result<()> {
    with_borrowed(fd, |fd| {
        if v6 {
            setsockopt(&fd, Icmp6Filter, &v6_mask())
        } else {
            setsockopt(&fd, IcmpFilter, &v4_mask())
        }
    })
    .map_err(Into::into)
}

/// Run `f` on surge-ping's socket descriptor `fd`, borrowed for the call only (also used to
/// set don't-fragment, `dont_fragment.rs`).
pub(crate) fn with_borrowed<R>(fd: RawFd, f: impl FnOnce(BorrowedFd<'_>) -> R) -> R {
    #[allow(unsafe_code)]
    // SAFETY: `fd` is the socket of a live surge-ping client the caller holds, and the borrow
    // ends before this function returns. surge-ping exposes only the raw descriptor.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    f(fd.as_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_pass_only_replies_and_errors() {
        let m = v4_mask();
        for t in 0u8..32 {
            let passes = m & (1 << t) == 0;
            assert_eq!(passes, V4_PASS.contains(&t), "ICMPv4 type {t}");
        }
        let w = v6_mask();
        for t in 0u8..=255 {
            let passes = w[usize::from(t >> 5)] & (1 << (t & 31)) == 0;
            assert_eq!(passes, V6_PASS.contains(&t), "ICMPv6 type {t}");
        }
    }
}
