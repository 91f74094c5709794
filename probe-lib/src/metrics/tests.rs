use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::model::{ResyncCause, SourceName};
use crate::pods::{ExpectedPod, PodId};
use crate::verdict::{NodeProblem, NodeReason, PodProblem, PodReason, PodVerdict, Verdicts};

fn pod(i: usize, problems: Vec<PodProblem>) -> PodVerdict {
    PodVerdict {
        pod: ExpectedPod {
            id: PodId {
                namespace: "ns".into(),
                name: format!("p{i}"),
            },
            interface: format!("cali{i:011}"),
            ips: vec![format!("10.244.0.{i}").parse().unwrap()],
            in_grace: false,
        },
        link: None,
        problems,
        pod_side: None,
        probes: Vec::new(),
    }
}

fn render(verdicts: Verdicts) -> String {
    let mut snap = Snapshot::initial("n".into(), SourceName::Node);
    snap.synced = true;
    snap.last_full_sync = Some(UNIX_EPOCH + Duration::from_secs(7));
    snap.verdicts = verdicts;
    let (_tx, rx) = watch::channel(Arc::new(snap));
    let mut m = Metrics::new("1.2.3");
    m.serve_snapshots(rx);
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
    assert!(many.contains("podnet_pods_with_route_problem 0\n"));
    assert!(!many.contains("podnet_pod_route_problem{"));
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
        "podnet_pod_route_problem{namespace=\"ns\",pod=\"p2\",interface=\"cali00000000002\",ip=\"10.244.0.2\",reason=\"route_missing\"} 1\n"
    ), "{text}");
    assert!(text.contains("podnet_pods_with_route_problem 1\n"));
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
    assert!(text.contains("podnet_build_info{version=\"1.2.3\"} 1\n"));
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
}
