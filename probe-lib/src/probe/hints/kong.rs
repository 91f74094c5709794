//! Kong: its Admin API's `GET /status` on the pod's loopback, over TLS first, then plain HTTP.
//! TLS first because Kong's Helm chart with its ingress controller (the common install)
//! listens only on `127.0.0.1:8444 http2 ssl` (`admin.enabled: false`, `admin.http.enabled:
//! false`, `admin.tls.enabled: true`), and Kong's own default `admin_listen` has 8444 too; plain
//! 8001 is only Kong's non-chart default. In DB mode `database.reachable: false` means the
//! ingress controller cannot write new targets, so the proxy keeps its cached ones (the
//! runbook's third incident). DB-less mode has no `database`, and `configuration_hash` is
//! absent until a configuration is loaded and [`EMPTY_CONFIG_HASH`] while it is empty.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use serde_json::Value;

use super::{ClientHint, Hint, http_get, https_get};
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

/// Kong's `DECLARATIVE_EMPTY_CONFIG_HASH` (`kong/constants.lua`, `string.rep("0", 32)`): the
/// hash of an empty DB-less configuration.
pub const EMPTY_CONFIG_HASH: &str = "00000000000000000000000000000000";
/// Longest `configuration_hash` taken for Kong's (it is an MD5 in hex, 32 digits).
const MAX_HASH: usize = 64;

/// Kong's Admin API on the pod's loopback.
#[derive(Debug, Clone)]
pub struct Kong {
    /// The plain HTTP admin port (Kong's default: 8001; 0: not asked).
    pub admin_port: u16,
    /// The TLS admin port, asked first (Kong's and its chart's default: 8444; 0: not asked).
    pub tls_port: u16,
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

/// What Kong's `/status` says about where its targets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KongStatus {
    /// DB mode, `database.reachable: false`.
    DatabaseUnreachable,
    /// DB mode, `database.reachable: true`.
    DatabaseReachable,
    /// DB-less, no `configuration_hash` yet or [`EMPTY_CONFIG_HASH`].
    DblessUnconfigured,
    /// DB-less with a configuration loaded.
    DblessConfigured,
}

/// Parse Kong's `/status`; `None` when the answer is not Kong's shape (a `server` and a
/// `memory` object, and a well-formed `database` or none). Nothing of it is kept but the
/// verdict: the pod controls every byte.
pub fn parse_status(body: &[u8]) -> Option<KongStatus> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("server")?.as_object()?;
    v.get("memory")?.as_object()?;
    if let Some(db) = v.get("database") {
        return Some(match db.get("reachable")?.as_bool()? {
            false => KongStatus::DatabaseUnreachable,
            true => KongStatus::DatabaseReachable,
        });
    }
    // DB-less: Kong leaves the hash out (JSON null) until its first configuration is loaded.
    match v.get("configuration_hash").unwrap_or(&Value::Null) {
        Value::Null => Some(KongStatus::DblessUnconfigured),
        Value::String(h) if h.is_empty() || h == EMPTY_CONFIG_HASH => {
            Some(KongStatus::DblessUnconfigured)
        }
        Value::String(h) if h.len() <= MAX_HASH && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(KongStatus::DblessConfigured)
        }
        _ => None,
    }
}

impl KongStatus {
    /// The hint for this answer from `url` (ours, e.g. `https://127.0.0.1:8444/status`): a
    /// cause only when Kong's state explains stale targets.
    pub fn hint(self, url: &str) -> Hint {
        let (cause, said) = match self {
            KongStatus::DatabaseUnreachable => (
                Some("Kong cannot reach its database, so new upstream targets are not written"),
                "database.reachable false",
            ),
            KongStatus::DatabaseReachable => (None, "database.reachable true"),
            KongStatus::DblessUnconfigured => (
                Some(
                    "Kong has no configuration yet (DB-less; the ingress controller has not pushed one)",
                ),
                "DB-less, no configuration loaded",
            ),
            KongStatus::DblessConfigured => (None, "DB-less, configuration loaded"),
        };
        Hint {
            kind: "kong",
            cause: cause.map(str::to_owned),
            detail: format!("Kong {url}: {said}"),
        }
    }
}

impl ClientHint for Kong {
    fn applies(&self, meta: &ProbeMeta) -> bool {
        self.pods.matches(meta)
    }

    fn read(&self, deadline: Instant) -> Option<Hint> {
        let ask = |port: u16, tls: bool| {
            if port == 0 {
                return None;
            }
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let (scheme, get): (_, fn(_, _, _) -> _) = if tls {
                ("https", https_get)
            } else {
                ("http", http_get)
            };
            let status = parse_status(&get(addr, "/status", deadline)?)?;
            Some(status.hint(&format!("{scheme}://{addr}/status")))
        };
        ask(self.tls_port, true).or_else(|| ask(self.admin_port, false))
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
            tls_port: 8444,
            pods: KongPods::Charts,
        };
        assert!(kong.applies(&meta(&chart, &[])));
        assert!(!kong.applies(&ProbeMeta::default()));
    }

    #[test]
    fn kong_status_parse() {
        use KongStatus::*;
        let server = r#""memory":{"workers_lua_vms":[]},"server":{"connections_active":1}"#;
        let with = |rest: &str| format!("{{{rest}{server}}}");
        for (body, want) in [
            (
                with(r#""database":{"reachable":false},"#),
                DatabaseUnreachable,
            ),
            (with(r#""database":{"reachable":true},"#), DatabaseReachable),
            (with(""), DblessUnconfigured),
            (with(r#""configuration_hash":null,"#), DblessUnconfigured),
            (with(r#""configuration_hash":"","#), DblessUnconfigured),
            (
                with(&format!(r#""configuration_hash":"{EMPTY_CONFIG_HASH}","#)),
                DblessUnconfigured,
            ),
            (
                with(r#""configuration_hash":"5c3a0b7e2f9d41c88f0e6a1b2c3d4e5f","#),
                DblessConfigured,
            ),
        ] {
            assert_eq!(parse_status(body.as_bytes()), Some(want), "{body}");
        }
        // Not Kong, or hostile: no verdict.
        let long = "a".repeat(MAX_HASH + 1);
        for body in [
            r#"{"database":{"reachable":false}}"#.to_owned(),
            r#"{"server":{},"database":{"reachable":false}}"#.to_owned(),
            with(r#""database":{"reachable":"no"},"#),
            with(r#""database":null,"#),
            with(r#""configuration_hash":"0000 <script>","#),
            with(r#""configuration_hash":7,"#),
            with(&format!(r#""configuration_hash":"{long}","#)),
            r#"{"server":[],"memory":{}}"#.to_owned(),
            "[]".to_owned(),
            "not json".to_owned(),
            String::new(),
        ] {
            assert_eq!(parse_status(body.as_bytes()), None, "{body}");
        }
    }

    #[test]
    fn kong_status_decision_table() {
        use KongStatus::*;
        let url = "https://127.0.0.1:8444/status";
        let cause = |s: KongStatus| s.hint(url).cause;
        assert_eq!(
            cause(DatabaseUnreachable).as_deref(),
            Some("Kong cannot reach its database, so new upstream targets are not written")
        );
        assert_eq!(
            cause(DblessUnconfigured).as_deref(),
            Some(
                "Kong has no configuration yet (DB-less; the ingress controller has not pushed one)"
            )
        );
        assert_eq!(cause(DatabaseReachable), None);
        assert_eq!(cause(DblessConfigured), None);
        // DB-less never claims a database problem.
        for s in [DblessUnconfigured, DblessConfigured] {
            let h = s.hint(url);
            assert!(!format!("{h:?}").contains("database"), "{h:?}");
            assert!(h.detail.starts_with("Kong https://127.0.0.1:8444/status: "));
            assert_eq!(h.kind, "kong");
        }
    }
}
