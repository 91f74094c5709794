//! Command line and environment. Every flag has an environment variable; bad values are
//! reported in one line and exit code 2 (see `main.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, ColorChoice, Parser};
use podnet_probe::cni::Cni;
use podnet_probe::probe::target::Target;
use tokio_rustls::TlsAcceptor;

use crate::auth::Authorizer;
use crate::http::Exposure;
use crate::scoping::{Builtin, PolicyEngineArg, TargetSelector};
use crate::server::{Limits, Listener};
use crate::supervise::TestFault;

mod values;
pub use values::*;

/// Connections on the loopback `--status-listen` at most (it serves people on the node).
const STATUS_MAX_CONNECTIONS: usize = 16;

/// podnet-agent: proves, continuously, that every pod on this node is wired into the network.
#[derive(Debug, Parser)]
#[command(name = "podnet-agent", version, color = ColorChoice::Never, max_term_width = 100,
          after_help = "Also: `podnet-agent check [OPTIONS] [--json] [--timeout DURATION]` checks \
this node once with these flags and exits 0 (healthy), 1 (problems) or 2 (could not check); see \
`podnet-agent check --help`.")]
pub struct Args {
    /// Address to serve /metrics, /healthz and /readyz on (the DaemonSet passes the node's own
    /// IP; an IPv6 address may come without brackets). /status is served here only if ADDR
    /// is a loopback address, or with --secure-metrics (behind the same authorization as
    /// /metrics).
    #[arg(long, env = "PODNET_LISTEN", default_value = "0.0.0.0:9710", value_name = "ADDR",
          value_parser = listen_addr)]
    pub listen: SocketAddr,

    /// Loopback address serving /status (the node's pod inventory), /metrics, /healthz and
    /// /readyz over plain HTTP without authorization, or `off`. Must be a loopback address.
    #[arg(long, env = "PODNET_STATUS_LISTEN", default_value = "127.0.0.1:9711",
          value_name = "ADDR|off", value_parser = status_listen)]
    pub status_listen: StatusListen,

    /// A client must send its complete request head within this time, and an idle keep-alive
    /// connection is closed after it (slow or stalled clients cannot hold connections).
    #[arg(long, env = "PODNET_HTTP_HEADER_TIMEOUT", default_value = "5s",
          value_name = "DURATION", value_parser = http_timeout)]
    pub http_header_timeout: Duration,

    /// Time to answer one request, authorization included; a connection lives at most
    /// 6 times this.
    #[arg(long, env = "PODNET_HTTP_REQUEST_TIMEOUT", default_value = "10s",
          value_name = "DURATION", value_parser = http_timeout)]
    pub http_request_timeout: Duration,

    /// Open connections on --listen at most; further ones are closed at once, not queued.
    #[arg(long, env = "PODNET_HTTP_MAX_CONNECTIONS", default_value = "512", value_name = "N",
          value_parser = clap::value_parser!(u32).range(4..=4096))]
    pub http_max_connections: u32,

    /// Serve --listen over TLS only and require `Authorization: Bearer <token>` on /metrics
    /// and /status: the token is checked with a TokenReview and the request with a
    /// SubjectAccessReview (non-resource URL, verb get), as kube-rbac-proxy does. Needs the
    /// Kubernetes API (--kubeconfig or in-cluster).
    #[arg(long, env = "PODNET_SECURE_METRICS", action = ArgAction::SetTrue,
          value_parser = BoolishValueParser::new())]
    pub secure_metrics: bool,

    /// PEM certificate chain for --secure-metrics; without it (and --tls-key-file) a
    /// self-signed certificate is generated at start.
    #[arg(
        long,
        env = "PODNET_TLS_CERT_FILE",
        value_name = "PATH",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key for --tls-cert-file.
    #[arg(
        long,
        env = "PODNET_TLS_KEY_FILE",
        value_name = "PATH",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,

    /// This node's name (the downward API sets NODE_NAME); defaults to the hostname.
    #[arg(long, env = "NODE_NAME", value_name = "NAME", value_parser = non_empty)]
    pub node_name: Option<String>,

    /// Where the node's pods come from: the Kubernetes API (`kubernetes`), the node's own
    /// interfaces (`node`), or `auto`: the API when in a cluster or given --kubeconfig.
    #[arg(
        long,
        env = "PODNET_POD_SOURCE",
        default_value = "auto",
        value_name = "SOURCE"
    )]
    pub pod_source: PodSourceArg,

    /// Kubeconfig to reach the API with (one file); without it, the in-cluster service account.
    #[arg(long, env = "KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// The CNI plugin: names pods' host interfaces and chooses the wiring profile pods are
    /// judged by: `calico` (cali…), `aws-vpc-cni` (eni…), `ptp` (kindnet), `bridge` (flannel,
    /// kubenet) or `generic` (only what holds for every CNI).
    #[arg(long, env = "PODNET_CNI", default_value = "calico", value_name = "CNI",
          value_parser = cni)]
    pub cni: Cni,

    /// Check that every other node's pod block is routed toward that node: `calico` (IPAM
    /// BlockAffinities and Calico's node annotations), `pod-cidrs` (`Node.spec.podCIDRs`) or
    /// `off`. Needs the Kubernetes pod source.
    #[arg(
        long,
        env = "PODNET_REMOTE_BLOCKS",
        default_value = "off",
        value_name = "SOURCE"
    )]
    pub remote_blocks: RemoteBlocksArg,

    /// With `--cni calico`: felix's health endpoint on this node (`HealthHost:HealthPort`), or
    /// `off`. Read over the host's loopback (the agent runs in the host network).
    #[arg(long, env = "PODNET_CALICO_FELIX_HEALTH", default_value = "127.0.0.1:9099",
          value_name = "ADDR|off", value_parser = endpoint)]
    pub calico_felix_health: Endpoint,

    /// With `--cni calico`: felix's Prometheus endpoint (off by default in Calico:
    /// `PrometheusMetricsEnabled`), or `off`.
    #[arg(long, env = "PODNET_CALICO_FELIX_METRICS", default_value = "127.0.0.1:9091",
          value_name = "ADDR|off", value_parser = endpoint)]
    pub calico_felix_metrics: Endpoint,

    /// Time between readings of felix.
    #[arg(long, env = "PODNET_CALICO_FELIX_INTERVAL", default_value = "10s",
          value_name = "DURATION", value_parser = parse_duration)]
    pub calico_felix_interval: Duration,

    /// Name prefix of pods' host interfaces, if not the CNI's default (`cali`, `eni`).
    #[arg(long, env = "PODNET_INTERFACE_PREFIX", value_name = "PREFIX",
          value_parser = interface_prefix)]
    pub interface_prefix: Option<String>,

    /// How long a pod's new IP may go without its interface, and host wiring without a pod,
    /// before that is reported (the CNI wires pods after the API assigns their IP).
    #[arg(long, env = "PODNET_WIRING_GRACE", default_value = "30s", value_name = "DURATION",
          value_parser = parse_duration)]
    pub wiring_grace: Duration,

    /// Length of each watch request to the API; a watch silent for this plus half of it (at
    /// most 30 s more) counts as stalled and is replaced.
    #[arg(long, env = "PODNET_KUBE_WATCH_TIMEOUT", default_value = "60s", value_name = "DURATION",
          value_parser = kube_watch_timeout)]
    pub kube_watch_timeout: Duration,

    /// A Kubernetes watch unhealthy for this long is a node problem (`kube_watch_stalled`).
    #[arg(long, env = "PODNET_KUBE_UNHEALTHY_THRESHOLD", default_value = "60s",
          value_name = "DURATION", value_parser = parse_duration)]
    pub kube_unhealthy_threshold: Duration,

    /// Full re-read of links, routes and settings, the safety net behind kernel events
    /// (e.g. 60s, 5m).
    #[arg(long, env = "PODNET_RESYNC_INTERVAL", default_value = "60s", value_name = "DURATION",
          value_parser = resync_interval)]
    pub resync_interval: Duration,

    /// A probe target for every pod, besides its gateway and the node: `[NAME=]icmp:ADDRESS`,
    /// `[NAME=]tcp:ADDRESS:PORT` (IPv6 as `[ADDR]:PORT`), `[NAME=]dns:ADDRESS[:PORT]` or
    /// `[NAME=]http(s)://ADDRESS[:PORT]/PATH[;2xx][;insecure][;host=NAME]`, or with pods from the
    /// API `NAME=svc/NAMESPACE/SERVICE:PORT` (a TCP connect to the Service's ClusterIP, followed
    /// as it changes) or `NAME=http(s)://svc/NAMESPACE/SERVICE:PORT/PATH[;…]`. Repeatable; the environment
    /// variable takes a comma-separated list.
    #[arg(long = "probe", env = "PODNET_PROBES", value_name = "TARGET", value_delimiter = ',',
          value_parser = probe_target)]
    pub probes: Vec<Target>,

    /// A file of probe targets, one per line as for --probe; `#` starts a comment.
    #[arg(long, env = "PODNET_PROBE_FILE", value_name = "PATH")]
    pub probe_file: Option<PathBuf>,

    /// Each pod is probed once per interval (spread over it).
    #[arg(long, env = "PODNET_PROBE_INTERVAL", default_value = "10s", value_name = "DURATION",
          value_parser = probe_interval)]
    pub probe_interval: Duration,

    /// Time to wait for each probe's answer.
    #[arg(long, env = "PODNET_PROBE_TIMEOUT", default_value = "1s", value_name = "DURATION",
          value_parser = probe_timeout)]
    pub probe_timeout: Duration,

    /// Consecutive failures before a pod's target is reported (a single lost packet pages
    /// nobody).
    #[arg(long, env = "PODNET_PROBE_FAILURES", default_value = "2", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=10))]
    pub probe_failures: u32,

    /// Pods probed at the same time, at most.
    #[arg(long, env = "PODNET_PROBE_CONCURRENCY", default_value = "32", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub probe_concurrency: u32,

    /// Other nodes probed per round (k) by the cross-node probe, from one local pod (a
    /// different one each round) and from the host, rotating so every node is covered every
    /// ⌈n/k⌉ rounds; 0 turns it off. Needs `--remote-blocks` (its node list) and probes.
    #[arg(long, env = "PODNET_PEER_PROBES", default_value = "8", value_name = "K",
          value_parser = clap::value_parser!(u32).range(0..=256))]
    pub peer_probes: u32,

    /// Do not probe at all (route and wiring checks only). The environment variable takes
    /// 1/true/yes/on or 0/false/no/off.
    #[arg(long, env = "PODNET_NO_PROBES", action = ArgAction::SetTrue,
          value_parser = BoolishValueParser::new())]
    pub no_probes: bool,

    /// Built-in probes to run, comma-separated: `gateway` (each pod's gateway, from the pod),
    /// `node` (the node's own address, from each pod), `host-to-pod` (each pod, from the host),
    /// or `none`. Configured targets are not affected; routes and wiring are always checked.
    #[arg(
        long,
        env = "PODNET_BUILTIN_PROBES",
        value_delimiter = ',',
        value_name = "PROBES",
        default_value = "gateway,node,host-to-pod"
    )]
    pub builtin_probes: Vec<Builtin>,

    /// Namespaces whose pods are not probed (their routes and wiring still are),
    /// comma-separated. Pods opt out themselves with the annotation or label
    /// `podnet.io/probes: "false"`.
    #[arg(long, env = "PODNET_PROBE_EXCLUDE_NAMESPACES", value_delimiter = ',',
          value_name = "NAMESPACES", value_parser = crate::scoping::namespace_name)]
    pub probe_exclude_namespaces: Vec<String>,

    /// Probe a configured target only from the pods a label selector matches:
    /// `NAME=SELECTOR` in Kubernetes syntax (`dns=app=web,tier!=db`). Repeatable; the
    /// environment variable takes a `;`-separated list. Needs pods from the API.
    #[arg(long = "probe-selector", env = "PODNET_PROBE_SELECTORS", value_delimiter = ';',
          value_name = "NAME=SELECTOR", value_parser = crate::scoping::probe_selector)]
    pub probe_selectors: Vec<TargetSelector>,

    /// The network policy engine on the node, for diagnosing probe failures behind clean
    /// wiring as a possible policy: `auto` (Calico with --cni calico), `calico`, `other`,
    /// `none`.
    #[arg(
        long,
        env = "PODNET_POLICY_ENGINE",
        default_value = "auto",
        value_name = "ENGINE"
    )]
    pub policy_engine: PolicyEngineArg,

    /// The cluster's DNS service (the `kube-dns` Service's ClusterIP), `IP` or `IP:PORT`:
    /// every pod queries it for --dns-name over UDP (TCP when truncated), as target `dns`.
    #[arg(long, env = "PODNET_DNS_SERVER", value_name = "IP[:PORT]", value_parser = dns_server)]
    pub dns_server: Option<SocketAddr>,

    /// In Kubernetes mode without --dns-server: the Service whose ClusterIP (port 53) is the
    /// cluster's DNS server, `NAMESPACE/NAME`, followed through the API; `none` for no DNS
    /// probe.
    #[arg(long, env = "PODNET_DNS_SERVICE", default_value = "kube-system/kube-dns",
          value_name = "NAMESPACE/NAME|none", value_parser = dns_service)]
    pub dns_service: DnsService,

    /// The cluster's DNS domain: the DNS probe asks for `kubernetes.default.svc.<DOMAIN>`.
    #[arg(
        long,
        env = "PODNET_CLUSTER_DOMAIN",
        default_value = "cluster.local",
        value_name = "DOMAIN"
    )]
    pub cluster_domain: String,

    /// The name the DNS probe asks for instead of `kubernetes.default.svc.<cluster domain>`.
    #[arg(long, env = "PODNET_DNS_NAME", value_name = "NAME")]
    pub dns_name: Option<String>,

    /// Addresses the DNS answer must contain one of (comma-separated); by default any A
    /// (AAAA for an IPv6 server) record is a good answer.
    #[arg(
        long,
        env = "PODNET_DNS_EXPECT",
        value_name = "IP",
        value_delimiter = ','
    )]
    pub dns_expect: Vec<std::net::IpAddr>,

    /// PEM file of the CAs HTTPS probes trust instead of the web PKI's roots (targets marked
    /// `;insecure` verify nothing).
    #[arg(long, env = "PODNET_PROBE_CA", value_name = "PATH")]
    pub probe_ca: Option<PathBuf>,

    /// Pods with per-pod series (`podnet_pod_problem`, `podnet_pod_probe_failing`) at
    /// most; further pods with problems still count in the node-level gauges, and how many
    /// were left out is `podnet_pod_series_truncated`.
    #[arg(long, env = "PODNET_MAX_POD_SERIES", default_value = "2000", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_pod_series: u32,

    /// Do not watch pods' failing connects (the `SYN_SENT` sockets dumped in each pod's
    /// namespace every round). The environment variable takes 1/true/yes/on or 0/false/no/off.
    #[arg(long, env = "PODNET_NO_CONNECT_WATCH", action = ArgAction::SetTrue,
          value_parser = BoolishValueParser::new())]
    pub no_connect_watch: bool,

    /// Rounds in a row a destination's connects must go unanswered (SYN retransmitted)
    /// before it is reported.
    #[arg(long, env = "PODNET_CONNECT_ROUNDS", default_value = "2", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub connect_rounds: u32,

    /// The cluster's pod networks (Calico IP pools, `--cluster-cidr`): an unanswered address
    /// there that is not this node's pod's is looked up in the API (`vanished_pod_ip`,
    /// `unanswered_pod`). The default holds the common defaults (kubeadm/flannel, Calico).
    #[arg(
        long,
        env = "PODNET_CLUSTER_POD_CIDRS",
        value_delimiter = ',',
        value_name = "CIDR,…",
        default_value = "10.244.0.0/16,192.168.0.0/16,fd00::/8"
    )]
    pub cluster_pod_cidrs: Vec<ipnet::IpNet>,

    /// The cluster's Service ClusterIP ranges (`--service-cluster-ip-range`).
    #[arg(
        long,
        env = "PODNET_SERVICE_CIDRS",
        value_delimiter = ',',
        value_name = "CIDR,…",
        default_value = "10.96.0.0/12"
    )]
    pub service_cidrs: Vec<ipnet::IpNet>,

    /// Kong's Admin API port on a client pod's loopback: a pod with unanswered connects is
    /// asked `GET /status` there (Kong's `database.reachable`, DB-less `configuration_hash`),
    /// and a Kong answer explains why its upstreams are stale. 0: do not ask.
    #[arg(
        long,
        env = "PODNET_KONG_ADMIN_PORT",
        default_value = "8001",
        value_name = "PORT"
    )]
    pub kong_admin_port: u16,
    /// Kong's Admin API TLS port on the pod's loopback, asked before `--kong-admin-port` (no
    /// certificate check): Kong's Helm chart with the ingress controller listens only on
    /// `127.0.0.1:8444 http2 ssl`. 0: do not ask over TLS.
    #[arg(
        long,
        env = "PODNET_KONG_ADMIN_TLS_PORT",
        default_value = "8444",
        value_name = "PORT"
    )]
    pub kong_admin_tls_port: u16,
    /// Which pods are Kong proxies (label selector, `kubectl get -l` syntax; "" for every
    /// pod). Default: Kong's charts' label `app.kubernetes.io/name=kong`, or a container image
    /// `kong`/`kong-gateway` (any registry or tag). Node mode asks every pod (no labels there).
    #[arg(long, env = "PODNET_KONG_SELECTOR", value_name = "SELECTOR")]
    pub kong_selector: Option<podnet_probe::probe::selector::LabelSelector>,
    /// Do not write the `PodNetworkProblem` condition on this node's Node object (it is
    /// written whenever an API is configured). 1/true/yes/on or 0/false/no/off.
    #[arg(long, env = "PODNET_NO_CONDITIONS", action = ArgAction::SetTrue,
          value_parser = BoolishValueParser::new())]
    pub no_conditions: bool,

    /// Do not write Events on pods and the node (written with the Kubernetes pod source).
    /// 1/true/yes/on or 0/false/no/off.
    #[arg(long, env = "PODNET_NO_EVENTS", action = ArgAction::SetTrue,
          value_parser = BoolishValueParser::new())]
    pub no_events: bool,

    /// The node condition is rewritten when it changes and at least this often
    /// (`lastHeartbeatTime`).
    #[arg(long, env = "PODNET_CONDITION_HEARTBEAT", default_value = "5m",
          value_name = "DURATION", value_parser = condition_heartbeat)]
    pub condition_heartbeat: Duration,

    /// Events written at once at most (the token bucket's size; each create or series
    /// update takes a token).
    #[arg(long, env = "PODNET_EVENTS_BURST", default_value = "25", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub events_burst: u32,

    /// Tokens the Event bucket regains per minute; Events beyond are dropped and counted in
    /// `podnet_events_dropped_total`.
    #[arg(long, env = "PODNET_EVENTS_PER_MINUTE", default_value = "6", value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=600))]
    pub events_per_minute: u32,

    /// Test hook, not for production: `kill:<worker>` makes that worker panic, `hang:<worker>`
    /// makes it stop and ignore shutdown, one second after start (see docs/security.md).
    /// Only settable where the process starts; nothing on the network can trigger it.
    #[arg(long, env = "PODNET_TEST_FAULT", hide = true, value_name = "FAULT")]
    pub test_fault: Option<TestFault>,

    /// Log filter, in tracing's EnvFilter syntax (e.g. `info`, `podnet_probe=debug`).
    #[arg(long, env = "PODNET_LOG", default_value = "info", value_name = "FILTER",
          value_parser = log_filter)]
    pub log_level: String,

    /// Log format.
    #[arg(
        long,
        env = "PODNET_LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,

    /// Check, from control-plane nodes, that kube-apiserver can reach the Services it calls
    /// (aggregated APIs, admission and CRD conversion webhooks): `auto` (when the
    /// kube-apiserver mirror pod runs here or the Node has the control-plane role label), `on`
    /// or `off`. Needs the Kubernetes pod source and deploy/control-plane's RBAC.
    #[arg(
        long,
        env = "PODNET_CONTROL_PLANE_CHECKS",
        default_value = "off",
        value_name = "WHEN"
    )]
    pub control_plane_checks: ControlPlaneChecksArg,

    /// How often the control-plane check re-reads the objects that reference Services and
    /// the Services themselves (probes run every --probe-interval).
    #[arg(long, env = "PODNET_CONTROL_PLANE_RELIST", default_value = "30s",
          value_name = "DURATION", value_parser = probe_interval)]
    pub control_plane_relist: Duration,
}

impl Args {
    /// A probe must be answered within the interval it runs in, or rounds overlap and a pod's
    /// results arrive out of order.
    pub fn check_probes(&self) -> Result<(), String> {
        if !self.no_probes && self.probe_timeout > self.probe_interval {
            return Err(format!(
                "--probe-timeout ({}) must not exceed --probe-interval ({})",
                humantime(self.probe_timeout),
                humantime(self.probe_interval)
            ));
        }
        Ok(())
    }

    /// Flags that parse but do not fit together, in one line.
    pub fn check_http(&self) -> Result<(), String> {
        if self.secure_metrics && self.kubeconfig.is_none() && !podnet_probe::kube::in_cluster() {
            return Err(
                "--secure-metrics needs the Kubernetes API (--kubeconfig or in-cluster)".into(),
            );
        }
        if !self.secure_metrics && self.tls_cert_file.is_some() {
            return Err("--tls-cert-file is only used with --secure-metrics".into());
        }
        Ok(())
    }

    /// The HTTP listeners: `--listen` (TLS + authorization when `secure` is given) and the
    /// loopback `--status-listen`.
    pub fn listeners(&self, secure: Option<(Arc<Authorizer>, TlsAcceptor)>) -> Vec<Listener> {
        let limits = Limits {
            header_timeout: self.http_header_timeout,
            request_timeout: self.http_request_timeout,
            max_connections: self.http_max_connections as usize,
        };
        let (exposure, tls) = match secure {
            Some((auth, tls)) => (Exposure::Secure(auth), Some(tls)),
            None if self.listen.ip().is_loopback() => (Exposure::Loopback, None),
            None => (Exposure::Public, None),
        };
        let mut out = vec![Listener {
            addr: self.listen,
            exposure,
            limits,
            tls,
        }];
        if let StatusListen::On(addr) = self.status_listen {
            out.push(Listener {
                addr,
                exposure: Exposure::Loopback,
                limits: Limits {
                    max_connections: STATUS_MAX_CONNECTIONS,
                    ..limits
                },
                tls: None,
            });
        }
        out
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests;
