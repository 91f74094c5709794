//! The control-plane series, rendered from the snapshot (absent when the check is off or the
//! node is not a control-plane node): one problem series and one users series per Service
//! port (bounded by the source), the APIServices' `Available` condition, and the API server's
//! `--enable-aggregator-routing`.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use super::gauge;
use crate::snapshot::Snapshot;

/// Longest joined user list in a label value (names beyond it are left to `/status`).
const MAX_USERS_LABEL: usize = 512;

fn joined(names: &[String]) -> String {
    let mut s = String::new();
    for n in names {
        if s.len() + n.len() + 1 > MAX_USERS_LABEL {
            s.push_str(",…");
            break;
        }
        if !s.is_empty() {
            s.push(',');
        }
        s.push_str(n);
    }
    s
}

/// Every control-plane series of `snap`, if it has the section.
pub(super) fn encode_control_plane(
    encoder: &mut DescriptorEncoder,
    snap: &Snapshot,
) -> fmt::Result {
    let Some(cp) = &snap.control_plane else {
        return Ok(());
    };
    gauge(
        encoder,
        "podnet_controlplane_services",
        "Service ports kube-apiserver calls (aggregated APIs, webhooks, CRD conversions) checked from this node",
        cp.services.len() as i64,
    )?;
    gauge(
        encoder,
        "podnet_controlplane_services_over_limit",
        "Referenced Service ports beyond the check's bound, not checked",
        cp.services_over_limit as i64,
    )?;
    gauge(
        encoder,
        "podnet_controlplane_read_ok",
        "1 when the last read of the control-plane objects from the API succeeded",
        i64::from(cp.synced && cp.error.is_none()),
    )?;
    if let Some(on) = cp.aggregator_routing {
        gauge(
            encoder,
            "podnet_controlplane_aggregator_routing",
            "kube-apiserver on this node runs with --enable-aggregator-routing=true (1) or without (0); absent without a mirror pod",
            i64::from(on),
        )?;
    }
    {
        let mut e = encoder.encode_descriptor(
            "podnet_controlplane_service_problem",
            "One series per Service port kube-apiserver calls, labelled with its reason; 1 when the problem breaks kube-apiserver's calls from this node",
            None,
            MetricType::Gauge,
        )?;
        for s in &cp.services {
            let port = s.service.port.to_string();
            let labels = [
                ("namespace", s.service.namespace.as_str()),
                ("service", s.service.name.as_str()),
                ("port", port.as_str()),
                ("reason", s.reason.as_str()),
            ];
            ConstGauge::new(i64::from(s.affects_apiserver)).encode(e.encode_family(&labels)?)?;
        }
    }
    {
        let mut e = encoder.encode_descriptor(
            "podnet_controlplane_service_users",
            "1 per Service port kube-apiserver calls, naming its users (APIServices, webhook configurations, CRDs; comma-joined)",
            None,
            MetricType::Gauge,
        )?;
        for s in &cp.services {
            let port = s.service.port.to_string();
            let (a, w, c) = (
                joined(&s.users.apiservices),
                joined(&s.users.webhooks),
                joined(&s.users.crds),
            );
            let labels = [
                ("namespace", s.service.namespace.as_str()),
                ("service", s.service.name.as_str()),
                ("port", port.as_str()),
                ("apiservices", a.as_str()),
                ("webhooks", w.as_str()),
                ("crds", c.as_str()),
            ];
            ConstGauge::new(1).encode(e.encode_family(&labels)?)?;
        }
    }
    let mut e = encoder.encode_descriptor(
        "podnet_apiservice_available",
        "An APIService's Available condition as kube-aggregator sets it (1 True, 0 False); absent without a condition",
        None,
        MetricType::Gauge,
    )?;
    for a in &cp.apiservices {
        if let Some(available) = a.available {
            ConstGauge::new(i64::from(available))
                .encode(e.encode_family(&[("apiservice", a.name.as_str())])?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::watch;

    use super::*;
    use crate::metrics::Metrics;
    use crate::model::{
        ApiServiceCondition, ControlPlaneReason, ServiceRef, ServiceUsers, SourceName,
    };
    use crate::verdict::{ControlPlaneStatus, ServiceVerdict};

    fn render(cp: Option<ControlPlaneStatus>) -> String {
        let mut snap = Snapshot::initial("n".into(), SourceName::Kubernetes);
        snap.control_plane = cp;
        let (_tx, rx) = watch::channel(Arc::new(snap));
        let mut m = Metrics::new("1");
        m.serve_snapshots(rx);
        m.encode().unwrap()
    }

    #[test]
    fn one_series_per_service_and_none_when_off() {
        assert!(!render(None).contains("podnet_controlplane"));
        let svc = ServiceRef {
            namespace: "kube-system".into(),
            name: "metrics-server".into(),
            port: 443,
        };
        let cp = ControlPlaneStatus {
            aggregator_routing: Some(false),
            services: vec![ServiceVerdict {
                service: svc.clone(),
                users: ServiceUsers {
                    apiservices: vec!["v1beta1.metrics.k8s.io".into()],
                    webhooks: vec!["validating/a".into(), "mutating/b".into()],
                    crds: Vec::new(),
                },
                reason: ControlPlaneReason::ClusterIpUnreachable,
                affects_apiserver: true,
                message: "m".into(),
                cluster_ip: None,
                endpoints: Vec::new(),
            }],
            apiservices: vec![ApiServiceCondition {
                name: "v1beta1.metrics.k8s.io".into(),
                service: svc,
                available: Some(false),
                reason: "FailedDiscoveryCheck".into(),
                message: String::new(),
            }],
            synced: true,
            ..ControlPlaneStatus::default()
        };
        let text = render(Some(cp));
        for want in [
            r#"podnet_controlplane_service_problem{namespace="kube-system",service="metrics-server",port="443",reason="cluster_ip_unreachable"} 1"#,
            r#"podnet_controlplane_service_users{namespace="kube-system",service="metrics-server",port="443",apiservices="v1beta1.metrics.k8s.io",webhooks="validating/a,mutating/b",crds=""} 1"#,
            r#"podnet_apiservice_available{apiservice="v1beta1.metrics.k8s.io"} 0"#,
            "podnet_controlplane_aggregator_routing 0",
            "podnet_controlplane_services 1",
            "podnet_controlplane_read_ok 1",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
    }

    #[test]
    fn user_lists_are_joined_and_bounded() {
        assert_eq!(joined(&["a".into(), "b".into()]), "a,b");
        assert_eq!(joined(&[]), "");
        let many: Vec<String> = (0..100)
            .map(|i| format!("validating/webhook-{i:03}"))
            .collect();
        let s = joined(&many);
        assert!(s.len() <= MAX_USERS_LABEL + 4 && s.ends_with(",…"), "{s}");
    }
}
