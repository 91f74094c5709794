//! The processes the alerting tests start (Prometheus, Alertmanager, recorded agents) and the
//! temporary directory that holds their configuration, data and logs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

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

/// A temporary directory, removed on drop (kept on a failure with `PODNET_KEEP_LOG` set).
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory, distinct for every call in this process (tests of one binary
    /// run in parallel).
    pub fn new() -> Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "podnet-alerting-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }

    /// `name` inside the directory.
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

/// A process started inside a namespace (`ip netns exec`), its output in `<dir>/<name>.log`;
/// stopped on drop: SIGTERM, then SIGKILL after 10 s.
#[derive(Debug)]
pub struct Daemon {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// `ip netns exec NETNS BIN ARGS…`.
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

    /// The last 25 lines of its output, for a failure message.
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
