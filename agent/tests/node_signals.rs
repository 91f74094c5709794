//! The node condition and Events, written by the real agent in Kubernetes mode on a simulated
//! node, read back from the API double's store and its request log.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use podnet_kube_double::{KubeApiServer, PodBuilder, WriteRecord, uid_for};
use podnet_testbed::agent::Agent;
use podnet_testbed::cluster::{Cluster, NODE};
use podnet_testbed::exposition::Samples;
use serde_json::{Value, json};

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");
const WAIT: Duration = Duration::from_secs(60);
const CONDITION: &str = "PodNetworkProblem";

fn agent(c: &Cluster, extra: &[&str]) -> Agent {
    let mut args = vec!["--no-probes"];
    args.extend_from_slice(extra);
    c.agent(AGENT.as_ref(), &args).unwrap()
}

/// Our condition, if written.
fn condition(api: &KubeApiServer) -> Option<Value> {
    api.node_conditions(NODE)
        .into_iter()
        .find(|c| c["type"] == CONDITION)
}

fn wait_for<T>(agent: &Agent, what: &str, f: impl FnMut() -> Option<T>) -> T {
    agent.wait_for(what, WAIT, f).unwrap()
}

fn wait_condition(agent: &Agent, api: &KubeApiServer, status: &str, reason: &str) -> Value {
    wait_for(agent, &format!("condition {status} {reason}"), || {
        condition(api).filter(|c| c["status"] == status && c["reason"] == reason)
    })
}

fn status_patches(api: &KubeApiServer) -> Vec<WriteRecord> {
    api.writes()
        .into_iter()
        .filter(|w| w.path == format!("/api/v1/nodes/{NODE}/status"))
        .collect()
}

fn event_writes(api: &KubeApiServer) -> Vec<WriteRecord> {
    api.writes()
        .into_iter()
        .filter(|w| w.path.starts_with("/apis/events.k8s.io/"))
        .collect()
}

/// Events of `reason` about the object named `name`.
fn events(api: &KubeApiServer, name: &str, reason: &str) -> Vec<Value> {
    api.events()
        .into_iter()
        .filter(|e| e["regarding"]["name"] == name && e["reason"] == reason)
        .collect()
}

#[test]
fn condition_and_events_follow_a_deleted_route_its_repair_and_a_flap() {
    let c = Cluster::new(3).unwrap();
    // Conditions podnet does not own: the kubelet's and the CNI's.
    let others = vec![
        json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
               "lastTransitionTime": "2026-01-01T00:00:00Z"}),
        json!({"type": "NetworkUnavailable", "status": "False", "reason": "CalicoIsUp",
               "lastTransitionTime": "2026-01-01T00:00:00Z"}),
    ];
    c.api.set_node_conditions(NODE, others.clone());
    let agent = agent(&c, &["--condition-heartbeat", "2s"]);

    let healthy = wait_condition(&agent, &c.api, "False", "PodNetworkHealthy");
    assert_eq!(healthy["message"], "all 3 pods on the node are wired");
    let first_transition = healthy["lastTransitionTime"].clone();
    // Strategic merge by type: the other conditions are untouched.
    let all = c.api.node_conditions(NODE);
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(&all[..2], &others[..]);
    let patch = &status_patches(&c.api)[0];
    assert_eq!(patch.method, "PATCH");
    assert_eq!(patch.content_type, "application/strategic-merge-patch+json");
    assert_eq!(
        patch.body["status"]["conditions"].as_array().unwrap().len(),
        1
    );

    // Heartbeat: rewritten every 2 s with nothing changed; only lastHeartbeatTime moves.
    let before = status_patches(&c.api).len();
    let beat0 = condition(&c.api).unwrap()["lastHeartbeatTime"].clone();
    let started = Instant::now();
    let beat = wait_for(&agent, "a heartbeat", || {
        condition(&c.api).filter(|c| c["lastHeartbeatTime"] != beat0)
    });
    assert_eq!(beat["lastTransitionTime"], first_transition);
    assert!(
        started.elapsed() <= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_secs(6));
    let beats = status_patches(&c.api).len() - before;
    assert!((2..=6).contains(&beats), "{beats} patches in about 6 s");
    // Nothing changed, so no Event yet.
    assert!(
        event_writes(&c.api).is_empty(),
        "{:?}",
        event_writes(&c.api)
    );

    // A deleted route: the condition says so, with the pod; one Warning on the pod.
    let p = c.node.pod(1).clone();
    c.node.delete_route(1, p.ipv4.into()).unwrap();
    let bad = wait_condition(&agent, &c.api, "True", "PodRouteMissing");
    let msg = bad["message"].as_str().unwrap();
    assert!(msg.starts_with("1 of 3 pods have problems"), "{msg}");
    assert!(
        msg.contains(&format!("{}/{}", p.namespace, p.name)),
        "{msg}"
    );
    assert_ne!(bad["lastTransitionTime"], first_transition);
    let warning = wait_for(&agent, "a Warning Event", || {
        events(&c.api, &p.name, "PodRouteMissing").pop()
    });
    assert_eq!(warning["type"], "Warning");
    assert_eq!(warning["reportingController"], "podnet.io/agent");
    assert_eq!(warning["reportingInstance"], NODE);
    assert_eq!(warning["metadata"]["namespace"], p.namespace.as_str());
    assert_eq!(
        warning["regarding"],
        json!({"apiVersion": "v1", "kind": "Pod", "namespace": p.namespace, "name": p.name,
               "uid": uid_for(&format!("{}/{}", p.namespace, p.name))})
    );
    let note = warning["note"].as_str().unwrap();
    assert!(note.contains(&p.ipv4.to_string()), "{note}");
    // Scrapes and re-evaluations do not repeat it.
    for _ in 0..10 {
        agent.metrics().unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(event_writes(&c.api).len(), 1, "{:?}", event_writes(&c.api));
    let transition = condition(&c.api).unwrap()["lastTransitionTime"].clone();
    assert_eq!(
        transition, bad["lastTransitionTime"],
        "moved without a status change"
    );

    // Repaired: the condition clears, a Normal Event says so.
    c.node.restore_routes(1).unwrap();
    let cleared = wait_condition(&agent, &c.api, "False", "PodNetworkHealthy");
    assert_ne!(cleared["lastTransitionTime"], transition);
    let recovery = wait_for(&agent, "a recovery Event", || {
        events(&c.api, &p.name, "PodRouteMissingResolved").pop()
    });
    assert_eq!(recovery["type"], "Normal");

    // A flap: the same two Events count a series, no new ones.
    for round in 2..=3 {
        c.node.delete_route(1, p.ipv4.into()).unwrap();
        wait_for(&agent, "series of the Warning", || {
            events(&c.api, &p.name, "PodRouteMissing")
                .pop()
                .filter(|e| e["series"]["count"] == round)
        });
        c.node.restore_routes(1).unwrap();
        wait_for(&agent, "series of the recovery", || {
            events(&c.api, &p.name, "PodRouteMissingResolved")
                .pop()
                .filter(|e| e["series"]["count"] == round)
        });
    }
    assert_eq!(c.api.events().len(), 2, "{:?}", c.api.events());
    let writes = event_writes(&c.api);
    assert_eq!(writes.len(), 6, "{writes:?}");
    assert!(
        writes.iter().all(|w| (200..300).contains(&w.code)),
        "{writes:?}"
    );
    let series: Vec<&WriteRecord> = writes.iter().filter(|w| w.method == "PATCH").collect();
    assert_eq!(series.len(), 4);
    assert_eq!(series[0].content_type, "application/merge-patch+json");

    // The API double records a write when it arrives, the agent counts it when the answer
    // is back: wait for the counters to catch up, then they must be exact.
    let written = |m: &Samples, object: &str| {
        m.value_with(
            "podnet_kube_writes_total",
            &[("object", object), ("result", "ok")],
        )
        .unwrap_or(0.0)
    };
    let m = agent
        .wait_metrics("the writes counted", WAIT, |m| {
            written(m, "event") >= 6.0 && written(m, "condition") >= 6.0
        })
        .unwrap();
    assert_eq!(written(&m, "event"), 6.0);
    assert_eq!(m.value("podnet_events_dropped_total"), Some(0.0));
    // Still the kubelet's and the CNI's conditions, as they were.
    assert_eq!(&c.api.node_conditions(NODE)[..2], &others[..]);
}

/// 200 problems at once: a burst of Events, the rest held back (not lost) and told as
/// tokens return, never beyond the bucket; the held-back ones whose pods went away are not
/// told at all.
#[test]
fn the_event_rate_limit_holds_under_200_simultaneous_problems_and_the_rest_come_later() {
    let c = Cluster::new(1).unwrap();
    let agent = agent(
        &c,
        &[
            "--wiring-grace",
            "1s",
            "--events-burst",
            "10",
            "--events-per-minute",
            "12",
        ],
    );
    wait_condition(&agent, &c.api, "False", "PodNetworkHealthy");
    // 200 pods with IPs and no interface: after the grace period, 200 problems at once.
    let start = Instant::now();
    c.api.bulk_insert((0..200u8).map(|i| {
        PodBuilder::new("burst", &format!("ghost-{i}"))
            .node(NODE)
            .ipv4(Ipv4Addr::new(10, 244, 200, i))
            .build()
    }));
    // The watch delivers them within moments; the condition follows to the full count.
    wait_for(&agent, "all 200 in the condition", || {
        condition(&c.api).filter(|c| {
            c["reason"] == "HostInterfaceMissing"
                && c["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("200 of 201 pods have problems"))
        })
    });
    agent
        .wait_metrics("starts held back", WAIT, |m| {
            m.value("podnet_events_pending").is_some_and(|d| d >= 150.0)
        })
        .unwrap();
    // 12 a minute: one every 5 s after the burst of 10; two more within about 10 s.
    wait_for(&agent, "held-back starts told later", || {
        (event_writes(&c.api).len() >= 12).then_some(())
    });
    // Writes read before the clock: each one counted happened within `elapsed` (read the
    // other way round, a write landing in between would exceed the bucket's allowance).
    let writes = event_writes(&c.api).len() as f64;
    // The condition's counts moved with the watch; its writes did not follow each move.
    let patches = status_patches(&c.api).len() as f64;
    let elapsed = start.elapsed().as_secs_f64();
    // The bucket: 10 at once, then 12 a minute.
    let allowed = 10.0 + elapsed * 12.0 / 60.0 + 1.0;
    let dropped = agent
        .metrics()
        .unwrap()
        .value("podnet_events_dropped_total")
        .unwrap_or(0.0);
    eprintln!(
        "200 problems: {writes} Event writes, {dropped} dropped, {patches} condition writes \
         in {elapsed:.1} s"
    );
    assert!(
        patches <= 3.0 + elapsed / 10.0,
        "{patches} condition writes"
    );
    assert!(writes >= 12.0, "{writes}");
    assert!(writes <= allowed, "{writes} Event writes in {elapsed:.1} s");
    // Every write the API double received is counted once. The two are read at different
    // moments (a write in flight is in the double's log before the agent counts it; the
    // bucket refills one every 5 s), so the equality is the wait's predicate: it must hold
    // at a moment no write is in flight.
    let ok = |m: &Samples| {
        m.value_with(
            "podnet_kube_writes_total",
            &[("object", "event"), ("result", "ok")],
        )
    };
    let m = agent
        .wait_metrics("every Event write counted", WAIT, |m| {
            ok(m) == Some(event_writes(&c.api).len() as f64)
        })
        .unwrap();
    let ok = ok(&m).unwrap();
    assert!(ok >= writes, "{ok} ok of {writes} writes");
    // Every start was held, none dropped: told, or waiting its turn.
    let (pending, dropped) = (
        m.value("podnet_events_pending").unwrap(),
        m.value("podnet_events_dropped_total").unwrap(),
    );
    assert_eq!(dropped, 0.0);
    // (One may be between leaving the queue and its answer.)
    assert!(pending + ok >= 199.0, "{pending} pending, {ok} written");
    // The pods are deleted before their turn: the queue empties without an Event.
    for i in 0..200u8 {
        c.api.delete("burst", &format!("ghost-{i}"));
    }
    agent
        .wait_metrics("queue emptied", WAIT, |m| {
            m.value("podnet_events_pending") == Some(0.0)
        })
        .unwrap();
    // The gauge drops before the last popped start's write is answered: wait until every
    // Event write the API double received has been answered to the agent (its counter).
    agent
        .wait_metrics("last Event write answered", WAIT, |m| {
            let answered: f64 = m
                .named("podnet_kube_writes_total")
                .filter(|s| s.labels.get("object").map(String::as_str) == Some("event"))
                .map(|s| s.value)
                .sum();
            answered >= event_writes(&c.api).len() as f64
        })
        .unwrap();
    let told = event_writes(&c.api).len();
    // Longer than a token's 5 s: a start still held would have been told by then.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(
        event_writes(&c.api).len(),
        told,
        "{:?}",
        event_writes(&c.api)
    );
    assert!(told < 200 / 2, "{told} Events");
}

#[test]
fn the_opt_outs_write_nothing_of_their_kind() {
    for (flags, conditions, told) in [
        (&["--no-conditions", "--no-events"][..], false, false),
        (&["--no-events"][..], true, false),
        (&["--no-conditions"][..], false, true),
    ] {
        let c = Cluster::new(2).unwrap();
        let agent = agent(&c, flags);
        let p = c.node.pod(0).clone();
        c.node.delete_route(0, p.ipv4.into()).unwrap();
        agent
            .wait_metrics("the problem", WAIT, |m| {
                m.problems().iter().any(|(_, _, r)| r == "route_missing")
            })
            .unwrap();
        if conditions {
            wait_condition(&agent, &c.api, "True", "PodRouteMissing");
        }
        if told {
            wait_for(&agent, "the Warning", || {
                events(&c.api, &p.name, "PodRouteMissing").pop()
            });
        }
        // Time for what should not come.
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(!status_patches(&c.api).is_empty(), conditions, "{flags:?}");
        assert_eq!(!event_writes(&c.api).is_empty(), told, "{flags:?}");
        assert_eq!(condition(&c.api).is_some(), conditions, "{flags:?}");
        let m = agent.metrics().unwrap();
        let registered = m
            .value_with(
                "podnet_kube_writes_total",
                &[("object", "event"), ("result", "ok")],
            )
            .is_some();
        assert_eq!(registered, conditions || told, "{flags:?}");
    }
}

#[test]
fn the_writer_is_a_supervised_worker() {
    let c = Cluster::new(1).unwrap();
    let agent = agent(&c, &["--test-fault", "kill:notify"]);
    let body = wait_for(&agent, "/healthz red", || {
        let (code, body) = agent.get("/healthz").unwrap();
        (code != 200).then_some(body)
    });
    assert!(body.contains("notify: panicked"), "{body:?}");
    let m = agent.metrics().unwrap();
    assert_eq!(
        m.value_with("podnet_worker_up", &[("worker", "notify")]),
        Some(0.0)
    );
}
