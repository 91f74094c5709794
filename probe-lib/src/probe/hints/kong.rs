//! Kong: its Admin API's `GET /status` on the pod's loopback. In DB mode
//! `database.reachable: false` means the ingress controller cannot write new targets, so the
//! proxy keeps its cached ones (the runbook's third incident); DB-less mode has
//! `configuration_hash` instead (all zeros: no configuration loaded).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use serde_json::Value;

use super::{ClientHint, Hint, http_get};
use crate::model::ProbeMeta;
use crate::probe::selector::LabelSelector;

/// The label Kong's Helm charts (`kong`, and `ingress`'s gateway) put on the proxy's pods,
/// `app.kubernetes.io/name: {{ template "kong.name" . }}`, which is the chart's name.
pub const CHART_LABEL: (&str, &str) = ("app.kubernetes.io/name", "kong");
/// Image repositories (the last path segment) of Kong's proxy: `kong`, `kong/kong-gateway`.
const IMAGES: [&str; 2] = ["kong", "kong-gateway"];

/// Which pods are Kong proxies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum KongPods {
    /// Kong's charts' label ([`CHART_LABEL`]) or a container image of Kong's ([`IMAGES`]).
    #[default]
    Charts,
    /// Pods matching this label selector (`--kong-selector`; empty: every pod).
    Selector(LabelSelector),
    /// Every pod: node mode, where no labels or images are known, so the shape of the answer
    /// to `/status` alone says whether the pod is Kong.
    Any,
}

/// Kong's Admin API on the pod's loopback.
#[derive(Debug, Clone)]
pub struct Kong {
    /// The admin port (Kong's default: 8001).
    pub admin_port: u16,
    /// Which pods are asked.
    pub pods: KongPods,
}

/// Whether an image reference's repository is Kong's: `kong:3.6`, `kong/kong-gateway:3.6.1.4`,
/// `registry:5000/mirror/kong@sha256:…` are; `kong/kubernetes-ingress-controller` (the
/// controller, not the proxy) and `kongfu` are not.
pub fn is_kong_image(image: &str) -> bool {
    let name = image.split('@').next().unwrap_or_default();
    // A colon after the last slash starts the tag; one before it is a registry's port.
    let last = name.rsplit('/').next().unwrap_or_default();
    let repo = last.split(':').next().unwrap_or_default();
    IMAGES.contains(&repo)
}

impl KongPods {
    /// Whether a pod with this metadata is a Kong proxy.
    pub fn matches(&self, meta: &ProbeMeta) -> bool {
        match self {
            KongPods::Charts => {
                meta.labels.get(CHART_LABEL.0).map(String::as_str) == Some(CHART_LABEL.1)
                    || meta.images.iter().any(|i| is_kong_image(i))
            }
            KongPods::Selector(s) => s.matches(&meta.labels),
            KongPods::Any => true,
        }
    }
}

/// What Kong's `/status` says; `None` when it is not Kong's.
pub fn from_status(body: &[u8]) -> Option<Hint> {
    let v: Value = serde_json::from_slice(body).ok()?;
    // Kong's shape: a `server` object with connection counters, and `database` (DB mode) or
    // `configuration_hash` (DB-less).
    v.get("server")?.as_object()?;
    let hint = |cause: Option<&str>, detail: String| Hint {
        kind: "kong",
        cause: cause.map(str::to_owned),
        detail,
    };
    if let Some(hash) = v.get("configuration_hash").and_then(Value::as_str) {
        return Some(if hash.bytes().all(|b| b == b'0') {
            hint(
                Some(
                    "Kong (DB-less) has no configuration loaded, so it has no current upstream targets",
                ),
                "Kong DB-less, configuration_hash empty".to_owned(),
            )
        } else {
            let hash: String = hash.chars().take(64).collect();
            hint(
                None,
                format!(
                    "Kong DB-less, configuration_hash {hash}: check that the controller pushes configuration after deploys"
                ),
            )
        });
    }
    match v.get("database")?.get("reachable")?.as_bool()? {
        false => Some(hint(
            Some("Kong cannot reach its database, so new upstream targets are not written"),
            "Kong /status: database.reachable false".to_owned(),
        )),
        true => Some(hint(
            None,
            "Kong /status: database.reachable true".to_owned(),
        )),
    }
}

impl ClientHint for Kong {
    fn applies(&self, meta: &ProbeMeta) -> bool {
        self.pods.matches(meta)
    }

    fn read(&self, deadline: Instant) -> Option<Hint> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.admin_port));
        from_status(&http_get(addr, "/status", deadline)?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;

    fn meta(labels: &[(&str, &str)], images: &[&str]) -> ProbeMeta {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ProbeMeta {
            labels: Arc::new(labels),
            images: Arc::new(images.iter().map(|i| (*i).to_owned()).collect()),
            ..ProbeMeta::default()
        }
    }

    #[test]
    fn kong_pods_by_chart_label_or_image() {
        let charts = KongPods::Charts;
        let chart = [
            ("app.kubernetes.io/name", "kong"),
            ("app.kubernetes.io/component", "app"),
        ];
        assert!(charts.matches(&meta(&chart, &["busybox"])));
        for image in [
            "kong",
            "kong:3.6",
            "kong/kong-gateway:3.6.1.4",
            "docker.io/library/kong:3.4@sha256:0123",
            "registry:5000/mirror/kong",
        ] {
            assert!(charts.matches(&meta(&[], &["sidecar:1", image])), "{image}");
        }
        for image in [
            "kong/kubernetes-ingress-controller:3.1",
            "kongfu:1",
            "registry.kong:5000/app",
            "",
        ] {
            assert!(!charts.matches(&meta(&[], &[image])), "{image}");
        }
        assert!(!charts.matches(&meta(&[("app.kubernetes.io/name", "web")], &[])));
        assert!(!charts.matches(&ProbeMeta::default()));

        let sel = KongPods::Selector("app=edge,tier in (proxy)".parse().unwrap());
        assert!(sel.matches(&meta(&[("app", "edge"), ("tier", "proxy")], &[])));
        // The flag replaces the default: the chart's label or image alone is not enough.
        assert!(!sel.matches(&meta(&chart, &["kong:3.6"])));
        let every = KongPods::Selector(LabelSelector::default());
        assert!(every.matches(&ProbeMeta::default()));
        assert!(KongPods::Any.matches(&ProbeMeta::default()));
        let kong = Kong {
            admin_port: 8001,
            pods: KongPods::Charts,
        };
        assert!(kong.applies(&meta(&chart, &[])));
        assert!(!kong.applies(&ProbeMeta::default()));
    }

    #[test]
    fn kong_status_answers() {
        let db = |reachable: bool| {
            format!(
                r#"{{"database":{{"reachable":{reachable}}},"memory":{{}},"server":{{"connections_active":1,"total_requests":5}}}}"#
            )
        };
        let down = from_status(db(false).as_bytes()).unwrap();
        assert!(down.cause.unwrap().contains("cannot reach its database"));
        assert_eq!(from_status(db(true).as_bytes()).unwrap().cause, None);
        let empty = r#"{"configuration_hash":"00000000000000000000000000000000","server":{}}"#;
        assert!(from_status(empty.as_bytes()).unwrap().cause.is_some());
        let loaded = r#"{"configuration_hash":"a1b2","server":{}}"#;
        let h = from_status(loaded.as_bytes()).unwrap();
        assert!(h.cause.is_none() && h.detail.contains("a1b2"));
        // Not Kong, or hostile: no hint.
        for body in [
            r#"{"database":{"reachable":false}}"#,
            r#"{"server":{},"database":{"reachable":"no"}}"#,
            "[]",
            "not json",
            "",
        ] {
            assert_eq!(from_status(body.as_bytes()), None, "{body}");
        }
    }
}
