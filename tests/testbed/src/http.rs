//! A plain HTTP/1.1 server for the test bed, in a namespace the test created: `/fail…`
//! answers 503, every other path 200. On a port an HTTPS probe uses it stands for a server
//! that does not speak TLS (the handshake fails).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;

use crate::netns::NetnsThread;

/// The running server; stopped on drop.
#[derive(Debug)]
pub struct HttpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serve on `addr`, bound inside `ns`.
    pub fn start(ns: &NetnsThread, addr: SocketAddr) -> Result<Self> {
        let listener = ns.run_blocking(move || {
            let l = TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || serve(&listener, &flag));
        Ok(HttpServer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: &TcpListener, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut conn, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        // Until the end of the head; not waiting for one from a client that is not speaking
        // HTTP (a TLS ClientHello): the server is serial, a wait would delay the others.
        while head.len() < 8192
            && (head.is_empty() || head.starts_with(b"GET "))
            && !head.windows(4).any(|w| w == b"\r\n\r\n")
        {
            match conn.read(&mut buf) {
                Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        let status = if head.starts_with(b"GET /fail") {
            "503 Service Unavailable"
        } else {
            "200 OK"
        };
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
}
