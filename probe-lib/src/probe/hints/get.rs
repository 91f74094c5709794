//! `GET` on a pod's loopback, plain or TLS, from inside its namespace (blocking, on the
//! namespace thread). Bounded by a deadline and [`MAX_ANSWER`]; only the body of a 200 answer
//! is returned, for the caller to parse (the pod controls every byte of it).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::probe::any_certificate_config;

/// Most of an answer read.
const MAX_ANSWER: usize = 64 << 10;

/// Accepts any certificate: the server is the pod's own loopback, whose certificate is
/// usually self-signed (Kong's default admin certificate). Offers HTTP/1.1 only, which an
/// `http2 ssl` listener also serves.
static TLS: LazyLock<Arc<ClientConfig>> = LazyLock::new(|| {
    let mut config = any_certificate_config(Arc::new(ring::default_provider()));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
});

/// Time left until `deadline`, at least 1 ms (a zero timeout means "none" to the socket).
fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

/// `curl -s http://<addr><path>`.
pub(crate) fn http_get(addr: SocketAddr, path: &str, deadline: Instant) -> Option<Vec<u8>> {
    let s = TcpStream::connect_timeout(&addr, left(deadline)).ok()?;
    let sock = s.try_clone().ok()?;
    exchange(s, &sock, addr, path, deadline)
}

/// `curl -sk https://<addr><path>` (no certificate verification, no SNI for an IP address).
pub(crate) fn https_get(addr: SocketAddr, path: &str, deadline: Instant) -> Option<Vec<u8>> {
    let s = TcpStream::connect_timeout(&addr, left(deadline)).ok()?;
    let sock = s.try_clone().ok()?;
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = ClientConnection::new(Arc::clone(&TLS), name).ok()?;
    exchange(StreamOwned::new(tls, s), &sock, addr, path, deadline)
}

/// Send an HTTP/1.0 `GET` on `s` (the handshake, for TLS, happens on the first write) and
/// read the answer to its end. `sock` is the socket under `s`, whose timeouts bound each step.
fn exchange(
    mut s: impl Read + Write,
    sock: &TcpStream,
    addr: SocketAddr,
    path: &str,
    deadline: Instant,
) -> Option<Vec<u8>> {
    sock.set_write_timeout(Some(left(deadline))).ok()?;
    sock.set_read_timeout(Some(left(deadline))).ok()?;
    // One write: one TLS record, one segment (`write!` would write each piece apart).
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    s.write_all(request.as_bytes()).ok()?;
    s.flush().ok()?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if Instant::now() >= deadline || answer.len() > MAX_ANSWER {
            return None;
        }
        sock.set_read_timeout(Some(left(deadline))).ok()?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            // A TLS peer closing without close_notify: the answer ends there (a cut body
            // fails the caller's parse).
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(_) => return None,
        }
    }
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = answer.split(|b| *b == b'\n').next()?;
    let ok = status.starts_with(b"HTTP/1.") && status.get(9..12) == Some(b"200".as_slice());
    ok.then(|| answer[end + 4..].to_vec())
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::pki_types::PrivatePkcs8KeyDer;

    use super::*;

    /// What the one-connection loopback server does after reading the request.
    enum Serve {
        /// Write these bytes and close.
        Answer(Vec<u8>),
        /// Say nothing until the client gives up.
        Silent,
    }

    fn tls_config() -> Arc<ServerConfig> {
        let cert = rcgen::generate_simple_self_signed(vec!["kong".to_owned()]).unwrap();
        let key = PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
        let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key.into())
            .unwrap();
        Arc::new(config)
    }

    /// A server on the host's loopback for one connection, plain or TLS; joined by the test.
    fn server(tls: bool, serve: Serve) -> (SocketAddr, JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let config = tls.then(tls_config);
        let t = std::thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut s: Box<dyn ReadWrite> = match config {
                Some(config) => Box::new(StreamOwned::new(
                    tokio_rustls::rustls::ServerConnection::new(config).unwrap(),
                    c,
                )),
                None => Box::new(c),
            };
            let mut req = [0u8; 2048];
            match serve {
                // A failed handshake: close at once (a TLS write would wait for one).
                Serve::Answer(bytes) => {
                    if s.read(&mut req).is_ok() {
                        let _ = s.write_all(&bytes);
                        let _ = s.flush();
                    }
                }
                Serve::Silent => while matches!(s.read(&mut req), Ok(n) if n > 0) {},
            }
        });
        (addr, t)
    }

    trait ReadWrite: Read + Write {}
    impl<T: Read + Write> ReadWrite for T {}

    fn ok(body: &str) -> Serve {
        Serve::Answer(format!("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{body}").into_bytes())
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(3)
    }

    #[test]
    fn tls_and_plain_each_read_their_own_listener() {
        let (addr, t) = server(true, ok(r#"{"server":{}}"#));
        assert_eq!(
            https_get(addr, "/status", soon()).as_deref(),
            Some(br#"{"server":{}}"#.as_slice())
        );
        t.join().unwrap();
        let (addr, t) = server(false, ok("plain"));
        assert_eq!(
            http_get(addr, "/status", soon()).as_deref(),
            Some(b"plain".as_slice())
        );
        t.join().unwrap();
        // The wrong protocol on either port: no answer, no panic.
        let (addr, t) = server(true, ok("x"));
        assert_eq!(http_get(addr, "/status", soon()), None);
        t.join().unwrap();
        let (addr, t) = server(false, ok("x"));
        assert_eq!(https_get(addr, "/status", soon()), None);
        t.join().unwrap();
    }

    #[test]
    fn tls_answers_are_bounded_in_size_status_and_time() {
        let huge = "a".repeat(MAX_ANSWER + 10);
        let not_found = Serve::Answer(b"HTTP/1.1 404 Not Found\r\n\r\n{}".to_vec());
        for serve in [ok(&huge), not_found, Serve::Answer(b"garbage".to_vec())] {
            let (addr, t) = server(true, serve);
            assert_eq!(https_get(addr, "/status", soon()), None);
            t.join().unwrap();
        }
        let (addr, t) = server(true, Serve::Silent);
        let started = Instant::now();
        let deadline = started + Duration::from_millis(200);
        assert_eq!(https_get(addr, "/status", deadline), None);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "took {took:?}");
        t.join().unwrap();
    }
}
