//! The HTTP server: our own accept loop around hyper's HTTP/1 connection, because
//! `axum::serve` installs no timer (so no header-read timeout) and has no connection cap.
//!
//! What a network peer can hold, at most: `max_connections` connections, each with an
//! 8 KiB read buffer, for at most `header_timeout` without sending a complete request head
//! (also the keep-alive idle time) and `6 × request_timeout` in all (a client that stops
//! reading its response). Connections beyond the cap are closed at once, never queued.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::http::{AppState, Exposure, respond};

/// hyper's smallest allowed read buffer; a request head must fit (else 431).
const READ_BUFFER: usize = 8192;
/// Request head fields at most (hyper's default is 100).
const MAX_HEADERS: usize = 32;
/// A connection lives at most this many request timeouts (bounds a client that never reads).
const LIFETIME_IN_REQUEST_TIMEOUTS: u32 = 6;
/// Completed handshakes the kernel queues for `accept` (capped by `net.core.somaxconn`).
const BACKLOG: u32 = 1024;
/// At most one "connection refused" warning this often (a flood must not flood the log).
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);

/// Limits of one listener (built from the flags in `config/`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Complete request head within this; also the keep-alive idle timeout and the TLS
    /// handshake's.
    pub header_timeout: Duration,
    /// Time to answer one request.
    pub request_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

/// One listener: where, what it serves, and with which limits.
#[derive(Clone)]
pub struct Listener {
    /// Address to bind.
    pub addr: SocketAddr,
    /// Which endpoints, and with which authorization.
    pub exposure: Exposure,
    /// Limits.
    pub limits: Limits,
    /// TLS, for `--secure-metrics`.
    pub tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("addr", &self.addr)
            .field("exposure", &self.exposure)
            .field("limits", &self.limits)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// A listener with its socket, bound before anything else starts.
#[derive(Debug)]
pub struct Bound {
    listener: Listener,
    socket: TcpListener,
}

impl Bound {
    /// Serve on the runtime until `shutdown`.
    pub fn spawn(
        self,
        state: Arc<AppState>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        tokio::spawn(serve(self.socket, self.listener, state, shutdown))
    }
}

/// Bind every listener (an error fails the start) and log what is served where.
pub fn bind_all(listeners: Vec<Listener>) -> anyhow::Result<Vec<Bound>> {
    listeners
        .into_iter()
        .map(|listener| {
            let socket =
                bind(&listener).with_context(|| format!("listening on {}", listener.addr))?;
            announce(&listener);
            Ok(Bound { listener, socket })
        })
        .collect()
}

/// `listener`'s socket with a backlog of [`BACKLOG`]: tokio's default of 128 overflows under a
/// burst of scrapers (SYNs dropped, clients wait out a 1 s retransmission), while connections
/// in the backlog cost no agent memory.
fn bind(listener: &Listener) -> std::io::Result<TcpListener> {
    let socket = match listener.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(listener.addr)?;
    socket.listen(BACKLOG)
}

/// Accept and serve until `shutdown`; connections in flight are dropped with the runtime.
async fn serve(
    socket: TcpListener,
    listener: Listener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(listener.limits.max_connections));
    let refused = AtomicU64::new(0);
    let mut last_refused_log: Option<Instant> = None;
    let listener = Arc::new(listener);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = socket.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the runtime thread.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refuse(stream);
            let n = refused.fetch_add(1, Ordering::Relaxed) + 1;
            if last_refused_log.is_none_or(|t| t.elapsed() >= REFUSED_LOG_EVERY) {
                last_refused_log = Some(Instant::now());
                warn!(
                    listen = %listener.addr,
                    refused_total = n,
                    open = listener.limits.max_connections - slots.available_permits(),
                    max = listener.limits.max_connections,
                    "HTTP connection cap reached: connections closed at once"
                );
            }
            continue;
        };
        let (listener, state) = (Arc::clone(&listener), Arc::clone(&state));
        tokio::spawn(async move {
            let lifetime = listener.limits.request_timeout * LIFETIME_IN_REQUEST_TIMEOUTS;
            let _ = tokio::time::timeout(lifetime, connection(stream, &listener, state)).await;
            debug!(%peer, "connection closed");
            drop(slot);
        });
    }
}

/// Close with a reset (SO_LINGER 0): no TIME_WAIT, and the peer learns at once.
fn refuse(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn connection(stream: TcpStream, listener: &Listener, state: Arc<AppState>) {
    let _ = stream.set_nodelay(true);
    match &listener.tls {
        None => http(stream, listener, state).await,
        Some(acceptor) => {
            let handshake = acceptor.accept(stream);
            match tokio::time::timeout(listener.limits.header_timeout, handshake).await {
                Ok(Ok(tls)) => http(tls, listener, state).await,
                Ok(Err(e)) => debug!(error = %e, "TLS handshake failed"),
                Err(_) => debug!("TLS handshake timed out"),
            }
        }
    }
}

async fn http<I>(io: I, listener: &Listener, state: Arc<AppState>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let exposure = listener.exposure.clone();
    let request_timeout = listener.limits.request_timeout;
    let service = service_fn(move |req| {
        let (state, exposure) = (Arc::clone(&state), exposure.clone());
        async move { Ok::<_, Infallible>(respond(&state, &exposure, req, request_timeout).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(listener.limits.header_timeout)
        .max_buf_size(READ_BUFFER)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    if let Err(e) = builder.serve_connection(TokioIo::new(io), service).await {
        debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// Log what is served where (one line per listener).
fn announce(listener: &Listener) {
    info!(
        listen = %listener.addr,
        tls = listener.tls.is_some(),
        endpoints = listener.exposure.describe(),
        max_connections = listener.limits.max_connections,
        "serving HTTP"
    );
}
