//! A small blocking HTTP/1.1 client for tests of the double (and the test bed's agent driver):
//! plain and JSON GETs, and streaming watches read event by event from a chunked response.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

/// `GET path`, parsing the body as JSON: `(status, body)`.
pub fn get_json(addr: SocketAddr, path: &str) -> Result<(u16, Value)> {
    let (code, body) = http_get(addr, path)?;
    let v = serde_json::from_str(&body).with_context(|| format!("non-JSON body: {body:?}"))?;
    Ok((code, v))
}

/// One `GET` with `Connection: close`.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    http_get_accept(addr, path, "*/*")
}

/// `GET path` with this `Accept` header, parsing the body as JSON: `(status, body)`.
pub fn get_json_accept(addr: SocketAddr, path: &str, accept: &str) -> Result<(u16, Value)> {
    let (code, body) = http_get_accept(addr, path, accept)?;
    let v = serde_json::from_str(&body).with_context(|| format!("non-JSON body: {body:?}"))?;
    Ok((code, v))
}

/// One `GET` with `Connection: close` and this `Accept` header.
pub fn http_get_accept(addr: SocketAddr, path: &str, accept: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw).context("non-UTF-8 response")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("no status code in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok((code, body))
}

fn dechunk(mut s: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").ok_or_else(|| anyhow!("bad chunk"))?;
        let n = usize::from_str_radix(size.trim(), 16)?;
        if n == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..n).ok_or_else(|| anyhow!("short chunk"))?);
        s = rest.get(n + 2..).ok_or_else(|| anyhow!("short chunk"))?;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    ChunkSize,
    ChunkData(usize),
    ChunkEnd,
    Trailer,
    Fixed(usize),
    UntilEof,
    Done,
}

/// An open streaming response (a watch), read one newline-delimited JSON value at a time.
#[derive(Debug)]
pub struct WatchStream {
    socket: TcpStream,
    status: u16,
    head: String,
    raw: Vec<u8>,
    body: Vec<u8>,
    framing: Framing,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl WatchStream {
    /// Send `GET path` and read the response head.
    pub fn open(addr: SocketAddr, path: &str) -> Result<Self> {
        Self::open_accept(addr, path, "application/json")
    }

    /// Send `GET path` with this `Accept` header and read the response head.
    pub fn open_accept(addr: SocketAddr, path: &str, accept: &str) -> Result<Self> {
        let mut socket = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr}"))?;
        write!(
            socket,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\n\
             Authorization: Bearer podnet-test-token\r\nConnection: close\r\n\r\n"
        )?;
        let mut s = WatchStream {
            socket,
            status: 0,
            head: String::new(),
            raw: Vec::new(),
            body: Vec::new(),
            framing: Framing::UntilEof,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let end = loop {
            if let Some(i) = find(&s.raw, b"\r\n\r\n") {
                break i;
            }
            if !s.fill(deadline)? {
                bail!("connection closed before the response head");
            }
        };
        s.head = String::from_utf8_lossy(&s.raw[..end]).into_owned();
        s.raw.drain(..end + 4);
        s.status = s
            .head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow!("no status in {:?}", s.head))?;
        let header = |name: &str| {
            s.head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        s.framing = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            Framing::ChunkSize
        } else if let Some(n) = header("content-length").and_then(|v| v.parse().ok()) {
            Framing::Fixed(n)
        } else {
            Framing::UntilEof
        };
        s.decode()?;
        Ok(s)
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The response head (status line and headers).
    pub fn head(&self) -> &str {
        &self.head
    }

    /// Read more bytes; false at EOF. Fails when `deadline` passes first.
    fn fill(&mut self, deadline: Instant) -> Result<bool> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("timed out");
        }
        self.socket.set_read_timeout(Some(left))?;
        let mut buf = [0u8; 16384];
        match self.socket.read(&mut buf) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                bail!("timed out")
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Move decoded body bytes from `raw` to `body`.
    fn decode(&mut self) -> Result<()> {
        loop {
            match self.framing {
                Framing::ChunkSize | Framing::Trailer => {
                    let Some(i) = find(&self.raw, b"\r\n") else {
                        return Ok(());
                    };
                    let line: Vec<u8> = self.raw.drain(..i + 2).take(i).collect();
                    let line = String::from_utf8_lossy(&line);
                    self.framing = match self.framing {
                        Framing::Trailer if line.is_empty() => Framing::Done,
                        Framing::Trailer => Framing::Trailer,
                        _ => {
                            let size = line.split(';').next().unwrap_or("").trim();
                            match usize::from_str_radix(size, 16)? {
                                0 => Framing::Trailer,
                                n => Framing::ChunkData(n),
                            }
                        }
                    };
                }
                Framing::ChunkData(n) | Framing::Fixed(n) => {
                    if n == 0 {
                        self.framing = Framing::Done;
                        continue;
                    }
                    if self.raw.is_empty() {
                        return Ok(());
                    }
                    let take = n.min(self.raw.len());
                    self.body.extend(self.raw.drain(..take));
                    self.framing = match self.framing {
                        Framing::ChunkData(_) if take == n => Framing::ChunkEnd,
                        Framing::ChunkData(_) => Framing::ChunkData(n - take),
                        _ => Framing::Fixed(n - take),
                    };
                }
                Framing::ChunkEnd => {
                    if self.raw.len() < 2 {
                        return Ok(());
                    }
                    if &self.raw[..2] != b"\r\n" {
                        bail!("malformed chunk terminator");
                    }
                    self.raw.drain(..2);
                    self.framing = Framing::ChunkSize;
                }
                Framing::UntilEof => {
                    self.body.append(&mut self.raw);
                    return Ok(());
                }
                Framing::Done => return Ok(()),
            }
        }
    }

    /// The next JSON line. `Ok(None)`: the server ended the response cleanly. Fails on timeout,
    /// on a connection closed mid-response, and on malformed JSON.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.body.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.body.drain(..=i).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line)
                    .map(Some)
                    .with_context(|| format!("bad line {:?}", String::from_utf8_lossy(&line)));
            }
            if self.framing == Framing::Done {
                if self.body.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                let rest = std::mem::take(&mut self.body);
                return Ok(Some(serde_json::from_slice(&rest)?));
            }
            if !self.fill(deadline)? {
                match self.framing {
                    Framing::UntilEof => self.framing = Framing::Done,
                    f => bail!("connection closed mid-response ({f:?})"),
                }
            }
            self.decode()?;
        }
    }

    /// Succeeds if nothing at all arrives within `d` (the stream stays open and silent).
    pub fn expect_silence(&mut self, d: Duration) -> Result<()> {
        match self.next_event(d) {
            Err(e) if e.to_string() == "timed out" => Ok(()),
            Err(e) => Err(e),
            Ok(Some(v)) => bail!("expected silence, got {v}"),
            Ok(None) => bail!("expected silence, the stream ended"),
        }
    }

    /// Read up to `n` events, failing if any takes longer than `timeout`.
    pub fn events(&mut self, n: usize, timeout: Duration) -> Result<Vec<Value>> {
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            match self.next_event(timeout)? {
                Some(e) => v.push(e),
                None => bail!("stream ended after {} of {n} events: {v:?}", v.len()),
            }
        }
        Ok(v)
    }
}
