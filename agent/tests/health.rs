//! `/healthz` tells the truth: killing any worker (through the hidden `--test-fault` hook)
//! turns it red within seconds, naming the worker, and `podnet_worker_up` follows; SIGTERM
//! ends the agent within the shutdown deadline even when a worker hangs.

use std::time::{Duration, Instant};

use podnet_testbed::agent::Agent;
use podnet_testbed::simnode::SimNode;

const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");

/// How fast a dead worker must show (the fault strikes 1 s after start).
const RED_WITHIN: Duration = Duration::from_secs(10);

fn start(node: &SimNode, fault: Option<&str>) -> Agent {
    let mut args = vec!["--probe-interval", "1s", "--pod-source", "node"];
    if let Some(f) = fault {
        args.extend(["--test-fault", f]);
    }
    Agent::start_binary(AGENT.as_ref(), node, &args).unwrap()
}

/// Poll `/healthz` until it fails; returns its body.
fn wait_red(agent: &Agent) -> String {
    let deadline = Instant::now() + RED_WITHIN;
    loop {
        let (code, body) = agent.get("/healthz").unwrap();
        if code == 503 {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz still {code} {body:?} after {RED_WITHIN:?}\n{}",
            agent.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn worker_up(agent: &Agent, worker: &str) -> Option<f64> {
    let (_, body) = agent.get("/metrics").unwrap();
    let prefix = format!("podnet_worker_up{{worker=\"{worker}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn healthy_agent_reports_every_worker_up() {
    let node = SimNode::new(2, &[]).unwrap();
    let agent = start(&node, None);
    // Stays green well past the moment a fault would strike.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(agent.get("/healthz").unwrap(), (200, "ok\n".to_owned()));
    for w in ["monitor", "prober", "netns", "http", "http-status"] {
        assert_eq!(worker_up(&agent, w), Some(1.0), "{w}\n{}", agent.log_tail());
    }
}

#[test]
fn killing_each_worker_turns_healthz_red_naming_it() {
    let node = SimNode::new(2, &[]).unwrap();
    // http-status serves our scrape only on loopback; a dead http-status is seen through the
    // main listener, and vice versa.
    for worker in ["monitor", "prober", "netns", "http-status"] {
        let started = Instant::now();
        let agent = start(&node, Some(&format!("kill:{worker}")));
        let body = wait_red(&agent);
        assert!(
            body.contains(&format!("{worker}: panicked")),
            "{worker}: {body:?}\n{}",
            agent.log_tail()
        );
        assert_eq!(worker_up(&agent, worker), Some(0.0), "{worker}");
        eprintln!("{worker}: /healthz red after {:?}", started.elapsed());
        drop(agent);
    }
}

#[test]
fn sigterm_exits_within_the_deadline_even_if_a_worker_hangs() {
    let node = SimNode::new(1, &[]).unwrap();
    let mut agent = start(&node, Some("hang:prober"));
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    let code = agent.stop().unwrap();
    let took = t0.elapsed();
    eprintln!("SIGTERM with a hung prober: exit {code:?} after {took:?}");
    assert!(took < Duration::from_secs(8), "exit took {took:?}");
    assert!(
        took >= Duration::from_secs(4),
        "did not wait for the hung worker: {took:?}"
    );
    assert_eq!(code, Some(1), "{}", agent.log());
    assert!(
        agent.log().contains("shutdown deadline") && agent.log().contains("prober"),
        "{}",
        agent.log_tail()
    );
}

#[test]
fn sigterm_without_faults_exits_cleanly_and_fast() {
    let node = SimNode::new(1, &[]).unwrap();
    let mut agent = start(&node, None);
    let t0 = Instant::now();
    assert_eq!(agent.stop().unwrap(), Some(0), "{}", agent.log_tail());
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

#[test]
fn killing_the_kubernetes_watch_turns_healthz_red() {
    use podnet_kube_double::{Config, KubeApiServer};
    let node = SimNode::new(1, &[]).unwrap();
    let api = KubeApiServer::start_with(
        Some(node.node_netns()),
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        Config::default(),
    )
    .unwrap();
    api.register_node("sim-node");
    let kubeconfig = std::env::temp_dir().join(format!("{}-health-kubeconfig", node.node_netns()));
    api.kubeconfig(&kubeconfig).unwrap();
    let args = [
        "--pod-source",
        "kubernetes",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--no-probes",
        "--test-fault",
        "kill:watch",
    ];
    let agent = Agent::start_binary(AGENT.as_ref(), &node, &args);
    let _ = std::fs::remove_file(&kubeconfig);
    let agent = agent.unwrap();
    let body = wait_red(&agent);
    assert!(
        body.contains("watch: panicked"),
        "{body:?}\n{}",
        agent.log_tail()
    );
    assert_eq!(worker_up(&agent, "watch"), Some(0.0));
}

/// The felix reader and the remote block watch are supervised workers too: up while they
/// work — the felix reader promises a beat at least every interval plus three request
/// timeouts and a margin (~11 s here), and the agent stays green well past that — and
/// `/healthz` red naming them when one panics.
#[test]
fn felix_and_block_workers_beat_and_turn_healthz_red() {
    use podnet_testbed::cluster::Cluster;
    use podnet_testbed::felix::FelixDouble;
    let c = Cluster::new(1).unwrap();
    let double = FelixDouble::start(c.node.node_netns(), 0, 0).unwrap();
    let health = double.health.to_string();
    let start = |fault: Option<&str>| {
        let mut args = vec![
            "--no-probes",
            "--remote-blocks",
            "calico",
            "--calico-felix-health",
            &health,
            "--calico-felix-interval",
            "100ms",
        ];
        if let Some(f) = fault {
            args.extend(["--test-fault", f]);
        }
        c.agent(AGENT.as_ref(), &args).unwrap()
    };
    let agent = start(None);
    let until = Instant::now() + Duration::from_secs(13);
    while Instant::now() < until {
        assert_eq!(
            agent.get("/healthz").unwrap(),
            (200, "ok\n".to_owned()),
            "{}",
            agent.log_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for w in ["felix", "blocks", "watch", "monitor"] {
        assert_eq!(worker_up(&agent, w), Some(1.0), "{w}\n{}", agent.log_tail());
    }
    drop(agent);
    for worker in ["felix", "blocks"] {
        let agent = start(Some(&format!("kill:{worker}")));
        let body = wait_red(&agent);
        assert!(
            body.contains(&format!("{worker}: panicked")),
            "{worker}: {body:?}\n{}",
            agent.log_tail()
        );
        assert_eq!(worker_up(&agent, worker), Some(0.0), "{worker}");
    }
}
