//! Alertmanager's webhook receiver: what Alertmanager notified, and when.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::netns::NetnsThread;

/// One webhook notification from Alertmanager, with the time it arrived.
#[derive(Debug, Clone)]
pub struct Notification {
    /// When it arrived.
    pub at: Instant,
    /// The JSON body Alertmanager posted.
    pub body: Value,
}

impl Notification {
    /// Every alert in it (each with its own `status`).
    pub fn alerts(&self) -> impl Iterator<Item = &Value> {
        self.body["alerts"].as_array().into_iter().flatten()
    }
}

/// A `TcpListener` bound inside the node's namespace, served by a dedicated thread inside
/// that namespace until dropped.
#[derive(Debug)]
pub struct Webhook {
    received: Arc<Mutex<Vec<Notification>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Webhook {
    /// Listen on `127.0.0.1:port` inside `netns`.
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

    /// Every notification so far, oldest first.
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

fn serve(
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
fn read_request(mut s: TcpStream) -> Result<Vec<u8>> {
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
