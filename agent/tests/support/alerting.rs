//! Shared by the alerting tests: the real Prometheus and Alertmanager as processes inside a
//! simulated node's namespace, a webhook receiver, the shipped rules with short `for:`s.
#![allow(dead_code)] // each test binary uses its own part

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use podnet_testbed::netns::NetnsThread;
use serde_json::Value;

/// The `for:` of every rule in the tests' copy of the rules.
pub const TEST_FOR: &str = "2s";

pub fn rules_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/podnet-rules.yaml")
}

/// An executable on `PATH`, or a failure that says how to get it (never a skip).
pub fn require(name: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` (Debian package {package}) is not on PATH: this test needs the real \
                 Prometheus and Alertmanager. Install them with `apt-get install prometheus \
                 prometheus-alertmanager` (.ci/run does)"
            )
        })
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Result<Self> {
        let p = std::env::temp_dir().join(format!("podnet-alerting-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("PODNET_KEEP_LOG").is_some() {
            eprintln!("keeping {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process started inside a namespace (`ip netns exec`), stopped on drop: SIGTERM, then
/// SIGKILL after 10 s.
pub struct Daemon {
    pub name: &'static str,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(
        netns: &str,
        name: &'static str,
        bin: &Path,
        args: &[String],
        dir: &TempDir,
    ) -> Result<Self> {
        let log = dir.path(&format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name} in {netns}"))?;
        Ok(Daemon {
            name,
            child: Some(child),
            log,
        })
    }

    /// Fail if it has exited.
    pub fn check(&mut self) -> Result<()> {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            bail!("{} exited with {status}", self.name);
        }
        Ok(())
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(25);
        format!(
            "--- {} log (last lines) ---\n{}",
            self.name,
            lines[from..].join("\n")
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// One webhook notification from Alertmanager, with the time it arrived.
#[derive(Debug, Clone)]
pub struct Notification {
    pub at: Instant,
    pub body: Value,
}

impl Notification {
    /// Every alert in it (each with its own `status`).
    pub fn alerts(&self) -> impl Iterator<Item = &Value> {
        self.body["alerts"].as_array().into_iter().flatten()
    }
}

/// Alertmanager's webhook receiver: a `TcpListener` bound inside the node's namespace, served
/// by a dedicated thread inside that namespace until dropped.
pub struct Webhook {
    pub received: Arc<Mutex<Vec<Notification>>>,
    pub stop: Arc<AtomicBool>,
    pub thread: Option<JoinHandle<Result<()>>>,
}

impl Webhook {
    pub fn start(netns: &str, port: u16) -> Result<Self> {
        let ns = NetnsThread::join(netns)?;
        let listener = ns.run_blocking(move || {
            let l = TcpListener::bind(("127.0.0.1", port))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (Arc::clone(&received), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("webhook".into())
            .spawn(move || ns.run_blocking(move || serve(&listener, &r, &s)))?;
        Ok(Webhook {
            received,
            stop,
            thread: Some(thread),
        })
    }

    pub fn received(&self) -> Vec<Notification> {
        self.received.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Fail if the receiver thread died (a malformed request, an I/O error).
    pub fn check(&mut self) -> Result<()> {
        if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
            let t = self.thread.take().ok_or_else(|| anyhow!("no thread"))?;
            t.join()
                .map_err(|_| anyhow!("webhook thread panicked"))?
                .context("webhook receiver")?;
            bail!("webhook receiver stopped");
        }
        Ok(())
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn serve(
    listener: &TcpListener,
    received: &Mutex<Vec<Notification>>,
    stop: &AtomicBool,
) -> Result<()> {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let body = read_request(stream)?;
                let body: Value =
                    serde_json::from_slice(&body).context("webhook body is not JSON")?;
                received
                    .lock()
                    .map_err(|_| anyhow!("poisoned"))?
                    .push(Notification {
                        at: Instant::now(),
                        body,
                    });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Read one HTTP/1.1 POST (headers, then `Content-Length` bytes), answer 200 and close.
pub fn read_request(mut s: TcpStream) -> Result<Vec<u8>> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed inside the request headers");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .ok_or_else(|| anyhow!("no Content-Length in {head:?}"))?
        .trim()
        .parse()?;
    while buf.len() < header_end + len {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed inside the body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    Ok(buf[header_end..header_end + len].to_vec())
}

/// The shipped rules with every `for:` set to [`TEST_FOR`].
pub fn test_rules() -> Result<String> {
    let shipped = std::fs::read_to_string(rules_file()).context("reading the shipped rules")?;
    let mut changed = 0;
    let mut out = String::new();
    for line in shipped.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        if line.trim_start().starts_with("for: ") {
            out.push_str(&format!("{indent}for: {TEST_FOR}\n"));
            changed += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let alerts = shipped.matches("- alert: ").count();
    if changed != alerts {
        bail!("shortened {changed} `for:` lines, but the rules have {alerts} alerts");
    }
    Ok(out)
}
