//! Issue 14: the connects pods fail to make, seen from their own `SYN_SENT` sockets, on the
//! simulated node with pods from the API double. A "kong" pod keeps connecting to a deleted
//! pod's IP (the node's block blackhole swallows the SYNs, as on Calico) → `vanished_pod_ip`;
//! a new pod given that IP answers → cleared; a live pod dropping SYNs → `node_pod`; an
//! outside address that answers → nothing. A Kong Admin API double in the client's namespace
//! saying its database is unreachable → the diagnosis says so; reachable → it does not. Only
//! Kong's pods are asked (its charts' label or image, or `--kong-selector`); in node mode,
//! without labels, every pod is. The Admin API is read over TLS on 8444 too (Kong's chart),
//! and a DB-less Kong without configuration is named as such.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use podnet_testbed::agent::Agent;
use podnet_testbed::cluster::{Cluster, api_pod};
use podnet_testbed::connects::{accept, keep_connecting};
use podnet_testbed::kong::{self, kong_admin};
use podnet_testbed::simnode::{OUTSIDE_IPV4, PodSpec, SimNode};
use serde_json::{Value, json};

const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");
const WAIT: Duration = Duration::from_secs(40);
const PORT: u16 = 8080;

fn connects(agent: &Agent) -> Vec<Value> {
    agent.status().unwrap()["unanswered_connects"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The Event of `reason` on pod `pod`, once the agent wrote it.
fn pod_event(agent: &Agent, c: &Cluster, pod: &str, reason: &str) -> Value {
    agent
        .wait_for(&format!("Event {reason} on {pod}"), WAIT, || {
            c.api
                .events()
                .into_iter()
                .find(|e| e["regarding"]["name"] == pod && e["reason"] == reason)
        })
        .unwrap()
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

    // The client is Kong as its chart deploys it (the label Kong's Helm charts set).
    let mut kong_pod = api_pod(&kong);
    kong_pod["metadata"]["labels"] =
        json!({"app.kubernetes.io/name": "kong", "app.kubernetes.io/component": "app"});
    c.api.apply(kong_pod).unwrap();

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
    let reachable = Arc::new(AtomicBool::new(false));
    let _admin = kong_admin(&kong.netns, Arc::clone(&reachable)).unwrap();
    let _client = keep_connecting(&kong.netns, vec![stale, alive, outside]);

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
    // `kubectl describe pod` of the client says it; the node condition does not (the client's
    // stale address is not a node problem).
    let warning = pod_event(&agent, &c, &kong.name, "ConnectsToVanishedPodIP");
    assert_eq!(warning["type"], "Warning");
    let note = warning["note"].as_str().unwrap();
    assert!(
        note.starts_with(&format!(
            "connects to {stale} unanswered; that IP belongs to no pod"
        )),
        "{note}"
    );
    assert!(
        c.api
            .events()
            .iter()
            .all(|e| e["regarding"]["name"] != dropper.name.as_str()),
        "no Event for the live pod that drops SYNs: {:?}",
        c.api.events()
    );
    let condition = c
        .api
        .node_conditions(podnet_testbed::cluster::NODE)
        .into_iter()
        .find(|x| x["type"] == "PodNetworkProblem");
    assert!(
        condition
            .as_ref()
            .is_some_and(|x| !x.to_string().contains("Vanished")),
        "{condition:?}"
    );

    // Kong's Admin API says why: its database is unreachable, so targets are not written.
    let (list, _) = wait(&agent, "Kong's hint in the diagnosis", |l| {
        find(l, &stale.to_string()).is_some_and(|v| v["client"]["kind"] == "kong")
    });
    let v = find(&list, &stale.to_string()).unwrap();
    let why = v["diagnosis"].as_str().unwrap();
    assert!(
        why.contains("Kong cannot reach its database, so new upstream targets are not written"),
        "{v:#}"
    );
    // Only where the client is the stale one: not for the live pod on this node.
    let a = find(&list, &alive.to_string()).unwrap();
    assert!(!a["diagnosis"].as_str().unwrap().contains("Kong"), "{a:#}");
    // The database is back: the hint stays, its cause goes.
    reachable.store(true, Ordering::Relaxed);
    let (list, _) = wait(&agent, "Kong's database reachable", |l| {
        find(l, &stale.to_string()).is_some_and(|v| {
            v["client"]["detail"]
                .as_str()
                .unwrap_or("")
                .contains("true")
        })
    });
    let v = find(&list, &stale.to_string()).unwrap();
    assert!(!v["diagnosis"].as_str().unwrap().contains("Kong"), "{v:#}");

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
    let _server = accept(&reborn.netns, SocketAddr::from(([0, 0, 0, 0], PORT))).unwrap();
    let (list, _) = wait(&agent, "the stale address cleared", |l| {
        find(l, &stale.to_string()).is_none()
    });
    // The dropping pod is still reported, and the outside address never was.
    assert!(find(&list, &alive.to_string()).is_some(), "{list:#?}");
    let recovery = pod_event(&agent, &c, &kong.name, "ConnectsToVanishedPodIPResolved");
    assert_eq!(recovery["type"], "Normal");
    assert!(find(&list, &outside.to_string()).is_none(), "{list:#?}");
    agent
        .wait_metrics("the series gone", WAIT, |m| {
            m.value_with("podnet_pod_unanswered_connects", &labels)
                .is_none()
        })
        .unwrap();
}

/// The client pod, in the connects listed, that `pod` names.
fn of(list: &[Value], pod: &str) -> Option<Value> {
    list.iter().find(|c| c["pod"] == pod).cloned()
}

fn asked(v: &Value) -> bool {
    v["client"]["kind"] == "kong"
}

#[test]
fn only_kong_pods_are_asked_for_a_hint() {
    let mut c = Cluster::new(3).unwrap();
    let by_image = c.node.pod(0).clone();
    let plain = c.node.pod(1).clone();
    let victim = c.node.pod(2).clone();
    // Kong known by its image alone (no chart labels); the other pod has neither.
    let mut obj = api_pod(&by_image);
    obj["spec"]["containers"] = json!([
        {"name": "log", "image": "busybox:1.36"},
        {"name": "proxy", "image": "kong/kong-gateway:3.6"},
    ]);
    c.api.apply(obj).unwrap();
    c.api.delete(&victim.namespace, &victim.name).unwrap();
    c.node.remove_pod(2).unwrap();
    let stale = SocketAddr::from((victim.ipv4, PORT));
    // Both serve a Kong-like `/status` saying the database is unreachable.
    let down = Arc::new(AtomicBool::new(false));
    let _admins = [
        kong_admin(&by_image.netns, Arc::clone(&down)).unwrap(),
        kong_admin(&plain.netns, Arc::clone(&down)).unwrap(),
    ];
    let _clients = [
        keep_connecting(&by_image.netns, vec![stale]),
        keep_connecting(&plain.netns, vec![stale]),
    ];
    let flags = ["--probe-interval", "2s", "--probe-timeout", "500ms"];
    let agent = c.agent(AGENT.as_ref(), &flags).unwrap();
    wait(&agent, "the Kong image's hint, the plain pod listed", |l| {
        of(l, &by_image.name).is_some_and(|v| asked(&v)) && of(l, &plain.name).is_some()
    });
    // Two more rounds in which both stay tracked: the plain pod is never asked.
    std::thread::sleep(Duration::from_secs(5));
    let list = connects(&agent);
    let p = of(&list, &plain.name).expect("the plain pod still listed");
    assert!(!asked(&p), "{p:#}");
    assert!(!p["diagnosis"].as_str().unwrap().contains("Kong"), "{p:#}");
    drop(agent);

    // `--kong-selector ""` selects every pod: the plain one is asked too.
    let agent = c
        .agent(
            AGENT.as_ref(),
            &[&flags[..], &["--kong-selector", ""]].concat(),
        )
        .unwrap();
    let (list, _) = wait(&agent, "every pod asked", |l| {
        of(l, &plain.name).is_some_and(|v| asked(&v))
    });
    let p = of(&list, &plain.name).unwrap();
    assert!(
        p["diagnosis"]
            .as_str()
            .unwrap()
            .contains("Kong cannot reach its database"),
        "{p:#}"
    );
}

/// Node mode has no labels or images: every pod with unanswered connects is asked, and the
/// shape of the answer to `/status` says whether it is Kong.
#[test]
fn node_mode_asks_every_pod() {
    let mut node = SimNode::new(2, &[]).unwrap();
    let client = node.pod(0).clone();
    let victim = node.remove_pod(1).unwrap();
    let stale = SocketAddr::from((victim.ipv4, PORT));
    let _admin = kong_admin(&client.netns, Arc::new(AtomicBool::new(false))).unwrap();
    let _client = keep_connecting(&client.netns, vec![stale]);
    let agent = Agent::start_binary(
        AGENT.as_ref(),
        &node,
        &["--probe-interval", "2s", "--probe-timeout", "500ms"],
    )
    .unwrap();
    let (list, _) = wait(&agent, "the unlabelled pod asked in node mode", |l| {
        l.iter()
            .any(|v| v["destination"] == stale.to_string().as_str() && asked(v))
    });
    let v = find(&list, &stale.to_string()).unwrap();
    assert!(
        v["diagnosis"]
            .as_str()
            .unwrap()
            .contains("Kong cannot reach its database"),
        "{v:#}"
    );
}

/// Kong's Helm chart with its ingress controller serves the Admin API only on
/// `127.0.0.1:8444 http2 ssl`: the hint is read there (self-signed certificate). DB mode with
/// the database down → the database text; DB-less before the controller pushed a
/// configuration → the DB-less text, never a database claim; DB-less configured → nothing.
#[test]
fn kong_admin_over_tls_and_db_less() {
    let mut node = SimNode::new(2, &[]).unwrap();
    let client = node.pod(0).clone();
    let victim = node.remove_pod(1).unwrap();
    let stale = SocketAddr::from((victim.ipv4, PORT)).to_string();
    let status = Arc::new(Mutex::new(kong::db_status(false)));
    let _admin = kong::kong_admin_tls(&client.netns, Arc::clone(&status)).unwrap();
    let _client = keep_connecting(&client.netns, vec![stale.parse().unwrap()]);
    let agent = Agent::start_binary(
        AGENT.as_ref(),
        &node,
        &["--probe-interval", "2s", "--probe-timeout", "500ms"],
    )
    .unwrap();
    let said = |v: &Value, key: &str| v[key].as_str().unwrap_or("").to_owned();
    let until = |what: &str, detail: &str| {
        let (list, _) = wait(&agent, what, |l| {
            find(l, &stale).is_some_and(|v| said(&v["client"], "detail").contains(detail))
        });
        let v = find(&list, &stale).unwrap().clone();
        assert!(
            said(&v["client"], "detail").starts_with("Kong https://127.0.0.1:8444/status: "),
            "{v:#}"
        );
        v
    };

    let v = until("Kong's database down, over TLS", "database.reachable false");
    assert!(
        said(&v, "diagnosis")
            .contains("Kong cannot reach its database, so new upstream targets are not written"),
        "{v:#}"
    );

    *status.lock().unwrap() = kong::dbless_status(Some(kong::EMPTY_CONFIG_HASH));
    let v = until("Kong DB-less, empty", "DB-less, no configuration loaded");
    let why = said(&v, "diagnosis");
    assert!(
        why.contains(
            "Kong has no configuration yet (DB-less; the ingress controller has not pushed one)"
        ),
        "{v:#}"
    );
    assert!(!why.contains("database"), "{v:#}");

    *status.lock().unwrap() = kong::dbless_status(Some("5c3a0b7e2f9d41c88f0e6a1b2c3d4e5f"));
    let v = until("Kong DB-less, configured", "DB-less, configuration loaded");
    assert!(!said(&v, "diagnosis").contains("Kong"), "{v:#}");
}
