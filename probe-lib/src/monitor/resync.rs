//! Re-reading: a full re-dump of the host's links, routes and netconf, and the addresses
//! inside pod namespaces.

use std::collections::HashSet;
use std::time::{Instant, SystemTime};

use tracing::debug;

use super::*;
use crate::Error;
use crate::host::{HostNetwork, HostState, ResyncCause};

impl<H: HostNetwork> Monitor<H> {
    /// Re-read everything, then the addresses of every pod namespace.
    pub(super) async fn resync(&mut self, cause: ResyncCause) -> Result<(), Error> {
        let started = Instant::now();
        let dump = match self.host.dump().await {
            Ok(d) => d,
            Err(e) => {
                self.metrics.resync_failed();
                return Err(e);
            }
        };
        let peers = self.state.take_peers();
        self.state = HostState::from_dump(dump, peers);
        self.block_cache.new_state();
        self.expected = None;
        let nsids: HashSet<i32> = self
            .state
            .links()
            .filter(|l| self.is_pod_link(l))
            .filter_map(|l| l.peer_netnsid)
            .collect();
        self.read_peers(nsids).await;
        let took = started.elapsed();
        self.metrics.resynced(cause, took.as_secs_f64());
        self.last_full_sync = Some(SystemTime::now());
        debug!(
            cause = cause.as_str(),
            ms = took.as_secs_f64() * 1e3,
            routes = self.state.route_count(),
            "full re-sync done"
        );
        Ok(())
    }

    /// Read the addresses inside these pod namespaces, one after another: the kernel runs one
    /// dump at a time per netlink socket and answers a concurrent one with EBUSY.
    pub(super) async fn read_peers(&mut self, nsids: HashSet<i32>) {
        self.expected = None;
        for nsid in nsids {
            match self.host.peer_addresses(nsid).await {
                Ok(addrs) if addrs.iter().any(|a| a.is_global()) => {
                    self.unresolved.remove(&nsid);
                    self.state.set_peer_addresses(nsid, addrs);
                }
                other => {
                    if let Err(e) = &other {
                        debug!(nsid, error = %e, "cannot read a pod namespace's addresses");
                    }
                    self.state
                        .set_peer_addresses(nsid, other.unwrap_or_default());
                    let tries = self.unresolved.entry(nsid).or_insert(0);
                    *tries += 1;
                    if *tries > PEER_RETRY_LIMIT {
                        self.unresolved.remove(&nsid);
                    }
                }
            }
        }
        // Forget namespaces whose pod is gone.
        let live: HashSet<i32> = self.state.links().filter_map(|l| l.peer_netnsid).collect();
        self.unresolved.retain(|nsid, _| live.contains(nsid));
    }
}
