//! The real agent as a bare child process in a simulated node, for tests that need what
//! [`crate::agent::Agent`] does not offer: a wrapper command (e.g. `setpriv` to drop
//! capabilities), their own `--listen` (TLS, a routable address), readiness read on the
//! loopback status listener.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::agent::HttpClient;
use crate::simnode::SimNode;

/// The agent's default `--status-listen` port (on the node namespace's loopback).
pub const STATUS_PORT: u16 = 9711;

/// A running agent; killed (and its log removed unless the test failed) on drop.
#[derive(Debug)]
pub struct AgentProc {
    child: Child,
    log: PathBuf,
}

impl AgentProc {
    /// Run `wrapper… ip netns exec NODE <bin> --node-name sim-node args…` and wait until
    /// `/readyz` answers 200 on the status listener (which the caller must leave on). `bin` is
    /// the agent binary (`env!("CARGO_BIN_EXE_podnet-agent")` in the agent's own tests).
    pub fn start(bin: &Path, node: &SimNode, wrapper: &[&str], args: &[&str]) -> Result<Self> {
        let log = std::env::temp_dir().join(format!("{}-agent-proc.log", node.node_netns()));
        let file = std::fs::File::create(&log)?;
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg("ip");
                c
            }
            None => Command::new("ip"),
        };
        let child = cmd
            .args(["netns", "exec", node.node_netns()])
            .arg(bin)
            .args(["--node-name", "sim-node"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting the agent")?;
        let mut agent = AgentProc { child, log };
        let client = HttpClient::new(node.node_netns(), STATUS_PORT)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(client.get("/readyz"), Ok((200, _))) {
            if let Some(status) = agent.child.try_wait()? {
                bail!("agent exited with {status}:\n{}", agent.log());
            }
            if Instant::now() > deadline {
                bail!("agent not ready:\n{}", agent.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(agent)
    }

    /// The agent's process id (the wrappers exec it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident set so far (`VmHWM`), KiB; 0 if unreadable.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_field("VmHWM:")
            .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// A field of `/proc/PID/status`, trimmed.
    pub fn status_field(&self, name: &str) -> Option<String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
