//! A Kong Admin API double in a pod's namespace: `GET /status` answers the JSON a Kong in DB
//! mode or DB-less mode gives, over plain HTTP (Kong's default 8001) or TLS with a fresh
//! self-signed certificate (8444, `http2 ssl`, the only admin listen of Kong's Helm chart with
//! its ingress controller). One OS thread in the namespace, until dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio_rustls::rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::connects::PodThread;

/// Kong's hash of an empty DB-less configuration (`DECLARATIVE_EMPTY_CONFIG_HASH`).
pub const EMPTY_CONFIG_HASH: &str = "00000000000000000000000000000000";

/// Kong's `/status` in DB mode.
pub fn db_status(reachable: bool) -> String {
    format!(
        r#"{{"database":{{"reachable":{reachable}}},"memory":{{"workers_lua_vms":[]}},"server":{{"connections_accepted":7,"connections_active":1,"connections_handled":7,"connections_reading":0,"connections_waiting":0,"connections_writing":1,"total_requests":7}}}}"#
    )
}

/// Kong's `/status` in DB-less mode: no `database`; `configuration_hash` as given (`None`:
/// left out, as before Kong loaded any configuration).
pub fn dbless_status(hash: Option<&str>) -> String {
    let hash = hash.map_or_else(String::new, |h| format!(r#""configuration_hash":"{h}","#));
    format!(
        r#"{{{hash}"memory":{{"workers_lua_vms":[]}},"server":{{"connections_accepted":3,"connections_active":1,"connections_handled":3,"connections_reading":0,"connections_waiting":0,"connections_writing":1,"total_requests":3}}}}"#
    )
}

/// A DB-mode double on 127.0.0.1:8001 whose `database.reachable` is `reachable` at the time.
pub fn kong_admin(netns_name: &str, reachable: Arc<AtomicBool>) -> Result<PodThread> {
    serve(netns_name, 8001, None, move || {
        db_status(reachable.load(Ordering::Relaxed))
    })
}

/// A double on 127.0.0.1:8444 over TLS answering `status` (changeable while it runs).
pub fn kong_admin_tls(netns_name: &str, status: Arc<Mutex<String>>) -> Result<PodThread> {
    let tls = crate::podserver::server_config("kong-admin")?;
    serve(netns_name, 8444, Some(tls), move || {
        status.lock().map(|s| s.clone()).unwrap_or_default()
    })
}

/// Listen on 127.0.0.1:`port` in the namespace (its loopback set up); listening on return.
fn serve(
    netns_name: &str,
    port: u16,
    tls: Option<Arc<ServerConfig>>,
    status: impl Fn() -> String + Send + 'static,
) -> Result<PodThread> {
    let up = std::process::Command::new("ip")
        .args(["netns", "exec", netns_name, "ip", "link", "set", "lo", "up"])
        .status()?;
    anyhow::ensure!(up.success(), "ip link set lo up in {netns_name}");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    crate::connects::listen(netns_name, addr, move |l, stop| {
        while !stop.load(Ordering::Relaxed) {
            let Ok((c, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let _ = answer(c, tls.as_ref(), &status());
        }
    })
}

/// Answer `body` as `/status` to whatever is asked, then close (with TLS's close_notify, as
/// nginx does).
fn answer(c: TcpStream, tls: Option<&Arc<ServerConfig>>, body: &str) -> std::io::Result<()> {
    c.set_nonblocking(false)?;
    c.set_read_timeout(Some(Duration::from_millis(500)))?;
    c.set_write_timeout(Some(Duration::from_millis(500)))?;
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    match tls {
        None => respond(c, &answer),
        Some(config) => {
            let conn = ServerConnection::new(Arc::clone(config)).map_err(std::io::Error::other)?;
            let mut s = StreamOwned::new(conn, c);
            respond(&mut s, &answer)?;
            s.conn.send_close_notify();
            s.flush()
        }
    }
}

/// Read the request's head (whatever it asks; bounded), then write `answer`.
fn respond(mut s: impl Read + Write, answer: &str) -> std::io::Result<()> {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    s.write_all(answer.as_bytes())
}
