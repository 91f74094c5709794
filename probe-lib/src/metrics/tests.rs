use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::model::{ResyncCause, SourceName};
use crate::pods::{ExpectedPod, PodId};
use crate::verdict::{NodeProblem, NodeReason, PodProblem, PodReason, PodVerdict, Verdicts};

pub(super) fn pod(i: usize, problems: Vec<PodProblem>) -> PodVerdict {
    PodVerdict {
        pod: ExpectedPod {
            id: PodId {
                namespace: "ns".into(),
                name: format!("p{i}"),
            },
            interface: format!("cali{i:011}"),
            ips: vec![format!("10.244.0.{i}").parse().unwrap()],
            in_grace: false,
            meta: Default::default(),
            uid: String::new(),
        },
        link: None,
        problems,
        pod_side: None,
        probes: Vec::new(),
        gateways: Vec::new(),
        probes_skipped: None,
    }
}

pub(super) fn render(verdicts: Verdicts) -> String {
    render_capped(verdicts, DEFAULT_POD_SERIES_LIMIT)
}

fn render_capped(verdicts: Verdicts, max_pods: usize) -> String {
    let mut snap = Snapshot::initial("n".into(), SourceName::Node);
    snap.synced = true;
    snap.last_full_sync = Some(UNIX_EPOCH + Duration::from_secs(7));
    snap.verdicts = verdicts;
    let (_tx, rx) = watch::channel(Arc::new(snap));
    let mut m = Metrics::new("1.2.3");
    m.serve_snapshots_capped(rx, max_pods);
    m.monitor().resynced(ResyncCause::Overrun, 0.01);
    m.encode().unwrap()
}

fn samples(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect()
}

#[test]
fn healthy_node_series_do_not_grow_with_pods() {
    let few = render(Verdicts {
        pods: (1..=3).map(|i| pod(i, vec![])).collect(),
        node: vec![],
    });
    let many = render(Verdicts {
        pods: (1..=250).map(|i| pod(i, vec![])).collect(),
        node: vec![],
    });
    assert_eq!(samples(&few).len(), samples(&many).len());
    assert!(many.contains("podnet_local_pods 250\n"), "{many}");
    assert!(many.contains("podnet_broken_pods 0\n"));
    assert!(!many.contains("podnet_pod_problem{"));
    assert!(!many.contains("podnet_node_problem{"));
}

#[test]
fn problems_are_series_with_bounded_labels() {
    let ip: IpAddr = "10.244.0.2".parse().unwrap();
    let text = render(Verdicts {
        pods: vec![
            pod(1, vec![]),
            pod(
                2,
                vec![PodProblem {
                    reason: PodReason::RouteMissing,
                    ip: Some(ip),
                    detail: "free text never becomes a label".into(),
                }],
            ),
        ],
        node: vec![
            NodeProblem {
                reason: NodeReason::ForwardingDisabled,
                detail: "ipv4".into(),
            },
            NodeProblem {
                reason: NodeReason::ForwardingDisabled,
                detail: "ipv6".into(),
            },
        ],
    });
    assert!(text.contains(
        "podnet_pod_problem{namespace=\"ns\",pod=\"p2\",interface=\"cali00000000002\",ip=\"10.244.0.2\",reason=\"route_missing\"} 1\n"
    ), "{text}");
    assert!(text.contains("podnet_broken_pods 1\n"));
    assert_eq!(
        text.matches("podnet_node_problem{reason=\"forwarding_disabled\"} 1")
            .count(),
        1
    );
    assert!(!text.contains("free text"));
}

#[test]
fn counters_info_and_timestamps() {
    let text = render(Verdicts::default());
    for cause in ResyncCause::ALL {
        assert!(
            text.contains(&format!(
                "podnet_netlink_resyncs_total{{cause=\"{}\"}}",
                cause.as_str()
            )),
            "{text}"
        );
    }
    assert!(text.contains("podnet_netlink_resyncs_total{cause=\"overrun\"} 1\n"));
    assert!(text.contains("podnet_build_info{version=\"1.2.3\",revision=\"unknown\"} 1\n"));
    assert!(text.contains("podnet_netlink_last_resync_timestamp_seconds 7"));
    assert!(text.contains("podnet_synced 1\n"));
    assert!(text.contains("# TYPE podnet_netlink_resync_duration_seconds histogram"));
    // Process metrics, from /proc/self.
    let rss = samples(&text)
        .into_iter()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap();
    assert!(rss > 1e6, "{rss}");
    assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
    assert!(text.contains("process_open_fds "));
    assert!(text.contains("\nprocess_max_fds "), "{text}");
}

fn broken(i: usize) -> PodVerdict {
    pod(
        i,
        vec![PodProblem {
            reason: PodReason::RouteMissing,
            ip: None,
            detail: String::new(),
        }],
    )
}

#[test]
fn per_pod_series_are_capped_and_the_rest_counted() {
    let verdicts = || Verdicts {
        pods: (1..=10).map(broken).chain([pod(11, vec![])]).collect(),
        node: vec![],
    };
    let capped = render_capped(verdicts(), 4);
    assert_eq!(capped.matches("podnet_pod_problem{").count(), 4);
    assert!(
        capped.contains("podnet_pod_series_truncated 6\n"),
        "{capped}"
    );
    // Node-level gauges still count every pod.
    assert!(capped.contains("podnet_broken_pods 10\n"));
    let full = render_capped(verdicts(), 10);
    assert_eq!(full.matches("podnet_pod_problem{").count(), 10);
    assert!(full.contains("podnet_pod_series_truncated 0\n"));
}

#[test]
fn node_problem_reasons_once_even_when_not_adjacent() {
    let p = |reason| NodeProblem {
        reason,
        detail: String::new(),
    };
    let text = render(Verdicts {
        pods: vec![],
        node: vec![
            p(NodeReason::ForwardingDisabled),
            p(NodeReason::KubeWatchStalled),
            p(NodeReason::ForwardingDisabled),
        ],
    });
    assert_eq!(
        text.matches("podnet_node_problem{reason=\"forwarding_disabled\"}")
            .count(),
        1,
        "{text}"
    );
}

#[test]
fn target_unreachable_names_its_target_other_reasons_do_not() {
    let p = |reason, detail: &str| NodeProblem {
        reason,
        detail: detail.into(),
    };
    let text = render(Verdicts {
        pods: vec![],
        node: vec![
            p(NodeReason::TargetUnreachable, "dns"),
            p(NodeReason::ForwardingDisabled, "ipv4"),
            p(NodeReason::TargetUnreachable, "api"),
            p(NodeReason::TargetUnreachable, "dns"),
        ],
    });
    let node: Vec<&str> = samples(&text)
        .into_iter()
        .filter(|l| l.starts_with("podnet_node_problem"))
        .collect();
    assert_eq!(
        node,
        [
            "podnet_node_problem{reason=\"forwarding_disabled\"} 1",
            "podnet_node_problem{reason=\"target_unreachable\",target=\"api\"} 1",
            "podnet_node_problem{reason=\"target_unreachable\",target=\"dns\"} 1",
        ],
        "{text}"
    );
}

#[test]
fn workers_are_exported() {
    let workers = Workers::default();
    let alive = workers.register("monitor");
    drop(workers.register("prober"));
    let mut m = Metrics::new("1");
    m.watch_workers(workers);
    let text = m.encode().unwrap();
    assert!(
        text.contains("podnet_worker_up{worker=\"monitor\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("podnet_worker_up{worker=\"prober\"} 0\n"),
        "{text}"
    );
    drop(alive);
}

#[test]
fn probe_series_are_pre_created_only_where_possible() {
    use crate::model::{Direction, ProbeResult, Protocol};
    let m = Metrics::with_revision("1", "abc123");
    m.probe()
        .register_target("node", Protocol::Icmp, Direction::PodToTarget);
    m.probe()
        .register_target("web", Protocol::Tcp, Direction::PodToTarget);
    m.probe()
        .register_target("dns", Protocol::Dns, Direction::PodToTarget);
    let text = m.encode().unwrap();
    let series = |target: &str| -> Vec<&str> {
        samples(&text)
            .into_iter()
            .filter(|l| l.starts_with("podnet_probes_total{") && l.contains(target))
            .collect()
    };
    let has = |lines: &[&str], result: &str| {
        lines
            .iter()
            .any(|l| l.contains(&format!("result=\"{result}\"")))
    };
    let dns_only = ["servfail", "nxdomain", "dns_refused", "wrong_answer"];
    // An ICMP echo is never refused; a TCP connect is; neither gets a DNS or HTTP answer.
    let icmp = series("target=\"node\"");
    assert_eq!(icmp.len(), ProbeResult::ALL.len() - 7, "{text}");
    assert!(!has(&icmp, "refused"), "{text}");
    let tcp = series("target=\"web\"");
    assert_eq!(tcp.len(), ProbeResult::ALL.len() - 6, "{text}");
    assert!(has(&tcp, "refused") && dns_only.iter().all(|r| !has(&tcp, r)));
    // A DNS query ends in a DNS answer or as any probe does, never in a TCP reset.
    let dns = series("target=\"dns\"");
    assert_eq!(dns.len(), ProbeResult::ALL.len() - 3, "{text}");
    assert!(!has(&dns, "refused") && dns_only.iter().all(|r| has(&dns, r)));
    assert!(text.contains("podnet_build_info{version=\"1\",revision=\"abc123\"} 1\n"));
}
