//! Churn (issue 11): pods created and deleted at realistic CNI timing — the namespace first,
//! the API's pod and the veth with its routes later in either order, sometimes never wired —
//! around four steady pods, with the API source on and probes running. Afterwards: no false
//! alarm on a steady pod at any scrape, no leaked namespace or veth, the agent's file
//! descriptors and threads back to their baseline, no per-pod series left.
//!
//! 200 cycles in CI; `PODNET_CHURN_CYCLES=2000 cargo test -p podnet-agent --test churn --
//! --nocapture` is the long run (docs/reliability.md).

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use podnet_testbed::agent::Agent;
use podnet_testbed::cluster::{Cluster, api_pod};
use podnet_testbed::netns;
use podnet_testbed::sentinel::{Allowed, Sentinel};
use podnet_testbed::simnode::PodSpec;

/// The agent binary Cargo built for these tests.
const AGENT: &str = env!("CARGO_BIN_EXE_podnet-agent");

const STEADY: usize = 4;
/// Churning pods alive at the same time.
const IN_FLIGHT: usize = 8;
const WAIT: Duration = Duration::from_secs(60);

/// A deterministic xorshift: the same cycles on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn millis(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.next() % max)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Where one churning pod is in its life.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    /// Namespace created; the API and the CNI are still to come.
    Created,
    /// In the API, wiring pending.
    Listed,
    /// Wired (or never will be), running until deleted.
    Running,
}

struct Churner {
    index: usize,
    stage: Stage,
    due: Instant,
    /// The CNI never finishes for this one.
    never_wired: bool,
    /// The API learns of it before the CNI has wired it.
    api_first: bool,
}

/// `(fds, threads, rss KiB)` of a process.
fn footprint(pid: u32) -> (usize, usize, u64) {
    let count = |d: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{d}"))
            .map(|r| r.count())
            .unwrap_or(0)
    };
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0);
    (count("fd"), count("task"), rss)
}

fn cycles() -> usize {
    std::env::var("PODNET_CHURN_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
}

fn cali_links(c: &Cluster) -> BTreeSet<String> {
    c.node.node_links("cali").unwrap()
}

/// `ip netns list`, this node's namespaces only (other tests may run beside this one).
fn our_namespaces(c: &Cluster) -> BTreeSet<String> {
    let base = c.node.node_netns().trim_end_matches("-node").to_owned() + "-";
    std::fs::read_dir(netns::NETNS_DIR)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&base))
        .collect()
}

#[test]
fn pod_churn_leaves_no_trace_and_no_false_alarm() {
    let total = cycles();
    let mut c = Cluster::new(STEADY).unwrap();
    let agent: Agent = c
        .agent(
            AGENT.as_ref(),
            &["--probe-interval", "1s", "--probe", "out=icmp:198.51.100.1"],
        )
        .unwrap();
    let pid = agent.pid().unwrap();
    agent
        .wait_metrics("steady pods probed", WAIT, |m| {
            m.value("podnet_local_pods") == Some(STEADY as f64)
                && m.value_with(
                    "podnet_probes_total",
                    &[("target", "out"), ("result", "ok")],
                )
                .unwrap_or(0.0)
                    >= STEADY as f64
        })
        .unwrap();
    let steady_links = cali_links(&c);
    let netns_before = our_namespaces(&c);
    let baseline = footprint(pid);
    // Churning pods may be flagged while the CNI wires them; steady pods never.
    let sentinel = Sentinel::start(c.node.node_netns(), Duration::from_millis(50)).unwrap();
    let mut allowed = Allowed::default();

    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut live: VecDeque<Churner> = VecDeque::new();
    let (mut created, mut deleted, mut never, mut api_first) = (0, 0, 0, 0);
    let mut warm_rss = None;
    let started = Instant::now();
    while deleted < total {
        if live.len() < IN_FLIGHT && created < total {
            let spec = PodSpec::named("churn", &format!("c{created}"));
            let index = c.node.add_pod_netns(spec).unwrap();
            allowed
                .interfaces
                .insert(c.node.pod(index).interface.clone());
            sentinel.allow(allowed.clone());
            let never_wired = rng.chance(10);
            let first = rng.chance(50);
            never += usize::from(never_wired);
            api_first += usize::from(first);
            live.push_back(Churner {
                index,
                stage: Stage::Created,
                due: Instant::now() + rng.millis(50),
                never_wired,
                api_first: first,
            });
            created += 1;
        }
        let now = Instant::now();
        let mut k = 0;
        while k < live.len() {
            let ch = &mut live[k];
            if ch.due > now {
                k += 1;
                continue;
            }
            let p = c.node.pod(ch.index).clone();
            match ch.stage {
                Stage::Created => {
                    // Either the API hears of the pod first (its IP before the veth), or
                    // the CNI wires it first and the kubelet reports the IP after.
                    if ch.api_first {
                        c.api.apply(api_pod(&p)).unwrap();
                    } else if !ch.never_wired {
                        c.node.wire(ch.index, true).unwrap();
                    }
                    ch.stage = Stage::Listed;
                    ch.due = now + rng.millis(300);
                }
                Stage::Listed => {
                    if !ch.api_first {
                        c.api.apply(api_pod(&p)).unwrap();
                    } else if !ch.never_wired {
                        c.node.wire(ch.index, true).unwrap();
                    }
                    ch.stage = Stage::Running;
                    ch.due = now + rng.millis(800);
                }
                Stage::Running => {
                    // Deletion: the API object and the sandbox go in either order.
                    if rng.chance(50) {
                        c.api.delete(&p.namespace, &p.name);
                        c.node.remove_pod(ch.index).unwrap();
                    } else {
                        c.node.remove_pod(ch.index).unwrap();
                        c.api.delete(&p.namespace, &p.name);
                    }
                    live.remove(k);
                    deleted += 1;
                    if deleted == total / 10 {
                        warm_rss = Some(footprint(pid).2);
                    }
                    continue;
                }
            }
            k += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let churn_time = started.elapsed();

    // Settled: only the steady pods, healthy, no per-pod series.
    let m = agent
        .wait_metrics("only the steady pods, healthy", WAIT, |m| {
            m.value("podnet_local_pods") == Some(STEADY as f64)
                && m.problems().is_empty()
                && m.node_problems().is_empty()
                && m.pod_series().is_empty()
        })
        .unwrap();
    assert_eq!(m.value("podnet_kube_watch_healthy"), Some(1.0));
    let status = agent.status().unwrap();
    assert_eq!(status["pods"].as_array().unwrap().len(), STEADY);
    let v = sentinel.violations();
    assert!(v.is_empty(), "steady pods flagged during churn: {v:#?}");
    // A deleted namespace's veth goes when the kernel's namespace cleanup runs (a work queue):
    // give it a moment, then it must be gone, or something still holds the namespace.
    let deadline = Instant::now() + Duration::from_secs(10);
    let t = Instant::now();
    while cali_links(&c) != steady_links && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("veths gone {:?} after the checks passed", t.elapsed());
    assert_eq!(cali_links(&c), steady_links, "leaked veths");
    assert_eq!(our_namespaces(&c), netns_before, "leaked namespaces");

    // File descriptors and threads back to the baseline (workers wind down within seconds).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut now = footprint(pid);
    while (now.0 > baseline.0 || now.1 > baseline.1) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        now = footprint(pid);
    }
    eprintln!(
        "churn: {total} cycles in {:.1}s ({never} never wired, {api_first} listed before \
         wiring), {} scrapes; fds {} -> {}, threads {} -> {}, RSS {} KiB at start, {} KiB \
         after warm-up ({} cycles), {} KiB at the end",
        churn_time.as_secs_f64(),
        sentinel.scrapes(),
        baseline.0,
        now.0,
        baseline.1,
        now.1,
        baseline.2,
        warm_rss.unwrap_or(0),
        total / 10,
        now.2
    );
    assert!(now.0 <= baseline.0, "fds {} -> {}", baseline.0, now.0);
    assert!(now.1 <= baseline.1, "threads {} -> {}", baseline.1, now.1);
    drop(sentinel);
}
