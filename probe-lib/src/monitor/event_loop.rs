//! The event loop: wake on kernel events, probe results and watched sources, apply them in
//! bounded batches and follow up with re-syncs and publishes; restart after an overrun.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::time::{MissedTickBehavior, interval, interval_at, sleep};
use tracing::{debug, warn};

use super::source::PodSource;
use super::*;
use crate::host::{EventReceiver, HostNetwork, KernelEvent, Link, ResyncCause};
use crate::kube::KubeView;
use crate::model::{BlockMap, ControlPlaneView, Felix, PeerView};
use crate::probe::report::PodProbes;
use crate::util::backoff::Backoff;

/// The watched sources the event loop wakes on besides kernel events and probes.
struct Watched<'a> {
    kube: &'a mut Option<watch::Receiver<Arc<KubeView>>>,
    blocks: &'a mut Option<watch::Receiver<Arc<BlockMap>>>,
    felix: &'a mut Option<watch::Receiver<crate::model::FelixStatus>>,
    control_plane: &'a mut Option<watch::Receiver<Arc<ControlPlaneView>>>,
    services: &'a mut Option<watch::Receiver<Arc<crate::model::ServiceMap>>>,
    peers: &'a mut Option<watch::Receiver<Arc<PeerView>>>,
}

/// Why the event loop returned.
enum LoopEnd {
    /// The subscription ended.
    Closed,
    /// The kernel dropped notifications: the subscription's backlog is stale.
    Overrun,
}

/// What a batch of events asks for once it is applied.
#[derive(Debug, Default)]
struct Followups {
    resync: Option<ResyncCause>,
    peers: HashSet<i32>,
}

impl<H: HostNetwork> Monitor<H> {
    pub(super) async fn run_forever(&mut self) {
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let (_, idle) = mpsc::unbounded_channel();
        let mut probes = self.probe_rx.take().unwrap_or(idle);
        let mut blocks = self.config.remote_blocks.clone();
        let mut felix = self.config.felix.as_ref().map(Felix::subscribe);
        let mut control_plane = self.config.control_plane.clone();
        let mut services = self.config.services.as_ref().map(|s| s.map.clone());
        let mut peers = self.peers.clone();
        let mut kube = match &self.config.pods {
            PodSource::Kubernetes { view, .. } => Some(view.clone()),
            PodSource::Links { .. } => None,
        };
        let mut overrun = false;
        loop {
            let mut events = match self.host.subscribe().await {
                Ok(rx) => rx,
                Err(e) => {
                    warn!(error = %e, "cannot subscribe to kernel events; retrying");
                    sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            self.beat();
            let cause = if self.last_full_sync.is_none() {
                ResyncCause::Startup
            } else if overrun {
                ResyncCause::Overrun
            } else {
                ResyncCause::Error
            };
            self.schedule.started_now(tokio::time::Instant::now());
            if let Err(e) = self.resync(cause).await {
                warn!(error = %e, "full read of the node's network state failed; retrying");
                sleep(backoff.next_delay()).await;
                continue;
            }
            backoff.reset();
            self.schedule.succeeded();
            self.publish();
            let mut watched = Watched {
                kube: &mut kube,
                blocks: &mut blocks,
                felix: &mut felix,
                control_plane: &mut control_plane,
                services: &mut services,
                peers: &mut peers,
            };
            overrun = match self
                .event_loop(&mut events, &mut probes, &mut watched)
                .await
            {
                LoopEnd::Overrun => {
                    debug!("kernel events lost; subscribing afresh and re-reading");
                    true
                }
                LoopEnd::Closed => {
                    warn!("kernel event subscription ended; subscribing again");
                    false
                }
            };
        }
    }

    /// Returns when the event stream ends, or when the kernel lost events: what is still
    /// queued on that subscription predates the loss, and applied after a re-read it would
    /// undo the re-read (a route deleted and re-added, the re-add lost: the stale deletion
    /// would be reported until the next periodic re-sync). The caller drops the subscription
    /// with its backlog, subscribes afresh and re-reads, as at startup.
    async fn event_loop(
        &mut self,
        events: &mut EventReceiver,
        probes: &mut mpsc::UnboundedReceiver<PodProbes>,
        watched: &mut Watched<'_>,
    ) -> LoopEnd {
        let Watched {
            kube,
            blocks,
            felix,
            control_plane,
            services,
            peers,
        } = watched;
        let period = self.config.resync_interval;
        let mut periodic = interval_at(tokio::time::Instant::now() + period, period);
        periodic.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut retry = interval(PEER_RETRY);
        retry.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Probe results arrive one pod at a time; they are folded into the published verdicts
        // at most every PROBE_FLUSH, not once per pod (which would be quadratic in pods).
        let mut flush_at: Option<tokio::time::Instant> = None;
        let mut last_kube: Option<tokio::time::Instant> = None;
        loop {
            self.beat();
            let mut follow = Followups::default();
            let resync_due = self.schedule.due();
            let deadline = self
                .expected
                .as_ref()
                .and_then(|e| e.next_deadline)
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { return LoopEnd::Closed };
                    let mut n = 1;
                    self.apply(ev, &mut follow);
                    while n < MAX_BATCH {
                        let Ok(ev) = events.try_recv() else { break };
                        self.apply(ev, &mut follow);
                        n += 1;
                    }
                    self.metrics.events_applied(n as u64);
                }
                Some(report) = probes.recv() => {
                    self.probe_reports.insert(report.interface.clone(), report);
                    while let Ok(r) = probes.try_recv() {
                        self.probe_reports.insert(r.interface.clone(), r);
                    }
                    flush_at.get_or_insert_with(|| tokio::time::Instant::now() + PROBE_FLUSH);
                    continue;
                }
                () = tokio::time::sleep_until(flush_at.unwrap_or_else(tokio::time::Instant::now)), if flush_at.is_some() => {}
                changed = changed_or_pending(kube) => {
                    if changed.is_err() {
                        **kube = None; // The watch is gone; keep the last view.
                    }
                    self.expected = None;
                    // The API's changes come in bursts (a re-list, thousands of pods
                    // rescheduled): after a quiet spell published at once, then folded in at
                    // most every KUBE_FLUSH, not evaluated once each (quadratic in pods).
                    // Kernel events still publish at once.
                    let now = tokio::time::Instant::now();
                    match last_kube {
                        Some(last) if now < last + KUBE_FLUSH => {
                            let at = last + KUBE_FLUSH;
                            flush_at = Some(flush_at.map_or(at, |f| f.min(at)));
                            continue;
                        }
                        _ => last_kube = Some(now),
                    }
                }
                changed = changed_or_pending(blocks) => {
                    if changed.is_err() {
                        **blocks = None; // The watch is gone; keep the last map.
                    }
                }
                changed = changed_or_pending(felix) => {
                    if changed.is_err() {
                        **felix = None;
                    }
                }
                changed = changed_or_pending(control_plane) => {
                    if changed.is_err() {
                        **control_plane = None; // The source is gone; keep its last view.
                    }
                }
                // A Service target resolved anew: `/status` and the gauges say so at once.
                changed = changed_or_pending(services) => {
                    if changed.is_err() {
                        **services = None;
                    }
                }
                changed = changed_or_pending(peers) => {
                    if changed.is_err() {
                        **peers = None; // The prober is gone; keep its last view.
                    }
                }
                () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    self.expected = None;
                }
                _ = periodic.tick() => follow.resync = Some(ResyncCause::Periodic),
                () = tokio::time::sleep_until(resync_due.unwrap_or_else(tokio::time::Instant::now)), if resync_due.is_some() => {}
                _ = retry.tick(), if !self.unresolved.is_empty() => {
                    follow.peers = self.unresolved.keys().copied().collect();
                }
            }
            if follow.resync == Some(ResyncCause::Overrun) {
                return LoopEnd::Overrun;
            }
            if let Some(cause) = follow.resync {
                self.schedule.request(cause);
            }
            let now = tokio::time::Instant::now();
            if let Some(cause) = self.schedule.start(now) {
                match self.resync(cause).await {
                    Ok(()) => self.schedule.succeeded(),
                    Err(e) => {
                        let delay = self.schedule.failed(cause, now);
                        warn!(error = %e, cause = cause.as_str(), retry_in_ms = delay.as_millis() as u64, "re-sync failed; retrying with backoff");
                    }
                }
            } else if !follow.peers.is_empty() {
                self.read_peers(follow.peers).await;
            }
            flush_at = None;
            self.publish();
        }
    }

    pub(super) fn is_pod_link(&self, link: &Link) -> bool {
        self.config
            .pods
            .link_prefix()
            .is_some_and(|p| link.name.starts_with(p) && link.is_veth_to_other_netns())
    }

    /// Apply one event and note what it asks for.
    fn apply(&mut self, ev: KernelEvent, follow: &mut Followups) {
        let before = match &ev {
            KernelEvent::LinkChanged(l) => self.state.link(l.index).cloned(),
            _ => None,
        };
        self.expected = None;
        match self.state.apply(&ev) {
            // An overrun outranks every other cause: it also discards the subscription.
            Some(ResyncCause::Overrun) => follow.resync = Some(ResyncCause::Overrun),
            Some(cause) => {
                follow.resync.get_or_insert(cause);
            }
            None => {}
        }
        match &ev {
            KernelEvent::LinkChanged(l) if self.is_pod_link(l) => {
                let Some(nsid) = l.peer_netnsid else { return };
                // New pod, or its link changed state: its namespace's addresses may be new.
                let changed = before.is_none_or(|b| {
                    b.oper != l.oper || b.admin_up != l.admin_up || b.peer_netnsid != l.peer_netnsid
                });
                if changed || self.state.peer_addresses(nsid).is_none() {
                    follow.peers.insert(nsid);
                }
            }
            KernelEvent::RouteAdded(r) => {
                // A route to an address we do not know on a pod link: the pod's addresses
                // were added after we last read them.
                let Some(link) = r.oif.and_then(|i| self.state.link(i)) else {
                    return;
                };
                if !self.is_pod_link(link) || r.dst.prefix_len() != r.dst.max_prefix_len() {
                    return;
                }
                let Some(nsid) = link.peer_netnsid else {
                    return;
                };
                let known = self
                    .state
                    .peer_addresses(nsid)
                    .is_some_and(|a| a.iter().any(|a| a.ip == r.dst.addr()));
                if !known {
                    follow.peers.insert(nsid);
                }
            }
            _ => {}
        }
    }
}

/// The next change of an optional watch; never, without one.
async fn changed_or_pending<T>(
    rx: &mut Option<watch::Receiver<T>>,
) -> Result<(), watch::error::RecvError> {
    match rx.as_mut() {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}
