//! Unit tests of the writer loop against a fake [`NodeApi`].

use std::sync::Mutex;

use podnet_probe::model::{ExpectedPod, PodId, PodReason, SourceName};
use podnet_probe::verdict::{PodProblem, PodVerdict};
use serde_json::json;

use super::*;

/// Records every call; fails the first `fail_patches` condition patches.
#[derive(Default)]
struct FakeApi {
    calls: Mutex<Vec<(String, Value)>>,
    fail_patches: Mutex<u32>,
    node: Value,
}

impl FakeApi {
    fn calls(&self, what: &str) -> Vec<Value> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(w, _)| w == what)
            .map(|(_, v)| v.clone())
            .collect()
    }
    fn record(&self, what: &str, v: &Value) {
        self.calls
            .lock()
            .unwrap()
            .push((what.to_owned(), v.clone()));
    }
}

impl NodeApi for &FakeApi {
    async fn node_status(&self, _: &str) -> Result<Value, WriteError> {
        self.record("get", &Value::Null);
        Ok(self.node.clone())
    }
    async fn patch_node_status(&self, _: &str, body: &Value) -> Result<(), WriteError> {
        self.record("patch", body);
        let mut fail = self.fail_patches.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(WriteError::Timeout);
        }
        Ok(())
    }
    async fn create_event(&self, _: &str, body: &Value) -> Result<(), WriteError> {
        self.record("event", body);
        Ok(())
    }
    async fn patch_event(&self, _: &str, _: &str, body: &Value) -> Result<(), WriteError> {
        self.record("series", body);
        Ok(())
    }
}

fn snapshot(broken: bool) -> Arc<Snapshot> {
    let mut s = Snapshot::initial("n1".into(), SourceName::Kubernetes);
    s.synced = true;
    s.generation = u64::from(broken) + 1;
    let ip = "10.244.0.2".parse().unwrap();
    s.verdicts.pods.push(PodVerdict {
        pod: ExpectedPod {
            id: PodId {
                namespace: "a".into(),
                name: "p".into(),
            },
            interface: "calip".into(),
            ips: vec![ip],
            in_grace: false,
            uid: "u".into(),
            meta: Default::default(),
        },
        link: None,
        problems: if broken {
            vec![PodProblem {
                reason: PodReason::RouteMissing,
                ip: Some(ip),
                detail: "no route".into(),
            }]
        } else {
            Vec::new()
        },
        pod_side: None,
        probes: Vec::new(),
        gateways: Vec::new(),
        probes_skipped: None,
    });
    Arc::new(s)
}

/// Read back first (the transition of a previous run is kept), a failed patch retried
/// with backoff, one Event per start.
#[tokio::test]
async fn reads_back_retries_and_tells_once() {
    let api = FakeApi {
        node: json!({"status": {"conditions": [{"type": "PodNetworkProblem",
            "status": "True", "reason": "PodRouteMissing", "message": "old",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}),
        fail_patches: Mutex::new(1),
        ..FakeApi::default()
    };
    let (tx, rx) = watch::channel(snapshot(true));
    let cfg = NotifyConfig {
        node: "n1".into(),
        conditions: true,
        events: true,
        heartbeat: Duration::from_secs(3600),
        events_burst: 5,
        events_per_minute: 0,
    };
    let metrics = NotifyMetrics::default();
    let stop = async {
        // The failed patch, its retry after about a second, then a second snapshot.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        tx.send(snapshot(true)).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let beats = std::cell::Cell::new(0);
    run(&api, cfg, rx, metrics, || beats.set(beats.get() + 1), stop).await;
    assert!(beats.get() >= 3, "{}", beats.get());
    assert_eq!(api.calls("get").len(), 1);
    let patches = api.calls("patch");
    assert_eq!(patches.len(), 2, "{patches:?}");
    let c = &patches[1]["status"]["conditions"][0];
    assert_eq!(c["status"], "True");
    assert_eq!(c["lastTransitionTime"], "2026-01-01T00:00:00Z");
    assert_eq!(api.calls("event").len(), 1);
    assert!(api.calls("series").is_empty());
}

/// Starts the rate limit held back are told on the writer's ticks as tokens return, oldest
/// first, without waiting for a new snapshot.
#[tokio::test]
async fn held_back_starts_are_told_as_tokens_return() {
    let api = FakeApi::default();
    let mut s = (*snapshot(true)).clone();
    for name in ["q", "r"] {
        let mut p = s.verdicts.pods[0].clone();
        p.pod.id.name = name.into();
        p.pod.uid = name.into();
        s.verdicts.pods.push(p);
    }
    let (_tx, rx) = watch::channel(Arc::new(s));
    let cfg = NotifyConfig {
        node: "n1".into(),
        conditions: false,
        events: true,
        heartbeat: Duration::from_secs(3600),
        // One at once, then one a tick at most (the bucket holds one).
        events_burst: 1,
        events_per_minute: 120,
    };
    let stop = tokio::time::sleep(Duration::from_millis(3500));
    run(&api, cfg, rx, NotifyMetrics::default(), || {}, stop).await;
    let told: Vec<Value> = api
        .calls("event")
        .iter()
        .map(|e| e["regarding"]["name"].clone())
        .collect();
    assert_eq!(told, vec![json!("p"), json!("q"), json!("r")]);
}
