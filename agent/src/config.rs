//! Command line and environment. Every flag has an environment variable; bad values are
//! reported in one line and exit code 2 (see `main.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{ColorChoice, Parser, ValueEnum};

/// podnet-agent: proves, continuously, that every pod on this node is wired into the network.
#[derive(Debug, Parser)]
#[command(name = "podnet-agent", version, color = ColorChoice::Never, max_term_width = 100)]
pub struct Args {
    /// Address to serve /metrics, /healthz, /readyz and /status on.
    #[arg(
        long,
        env = "PODNET_LISTEN",
        default_value = "0.0.0.0:9710",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,

    /// This node's name (the downward API sets NODE_NAME); defaults to the hostname.
    #[arg(long, env = "NODE_NAME", value_name = "NAME", value_parser = non_empty)]
    pub node_name: Option<String>,

    /// Name prefix of pods' host-side interfaces: `cali` for Calico, `eni` for AWS VPC CNI.
    #[arg(long, env = "PODNET_INTERFACE_PREFIX", default_value = "cali", value_name = "PREFIX",
          value_parser = interface_prefix)]
    pub interface_prefix: String,

    /// Full re-read of links, routes and settings, the safety net behind kernel events
    /// (e.g. 60s, 5m).
    #[arg(long, env = "PODNET_RESYNC_INTERVAL", default_value = "60s", value_name = "DURATION",
          value_parser = resync_interval)]
    pub resync_interval: Duration,

    /// Log filter, in tracing's EnvFilter syntax (e.g. `info`, `podnet_probe=debug`).
    #[arg(long, env = "PODNET_LOG", default_value = "info", value_name = "FILTER",
          value_parser = log_filter)]
    pub log_level: String,

    /// Log format.
    #[arg(
        long,
        env = "PODNET_LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn non_empty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_owned())
    }
}

fn interface_prefix(s: &str) -> Result<String, String> {
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

fn log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

fn resync_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}

/// `250ms`, `10s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 500ms, 10s, 5m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' in '{s}' (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("'{s}' is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        for bad in ["", "s", "10x", "-1s", "1e400s", "ten"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(resync_interval("100ms").is_err());
    }

    #[test]
    fn prefixes() {
        assert!(interface_prefix("cali").is_ok());
        assert!(interface_prefix("eni").is_ok());
        assert!(interface_prefix("").is_err());
        assert!(interface_prefix("a/b").is_err());
        assert!(interface_prefix("fifteen-chars-x").is_err());
    }

    #[test]
    fn defaults() {
        let a = Args::try_parse_from(["podnet-agent"]).unwrap();
        assert_eq!(a.listen.port(), 9710);
        assert_eq!(a.interface_prefix, "cali");
        assert_eq!(a.resync_interval, Duration::from_secs(60));
        assert_eq!(a.log_format, LogFormat::Text);
    }
}
