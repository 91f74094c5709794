//! The flags' value types and parsers: each parser turns one flag's text into its value or
//! the one-line reason it is refused (exit 2, see `main.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::ValueEnum;
use podnet_probe::cni::Cni;
use podnet_probe::probe::target::Target;

/// `--status-listen`: a loopback address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusListen {
    /// Not served.
    Off,
    /// Served on this loopback address.
    On(SocketAddr),
}

/// `--remote-blocks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RemoteBlocksArg {
    /// Remote blocks are not checked.
    Off,
    /// Calico IPAM `BlockAffinity` objects and the nodes' (tunnel) addresses.
    Calico,
    /// `Node.spec.podCIDRs` and the nodes' `InternalIP`s.
    PodCidrs,
}

/// `--control-plane-checks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ControlPlaneChecksArg {
    /// Only on control-plane nodes.
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

/// `--pod-source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PodSourceArg {
    /// The API when in a cluster or given a kubeconfig, else the node.
    Auto,
    /// The Kubernetes API.
    Kubernetes,
    /// The node's own interfaces.
    Node,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `IP:PORT`, `[IPv6]:PORT`, or `IPv6:PORT` as the downward API's `$(HOST_IP):9710` gives it.
pub(super) fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    let bad = || format!("'{s}' is not an address with a port (e.g. 192.0.2.10:9710)");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let ip: std::net::IpAddr = host.parse().map_err(|_| bad())?;
    Ok(SocketAddr::new(ip, port.parse().map_err(|_| bad())?))
}

pub(super) fn status_listen(s: &str) -> Result<StatusListen, String> {
    if s == "off" {
        return Ok(StatusListen::Off);
    }
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| format!("'{s}' is neither an address (127.0.0.1:9711) nor `off`"))?;
    if !addr.ip().is_loopback() {
        return Err("must be a loopback address: /status is not authorized".into());
    }
    Ok(StatusListen::On(addr))
}

pub(super) fn http_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(120) {
        return Err("must be between 100ms and 120s".into());
    }
    Ok(d)
}

/// An `ip:port` to read, or none (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint(pub Option<SocketAddr>);

pub(super) fn endpoint(s: &str) -> Result<Endpoint, String> {
    if s == "off" {
        return Ok(Endpoint(None));
    }
    s.parse()
        .map(|a| Endpoint(Some(a)))
        .map_err(|_| format!("{s:?} is not ip:port or off (no host names: no DNS here)"))
}

pub(super) fn non_empty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_owned())
    }
}

pub(super) fn interface_prefix(s: &str) -> Result<String, String> {
    // Interface names are at most 15 bytes; a prefix must leave room for something.
    if s.is_empty() || s.len() > 14 {
        return Err("must be 1 to 14 characters".into());
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err("may contain only letters, digits, '-', '_' and '.'".into());
    }
    Ok(s.to_owned())
}

pub(super) fn cni(s: &str) -> Result<Cni, String> {
    s.parse()
}

pub(super) fn kube_watch_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(5) || d > Duration::from_secs(3600) {
        return Err("must be between 5s and 1h".into());
    }
    Ok(d)
}

pub(super) fn condition_heartbeat(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(24 * 3600) {
        return Err("must be between 1s and 24h".into());
    }
    Ok(d)
}

/// An `EnvFilter` directive list, each directive trimmed. tracing-subscriber 0.3 scans a
/// trimmed directive but slices the untrimmed one with those indices: a directive with
/// leading blanks and a multi-byte character (`"\tΌ="`) made it panic instead of refusing
/// the value (found by `props_flags_hostile_values`). Trimmed, the indices agree.
pub(super) fn log_filter(s: &str) -> Result<String, String> {
    let s = s
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect::<Vec<_>>()
        .join(",");
    tracing_subscriber::EnvFilter::try_new(&s)
        .map(|_| s)
        .map_err(|e| e.to_string())
}

pub(super) fn resync_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}

/// `10.96.0.10` (port 53) or `10.96.0.10:53`, `[fd00::a]:53`.
pub(super) fn dns_server(s: &str) -> Result<SocketAddr, String> {
    probe_target(&format!("dns:{s}")).and_then(|t| match t.destination {
        podnet_probe::probe::target::Destination::Address(sa) => Ok(sa),
        _ => Err(format!("invalid DNS server '{s}'")),
    })
}

/// `--dns-service`: the Service, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsService(pub Option<podnet_probe::model::ServiceKey>);

pub(super) fn dns_service(s: &str) -> Result<DnsService, String> {
    if s.trim() == "none" {
        return Ok(DnsService(None));
    }
    podnet_probe::model::parse_service_key(s.trim())
        .map(|k| DnsService(Some(k)))
        .map_err(|e| format!("invalid Service '{s}': {e}"))
}

pub(super) fn probe_target(s: &str) -> Result<Target, String> {
    s.parse()
        .map_err(|e: podnet_probe::probe::target::TargetSpecError| e.to_string())
}

pub(super) fn probe_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}

pub(super) fn probe_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(10) || d > Duration::from_secs(30) {
        return Err("must be between 10ms and 30s".into());
    }
    Ok(d)
}

/// The shortest duration any flag accepts.
pub(super) const MIN_DURATION: Duration = Duration::from_millis(1);
/// The longest: a day keeps every `Instant + duration` far from overflowing.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// `250ms`, `10s`, `5m`, `1h`, or a bare number of seconds; between 1 ms and 1 day.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = parse_unbounded(s)?;
    if !(MIN_DURATION..=MAX_DURATION).contains(&d) {
        return Err(format!("'{}' must be between 1ms and 24h", s.trim()));
    }
    Ok(d)
}

/// `500ms`, `10s`, `5m`, `1.5h`, a bare number of seconds, or parts of these in a row as Go
/// and Kubernetes write them (`1m30s`, `1h2m3.5s`).
pub(super) fn parse_unbounded(s: &str) -> Result<Duration, String> {
    let whole = s.trim();
    let not_a_duration = || format!("'{whole}' is not a duration (e.g. 500ms, 10s, 1m30s)");
    let mut rest = whole;
    let mut secs = 0.0;
    let mut parts = 0;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(split);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let n: f64 = num.parse().map_err(|_| not_a_duration())?;
        secs += match unit {
            "ms" => n / 1000.0,
            // A bare number only alone: `1m30` is a typo, not 90 seconds.
            "" if parts == 0 && next.is_empty() => n,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            "" => return Err(not_a_duration()),
            _ => {
                return Err(format!(
                    "unknown unit '{unit}' in '{whole}' (use ms, s, m or h)"
                ));
            }
        };
        parts += 1;
        rest = next;
    }
    if parts == 0 {
        return Err(not_a_duration());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("'{whole}' is out of range"))
}

/// A duration as it would be written on the command line (`1s`, `250ms`).
pub(super) fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
