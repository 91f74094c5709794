//! The real `podnet-agent` binary, started inside a simulated node (`ip netns exec`), and an
//! HTTP client that talks to it from inside the same namespace.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub use podnet_kube_double::http_get;

use crate::exposition::Samples;
use crate::netns::NetnsThread;
use crate::simnode::SimNode;

/// Port the agent listens on inside the node namespace (each node has its own loopback).
pub const PORT: u16 = 9710;

/// Path of the agent binary for the tools (demo, benchmarks): `$PODNET_AGENT_BIN`, else next
/// to the running executable (`cargo build --release --workspace --bins` puts them side by
/// side). The agent's own integration tests do not search: they pass the binary Cargo built for
/// them (`env!("CARGO_BIN_EXE_podnet-agent")`) to [`Agent::start_binary`].
pub fn agent_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PODNET_AGENT_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("podnet-agent");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "podnet-agent binary not found near {}; build it (`cargo build -p podnet-agent`, \
         with --release for a release tool) and/or set PODNET_AGENT_BIN",
        exe.display()
    )
}

/// `setpriv` arguments that take `CAP_SYS_PTRACE` from the agent, as the base DaemonSet
/// does (no `hostPID`, no `SYS_PTRACE`): opening another root process's `/proc/<pid>/ns/net`
/// then fails, so the `/proc` fallback is off and pods are found in `/var/run/netns` only.
pub const BASE_PRIVILEGES: &[&str] =
    &["--bounding-set", "-sys_ptrace", "--inh-caps", "-sys_ptrace"];

/// The privileges the agent runs with in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privileges {
    /// The base DaemonSet's: the default for every test, so the suite proves the least
    /// privileged deployment works.
    Base,
    /// With `CAP_SYS_PTRACE` (the `deploy/proc-fallback` overlay): pods whose namespace is
    /// held only by a process are found through `/proc`.
    ProcFallback,
}

/// A running agent. Dropping it stops it (SIGTERM, then SIGKILL).
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    client: HttpClient,
    log: PathBuf,
}

impl Agent {
    /// Start the agent found by [`agent_binary`] in the node's namespace with extra flags.
    pub fn start(node: &SimNode, extra: &[&str]) -> Result<Self> {
        Self::start_binary(&agent_binary()?, node, extra)
    }

    /// Start the agent binary `bin` in the node's namespace with extra flags and the base
    /// DaemonSet's privileges ([`Privileges::Base`]: no `CAP_SYS_PTRACE`, so pods are found
    /// through `/var/run/netns` only). Logs go to a file printed when a wait fails.
    pub fn start_binary(bin: &Path, node: &SimNode, extra: &[&str]) -> Result<Self> {
        Self::start_with(bin, node, extra, Privileges::Base)
    }

    /// [`Agent::start_binary`] with the given privileges.
    pub fn start_with(
        bin: &Path,
        node: &SimNode,
        extra: &[&str],
        privileges: Privileges,
    ) -> Result<Self> {
        let log = std::env::temp_dir().join(format!("{}-agent.log", node.node_netns()));
        let log_file = std::fs::File::create(&log)?;
        let mut cmd = match privileges {
            // `setpriv` execs `ip`, which execs the agent: the child's pid is the agent's.
            Privileges::Base => {
                let mut c = Command::new("setpriv");
                c.args(BASE_PRIVILEGES).arg("ip");
                c
            }
            Privileges::ProcFallback => Command::new("ip"),
        };
        let child = cmd
            .args(["netns", "exec", node.node_netns()])
            .arg(bin)
            .args([
                "--listen",
                &format!("127.0.0.1:{PORT}"),
                "--node-name",
                "sim-node",
            ])
            .args(extra)
            .env(
                "PODNET_LOG",
                std::env::var("PODNET_TEST_LOG").unwrap_or("info,podnet_probe=debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {} in {}", bin.display(), node.node_netns()))?;
        let client = HttpClient::new(node.node_netns(), PORT)?;
        let mut agent = Agent {
            child: Some(child),
            client,
            log,
        };
        agent.wait_ready(Duration::from_secs(30))?;
        Ok(agent)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "agent exited with {status} before ready:\n{}",
                    self.log_tail()
                );
            }
            if matches!(self.client.get("/readyz"), Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("agent not ready after {timeout:?}:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The agent's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// GET a path: `(status, body)`.
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        self.client.get(path)
    }

    /// Scrape `/metrics`.
    pub fn metrics(&self) -> Result<Samples> {
        let (code, body) = self.get("/metrics")?;
        if code != 200 {
            bail!("/metrics returned {code}");
        }
        Ok(Samples::parse(&body))
    }

    /// The pods in `/status`, as `namespace/name`.
    pub fn listed_pods(&self) -> Result<std::collections::BTreeSet<String>> {
        let status = self.status()?;
        let pods = status["pods"]
            .as_array()
            .context("/status has no pods array")?;
        Ok(pods
            .iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p["namespace"].as_str().unwrap_or_default(),
                    p["pod"].as_str().unwrap_or_default()
                )
            })
            .collect())
    }

    /// Fetch `/status`.
    pub fn status(&self) -> Result<serde_json::Value> {
        let (code, body) = self.get("/status")?;
        if code != 200 {
            bail!("/status returned {code}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// Poll `/metrics` until `pred` holds; on timeout fail with the last scrape and the log.
    pub fn wait_metrics(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Samples) -> bool,
    ) -> Result<Samples> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            match self.metrics() {
                Ok(m) if pred(&m) => return Ok(m),
                Ok(m) => last = Some(m),
                Err(_) => {}
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}\nlast problems: {:?}\n{}",
                    last.map(|m| m.problems()),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Poll `/status` until `pred` holds; on timeout fail with the last pods and the log.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        let mut last = serde_json::Value::Null;
        loop {
            if let Ok(s) = self.status() {
                if pred(&s) {
                    return Ok(s);
                }
                last = s;
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}; last status:\n{}\n{}",
                    serde_json::to_string_pretty(&last["pods"]).unwrap_or_default(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Poll `f` (anything the agent causes outside itself: the API double's store, a
    /// namespace) until it yields; on timeout fail with the log.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut() -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of the agent's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(40);
        format!(
            "--- agent log (last {} lines) ---\n{}",
            lines.len() - from,
            lines[from..].join("\n")
        )
    }

    /// The whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stop with SIGTERM and wait; returns the exit code (None if killed by a signal).
    pub fn stop(&mut self) -> Result<Option<i32>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                child.wait()?;
                bail!("agent ignored SIGTERM for 10s:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() && std::env::var_os("PODNET_KEEP_LOG").is_none() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A minimal HTTP/1.1 client living on a thread inside a namespace.
#[derive(Debug)]
pub struct HttpClient {
    thread: NetnsThread,
    addr: SocketAddr,
}

impl HttpClient {
    /// A client for `127.0.0.1:port` inside namespace `netns`.
    pub fn new(netns: &str, port: u16) -> Result<Self> {
        Ok(HttpClient {
            thread: NetnsThread::join(netns)?,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    /// GET a path: `(status, body)`.
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        let addr = self.addr;
        let path = path.to_owned();
        self.thread.run_blocking(move || http_get(addr, &path))
    }
}
