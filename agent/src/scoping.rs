//! Probe scoping from flags: the built-in probes that run, namespaces not probed, configured
//! targets limited to pods a label selector matches, and the node's policy engine (for the
//! policy-aware diagnosis). The logic lives in `podnet_probe::probe::scope`; this is parsing
//! and the checks that need every flag at once.

use std::collections::BTreeMap;

use clap::ValueEnum;
use podnet_probe::cni::Cni;
use podnet_probe::probe::dns::{DEFAULT_NAME_PREFIX, DnsQuestion};
use podnet_probe::probe::http::TlsConfigs;
use podnet_probe::probe::scope::ProbeScope;
use podnet_probe::probe::selector::LabelSelector;
use podnet_probe::probe::target::{
    Destination, GATEWAY_TARGET, HOST_TO_POD_TARGET, NODE_TARGET, Protocol, Target, check_unique,
    parse_probe_file,
};
use podnet_probe::verdict::PolicyEngine;

use crate::config::Args;

/// One built-in probe (`--builtin-probes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Builtin {
    /// Each pod's gateway, from inside the pod.
    Gateway,
    /// The node's own address, from inside each pod.
    Node,
    /// Each pod's IP, from the host.
    HostToPod,
    /// No built-in probe (configured targets only).
    None,
}

/// `--policy-engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyEngineArg {
    /// Calico with `--cni calico`, else none.
    Auto,
    /// Calico's felix enforces policy.
    Calico,
    /// Another engine enforces policy (Cilium, kube-router, Antrea, a cloud's agent).
    Other,
    /// No policy is enforced on the nodes.
    None,
}

/// `--probe-selector NAME=SELECTOR`.
#[derive(Debug, Clone)]
pub struct TargetSelector {
    /// The configured target's name.
    pub name: String,
    /// The pods it is probed from.
    pub selector: LabelSelector,
}

/// `NAME=SELECTOR`, the selector in Kubernetes syntax.
pub fn probe_selector(s: &str) -> Result<TargetSelector, String> {
    let (name, selector) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not NAME=SELECTOR (e.g. web=app=web,tier!=db)"))?;
    Ok(TargetSelector {
        name: name.trim().to_owned(),
        selector: selector.parse().map_err(|e| format!("{e}"))?,
    })
}

/// A namespace name: a DNS label (lower-case alphanumerics and `-`, at most 63).
pub fn namespace_name(s: &str) -> Result<String, String> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    ok.then(|| s.to_owned())
        .ok_or_else(|| format!("'{s}' is not a namespace name"))
}

/// What the prober and the verdicts get from the probe flags.
#[derive(Debug)]
pub struct Probing {
    /// Targets probed from pods: the built-ins switched on, then `--probe`, then the file.
    pub targets: Vec<Target>,
    /// Who is probed against what.
    pub scope: ProbeScope,
    /// For the policy-aware diagnosis.
    pub policy_engine: Option<PolicyEngine>,
    /// What the DNS probe asks.
    pub dns: DnsQuestion,
    /// How HTTPS probes verify servers.
    pub tls: TlsConfigs,
}

impl Probing {
    /// Every target name the gauges show, host → pod included when it runs.
    pub fn target_names(&self) -> Vec<String> {
        self.targets
            .iter()
            .map(|t| t.name.clone())
            .chain(
                self.scope
                    .host_to_pod
                    .then(|| HOST_TO_POD_TARGET.to_owned()),
            )
            .collect()
    }
}

/// The probe flags together; an error is one line for stderr.
pub fn probing(args: &Args) -> Result<Probing, String> {
    let kube = crate::source::wants_kube(args);
    let on = |b: Builtin| args.builtin_probes.contains(&b);
    if on(Builtin::None) && args.builtin_probes.len() > 1 {
        return Err("--builtin-probes: 'none' cannot be combined with other probes".into());
    }
    let mut targets: Vec<Target> = Target::defaults()
        .into_iter()
        .filter(|t| match t.destination {
            Destination::Gateway => on(Builtin::Gateway),
            Destination::Node => on(Builtin::Node),
            Destination::Address(_) | Destination::Service => true,
        })
        .collect();
    let mut selectors = BTreeMap::new();
    if let Some(server) = args.dns_server {
        targets.push(Target {
            name: "dns".into(),
            protocol: Protocol::Dns,
            destination: Destination::Address(server),
            http: None,
            service: None,
        });
    } else if let (true, Some(key)) = (kube, &args.dns_service.0) {
        targets.push(crate::services::dns_service_target(key));
    }
    let dns_name = args.dns_name.clone().unwrap_or_else(|| {
        let domain = args.cluster_domain.trim().trim_matches('.');
        format!("{DEFAULT_NAME_PREFIX}.{domain}")
    });
    let dns = DnsQuestion::new(&dns_name, args.dns_expect.clone())
        .map_err(|e| format!("--dns-name/--cluster-domain: {e}"))?;
    targets.extend(args.probes.iter().cloned());
    if let Some(path) = &args.probe_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--probe-file {}: {e}", path.display()))?;
        let lines =
            parse_probe_file(&text).map_err(|e| format!("--probe-file {}: {e}", path.display()))?;
        for (target, selector) in lines {
            if let Some(s) = selector {
                selectors.insert(target.name.clone(), s);
            }
            targets.push(target);
        }
    }
    check_unique(&targets).map_err(|e| e.to_string())?;
    crate::services::check(&targets, kube)?;
    for TargetSelector { name, selector } in &args.probe_selectors {
        if [GATEWAY_TARGET, NODE_TARGET, HOST_TO_POD_TARGET].contains(&name.as_str()) {
            return Err(format!(
                "--probe-selector {name}: built-in probes are scoped with --builtin-probes and \
                 the pods' podnet.io/skip-probes annotation"
            ));
        }
        if !targets.iter().any(|t| &t.name == name) {
            return Err(format!(
                "--probe-selector {name}: no --probe or --probe-file target has this name"
            ));
        }
        if selectors.insert(name.clone(), selector.clone()).is_some() {
            return Err(format!(
                "--probe-selector {name}: the target has a selector already"
            ));
        }
    }
    let policy_engine = match args.policy_engine {
        PolicyEngineArg::Auto => matches!(args.cni, Cni::Calico).then_some(PolicyEngine::Calico),
        PolicyEngineArg::Calico => Some(PolicyEngine::Calico),
        PolicyEngineArg::Other => Some(PolicyEngine::Other),
        PolicyEngineArg::None => None,
    };
    Ok(Probing {
        targets,
        scope: ProbeScope {
            exclude_namespaces: args.probe_exclude_namespaces.iter().cloned().collect(),
            host_to_pod: on(Builtin::HostToPod),
            selectors,
        },
        policy_engine,
        dns,
        tls: TlsConfigs::new(args.probe_ca.as_deref()).map_err(|e| format!("--probe-ca: {e}"))?,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn probing_of(argv: &[&str]) -> Result<Probing, String> {
        let args =
            Args::try_parse_from([&["podnet-agent"], argv].concat()).map_err(|e| e.to_string())?;
        probing(&args)
    }

    fn names(p: &Probing) -> Vec<String> {
        p.target_names()
    }

    #[test]
    fn defaults_are_todays_probes() {
        let p = probing_of(&[]).unwrap();
        assert_eq!(names(&p), ["gateway", "node", "pod"]);
        assert!(p.scope.exclude_namespaces.is_empty() && p.scope.selectors.is_empty());
        assert_eq!(p.policy_engine, Some(PolicyEngine::Calico), "--cni calico");
        let p = probing_of(&["--cni", "bridge", "--interface-prefix", "veth"]).unwrap();
        assert_eq!(p.policy_engine, None);
    }

    #[test]
    fn builtins_switch_off_one_by_one() {
        let p = probing_of(&["--builtin-probes", "gateway,host-to-pod"]).unwrap();
        assert_eq!(names(&p), ["gateway", "pod"]);
        let p = probing_of(&[
            "--builtin-probes",
            "none",
            "--probe",
            "dns=tcp:10.96.0.10:53",
        ])
        .unwrap();
        assert_eq!(names(&p), ["dns"]);
        assert!(!p.scope.host_to_pod);
        let e = probing_of(&["--builtin-probes", "none,node"]).unwrap_err();
        assert!(e.contains("'none' cannot be combined"), "{e}");
        let e = probing_of(&["--builtin-probes", "gatway"]).unwrap_err();
        assert!(
            e.contains("possible values: gateway, node, host-to-pod, none"),
            "{e}"
        );
    }

    #[test]
    fn selectors_and_namespaces() {
        let p = probing_of(&[
            "--probe",
            "dns=tcp:10.96.0.10:53",
            "--probe-selector",
            "dns=app=web,tier notin (db)",
            "--probe-exclude-namespaces",
            "kube-system, batch",
            "--policy-engine",
            "other",
        ])
        .unwrap();
        assert_eq!(
            p.scope.selectors["dns"].to_string(),
            "app=web,tier notin (db)"
        );
        assert_eq!(
            p.scope.exclude_namespaces.iter().collect::<Vec<_>>(),
            ["batch", "kube-system"]
        );
        assert_eq!(p.policy_engine, Some(PolicyEngine::Other));
        for (argv, msg) in [
            (
                &["--probe-selector", "dns=app=web"][..],
                "no --probe or --probe-file target",
            ),
            (
                &["--probe-selector", "node=app=web"][..],
                "built-in probes are scoped",
            ),
            (&["--probe-selector", "app"][..], "is not NAME=SELECTOR"),
            (
                &[
                    "--probe",
                    "d=icmp:192.0.2.1",
                    "--probe-selector",
                    "d=app in (x",
                ][..],
                "invalid label selector 'app in (x'",
            ),
            (
                &[
                    "--probe",
                    "d=icmp:192.0.2.1",
                    "--probe-selector",
                    "d=a",
                    "--probe-selector",
                    "d=b",
                ][..],
                "has a selector already",
            ),
            (
                &["--probe-exclude-namespaces", "Kube_System"][..],
                "not a namespace name",
            ),
            (
                &["--policy-engine", "cilium"][..],
                "possible values: auto, calico, other, none",
            ),
        ] {
            let e = probing_of(argv).unwrap_err();
            assert!(e.contains(msg), "{argv:?}: {e}");
        }
    }

    #[test]
    fn the_dns_server_is_the_dns_target_asking_the_cluster_domain() {
        let p = probing_of(&[
            "--dns-server",
            "10.96.0.10",
            "--cluster-domain",
            "corp.example.",
        ])
        .unwrap();
        let dns = p.targets.iter().find(|t| t.name == "dns").unwrap();
        assert_eq!(dns.protocol, Protocol::Dns);
        assert_eq!(
            dns.destination,
            Destination::Address("10.96.0.10:53".parse().unwrap())
        );
        assert_eq!(p.dns.name(), "kubernetes.default.svc.corp.example.");
        let p = probing_of(&[
            "--dns-server",
            "[fd00::a]:5353",
            "--dns-name",
            "api.example",
        ])
        .unwrap();
        assert_eq!(p.dns.name(), "api.example.");
        assert!(
            probing_of(&[])
                .unwrap()
                .targets
                .iter()
                .all(|t| t.name != "dns")
        );
        for bad in [
            &["--dns-server", "kube-dns"][..],
            &["--dns-server", "10.96.0.10:0"],
            &["--dns-name", "a..b"],
            &["--dns-expect", "not-an-ip"],
            &[
                "--dns-server",
                "10.96.0.10",
                "--probe",
                "dns=icmp:192.0.2.1",
            ],
            &["--probe-ca", "/nonexistent/ca.pem"],
        ] {
            assert!(probing_of(bad).is_err(), "{bad:?} accepted");
        }
    }
}
