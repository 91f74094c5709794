//! For the control-plane check: TLS (or plain TCP) servers inside a pod's network namespace,
//! playing metrics-server or a webhook, and kube-proxy's ClusterIP DNAT in the node namespace.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::PrivatePkcs8KeyDer;
use tokio_rustls::rustls::{self, ServerConfig};

/// Servers in a pod's namespace on one or more addresses: TLS (a self-signed certificate for
/// `name`) or plain TCP (accepts and closes). Stops and joins its thread when dropped.
#[derive(Debug)]
pub struct PodServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl PodServer {
    /// One server on `addr` in namespace `netns`; TLS when `tls_name` is given.
    pub fn start(netns: &str, addr: SocketAddr, tls_name: Option<&str>) -> Self {
        Self::start_many(netns, &[addr], tls_name)
    }

    /// Servers on every address of `addrs`, served by one thread; fails if the namespace
    /// cannot be entered or an address bound.
    pub fn start_many(netns: &str, addrs: &[SocketAddr], tls_name: Option<&str>) -> Self {
        Self::try_start(netns, addrs, tls_name).expect("starting servers in the pod namespace")
    }

    fn try_start(netns: &str, addrs: &[SocketAddr], tls_name: Option<&str>) -> Result<Self> {
        let acceptor = tls_name.map(acceptor).transpose()?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let ns = netns.to_owned();
        let addrs = addrs.to_vec();
        let thread = std::thread::spawn(move || {
            let ready = ready_tx.clone();
            let serve = move || -> Result<()> {
                crate::netns::enter(&ns)?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let mut tasks = Vec::new();
                    for addr in addrs {
                        let listener = tokio::net::TcpListener::bind(addr)
                            .await
                            .with_context(|| format!("binding {addr}"))?;
                        tasks.push(tokio::spawn(accept_loop(listener, acceptor.clone())));
                    }
                    let _ = ready.send(Ok(()));
                    let _ = stopped.await;
                    for t in tasks {
                        t.abort();
                    }
                    Ok(())
                })
            };
            if let Err(e) = serve() {
                let _ = ready_tx.send(Err(e));
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the servers did not start")??;
        Ok(PodServer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// Accept forever: complete a TLS handshake (then close), or close at once (plain TCP).
async fn accept_loop(listener: tokio::net::TcpListener, acceptor: Option<TlsAcceptor>) {
    while let Ok((s, _)) = listener.accept().await {
        if let Some(a) = &acceptor {
            let a = a.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), a.accept(s)).await;
            });
        }
    }
}

impl Drop for PodServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TLS acceptor with a fresh self-signed certificate for `name`.
fn acceptor(name: &str) -> Result<TlsAcceptor> {
    Ok(TlsAcceptor::from(server_config(name)?))
}

/// A TLS server configuration with a fresh self-signed certificate for `name`.
pub(crate) fn server_config(name: &str) -> Result<Arc<ServerConfig>> {
    let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()])?;
    let key = PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key.into())?;
    Ok(Arc::new(config))
}

/// `iptables -t nat <args>` in the node namespace (kube-proxy's ClusterIP DNAT for
/// host-originated traffic is in `nat OUTPUT`).
pub fn iptables(ns: &str, args: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "iptables", "-w", "-t", "nat"])
        .args(args.split_whitespace())
        .output()
        .expect("running iptables");
    assert!(
        out.status.success(),
        "iptables -t nat {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// kube-proxy's DNAT of `cluster_ip:443` to `to` for host-originated traffic.
pub fn dnat(ns: &str, cluster_ip: &str, to: SocketAddr) {
    iptables(
        ns,
        &format!("-A OUTPUT -d {cluster_ip}/32 -p tcp --dport 443 -j DNAT --to-destination {to}"),
    );
}
