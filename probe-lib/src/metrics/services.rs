//! The series of targets named by Service, rendered from the snapshot (absent without such
//! targets): one `podnet_service_target_resolved` per target, and
//! `podnet_service_target_unresolved` with the reason while it has no address. Bounded by
//! configuration (at most 32 Services).

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::snapshot::Snapshot;

/// Every Service-target series of `snap`.
pub(super) fn encode(encoder: &mut DescriptorEncoder, snap: &Snapshot) -> fmt::Result {
    if snap.service_targets.is_empty() {
        return Ok(());
    }
    let mut e = encoder.encode_descriptor(
        "podnet_service_target_resolved",
        "1 when a target named by Service (svc/…, or dns from the kube-dns Service) has a ClusterIP and port to probe",
        None,
        MetricType::Gauge,
    )?;
    for t in &snap.service_targets {
        let labels = [
            ("target", t.target.as_str()),
            ("service", t.service.as_str()),
        ];
        ConstGauge::new(i64::from(t.address.is_some())).encode(e.encode_family(&labels)?)?;
    }
    let mut e = encoder.encode_descriptor(
        "podnet_service_target_unresolved",
        "A target named by Service that is not probed, and why (pending, absent, no_cluster_ip, no_port)",
        None,
        MetricType::Gauge,
    )?;
    for t in &snap.service_targets {
        if let Some(why) = t.unresolved {
            let labels = [("target", t.target.as_str()), ("reason", why.as_str())];
            ConstGauge::new(1).encode(e.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::watch;

    use crate::metrics::Metrics;
    use crate::model::{ServiceTargetStatus, ServiceUnresolved, SourceName};
    use crate::snapshot::Snapshot;

    fn render(targets: Vec<ServiceTargetStatus>) -> String {
        let mut snap = Snapshot::initial("n".into(), SourceName::Kubernetes);
        snap.service_targets = targets;
        let (_tx, rx) = watch::channel(Arc::new(snap));
        let mut m = Metrics::new("1");
        m.serve_snapshots(rx);
        m.encode().unwrap()
    }

    #[test]
    fn resolved_and_unresolved_targets() {
        assert!(!render(Vec::new()).contains("podnet_service_target"));
        let out = render(vec![
            ServiceTargetStatus {
                target: "web".into(),
                service: "shop/web:80".into(),
                address: Some("10.96.0.20:80".parse().unwrap()),
                unresolved: None,
            },
            ServiceTargetStatus {
                target: "dns".into(),
                service: "kube-system/kube-dns:53".into(),
                address: None,
                unresolved: Some(ServiceUnresolved::Absent),
            },
        ]);
        assert!(
            out.contains(r#"podnet_service_target_resolved{target="web",service="shop/web:80"} 1"#),
            "{out}"
        );
        assert!(out.contains(
            r#"podnet_service_target_resolved{target="dns",service="kube-system/kube-dns:53"} 0"#
        ));
        assert!(
            out.contains(r#"podnet_service_target_unresolved{target="dns",reason="absent"} 1"#)
        );
        assert!(!out.contains(r#"podnet_service_target_unresolved{target="web""#));
    }
}
