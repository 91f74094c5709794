//! Services probed by name (`--probe NAME=svc/<namespace>/<name>:<port>`, and the cluster DNS
//! server found as the `kube-dns` Service): what the Service watch last read of each, and how a
//! named port resolves to the address pods probe. Pure.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::ServiceRef;
use super::labels::ServiceUnresolved;

/// Most Services followed by name: each is one watch request open against the API.
pub const MAX_NAMED_SERVICES: usize = 32;
/// Most ports kept of one Service.
pub const MAX_SERVICE_PORTS: usize = 64;

/// A Service's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ServiceKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl ServiceRef {
    /// The Service this port belongs to.
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
    }
}

/// Whether `s` is a DNS-1123 label (what Kubernetes accepts as a namespace or Service name).
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Parse `<namespace>/<name>` (a Service) — the `--dns-service` syntax.
pub fn parse_service_key(s: &str) -> Result<ServiceKey, &'static str> {
    let (namespace, name) = s.split_once('/').ok_or("expected <namespace>/<name>")?;
    if !is_dns_label(namespace) || !is_dns_label(name) {
        return Err("namespace and name must be DNS labels (a-z, 0-9, '-', at most 63)");
    }
    Ok(ServiceKey {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// Parse `<namespace>/<name>:<port>` (a Service port, by number).
pub fn parse_service_port(s: &str) -> Result<ServiceRef, &'static str> {
    let (key, port) = s
        .rsplit_once(':')
        .ok_or("expected <namespace>/<name>:<port>")?;
    let key = parse_service_key(key)?;
    let port: u16 = port.parse().map_err(|_| "the port must be 1 to 65535")?;
    if port == 0 {
        return Err("the port must be 1 to 65535");
    }
    Ok(ServiceRef {
        namespace: key.namespace,
        name: key.name,
        port,
    })
}

/// One Service as last read from the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ServiceState {
    /// Not read yet (the first list has not answered).
    Pending,
    /// The API has no such Service.
    Absent,
    /// It exists: its ClusterIPs (empty when headless or `ExternalName`) and port numbers.
    Present {
        /// `spec.clusterIPs` (or `spec.clusterIP`), primary family first.
        cluster_ips: Vec<IpAddr>,
        /// `spec.ports[].port`, at most [`MAX_SERVICE_PORTS`].
        ports: Vec<u16>,
    },
}

/// Every followed Service, as last read; published by the Service watch on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceMap {
    /// By namespace and name; a followed Service not in the map is pending.
    pub services: BTreeMap<ServiceKey, ServiceState>,
}

impl ServiceMap {
    /// The address pods probe for `port`: the Service's primary ClusterIP and that port, or
    /// why there is none.
    pub fn resolve(&self, port: &ServiceRef) -> Result<SocketAddr, ServiceUnresolved> {
        match self.services.get(&port.key()) {
            None | Some(ServiceState::Pending) => Err(ServiceUnresolved::Pending),
            Some(ServiceState::Absent) => Err(ServiceUnresolved::Absent),
            Some(ServiceState::Present { cluster_ips, ports }) => {
                let ip = cluster_ips.first().ok_or(ServiceUnresolved::NoClusterIp)?;
                if !ports.contains(&port.port) {
                    return Err(ServiceUnresolved::NoPort);
                }
                Ok(SocketAddr::new(*ip, port.port))
            }
        }
    }
}

/// One target resolved through a Service, for `/status` and the metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceTargetStatus {
    /// The target's name (the `target` label).
    pub target: String,
    /// The Service port it names, `<namespace>/<name>:<port>`.
    pub service: String,
    /// Where pods probe it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
    /// Why it is not probed (no pod is judged on it meanwhile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<ServiceUnresolved>,
}

/// The targets named by Service and the Service map they resolve through.
#[derive(Debug, Clone)]
pub struct ServiceTargets {
    /// Target name → Service port.
    pub targets: Vec<(String, ServiceRef)>,
    /// The Service watch's latest map.
    pub map: tokio::sync::watch::Receiver<std::sync::Arc<ServiceMap>>,
}

impl ServiceTargets {
    /// Every target's resolution against the latest map.
    pub fn status(&self) -> Vec<ServiceTargetStatus> {
        let map = std::sync::Arc::clone(&self.map.borrow());
        self.targets
            .iter()
            .map(|(target, port)| {
                let r = map.resolve(port);
                ServiceTargetStatus {
                    target: target.clone(),
                    service: port.to_string(),
                    address: r.ok(),
                    unresolved: r.err(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(s: &str) -> ServiceRef {
        parse_service_port(s).unwrap()
    }

    #[test]
    fn parses_service_ports() {
        let p = port("kube-system/kube-dns:53");
        assert_eq!(
            (p.namespace.as_str(), p.name.as_str(), p.port),
            ("kube-system", "kube-dns", 53)
        );
        assert_eq!(p.to_string(), "kube-system/kube-dns:53");
        for bad in [
            "",
            "kube-dns:53",
            "a/b",
            "a/b:0",
            "a/b:65536",
            "a/b:x",
            "A/b:1",
            "a/-b:1",
            "a/b/c:1",
            "/b:1",
            "a/:1",
        ] {
            assert!(parse_service_port(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_service_key(&format!("a/{}", "x".repeat(64))).is_err());
    }

    #[test]
    fn resolution_names_why_not() {
        let p = port("shop/web:80");
        let mut m = ServiceMap::default();
        assert_eq!(m.resolve(&p), Err(ServiceUnresolved::Pending));
        m.services.insert(p.key(), ServiceState::Absent);
        assert_eq!(m.resolve(&p), Err(ServiceUnresolved::Absent));
        let present = |ips: &[&str], ports: &[u16]| ServiceState::Present {
            cluster_ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            ports: ports.to_vec(),
        };
        m.services.insert(p.key(), present(&[], &[80]));
        assert_eq!(m.resolve(&p), Err(ServiceUnresolved::NoClusterIp));
        m.services.insert(p.key(), present(&["10.96.0.20"], &[443]));
        assert_eq!(m.resolve(&p), Err(ServiceUnresolved::NoPort));
        m.services
            .insert(p.key(), present(&["fd00:96::20", "10.96.0.20"], &[443, 80]));
        assert_eq!(m.resolve(&p), Ok("[fd00:96::20]:80".parse().unwrap()));
    }
}
