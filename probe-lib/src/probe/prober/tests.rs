use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::*;
use crate::metrics::Metrics;
use crate::model::SourceName;
use crate::pods::{ExpectedPod, PodId};
use crate::probe::fake::FakePodNetwork;
use crate::probe::outcome::ProbeResult;
use crate::probe::report::{PodProbes, PodSide};
use crate::snapshot::Snapshot;
use crate::verdict::{PodLink, PodVerdict};

const INTERVAL: Duration = Duration::from_secs(10);

fn snapshot(n: usize) -> PodSet {
    let mut s = Snapshot::initial("n".into(), SourceName::Node);
    s.synced = true;
    s.node_ips = vec!["192.0.2.10".parse().unwrap()];
    s.verdicts.pods = (0..n).map(pod).collect();
    s.pod_set()
}

fn pod(i: usize) -> PodVerdict {
    PodVerdict {
        pod: ExpectedPod {
            id: PodId::default(),
            interface: format!("cali{i}"),
            ips: vec![format!("10.244.0.{}", i + 2).parse().unwrap()],
            in_grace: false,
            meta: Default::default(),
            uid: String::new(),
        },
        link: Some(PodLink {
            index: 10 + i as u32,
            netnsid: Some(i as i32),
            peer_index: Some(2),
            admin_up: true,
        }),
        problems: vec![],
        pod_side: None,
        probes: vec![],
        gateways: vec![],
        probes_skipped: None,
    }
}

struct Running {
    net: FakePodNetwork,
    snaps: watch::Sender<Arc<PodSet>>,
    reports: mpsc::UnboundedReceiver<PodProbes>,
    metrics: ProbeMetrics,
    start: Instant,
}

fn start(n: usize, concurrency: usize) -> Running {
    start_with(snapshot(n), concurrency, ProbeScope::default())
}

fn start_with(set: PodSet, concurrency: usize, scope: ProbeScope) -> Running {
    let net = FakePodNetwork::default();
    let (snaps, rx) = watch::channel(Arc::new(set));
    let (tx, reports) = mpsc::unbounded_channel();
    let metrics = Metrics::new("t").probe();
    let mut targets = Target::defaults().to_vec();
    targets.push("icmp:198.51.100.1".parse().unwrap());
    let config = ProberConfig {
        targets,
        gateways: Gateways::default(),
        interval: INTERVAL,
        timeout: Duration::from_secs(1),
        failure_threshold: 2,
        recheck: Duration::from_secs(1),
        concurrency,
        unanswered: Some(UnansweredConfig::default()),
        owners: None,
        pod_networks: Vec::new(),
        hints: Vec::new(),
        scope,
        services: None,
    };
    let prober = Prober::new(net.clone(), config, rx, tx, metrics.clone());
    tokio::spawn(prober.run(std::future::pending()));
    Running {
        net,
        snaps,
        reports,
        metrics,
        start: Instant::now(),
    }
}

fn rounds_of(net: &FakePodNetwork, iface: &str, start: Instant) -> Vec<Duration> {
    net.rounds()
        .into_iter()
        .filter(|(i, _)| i == iface)
        .map(|(_, t)| t - start)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn pods_present_at_start_are_spread_over_the_interval() {
    let r = start(50, 64);
    tokio::time::sleep(INTERVAL - Duration::from_millis(1)).await;
    let rounds = r.net.rounds();
    assert_eq!(
        rounds.len(),
        50,
        "each pod exactly once in the first interval"
    );
    let mut offsets: Vec<Duration> = rounds.iter().map(|(_, t)| *t - r.start).collect();
    offsets.sort();
    assert!(
        offsets[49] - offsets[0] > INTERVAL / 2,
        "not spread: {offsets:?}"
    );
    tokio::time::sleep(INTERVAL).await;
    assert_eq!(r.net.rounds().len(), 100);
    // Every probe of every round was counted.
    assert_eq!(r.metrics.count("gateway", ProbeResult::Ok), 100);
    assert_eq!(r.metrics.count("pod", ProbeResult::Ok), 100);
}

#[tokio::test(start_paused = true)]
async fn a_new_pod_is_probed_at_once() {
    let r = start(3, 8);
    tokio::time::sleep(Duration::from_secs(30)).await;
    r.snaps.send_replace(Arc::new(snapshot(4)));
    let added = Instant::now();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let rounds = rounds_of(&r.net, "cali3", r.start);
    assert_eq!(rounds.len(), 1);
    assert!(rounds[0] <= added - r.start + Duration::from_millis(1));
}

#[tokio::test(start_paused = true)]
async fn failures_are_rechecked_quickly_then_reported() {
    let mut r = start(2, 8);
    r.net
        .set("cali1", "icmp:198.51.100.1", ProbeResult::Timeout);
    tokio::time::sleep(Duration::from_secs(25)).await;
    let rounds = rounds_of(&r.net, "cali1", r.start);
    // First round, a re-check one second later, then the normal interval.
    assert!(rounds.len() >= 3, "{rounds:?}");
    assert_eq!(rounds[1] - rounds[0], Duration::from_secs(1));
    assert_eq!(rounds[2] - rounds[1], INTERVAL - Duration::from_secs(1));
    let mut last = None;
    while let Ok(p) = r.reports.try_recv() {
        if p.interface == "cali1" {
            last = Some(p);
        }
    }
    let last = last.unwrap();
    let d = last
        .dests
        .iter()
        .find(|d| d.target == "icmp:198.51.100.1")
        .unwrap();
    assert!(d.is_failing(2));
    assert_eq!(d.last, ProbeResult::Timeout);
    assert!(
        last.dests
            .iter()
            .filter(|d| d.target != "icmp:198.51.100.1")
            .all(|d| !d.is_failing(1))
    );
    // The healthy pod was not re-checked.
    let healthy = rounds_of(&r.net, "cali0", r.start);
    assert!(
        healthy.windows(2).all(|w| w[1] - w[0] == INTERVAL),
        "{healthy:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn removed_pods_are_no_longer_probed() {
    let r = start(3, 8);
    tokio::time::sleep(Duration::from_secs(15)).await;
    r.snaps.send_replace(Arc::new(snapshot(2)));
    tokio::time::sleep(Duration::from_millis(1)).await;
    let before = rounds_of(&r.net, "cali2", r.start).len();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(rounds_of(&r.net, "cali2", r.start).len(), before);
    assert!(rounds_of(&r.net, "cali0", r.start).len() >= 6);
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_bounded() {
    let r = start(40, 4);
    r.net.set_delay(Duration::from_millis(900));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(r.net.max_concurrent() <= 4, "{}", r.net.max_concurrent());
    assert!(r.net.rounds().len() >= 40);
}

#[tokio::test(start_paused = true)]
async fn unsynced_snapshots_are_ignored() {
    let net = FakePodNetwork::default();
    let mut s = snapshot(3);
    s.synced = false;
    let (_snaps, rx) = watch::channel(Arc::new(s));
    let (tx, _reports) = mpsc::unbounded_channel();
    let config = ProberConfig {
        targets: Target::defaults().to_vec(),
        gateways: Gateways::default(),
        interval: INTERVAL,
        timeout: Duration::from_secs(1),
        failure_threshold: 2,
        recheck: Duration::from_secs(1),
        concurrency: 4,
        unanswered: None,
        owners: None,
        pod_networks: Vec::new(),
        hints: Vec::new(),
        scope: Default::default(),
        services: None,
    };
    tokio::spawn(
        Prober::new(net.clone(), config, rx, tx, Metrics::new("t").probe())
            .run(std::future::pending()),
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(net.rounds().is_empty());
}

fn side(interface_up: bool) -> PodSide {
    PodSide {
        interface_up,
        default_route_v4: Some(true),
        default_route_v6: None,
        mtu: None,
    }
}

/// Every report for `iface` so far, in order.
fn reports_of(r: &mut Running, iface: &str) -> Vec<PodProbes> {
    let mut out = Vec::new();
    while let Ok(p) = r.reports.try_recv() {
        if p.interface == iface {
            out.push(p);
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_pod_side_problem_seen_once_is_rechecked_and_not_reported() {
    // A pod caught mid-wiring: its eth0 has no carrier until the host side is up.
    let mut r = start(2, 8);
    r.net.set_pod_side("cali1", side(false));
    r.net.set_pod_side("cali0", side(true));
    while rounds_of(&r.net, "cali1", r.start).is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    r.net.set_pod_side("cali1", side(true));
    tokio::time::sleep(Duration::from_secs(25)).await;
    let rounds = rounds_of(&r.net, "cali1", r.start);
    assert_eq!(rounds[1] - rounds[0], Duration::from_secs(1), "{rounds:?}");
    let reports = reports_of(&mut r, "cali1");
    assert!(reports.len() >= 3, "{reports:?}");
    assert!(
        reports
            .iter()
            .all(|p| p.pod_side.is_none_or(|s| s.is_healthy())),
        "a transient pod-side problem was reported: {reports:?}"
    );
    assert_eq!(reports.last().unwrap().pod_side, Some(side(true)));
}

#[tokio::test(start_paused = true)]
async fn a_pod_side_problem_seen_twice_is_reported() {
    let mut r = start(2, 8);
    r.net.set_pod_side("cali1", side(false));
    tokio::time::sleep(Duration::from_secs(25)).await;
    let rounds = rounds_of(&r.net, "cali1", r.start);
    assert_eq!(rounds[1] - rounds[0], Duration::from_secs(1), "{rounds:?}");
    let reports = reports_of(&mut r, "cali1");
    assert_eq!(reports[0].pod_side, None, "reported after one read");
    assert_eq!(reports[1].pod_side, Some(side(false)));
    assert_eq!(reports.last().unwrap().pod_side, Some(side(false)));
    // Once confirmed, the problem keeps the pod side read every round.
    assert!(rounds.len() >= 3, "{rounds:?}");
}

#[tokio::test(start_paused = true)]
async fn failing_connects_are_reported_after_two_rounds_and_cleared() {
    use crate::probe::sockdiag::{SynSentDest, SynSentDump};
    let mut r = start(2, 8);
    let stuck = SynSentDump {
        dests: vec![SynSentDest {
            dest: "10.244.7.9:8000".parse().unwrap(),
            sockets: 4,
            retransmits: 3,
        }],
        dropped: 0,
    };
    r.net.set_syn_sent("cali1", stuck);
    let latest = |r: &mut Running| {
        let mut last = None;
        while let Ok(p) = r.reports.try_recv() {
            if p.interface == "cali1" {
                last = Some(p);
            }
        }
        last.expect("a report of cali1")
    };
    tokio::time::sleep(INTERVAL + Duration::from_millis(1)).await;
    assert!(
        latest(&mut r).unanswered.is_empty(),
        "one round is not enough"
    );
    tokio::time::sleep(INTERVAL).await;
    let p = latest(&mut r);
    assert_eq!(p.unanswered.len(), 1, "{p:?}");
    assert_eq!(p.unanswered[0].dest, "10.244.7.9:8000".parse().unwrap());
    assert_eq!(p.unanswered[0].sockets, 4);
    r.net.set_syn_sent("cali1", SynSentDump::default());
    tokio::time::sleep(INTERVAL).await;
    assert!(latest(&mut r).unanswered.is_empty());
}

/// The path-MTU probe rides on the rounds that read the pod's side (every sixth); a failure
/// makes the next round come after the re-check delay and read (and probe) again, and every
/// round after while it fails; the reports carry its state, and a success clears it.
#[tokio::test(start_paused = true)]
async fn a_path_mtu_failure_is_rechecked_confirmed_and_cleared() {
    let mut r = start(2, 8);
    r.net.set_path_mtu("cali1", ProbeResult::Timeout);
    r.net.set_path_mtu("cali0", ProbeResult::Ok);
    tokio::time::sleep(Duration::from_secs(25)).await;
    let rounds = rounds_of(&r.net, "cali1", r.start);
    assert_eq!(rounds[1] - rounds[0], Duration::from_secs(1), "{rounds:?}");
    let reports = reports_of(&mut r, "cali1");
    let states = |p: &PodProbes| p.path_mtu.clone();
    assert_eq!(states(&reports[0])[0].consecutive_failures, 1);
    let last = states(reports.last().unwrap());
    assert_eq!(last.len(), 1, "{last:?}");
    assert!(last[0].is_failing(2), "{last:?}");
    assert_eq!(last[0].consecutive_failures as usize, reports.len());
    assert_eq!((last[0].mtu, last[0].size), (1500, 1500));
    // The healthy pod probes it only every sixth round: its state stays ok in between.
    let healthy = reports_of(&mut r, "cali0");
    assert!(
        healthy
            .iter()
            .all(|p| p.path_mtu.len() == 1 && !p.path_mtu[0].last.is_failure())
    );
    r.net.set_path_mtu("cali1", ProbeResult::Ok);
    tokio::time::sleep(INTERVAL * 2).await;
    let after = reports_of(&mut r, "cali1");
    assert_eq!(after.last().unwrap().path_mtu[0].consecutive_failures, 0);
}

/// A starved agent reads replies late: a lost large echo in a round whose small gateway echo
/// took over half the timeout (1 s here) says nothing about the path and is not counted; once
/// the small echo is prompt again, the same losses are counted and confirmed.
#[tokio::test(start_paused = true)]
async fn a_path_mtu_loss_in_a_starved_round_is_inconclusive() {
    let mut r = start(1, 8);
    r.net.set_path_mtu("cali0", ProbeResult::Timeout);
    r.net.set_rtt("cali0", Duration::from_millis(600));
    // Three rounds that read the pod's side (every sixth of 10 s): each one's loss ignored,
    // so none is re-checked either.
    tokio::time::sleep(INTERVAL * 6 * 2 + INTERVAL).await;
    let starved = reports_of(&mut r, "cali0");
    assert!(starved.len() >= 12, "{}", starved.len());
    assert!(
        starved.iter().all(|p| p.path_mtu.is_empty()),
        "{:?}",
        starved.iter().map(|p| &p.path_mtu).collect::<Vec<_>>()
    );
    // Just under half the timeout: prompt enough to count.
    r.net.set_rtt("cali0", Duration::from_millis(500));
    tokio::time::sleep(INTERVAL * 6 + INTERVAL).await;
    let last = reports_of(&mut r, "cali0").pop().unwrap().path_mtu;
    assert_eq!(last.len(), 1, "{last:?}");
    assert!(last[0].is_failing(2), "{last:?}");
}

/// Pods 0–2: 0 annotated `podnet.io/probes: "false"`, 1 labelled app=web, 2 app=db with an
/// annotation podnet does not understand.
fn scoped_set(annotate: bool) -> PodSet {
    let mut set = snapshot(3);
    let meta = |labels: &[(&str, &str)], probes: Option<&str>| crate::model::ProbeMeta {
        labels: Arc::new(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        probes: probes.map(Arc::from),
        ..Default::default()
    };
    set.pods[0].meta = meta(&[], annotate.then_some("false"));
    set.pods[1].meta = meta(&[("app", "web")], None);
    set.pods[2].meta = meta(&[("app", "db")], Some("maybe"));
    set
}

fn last_report(r: &mut Running, iface: &str) -> Option<PodProbes> {
    let mut last = None;
    while let Ok(p) = r.reports.try_recv() {
        if p.interface == iface {
            last = Some(p);
        }
    }
    last
}

#[tokio::test(start_paused = true)]
async fn opted_out_pods_are_not_probed_and_selectors_limit_targets() {
    let scope = ProbeScope {
        selectors: [("icmp:198.51.100.1".to_owned(), "app=web".parse().unwrap())].into(),
        ..ProbeScope::default()
    };
    let mut r = start_with(scoped_set(true), 8, scope);
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert!(
        rounds_of(&r.net, "cali0", r.start).is_empty(),
        "never probed"
    );
    assert!(rounds_of(&r.net, "cali1", r.start).len() >= 2);
    let mut by_pod = HashMap::new();
    while let Ok(p) = r.reports.try_recv() {
        by_pod.insert(p.interface.clone(), p);
    }
    let skipped = &by_pod["cali0"];
    assert_eq!(skipped.skipped, Some(crate::model::ProbeSkip::Annotation));
    assert!(skipped.dests.is_empty());
    let targets =
        |i: &str| -> Vec<String> { by_pod[i].dests.iter().map(|d| d.target.clone()).collect() };
    assert_eq!(
        targets("cali1"),
        ["gateway", "node", "icmp:198.51.100.1", "pod"]
    );
    assert_eq!(
        targets("cali2"),
        ["gateway", "node", "pod"],
        "app=db: not selected"
    );
    // The value podnet does not understand is counted once, not once per pod set.
    let invalid = crate::model::ScopeIgnored::InvalidValue;
    assert_eq!(r.metrics.scope_ignored_count(invalid), 1);
    r.snaps.send_replace(Arc::new(scoped_set(true)));
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(r.metrics.scope_ignored_count(invalid), 1);

    // The annotation removed: probed at once.
    r.snaps.send_replace(Arc::new(scoped_set(false)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(rounds_of(&r.net, "cali0", r.start).len(), 1);
    let back = last_report(&mut r, "cali0").expect("a report");
    assert_eq!(back.skipped, None);
    // And back on: no further rounds.
    r.snaps.send_replace(Arc::new(scoped_set(true)));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(rounds_of(&r.net, "cali0", r.start).len(), 1);
    assert!(last_report(&mut r, "cali0").is_some_and(|p| p.skipped.is_some()));
}
