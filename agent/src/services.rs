//! Targets named by Service: the `dns` target from the `kube-dns` Service (`--dns-service`),
//! `--probe NAME=svc/…` checked against the pod source, and the Service watch that resolves
//! them started.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use podnet_probe::kube::{ServiceWatcher, followed_services};
use podnet_probe::model::{ServiceKey, ServiceMap, ServiceRef, ServiceTargets, Workers};
use podnet_probe::probe::target::{Destination, Protocol, Target};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Args;
use crate::supervise::spawn_worker;

/// The DNS port of the cluster's DNS Service (`kube-dns`: `dns` UDP 53, `dns-tcp` TCP 53).
const DNS_PORT: u16 = 53;

/// The `dns` target: the cluster DNS Service's ClusterIP, port 53.
pub fn dns_service_target(key: &ServiceKey) -> Target {
    Target {
        name: "dns".into(),
        protocol: Protocol::Dns,
        destination: Destination::Service,
        http: None,
        service: Some(Arc::new(ServiceRef {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            port: DNS_PORT,
        })),
    }
}

/// The targets named by Service, with their Service ports.
pub fn named(targets: &[Target]) -> Vec<(String, ServiceRef)> {
    targets
        .iter()
        .filter_map(|t| Some((t.name.clone(), ServiceRef::clone(t.service.as_ref()?))))
        .collect()
}

/// Service targets need pods from the API, and at most so many Services.
pub fn check(targets: &[Target], kube: bool) -> Result<(), String> {
    let named = named(targets);
    if let (false, Some((name, _))) = (kube, named.first()) {
        return Err(format!(
            "--probe {name}: Service targets (svc/…) need the Kubernetes pod source"
        ));
    }
    followed_services(named.iter().map(|(_, p)| p.key()))
        .map(|_| ())
        .map_err(|e| format!("--probe: {e}"))
}

/// Start the Service watch when targets name Services (stopped by `shutdown`): the resolver
/// the prober and the monitor share.
pub async fn start(
    args: &Args,
    targets: &[Target],
    workers: &Workers,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Option<(ServiceTargets, JoinHandle<()>)>> {
    let named = named(targets);
    if named.is_empty() || args.no_probes {
        return Ok(None);
    }
    let client = podnet_probe::kube::client(args.kubeconfig.as_deref())
        .await
        .context("connecting to the Kubernetes API")?;
    let keys = named.iter().map(|(_, p)| p.key());
    let (watcher, map): (ServiceWatcher, watch::Receiver<Arc<ServiceMap>>) =
        ServiceWatcher::new(client, keys, args.kube_watch_timeout)?;
    let task = spawn_worker(workers, "services", |guard| async move {
        guard.expect_beats(ServiceWatcher::MAX_SILENCE);
        watcher
            .with_heartbeat(move || guard.beat())
            .run(shutdown)
            .await;
    });
    Ok(Some((
        ServiceTargets {
            targets: named,
            map,
        },
        task,
    )))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn probing(argv: &[&str]) -> Result<Vec<(String, String)>, String> {
        let args =
            Args::try_parse_from([&["podnet-agent"], argv].concat()).map_err(|e| e.to_string())?;
        let p = crate::scoping::probing(&args)?;
        Ok(named(&p.targets)
            .into_iter()
            .map(|(n, s)| (n, s.to_string()))
            .collect())
    }

    const KUBE: &[&str] = &["--pod-source", "kubernetes"];

    #[test]
    fn dns_is_the_kube_dns_service_in_kubernetes_mode() {
        let kube = |extra: &[&str]| probing(&[KUBE, extra].concat());
        assert_eq!(
            kube(&[]).unwrap(),
            [("dns".to_owned(), "kube-system/kube-dns:53".to_owned())]
        );
        assert_eq!(
            kube(&["--dns-service", "dns/coredns"]).unwrap(),
            [("dns".to_owned(), "dns/coredns:53".to_owned())]
        );
        assert_eq!(kube(&["--dns-service", "none"]).unwrap(), []);
        // A fixed server wins.
        assert_eq!(kube(&["--dns-server", "10.96.0.10"]).unwrap(), []);
        // Node mode: no DNS unless --dns-server.
        assert_eq!(probing(&[]).unwrap(), []);
        assert!(kube(&["--dns-service", "kube-dns"]).is_err());
    }

    #[test]
    fn service_targets_need_the_api_and_are_bounded() {
        let web = ["--probe", "web=svc/shop/web:80"];
        assert_eq!(
            probing(&[KUBE, &web, &["--dns-service", "none"]].concat()).unwrap(),
            [("web".to_owned(), "shop/web:80".to_owned())]
        );
        let e = probing(&web).unwrap_err();
        assert!(e.contains("need the Kubernetes pod source"), "{e}");
        let many: Vec<String> = (0..40).map(|i| format!("s{i}=svc/shop/s{i}:80")).collect();
        let mut argv: Vec<&str> = KUBE.to_vec();
        for m in &many {
            argv.extend(["--probe", m]);
        }
        let e = probing(&argv).unwrap_err();
        assert!(e.contains("at most 32"), "{e}");
    }
}
