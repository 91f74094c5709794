//! The real Prometheus and Alertmanager (Debian packages `prometheus`,
//! `prometheus-alertmanager`) as processes inside a simulated node's namespace, on its
//! loopback, evaluating the shipped rules, and a webhook receiver for Alertmanager's
//! notifications: the stack the alerting tests (`agent/tests/alerting*.rs`) share.
//!
//! The rules are `deploy/prometheus/podnet-rules.yaml` as shipped, with every `for:` set to
//! [`TEST_FOR`] ([`test_rules`]): the one change the tests make. Prometheus scrapes and
//! evaluates every second; Alertmanager notifies at once (`group_wait: 0s`). Every process is
//! stopped and the temporary directory removed on drop, also when the test fails.

mod process;
mod webhook;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::agent::HttpClient;
pub use process::{Daemon, TempDir, require};
pub use webhook::{Notification, Webhook};

/// The `for:` of every rule in the tests' copy of the rules.
pub const TEST_FOR: &str = "2s";
/// Prometheus's port on the node's loopback.
pub const PROMETHEUS_PORT: u16 = 9090;
/// Alertmanager's port on the node's loopback.
pub const ALERTMANAGER_PORT: u16 = 9093;
/// The webhook receiver's port on the node's loopback.
pub const WEBHOOK_PORT: u16 = 9095;
/// Generous guard for every wait; the real latencies are a few seconds.
pub const WAIT: Duration = Duration::from_secs(90);

/// The shipped rule file.
pub fn rules_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/podnet-rules.yaml")
}

/// The shipped rules with every `for:` set to [`TEST_FOR`].
pub fn test_rules() -> Result<String> {
    let shipped = std::fs::read_to_string(rules_file()).context("reading the shipped rules")?;
    let mut changed = 0;
    let mut out = String::new();
    for line in shipped.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        if line.trim_start().starts_with("for: ") {
            out.push_str(&format!("{indent}for: {TEST_FOR}\n"));
            changed += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let alerts = shipped.matches("- alert: ").count();
    if changed != alerts {
        bail!("shortened {changed} `for:` lines, but the rules have {alerts} alerts");
    }
    Ok(out)
}

/// One agent target, labelled as `deploy/prometheus/prometheus.yaml` and the ServiceMonitor
/// label it: `node`, and the agent pod's own namespace and name as
/// `agent_namespace`/`agent_pod` (never as `namespace`/`pod`).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Its port on the node's loopback.
    pub port: u16,
    /// The `node` label.
    pub node: &'a str,
    /// The `agent_pod` label.
    pub agent_pod: &'a str,
}

/// Prometheus's configuration: every second, the rules in `rules.yaml`, our Alertmanager,
/// one `podnet` job over `targets`.
pub fn prometheus_config(targets: &[Target]) -> String {
    let mut out = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files: [rules.yaml]\n\
         alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"127.0.0.1:{ALERTMANAGER_PORT}\"]\n\
         scrape_configs:\n  - job_name: podnet\n    honor_labels: true\n    static_configs:\n"
    );
    for t in targets {
        out.push_str(&format!(
            "      - targets: [\"127.0.0.1:{}\"]\n        labels: {{node: {}, agent_namespace: podnet, agent_pod: {}}}\n",
            t.port, t.node, t.agent_pod
        ));
    }
    out
}

/// Alertmanager's configuration: every alert to the webhook at once, one group per alert,
/// resolved notifications on.
pub fn alertmanager_config() -> String {
    format!(
        "route:\n  receiver: webhook\n  group_by: [\"...\"]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: webhook\n    webhook_configs:\n      - url: http://127.0.0.1:{WEBHOOK_PORT}/alerts\n        send_resolved: true\n"
    )
}

/// Prometheus, Alertmanager and the webhook receiver, running; in drop order.
#[derive(Debug)]
pub struct AlertStack {
    /// Alertmanager's webhook receiver.
    pub webhook: Webhook,
    prometheus: Daemon,
    alertmanager: Daemon,
    api: HttpClient,
    am_api: HttpClient,
    _dir: TempDir,
}

impl AlertStack {
    /// Start them inside `netns` with these configurations and the [`test_rules`].
    pub fn start(netns: &str, prometheus_yaml: &str, alertmanager_yaml: &str) -> Result<Self> {
        let prometheus_bin = require("prometheus", "prometheus");
        let alertmanager_bin = require("prometheus-alertmanager", "prometheus-alertmanager");
        let dir = TempDir::new()?;
        std::fs::write(dir.path("rules.yaml"), test_rules()?)?;
        std::fs::write(dir.path("prometheus.yaml"), prometheus_yaml)?;
        std::fs::write(dir.path("alertmanager.yaml"), alertmanager_yaml)?;
        let path = |n: &str| dir.path(n).display().to_string();
        let webhook = Webhook::start(netns, WEBHOOK_PORT)?;
        let alertmanager = Daemon::start(
            netns,
            "alertmanager",
            &alertmanager_bin,
            &[
                format!("--config.file={}", path("alertmanager.yaml")),
                format!("--storage.path={}", path("alertmanager-data")),
                format!("--web.listen-address=127.0.0.1:{ALERTMANAGER_PORT}"),
                "--cluster.listen-address=".into(),
            ],
            &dir,
        )?;
        let prometheus = Daemon::start(
            netns,
            "prometheus",
            &prometheus_bin,
            &[
                format!("--config.file={}", path("prometheus.yaml")),
                format!("--storage.tsdb.path={}", path("prometheus-data")),
                format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"),
            ],
            &dir,
        )?;
        Ok(AlertStack {
            webhook,
            prometheus,
            alertmanager,
            api: HttpClient::new(netns, PROMETHEUS_PORT)?,
            am_api: HttpClient::new(netns, ALERTMANAGER_PORT)?,
            _dir: dir,
        })
    }

    /// Fail if a process or the webhook receiver died.
    pub fn check(&mut self) -> Result<()> {
        self.prometheus.check()?;
        self.alertmanager.check()?;
        self.webhook.check()
    }

    /// GET a Prometheus API path and return its `data`.
    pub fn api(&self, path: &str) -> Result<Value> {
        let (code, body) = self.api.get(path)?;
        if code != 200 {
            bail!("GET {path}: {code} {body}");
        }
        let v: Value = serde_json::from_str(&body)?;
        Ok(v["data"].clone())
    }

    /// Alerts Prometheus holds as firing, with this name.
    pub fn firing(&self, alertname: &str) -> Result<Vec<Value>> {
        let data = self.api("/api/v1/alerts")?;
        Ok(data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing" && a["labels"]["alertname"] == alertname)
            .cloned()
            .collect())
    }

    /// Poll `f` until it returns `Some`; fail after [`WAIT`] or when a process died.
    pub fn wait<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&Self) -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + WAIT;
        let mut last_err = None;
        loop {
            self.check()?;
            match f(self) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last_err = Some(e),
            }
            if Instant::now() > deadline {
                bail!("timed out after {WAIT:?} waiting for {what} (last error: {last_err:?})");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until Prometheus scrapes a target (`up == 1`), has found Alertmanager, and
    /// Alertmanager is ready: only then does a fault make a notification.
    pub fn wait_ready(&mut self) -> Result<()> {
        self.wait("Prometheus to scrape the agent (up == 1)", |s| {
            let data = s.api("/api/v1/query?query=up")?;
            Ok(data["result"]
                .as_array()
                .is_some_and(|r| r.iter().any(|s| s["value"][1] == "1"))
                .then_some(()))
        })?;
        self.wait("Prometheus to discover Alertmanager", |s| {
            let data = s.api("/api/v1/alertmanagers")?;
            Ok(data["activeAlertmanagers"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
                .then_some(()))
        })?;
        self.wait("Alertmanager to be ready", |s| {
            Ok(matches!(s.am_api.get("/-/ready"), Ok((200, _))).then_some(()))
        })
    }

    /// The first notification received after `since` that holds an alert named `alertname`
    /// with `status` and these labels: when it arrived, and the alert.
    pub fn wait_notification(
        &mut self,
        what: &str,
        since: Instant,
        alertname: &str,
        status: &str,
        labels: &[(&str, &str)],
    ) -> Result<(Instant, Value)> {
        self.wait(what, |s| {
            Ok(s.webhook.received().into_iter().find_map(|n| {
                let at = n.at;
                (at >= since)
                    .then(|| {
                        n.alerts()
                            .find(|a| {
                                a["status"] == status
                                    && a["labels"]["alertname"] == alertname
                                    && labels.iter().all(|(k, v)| a["labels"][*k] == *v)
                            })
                            .cloned()
                    })
                    .flatten()
                    .map(|a| (at, a))
            }))
        })
    }

    /// Prometheus's alerts, every notification and both logs' tails, for a failure message.
    pub fn diagnostics(&self) -> String {
        let alerts = self
            .api("/api/v1/alerts")
            .map(|v| v.to_string())
            .unwrap_or_else(|e| format!("{e:#}"));
        let notifications: Vec<String> = self
            .webhook
            .received()
            .iter()
            .map(|n| n.body.to_string())
            .collect();
        format!(
            "Prometheus alerts: {alerts}\nnotifications: {notifications:#?}\n{}\n{}",
            self.prometheus.log_tail(),
            self.alertmanager.log_tail(),
        )
    }
}

/// A duration as "1.5 s", for the tests' latency lines.
pub fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
