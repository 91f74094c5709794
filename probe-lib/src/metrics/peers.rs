//! The cross-node probe's series: counts always (while it runs), and one series per
//! unreachable peer only (bounded by `MAX_PEER_SERIES`; a healthy peer has no series, so
//! cardinality does not grow with the cluster).

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::snapshot::Snapshot;

/// `podnet_peers{state}` and `podnet_peer_unreachable{peer,address,explained_by}`.
pub(super) fn encode(encoder: &mut DescriptorEncoder, snap: &Snapshot) -> fmt::Result {
    let Some(p) = &snap.peers else {
        return Ok(());
    };
    let mut e = encoder.encode_descriptor(
        "podnet_peers",
        "Other nodes of the cross-node probe: known (in the node list), ignored (not probed: over the bound or no address), sampled (within the last rotation), failing (their latest sample), unreachable (confirmed, listed or not)",
        None,
        MetricType::Gauge,
    )?;
    for (state, n) in [
        ("known", p.known),
        ("ignored", p.ignored),
        ("sampled", p.sampled),
        ("failing", p.failing),
        ("unreachable", p.unreachable_total),
    ] {
        ConstGauge::new(n as i64).encode(e.encode_family(&[("state", state)])?)?;
    }
    let mut e = encoder.encode_descriptor(
        "podnet_peer_unreachable",
        "1 while another node's pod-network address answers neither a local pod nor the host in consecutive samples; absent when reachable, and while most peers fail (podnet_node_problem{reason=\"peers_unreachable\"} instead)",
        None,
        MetricType::Gauge,
    )?;
    for u in &p.unreachable {
        let address = u.address.to_string();
        let labels = [
            ("peer", u.peer.as_str()),
            ("address", address.as_str()),
            ("explained_by", u.explained_by.map_or("", |r| r.as_str())),
        ];
        ConstGauge::new(1).encode(e.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::model::{BlockReason, SourceName};
    use crate::snapshot::Snapshot;
    use crate::verdict::{PeerProblem, PeerStatus};

    fn render(snap: &Snapshot) -> String {
        let mut out = String::new();
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register_collector(Box::new(Fixed(snap.clone())));
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        out
    }

    #[derive(Debug)]
    struct Fixed(Snapshot);

    impl prometheus_client::collector::Collector for Fixed {
        fn encode(
            &self,
            mut encoder: prometheus_client::encoding::DescriptorEncoder,
        ) -> std::fmt::Result {
            super::encode(&mut encoder, &self.0)
        }
    }

    #[test]
    fn only_unreachable_peers_have_series() {
        let mut s = Snapshot::initial("a".into(), SourceName::Kubernetes);
        assert!(!render(&s).contains("podnet_peer"), "off: nothing");
        s.peers = Some(PeerStatus {
            known: 49,
            sampled: 49,
            failing: 1,
            unreachable_total: 1,
            unreachable: vec![PeerProblem {
                peer: "node-b".into(),
                address: [10, 244, 200, 1].into(),
                consecutive_failures: 2,
                explained_by: Some(BlockReason::RemoteBlockRouteMissing),
            }],
            ..PeerStatus::default()
        });
        let text = render(&s);
        assert!(text.contains("podnet_peers{state=\"known\"} 49"), "{text}");
        assert!(text.contains(
            "podnet_peer_unreachable{peer=\"node-b\",address=\"10.244.200.1\",explained_by=\"remote_block_route_missing\"} 1"
        ), "{text}");
        assert_eq!(text.matches("podnet_peer_unreachable{").count(), 1);
    }
}
