//! Which probes a pod gets: whole pods opted out (namespace flag, label, annotation), targets a
//! pod skips by annotation, targets limited to pods matching a label selector, and the host →
//! pod probe switched off. Pure. Only probing is scoped: every pod's route and wiring are
//! verified regardless.
//!
//! A pod's labels and annotations are its tenant's to write: values are read leniently, and
//! what is not understood is ignored (the pod is probed as if it were absent) and reported
//! back to be counted and logged once.

use std::collections::{BTreeMap, BTreeSet};

use super::selector::LabelSelector;
use super::target::HOST_TO_POD_TARGET;
use crate::kube::{PROBES_KEY, SKIP_PROBES_KEY};
use crate::model::{PodEntry, ProbeSkip, ScopeIgnored};

/// Target names a `podnet.io/skip-probes` annotation may list, at most.
const MAX_SKIPPED_NAMES: usize = 16;

/// Probe scoping, from configuration.
#[derive(Debug, Clone)]
pub struct ProbeScope {
    /// Pods of these namespaces are not probed (`--probe-exclude-namespaces`).
    pub exclude_namespaces: BTreeSet<String>,
    /// The host probes every pod (`host-to-pod` in `--builtin-probes`).
    pub host_to_pod: bool,
    /// Configured targets probed only from pods matching a selector, by target name.
    pub selectors: BTreeMap<String, LabelSelector>,
}

impl Default for ProbeScope {
    /// Everything probed: today's behaviour.
    fn default() -> Self {
        ProbeScope {
            exclude_namespaces: BTreeSet::new(),
            host_to_pod: true,
            selectors: BTreeMap::new(),
        }
    }
}

/// What one pod gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodScope {
    /// Not probed at all, and why.
    pub skipped: Option<ProbeSkip>,
    /// Target names (`pod` for host → pod) this pod is not probed against.
    pub skip_targets: BTreeSet<String>,
    /// What of the pod's own scoping was ignored, with the offending text (bounded), for a
    /// counted warning.
    pub ignored: Vec<(ScopeIgnored, String)>,
}

impl PodScope {
    /// Whether the pod is probed against `target`.
    pub fn probes(&self, target: &str) -> bool {
        self.skipped.is_none() && !self.skip_targets.contains(target)
    }
}

/// `true`/`false` as people write them; anything else is not a switch.
fn switch(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" | "enabled" => Some(true),
        "false" | "no" | "off" | "0" | "disabled" => Some(false),
        _ => None,
    }
}

/// At most 64 characters of a tenant's text, for a log line.
fn excerpt(s: &str) -> String {
    s.chars().take(64).collect()
}

impl ProbeScope {
    /// The scope of `pod` among the configured `targets` (names, built-ins included).
    pub fn for_pod(&self, pod: &PodEntry, targets: &[&str]) -> PodScope {
        let mut out = PodScope::default();
        let meta = &pod.meta;
        if meta.truncated {
            out.ignored.push((ScopeIgnored::TooLarge, String::new()));
        }
        let label = meta.labels.get(PROBES_KEY).map(String::as_str);
        let label = label.and_then(|v| {
            let s = switch(v);
            if s.is_none() {
                out.ignored.push((
                    ScopeIgnored::InvalidValue,
                    format!("label {PROBES_KEY}={v}"),
                ));
            }
            s
        });
        let annotation = meta.probes.as_deref().and_then(|v| {
            let s = switch(v);
            if s.is_none() {
                out.ignored.push((
                    ScopeIgnored::InvalidValue,
                    format!("annotation {PROBES_KEY}={}", excerpt(v)),
                ));
            }
            s
        });
        out.skipped = if self.exclude_namespaces.contains(&pod.namespace) {
            Some(ProbeSkip::Namespace)
        } else if label == Some(false) {
            Some(ProbeSkip::Label)
        } else if annotation == Some(false) {
            Some(ProbeSkip::Annotation)
        } else {
            None
        };
        if let Some(list) = meta.skip_probes.as_deref() {
            let names: Vec<&str> = list
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .collect();
            if names.len() > MAX_SKIPPED_NAMES {
                out.ignored.push((ScopeIgnored::TooLarge, excerpt(list)));
            }
            for name in names.into_iter().take(MAX_SKIPPED_NAMES) {
                if targets.contains(&name) {
                    out.skip_targets.insert(name.to_owned());
                } else {
                    out.ignored.push((
                        ScopeIgnored::UnknownTarget,
                        format!("annotation {SKIP_PROBES_KEY}: {}", excerpt(name)),
                    ));
                }
            }
        }
        for (name, selector) in &self.selectors {
            if !selector.matches(&meta.labels) {
                out.skip_targets.insert(name.clone());
            }
        }
        if !self.host_to_pod {
            out.skip_targets.insert(HOST_TO_POD_TARGET.to_owned());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::ProbeMeta;

    const TARGETS: &[&str] = &["gateway", "node", "dns", "pod"];

    fn pod(namespace: &str, labels: &[(&str, &str)], probes: Option<&str>) -> PodEntry {
        PodEntry {
            interface: "cali1".into(),
            ips: Vec::new(),
            netnsid: None,
            peer_index: None,
            gateways: Vec::new(),
            namespace: namespace.into(),
            meta: ProbeMeta {
                labels: Arc::new(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                probes: probes.map(Arc::from),
                ..ProbeMeta::default()
            },
        }
    }

    #[test]
    fn pods_opt_out_by_namespace_label_or_annotation() {
        let scope = ProbeScope {
            exclude_namespaces: ["kube-system".to_owned()].into(),
            ..ProbeScope::default()
        };
        let all = scope.for_pod(&pod("shop", &[], None), TARGETS);
        assert_eq!(all, PodScope::default());
        assert!(all.probes("node") && all.probes("pod"));
        let cases = [
            (pod("kube-system", &[], Some("true")), ProbeSkip::Namespace),
            (
                pod("shop", &[(PROBES_KEY, "false")], None),
                ProbeSkip::Label,
            ),
            (pod("shop", &[], Some("false")), ProbeSkip::Annotation),
            (pod("shop", &[], Some(" Off ")), ProbeSkip::Annotation),
            (
                pod("shop", &[(PROBES_KEY, "false")], Some("true")),
                ProbeSkip::Label,
            ),
        ];
        for (p, why) in cases {
            let s = scope.for_pod(&p, TARGETS);
            assert_eq!(s.skipped, Some(why), "{p:?}");
            assert!(!s.probes("gateway") && !s.probes("pod"));
            assert!(s.ignored.is_empty());
        }
    }

    #[test]
    fn unknown_values_are_ignored_and_reported() {
        let scope = ProbeScope::default();
        let s = scope.for_pod(
            &pod("shop", &[(PROBES_KEY, "maybe")], Some("nope")),
            TARGETS,
        );
        assert_eq!(s.skipped, None, "an unknown value probes the pod");
        let reasons: Vec<ScopeIgnored> = s.ignored.iter().map(|(r, _)| *r).collect();
        assert_eq!(
            reasons,
            [ScopeIgnored::InvalidValue, ScopeIgnored::InvalidValue]
        );
        assert!(s.ignored[1].1.contains("nope"), "{:?}", s.ignored);
        let mut big = pod("shop", &[], None);
        big.meta.truncated = true;
        assert_eq!(
            scope.for_pod(&big, TARGETS).ignored,
            [(ScopeIgnored::TooLarge, String::new())]
        );
    }

    #[test]
    fn skip_list_names_configured_targets_only() {
        let scope = ProbeScope::default();
        let mut p = pod("shop", &[], None);
        p.meta.skip_probes = Some(Arc::from(" node, pod,bogus,,"));
        let s = scope.for_pod(&p, TARGETS);
        assert_eq!(s.skipped, None);
        assert!(!s.probes("node") && !s.probes("pod") && s.probes("gateway"));
        assert_eq!(
            s.ignored,
            [(
                ScopeIgnored::UnknownTarget,
                format!("annotation {SKIP_PROBES_KEY}: bogus")
            )]
        );
        let long: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
        p.meta.skip_probes = Some(Arc::from(long.join(",").as_str()));
        let s = scope.for_pod(&p, TARGETS);
        assert_eq!(s.ignored[0].0, ScopeIgnored::TooLarge);
        assert_eq!(s.ignored.len(), 1 + MAX_SKIPPED_NAMES, "bounded work");
    }

    #[test]
    fn selectors_limit_targets_and_host_to_pod_can_be_off() {
        let scope = ProbeScope {
            selectors: [("dns".to_owned(), "app=web,tier!=db".parse().unwrap())].into(),
            host_to_pod: false,
            ..ProbeScope::default()
        };
        let web = scope.for_pod(&pod("shop", &[("app", "web")], None), TARGETS);
        assert!(web.probes("dns") && web.probes("node") && !web.probes("pod"));
        let db = scope.for_pod(
            &pod("shop", &[("app", "web"), ("tier", "db")], None),
            TARGETS,
        );
        assert!(!db.probes("dns") && db.probes("gateway"));
        let node_mode = scope.for_pod(&pod("", &[], None), TARGETS);
        assert!(
            !node_mode.probes("dns"),
            "no labels: a selector never matches"
        );
    }
}
