use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::watch;
use tokio::time::sleep;

use super::*;
use crate::host::fake::FakeHost;
use crate::host::{Address, HostDump, KernelEvent, ResyncCause, Route};
use crate::metrics::Metrics;
use crate::model::PodReason;

use crate::fixtures::veth;

fn host_route(ip: &str, oif: u32) -> Route {
    crate::fixtures::route(
        &IpNet::from(ip.parse::<IpAddr>().unwrap()).to_string(),
        Some(oif),
    )
}

fn pod_addr(ip: &str) -> Address {
    Address {
        index: 2,
        ip: ip.parse().unwrap(),
        prefix_len: 32,
        scope: 0,
    }
}

use std::net::IpAddr;

/// A node with pods on cali1 (10.244.0.1, nsid 1) and cali2 (10.244.0.2, nsid 2).
fn fake_node() -> FakeHost {
    let host = FakeHost::new(HostDump {
        links: vec![veth(5, "cali1", 1), veth(6, "cali2", 2)],
        routes: vec![host_route("10.244.0.1", 5), host_route("10.244.0.2", 6)],
        ..HostDump::default()
    });
    host.set_peer_addresses(1, vec![pod_addr("10.244.0.1")]);
    host.set_peer_addresses(2, vec![pod_addr("10.244.0.2")]);
    host
}

struct Running {
    rx: watch::Receiver<Arc<Snapshot>>,
    metrics: MonitorMetrics,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

fn start(host: FakeHost, resync: Duration) -> Running {
    let metrics = Metrics::new("test").monitor();
    let config = MonitorConfig {
        node_name: "node-a".into(),
        pods: PodSource::Links {
            prefix: "cali".into(),
        },
        resync_interval: resync,
        probes: None,
        cni: crate::cni::Cni::Calico,
        remote_blocks: None,
        felix: None,
        services: None,
        control_plane: None,
    };
    let (monitor, rx) = Monitor::new(host, config, metrics.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(monitor.run(async {
        let _ = stopped.await;
    }));
    Running {
        rx,
        metrics,
        stop: Some(stop),
        task,
    }
}

impl Running {
    async fn until(&mut self, what: &str, f: impl Fn(&Snapshot) -> bool) -> Arc<Snapshot> {
        let got = tokio::time::timeout(Duration::from_secs(600), self.rx.wait_for(|s| f(s)))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|s| Arc::clone(&s));
        got.unwrap_or_else(|| {
            panic!(
                "timed out waiting for: {what}; last: {:#?}",
                self.rx.borrow()
            )
        })
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

fn reasons(s: &Snapshot) -> Vec<(String, &'static str)> {
    s.verdicts
        .pods
        .iter()
        .flat_map(|p| {
            p.problems
                .iter()
                .map(|x| (p.pod.interface.clone(), x.reason.as_str()))
        })
        .collect()
}

fn healthy_with(n: usize) -> impl Fn(&Snapshot) -> bool {
    move |s| s.synced && s.verdicts.pods.len() == n && reasons(s).is_empty()
}

#[tokio::test(start_paused = true)]
async fn first_sync_publishes_pods_with_their_ips() {
    let host = fake_node();
    let mut m = start(host.clone(), Duration::from_secs(60));
    let s = m.until("two healthy pods", healthy_with(2)).await;
    assert_eq!(
        s.verdicts.pods[0].pod.ips,
        vec!["10.244.0.1".parse::<IpAddr>().unwrap()]
    );
    assert!(s.last_full_sync.is_some());
    assert_eq!(s.node, "node-a");
    assert_eq!(m.metrics.resync_count(ResyncCause::Startup), 1);
    m.stop().await;
}

#[tokio::test(start_paused = true)]
async fn route_deletion_event_is_judged_without_a_dump() {
    let host = fake_node();
    let mut m = start(host.clone(), Duration::from_secs(60));
    m.until("healthy", healthy_with(2)).await;
    host.emit(KernelEvent::RouteRemoved(host_route("10.244.0.2", 6)));
    let s = m.until("route missing", |s| !reasons(s).is_empty()).await;
    assert_eq!(reasons(&s), vec![("cali2".to_owned(), "route_missing")]);
    assert_eq!(host.dumps(), 1, "a route event must not need a re-dump");
    host.emit(KernelEvent::RouteAdded(host_route("10.244.0.2", 6)));
    m.until("repaired", healthy_with(2)).await;
    m.stop().await;
}

#[tokio::test(start_paused = true)]
async fn every_flap_of_a_route_is_counted_once() {
    let host = fake_node();
    let mut m = start(host.clone(), Duration::from_secs(3600));
    m.until("healthy", healthy_with(2)).await;
    for flap in 1..=3 {
        host.emit(KernelEvent::RouteRemoved(host_route("10.244.0.2", 6)));
        m.until("route missing", |s| !reasons(s).is_empty()).await;
        host.emit(KernelEvent::RouteAdded(host_route("10.244.0.2", 6)));
        m.until("repaired", healthy_with(2)).await;
        assert_eq!(m.metrics.problems_raised(PodReason::RouteMissing), flap);
    }
    assert_eq!(m.metrics.problems_raised(PodReason::InterfaceDown), 0);
    m.stop().await;
}

#[tokio::test(start_paused = true)]
async fn pod_deletion_resyncs_and_drops_the_pod() {
    let host = fake_node();
    let mut m = start(host.clone(), Duration::from_secs(60));
    m.until("healthy", healthy_with(2)).await;
    host.emit(KernelEvent::LinkRemoved(5));
    let s = m.until("one pod", healthy_with(1)).await;
    assert_eq!(s.verdicts.pods[0].pod.interface, "cali2");
    let metrics = m.metrics.clone();
    m.until("resync after link removal", move |_| {
        metrics.resync_count(ResyncCause::LinkDown) == 1
    })
    .await;
    m.stop().await;
}

#[tokio::test(start_paused = true)]
async fn overrun_resyncs_and_finds_silent_changes() {
    let host = fake_node();
    let mut m = start(host.clone(), Duration::from_secs(3600));
    m.until("healthy", healthy_with(2)).await;
    host.change_silently(|d| d.routes.retain(|r| r.oif != Some(5)));
    host.overrun();
    let s = m
        .until("route missing after overrun", |s| !reasons(s).is_empty())
        .await;
    assert_eq!(reasons(&s), vec![("cali1".to_owned(), "route_missing")]);
    assert_eq!(m.metrics.resync_count(ResyncCause::Overrun), 1);
    m.stop().await;
}

/// Regression (issue 11, netlink storm): events queued before an overrun and delivered after
/// the re-read must not undo it. Here a route was deleted and re-added, the re-add lost: the
/// stale deletion kept `route_missing` on a healthy pod until the next periodic re-sync.
#[tokio::test(start_paused = true)]
async fn a_stale_backlog_after_an_overrun_does_not_undo_the_resync() {
    let host = fake_node();
    let mut m = start(host.clone(), Duration::from_secs(3600));
    m.until("healthy", healthy_with(2)).await;
    host.overrun_with_backlog(vec![KernelEvent::RouteRemoved(host_route("10.244.0.1", 5))]);
    for _ in 0..50 {
        sleep(Duration::from_millis(10)).await;
        if m.metrics.resync_count(ResyncCause::Overrun) == 1 {
            break;
        }
    }
    assert_eq!(m.metrics.resync_count(ResyncCause::Overrun), 1);
    sleep(Duration::from_secs(1)).await;
    let s = m.rx.borrow().clone();
    assert!(
        reasons(&s).is_empty(),
        "stale event applied: {:?}",
        reasons(&s)
    );
    m.stop().await;
}

#[tokio::test(start_paused = true)]
async fn periodic_resync_is_the_safety_net() {
    let host = fake_node();
    let mut m = start(host.clone(), Duration::from_secs(60));
    m.until("healthy", healthy_with(2)).await;
    host.change_silently(|d| d.routes.clear());
    // Time is paused: the runtime jumps to the next timer, the periodic re-sync.
    let s = m
        .until("both routes missing", |s| reasons(s).len() == 2)
        .await;
    assert_eq!(m.metrics.resync_count(ResyncCause::Periodic), 1);
    assert_eq!(s.routes, 0);
    m.stop().await;
}

#[tokio::test(start_paused = true)]
async fn new_pod_appears_from_its_link_event() {
    let host = fake_node();
    let mut m = start(host.clone(), Duration::from_secs(3600));
    m.until("healthy", healthy_with(2)).await;
    host.set_peer_addresses(3, vec![pod_addr("10.244.0.3"), pod_addr("fd00::3")]);
    host.emit(KernelEvent::LinkChanged(veth(7, "cali3", 3)));
    // No route yet: the incident's state.
    let s = m
        .until("new pod without route", |s| s.verdicts.pods.len() == 3)
        .await;
    let new = &s.verdicts.pods[2];
    assert_eq!(new.pod.ips.len(), 2);
    assert_eq!(new.problems.len(), 2);
    assert!(
        new.problems
            .iter()
            .all(|p| p.reason.as_str() == "route_missing")
    );
    host.emit(KernelEvent::RouteAdded(host_route("10.244.0.3", 7)));
    host.emit(KernelEvent::RouteAdded(host_route("fd00::3", 7)));
    m.until("three healthy pods", healthy_with(3)).await;
    assert_eq!(host.dumps(), 1);
    m.stop().await;
}

#[tokio::test(start_paused = true)]
async fn addresses_added_after_the_link_are_found() {
    let host = fake_node();
    let mut m = start(host.clone(), Duration::from_secs(3600));
    m.until("healthy", healthy_with(2)).await;
    // Link first, no address yet (the CNI is still configuring the pod).
    host.emit(KernelEvent::LinkChanged(veth(7, "cali3", 3)));
    m.until("pod without ips", |s| s.verdicts.pods.len() == 3)
        .await;
    // The address appears; the retry timer reads it without any event.
    host.set_peer_addresses(3, vec![pod_addr("10.244.0.3")]);
    let s = m
        .until("ip found", |s| {
            s.verdicts.pods.iter().all(|p| !p.pod.ips.is_empty())
        })
        .await;
    assert_eq!(reasons(&s), vec![("cali3".to_owned(), "route_missing")]);
    m.stop().await;
}

#[tokio::test(start_paused = true)]
async fn failed_dumps_are_retried() {
    let host = fake_node();
    host.fail_next_dumps(3);
    let mut m = start(host.clone(), Duration::from_secs(60));
    m.until("healthy despite failures", healthy_with(2)).await;
    assert_eq!(host.dumps(), 1);
    m.stop().await;
}

#[tokio::test(start_paused = true)]
async fn lost_subscription_is_renewed_with_a_resync() {
    let host = fake_node();
    let mut m = start(host.clone(), Duration::from_secs(3600));
    m.until("healthy", healthy_with(2)).await;
    host.close_subscriptions();
    let metrics = m.metrics.clone();
    m.until("resync after reconnect", move |_| {
        metrics.resync_count(ResyncCause::Error) == 1
    })
    .await;
    host.emit(KernelEvent::RouteRemoved(host_route("10.244.0.1", 5)));
    m.until("events flow again", |s| reasons(s).len() == 1)
        .await;
    m.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_flapping_pod_link_causes_spaced_resyncs() {
    let host = fake_node();
    let mut m = start(host.clone(), Duration::from_secs(3600));
    m.until("healthy", healthy_with(2)).await;
    let mut down = veth(5, "cali1", 1);
    down.oper = crate::host::OperState::Down;
    let up = veth(5, "cali1", 1);
    // Down and up every 100 ms for 10 s: 100 link-down events.
    for i in 0..200 {
        host.emit(KernelEvent::LinkChanged(if i % 2 == 0 {
            down.clone()
        } else {
            up.clone()
        }));
        sleep(Duration::from_millis(50)).await;
    }
    sleep(Duration::from_secs(2)).await;
    let n = m.metrics.resync_count(ResyncCause::LinkDown);
    eprintln!("100 flaps in 10 s: {n} link_down re-syncs");
    assert!((5..=12).contains(&n), "{n} re-syncs for 100 flaps in 10 s");
    m.until("healthy after the flapping", healthy_with(2)).await;
    m.stop().await;
}

#[tokio::test(start_paused = true)]
async fn problem_logs_are_rate_limited_and_counted() {
    // 30 pods whose routes all vanish at once: 30 "pod wiring problem" lines, 20 allowed.
    let links: Vec<_> = (0..30)
        .map(|i| veth(10 + i, &format!("cali{i}"), i as i32 + 1))
        .collect();
    let routes = (0..30)
        .map(|i| host_route(&format!("10.244.1.{i}"), 10 + i))
        .collect();
    let host = FakeHost::new(HostDump {
        links,
        routes,
        ..HostDump::default()
    });
    for i in 0..30 {
        host.set_peer_addresses(i + 1, vec![pod_addr(&format!("10.244.1.{i}"))]);
    }
    let mut m = start(host.clone(), Duration::from_secs(3600));
    m.until("healthy", healthy_with(30)).await;
    assert_eq!(m.metrics.suppressed_count(), 0);
    host.change_silently(|d| d.routes.clear());
    host.overrun();
    m.until("all routes missing", |s| reasons(s).len() == 30)
        .await;
    assert_eq!(m.metrics.suppressed_count(), 10);
    m.stop().await;
}
