//! The readers against real object shapes and malformed ones.

use serde_json::json;

use super::*;

fn sref(ns: &str, name: &str, port: u16) -> ServiceRef {
    ServiceRef {
        namespace: ns.into(),
        name: name.into(),
        port,
    }
}

#[test]
fn apiservice_with_service_and_condition() {
    let obj = json!({
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": "v1beta1.metrics.k8s.io"},
        "spec": {"group": "metrics.k8s.io", "version": "v1beta1",
                 "service": {"namespace": "kube-system", "name": "metrics-server"}},
        "status": {"conditions": [{"type": "Available", "status": "False",
            "reason": "FailedDiscoveryCheck",
            "message": "failing or missing response from https://10.96.0.10:443/apis/metrics.k8s.io/v1beta1"}]}
    });
    let a = apiservice(&obj).unwrap();
    assert_eq!(a.name, "v1beta1.metrics.k8s.io");
    assert_eq!(a.service, sref("kube-system", "metrics-server", 443));
    assert_eq!(a.available, Some(false));
    assert_eq!(a.reason, "FailedDiscoveryCheck");
    // Local APIServices have no service; malformed ones are skipped.
    let local = json!({"metadata": {"name": "v1.apps"}, "spec": {"service": null}});
    assert!(apiservice(&local).is_none());
    for bad in [
        json!({"metadata": {"name": "x"}, "spec": {"service": {"namespace": 3, "name": "a"}}}),
        json!({"metadata": {"name": "x"}, "spec": {"service": {"namespace": "a", "name": "b", "port": 70000}}}),
        json!({"metadata": {"name": ""}, "spec": {"service": {"namespace": "a", "name": "b"}}}),
        json!({"metadata": 5}),
        json!([]),
    ] {
        assert!(apiservice(&bad).is_none(), "{bad}");
    }
    let no_status = json!({"metadata": {"name": "x"},
        "spec": {"service": {"namespace": "a", "name": "b", "port": 8443}},
        "status": {"conditions": "nope"}});
    let a = apiservice(&no_status).unwrap();
    assert_eq!((a.available, a.service.port), (None, 8443));
    let long = json!({"metadata": {"name": "x"},
        "spec": {"service": {"namespace": "a", "name": "b"}},
        "status": {"conditions": [{"type": "Available", "status": "True", "message": "é".repeat(600)}]}});
    let a = apiservice(&long).unwrap();
    assert_eq!(a.available, Some(true));
    assert!(a.message.len() <= MAX_MESSAGE + 3);
}

#[test]
fn webhook_configurations_and_crd_conversions() {
    let cfg = json!({
        "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "cert-manager-webhook"},
        "webhooks": [
            {"name": "a.cert-manager.io", "clientConfig": {"service":
                {"namespace": "cert-manager", "name": "cert-manager-webhook", "path": "/validate", "port": 443}}},
            {"name": "b.cert-manager.io", "clientConfig": {"service":
                {"namespace": "cert-manager", "name": "cert-manager-webhook", "path": "/mutate"}}},
            {"name": "url.example.com", "clientConfig": {"url": "https://example.com/hook"}},
            {"name": "odd", "clientConfig": 7}
        ]
    });
    assert_eq!(
        webhook_services(&cfg),
        [sref("cert-manager", "cert-manager-webhook", 443)]
    );
    assert!(webhook_services(&json!({"webhooks": null})).is_empty());
    let crd = json!({"metadata": {"name": "certificates.cert-manager.io"},
        "spec": {"conversion": {"strategy": "Webhook", "webhook": {"clientConfig": {"service":
            {"namespace": "cert-manager", "name": "cert-manager-webhook", "port": 9443}}}}}});
    assert_eq!(
        crd_service(&crd),
        Some(sref("cert-manager", "cert-manager-webhook", 9443))
    );
    let none = json!({"spec": {"conversion": {"strategy": "None"}}});
    assert_eq!(crd_service(&none), None);
}

#[test]
fn service_ports_and_refusals() {
    let svc = json!({"spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10",
        "ports": [{"name": "https", "port": 443, "targetPort": "https"}, {"port": 80}]}});
    let p = service_port(&svc, 443).unwrap();
    assert_eq!(p.cluster_ip, "10.96.0.10".parse::<IpAddr>().unwrap());
    assert_eq!(p.port_name, "https");
    assert_eq!(service_port(&svc, 80).unwrap().port_name, "");
    assert!(
        service_port(&svc, 8443)
            .unwrap_err()
            .contains("no port 8443")
    );
    let headless = json!({"spec": {"clusterIP": "None", "ports": [{"port": 443}]}});
    assert!(
        service_port(&headless, 443)
            .unwrap_err()
            .contains("headless")
    );
    let ext = json!({"spec": {"type": "ExternalName", "externalName": "x.example.com"}});
    assert!(
        service_port(&ext, 443)
            .unwrap_err()
            .contains("ExternalName")
    );
    let bad = json!({"spec": {"clusterIP": "not-an-ip", "ports": [{"port": 443}]}});
    assert!(service_port(&bad, 443).is_err());
    assert!(service_port(&json!(null), 443).is_err());
}

#[test]
fn ready_endpoints_by_port_name() {
    let slice = json!({
        "addressType": "IPv4",
        "ports": [{"name": "https", "port": 10250, "protocol": "TCP"}, {"name": "metrics", "port": 9090}],
        "endpoints": [
            {"addresses": ["10.244.0.5"], "conditions": {"ready": true}},
            {"addresses": ["10.244.1.7"]},
            {"addresses": ["10.244.2.9"], "conditions": {"ready": false}},
            {"addresses": ["garbage", 5]}
        ]
    });
    let eps = ready_endpoints(&slice, "https");
    let ips: Vec<String> = eps.iter().map(|(ip, _)| ip.to_string()).collect();
    assert_eq!(ips, ["10.244.0.5", "10.244.1.7"]);
    assert!(eps.iter().all(|(_, p)| *p == 10250));
    assert!(ready_endpoints(&slice, "other").is_empty());
    let fqdn = json!({"addressType": "FQDN", "ports": [{"name": "", "port": 1}],
        "endpoints": [{"addresses": ["a.example.com"]}]});
    assert!(ready_endpoints(&fqdn, "").is_empty());
}

#[test]
fn aggregator_routing_from_the_command_line() {
    let pod =
        |cmd: Value| json!({"spec": {"containers": [{"name": "kube-apiserver", "command": cmd}]}});
    let base = ["kube-apiserver", "--advertise-address=192.0.2.10"];
    let with = |extra: &[&str]| {
        let mut v: Vec<&str> = base.to_vec();
        v.extend_from_slice(extra);
        pod(json!(v))
    };
    assert!(!aggregator_routing(&with(&[])));
    assert!(aggregator_routing(&with(&[
        "--enable-aggregator-routing=true"
    ])));
    assert!(aggregator_routing(&with(&["--enable-aggregator-routing"])));
    assert!(!aggregator_routing(&with(&[
        "--enable-aggregator-routing=false"
    ])));
    assert!(!aggregator_routing(&with(&[
        "--enable-aggregator-routing=true",
        "--enable-aggregator-routing=false"
    ])));
    assert!(!aggregator_routing(&with(&[
        "--enable-aggregator-routing-x=true"
    ])));
    // Args, too.
    let args = json!({"spec": {"containers": [{"name": "kube-apiserver",
        "command": ["kube-apiserver"], "args": ["--enable-aggregator-routing=1"]}]}});
    assert!(aggregator_routing(&args));
    assert!(!aggregator_routing(&json!({"spec": {"containers": "x"}})));
    assert!(!aggregator_routing(&pod(json!([1, null]))));
}

#[test]
fn control_plane_role_label() {
    let cp = json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}});
    assert!(is_control_plane_node(&cp));
    assert!(!is_control_plane_node(&json!({"metadata": {"labels": {}}})));
    assert!(!is_control_plane_node(&json!({"metadata": {"labels": 3}})));
}
