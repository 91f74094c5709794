//! Issue 14: the connects pods fail to make, seen from their own `SYN_SENT` sockets, on the
//! simulated node with pods from the API double. A "kong" pod keeps connecting to a deleted
//! pod's IP (the node's block blackhole swallows the SYNs, as on Calico) → `vanished_pod_ip`;
//! a new pod given that IP answers → cleared; a live pod dropping SYNs → `node_pod`; an
//! outside address that answers → nothing.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use podnet_testbed::agent::Agent;
use podnet_testbed::cluster::{Cluster, api_pod};
use podnet_testbed::netns;
use podnet_testbed::simnode::{OUTSIDE_IPV4, PodSpec};
use serde_json::Value;

const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");
const WAIT: Duration = Duration::from_secs(40);
const PORT: u16 = 8080;

/// A client in a pod's namespace that opens a non-blocking connect to each destination every
/// 300 ms and closes it after 3 s, as a proxy with a stale upstream keeps doing.
struct Client {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Client {
    fn start(netns_name: &str, dests: Vec<SocketAddr>) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let name = netns_name.to_owned();
        let thread = std::thread::spawn(move || {
            netns::enter(&name).expect("entering the client pod's namespace");
            let mut open: VecDeque<(Instant, socket2::Socket)> = VecDeque::new();
            while !flag.load(Ordering::Relaxed) {
                for d in &dests {
                    let s = socket2::Socket::new(
                        socket2::Domain::for_address(*d),
                        socket2::Type::STREAM,
                        None,
                    )
                    .unwrap();
                    s.set_nonblocking(true).unwrap();
                    let _ = s.connect(&(*d).into());
                    open.push_back((Instant::now(), s));
                }
                while open
                    .front()
                    .is_some_and(|(t, _)| t.elapsed() > Duration::from_secs(3))
                {
                    open.pop_front();
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        Client {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP server accepting and closing connections in a pod's namespace, until dropped.
fn serve(netns_name: &str, addr: SocketAddr) -> Client {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let name = netns_name.to_owned();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        netns::enter(&name).expect("entering the server pod's namespace");
        let l = std::net::TcpListener::bind(addr).unwrap();
        l.set_nonblocking(true).unwrap();
        ready_tx.send(()).unwrap();
        while !flag.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((c, _)) => drop(c),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    ready_rx.recv().unwrap();
    Client {
        stop,
        thread: Some(thread),
    }
}

fn connects(agent: &Agent) -> Vec<Value> {
    agent.status().unwrap()["unanswered_connects"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn find<'a>(list: &'a [Value], dest: &str) -> Option<&'a Value> {
    list.iter().find(|c| c["destination"] == dest)
}

/// Wait until `pred` holds for the reported connects; they are returned.
fn wait(agent: &Agent, what: &str, pred: impl Fn(&[Value]) -> bool) -> (Vec<Value>, Duration) {
    let started = Instant::now();
    loop {
        let list = connects(agent);
        if pred(&list) {
            return (list, started.elapsed());
        }
        assert!(
            started.elapsed() < WAIT,
            "{what}: {list:#?}\n{}",
            agent.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_client_stuck_on_a_vanished_pod_ip_is_named_and_cleared() {
    let mut c = Cluster::new(3).unwrap();
    let kong = c.node.pod(0).clone();
    let victim = c.node.pod(1).clone();
    let dropper = c.node.pod(2).clone();
    let status = Command::new("ip")
        .args([
            "netns",
            "exec",
            &dropper.netns,
            "iptables",
            "-A",
            "INPUT",
            "-p",
            "tcp",
        ])
        .args(["--dport", &PORT.to_string(), "-j", "DROP"])
        .status()
        .unwrap();
    assert!(status.success(), "iptables in the dropping pod");
    let outside = SocketAddr::from((OUTSIDE_IPV4, 8443));
    c.node.listen_outside(outside).unwrap();

    // The pod is deleted; the client keeps its address.
    c.api.delete(&victim.namespace, &victim.name).unwrap();
    c.node.remove_pod(1).unwrap();
    let stale = SocketAddr::from((victim.ipv4, PORT));
    let alive = SocketAddr::from((dropper.ipv4, PORT));
    let agent = c
        .agent(
            AGENT.as_ref(),
            &["--probe-interval", "2s", "--probe-timeout", "500ms"],
        )
        .unwrap();
    let _client = Client::start(&kong.netns, vec![stale, alive, outside]);

    let (list, took) = wait(&agent, "the stale address and the dropping pod", |l| {
        find(l, &stale.to_string()).is_some() && find(l, &alive.to_string()).is_some()
    });
    let v = find(&list, &stale.to_string()).unwrap();
    assert_eq!(v["class"], "vanished_pod_ip", "{v:#}");
    assert_eq!(v["namespace"], kong.namespace.as_str());
    assert_eq!(v["pod"], kong.name.as_str());
    assert!(
        v["diagnosis"]
            .as_str()
            .unwrap()
            .contains("no pod has this IP"),
        "{v:#}"
    );
    // Within two rounds of the first retransmission (2 s apart), plus the agent's start.
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let a = find(&list, &alive.to_string()).unwrap();
    assert_eq!(a["class"], "node_pod", "{a:#}");
    assert_eq!(
        a["owner"],
        format!("{}/{}", dropper.namespace, dropper.name).as_str()
    );
    assert!(find(&list, &outside.to_string()).is_none(), "{list:#?}");

    let m = agent.metrics().unwrap();
    let labels = [
        ("namespace", kong.namespace.as_str()),
        ("pod", kong.name.as_str()),
        ("class", "vanished_pod_ip"),
    ];
    assert_eq!(
        m.value_with("podnet_pod_unanswered_connects", &labels),
        Some(1.0)
    );

    // A new pod gets the address and answers: the client's connects succeed, cleared.
    let i = c
        .node
        .add_pod(PodSpec::named("team", "reborn").with_ipv4(victim.ipv4))
        .unwrap();
    let reborn = c.node.pod(i).clone();
    c.api.apply(api_pod(&reborn)).unwrap();
    let _server = serve(&reborn.netns, SocketAddr::from(([0, 0, 0, 0], PORT)));
    let (list, _) = wait(&agent, "the stale address cleared", |l| {
        find(l, &stale.to_string()).is_none()
    });
    // The dropping pod is still reported, and the outside address never was.
    assert!(find(&list, &alive.to_string()).is_some(), "{list:#?}");
    assert!(find(&list, &outside.to_string()).is_none(), "{list:#?}");
    agent
        .wait_metrics("the series gone", WAIT, |m| {
            m.value_with("podnet_pod_unanswered_connects", &labels)
                .is_none()
        })
        .unwrap();
}
