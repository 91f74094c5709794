//! The agent's HTTP server under hostile clients (issue 10): slowloris and 200 concurrent
//! scrapers within the memory limit, a connection cap that closes excess connections at once,
//! `/status` kept off the public address, and `--secure-metrics` (TLS, TokenReview and
//! SubjectAccessReview against the API double). Each test runs the real agent inside a
//! simulated node and takes well under 60 s.
//!
//! Prints the figures quoted in `docs/security.md`:
//! `cargo test -p podnet-agent --test http_hardening -- --nocapture --test-threads 1`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use podnet_kube_double::KubeApiServer;
use podnet_testbed::agent::{HttpClient, http_get};
use podnet_testbed::agent_proc::{AgentProc, STATUS_PORT};
use podnet_testbed::exposition::Samples;
use podnet_testbed::netns::{self, NetnsThread};
use podnet_testbed::simnode::{NODE_IPV4, SimNode};

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");

const PORT: u16 = 9710;

/// The DaemonSet's memory limit.
const MEMORY_LIMIT_KIB: u64 = 64 * 1024;

/// Run `f` on a new thread inside namespace `ns` (sockets it opens stay in that namespace).
fn in_netns<R: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> std::thread::JoinHandle<Result<R>> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        netns::enter(&ns)?;
        Ok(f())
    })
}

/// Delete pod `index`'s host route (a kernel event) and time until `/metrics` on the loopback
/// status listener reports it; then restore it and wait until the problem is gone.
fn event_to_metric(node: &SimNode, status: &HttpClient, index: usize) -> Duration {
    let ip = node.pod(index).ipv4.to_string();
    let reported = |want: bool| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok((200, body)) = status.get("/metrics") {
                let seen = Samples::parse(&body).problems().iter().any(|p| p.1 == ip);
                if seen == want {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "route problem of {ip} never {want}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let t = Instant::now();
    node.delete_route(index, node.pod(index).ipv4.into())
        .unwrap();
    reported(true);
    let took = t.elapsed();
    node.restore_routes(index).unwrap();
    reported(false);
    took
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1);
    sorted.get(i).copied().unwrap_or_default()
}

#[test]
fn slowloris_and_200_scrapers_stay_within_limits() {
    netns::require_root().unwrap();
    let node = SimNode::new(3, &[0]).unwrap();
    let cap = 600;
    let header_timeout = Duration::from_secs(3);
    let agent = AgentProc::start(
        AGENT.as_ref(),
        &node,
        &[],
        &[
            "--listen",
            &format!("127.0.0.1:{PORT}"),
            "--http-max-connections",
            &cap.to_string(),
            "--http-header-timeout",
            "3s",
            "--probe-interval",
            "1s",
        ],
    )
    .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], PORT));
    let ns = node.node_netns().to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let status = HttpClient::new(&ns, STATUS_PORT).unwrap();
    let idle_event = event_to_metric(&node, &status, 1);

    // 300 slowloris connections: a request head, one byte a second, never finished.
    let slow = 300;
    let loris = {
        let stop = Arc::clone(&stop);
        in_netns(&ns, move || -> Result<Vec<Option<Duration>>> {
            let start = Instant::now();
            let mut conns = Vec::new();
            for _ in 0..slow {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")?;
                s.set_nonblocking(true)?;
                conns.push((s, None::<Duration>));
            }
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                for (s, closed) in conns.iter_mut().filter(|(_, c)| c.is_none()) {
                    let gone = match s.read(&mut buf) {
                        Ok(0) => true,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => s.write_all(b"X").is_err(),
                        _ => true,
                    };
                    if gone {
                        *closed = Some(start.elapsed());
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            Ok(conns.into_iter().map(|(_, c)| c).collect())
        })
    };
    std::thread::sleep(Duration::from_millis(500));

    // 200 concurrent scrapers, each scraping twice a second.
    let served = Arc::new(AtomicU64::new(0));
    let scrapers: Vec<_> = (0..200)
        .map(|_| {
            let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
            in_netns(&ns, move || {
                while !stop.load(Ordering::Relaxed) {
                    if matches!(http_get(addr, "/metrics"), Ok((200, _))) {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
        })
        .collect();

    // The well-behaved scraper: one GET every 50 ms for 6 s, latencies recorded.
    let good = in_netns(&ns, move || -> Result<Vec<Duration>> {
        let mut lat = Vec::new();
        let end = Instant::now() + Duration::from_secs(6);
        while Instant::now() < end {
            let t = Instant::now();
            let (code, body) = http_get(addr, "/metrics")?;
            lat.push(t.elapsed());
            anyhow::ensure!(code == 200 && body.contains("podnet_"), "scrape got {code}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(lat)
    });
    std::thread::sleep(Duration::from_secs(2));
    let loaded_event = event_to_metric(&node, &status, 2);
    let mut lat = good.join().unwrap().unwrap().unwrap();
    stop.store(true, Ordering::Relaxed);
    for s in scrapers {
        s.join().unwrap().unwrap();
    }
    let closed = loris.join().unwrap().unwrap().unwrap();
    lat.sort();
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    let rss = agent.peak_rss_kib();
    let stalled_closed = closed.iter().filter(|c| c.is_some()).count();
    let latest_close = closed.iter().flatten().max().copied().unwrap_or_default();
    eprintln!(
        "slowloris {slow} + 200 scrapers: {} scrapes served, well-behaved scraper {} GETs \
         p50 {p50:?} p99 {p99:?}; slow connections closed {stalled_closed}/{slow}, last after \
         {latest_close:?}; agent peak RSS {} KiB; route deleted → metric {idle_event:?} idle, \
         {loaded_event:?} under load",
        served.load(Ordering::Relaxed),
        lat.len(),
        rss,
    );
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
    assert!(
        served.load(Ordering::Relaxed) > 1000,
        "the crowd was served too"
    );
    assert_eq!(
        stalled_closed, slow,
        "every stalled connection closed by the header timeout"
    );
    assert!(
        latest_close < header_timeout + Duration::from_secs(3),
        "{latest_close:?}"
    );
    assert!(rss > 0 && rss < MEMORY_LIMIT_KIB, "peak RSS {rss} KiB");
    // Kernel events are not starved by the HTTP load (same runtime thread).
    assert!(
        loaded_event < Duration::from_secs(1),
        "{loaded_event:?} under load"
    );

    // Beyond the cap: connections are closed at once, not queued.
    let extra = 100;
    let (held, refused) = in_netns(&ns, move || -> Result<(Vec<TcpStream>, usize)> {
        // All at once (well within the header timeout, which would free slots), then look.
        let mut conns = Vec::new();
        for _ in 0..cap + extra {
            conns.push(TcpStream::connect_timeout(&addr, Duration::from_secs(2))?);
        }
        std::thread::sleep(Duration::from_millis(300));
        let (mut held, mut refused) = (Vec::new(), 0);
        let mut buf = [0u8; 64];
        for mut s in conns {
            s.set_nonblocking(true)?;
            match s.read(&mut buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => held.push(s),
                _ => refused += 1,
            }
        }
        Ok((held, refused))
    })
    .join()
    .unwrap()
    .unwrap()
    .unwrap();
    eprintln!(
        "{} connections against a cap of {cap}: {refused} closed at once, {} held",
        cap + extra,
        held.len()
    );
    assert!(held.len() <= cap, "{} held beyond the cap", held.len());
    assert!(refused >= extra, "only {refused} refused");
    drop(held);
    // Freed slots serve again.
    let client = HttpClient::new(&ns, PORT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !matches!(client.get("/metrics"), Ok((200, _))) {
        assert!(Instant::now() < deadline, "not served after the flood");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = agent.log();
    assert!(log.contains("HTTP connection cap reached"), "{log}");
    assert!(
        log.matches("HTTP connection cap reached").count() <= 3,
        "refusals are rate-limited in the log"
    );
}

#[test]
fn status_is_not_served_on_the_public_address() {
    netns::require_root().unwrap();
    let node = SimNode::new(1, &[0]).unwrap();
    let public = SocketAddr::new(NODE_IPV4.into(), PORT);
    let agent = AgentProc::start(
        AGENT.as_ref(),
        &node,
        &[],
        &["--listen", &public.to_string(), "--no-probes"],
    )
    .unwrap();
    let node_ns = NetnsThread::join(node.node_netns()).unwrap();
    let get = |path: &'static str| node_ns.run_blocking(move || http_get(public, path));
    assert_eq!(get("/metrics").unwrap().0, 200);
    let (code, body) = get("/status").unwrap();
    assert_eq!(code, 404, "{body}");
    assert!(!body.contains("sim-node"));
    // Nor the status page, which shows the same inventory.
    let (code, body) = get("/").unwrap();
    assert_eq!(code, 404, "{body}");
    assert!(!body.contains("sim-node"));
    // POST, bodies and oversized heads are refused.
    let raw = |req: &'static [u8]| {
        node_ns.run_blocking(move || {
            let mut s = TcpStream::connect(public)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(req)?;
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            Ok(out.lines().next().unwrap_or("").to_owned())
        })
    };
    let post = raw(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc").unwrap();
    assert!(post.contains(" 405 "), "{post}");
    let with_body = raw(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
    assert!(with_body.unwrap().contains(" 413 "));
    let huge: &'static [u8] = Box::leak(
        format!(
            "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(20_000)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let big = raw(huge).unwrap();
    assert!(big.is_empty() || big.contains(" 431 "), "{big}");
    // The inventory stays on loopback.
    let status = HttpClient::new(node.node_netns(), STATUS_PORT).unwrap();
    let (code, body) = status.get("/status").unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("\"node\":\"sim-node\""), "{body}");
    drop(agent);

    // `--status-listen off`: nothing on the status port.
    let log = std::env::temp_dir().join(format!("{}-off.log", node.node_netns()));
    let mut off = Command::new("ip")
        .args(["netns", "exec", node.node_netns()])
        .arg(AGENT)
        .args([
            "--node-name",
            "sim-node",
            "--no-probes",
            "--status-listen",
            "off",
        ])
        .args(["--listen", &public.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let up = (0..250).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        matches!(
            node_ns.run_blocking(move || http_get(public, "/readyz")),
            Ok((200, _))
        )
    });
    let status_port = status.get("/readyz");
    let _ = off.kill();
    let _ = off.wait();
    let _ = std::fs::remove_file(&log);
    assert!(up, "agent with --status-listen off never ready");
    assert!(status_port.is_err(), "status port open: {status_port:?}");
}

/// `curl` inside the node's namespace: the HTTP status code (0: no HTTP answer).
fn curl(ns: &str, url: &str, token: Option<&str>) -> u16 {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        ns,
        "curl",
        "-sk",
        "-o",
        "/dev/null",
        "-m",
        "10",
    ]);
    cmd.args(["-w", "%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.arg(url).output().expect("running curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn secure_metrics_need_an_authorized_token_over_tls() {
    netns::require_root().unwrap();
    let node = SimNode::new(1, &[0]).unwrap();
    let api = KubeApiServer::start(
        Some(node.node_netns()),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .unwrap();
    api.register_node("sim-node");
    api.add_token(
        "prom-token",
        "system:serviceaccount:monitoring:prometheus",
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:monitoring",
        ],
    );
    api.add_token(
        "other-token",
        "system:serviceaccount:default:nosy",
        &["system:serviceaccounts"],
    );
    api.grant_non_resource("system:serviceaccounts:monitoring", "/metrics", "get");
    let kubeconfig =
        RemoveOnDrop(std::env::temp_dir().join(format!("{}-secure-kubeconfig", node.node_netns())));
    let kubeconfig = &kubeconfig.0;
    api.kubeconfig(kubeconfig).unwrap();
    {
        let agent = AgentProc::start(
            AGENT.as_ref(),
            &node,
            &[],
            &[
                "--listen",
                &format!("127.0.0.1:{PORT}"),
                "--secure-metrics",
                "--pod-source",
                "kubernetes",
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--no-probes",
            ],
        )
        .unwrap();
        let ns = node.node_netns();
        let https = |path: &str| format!("https://127.0.0.1:{PORT}{path}");
        assert_eq!(curl(ns, &https("/metrics"), Some("prom-token")), 200);
        assert_eq!(
            curl(ns, &https("/metrics"), Some("prom-token")),
            200,
            "cached"
        );
        assert_eq!(curl(ns, &https("/metrics"), None), 401);
        assert_eq!(curl(ns, &https("/metrics"), Some("forged")), 401);
        assert_eq!(curl(ns, &https("/metrics"), Some("other-token")), 403);
        // The grant is for /metrics only: the pod inventory stays closed.
        assert_eq!(curl(ns, &https("/status"), Some("prom-token")), 403);
        // Probes need no token (the kubelet sends none) and reveal nothing.
        assert_eq!(curl(ns, &https("/healthz"), None), 200);
        // TLS only: plain HTTP gets no HTTP answer.
        let plain = curl(
            ns,
            &format!("http://127.0.0.1:{PORT}/metrics"),
            Some("prom-token"),
        );
        assert!(plain == 0 || plain >= 400, "plain HTTP answered {plain}");
        // One review pair for the repeated token (the cache), none for a missing token.
        let reviews = api
            .request_log()
            .iter()
            .filter(|r| r.path.ends_with("/tokenreviews"))
            .count();
        assert_eq!(reviews, 4, "prom (once), forged, other, prom on /status");
        // The API failing: 503, never 200.
        api.add_token(
            "new-token",
            "system:serviceaccount:monitoring:prometheus",
            &["system:serviceaccounts:monitoring"],
        );
        api.fail_all(true);
        assert_eq!(curl(ns, &https("/metrics"), Some("new-token")), 503);
        api.fail_all(false);
        assert_eq!(curl(ns, &https("/metrics"), Some("new-token")), 200);
        drop(agent);
    }
}

/// A file removed when the test ends, passed or failed.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
