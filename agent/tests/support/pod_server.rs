//! Test helpers of the control-plane check: a TLS (or plain TCP) server inside a pod's
//! network namespace, playing metrics-server or a webhook, and kube-proxy's ClusterIP DNAT in
//! the node namespace.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::PrivatePkcs8KeyDer;
use tokio_rustls::rustls::{self, ServerConfig};

/// A server in a pod's namespace: TLS (a self-signed certificate for `name`) or plain TCP
/// (accepts and closes). Stops and joins its thread when dropped.
pub struct PodServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl PodServer {
    pub fn start(netns: &str, addr: SocketAddr, tls_name: Option<&str>) -> Self {
        let acceptor = tls_name.map(acceptor);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let ns = netns.to_owned();
        let thread = std::thread::spawn(move || {
            podnet_testbed::netns::enter(&ns).expect("entering the pod namespace");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
                ready_tx.send(()).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        Ok((s, _)) = listener.accept() => match &acceptor {
                            Some(a) => {
                                let a = a.clone();
                                tokio::spawn(async move {
                                    let _ = tokio::time::timeout(Duration::from_secs(5), a.accept(s)).await;
                                });
                            }
                            None => drop(s),
                        },
                    }
                }
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server listening");
        PodServer {
            stop: Some(stop),
            thread: Some(thread),
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

fn acceptor(name: &str) -> TlsAcceptor {
    let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    let key = PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key.into())
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
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

pub fn dnat(ns: &str, cluster_ip: &str, to: SocketAddr) {
    iptables(
        ns,
        &format!("-A OUTPUT -d {cluster_ip}/32 -p tcp --dport 443 -j DNAT --to-destination {to}"),
    );
}
