//! The one thread that enters pods' network namespaces. It finds a pod's namespace file,
//! enters it, reads the pod's side of the wiring, creates the round's sockets there and goes
//! home to the host namespace before the next job, so it never keeps a pod namespace alive.
//! It never runs anything else: sockets are handed to the tokio runtime, which drives them
//! from its own threads (which never change namespace).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use nix::sched::{CloneFlags, setns};
use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
use surge_ping::{Client, Config, ICMP};
use tokio::sync::oneshot;
use tracing::{debug, error};

use super::dns::DnsSockets;
use super::error::ProbeError;
use super::hints::{ClientHint, Hint, read_all};
use super::nl::BlockingNetlink;
use super::report::PodSide;
use super::sockdiag::{SynSentDump, dump_syn_sent, tcp_retransmits};
use crate::model::{Fault, WorkerGuard};

/// Where named namespaces are bind-mounted (`ip netns`, containerd's `cni-…`).
pub(crate) const NETNS_DIRS: [&str; 2] = ["/var/run/netns", "/run/netns"];

/// ICMP sockets a round needs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IcmpWanted {
    pub v4: bool,
    pub v4_gateway: bool,
    pub v6: bool,
    pub v6_gateway: bool,
}

/// Everything to do inside one pod's namespace.
#[derive(Debug, Clone)]
pub(crate) struct VisitRequest {
    pub path: PathBuf,
    /// Inode of the namespace when it was located: the path must still be that namespace.
    pub inode: u64,
    pub netnsid: i32,
    pub peer_index: u32,
    pub read_pod_side: bool,
    pub has_v4: bool,
    pub has_v6: bool,
    pub icmp: IcmpWanted,
    pub tcp: Vec<SocketAddr>,
    /// Dump the pod's sockets in `SYN_SENT` (before this round's own are created).
    pub syn_sent: bool,
    /// The namespace's TCP retransmission count at the last visit: unchanged, the dump is
    /// skipped (nothing new went unanswered) unless `dump_always`.
    pub retrans_before: Option<u64>,
    /// Dump even if nothing was retransmitted since (the pod has unanswered destinations).
    pub dump_always: bool,
    /// Ask the pod's client software why it is stale (empty: do not).
    pub hints: Vec<std::sync::Arc<dyn ClientHint>>,
    /// DNS servers, one UDP and one TCP socket each.
    pub dns: Vec<SocketAddr>,
    /// A job still queued at this time is dropped unseen: its round has given up, and a pod
    /// must not delay the others' rounds by more than one timeout.
    pub start_by: Instant,
}

/// What a visit brings back: the pod's side and sockets that live in its namespace.
pub(crate) struct Visit {
    pub pod_side: Option<Result<PodSide, ProbeError>>,
    pub icmp_v4: Option<Client>,
    pub gateway_v4: Option<Client>,
    pub icmp_v6: Option<Client>,
    pub gateway_v6: Option<Client>,
    /// Don't-fragment gateway sockets for the path-MTU probe, with the pod's MTU: only when
    /// the pod's side (and so its MTU) was read in this visit.
    pub path_mtu_v4: Option<(Client, u32)>,
    pub path_mtu_v6: Option<(Client, u32)>,
    pub icmp_error: Option<ProbeError>,
    pub tcp: Vec<(SocketAddr, std::io::Result<std::net::TcpStream>)>,
    pub syn_sent: Option<Result<SynSentDump, ProbeError>>,
    pub tcp_retrans: Option<u64>,
    pub hint: Option<Hint>,
    pub dns: Vec<(SocketAddr, std::io::Result<DnsSockets>)>,
}

enum Job {
    Locate {
        wanted: HashSet<i32>,
        scan_proc: bool,
        reply: oneshot::Sender<HashMap<i32, Located>>,
    },
    Visit {
        req: VisitRequest,
        reply: oneshot::Sender<Result<Visit, ProbeError>>,
    },
}

/// A pod namespace's file and its inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    pub path: PathBuf,
    pub inode: u64,
}

/// Handle to the namespace thread.
#[derive(Debug, Clone)]
pub(crate) struct NetnsThread {
    jobs: mpsc::Sender<Job>,
}

impl NetnsThread {
    /// Start it. `runtime` is where the sockets it creates are registered; `worker`, if
    /// given, lives as long as the thread serves (dropped while unwinding if it panics).
    pub(crate) fn start(
        runtime: tokio::runtime::Handle,
        worker: Option<WorkerGuard>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("podnet-netns".into())
            .spawn(move || match Home::open() {
                Ok(home) => {
                    let _ = ready_tx.send(Ok(()));
                    // A panic ends the thread (it may be inside a pod's namespace: it must not
                    // serve again), but is caught here to say so; the guard, owned by the
                    // unwinding closure, records "panicked" for /healthz.
                    let served =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                            let worker = worker;
                            home.serve(rx, runtime, worker.as_ref());
                        }));
                    if served.is_err() {
                        error!("the namespace thread panicked; pod-side probes have stopped");
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("namespace thread died at start"))??;
        Ok(NetnsThread { jobs: tx })
    }

    /// Find the namespace files of these namespace ids: `/var/run/netns/*` first, then (if
    /// `scan_proc`) `/proc/<pid>/ns/net` for namespaces without a bind mount.
    pub(crate) async fn locate(
        &self,
        wanted: HashSet<i32>,
        scan_proc: bool,
    ) -> Option<HashMap<i32, Located>> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Locate {
                wanted,
                scan_proc,
                reply,
            })
            .ok()?;
        rx.await.ok()
    }

    /// Enter a pod's namespace and prepare a round. `None` if the thread is gone.
    pub(crate) async fn visit(&self, req: VisitRequest) -> Option<Result<Visit, ProbeError>> {
        let (reply, rx) = oneshot::channel();
        self.jobs.send(Job::Visit { req, reply }).ok()?;
        rx.await.ok()
    }
}

/// The thread's own state: the host namespace it returns to.
struct Home {
    netns: File,
    inode: u64,
    netlink: BlockingNetlink,
    /// Namespace file inode → its id, from earlier scans. Only hits are kept: a namespace
    /// gets its id when its veth is created, often after the sandbox's file appears, so a
    /// miss must be asked again next time. Bounded; an entry is dropped when a visit finds
    /// the inode no longer is that namespace.
    known: HashMap<u64, i32>,
}

/// Most namespace files remembered: far above the pods a node runs.
const KNOWN_MAX: usize = 8192;

impl Home {
    fn open() -> std::io::Result<Self> {
        let netns = File::open("/proc/thread-self/ns/net")?;
        let inode = netns.metadata()?.ino();
        Ok(Home {
            netns,
            inode,
            netlink: BlockingNetlink::open()?,
            known: HashMap::new(),
        })
    }

    fn serve(
        mut self,
        jobs: mpsc::Receiver<Job>,
        runtime: tokio::runtime::Handle,
        worker: Option<&WorkerGuard>,
    ) {
        for job in jobs {
            // Test hook (PODNET_TEST_FAULT, set only from the agent's environment).
            match worker.and_then(WorkerGuard::fault) {
                Some(Fault::Kill) => {
                    panic!("injected fault: kill:{}", worker.map_or("", |w| w.name()))
                }
                Some(Fault::Hang) => loop {
                    std::thread::park();
                },
                None => {}
            }
            match job {
                Job::Locate {
                    wanted,
                    scan_proc,
                    reply,
                } => {
                    let _ = reply.send(self.locate(&wanted, scan_proc));
                }
                Job::Visit { req, reply } => {
                    if Instant::now() > req.start_by || reply.is_closed() {
                        // Queued too long (or the round gave up): do nothing for it.
                        let _ = reply.send(Err(ProbeError::NamespaceThreadBusy));
                        continue;
                    }
                    let result = self.visit(&req, &runtime);
                    // Always go home, whatever happened inside.
                    if let Err(e) = setns(&self.netns, CloneFlags::CLONE_NEWNET) {
                        error!(error = %e, "cannot return to the host network namespace; stopping the namespace thread");
                        return;
                    }
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// `ip netns identify`, in reverse: which file is namespace id N.
    fn locate(&mut self, wanted: &HashSet<i32>, scan_proc: bool) -> HashMap<i32, Located> {
        let mut found = HashMap::new();
        let mut seen = HashSet::new();
        let mut candidates: Vec<PathBuf> = Vec::new();
        for dir in NETNS_DIRS {
            if let Ok(entries) = std::fs::read_dir(dir) {
                candidates.extend(entries.flatten().map(|e| e.path()));
            }
        }
        if scan_proc && let Ok(procs) = std::fs::read_dir("/proc") {
            candidates.extend(
                procs
                    .flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .bytes()
                            .all(|b| b.is_ascii_digit())
                    })
                    .map(|e| e.path().join("ns/net")),
            );
        }
        for path in candidates {
            let Ok(inode) = std::fs::metadata(&path).map(|m| m.ino()) else {
                continue;
            };
            // Our own namespace gets an id as a side effect of target-netnsid dumps: skip it.
            if inode == self.inode || !seen.insert(inode) {
                continue;
            }
            let nsid = match self.known.get(&inode) {
                Some(id) => Some(*id),
                None => {
                    let id = File::open(&path)
                        .ok()
                        .and_then(|f| self.netlink.netnsid_of(&f).ok().flatten());
                    if let Some(id) = id {
                        if self.known.len() >= KNOWN_MAX {
                            self.known.clear();
                        }
                        self.known.insert(inode, id);
                    }
                    id
                }
            };
            if let Some(id) = nsid
                && wanted.contains(&id)
            {
                found.entry(id).or_insert(Located { path, inode });
            }
            if found.len() == wanted.len() && !scan_proc {
                break;
            }
        }
        // Inodes not seen any more may be reused by new namespaces.
        if scan_proc {
            self.known.retain(|i, _| seen.contains(i));
        }
        debug!(
            wanted = wanted.len(),
            found = found.len(),
            scan_proc,
            "located pod namespaces"
        );
        found
    }

    fn visit(
        &mut self,
        req: &VisitRequest,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Visit, ProbeError> {
        let open = |source| ProbeError::OpenNamespace {
            path: req.path.clone(),
            source,
        };
        let file = File::open(&req.path).map_err(open)?;
        // The path may now be another namespace (a reused pid, a recreated bind mount).
        let inode = file.metadata().map_err(open)?.ino();
        // And the file must still be namespace id N, asked right before `setns` (`ip netns
        // identify`): a namespace freed and its inode reused by another pod's would otherwise
        // send this pod's probes into that pod, and report its health as ours.
        let nsid = self.netlink.netnsid_of(&file).ok().flatten();
        if inode != req.inode || nsid != Some(req.netnsid) {
            self.known.remove(&req.inode);
            self.known.remove(&inode);
            return Err(ProbeError::NamespaceReplaced {
                path: req.path.clone(),
                netnsid: req.netnsid,
            });
        }
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| ProbeError::Setns {
            path: req.path.clone(),
            source,
        })?;
        drop(file);
        let pod_side = req.read_pod_side.then(|| {
            BlockingNetlink::open()
                .and_then(|mut nl| nl.pod_side(req.peer_index, req.has_v4, req.has_v6))
                .map_err(ProbeError::PodSide)
        });
        let tcp_retrans = req.syn_sent.then(tcp_retransmits).flatten();
        let syn_sent = req.syn_sent.then(|| {
            let moved = tcp_retrans.is_none() || tcp_retrans != req.retrans_before;
            if req.dump_always || moved {
                dump_syn_sent().map_err(ProbeError::SockDiag)
            } else {
                Ok(SynSentDump::default())
            }
        });
        let hint = read_all(&req.hints);
        let _guard = runtime.enter();
        let mut icmp_error = None;
        let mut icmp = |kind, hop_limit: Option<u32>, df: bool| {
            let made = icmp_client(kind, hop_limit).and_then(|c| {
                if df {
                    let v6 = matches!(kind, ICMP::V6);
                    super::dont_fragment::apply(c.get_socket().get_native_sock(), v6)?;
                }
                Ok(c)
            });
            match made {
                Ok(c) => Some(c),
                Err(e) => {
                    icmp_error.get_or_insert(ProbeError::IcmpSocket(e));
                    None
                }
            }
        };
        let w = req.icmp;
        let icmp_v4 = w.v4.then(|| icmp(ICMP::V4, None, false)).flatten();
        let gateway_v4 = w
            .v4_gateway
            .then(|| icmp(ICMP::V4, Some(1), false))
            .flatten();
        let icmp_v6 = w.v6.then(|| icmp(ICMP::V6, None, false)).flatten();
        let gateway_v6 = w
            .v6_gateway
            .then(|| icmp(ICMP::V6, Some(1), false))
            .flatten();
        // The path-MTU probe goes where the gateway probe goes, as large as the pod's MTU.
        let mtu = match &pod_side {
            Some(Ok(side)) => side.mtu,
            _ => None,
        };
        let mut path_mtu = |wanted: bool, kind| {
            let mtu = mtu.filter(|_| wanted)?;
            icmp(kind, Some(1), true).map(|c| (c, mtu))
        };
        let path_mtu_v4 = path_mtu(w.v4_gateway, ICMP::V4);
        let path_mtu_v6 = path_mtu(w.v6_gateway, ICMP::V6);
        let tcp = req.tcp.iter().map(|a| (*a, tcp_socket(a))).collect();
        let dns = req.dns.iter().map(|a| (*a, dns_sockets(a))).collect();
        Ok(Visit {
            pod_side,
            icmp_v4,
            gateway_v4,
            icmp_v6,
            gateway_v6,
            path_mtu_v4,
            path_mtu_v6,
            icmp_error,
            tcp,
            syn_sent,
            tcp_retrans,
            hint,
            dns,
        })
    }
}

/// An ICMP socket in the current namespace: raw if we may (it also sees the ICMP errors the
/// gateway probe relies on), else an unprivileged datagram ping socket. A raw one gets
/// `ICMP_FILTER` (see `icmp_filter`).
pub(crate) fn icmp_client(kind: ICMP, hop_limit: Option<u32>) -> std::io::Result<Client> {
    let mut b = Config::builder().kind(kind).sock_type_hint(Type::RAW);
    if let Some(h) = hop_limit {
        b = b.ttl(h);
    }
    let client = Client::new(&b.build())?;
    let socket = client.get_socket();
    if socket.get_type() == Type::RAW {
        super::icmp_filter::apply(socket.get_native_sock(), matches!(kind, ICMP::V6))?;
    }
    Ok(client)
}

/// An unconnected, non-blocking TCP socket in the current namespace. It closes with a reset
/// (linger 0), as load-balancer health checks do: no FIN exchange to pay for and no TIME_WAIT
/// socket left in the pod's namespace per probe.
fn tcp_socket(addr: &SocketAddr) -> std::io::Result<std::net::TcpStream> {
    let s = Socket::new(
        Domain::for_address(*addr),
        Type::STREAM,
        Some(SockProtocol::TCP),
    )?;
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
    s.set_linger(Some(std::time::Duration::ZERO))?;
    Ok(s.into())
}

/// A DNS probe's sockets in the current namespace: an unbound, non-blocking UDP socket
/// (`connect` on the runtime picks the source port) and a TCP socket for a truncated answer.
fn dns_sockets(addr: &SocketAddr) -> std::io::Result<DnsSockets> {
    let udp = Socket::new(
        Domain::for_address(*addr),
        Type::DGRAM,
        Some(SockProtocol::UDP),
    )?;
    udp.set_nonblocking(true)?;
    udp.set_cloexec(true)?;
    Ok(DnsSockets {
        udp: udp.into(),
        tcp: tcp_socket(addr)?,
    })
}
