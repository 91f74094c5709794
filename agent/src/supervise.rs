//! Workers under supervision: every long-running task is spawned here with a [`WorkerGuard`]
//! so `/healthz` and `podnet_worker_up` see it stop or panic; the test-only fault hook; and
//! the shutdown deadline.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::str::FromStr;
use std::task::Poll;
use std::time::Duration;

use podnet_probe::model::{Fault, WorkerGuard, Workers};
use tokio::task::JoinHandle;
use tracing::{error, warn};

/// After SIGTERM, the agent exits within this even if a worker does not stop.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);
/// A watchdog thread ends the process this long after the deadline, should the runtime itself
/// be stuck (a worker blocking its only thread).
const WATCHDOG_GRACE: Duration = Duration::from_secs(2);
/// An injected fault strikes this long after start (the agent is ready by then in tests).
const FAULT_AFTER: Duration = Duration::from_secs(1);

/// `--test-fault`: `kill:<worker>` (panic) or `hang:<worker>` (stop working, ignore shutdown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestFault {
    /// Which worker.
    pub worker: String,
    /// What it does.
    pub fault: Fault,
}

impl FromStr for TestFault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, worker) = s
            .split_once(':')
            .ok_or("expected kill:<worker> or hang:<worker>")?;
        let fault = match kind {
            "kill" => Fault::Kill,
            "hang" => Fault::Hang,
            _ => return Err(format!("unknown fault '{kind}' (kill or hang)")),
        };
        if worker.is_empty() || worker.len() > 32 {
            return Err("the worker name must be 1 to 32 characters".into());
        }
        Ok(TestFault {
            worker: worker.to_owned(),
            fault,
        })
    }
}

/// Spawn worker `name`: `make` receives its guard and returns the worker's future, which
/// must keep the guard as long as it runs. A panic inside is caught at the task boundary and
/// recorded before anything else can observe the worker (tokio would drop the future, and
/// with it the guard, only after catching the panic), then re-raised for whoever joins.
pub fn spawn_worker<F, Fut>(workers: &Workers, name: &'static str, make: F) -> JoinHandle<()>
where
    F: FnOnce(WorkerGuard) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let fault = workers.fault(name);
    let work = make(workers.register(name));
    let workers = workers.clone();
    tokio::spawn(async move {
        let injected = async {
            match fault {
                Some(f) => {
                    tokio::time::sleep(FAULT_AFTER).await;
                    f
                }
                None => std::future::pending().await,
            }
        };
        let run = async {
            tokio::select! {
                () = work => {}
                f = injected => match f {
                    Fault::Kill => panic!("injected fault: kill:{name}"),
                    Fault::Hang => {
                        warn!(worker = name, "injected fault: this worker stops and ignores shutdown");
                        std::future::pending::<()>().await;
                    }
                },
            }
        };
        let mut run = std::pin::pin!(run);
        let outcome = std::future::poll_fn(|cx| {
            match std::panic::catch_unwind(AssertUnwindSafe(|| run.as_mut().poll(cx))) {
                Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
                Ok(Poll::Pending) => Poll::Pending,
                Err(panic) => Poll::Ready(Err(panic)),
            }
        })
        .await;
        if let Err(panic) = outcome {
            error!(worker = name, "worker panicked; /healthz fails from now on");
            workers.mark_panicked(name);
            std::panic::resume_unwind(panic);
        }
    })
}

/// A task already spawned elsewhere (an HTTP accept loop), watched as worker `name`. An
/// injected `kill` aborts it (`hang` is not supported here).
pub fn watch_task(workers: &Workers, name: &'static str, task: JoinHandle<()>) -> JoinHandle<()> {
    let guard = workers.register(name);
    let fault = workers.fault(name);
    let workers = workers.clone();
    tokio::spawn(async move {
        let mut task = task;
        let result = if fault == Some(Fault::Kill) {
            // A task spawned elsewhere cannot be made to panic from here: stop it, then
            // panic in its place.
            tokio::select! {
                r = &mut task => r,
                () = tokio::time::sleep(FAULT_AFTER) => {
                    task.abort();
                    workers.mark_panicked(name);
                    panic!("injected fault: kill:{name}");
                }
            }
        } else {
            task.await
        };
        if let Err(e) = result
            && e.is_panic()
        {
            error!(worker = name, "worker panicked; /healthz fails from now on");
            workers.mark_panicked(name);
            drop(guard);
            std::panic::resume_unwind(e.into_panic());
        }
        drop(guard);
    })
}

/// After the stop signal: make sure the process ends even if the runtime cannot.
pub fn start_watchdog() {
    let spawned = std::thread::Builder::new()
        .name("podnet-watchdog".into())
        .spawn(|| {
            std::thread::sleep(SHUTDOWN_DEADLINE + WATCHDOG_GRACE);
            error!("shutdown watchdog: the runtime did not stop; exiting");
            eprintln!("podnet-agent: shutdown watchdog: the runtime did not stop; exiting");
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        error!(error = %e, "cannot start the shutdown watchdog");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs() {
        assert_eq!(
            "kill:prober".parse(),
            Ok(TestFault {
                worker: "prober".into(),
                fault: Fault::Kill
            })
        );
        assert_eq!(
            "hang:monitor".parse::<TestFault>().map(|f| f.fault),
            Ok(Fault::Hang)
        );
        for bad in ["", "kill", "kill:", "boom:monitor"] {
            assert!(bad.parse::<TestFault>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_killed_worker_is_recorded_as_panicked() {
        let workers = Workers::default();
        workers.inject_fault("w", Fault::Kill);
        let t = spawn_worker(&workers, "w", |g| async move {
            let _g = g;
            std::future::pending::<()>().await;
        });
        let ok = spawn_worker(&workers, "ok", |g| async move {
            let _g = g;
        });
        assert!(t.await.unwrap_err().is_panic());
        ok.await.unwrap();
        assert_eq!(
            workers.problems(std::time::Instant::now()),
            ["ok: stopped", "w: panicked"]
        );
    }

    #[tokio::test]
    async fn a_watched_task_that_panics_is_recorded() {
        let workers = Workers::default();
        let inner = tokio::spawn(async { panic!("accept loop bug") });
        let watched = watch_task(&workers, "http", inner);
        assert!(watched.await.unwrap_err().is_panic());
        assert_eq!(
            workers.problems(std::time::Instant::now()),
            ["http: panicked"]
        );
    }
}
