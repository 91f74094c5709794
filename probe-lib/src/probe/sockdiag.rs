//! The connects a pod is failing to make, read from its own TCP sockets: an inet_diag dump
//! of the sockets in `SYN_SENT` (`ss -tni state syn-sent`), IPv4 and IPv6, on the namespace
//! thread while it is inside the pod. The kernel's answer is parsed by hand (the fixed
//! `inet_diag_msg` and one `tcp_info` field): every length is checked, nothing panics, and
//! at most [`MAX_SOCKETS`] sockets and [`MAX_DESTS`] destinations are kept.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rtnetlink::sys::protocols::NETLINK_SOCK_DIAG;
use serde::Serialize;

use super::nl::{BlockingNetlink, Flow};

/// Sockets read per pod and round, at most; the rest of the dump is not read (a pod can open
/// as many sockets as its limits allow).
pub const MAX_SOCKETS: usize = 2048;
/// Distinct destinations (address and port) kept per pod and round.
pub const MAX_DESTS: usize = 32;

/// Connects in progress to one destination, as one dump saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SynSentDest {
    /// Where the pod is connecting to.
    pub dest: SocketAddr,
    /// Its sockets in `SYN_SENT`.
    pub sockets: u32,
    /// The most SYN retransmissions of one of them (`tcpi_retransmits`).
    pub retransmits: u8,
}

/// One dump's view of a pod's failing connects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SynSentDump {
    /// Per destination, largest socket count first.
    pub dests: Vec<SynSentDest>,
    /// Sockets not counted: beyond [`MAX_SOCKETS`], or to destinations beyond [`MAX_DESTS`].
    pub dropped: u32,
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const IPPROTO_TCP: u8 = 6;
const TCP_SYN_SENT: u32 = 2;
/// `INET_DIAG_INFO` (attribute 2) asked for as bit `2 - 1` of `idiag_ext`.
const INET_DIAG_INFO: u16 = 2;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// `sizeof(struct inet_diag_msg)`.
const DIAG_MSG_LEN: usize = 72;

/// `struct inet_diag_req_v2` for TCP sockets of `family` in `SYN_SENT`, with `tcp_info`.
fn request(family: u8) -> [u8; 56] {
    let mut r = [0u8; 56];
    r[0] = family;
    r[1] = IPPROTO_TCP;
    r[2] = 1 << (INET_DIAG_INFO - 1);
    r[4..8].copy_from_slice(&(1u32 << TCP_SYN_SENT).to_ne_bytes());
    r
}

/// One socket of the answer: its destination and SYN retransmissions, or `None` for a
/// message too short or of another family (hostile or future kernels: skipped, not trusted).
fn parse_socket(p: &[u8]) -> Option<(SocketAddr, u8)> {
    if p.len() < DIAG_MSG_LEN {
        return None;
    }
    // struct inet_diag_msg { u8 family, state, timer, retrans; struct inet_diag_sockid id
    // { be16 sport, dport; be32 src[4], dst[4]; u32 if; u32 cookie[2] }; u32 expires, rqueue,
    // wqueue, uid, inode; } then attributes.
    let port = u16::from_be_bytes([p[6], p[7]]);
    let ip: IpAddr = match p[0] {
        AF_INET => Ipv4Addr::new(p[24], p[25], p[26], p[27]).into(),
        AF_INET6 => {
            let b: [u8; 16] = p[24..40].try_into().ok()?;
            let v6 = Ipv6Addr::from(b);
            // A v4-mapped destination of a dual-stack socket is an IPv4 connect.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    let mut retransmits = p[3];
    let mut attrs = &p[DIAG_MSG_LEN..];
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            break;
        }
        // struct tcp_info { u8 state, ca_state, retransmits, … }
        if kind == INET_DIAG_INFO && len >= 4 + 3 {
            retransmits = retransmits.max(attrs[4 + 2]);
        }
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
    Some((SocketAddr::new(ip, port), retransmits))
}

/// Counts sockets by destination, bounded.
#[derive(Debug, Default)]
struct Tally {
    by_dest: HashMap<SocketAddr, SynSentDest>,
    seen: usize,
    dropped: u32,
}

impl Tally {
    fn add(&mut self, payload: &[u8]) -> Flow {
        self.seen += 1;
        if self.seen > MAX_SOCKETS {
            self.dropped = self.dropped.saturating_add(1);
            return Flow::Stop;
        }
        let Some((dest, retransmits)) = parse_socket(payload) else {
            return Flow::Continue;
        };
        let full = self.by_dest.len() >= MAX_DESTS;
        match self.by_dest.get_mut(&dest) {
            Some(d) => {
                d.sockets = d.sockets.saturating_add(1);
                d.retransmits = d.retransmits.max(retransmits);
            }
            None if full => self.dropped = self.dropped.saturating_add(1),
            None => {
                self.by_dest.insert(
                    dest,
                    SynSentDest {
                        dest,
                        sockets: 1,
                        retransmits,
                    },
                );
            }
        }
        Flow::Continue
    }

    fn finish(self) -> SynSentDump {
        let mut dests: Vec<SynSentDest> = self.by_dest.into_values().collect();
        dests.sort_by(|a, b| b.sockets.cmp(&a.sockets).then(a.dest.cmp(&b.dest)));
        SynSentDump {
            dests,
            dropped: self.dropped,
        }
    }
}

/// TCP segments retransmitted so far in the current thread's namespace (`nstat -az
/// TcpRetransSegs`), from `/proc/thread-self/net/snmp`. A SYN retransmission increments it
/// (beside `TcpExtTCPSynRetrans`, in the same kernel function), so a pod whose count has not
/// moved has no connect that went unanswered since and its dump can be skipped (a dump walks
/// the shared TCP hash table, ≈ 0.5 ms). Why this counter: `snmp` (≈ 1.3 kB, ≈ 40 counters)
/// is smaller than `netstat` (≈ 4 kB, ≈ 130 counters, where `TCPSynRetrans` lives); read
/// here in ≈ 20 µs against ≈ 23 µs idle (docs/benchmarks.md). Data retransmissions move it
/// too, which costs a needless dump, never a missed one.
pub(crate) fn tcp_retransmits() -> Option<u64> {
    use std::io::Read;
    // One read into a stack buffer: the file is a few lines, rendered whole by the kernel.
    let mut buf = [0u8; 4096];
    let mut file = std::fs::File::open("/proc/thread-self/net/snmp").ok()?;
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    tcp_retransmits_in(std::str::from_utf8(&buf[..len]).ok()?)
}

/// `RetransSegs` from the text of `/proc/net/snmp` (a `Tcp:` names line, then values).
fn tcp_retransmits_in(text: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with("Tcp:"));
    let names = lines.next()?;
    let values = lines.next()?;
    let at = names.split_whitespace().position(|n| n == "RetransSegs")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// `ss -tni state syn-sent` in the current namespace (both families), bounded.
pub(crate) fn dump_syn_sent() -> io::Result<SynSentDump> {
    let mut nl = BlockingNetlink::open_protocol(NETLINK_SOCK_DIAG)?;
    let mut tally = Tally::default();
    for family in [AF_INET, AF_INET6] {
        if tally.seen > MAX_SOCKETS {
            break;
        }
        nl.dump_raw(SOCK_DIAG_BY_FAMILY, &request(family), |t, p| {
            if t == SOCK_DIAG_BY_FAMILY {
                tally.add(p)
            } else {
                Flow::Continue
            }
        })?;
        if tally.seen > MAX_SOCKETS {
            // The dump was stopped half-read: its rest would arrive as answers to the next.
            nl = BlockingNetlink::open_protocol(NETLINK_SOCK_DIAG)?;
        }
    }
    Ok(tally.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(family: u8, dst: &[u8], port: u16, retrans: u8, info_retrans: Option<u8>) -> Vec<u8> {
        let mut p = vec![0u8; DIAG_MSG_LEN];
        p[0] = family;
        p[1] = TCP_SYN_SENT as u8;
        p[3] = retrans;
        p[6..8].copy_from_slice(&port.to_be_bytes());
        p[24..24 + dst.len()].copy_from_slice(dst);
        if let Some(r) = info_retrans {
            let mut info = vec![0u8; 104];
            info[2] = r;
            p.extend_from_slice(&((4 + info.len()) as u16).to_ne_bytes());
            p.extend_from_slice(&INET_DIAG_INFO.to_ne_bytes());
            p.extend_from_slice(&info);
        }
        p
    }

    #[test]
    fn sockets_are_parsed_and_hostile_ones_skipped() {
        let v4 = msg(AF_INET, &[10, 244, 0, 9], 8080, 0, Some(3));
        assert_eq!(
            parse_socket(&v4),
            Some(("10.244.0.9:8080".parse().unwrap(), 3))
        );
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&[10, 244, 0, 9]);
        let m = msg(AF_INET6, &mapped, 80, 2, None);
        assert_eq!(
            parse_socket(&m),
            Some(("10.244.0.9:80".parse().unwrap(), 2))
        );
        // Short, unknown family, an attribute longer than the message, a zero-length one.
        assert_eq!(parse_socket(&v4[..40]), None);
        assert_eq!(parse_socket(&msg(99, &[1], 1, 0, None)), None);
        let mut bad = msg(AF_INET, &[10, 0, 0, 1], 1, 1, None);
        bad.extend_from_slice(&[0xff, 0xff, 2, 0, 9]);
        assert_eq!(parse_socket(&bad), Some(("10.0.0.1:1".parse().unwrap(), 1)));
        let mut zero = msg(AF_INET, &[10, 0, 0, 1], 1, 1, None);
        zero.extend_from_slice(&[0, 0, 2, 0]);
        assert_eq!(parse_socket(&zero).map(|s| s.1), Some(1));
    }

    #[test]
    fn tcp_retransmits_from_snmp() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Tcp: RtoAlgorithm ActiveOpens RetransSegs InErrs\nTcp: 1 40 17 0\n\
                    Udp: InDatagrams\nUdp: 3\n";
        assert_eq!(tcp_retransmits_in(text), Some(17));
        assert_eq!(tcp_retransmits_in("Tcp: A B\nTcp: 1 2\n"), None);
        assert_eq!(tcp_retransmits_in("Tcp: RetransSegs\n"), None);
        assert_eq!(tcp_retransmits_in("Tcp: RetransSegs\nTcp: -1\n"), None);
        assert!(tcp_retransmits().is_some(), "this kernel's /proc/net/snmp");
    }

    #[test]
    fn the_tally_is_bounded() {
        let mut t = Tally::default();
        for i in 0..(MAX_DESTS as u16 + 10) {
            for _ in 0..2 {
                t.add(&msg(AF_INET, &[10, 1, 0, 1], 1000 + i, 1, None));
            }
        }
        let d = t.finish();
        assert_eq!(d.dests.len(), MAX_DESTS);
        assert_eq!(d.dropped, 20);
        assert!(d.dests.iter().all(|d| d.sockets == 2));
        let mut t = Tally::default();
        let m = msg(AF_INET, &[10, 1, 0, 1], 1, 1, None);
        let stops = (0..MAX_SOCKETS + 5)
            .filter(|_| t.add(&m) == Flow::Stop)
            .count();
        assert_eq!(stops, 5);
        assert_eq!(t.finish().dests[0].sockets, MAX_SOCKETS as u32);
    }

    /// Moves this thread into a new network namespace (it goes with the thread) where
    /// 10.99.0.2 is behind a veth whose peer drops every frame: SYNs to it go nowhere, without
    /// ARP failing (`ip link add d0 type veth peer name d1; ip neigh add 10.99.0.2 lladdr …`).
    /// `extra` runs after, as `ip` arguments.
    fn black_hole_netns(extra: &[&str]) {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (root?)");
        let base = [
            "link add d0 type veth peer name d1",
            "addr add 10.99.0.1/24 dev d0",
            "link set d1 up",
            "link set d0 up",
            "neigh add 10.99.0.2 lladdr 02:00:00:00:00:02 dev d0",
        ];
        for cmd in base.iter().chain(extra) {
            let ok = std::process::Command::new("ip")
                .args(cmd.split(' '))
                .status()
                .unwrap()
                .success();
            assert!(ok, "ip {cmd}");
        }
    }

    /// In a namespace of its own, connects to a MAC nobody has (a veth whose peer drops
    /// them) stay in `SYN_SENT` and retransmit; the dump finds them, by destination, and
    /// not a listening or connected socket.
    #[test]
    fn a_real_dump_finds_retransmitting_connects() {
        let dump = std::thread::spawn(|| {
            black_hole_netns(&[
                "link set lo up",
                "addr add fd00:99::1/64 dev d0 nodad",
                "neigh add fd00:99::2 lladdr 02:00:00:00:00:02 dev d0",
            ]);
            let connect = |addr: &str| {
                let addr: SocketAddr = addr.parse().unwrap();
                let s = socket2::Socket::new(
                    socket2::Domain::for_address(addr),
                    socket2::Type::STREAM,
                    None,
                )
                .unwrap();
                s.set_nonblocking(true).unwrap();
                let _ = s.connect(&addr.into());
                s
            };
            let before = tcp_retransmits().expect("TcpRetransSegs");
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let _connected = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let _held: Vec<_> = (0..3)
                .map(|_| connect("10.99.0.2:8000"))
                .chain([connect("[fd00:99::2]:80")])
                .collect();
            let fresh = dump_syn_sent().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1300));
            // The counter the dump is gated on moved with the SYN retransmissions.
            let moved = tcp_retransmits().expect("TcpRetransSegs") - before;
            (fresh, dump_syn_sent().unwrap(), moved)
        })
        .join()
        .unwrap();
        let (fresh, later, moved) = dump;
        assert!(
            moved >= 4,
            "4 SYNs retransmitted once at least, counter moved {moved}"
        );
        assert_eq!(fresh.dests.len(), 2, "{fresh:?}");
        assert!(fresh.dests.iter().all(|d| d.retransmits == 0), "{fresh:?}");
        assert_eq!(later.dests.len(), 2, "{later:?}");
        assert_eq!(later.dests[0].dest, "10.99.0.2:8000".parse().unwrap());
        assert_eq!(later.dests[0].sockets, 3);
        assert_eq!(later.dests[1].dest, "[fd00:99::2]:80".parse().unwrap());
        assert!(later.dests.iter().all(|d| d.retransmits >= 1), "{later:?}");
        assert_eq!(later.dropped, 0);
    }

    /// Cost of one dump with 1,000 stuck connects in the namespace (docs/benchmarks.md):
    /// `cargo test -p podnet-probe --release --lib -- --ignored sockdiag::tests::cost --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn cost() {
        std::thread::spawn(|| {
            black_hole_netns(&[]);
            let time = |label: &str| {
                let n = 200;
                let started = std::time::Instant::now();
                let mut d = SynSentDump::default();
                for _ in 0..n {
                    d = dump_syn_sent().unwrap();
                }
                let per = started.elapsed() / n;
                eprintln!(
                    "{label}: {per:?} per dump, {} destinations, {} dropped",
                    d.dests.len(),
                    d.dropped
                );
            };
            let read = |label: &str, f: &dyn Fn() -> bool| {
                let started = std::time::Instant::now();
                for _ in 0..2000 {
                    assert!(f());
                }
                eprintln!("{label} read: {:?}", started.elapsed() / 2000);
            };
            // The counter read (shipped), beside what it replaced and the smallest file.
            read("TcpRetransSegs (/proc/thread-self/net/snmp)", &|| {
                tcp_retransmits().is_some()
            });
            for file in ["netstat", "sockstat"] {
                let path = format!("/proc/thread-self/net/{file}");
                read(&format!("whole /proc/thread-self/net/{file}"), &|| {
                    std::fs::read_to_string(&path).is_ok_and(|t| !t.is_empty())
                });
            }
            time("no sockets");
            let _held: Vec<_> = (0..1000u16)
                .map(|i| {
                    let addr = SocketAddr::from(([10, 99, 0, 2], 1000 + i % 50));
                    let s =
                        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                            .unwrap();
                    s.set_nonblocking(true).unwrap();
                    let _ = s.connect(&addr.into());
                    s
                })
                .collect();
            time("1,000 SYN_SENT sockets to 50 destinations");
        })
        .join()
        .unwrap();
    }
}
