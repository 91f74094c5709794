//! Named network namespaces (`ip netns add/del/exec`) and threads that work inside them.
//!
//! A namespace is created by a thread that `unshare`s its own network namespace and bind-mounts
//! it at `/run/netns/<name>`, exactly as iproute2 does, so `ip netns` and the agent see it.
//! Only dedicated threads ever enter a namespace; they never run anything else.

use std::fs::File;
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow, bail};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use rtnetlink::Handle;

/// Where named namespaces live.
pub const NETNS_DIR: &str = "/run/netns";

/// Path of a named namespace.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Make `/run/netns` a shared mount point, as `ip netns add` does, so namespaces created later
/// are visible in mount namespaces made by `ip netns exec`.
fn prepare_dir() -> Result<()> {
    std::fs::create_dir_all(NETNS_DIR).context("creating /run/netns")?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    if mount(None::<&str>, NETNS_DIR, Some("none"), shared, None::<&str>).is_err() {
        mount(
            Some(NETNS_DIR),
            NETNS_DIR,
            Some("none"),
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .context("bind-mounting /run/netns onto itself")?;
        mount(None::<&str>, NETNS_DIR, Some("none"), shared, None::<&str>)
            .context("making /run/netns shared")?;
    }
    Ok(())
}

/// Enter a named namespace on the current thread (`ip netns exec`, for this thread only).
pub fn enter(name: &str) -> Result<()> {
    enter_path(&path(name))
}

/// Enter the namespace behind a file (`/run/netns/X`, `/proc/PID/ns/net`) on this thread.
pub fn enter_path(p: &Path) -> Result<()> {
    let f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
    setns(&f, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering {}", p.display()))?;
    Ok(())
}

/// `ip netns del NAME`: unmount and remove; the namespace dies with its last user.
pub fn delete(name: &str) -> Result<()> {
    let p = path(name);
    let _ = umount2(&p, MntFlags::MNT_DETACH);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", p.display())),
    }
}

/// Inode of a namespace file; equal inodes are the same namespace.
pub fn inode(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.ino())
}

type Job = Box<dyn FnOnce(&tokio::runtime::Runtime, &Handle) + Send>;

/// A thread living inside one network namespace, with a current-thread tokio runtime and an
/// rtnetlink connection bound to that namespace. Jobs run one after another.
#[derive(Debug)]
pub struct NetnsThread {
    name: String,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl NetnsThread {
    /// Create the named namespace (`ip netns add NAME`) and a thread inside it.
    pub fn create(name: &str) -> Result<Self> {
        prepare_dir()?;
        let p = path(name);
        File::options()
            .write(true)
            .create_new(true)
            .open(&p)
            .with_context(|| format!("creating {}", p.display()))?;
        let owned = name.to_owned();
        Self::start(name, move || {
            unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &path(&owned),
                Some("none"),
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .with_context(|| format!("bind-mounting the new namespace at {owned}"))?;
            Ok(())
        })
        .inspect_err(|_| {
            let _ = delete(name);
        })
    }

    /// A thread inside an existing named namespace.
    pub fn join(name: &str) -> Result<Self> {
        Self::join_path(name, &path(name))
    }

    /// A thread inside the namespace behind a file; `label` names the thread.
    pub fn join_path(label: &str, p: &Path) -> Result<Self> {
        let owned = p.to_owned();
        Self::start(label, move || enter_path(&owned))
    }

    fn start(name: &str, setup: impl FnOnce() -> Result<()> + Send + 'static) -> Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn(move || {
                let started = setup().and_then(|()| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let handle = {
                        let _guard = rt.enter();
                        let (conn, handle, _) = rtnetlink::new_connection()?;
                        rt.spawn(conn);
                        handle
                    };
                    Ok((rt, handle))
                });
                match started {
                    Ok((rt, handle)) => {
                        let _ = ready_tx.send(Ok(()));
                        for job in jobs_rx {
                            job(&rt, &handle);
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .context("spawning a namespace thread")?;
        ready_rx
            .recv()
            .map_err(|_| anyhow!("namespace thread for {name} died"))??;
        Ok(NetnsThread {
            name: name.to_owned(),
            jobs: Some(jobs_tx),
            thread: Some(thread),
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run an async job with the namespace's rtnetlink handle and wait for its result.
    pub fn run<R, F, Fut>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(Handle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<R>>,
    {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |rt, handle| {
            let _ = tx.send(rt.block_on(f(handle.clone())));
        });
        self.jobs
            .as_ref()
            .ok_or_else(|| anyhow!("thread stopped"))?
            .send(job)
            .map_err(|_| anyhow!("namespace thread for {} died", self.name))?;
        rx.recv()
            .map_err(|_| anyhow!("namespace thread for {} died during a job", self.name))?
    }

    /// Run a blocking job on the thread (sockets, `/proc/sys` writes) and wait for its result.
    pub fn run_blocking<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce() -> Result<R> + Send + 'static,
    {
        self.run(|_| async move { f() })
    }

    /// Write a sysctl inside this namespace: `sysctl -w net.ipv4.conf.X.proxy_arp=1`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let file = Path::new("/proc/sys").join(key.replace('.', "/"));
        let value = value.to_owned();
        let key = key.to_owned();
        self.run_blocking(move || {
            std::fs::write(&file, &value).with_context(|| format!("sysctl {key}={value}"))
        })
    }

    /// Read a sysctl inside this namespace.
    pub fn read_sysctl(&self, key: &str) -> Result<String> {
        let file = Path::new("/proc/sys").join(key.replace('.', "/"));
        let key = key.to_owned();
        self.run_blocking(move || {
            Ok(std::fs::read_to_string(&file)
                .with_context(|| format!("reading sysctl {key}"))?
                .trim()
                .to_owned())
        })
    }

    /// Stop the thread, so it no longer holds the namespace.
    pub fn stop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for NetnsThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Run one async job in the namespace behind a file on a short-lived thread.
pub fn with_netns<R, F, Fut>(p: &Path, f: F) -> Result<R>
where
    R: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<R>>,
{
    NetnsThread::join_path("job", p)?.run(f)
}

/// Prefix of every namespace the simulated node creates: `pn<pid>x<n>-…`.
pub const NAME_PREFIX: &str = "pn";

/// Remove namespaces left behind by simulated nodes whose process died (killed test or demo),
/// and kill processes still running inside them (an orphaned agent). Namespaces of live
/// processes are left alone: tests run in parallel.
pub fn cleanup_leftovers() -> Result<usize> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Some(ino) = inode(&entry.path()) {
            kill_processes_in(ino);
        }
        delete(&name)?;
        removed += 1;
    }
    Ok(removed)
}

fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (pid, _) = rest.split_once('x')?;
    pid.parse().ok()
}

/// SIGKILL every process whose network namespace has this inode.
pub fn kill_processes_in(netns_inode: u64) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if inode(&p.path().join("ns/net")) == Some(netns_inode) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Fail unless running as root (namespaces need CAP_SYS_ADMIN).
pub fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the simulated node needs root (network namespaces)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parsing() {
        assert_eq!(owner_pid("pn123x4-node"), Some(123));
        assert_eq!(owner_pid("pn123-node"), None);
        assert_eq!(owner_pid("cni-1234"), None);
    }
}
