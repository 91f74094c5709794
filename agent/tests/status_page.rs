//! The status page at `/`, rendered by headless Chromium (Debian's `chromium`; `tests/run`
//! installs it) on a simulated node with one broken pod: a screenshot is saved under
//! `target/tmp/`, and the rendered DOM lists the broken pod first, with its reason.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use podnet_testbed::agent::{Agent, PORT};
use podnet_testbed::netns;
use podnet_testbed::simnode::SimNode;

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");

/// Headless Chromium inside the node's namespace (the agent's loopback), with its own
/// profile directory; `mode` is `--dump-dom` or `--screenshot=PATH`.
fn chromium(node: &SimNode, profile: &Path, mode: &str) -> String {
    let url = format!("http://127.0.0.1:{PORT}/");
    let out = Command::new("timeout")
        .args(["60", "ip", "netns", "exec", node.node_netns(), "chromium"])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--window-size=1200,700",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(mode)
        .arg(&url)
        .output()
        .expect("running chromium (tests/run installs Debian's chromium)");
    assert!(
        out.status.success(),
        "chromium {mode} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `data-pod` of each row of the pods table, with the row's HTML, in page order.
fn rows(dom: &str) -> Vec<(String, String)> {
    let body = dom
        .split_once("<tbody>")
        .and_then(|(_, rest)| rest.split_once("</tbody>"))
        .map(|(b, _)| b)
        .expect("a pods table body");
    body.split("<tr ")
        .skip(1)
        .map(|row| {
            let pod = row
                .split_once("data-pod=\"")
                .and_then(|(_, r)| r.split_once('"'))
                .map(|(p, _)| p.to_owned())
                .unwrap_or_default();
            (pod, row.to_owned())
        })
        .collect()
}

#[test]
fn chromium_shows_the_broken_pod_first_with_its_reason() {
    netns::require_root().unwrap();
    let node = SimNode::new(4, &[]).unwrap();
    let broken = node.pod(2).clone();
    let agent = Agent::start_binary(AGENT.as_ref(), &node, &["--no-probes"]).unwrap();
    node.delete_route(2, broken.ipv4.into()).unwrap();
    agent
        .wait_metrics("the deleted route reported", Duration::from_secs(30), |m| {
            m.problems().len() == 1
        })
        .unwrap();
    let (code, html) = agent.get("/").unwrap();
    assert_eq!(code, 200, "{html}");

    let profile = tempdir("chromium-profile");
    let dom = chromium(&node, &profile, "--dump-dom");
    let rows = rows(&dom);
    assert_eq!(rows.len(), 4, "{dom}");
    let (first, first_html) = &rows[0];
    assert_eq!(first, &broken.interface, "broken pod not first:\n{dom}");
    assert!(first_html.contains("class=\"problem\""), "{first_html}");
    assert!(first_html.contains("route_missing"), "{first_html}");
    assert!(
        rows[1..]
            .iter()
            .all(|(_, r)| r.contains("class=\"ok\"") && !r.contains("route_missing")),
        "{dom}"
    );
    assert!(dom.contains("Problems: 1 of 4 pods"), "{dom}");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&node, &profile, &format!("--screenshot={}", shot.display()));
    let png = std::fs::read(&shot).expect("chromium saved no screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "not a real PNG"
    );
    let _ = std::fs::remove_dir_all(&profile);
    eprintln!("screenshot: {}", shot.display());
}

fn tempdir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
