//! One path probe as kube-apiserver would take it, from the host network namespace: a TCP
//! connect (`nc -z <ip> <port>`) and a TLS handshake with the SNI kube-apiserver sends
//! (`openssl s_client -connect <ip>:<port> -servername <svc>.<ns>.svc`), each with a timeout.
//!
//! The certificate is not checked against a CA: this proves the path, not the server's
//! identity (the CA bundle lives in each APIService or webhook configuration). The handshake's
//! signatures are still verified, so a completed handshake means a TLS server holding the
//! certificate's key answered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::model::{PathOutcome, ProbeResult};
use crate::probe::any_certificate_config;
use crate::probe::outcome::classify_io;

/// Dials Service paths: connect, then handshake, each within `timeout`.
#[derive(Clone)]
pub(crate) struct Dialer {
    tls: TlsConnector,
    timeout: Duration,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Dialer {
    /// A dialer whose connect and handshake each get `timeout`.
    pub(crate) fn new(timeout: Duration) -> Self {
        let config = any_certificate_config(Arc::new(ring::default_provider()));
        Dialer {
            tls: TlsConnector::from(Arc::new(config)),
            timeout,
        }
    }

    /// Connect to `addr` and complete a TLS handshake with SNI `server_name`.
    pub(crate) async fn probe(&self, addr: SocketAddr, server_name: &str) -> PathOutcome {
        let start = Instant::now();
        let tcp = match tokio::time::timeout(self.timeout, TcpStream::connect(addr)).await {
            Err(_) => {
                return PathOutcome::Unreached {
                    class: ProbeResult::Timeout,
                    detail: format!("no TCP answer within {:?}", self.timeout),
                };
            }
            Ok(Err(e)) => {
                return PathOutcome::Unreached {
                    class: classify_io(&e),
                    detail: e.to_string(),
                };
            }
            Ok(Ok(s)) => s,
        };
        let Ok(name) = ServerName::try_from(server_name.to_owned()) else {
            return PathOutcome::TlsFailed {
                detail: format!("{server_name:?} is not a valid TLS server name"),
            };
        };
        match tokio::time::timeout(self.timeout, self.tls.connect(name, tcp)).await {
            Err(_) => PathOutcome::TlsFailed {
                detail: format!("no TLS handshake within {:?}", self.timeout),
            },
            Ok(Err(e)) => PathOutcome::TlsFailed {
                detail: e.to_string(),
            },
            // Dropping the stream closes the connection; nothing is sent beyond the handshake.
            Ok(Ok(_stream)) => PathOutcome::ok(start.elapsed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn refused_and_not_tls_are_told_apart_on_loopback() {
        let dialer = Dialer::new(Duration::from_secs(2));
        // A port bound but not listening: refused. Held for the whole probe, so no other test
        // of this binary can pick the freed port up meanwhile (which answered with a reset).
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = closed.local_addr().unwrap();
        let out = dialer.probe(addr, "x.default.svc").await;
        drop(closed);
        assert!(
            matches!(
                out,
                PathOutcome::Unreached {
                    class: ProbeResult::Refused,
                    ..
                }
            ),
            "{out:?}"
        );
        // A plain TCP server answering HTTP: connected, TLS failed.
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = plain.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = plain.accept().await.unwrap();
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        });
        let out = dialer.probe(addr, "x.default.svc").await;
        assert!(matches!(out, PathOutcome::TlsFailed { .. }), "{out:?}");
        assert!(out.connected());
        server.await.unwrap();
    }
}
