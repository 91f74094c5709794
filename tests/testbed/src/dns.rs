//! A small authoritative DNS server for the test bed: UDP and TCP on one address in a
//! namespace the test created, answering every A/AAAA question with fixed addresses, or as a
//! broken server would (SERVFAIL, NXDOMAIN, REFUSED, silence, truncation over UDP).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};

use crate::netns::NetnsThread;

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DnsMode {
    /// A/AAAA with the configured addresses.
    Answer = 0,
    /// SERVFAIL.
    Servfail = 1,
    /// NXDOMAIN.
    Nxdomain = 2,
    /// REFUSED.
    Refused = 3,
    /// No answer at all (a stopped server).
    Drop = 4,
    /// Over UDP an empty answer with TC set; over TCP the full answer.
    Truncate = 5,
}

/// The running server; stopped on drop.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    udp_queries: Arc<AtomicU64>,
    tcp_queries: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    v4: std::net::Ipv4Addr,
    v6: std::net::Ipv6Addr,
}

impl DnsServer {
    /// Serve on `addr` (bound inside `ns`), answering `v4` for A and `v6` for AAAA.
    pub fn start(
        ns: &NetnsThread,
        addr: SocketAddr,
        v4: std::net::Ipv4Addr,
        v6: std::net::Ipv6Addr,
    ) -> Result<Self> {
        let (udp, tcp) = ns.run_blocking(move || {
            let udp = UdpSocket::bind(addr)?;
            udp.set_read_timeout(Some(Duration::from_millis(50)))?;
            let tcp = TcpListener::bind(addr)?;
            tcp.set_nonblocking(true)?;
            Ok((udp, tcp))
        })?;
        let mode = Arc::new(AtomicU8::new(DnsMode::Answer as u8));
        let stop = Arc::new(AtomicBool::new(false));
        let shared = || Shared {
            mode: Arc::clone(&mode),
            stop: Arc::clone(&stop),
            v4,
            v6,
        };
        let udp_queries = Arc::new(AtomicU64::new(0));
        let tcp_queries = Arc::new(AtomicU64::new(0));
        let (s, n) = (shared(), Arc::clone(&udp_queries));
        let udp_thread = std::thread::spawn(move || serve_udp(&udp, &s, &n));
        let (s, n) = (shared(), Arc::clone(&tcp_queries));
        let tcp_thread = std::thread::spawn(move || serve_tcp(&tcp, &s, &n));
        Ok(DnsServer {
            addr,
            mode,
            stop,
            udp_queries,
            tcp_queries,
            threads: vec![udp_thread, tcp_thread],
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answer this way from now on.
    pub fn set_mode(&self, mode: DnsMode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// Queries received over UDP and over TCP so far.
    pub fn queries(&self) -> (u64, u64) {
        (
            self.udp_queries.load(Ordering::Relaxed),
            self.tcp_queries.load(Ordering::Relaxed),
        )
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn mode(s: &Shared) -> DnsMode {
    match s.mode.load(Ordering::Relaxed) {
        0 => DnsMode::Answer,
        1 => DnsMode::Servfail,
        2 => DnsMode::Nxdomain,
        3 => DnsMode::Refused,
        4 => DnsMode::Drop,
        _ => DnsMode::Truncate,
    }
}

/// The answer to `query` in this mode, or none.
fn respond(query: &[u8], s: &Shared, over_tcp: bool) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let mode = mode(s);
    let mut m = Message::response(q.metadata.id, q.metadata.op_code);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.authoritative = true;
    m.add_queries(q.queries.iter().cloned());
    m.metadata.response_code = match mode {
        DnsMode::Drop => return None,
        DnsMode::Servfail => ResponseCode::ServFail,
        DnsMode::Nxdomain => ResponseCode::NXDomain,
        DnsMode::Refused => ResponseCode::Refused,
        DnsMode::Truncate if !over_tcp => {
            m.metadata.truncation = true;
            ResponseCode::NoError
        }
        DnsMode::Answer | DnsMode::Truncate => {
            for question in &q.queries {
                let data = match question.query_type() {
                    RecordType::A => RData::A(A(s.v4)),
                    RecordType::AAAA => RData::AAAA(AAAA(s.v6)),
                    _ => continue,
                };
                m.answers
                    .push(Record::from_rdata(question.name().clone(), 30, data));
            }
            ResponseCode::NoError
        }
    };
    debug_assert_eq!(m.metadata.message_type, MessageType::Response);
    m.to_vec().ok()
}

fn serve_udp(sock: &UdpSocket, s: &Shared, count: &AtomicU64) {
    let mut buf = [0u8; 512];
    while !s.stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        count.fetch_add(1, Ordering::Relaxed);
        if let Some(answer) = respond(&buf[..n], s, false) {
            let _ = sock.send_to(&answer, from);
        }
    }
}

fn serve_tcp(listener: &TcpListener, s: &Shared, count: &AtomicU64) {
    while !s.stop.load(Ordering::Relaxed) {
        let Ok((mut conn, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
        let mut len = [0u8; 2];
        if conn.read_exact(&mut len).is_err() {
            continue;
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if conn.read_exact(&mut query).is_err() {
            continue;
        }
        count.fetch_add(1, Ordering::Relaxed);
        if let Some(answer) = respond(&query, s, true) {
            let mut out = (answer.len() as u16).to_be_bytes().to_vec();
            out.extend_from_slice(&answer);
            let _ = conn.write_all(&out);
        }
    }
}

/// The cluster DNS of a simulated cluster: a server on `198.51.100.1:53` in the outside
/// namespace answering `v4` (A) and `::1` (AAAA), and `cluster_ip:53` (UDP and TCP) DNATed to
/// it in the node namespace, as kube-proxy does for pods' traffic
/// (`iptables -t nat -A PREROUTING -d IP/32 -p udp --dport 53 -j DNAT --to-destination
/// 198.51.100.1:53`). The rules go with the node's namespace.
pub fn cluster_dns(
    node: &crate::simnode::SimNode,
    cluster_ip: std::net::Ipv4Addr,
    v4: std::net::Ipv4Addr,
) -> Result<DnsServer> {
    let to = SocketAddr::new(crate::simnode::OUTSIDE_IPV4.into(), 53);
    let server = DnsServer::start(node.outside(), to, v4, std::net::Ipv6Addr::LOCALHOST)?;
    for proto in ["udp", "tcp"] {
        crate::podserver::iptables(
            node.node_netns(),
            &format!(
                "-A PREROUTING -d {cluster_ip}/32 -p {proto} --dport 53 -j DNAT --to-destination {to}"
            ),
        );
    }
    Ok(server)
}
