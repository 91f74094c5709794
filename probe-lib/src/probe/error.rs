//! Why a pod could not be probed from inside, typed (the text is evidence for `/status` and
//! logs; callers decide by variant).

use std::io;
use std::path::PathBuf;

/// Entering a pod's network namespace or preparing its round failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The host interface has no peer in another namespace (not a pod veth, or not yet).
    #[error("the pod's interface has no peer namespace")]
    NoPeerNamespace,
    /// No bind mount and no process holds the namespace any more.
    #[error("namespace id {0} not found in /var/run/netns or /proc (pod gone?)")]
    NamespaceNotFound(i32),
    /// The namespace thread was busy with other pods for longer than one probe timeout
    /// (each of its jobs is bounded; this pod's round gave up rather than delay the others).
    #[error("the namespace thread was busy for longer than the probe timeout")]
    NamespaceThreadBusy,
    /// The namespace thread stopped (it could not return to the host namespace).
    #[error("the namespace thread is gone")]
    ThreadGone,
    /// The namespace file could not be opened or examined.
    #[error("{path}: {source}")]
    OpenNamespace {
        /// `/var/run/netns/…` or `/proc/<pid>/ns/net`.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The path now names another namespace (a reused pid, a recreated bind mount).
    #[error("{path} is no longer namespace id {netnsid}")]
    NamespaceReplaced {
        /// The path.
        path: PathBuf,
        /// The namespace id it was found for.
        netnsid: i32,
    },
    /// `setns` into the pod's namespace failed (`ip netns exec`).
    #[error("setns {path}: {source}")]
    Setns {
        /// The namespace file.
        path: PathBuf,
        /// The error.
        #[source]
        source: nix::errno::Errno,
    },
    /// Reading the pod's own links and routes failed (`ip -n <pod> link`, `ip -n <pod> route`).
    #[error("reading the pod's links and routes: {0}")]
    PodSide(#[source] io::Error),
    /// The pod's `SYN_SENT` sockets could not be dumped (`ss -tn state syn-sent`).
    #[error("dumping the pod's connecting sockets: {0}")]
    SockDiag(#[source] io::Error),
    /// An ICMP socket could not be created in the pod's namespace.
    #[error("ICMP socket: {0}")]
    IcmpSocket(#[source] io::Error),
}
