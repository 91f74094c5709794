//! Measurement helpers for the benchmarks: process CPU and memory from `/proc`, percentiles.

use std::time::Duration;

use anyhow::{Context, Result};

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Ok(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// The p-th percentile (0..=1) of a sorted slice, nearest-rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Milliseconds with three decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        assert!(status_kib(me, "VmRSS").unwrap() > 0);
        assert!(cpu_time(me).is_ok());
    }
}

/// Samples the resident set (`VmRSS`) of processes once a second until dropped: a reading at
/// one instant says little when a process has periodic peaks (re-syncs, GC, scrapes).
pub struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Vec<u64>>>>,
}

/// Mean and maximum of one process's samples, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct RssStats {
    /// Mean over the samples.
    pub mean_kib: f64,
    /// Largest sample.
    pub max_kib: u64,
    /// Number of samples.
    pub samples: usize,
}

impl RssSampler {
    /// Start sampling `pids` once `settle` has passed (so a start-up transient that the
    /// process gives back within seconds does not count as its steady state).
    pub fn start(pids: Vec<u32>, settle: Duration) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut out = vec![Vec::new(); pids.len()];
            let settled = std::time::Instant::now() + settle;
            while !flag.load(Ordering::Relaxed) && std::time::Instant::now() < settled {
                std::thread::sleep(Duration::from_millis(100));
            }
            while !flag.load(Ordering::Relaxed) {
                for (i, pid) in pids.iter().enumerate() {
                    if let Ok(kib) = status_kib(*pid, "VmRSS") {
                        out[i].push(kib);
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            out
        });
        RssSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop and summarise, one entry per pid in the order given to [`RssSampler::start`].
    pub fn finish(mut self) -> Vec<RssStats> {
        self.halt()
            .iter()
            .map(|s| RssStats {
                mean_kib: s.iter().sum::<u64>() as f64 / s.len().max(1) as f64,
                max_kib: s.iter().copied().max().unwrap_or(0),
                samples: s.len(),
            })
            .collect()
    }

    fn halt(&mut self) -> Vec<Vec<u64>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.halt();
    }
}
