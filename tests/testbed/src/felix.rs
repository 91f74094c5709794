//! A felix double: calico-node's health and Prometheus endpoints on the simulated node's
//! loopback, answering in the real formats (`libcalico-go/lib/health`: 204 with no body when
//! healthy and no detail is asked, 503 with the component table when not; the metrics as a
//! Prometheus text exposition), with the state a test sets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::netns;

/// What the double reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FelixState {
    /// `/readiness` and `/liveness` answer 204 (true) or 503 (false).
    pub ready: bool,
    /// `felix_active_local_endpoints`.
    pub active_local_endpoints: u64,
    /// `felix_resync_state`.
    pub resync_state: u8,
}

impl Default for FelixState {
    fn default() -> Self {
        FelixState {
            ready: true,
            active_local_endpoints: 0,
            resync_state: 3,
        }
    }
}

/// A running felix double; dropping it stops both listeners.
#[derive(Debug)]
pub struct FelixDouble {
    state: Arc<Mutex<FelixState>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// The health endpoint.
    pub health: SocketAddr,
    /// The metrics endpoint.
    pub metrics: SocketAddr,
}

impl FelixDouble {
    /// Listen in namespace `ns` on loopback ports `health` and `metrics` (0: any free port).
    pub fn start(ns: &str, health: u16, metrics: u16) -> Result<Self> {
        let state = Arc::new(Mutex::new(FelixState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut d = FelixDouble {
            state,
            stop,
            threads: Vec::new(),
            health: SocketAddr::from(([127, 0, 0, 1], health)),
            metrics: SocketAddr::from(([127, 0, 0, 1], metrics)),
        };
        d.health = d.listen(ns, health, false)?;
        d.metrics = d.listen(ns, metrics, true)?;
        Ok(d)
    }

    /// Change what the double reports.
    pub fn set(&self, f: impl FnOnce(&mut FelixState)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn listen(&mut self, ns: &str, port: u16, metrics: bool) -> Result<SocketAddr> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (state, stop, ns) = (self.state.clone(), self.stop.clone(), ns.to_owned());
        let t = std::thread::spawn(move || {
            let bound = netns::enter(&ns).and_then(|()| {
                let l = TcpListener::bind(("127.0.0.1", port))?;
                l.set_nonblocking(true)?;
                Ok(l)
            });
            let l = match bound {
                Ok(l) => {
                    let _ = tx.send(l.local_addr().map_err(anyhow::Error::from));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let st = state.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        let _ = answer(s, &st, metrics);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        self.threads.push(t);
        rx.recv().context("felix double thread")?
    }
}

impl Drop for FelixDouble {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn answer(mut s: TcpStream, st: &FelixState, metrics: bool) -> Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf)?;
    let req = String::from_utf8_lossy(&buf[..n]);
    let path = req.split_whitespace().nth(1).unwrap_or("");
    let resp = match (metrics, path) {
        (true, "/metrics") => {
            let body = format!(
                "# HELP felix_active_local_endpoints Number of active endpoints on this host.\n\
                 # TYPE felix_active_local_endpoints gauge\n\
                 felix_active_local_endpoints {}\n\
                 # HELP felix_resync_state Current datastore state.\n\
                 # TYPE felix_resync_state gauge\n\
                 felix_resync_state {}\n",
                st.active_local_endpoints, st.resync_state
            );
            format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        }
        (false, "/readiness" | "/liveness") if st.ready => {
            "HTTP/1.0 204 No Content\r\n\r\n".to_owned()
        }
        (false, "/readiness" | "/liveness") => {
            let body = "+------------------+---------+----------------+-----------------+--------+\n\
                        |    COMPONENT     | TIMEOUT |    LIVENESS    |    READINESS    | DETAIL |\n\
                        +------------------+---------+----------------+-----------------+--------+\n\
                        | CalculationGraph | 30s     | reporting live | reporting non-ready |        |\n\
                        +------------------+---------+----------------+-----------------+--------+\n";
            format!(
                "HTTP/1.0 503 Service Unavailable\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        }
        _ => "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(),
    };
    s.write_all(resp.as_bytes())?;
    Ok(())
}
