//! calico-node awareness: the agent reads a felix double on the simulated node's loopback
//! (health and Prometheus endpoints in the real formats) and exports what it read — and never
//! reports felix healthy when it cannot read it.

use podnet_testbed::agent::Agent;
use podnet_testbed::exposition::Samples;
use podnet_testbed::felix::FelixDouble;
use podnet_testbed::simnode::SimNode;
use std::time::Duration;

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");
const WAIT: Duration = Duration::from_secs(20);

fn felix(m: &Samples) -> (Option<f64>, Option<f64>, Option<f64>, Option<f64>) {
    (
        m.value("podnet_calico_felix_up"),
        m.value("podnet_calico_felix_ready"),
        m.value("podnet_calico_felix_metrics_up"),
        m.value("podnet_calico_felix_active_local_endpoints"),
    )
}

#[test]
fn felix_read_and_never_healthy_when_unreadable() {
    let node = SimNode::new(1, &[]).unwrap();
    let double = FelixDouble::start(node.node_netns(), 0, 0).unwrap();
    double.set(|s| s.active_local_endpoints = 7);
    let (health, metrics) = (double.health.to_string(), double.metrics.to_string());
    let mut agent = Agent::start_binary(
        AGENT.as_ref(),
        &node,
        &[
            "--no-probes",
            "--calico-felix-health",
            &health,
            "--calico-felix-metrics",
            &metrics,
            "--calico-felix-interval",
            "100ms",
        ],
    )
    .unwrap();
    let want =
        |w: (Option<f64>, Option<f64>, Option<f64>, Option<f64>)| move |m: &Samples| felix(m) == w;
    agent
        .wait_metrics(
            "felix ready",
            WAIT,
            want((Some(1.0), Some(1.0), Some(1.0), Some(7.0))),
        )
        .unwrap();
    let m = agent.metrics().unwrap();
    assert_eq!(m.value("podnet_calico_felix_resync_state"), Some(3.0));
    // Not ready: 503 with the component table.
    double.set(|s| {
        s.ready = false;
        s.active_local_endpoints = 5;
    });
    agent
        .wait_metrics(
            "felix not ready",
            WAIT,
            want((Some(1.0), Some(0.0), Some(1.0), Some(5.0))),
        )
        .unwrap();
    // Gone: unreadable is not ready, and its counts disappear rather than go stale.
    drop(double);
    agent
        .wait_metrics(
            "felix unreadable",
            WAIT,
            want((Some(0.0), Some(0.0), Some(0.0), None)),
        )
        .unwrap();
    assert_eq!(
        agent
            .metrics()
            .unwrap()
            .value("podnet_calico_felix_resync_state"),
        None
    );
    agent.stop().unwrap();
}
