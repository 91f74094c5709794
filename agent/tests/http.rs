//! HTTP(S) probes from inside every pod to a server in the outside namespace, with the real
//! agent in a simulated node: 200 is ok, 503 is bad_status, a server that does not speak TLS
//! on the HTTPS port is tls_failed, and a pod without its default route is diagnosed as its
//! wiring, not as HTTP.

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use podnet_testbed::agent::Agent;
use podnet_testbed::http::HttpServer;
use podnet_testbed::simnode::{OUTSIDE_IPV4, SimNode};
use serde_json::Value;

const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");
const WAIT: Duration = Duration::from_secs(60);
const PODS: usize = 3;

/// `(interface, last result, failing, diagnosis)` of target `name` in every pod.
fn results(status: &Value, name: &str) -> Vec<(String, String, bool, String)> {
    let mut out = Vec::new();
    for p in status["pods"].as_array().unwrap() {
        for d in p["probes"].as_array().into_iter().flatten() {
            if d["target"] == name {
                out.push((
                    p["interface"].as_str().unwrap().to_owned(),
                    d["last"].as_str().unwrap().to_owned(),
                    d["failing"].as_bool().unwrap(),
                    d["diagnosis"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    out
}

fn wait_status(agent: &Agent, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    agent.wait_status(what, WAIT, pred).unwrap()
}

#[test]
fn statuses_and_tls_failures_are_classified_and_wiring_comes_first() {
    let node = SimNode::new(PODS, &[]).unwrap();
    let _plain =
        HttpServer::start(node.outside(), SocketAddr::new(OUTSIDE_IPV4.into(), 8080)).unwrap();
    // Plain HTTP where HTTPS is expected: the handshake fails.
    let _not_tls =
        HttpServer::start(node.outside(), SocketAddr::new(OUTSIDE_IPV4.into(), 8443)).unwrap();
    let ok = format!("ok=http://{OUTSIDE_IPV4}:8080/healthz");
    let down = format!("down=http://{OUTSIDE_IPV4}:8080/fail");
    let down_expected = format!("maint=http://{OUTSIDE_IPV4}:8080/fail;5xx");
    let tls = format!("tls=https://{OUTSIDE_IPV4}:8443/;insecure");
    let args = [
        "--probe-interval",
        "1s",
        "--probe",
        &ok,
        "--probe",
        &down,
        "--probe",
        &down_expected,
        "--probe",
        &tls,
    ];
    let agent = Agent::start_binary(AGENT.as_ref(), &node, &args).unwrap();
    let all = |name: &'static str, result: &'static str| {
        move |s: &Value| {
            let r = results(s, name);
            r.len() == PODS && r.iter().all(|x| x.1 == result)
        }
    };
    wait_status(&agent, "ok", all("ok", "ok"));
    wait_status(&agent, "bad_status", all("down", "bad_status"));
    wait_status(&agent, "5xx expected", all("maint", "ok"));
    wait_status(&agent, "tls_failed", all("tls", "tls_failed"));
    let m = agent.metrics().unwrap();
    assert!(
        m.value_with(
            "podnet_probes_total",
            &[
                ("target", "down"),
                ("protocol", "http"),
                ("result", "bad_status")
            ]
        )
        .unwrap_or(0.0)
            >= PODS as f64
    );

    // Pod 1 loses its default route: its HTTP probe fails, and the diagnosis is its wiring.
    let victim = node.pod(1).clone();
    node.delete_pod_default_route(1, true).unwrap();
    let s = wait_status(&agent, "pod 1's http failing", |s| {
        results(s, "ok")
            .iter()
            .any(|d| d.0 == victim.interface && d.2)
    });
    let r = results(&s, "ok");
    let d = r.iter().find(|d| d.0 == victim.interface).unwrap();
    assert_eq!(d.3, "pod_default_route_missing", "{d:?}");
    assert!(
        r.iter()
            .filter(|d| d.0 != victim.interface)
            .all(|d| d.1 == "ok"),
        "{r:?}"
    );
    node.restore_pod_default_routes(1).unwrap();
    wait_status(&agent, "recovery", all("ok", "ok"));
}

/// An HTTPS server in the outside namespace with a self-signed certificate for `api.example`,
/// answering every request 200; returns the certificate's PEM. Stops with the test process.
fn tls_server(node: &SimNode, addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let cert = rcgen::generate_simple_self_signed(vec!["api.example".to_owned()]).unwrap();
    let pem = cert.cert.pem();
    let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = node
        .outside()
        .run_blocking(move || {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((conn, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(conn).await else {
                        return;
                    };
                    let mut buf = [0u8; 2048];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
    });
    pem
}

#[test]
fn https_verifies_the_server_against_the_probe_ca_and_the_host_name() {
    let node = SimNode::new(2, &[]).unwrap();
    let pem = tls_server(&node, SocketAddr::new(OUTSIDE_IPV4.into(), 9443));
    let ca = std::env::temp_dir().join(format!("{}-ca.pem", node.node_netns()));
    std::fs::write(&ca, pem).unwrap();
    let good = format!("good=https://{OUTSIDE_IPV4}:9443/;host=api.example");
    let wrong = format!("wrongname=https://{OUTSIDE_IPV4}:9443/;host=other.example");
    let ca_arg = ca.display().to_string();
    let args = [
        "--probe-interval",
        "1s",
        "--probe-ca",
        &ca_arg,
        "--probe",
        &good,
        "--probe",
        &wrong,
    ];
    let agent = Agent::start_binary(AGENT.as_ref(), &node, &args).unwrap();
    let all = |name: &'static str, result: &'static str| {
        move |s: &Value| {
            let r = results(s, name);
            r.len() == 2 && r.iter().all(|x| x.1 == result)
        }
    };
    wait_status(&agent, "verified", all("good", "ok"));
    wait_status(&agent, "name mismatch", all("wrongname", "tls_failed"));
    drop(agent);
    let _ = std::fs::remove_file(&ca);
}
