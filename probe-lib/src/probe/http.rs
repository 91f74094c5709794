//! The HTTP(S) probe: `GET PATH` to a configured address from inside the pod
//! (`curl -sS -o /dev/null -w '%{http_code}' https://198.51.100.1:8443/healthz` in the pod's
//! namespace), the status checked against an expected class.
//!
//! The TCP socket is created on the namespace thread (so the connection leaves from the
//! pod's namespace); connect, TLS and the exchange then run on the runtime like the TCP
//! probe's connect, all under the probe's timeout. Only the status line and headers are read,
//! at most [`HEAD_MAX`] bytes: the server is hostile input.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use super::outcome::{Observation, ProbeResult, classify_io};

/// Response head bytes read at most (status line and headers).
pub const HEAD_MAX: usize = 16 * 1024;

/// What an HTTP(S) target asks and expects; part of its [`super::target::Target`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpSpec {
    /// HTTPS.
    pub tls: bool,
    /// `Host` header, and for HTTPS the server name (SNI and verification).
    pub host: String,
    /// Request path, starting with `/`.
    pub path: String,
    /// Expected status class, 1 to 5 (`2xx` by default).
    pub expect_class: u16,
    /// HTTPS without verifying the server's certificate (opt-in per target).
    pub insecure: bool,
}

/// Parse the part after `http:`/`https:`: `//IP:PORT/PATH[;2xx][;insecure][;host=NAME]`.
/// Returns the address to connect to and the spec, or why not.
pub fn parse(tls: bool, rest: &str) -> Result<(SocketAddr, HttpSpec), &'static str> {
    let mut parts = rest.split(';');
    let url = parts.next().unwrap_or_default();
    let url = url
        .strip_prefix("//")
        .ok_or("expected http(s)://IP:PORT/PATH")?;
    let (authority, path) = match url.find('/') {
        Some(i) => (&url[..i], &url[i..]),
        None => (url, "/"),
    };
    // `[v6]` without a port, as in a URL.
    let bare = authority
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(authority);
    let addr: SocketAddr = match bare.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, if tls { 443 } else { 80 }),
        Err(_) => authority
            .parse()
            .map_err(|_| "the host must be an IP address (IP, IP:PORT, [IPv6]:PORT)")?,
    };
    if addr.port() == 0 {
        return Err("port 0");
    }
    if path.len() > 1024 || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the path must be at most 1024 printable ASCII characters");
    }
    let mut spec = HttpSpec {
        tls,
        host: match addr.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        },
        path: path.to_owned(),
        expect_class: 2,
        insecure: false,
    };
    for opt in parts {
        match opt.trim() {
            "insecure" if tls => spec.insecure = true,
            c if c.len() == 3 && c.ends_with("xx") => {
                spec.expect_class = match c.as_bytes()[0] {
                    d @ b'1'..=b'5' => u16::from(d - b'0'),
                    _ => return Err("the status class must be 1xx to 5xx"),
                };
            }
            o if o.starts_with("host=") => {
                let name = &o["host=".len()..];
                if name.is_empty()
                    || name.len() > 253
                    || ServerName::try_from(name.to_owned()).is_err()
                {
                    return Err("host= must be a DNS name");
                }
                name.clone_into(&mut spec.host);
            }
            _ => return Err("options are ;2xx (a status class), ;insecure (https), ;host=NAME"),
        }
    }
    Ok((addr, spec))
}

/// The status code of a response head (`HTTP/1.1 200 OK`), if it has one.
pub(crate) fn status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let mut words = line.split(|&b| b == b' ');
    let version = words.next()?;
    if !version.starts_with(b"HTTP/1.") {
        return None;
    }
    let code = words.next()?;
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// Client TLS configurations, built once: verifying (web PKI roots, or the `--probe-ca`
/// file's), and not verifying for targets marked `insecure`.
#[derive(Clone)]
pub struct TlsConfigs {
    verify: Arc<ClientConfig>,
    insecure: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfigs").finish_non_exhaustive()
    }
}

/// The `--probe-ca` file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("CA file {path}: {why}")]
pub struct CaError {
    path: String,
    why: String,
}

impl TlsConfigs {
    /// With `ca` (PEM), trust only it; else the web PKI's roots.
    pub fn new(ca: Option<&std::path::Path>) -> Result<Self, CaError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        match ca {
            Some(path) => {
                let err = |why: String| CaError {
                    path: path.display().to_string(),
                    why,
                };
                for cert in CertificateDer::pem_file_iter(path).map_err(|e| err(e.to_string()))? {
                    roots
                        .add(cert.map_err(|e| err(e.to_string()))?)
                        .map_err(|e| err(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(err("no certificate".into()));
                }
            }
            None => {
                roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.to_vec());
            }
        }
        let builder = || {
            ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default versions")
        };
        let verify = builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let insecure = super::any_certificate_config(Arc::clone(&provider));
        Ok(TlsConfigs {
            verify: Arc::new(verify),
            insecure: Arc::new(insecure),
        })
    }
}

impl Default for TlsConfigs {
    fn default() -> Self {
        Self::new(None).expect("the built-in roots need no file")
    }
}

/// Run the probe: connect, TLS if asked, `GET`, the status line; within `timeout`.
pub(crate) async fn probe(
    stream: Option<std::io::Result<std::net::TcpStream>>,
    addr: SocketAddr,
    spec: &HttpSpec,
    tls: &TlsConfigs,
    timeout: Duration,
) -> Observation {
    let stream = match super::outcome::opened(stream) {
        Ok(s) => s,
        Err(failed) => return failed,
    };
    let started = Instant::now();
    match tokio::time::timeout(timeout, exchange(stream, addr, spec, tls)).await {
        Ok(Ok((code, timings))) => {
            let class_ok = code / 100 == spec.expect_class;
            let result = if class_ok {
                ProbeResult::Ok
            } else {
                ProbeResult::BadStatus
            };
            let mut obs = Observation::answered(result, started.elapsed());
            let expected = spec.expect_class;
            obs.detail = Some(if class_ok {
                timings
            } else {
                format!("status {code}, expected {expected}xx; {timings}")
            });
            obs
        }
        Ok(Err((result, detail))) => {
            if result == ProbeResult::Refused {
                Observation::answered(result, started.elapsed())
            } else {
                Observation::failed(result, detail)
            }
        }
        Err(_) => Observation::failed(ProbeResult::Timeout, "no response"),
    }
}

type Failed = (ProbeResult, String);

async fn exchange(
    stream: std::net::TcpStream,
    addr: SocketAddr,
    spec: &HttpSpec,
    tls: &TlsConfigs,
) -> Result<(u16, String), Failed> {
    let t0 = Instant::now();
    let conn = tokio::net::TcpSocket::from_std_stream(stream)
        .connect(addr)
        .await
        .map_err(|e| (classify_io(&e), format!("connect: {e}")))?;
    let connect = t0.elapsed();
    if !spec.tls {
        let (code, first) = request(conn, spec).await?;
        let timings = format!("connect {connect:?}, first byte {first:?}");
        return Ok((code, timings));
    }
    let config = if spec.insecure {
        &tls.insecure
    } else {
        &tls.verify
    };
    let name = ServerName::try_from(spec.host.trim_matches(['[', ']']).to_owned())
        .map_err(|e| (ProbeResult::Error, format!("server name: {e}")))?;
    let t1 = Instant::now();
    let conn = TlsConnector::from(Arc::clone(config))
        .connect(name, conn)
        .await
        .map_err(|e| (ProbeResult::TlsFailed, format!("TLS: {e}")))?;
    let handshake = t1.elapsed();
    let (code, first) = request(conn, spec).await?;
    let timings = format!("connect {connect:?}, TLS {handshake:?}, first byte {first:?}");
    Ok((code, timings))
}

/// Send the request; read the head (bounded) and return its status and the time to its first
/// byte.
async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: S,
    spec: &HttpSpec,
) -> Result<(u16, Duration), Failed> {
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: podnet-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        spec.path, spec.host
    );
    let sent = Instant::now();
    conn.write_all(req.as_bytes())
        .await
        .map_err(|e| (classify_io(&e), format!("send: {e}")))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    let mut first = None;
    loop {
        let n = conn
            .read(&mut buf)
            .await
            .map_err(|e| (ProbeResult::Error, format!("read: {e}")))?;
        first.get_or_insert_with(|| sent.elapsed());
        if n == 0 {
            break;
        }
        let take = n.min(HEAD_MAX - head.len());
        head.extend_from_slice(&buf[..take]);
        // The status line is all we need; stop at the end of the head or the cap.
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() >= HEAD_MAX {
            break;
        }
    }
    let code =
        status(&head).ok_or_else(|| (ProbeResult::Error, "not an HTTP/1 response".to_owned()))?;
    Ok((code, first.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let (a, s) = parse(
            true,
            "//198.51.100.1:8443/healthz;5xx;insecure;host=api.example",
        )
        .unwrap();
        assert_eq!(a, "198.51.100.1:8443".parse().unwrap());
        assert_eq!(
            (s.path.as_str(), s.expect_class, s.insecure, s.host.as_str()),
            ("/healthz", 5, true, "api.example")
        );
        let (a, s) = parse(false, "//[2001:db8::1]").unwrap();
        assert_eq!(a, "[2001:db8::1]:80".parse().unwrap());
        assert_eq!(
            (s.path.as_str(), s.expect_class, s.host.as_str()),
            ("/", 2, "[2001:db8::1]")
        );
        for bad in [
            "198.51.100.1/x",
            "//example.com/",
            "//198.51.100.1:0/",
            "//198.51.100.1/a b",
            "//198.51.100.1/;6xx",
            "//198.51.100.1/;bogus",
            "//198.51.100.1/;host=",
        ] {
            assert!(parse(true, bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse(false, "//198.51.100.1/;insecure").is_err());
    }

    #[test]
    fn status_lines() {
        assert_eq!(status(b"HTTP/1.1 200 OK\r\n\r\n"), Some(200));
        assert_eq!(status(b"HTTP/1.0 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(status(b"HTTP/1.1 204"), Some(204));
        for bad in [
            &b""[..],
            b"SSH-2.0-OpenSSH\r\n",
            b"HTTP/1.1 20 OK",
            b"HTTP/1.1 2000 OK",
            b"HTTP/2 200",
            b"HTTP/1.1 2x0 OK",
            b"\x16\x03\x01\x00",
        ] {
            assert_eq!(status(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tls_configs_build() {
        let _ = TlsConfigs::default();
        let missing = TlsConfigs::new(Some(std::path::Path::new("/nonexistent/ca.pem")));
        assert!(missing.is_err());
    }
}
