//! The prober's boundary to the OS: run one round of probes for one pod. The real driver
//! enters the pod's namespace through [`NetnsThread`], the fake in `fake.rs` is scripted.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use surge_ping::{Client, ICMP};
use tracing::{debug, info, warn};

use super::dns::DnsQuestion;
use super::error::ProbeError;
use super::hints::{ClientHint, Hint};
use super::http::TlsConfigs;
use super::netns_thread::{IcmpWanted, Located, NetnsThread, Visit, VisitRequest, icmp_client};
use super::outcome::{Observation, ProbeResult, classify_io};
use super::plan::PlannedProbe;
use super::report::{PathMtuObservation, PodSide};
use super::sockdiag::SynSentDump;
use super::target::{Direction, Protocol};
use crate::model::WorkerGuard;
use crate::util::lock;

mod icmp;

pub(crate) use icmp::random_u16;
#[cfg(test)]
pub(super) use icmp::reply_matches;

/// One pod's round: where its namespace is, and what to probe.
#[derive(Debug, Clone)]
pub struct PodRound {
    /// Host interface (for logs).
    pub interface: String,
    /// Its namespace id as seen from the host.
    pub netnsid: Option<i32>,
    /// Its interface index inside its namespace.
    pub peer_index: Option<u32>,
    /// The probes, in order.
    pub probes: Vec<PlannedProbe>,
    /// Per-probe timeout.
    pub timeout: Duration,
    /// Also read the pod's side of the wiring (its interface and default routes).
    pub read_pod_side: bool,
    /// Also dump the pod's sockets in `SYN_SENT` (its failing connects).
    pub syn_sent: bool,
    /// The pod namespace's TCP retransmission count after its last round (see
    /// [`RoundResult::tcp_retrans`]).
    pub retrans_before: Option<u64>,
    /// Dump even if that count has not moved.
    pub dump_always: bool,
    /// Client hints to read inside the pod (empty: none).
    pub hints: Vec<std::sync::Arc<dyn ClientHint>>,
}

/// What a round found, observations in the order of [`PodRound::probes`].
#[derive(Debug)]
pub struct RoundResult {
    /// The pod's side, if its namespace could be entered.
    pub pod_side: Option<PodSide>,
    /// One per planned probe.
    pub observations: Vec<Observation>,
    /// Why in-pod probes could not run, if they could not.
    pub error: Option<ProbeError>,
    /// Stamp ([`super::report::next_stamp`]) taken when the probes were sent, after the
    /// namespace visit: orders this round's results against other pods'.
    pub sent: u64,
    /// The pod's sockets in `SYN_SENT`, if asked for and the dump worked.
    pub syn_sent: Option<SynSentDump>,
    /// The namespace's TCP retransmissions so far (`TcpRetransSegs`), when read.
    pub tcp_retrans: Option<u64>,
    /// What the pod's client software said, if asked and it is a known kind.
    pub hint: Option<Hint>,
    /// The path-MTU probes, one per family whose gateway is probed, in rounds that read the
    /// pod's side (its MTU is read there).
    pub path_mtu: Vec<PathMtuObservation>,
}

/// Runs rounds.
pub trait PodNetwork: Send + Sync + 'static {
    /// Probe one pod.
    fn round(&self, round: PodRound) -> impl Future<Output = RoundResult> + Send;
}

/// The real driver: ICMP (surge-ping) and TCP from inside pod namespaces, ICMP from the host.
pub struct NetnsDriver {
    thread: NetnsThread,
    dns: DnsQuestion,
    tls: TlsConfigs,
    locations: Mutex<HashMap<i32, Located>>,
    last_proc_scan: Mutex<Option<Instant>>,
    host_v4: Option<Client>,
    host_v6: Option<Client>,
    logged_socket_kind: AtomicU8,
}

impl std::fmt::Debug for NetnsDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetnsDriver").finish_non_exhaustive()
    }
}

/// How often `/proc` may be scanned for namespaces without a bind mount.
const PROC_SCAN_EVERY: Duration = Duration::from_secs(5);
/// Namespace locations remembered, at most: far above the pods a node runs.
const LOCATIONS_MAX: usize = 8192;
const PAYLOAD: [u8; 16] = *b"podnet-probe-v1\0";

impl NetnsDriver {
    /// Start the namespace thread and open the host's ICMP sockets. Call inside the runtime.
    pub fn new() -> std::io::Result<Self> {
        Self::start(None)
    }

    /// As [`NetnsDriver::new`], the namespace thread reporting its liveness through `worker`.
    pub fn with_worker(worker: WorkerGuard) -> std::io::Result<Self> {
        Self::start(Some(worker))
    }

    fn start(worker: Option<WorkerGuard>) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Handle::current();
        let host = |kind| match icmp_client(kind, None) {
            Ok(c) => Some(c),
            Err(e) => {
                warn!(error = %e, ?kind, "no host ICMP socket: host -> pod probes will report errors");
                None
            }
        };
        Ok(NetnsDriver {
            thread: NetnsThread::start(runtime, worker)?,
            dns: DnsQuestion::default(),
            tls: TlsConfigs::default(),
            locations: Mutex::new(HashMap::new()),
            last_proc_scan: Mutex::new(None),
            host_v4: host(ICMP::V4),
            host_v6: host(ICMP::V6),
            logged_socket_kind: AtomicU8::new(0),
        })
    }

    /// Ask DNS targets this question (default: `kubernetes.default.svc.cluster.local`, any
    /// address).
    pub fn with_dns_question(mut self, question: DnsQuestion) -> Self {
        self.dns = question;
        self
    }

    /// Verify HTTPS targets with these (default: the web PKI's roots).
    pub fn with_tls(mut self, tls: TlsConfigs) -> Self {
        self.tls = tls;
        self
    }

    async fn locate(&self, nsid: i32, refresh: bool) -> Option<Located> {
        if !refresh && let Some(p) = lock(&self.locations).get(&nsid) {
            return Some(p.clone());
        }
        let wanted = HashSet::from([nsid]);
        let mut found = self.thread.locate(wanted.clone(), false).await?;
        if found.is_empty() {
            let scan = {
                let mut last = lock(&self.last_proc_scan);
                let due = last.is_none_or(|t| t.elapsed() >= PROC_SCAN_EVERY);
                if due {
                    *last = Some(Instant::now());
                }
                due
            };
            if scan {
                found = self.thread.locate(wanted, true).await?;
            }
        }
        let located = found.remove(&nsid)?;
        let mut locations = lock(&self.locations);
        // Ids of deleted pods are never asked for again: bounded, not pruned one by one.
        if locations.len() >= LOCATIONS_MAX {
            locations.clear();
        }
        locations.insert(nsid, located.clone());
        Some(located)
    }

    async fn visit(&self, round: &PodRound) -> Result<Visit, ProbeError> {
        let (Some(nsid), Some(peer_index)) = (round.netnsid, round.peer_index) else {
            return Err(ProbeError::NoPeerNamespace);
        };
        let in_pod: Vec<&PlannedProbe> = round
            .probes
            .iter()
            .filter(|p| p.direction == Direction::PodToTarget)
            .collect();
        let icmp = |v4: bool, gw: bool| {
            in_pod.iter().any(|p| {
                p.protocol == Protocol::Icmp && p.address.is_ipv4() == v4 && p.gateway == gw
            })
        };
        let mut req = VisitRequest {
            path: PathBuf::new(),
            inode: 0,
            netnsid: nsid,
            peer_index,
            read_pod_side: round.read_pod_side,
            has_v4: in_pod.iter().any(|p| p.address.is_ipv4()),
            has_v6: in_pod.iter().any(|p| p.address.is_ipv6()),
            icmp: IcmpWanted {
                v4: icmp(true, false),
                v4_gateway: icmp(true, true),
                v6: icmp(false, false),
                v6_gateway: icmp(false, true),
            },
            tcp: in_pod
                .iter()
                .filter(|p| matches!(p.protocol, Protocol::Tcp | Protocol::Http))
                .map(|p| p.address)
                .collect(),
            dns: in_pod
                .iter()
                .filter(|p| p.protocol == Protocol::Dns)
                .map(|p| p.address)
                .collect(),
            syn_sent: round.syn_sent,
            retrans_before: round.retrans_before,
            dump_always: round.dump_always,
            hints: round.hints.clone(),
            // Queued behind other pods' visits for longer than one timeout: give up.
            start_by: Instant::now() + round.timeout,
        };
        let mut last_err = ProbeError::NamespaceNotFound(nsid);
        for refresh in [false, true] {
            let Some(located) = self.locate(nsid, refresh).await else {
                return Err(ProbeError::NamespaceNotFound(nsid));
            };
            req.path = located.path;
            req.inode = located.inode;
            // Every job of the thread is bounded (netlink deadlines, `start_by`); this is the
            // backstop should one not be.
            let wait = round.timeout.saturating_mul(2);
            let Ok(answer) = tokio::time::timeout(wait, self.thread.visit(req.clone())).await
            else {
                return Err(ProbeError::NamespaceThreadBusy);
            };
            match answer {
                Some(Err(ProbeError::NamespaceThreadBusy)) => {
                    return Err(ProbeError::NamespaceThreadBusy);
                }
                Some(Ok(v)) => return Ok(v),
                Some(Err(e)) => {
                    lock(&self.locations).remove(&nsid);
                    last_err = e;
                }
                None => return Err(ProbeError::ThreadGone),
            }
        }
        Err(last_err)
    }

    fn log_socket_kind(&self, visit: &Visit) {
        let Some(c) = visit.icmp_v4.as_ref().or(visit.gateway_v4.as_ref()) else {
            return;
        };
        let kind = if c.get_socket().get_type() == socket2::Type::RAW {
            1
        } else {
            2
        };
        if self.logged_socket_kind.swap(kind, Ordering::Relaxed) != kind {
            let name = if kind == 1 {
                "raw"
            } else {
                "datagram (ping_group_range)"
            };
            info!(socket = name, "ICMP sockets in pod namespaces");
            if kind == 2 {
                warn!("without CAP_NET_RAW the gateway probe cannot see the gateway's ICMP errors");
            }
        }
    }
}

async fn tcp(
    stream: Option<std::io::Result<std::net::TcpStream>>,
    addr: SocketAddr,
    timeout: Duration,
) -> Observation {
    let stream = match super::outcome::opened(stream) {
        Ok(s) => s,
        Err(failed) => return failed,
    };
    let socket = tokio::net::TcpSocket::from_std_stream(stream);
    let started = Instant::now();
    match tokio::time::timeout(timeout, socket.connect(addr)).await {
        Ok(Ok(_conn)) => Observation::answered(ProbeResult::Ok, started.elapsed()),
        Ok(Err(e)) => {
            let result = classify_io(&e);
            if result == ProbeResult::Refused {
                Observation::answered(result, started.elapsed())
            } else {
                Observation::failed(result, e.to_string())
            }
        }
        Err(_) => Observation::failed(ProbeResult::Timeout, "no answer to SYN"),
    }
}

impl PodNetwork for NetnsDriver {
    async fn round(&self, round: PodRound) -> RoundResult {
        let needs_pod = round
            .probes
            .iter()
            .any(|p| p.direction == Direction::PodToTarget);
        let (mut visit, error) = if needs_pod {
            match self.visit(&round).await {
                Ok(v) => (Some(v), None),
                Err(e) => {
                    debug!(interface = %round.interface, error = %e, "cannot probe from inside the pod");
                    (None, Some(e))
                }
            }
        } else {
            (None, None)
        };
        if let Some(v) = &visit {
            self.log_socket_kind(v);
        }
        // TCP sockets were created in probe order.
        let mut tcp_sockets = visit
            .as_mut()
            .map(|v| std::mem::take(&mut v.tcp))
            .unwrap_or_default()
            .into_iter();
        let mut dns_sockets = visit
            .as_mut()
            .map(|v| std::mem::take(&mut v.dns))
            .unwrap_or_default()
            .into_iter();
        let timeout = round.timeout;
        let probes = round.probes.iter().map(|p| {
            let in_pod = |proto| p.direction == Direction::PodToTarget && p.protocol == proto;
            let stream = (in_pod(Protocol::Tcp) || in_pod(Protocol::Http))
                .then(|| tcp_sockets.next().map(|(_, s)| s))
                .flatten();
            let dns_socks = in_pod(Protocol::Dns)
                .then(|| dns_sockets.next().map(|(_, s)| s))
                .flatten();
            let visit = visit.as_ref();
            let error = error.as_ref();
            async move {
                match (p.direction, p.protocol) {
                    (Direction::HostToPod, _) => {
                        let host = if p.address.is_ipv4() {
                            &self.host_v4
                        } else {
                            &self.host_v6
                        };
                        self.icmp(host.as_ref(), p, timeout).await
                    }
                    (Direction::PodToTarget, _) if visit.is_none() => Observation::failed(
                        ProbeResult::Error,
                        error.map_or_else(|| "no pod namespace".to_owned(), ToString::to_string),
                    ),
                    (Direction::PodToTarget, Protocol::Icmp) => {
                        let v = visit.expect("checked above");
                        let client = match (p.address.ip(), p.gateway) {
                            (IpAddr::V4(_), false) => v.icmp_v4.as_ref(),
                            (IpAddr::V4(_), true) => v.gateway_v4.as_ref(),
                            (IpAddr::V6(_), false) => v.icmp_v6.as_ref(),
                            (IpAddr::V6(_), true) => v.gateway_v6.as_ref(),
                        };
                        let mut obs = self.icmp(client, p, timeout).await;
                        if client.is_none() {
                            obs.detail = v
                                .icmp_error
                                .as_ref()
                                .map(ToString::to_string)
                                .or(obs.detail);
                        }
                        obs
                    }
                    (Direction::PodToTarget, Protocol::Tcp) => {
                        tcp(stream, p.address, timeout).await
                    }
                    (Direction::PodToTarget, Protocol::Http) => match &p.http {
                        Some(spec) => {
                            super::http::probe(stream, p.address, spec, &self.tls, timeout).await
                        }
                        None => Observation::failed(ProbeResult::Error, "no HTTP request"),
                    },
                    (Direction::PodToTarget, Protocol::Dns) => {
                        super::dns::probe(dns_socks, p.address, &self.dns, timeout).await
                    }
                }
            }
        });
        // Every probe has its own timeout; this per-round deadline is the backstop, so no
        // round (and no pod) can hold a concurrency slot for longer.
        let n = round.probes.len();
        let deadline = timeout.saturating_mul(2) + Duration::from_millis(100);
        let gateway = |v4: bool| {
            round.probes.iter().find(|p| {
                p.gateway && p.direction == Direction::PodToTarget && p.address.is_ipv4() == v4
            })
        };
        let path_mtu = join_all(visit.as_ref().map_or_else(Vec::new, |v| {
            vec![
                self.path_mtu(v.path_mtu_v4.as_ref(), gateway(true), timeout),
                self.path_mtu(v.path_mtu_v6.as_ref(), gateway(false), timeout),
            ]
        }));
        let sent = super::report::next_stamp();
        let (observations, path_mtu) =
            match tokio::time::timeout(deadline, futures::future::join(join_all(probes), path_mtu))
                .await
            {
                Ok((o, m)) => (o, m.into_iter().flatten().collect()),
                Err(_) => (
                    (0..n)
                        .map(|_| {
                            Observation::failed(ProbeResult::Timeout, "round deadline exceeded")
                        })
                        .collect(),
                    Vec::new(),
                ),
            };
        let pod_side = match visit.as_ref().and_then(|v| v.pod_side.as_ref()) {
            Some(Ok(side)) => Some(*side),
            Some(Err(e)) => {
                debug!(interface = %round.interface, error = %e, "cannot read the pod's side");
                None
            }
            None => None,
        };
        let syn_sent = match visit.as_mut().and_then(|v| v.syn_sent.take()) {
            Some(Ok(dump)) => Some(dump),
            Some(Err(e)) => {
                debug!(interface = %round.interface, error = %e, "cannot dump the pod's sockets");
                None
            }
            None => None,
        };
        let hint = visit.as_mut().and_then(|v| v.hint.take());
        let tcp_retrans = visit.as_ref().and_then(|v| v.tcp_retrans);
        // Every socket of the round is dropped here: nothing keeps the pod's namespace alive.
        drop(visit);
        RoundResult {
            pod_side,
            observations,
            error,
            sent,
            syn_sent,
            tcp_retrans,
            hint,
            path_mtu,
        }
    }
}
