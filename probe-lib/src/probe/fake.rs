//! A scripted [`PodNetwork`] for tests of the prober.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::driver::{PodNetwork, PodRound, RoundResult};
use super::outcome::{Observation, ProbeResult};
use super::report::{PathMtuObservation, PodSide};
use super::sockdiag::SynSentDump;

#[derive(Debug, Default)]
struct Script {
    /// (interface, target) → result; everything else answers ok.
    results: HashMap<(String, String), ProbeResult>,
    pod_side: HashMap<String, PodSide>,
    syn_sent: HashMap<String, SynSentDump>,
    /// interface → result of its path-MTU probe (sent in rounds that read the pod's side).
    path_mtu: HashMap<String, ProbeResult>,
    /// interface → the RTT its answered probes report (100 µs otherwise).
    rtt: HashMap<String, Duration>,
    rounds: Vec<(String, tokio::time::Instant)>,
    delay: Duration,
    running: usize,
    max_running: usize,
}

/// Answers every probe with `ok` unless told otherwise. Clones share the script.
#[derive(Debug, Clone, Default)]
pub struct FakePodNetwork {
    script: Arc<Mutex<Script>>,
}

impl FakePodNetwork {
    fn lock(&self) -> MutexGuard<'_, Script> {
        crate::util::lock(&self.script)
    }

    /// From now on, probes of `target` from the pod on `interface` get `result`.
    pub fn set(&self, interface: &str, target: &str, result: ProbeResult) {
        self.lock()
            .results
            .insert((interface.to_owned(), target.to_owned()), result);
    }

    /// The pod's side as the next rounds will report it.
    pub fn set_pod_side(&self, interface: &str, side: PodSide) {
        self.lock().pod_side.insert(interface.to_owned(), side);
    }

    /// The `SYN_SENT` dump the next rounds of this pod report.
    pub fn set_syn_sent(&self, interface: &str, dump: SynSentDump) {
        self.lock().syn_sent.insert(interface.to_owned(), dump);
    }

    /// From now on, the path-MTU probe of the pod on `interface` (to its IPv4 gateway, MTU
    /// 1500) gets `result` in every round that reads the pod's side.
    pub fn set_path_mtu(&self, interface: &str, result: ProbeResult) {
        self.lock().path_mtu.insert(interface.to_owned(), result);
    }

    /// From now on, the answered probes of the pod on `interface` report this RTT (as they
    /// do when the agent is starved of CPU and reads replies late).
    pub fn set_rtt(&self, interface: &str, rtt: Duration) {
        self.lock().rtt.insert(interface.to_owned(), rtt);
    }

    /// Make every round take this long.
    pub fn set_delay(&self, d: Duration) {
        self.lock().delay = d;
    }

    /// The most rounds that ran at the same time.
    pub fn max_concurrent(&self) -> usize {
        self.lock().max_running
    }

    /// Every round so far: interface and (tokio) time.
    pub fn rounds(&self) -> Vec<(String, tokio::time::Instant)> {
        self.lock().rounds.clone()
    }
}

impl PodNetwork for FakePodNetwork {
    async fn round(&self, round: PodRound) -> RoundResult {
        let delay = {
            let mut s = self.lock();
            s.rounds
                .push((round.interface.clone(), tokio::time::Instant::now()));
            s.running += 1;
            s.max_running = s.max_running.max(s.running);
            s.delay
        };
        tokio::time::sleep(delay).await;
        let mut s = self.lock();
        s.running -= 1;
        let rtt = s
            .rtt
            .get(&round.interface)
            .copied()
            .unwrap_or(Duration::from_micros(100));
        let observations = round
            .probes
            .iter()
            .map(|p| {
                let r = s
                    .results
                    .get(&(round.interface.clone(), p.target.clone()))
                    .copied()
                    .unwrap_or(ProbeResult::Ok);
                if r.is_failure() {
                    Observation::failed(r, "scripted")
                } else {
                    Observation::answered(r, rtt)
                }
            })
            .collect();
        let gateway = round
            .probes
            .iter()
            .find(|p| p.gateway && p.address.is_ipv4());
        let path_mtu = match (s.path_mtu.get(&round.interface), gateway) {
            (Some(r), Some(g)) if round.read_pod_side => vec![PathMtuObservation {
                address: g.address.ip(),
                mtu: 1500,
                size: 1500,
                observation: if r.is_failure() {
                    Observation::failed(*r, "scripted")
                } else {
                    Observation::answered(*r, rtt)
                },
            }],
            _ => Vec::new(),
        };
        RoundResult {
            pod_side: round
                .read_pod_side
                .then(|| s.pod_side.get(&round.interface).copied())
                .flatten(),
            observations,
            error: None,
            sent: super::report::next_stamp(),
            syn_sent: round.syn_sent.then(|| {
                s.syn_sent
                    .get(&round.interface)
                    .cloned()
                    .unwrap_or_default()
            }),
            tcp_retrans: None,
            hint: None,
            path_mtu,
        }
    }
}
