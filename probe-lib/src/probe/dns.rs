//! The DNS probe: one query for a configured name to the cluster's DNS service, from inside
//! the pod (`dig +tries=1 @10.96.0.10 kubernetes.default.svc.cluster.local A` in the pod's
//! namespace), over UDP and again over TCP when the answer is truncated.
//!
//! The sockets are created on the namespace thread (see `netns_thread.rs`) and only used
//! here, on the runtime: a socket stays in the namespace it was created in. The server's
//! answer is hostile input: read into a fixed buffer (UDP) or at most the 16-bit length a
//! TCP message can have, discarded unless its ID and question are ours, decoded by
//! `hickory-proto`, never trusted to be well formed.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::outcome::{Observation, ProbeResult, classify_io};

/// The name looked up by default, under `--cluster-domain`.
pub const DEFAULT_NAME_PREFIX: &str = "kubernetes.default.svc";
/// A UDP answer is read into this many bytes; a longer one is cut (and fails to decode). We
/// send no EDNS, so a server must keep UDP answers within 512 bytes or truncate.
const UDP_BUFFER: usize = 1232;
/// Datagrams that are not our answer (wrong ID, wrong question, undecodable) read before the
/// probe gives up: a peer flooding the socket cannot keep it busy until the deadline.
const STRAY_MAX: usize = 16;
/// Addresses named in a wrong answer's detail, at most.
const DETAIL_ADDRESSES: usize = 4;

/// The question the DNS probe asks, and the addresses it may get (any, if none are given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsQuestion {
    name: Name,
    expect: Vec<IpAddr>,
}

/// A name that is not a valid DNS name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid DNS name '{0}'")]
pub struct DnsNameError(pub String);

impl DnsQuestion {
    /// Look up `name` (made fully qualified); `expect`: the answer must contain one of them.
    pub fn new(name: &str, expect: Vec<IpAddr>) -> Result<Self, DnsNameError> {
        let bad = || DnsNameError(name.to_owned());
        let trimmed = name.trim().trim_end_matches('.');
        if trimmed.is_empty() || trimmed.len() > 253 {
            return Err(bad());
        }
        let mut parsed = Name::from_ascii(trimmed).map_err(|_| bad())?;
        parsed.set_fqdn(true);
        Ok(DnsQuestion {
            name: parsed,
            expect,
        })
    }

    /// `kubernetes.default.svc.<cluster_domain>`.
    pub fn default_for(cluster_domain: &str) -> Result<Self, DnsNameError> {
        let domain = cluster_domain.trim().trim_matches('.');
        Self::new(&format!("{DEFAULT_NAME_PREFIX}.{domain}"), Vec::new())
    }

    /// The name, fully qualified.
    pub fn name(&self) -> String {
        self.name.to_ascii()
    }
}

impl Default for DnsQuestion {
    fn default() -> Self {
        Self::default_for("cluster.local").expect("a valid constant name")
    }
}

/// The record type asked for: AAAA from an IPv6 server (the pod's IPv6 family), else A.
fn record_type(server: SocketAddr) -> RecordType {
    if server.is_ipv6() {
        RecordType::AAAA
    } else {
        RecordType::A
    }
}

/// The query's wire form.
pub(crate) fn encode_query(id: u16, q: &DnsQuestion, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(q.name.clone(), qtype));
    // A name that passed `DnsQuestion::new` always encodes; an empty query times out.
    m.to_vec().unwrap_or_default()
}

/// What one received message means for the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Not an answer to our query (ID or question differ, or not a response): ignored.
    Stray,
    /// Ours, cut short: ask again over TCP.
    Truncated,
    /// Ours: the probe's result.
    Done(ProbeResult, Option<String>),
}

fn same_name(a: &Name, b: &Name) -> bool {
    a.to_ascii()
        .trim_end_matches('.')
        .eq_ignore_ascii_case(b.to_ascii().trim_end_matches('.'))
}

/// Classify a received message for query `id` asking `q` for `qtype`. Pure.
pub(crate) fn classify(bytes: &[u8], id: u16, q: &DnsQuestion, qtype: RecordType) -> Reply {
    let Ok(m) = Message::from_vec(bytes) else {
        // Undecodable: ours only if it carries our ID.
        return if bytes.len() >= 2 && u16::from_be_bytes([bytes[0], bytes[1]]) == id {
            Reply::Done(ProbeResult::Error, Some("undecodable answer".into()))
        } else {
            Reply::Stray
        };
    };
    let ours = m.metadata.id == id
        && m.metadata.message_type == MessageType::Response
        && m.queries.len() == 1
        && m.queries[0].query_type() == qtype
        && same_name(m.queries[0].name(), &q.name);
    if !ours {
        return Reply::Stray;
    }
    if m.metadata.truncation {
        return Reply::Truncated;
    }
    let result = match m.metadata.response_code {
        ResponseCode::NoError => return answer(&m, q, qtype),
        ResponseCode::ServFail => ProbeResult::Servfail,
        ResponseCode::NXDomain => ProbeResult::Nxdomain,
        ResponseCode::Refused => ProbeResult::DnsRefused,
        _ => ProbeResult::Error,
    };
    let code = m.metadata.response_code;
    Reply::Done(result, Some(format!("{code}")))
}

/// A NOERROR answer: an address of the asked type, and one of the expected ones if given.
fn answer(m: &Message, q: &DnsQuestion, qtype: RecordType) -> Reply {
    let got: Vec<IpAddr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) if qtype == RecordType::A => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) if qtype == RecordType::AAAA => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    if got.is_empty() {
        return Reply::Done(
            ProbeResult::WrongAnswer,
            Some(format!("no {qtype} record for {}", q.name())),
        );
    }
    if !q.expect.is_empty() && !got.iter().any(|ip| q.expect.contains(ip)) {
        let shown: Vec<String> = got
            .iter()
            .take(DETAIL_ADDRESSES)
            .map(ToString::to_string)
            .collect();
        return Reply::Done(
            ProbeResult::WrongAnswer,
            Some(format!(
                "answered {}, not an expected address",
                shown.join(" ")
            )),
        );
    }
    Reply::Done(ProbeResult::Ok, None)
}

/// The sockets of one DNS probe, made in the pod's namespace.
#[derive(Debug)]
pub(crate) struct DnsSockets {
    /// Unconnected, non-blocking.
    pub udp: std::net::UdpSocket,
    /// For the TCP retry of a truncated answer; unconnected, non-blocking.
    pub tcp: std::net::TcpStream,
}

/// Run the probe: UDP, then TCP if truncated, all within `timeout`.
pub(crate) async fn probe(
    sockets: Option<std::io::Result<DnsSockets>>,
    server: SocketAddr,
    q: &DnsQuestion,
    timeout: Duration,
) -> Observation {
    let sockets = match super::outcome::opened(sockets) {
        Ok(s) => s,
        Err(failed) => return failed,
    };
    let id = super::driver::random_u16();
    let qtype = record_type(server);
    let started = Instant::now();
    let exchange = async {
        match udp(sockets.udp, server, id, q, qtype).await? {
            Reply::Truncated => tcp(sockets.tcp, server, id, q, qtype).await,
            done => Ok(done),
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(Reply::Done(result, detail))) => {
            let mut obs = Observation::answered(result, started.elapsed());
            obs.detail = detail;
            obs
        }
        Ok(Ok(_)) => Observation::failed(ProbeResult::Error, "truncated over TCP"),
        Ok(Err((result, detail))) => Observation::failed(result, detail),
        Err(_) => Observation::failed(ProbeResult::Timeout, "no answer"),
    }
}

type Failed = (ProbeResult, String);

fn io_failed(what: &str, e: &std::io::Error) -> Failed {
    let mut result = classify_io(e);
    // ICMP port unreachable on a connected UDP socket: nothing serves DNS there. A failure,
    // unlike a TCP reset from a live host.
    if result == ProbeResult::Refused {
        result = ProbeResult::Unreachable;
    }
    (result, format!("{what}: {e}"))
}

/// `dig +notcp`: one datagram out, answers read until ours (or too many strays).
async fn udp(
    socket: std::net::UdpSocket,
    server: SocketAddr,
    id: u16,
    q: &DnsQuestion,
    qtype: RecordType,
) -> Result<Reply, Failed> {
    let socket = tokio::net::UdpSocket::from_std(socket).map_err(|e| io_failed("socket", &e))?;
    // Connected: the kernel drops datagrams from any other address.
    socket
        .connect(server)
        .await
        .map_err(|e| io_failed("connect", &e))?;
    socket
        .send(&encode_query(id, q, qtype))
        .await
        .map_err(|e| io_failed("send", &e))?;
    let mut buf = [0u8; UDP_BUFFER];
    for _ in 0..STRAY_MAX {
        let n = socket
            .recv(&mut buf)
            .await
            .map_err(|e| io_failed("recv", &e))?;
        match classify(&buf[..n], id, q, qtype) {
            Reply::Stray => continue,
            other => return Ok(other),
        }
    }
    Err((ProbeResult::Error, "only stray datagrams".into()))
}

/// `dig +tcp`: the query with its 2-byte length, one answer of at most 65,535 bytes back.
async fn tcp(
    stream: std::net::TcpStream,
    server: SocketAddr,
    id: u16,
    q: &DnsQuestion,
    qtype: RecordType,
) -> Result<Reply, Failed> {
    let socket = tokio::net::TcpSocket::from_std_stream(stream);
    let mut conn = socket
        .connect(server)
        .await
        .map_err(|e| io_failed("TCP connect", &e))?;
    let query = encode_query(id, q, qtype);
    let mut out = Vec::with_capacity(query.len() + 2);
    out.extend_from_slice(&(query.len() as u16).to_be_bytes());
    out.extend_from_slice(&query);
    conn.write_all(&out)
        .await
        .map_err(|e| io_failed("TCP send", &e))?;
    let len = conn
        .read_u16()
        .await
        .map_err(|e| io_failed("TCP recv", &e))?;
    // At most 64 KiB, the most the length prefix can say.
    let mut buf = vec![0u8; usize::from(len)];
    conn.read_exact(&mut buf)
        .await
        .map_err(|e| io_failed("TCP recv", &e))?;
    match classify(&buf, id, q, qtype) {
        Reply::Stray => Err((ProbeResult::Error, "TCP answer is not ours".into())),
        other => Ok(other),
    }
}

#[cfg(test)]
#[path = "dns_tests.rs"]
mod tests;
