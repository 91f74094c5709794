//! calico-node's felix on this node, read over plain HTTP on the host's loopback: its health
//! endpoint (`/readiness`, `/liveness`, default `127.0.0.1:9099`) and, where enabled, its
//! Prometheus endpoint (default `127.0.0.1:9091/metrics`). Every read has a connect and a total
//! timeout and a size cap; anything unreadable is reported as unknown, never as healthy.
//!
//! Requests are HTTP/1.0 (`curl -0 http://127.0.0.1:9099/readiness`): Go's server then answers
//! without chunked encoding and closes the connection, so the body is everything after the
//! headers.

mod parse;
#[cfg(test)]
mod props;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use crate::model::{Felix, FelixStatus};

/// Where felix listens, and how often to read it.
#[derive(Debug, Clone)]
pub struct FelixConfig {
    /// Health endpoint (`HealthHost:HealthPort`), if read.
    pub health: Option<SocketAddr>,
    /// Prometheus endpoint (`PrometheusMetricsHost:PrometheusMetricsPort`), if read.
    pub metrics: Option<SocketAddr>,
    /// Time between readings.
    pub interval: Duration,
    /// Connect plus answer, per request.
    pub timeout: Duration,
}

/// Largest health answer read (a component table is a few hundred bytes).
const MAX_HEALTH: usize = 64 << 10;
/// Largest metrics answer read (felix's exposition is ~100 KiB on a busy node).
const MAX_METRICS: usize = 4 << 20;

/// The longest the reader goes without calling its heartbeat: one interval plus one reading
/// (three requests, each bounded by `timeout`), with margin. A supervisor may call it hung
/// after this.
pub fn max_silence(config: &FelixConfig) -> Duration {
    config.interval + 3 * config.timeout + Duration::from_secs(5)
}

/// Read felix every interval into `state` until `shutdown` completes, calling `beat` after
/// every reading (see [`max_silence`]).
pub async fn run(
    config: FelixConfig,
    state: Felix,
    beat: impl Fn(),
    shutdown: impl Future<Output = ()>,
) {
    let work = async {
        let mut tick = tokio::time::interval(config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            state.set(read(&config).await);
            beat();
        }
    };
    tokio::select! {
        () = work => {}
        () = shutdown => {}
    }
}

/// One reading of every configured endpoint.
pub async fn read(config: &FelixConfig) -> FelixStatus {
    let mut status = FelixStatus::default();
    if let Some(addr) = config.health {
        let ready = get(addr, "/readiness", MAX_HEALTH, config.timeout).await;
        let live = get(addr, "/liveness", MAX_HEALTH, config.timeout).await;
        status.health_up = ready.is_some() || live.is_some();
        let judge = |a: Option<Vec<u8>>| {
            a.and_then(|a| parse::status_code(&a))
                .and_then(parse::health)
        };
        status.ready = judge(ready);
        status.live = judge(live);
    }
    if let Some(addr) = config.metrics {
        let answer = get(addr, "/metrics", MAX_METRICS, config.timeout).await;
        let text = answer.as_deref().and_then(|a| {
            (parse::status_code(a) == Some(200))
                .then(|| parse::body(a))
                .flatten()
        });
        if let Some(text) = text.map(String::from_utf8_lossy) {
            status.metrics_up = true;
            status.active_local_endpoints =
                parse::sample(&text, "felix_active_local_endpoints").map(|v| v as u64);
            status.resync_state = parse::sample(&text, "felix_resync_state")
                .filter(|v| *v <= 255.0)
                .map(|v| v as u8);
        }
    }
    status
}

/// `GET <path>` over HTTP/1.0; the raw answer (at most `max` bytes), or `None` if felix could
/// not be reached or did not answer within `timeout`.
async fn get(addr: SocketAddr, path: &str, max: usize, timeout: Duration) -> Option<Vec<u8>> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut out = Vec::new();
        (&mut s).take(max as u64).read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(a)) if !a.is_empty() => Some(a),
        Ok(Ok(_)) => None,
        Ok(Err(e)) => {
            debug!(%addr, path, error = %e, "felix not readable");
            None
        }
        Err(_) => {
            debug!(%addr, path, ?timeout, "felix did not answer in time");
            None
        }
    }
}
