//! Where a pod's unanswered connects go, and what that means: a pod of this node (is its
//! route there?), an address of the pod network that belongs to no pod (the client holds a
//! stale address: `vanished_pod_ip`), a live pod elsewhere that does not answer, a Service,
//! or outside the cluster. Pure: the owners were asked by the prober, the networks are
//! configuration.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::Serialize;

use super::PodVerdict;
use crate::model::{ConnectClass, PodId, PodIpOwner};
use crate::probe::hints::Hint;
use crate::probe::report::PodProbes;

/// The cluster's networks, to classify destinations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectNets {
    /// The cluster's pod networks (IP pools).
    pub pods: Vec<IpNet>,
    /// The Service ClusterIP ranges.
    pub services: Vec<IpNet>,
}

/// One destination one pod keeps failing to connect to, classified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectVerdict {
    /// The client pod.
    #[serde(flatten)]
    pub pod: PodId,
    /// The client pod's host interface.
    pub interface: String,
    /// Where it connects to.
    pub destination: SocketAddr,
    /// What the destination is.
    pub class: ConnectClass,
    /// The pod the destination belongs to, where known (`namespace/name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Sockets in `SYN_SENT` to it in the latest round.
    pub sockets: u32,
    /// The most SYN retransmissions of one of them.
    pub retransmits: u8,
    /// Consecutive rounds it went unanswered.
    pub rounds: u32,
    /// What it means, in words (with the client's own hint why it is stale, if any).
    pub diagnosis: String,
    /// What the client's software says about itself (Kong's `/status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<Hint>,
}

fn name(id: &PodId) -> String {
    format!("{}/{}", id.namespace, id.name)
}

/// Classify one destination of a pod.
pub fn classify(
    ip: IpAddr,
    pods: &[PodVerdict],
    nets: &ConnectNets,
    owner: Option<&PodIpOwner>,
) -> (ConnectClass, Option<String>, String) {
    if let Some(local) = pods.iter().find(|p| p.pod.ips.contains(&ip)) {
        let who = name(&local.pod.id);
        let problems: Vec<&str> = local
            .problems
            .iter()
            .filter(|p| p.ip.is_none_or(|i| i == ip))
            .map(|p| p.reason.as_str())
            .collect();
        let diagnosis = if problems.is_empty() {
            format!("pod {who} on this node does not answer; its wiring is correct")
        } else {
            format!(
                "pod {who} on this node is not wired: {}",
                problems.join(", ")
            )
        };
        return (ConnectClass::NodePod, Some(who), diagnosis);
    }
    if nets.services.iter().any(|n| n.contains(&ip)) {
        return (
            ConnectClass::Service,
            None,
            "a Service ClusterIP that does not answer (no ready endpoints, or kube-proxy rules)"
                .to_owned(),
        );
    }
    if !nets.pods.iter().any(|n| n.contains(&ip)) {
        return (
            ConnectClass::Outside,
            None,
            "outside the cluster's pod and Service networks".to_owned(),
        );
    }
    match owner {
        Some(PodIpOwner::NoPod) => (
            ConnectClass::VanishedPodIp,
            None,
            "no pod has this IP: the client connects to a deleted pod's address (stale upstream, \
             cached DNS or endpoints)"
                .to_owned(),
        ),
        Some(PodIpOwner::Pod { id, node }) => {
            let on = node
                .as_deref()
                .map_or_else(String::new, |n| format!(" on node {n}"));
            (
                ConnectClass::UnansweredPod,
                Some(name(id)),
                format!("pod {}{on} has this IP but does not answer", name(id)),
            )
        }
        Some(PodIpOwner::Unknown) | None => (
            ConnectClass::PodIpUnverified,
            None,
            "in the pod network; whose it is could not be asked (no API, rate limit or error)"
                .to_owned(),
        ),
    }
}

/// Every unanswered destination of every judged pod, classified, in pod order.
pub fn unanswered_connects(
    pods: &[PodVerdict],
    reports: &HashMap<String, PodProbes>,
    nets: &ConnectNets,
) -> Vec<ConnectVerdict> {
    let mut out = Vec::new();
    for client in pods {
        let Some(report) = reports.get(&client.pod.interface) else {
            continue;
        };
        for d in &report.unanswered {
            let (class, owner, mut diagnosis) = classify(d.dest.ip(), pods, nets, d.owner.as_ref());
            let stale_client = matches!(
                class,
                ConnectClass::VanishedPodIp
                    | ConnectClass::UnansweredPod
                    | ConnectClass::PodIpUnverified
            );
            if stale_client
                && let Some(cause) = report.client_hint.as_ref().and_then(|h| h.cause.as_ref())
            {
                diagnosis = format!("{diagnosis}. {cause}");
            }
            out.push(ConnectVerdict {
                pod: client.pod.id.clone(),
                interface: client.pod.interface.clone(),
                destination: d.dest,
                class,
                owner,
                sockets: d.sockets,
                retransmits: d.retransmits,
                rounds: d.rounds,
                diagnosis,
                client: report.client_hint.clone(),
            });
        }
    }
    out
}

/// What the bounds left out of [`unanswered_connects`], over the judged pods.
pub fn unanswered_dropped(pods: &[PodVerdict], reports: &HashMap<String, PodProbes>) -> u64 {
    pods.iter()
        .filter_map(|p| reports.get(&p.pod.interface))
        .map(|r| u64::from(r.unanswered_dropped))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ExpectedPod, PodReason};
    use crate::verdict::PodProblem;

    fn pod(name: &str, ip: &str, problems: Vec<PodProblem>) -> PodVerdict {
        PodVerdict {
            pod: ExpectedPod {
                id: PodId {
                    namespace: "ns".into(),
                    name: name.into(),
                },
                interface: format!("cali-{name}"),
                ips: vec![ip.parse().unwrap()],
                in_grace: false,
                meta: Default::default(),
                uid: String::new(),
            },
            link: None,
            problems,
            pod_side: None,
            probes: vec![],
            gateways: vec![],
            probes_skipped: None,
        }
    }

    fn nets() -> ConnectNets {
        ConnectNets {
            pods: vec!["10.244.0.0/16".parse().unwrap()],
            services: vec!["10.96.0.0/12".parse().unwrap()],
        }
    }

    #[test]
    fn every_class() {
        let missing = PodProblem {
            reason: PodReason::RouteMissing,
            ip: Some("10.244.0.3".parse().unwrap()),
            detail: String::new(),
        };
        let pods = [
            pod("a", "10.244.0.2", vec![]),
            pod("b", "10.244.0.3", vec![missing]),
        ];
        let c = |ip: &str, owner: Option<PodIpOwner>| {
            classify(ip.parse().unwrap(), &pods, &nets(), owner.as_ref())
        };
        let (class, owner, why) = c("10.244.0.2", None);
        assert_eq!(
            (class, owner.as_deref()),
            (ConnectClass::NodePod, Some("ns/a"))
        );
        assert!(why.contains("wiring is correct"), "{why}");
        let (class, _, why) = c("10.244.0.3", None);
        assert_eq!(class, ConnectClass::NodePod);
        assert!(why.contains("route_missing"), "{why}");
        assert_eq!(c("10.96.0.10", None).0, ConnectClass::Service);
        assert_eq!(c("198.51.100.1", None).0, ConnectClass::Outside);
        assert_eq!(
            c("10.244.9.9", Some(PodIpOwner::NoPod)).0,
            ConnectClass::VanishedPodIp
        );
        let elsewhere = PodIpOwner::Pod {
            id: PodId {
                namespace: "shop".into(),
                name: "api".into(),
            },
            node: Some("node-2".into()),
        };
        let (class, owner, why) = c("10.244.9.9", Some(elsewhere));
        assert_eq!(
            (class, owner.as_deref()),
            (ConnectClass::UnansweredPod, Some("shop/api"))
        );
        assert!(why.contains("node-2"), "{why}");
        assert_eq!(
            c("10.244.9.9", Some(PodIpOwner::Unknown)).0,
            ConnectClass::PodIpUnverified
        );
        assert_eq!(c("10.244.9.9", None).0, ConnectClass::PodIpUnverified);
    }

    #[test]
    fn dropped_is_summed_over_judged_pods_only() {
        let report = |interface: &str, dropped: u32| PodProbes {
            interface: interface.into(),
            pod_side: None,
            dests: Vec::new(),
            error: None,
            unanswered: Vec::new(),
            unanswered_dropped: dropped,
            client_hint: None,
            path_mtu: Vec::new(),
            skipped: None,
        };
        let reports: HashMap<String, PodProbes> = [
            report("cali-a", 18),
            report("cali-b", u32::MAX),
            report("cali-gone", 5),
        ]
        .into_iter()
        .map(|r| (r.interface.clone(), r))
        .collect();
        let pods = [
            pod("a", "10.244.0.2", vec![]),
            pod("b", "10.244.0.3", vec![]),
        ];
        assert_eq!(
            unanswered_dropped(&pods, &reports),
            18 + u64::from(u32::MAX)
        );
        assert_eq!(unanswered_dropped(&[], &reports), 0);
    }
}
