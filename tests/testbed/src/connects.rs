//! TCP peers inside pod namespaces for the unanswered-connect tests: a client that keeps
//! connecting to fixed destinations (a proxy with stale upstreams) and a server that accepts.
//! Each runs on its own OS thread, entered into the pod's namespace, until dropped.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::netns;

/// A thread inside a pod's namespace, stopped and joined on drop.
#[derive(Debug)]
pub struct PodThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PodThread {
    /// Run `body` on a new thread inside namespace `netns_name`; it should return soon after
    /// the flag it is given is set.
    pub fn spawn(netns_name: &str, body: impl FnOnce(&AtomicBool) + Send + 'static) -> PodThread {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let name = netns_name.to_owned();
        let thread = std::thread::spawn(move || {
            netns::enter(&name).expect("entering the pod's namespace");
            body(&flag);
        });
        PodThread {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PodThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A client in a pod's namespace that opens a non-blocking connect to each destination every
/// 300 ms and closes it after 3 s, as a proxy with a stale upstream keeps doing: a destination
/// that never answers always has sockets in `SYN_SENT` that retransmitted their SYN.
pub fn keep_connecting(netns_name: &str, dests: Vec<SocketAddr>) -> PodThread {
    PodThread::spawn(netns_name, move |stop| {
        let mut open: VecDeque<(Instant, socket2::Socket)> = VecDeque::new();
        while !stop.load(Ordering::Relaxed) {
            for d in &dests {
                let Ok(s) = socket2::Socket::new(
                    socket2::Domain::for_address(*d),
                    socket2::Type::STREAM,
                    None,
                ) else {
                    continue;
                };
                if s.set_nonblocking(true).is_ok() {
                    let _ = s.connect(&(*d).into());
                    open.push_back((Instant::now(), s));
                }
            }
            while open
                .front()
                .is_some_and(|(t, _)| t.elapsed() > Duration::from_secs(3))
            {
                open.pop_front();
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    })
}

/// A TCP server in a pod's namespace that accepts and closes every connection; listening
/// when this returns.
pub fn accept(netns_name: &str, addr: SocketAddr) -> Result<PodThread> {
    listen(netns_name, addr, |l, stop| {
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((c, _)) => drop(c),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

/// A thread in a pod's namespace that binds a non-blocking listener on `addr`, then runs
/// `serve` with it until stopped; listening when this returns (a bind error is returned).
pub fn listen(
    netns_name: &str,
    addr: SocketAddr,
    serve: impl FnOnce(TcpListener, &AtomicBool) + Send + 'static,
) -> Result<PodThread> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let t = PodThread::spawn(netns_name, move |stop| {
        match TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
            Ok(l) => {
                let _ = ready_tx.send(Ok(()));
                serve(l, stop);
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        }
    });
    ready_rx
        .recv()
        .context("the server thread ended")?
        .with_context(|| format!("listening on {addr} in {netns_name}"))?;
    Ok(t)
}
