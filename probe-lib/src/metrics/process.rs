//! The standard `process_*` metrics, read from `/proc/self` at scrape time, so limits can be
//! tuned from what the agent really uses.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`,
/// `process_max_fds`, `process_start_time_seconds`.
#[derive(Debug, Default)]
pub(super) struct ProcessCollector;

/// Fields of `/proc/self/stat` after the command name: (utime+stime ticks, start ticks, RSS pages).
fn stat() -> Option<(f64, f64, f64)> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    Some((num(11)? + num(12)?, num(19)?, num(21)?))
}

/// The soft limit on open files (`ulimit -n`), from `/proc/self/limits`; `None` when unlimited.
fn max_fds() -> Option<i64> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    max_fds_from(&s)
}

/// `Max open files            1024                 524288               files`
fn max_fds_from(limits: &str) -> Option<i64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

fn boot_time() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some((cpu, start, rss_pages)) = stat() else {
            return Ok(());
        };
        let e = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(cpu / TICKS).encode(e)?;
        let e = encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(rss_pages * 4096.0).encode(e)?;
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            let e = encoder.encode_descriptor(
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(fds.count() as i64).encode(e)?;
        }
        if let Some(max) = max_fds() {
            let e = encoder.encode_descriptor(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(max).encode(e)?;
        }
        if let Some(boot) = boot_time() {
            let e = encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(boot + start / TICKS).encode(e)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::max_fds_from;

    #[test]
    fn max_fds_is_the_soft_limit_and_unlimited_is_none() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             63472                63472                processes\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_fds_from(limits), Some(1024));
        assert_eq!(
            max_fds_from(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
        assert_eq!(max_fds_from("garbage"), None);
    }
}
