//! The agent without the /proc fallback's privilege (CAP_SYS_PTRACE dropped from its bounding
//! set, as the base DaemonSet now runs it): pods with a /var/run/netns entry are still probed
//! and healthy, and the agent says at start that the fallback is off.

use std::time::{Duration, Instant};

use podnet_testbed::agent::HttpClient;
use podnet_testbed::agent_proc::AgentProc;
use podnet_testbed::netns;
use podnet_testbed::simnode::SimNode;
use serde_json::Value;

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");

/// CAP_SYS_PTRACE (linux/capability.h).
const CAP_SYS_PTRACE: u32 = 19;

#[test]
fn without_sys_ptrace_named_namespaces_are_still_probed() {
    netns::require_root().unwrap();
    let node = SimNode::new(3, &[0]).unwrap();
    let agent = AgentProc::start(
        AGENT.as_ref(),
        &node,
        &[
            "setpriv",
            "--bounding-set",
            "-sys_ptrace",
            "--inh-caps",
            "-sys_ptrace",
        ],
        &["--listen", "127.0.0.1:9710", "--probe-interval", "1s"],
    )
    .unwrap();
    let cap_eff = agent
        .status_field("CapEff:")
        .and_then(|h| u64::from_str_radix(&h, 16).ok())
        .expect("CapEff of the agent");
    assert_eq!(
        cap_eff & (1 << CAP_SYS_PTRACE),
        0,
        "setpriv left CAP_SYS_PTRACE"
    );
    let log = agent.log();
    assert!(
        log.contains("the /proc fallback is off"),
        "no start-up line about the fallback:\n{log}"
    );
    // Every pod probed (each probe answered) although the fallback is off.
    let client = HttpClient::new(node.node_netns(), 9710).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Value::Null;
    loop {
        if let Ok((200, body)) = client.get("/status") {
            last = serde_json::from_str(&body).unwrap_or(Value::Null);
            let pods = last["pods"].as_array().cloned().unwrap_or_default();
            let probed_ok = |p: &Value| {
                let probes = p["probes"].as_array().cloned().unwrap_or_default();
                !probes.is_empty()
                    && probes
                        .iter()
                        .all(|d| d["last"] == "ok" && d["failing"] == false)
            };
            if pods.len() == 3 && pods.iter().all(probed_ok) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "pods not all probed ok:\n{last:#}\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
