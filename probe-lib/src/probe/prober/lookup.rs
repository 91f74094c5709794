//! The pod-IP owner look-ups a round may make for its unanswered connects (bounded per round,
//! each with a timeout).

use std::sync::Arc;

use super::*;
use crate::probe::driver::PodNetwork;

impl<N: PodNetwork> Prober<N> {
    /// What a round may look up: addresses in the pod networks, not this node's pods'.
    pub(super) fn lookup_plan(&self) -> Option<Lookup> {
        let owners = Arc::clone(self.config.owners.as_ref()?);
        let unanswered = self.config.unanswered?;
        Some(Lookup {
            owners,
            min_retransmits: unanswered.min_retransmits,
            networks: self.config.pod_networks.clone(),
            local: self
                .pods
                .values()
                .flat_map(|p| p.ips.iter().copied())
                .collect(),
        })
    }
}

/// The owner look-ups of one round.
pub(super) struct Lookup {
    owners: Arc<dyn PodIpOwners>,
    min_retransmits: u8,
    networks: Vec<ipnet::IpNet>,
    local: HashSet<IpAddr>,
}

impl Lookup {
    /// Ask for the owners of the dump's retransmitting destinations in the pod networks, a
    /// few per round, within [`LOOKUP_TIMEOUT`] (the source caches and rate-limits).
    pub(super) async fn run(
        &self,
        dump: &crate::probe::sockdiag::SynSentDump,
    ) -> HashMap<IpAddr, PodIpOwner> {
        let ips: BTreeSet<IpAddr> = dump
            .dests
            .iter()
            .filter(|d| d.retransmits >= self.min_retransmits.max(1))
            .map(|d| d.dest.ip())
            .filter(|ip| !self.local.contains(ip) && self.networks.iter().any(|n| n.contains(ip)))
            .collect();
        let asks = ips
            .into_iter()
            .take(LOOKUPS_PER_ROUND)
            .map(|ip| async move {
                let owner = tokio::time::timeout(LOOKUP_TIMEOUT, self.owners.owner(ip))
                    .await
                    .unwrap_or(PodIpOwner::Unknown);
                (ip, owner)
            });
        futures::future::join_all(asks).await.into_iter().collect()
    }
}
