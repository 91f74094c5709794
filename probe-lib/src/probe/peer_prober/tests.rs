use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use super::*;
use crate::model::{Observation, PeerNode, ProbeResult};
use crate::probe::RoundResult;

/// Answers every echo except to the addresses in `dead`; records the rounds' interfaces.
#[derive(Default)]
struct Net {
    dead: Mutex<HashSet<IpAddr>>,
    rounds: Mutex<Vec<(String, usize)>>,
}

impl PodNetwork for Net {
    async fn round(&self, round: PodRound) -> RoundResult {
        let dead = self.dead.lock().unwrap().clone();
        self.rounds
            .lock()
            .unwrap()
            .push((round.interface.clone(), round.probes.len()));
        RoundResult {
            pod_side: None,
            observations: round
                .probes
                .iter()
                .map(|p| {
                    if dead.contains(&p.address.ip()) {
                        Observation::failed(ProbeResult::Timeout, "no reply")
                    } else {
                        Observation::answered(ProbeResult::Ok, Duration::from_millis(1))
                    }
                })
                .collect(),
            error: None,
            sent: 0,
            syn_sent: None,
            tcp_retrans: None,
            hint: None,
            path_mtu: Vec::new(),
        }
    }
}

fn nodes(n: usize) -> BlockMap {
    let nodes: BTreeMap<NodeName, PeerNode> = (0..n)
        .map(|i| {
            let peer = PeerNode {
                addresses: vec![IpAddr::from([192, 0, 2, i as u8])],
                tunnels: vec![IpAddr::from([10, 244, i as u8, 0])],
            };
            (NodeName::from(format!("node-{i}")), peer)
        })
        .collect();
    BlockMap {
        nodes,
        synced: true,
        ..BlockMap::default()
    }
}

fn pods(n: usize) -> PodSet {
    PodSet {
        synced: true,
        node_ips: Vec::new(),
        pods: (0..n)
            .map(|i| PodEntry {
                interface: format!("cali{i}"),
                ips: vec![IpAddr::from([10, 244, 0, 2 + i as u8])],
                netnsid: Some(i as i32),
                peer_index: Some(2),
                gateways: Vec::new(),
                namespace: if i == 2 { "kube-system" } else { "default" }.into(),
                meta: Default::default(),
            })
            .collect(),
    }
}

fn prober(
    net: &Arc<Net>,
    peers: usize,
    local_pods: usize,
) -> (PeerProber<Net>, watch::Receiver<Arc<PeerView>>) {
    let (_ntx, nodes) = watch::channel(Arc::new(nodes(peers)));
    let (_ptx, pod_set) = watch::channel(Arc::new(pods(local_pods)));
    let config = PeerProberConfig {
        node: "node-0".into(),
        per_round: 3,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        scope: ProbeScope {
            exclude_namespaces: ["kube-system".to_owned()].into(),
            ..ProbeScope::default()
        },
    };
    PeerProber::new(Arc::clone(net), config, nodes, pod_set)
}

#[tokio::test]
async fn a_rotation_samples_every_peer_from_rotating_pods_and_the_host() {
    let net = Arc::new(Net::default());
    net.dead
        .lock()
        .unwrap()
        .insert(IpAddr::from([10, 244, 4, 0]));
    // 11 nodes: 10 peers, 3 per round, a rotation of 4 rounds; the third pod's namespace is
    // excluded from probing: it never probes.
    let (mut p, rx) = prober(&net, 11, 3);
    for _ in 0..4 {
        p.round().await;
    }
    let view = rx.borrow().clone();
    assert_eq!((view.known, view.rounds, view.rotation()), (10, 4, 4));
    assert_eq!(view.peers.len(), 10, "{view:?}");
    assert!(view.peers.iter().all(|s| &*s.node != "node-0"));
    let dead = view.peers.iter().find(|s| &*s.node == "node-4").unwrap();
    assert!(dead.last_failed());
    assert_eq!((dead.from_pod, dead.from_host), (Some(false), Some(false)));
    assert!(view.peers.iter().filter(|s| s.last_failed()).count() == 1);
    // Rounds alternate between the two pods; each sends k pod-side and k host-side echoes
    // (the last round of the rotation wraps around to the first peers).
    let rounds = net.rounds.lock().unwrap().clone();
    let ifaces: Vec<&str> = rounds.iter().map(|(i, _)| i.as_str()).collect();
    assert_eq!(ifaces, ["cali0", "cali1", "cali0", "cali1"]);
    assert_eq!(
        rounds.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        [6, 6, 6, 6]
    );
}

#[tokio::test]
async fn without_local_pods_the_host_probes_alone_and_a_peer_leaving_is_forgotten() {
    let net = Arc::new(Net::default());
    let (mut p, rx) = prober(&net, 3, 0);
    p.round().await;
    let view = rx.borrow().clone();
    assert_eq!(view.peers.len(), 2);
    assert!(
        view.peers
            .iter()
            .all(|s| s.from_pod.is_none() && s.from_host == Some(true))
    );
    assert_eq!(net.rounds.lock().unwrap()[0], ("host".to_owned(), 2));
    // node-2 leaves the list.
    let (ntx, nodes) = watch::channel(Arc::new(nodes(2)));
    p.nodes = nodes;
    p.round().await;
    drop(ntx);
    let view = rx.borrow().clone();
    assert_eq!((view.known, view.peers.len()), (1, 1));
}

#[tokio::test]
async fn a_huge_node_list_is_bounded_and_a_round_stays_k() {
    let net = Arc::new(Net::default());
    // This node and 10,004 others: 10,000 held, 4 counted as ignored.
    let (mut p, rx) = prober(&net, 10_005, 1);
    for _ in 0..3 {
        p.round().await;
    }
    let view = rx.borrow().clone();
    assert_eq!((view.known, view.ignored), (crate::model::MAX_PEERS, 4));
    assert_eq!(view.peers.len(), 9, "three rounds of three");
    assert!(net.rounds.lock().unwrap().iter().all(|(_, n)| *n == 6));
}
