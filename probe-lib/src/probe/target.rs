//! What pods are probed against: the CNI's gateway, the node, and configured targets.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use super::selector::{LabelSelector, SelectorError};
use crate::model::ServiceRef;
pub use crate::model::{Direction, Protocol};

/// Where a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// The pod's default gateway as its CNI sets it (Calico: 169.254.1.1 and
    /// fe80::ecee:eeff:feee:eeee, i.e. the host side of the pod's veth).
    Gateway,
    /// The node's own address of the pod's family.
    Node,
    /// A fixed address; with a port for TCP.
    Address(SocketAddr),
    /// A Service's ClusterIP and port, named in [`Target::service`] and resolved through the
    /// API before every round; not probed while unresolved.
    Service,
}

/// One probe target: a name (the `target` label), a protocol and a destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Label value; bounded by configuration, never derived from pods.
    pub name: String,
    /// ICMP or TCP.
    pub protocol: Protocol,
    /// Where to.
    pub destination: Destination,
    /// For HTTP(S): what to ask and expect.
    pub http: Option<std::sync::Arc<super::http::HttpSpec>>,
    /// For [`Destination::Service`]: the Service port, `<namespace>/<name>:<port>`.
    pub service: Option<std::sync::Arc<ServiceRef>>,
}

/// Label value of the host → pod probe.
pub const HOST_TO_POD_TARGET: &str = "pod";
/// Label value of the gateway probe.
pub const GATEWAY_TARGET: &str = "gateway";
/// Label value of the node probe.
pub const NODE_TARGET: &str = "node";

impl Target {
    /// Probed by default from every pod: its gateway and the node, over ICMP.
    pub fn defaults() -> [Target; 2] {
        [
            Target {
                name: GATEWAY_TARGET.into(),
                protocol: Protocol::Icmp,
                destination: Destination::Gateway,
                http: None,
                service: None,
            },
            Target {
                name: NODE_TARGET.into(),
                protocol: Protocol::Icmp,
                destination: Destination::Node,
                http: None,
                service: None,
            },
        ]
    }
}

/// The CNI's gateway addresses inside a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gateways {
    /// IPv4 next hop (Calico and AWS VPC CNI: 169.254.1.1).
    pub ipv4: Ipv4Addr,
    /// IPv6 next hop, link-local on the pod's interface.
    pub ipv6: Ipv6Addr,
}

impl Gateways {
    /// These gateways with the per-pod ones (one per family) put in their place.
    pub fn with(&self, pod: &[IpAddr]) -> Gateways {
        let mut out = *self;
        for ip in pod {
            match ip {
                IpAddr::V4(v4) => out.ipv4 = *v4,
                IpAddr::V6(v6) => out.ipv6 = *v6,
            }
        }
        out
    }
}

impl Default for Gateways {
    /// Calico's: 169.254.1.1 and the link-local of a veth with MAC ee:ee:ee:ee:ee:ee.
    fn default() -> Self {
        Gateways {
            ipv4: Ipv4Addr::new(169, 254, 1, 1),
            ipv6: Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee),
        }
    }
}

/// A target specification that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid probe '{spec}': {why} (expected [NAME=]icmp:ADDRESS, [NAME=]tcp:ADDRESS:PORT, [NAME=]dns:ADDRESS[:PORT], [NAME=]http(s)://ADDRESS[:PORT]/PATH[;2xx][;insecure][;host=NAME] or NAME=svc/NAMESPACE/SERVICE:PORT)"
)]
pub struct TargetSpecError {
    spec: String,
    why: &'static str,
}

impl FromStr for Target {
    type Err = TargetSpecError;

    /// `icmp:198.51.100.1`, `tcp:198.51.100.1:443`, `tcp:[2001:db8::1]:443`,
    /// `dns=tcp:10.96.0.10:53`. Without a name the specification itself is the name.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let err = |why| TargetSpecError {
            spec: spec.to_owned(),
            why,
        };
        let spec_trim = spec.trim();
        let (name, body) = match spec_trim.split_once('=') {
            Some((n, b)) => (n.trim(), b.trim()),
            None => (spec_trim, spec_trim),
        };
        let names_service = body.starts_with("svc/") || body.contains("://svc/");
        if names_service && name == spec_trim {
            return Err(err("a Service target needs a name (NAME=svc/...)"));
        }
        if name.is_empty() || name.len() > 64 {
            return Err(err("the name must be 1 to 64 characters"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:[]".contains(c))
        {
            return Err(err("the name may use letters, digits and - _ . : [ ]"));
        }
        if [GATEWAY_TARGET, NODE_TARGET, HOST_TO_POD_TARGET].contains(&name) {
            return Err(err("gateway, node and pod are built-in target names"));
        }
        if let Some(port) = body.strip_prefix("svc/") {
            return super::services::service_target(name, port).map_err(err);
        }
        let (proto, addr) = body.split_once(':').ok_or_else(|| err("no protocol"))?;
        let mut http = None;
        let (protocol, destination) = match proto {
            "http" | "https" if addr.starts_with("//svc/") => {
                let (port, spec) =
                    super::services::http_service(proto == "https", addr).map_err(err)?;
                return Ok(Target {
                    name: name.to_owned(),
                    protocol: Protocol::Http,
                    destination: Destination::Service,
                    http: Some(std::sync::Arc::new(spec)),
                    service: Some(std::sync::Arc::new(port)),
                });
            }
            "http" | "https" => {
                let (sa, spec) = super::http::parse(proto == "https", addr).map_err(err)?;
                http = Some(std::sync::Arc::new(spec));
                (Protocol::Http, Destination::Address(sa))
            }
            "icmp" => {
                let ip: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
                (Protocol::Icmp, Destination::Address(SocketAddr::new(ip, 0)))
            }
            "tcp" => {
                let sa: SocketAddr = addr
                    .parse()
                    .map_err(|_| err("not IP:PORT ([IPv6]:PORT for IPv6)"))?;
                if sa.port() == 0 {
                    return Err(err("port 0"));
                }
                (Protocol::Tcp, Destination::Address(sa))
            }
            "dns" => {
                // A bare address means port 53.
                let sa = match addr.parse::<IpAddr>() {
                    Ok(ip) => SocketAddr::new(ip, 53),
                    Err(_) => addr
                        .parse::<SocketAddr>()
                        .map_err(|_| err("not IP or IP:PORT ([IPv6]:PORT for IPv6)"))?,
                };
                if sa.port() == 0 {
                    return Err(err("port 0"));
                }
                (Protocol::Dns, Destination::Address(sa))
            }
            _ => return Err(err("the protocol must be icmp, tcp, dns, http or https")),
        };
        if let Destination::Address(sa) = destination
            && (sa.ip().is_unspecified() || sa.ip().is_multicast())
        {
            return Err(err("not a unicast address"));
        }
        Ok(Target {
            name: name.to_owned(),
            protocol,
            destination,
            http,
            service: None,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.destination {
            Destination::Gateway | Destination::Node => {
                write!(f, "{}={}:{}", self.name, self.protocol.as_str(), self.name)
            }
            Destination::Service => match (&self.service, &self.http) {
                (Some(s), Some(h)) => {
                    let scheme = if h.tls { "https" } else { "http" };
                    write!(f, "{}={scheme}://svc/{s}{}", self.name, h.path)
                }
                (Some(s), None) => write!(f, "{}=svc/{s}", self.name),
                (None, _) => write!(f, "{}=svc/?", self.name),
            },
            Destination::Address(sa) if self.protocol == Protocol::Icmp => {
                write!(f, "{}=icmp:{}", self.name, sa.ip())
            }
            Destination::Address(sa) => match &self.http {
                Some(h) => {
                    let scheme = if h.tls { "https" } else { "http" };
                    write!(f, "{}={scheme}://{sa}{}", self.name, h.path)
                }
                None => write!(f, "{}={}:{sa}", self.name, self.protocol.as_str()),
            },
        }
    }
}

/// What is wrong with a probe file line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeLineError {
    /// The target.
    #[error(transparent)]
    Target(#[from] TargetSpecError),
    /// The `selector=` part.
    #[error(transparent)]
    Selector(#[from] SelectorError),
}

/// A probe file line that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {source}")]
pub struct ProbeFileError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    #[source]
    pub source: ProbeLineError,
}

/// Two targets with the same name (the `target` label must identify one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("probe name '{0}' is used twice")]
pub struct DuplicateTarget(pub String);

/// One line of a probe file: `TARGET [selector=SELECTOR]`.
fn parse_line(l: &str) -> Result<(Target, Option<LabelSelector>), ProbeLineError> {
    // ` selector=` after the target (a target named `selector` starts the line instead).
    let at = l.char_indices().find(|(i, c)| {
        c.is_whitespace() && l[i + c.len_utf8()..].trim_start().starts_with("selector=")
    });
    let (spec, selector) = match at {
        Some((i, _)) => {
            let rest = l[i..].trim_start();
            let text = &rest["selector=".len()..];
            (&l[..i], Some(text.parse::<LabelSelector>()?))
        }
        None => (l, None),
    };
    Ok((spec.parse()?, selector))
}

/// Parse a probe file: one target per line, optionally limited to the pods a label selector
/// matches (`web=tcp:198.51.100.1:443 selector=app=web,tier!=db`); `#` starts a comment,
/// blank lines are ignored. Errors name the line.
pub fn parse_probe_file(
    text: &str,
) -> Result<Vec<(Target, Option<LabelSelector>)>, ProbeFileError> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split('#').next().unwrap_or("").trim()))
        .filter(|(_, l)| !l.is_empty())
        .map(|(line, l)| parse_line(l).map_err(|source| ProbeFileError { line, source }))
        .collect()
}

/// Reject two targets with the same name.
pub fn check_unique(targets: &[Target]) -> Result<(), DuplicateTarget> {
    let mut seen = std::collections::HashSet::new();
    for t in targets {
        if !seen.insert(t.name.as_str()) {
            return Err(DuplicateTarget(t.name.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let t: Target = "icmp:198.51.100.1".parse().unwrap();
        assert_eq!(t.name, "icmp:198.51.100.1");
        assert_eq!(t.protocol, Protocol::Icmp);
        assert_eq!(
            t.destination,
            Destination::Address("198.51.100.1:0".parse().unwrap())
        );
        let t: Target = "web=tcp:198.51.100.1:443".parse().unwrap();
        assert_eq!(t.name, "web");
        assert_eq!(
            t.destination,
            Destination::Address("198.51.100.1:443".parse().unwrap())
        );
        let t: Target = "tcp:[2001:db8::1]:443".parse().unwrap();
        assert_eq!(
            t.destination,
            Destination::Address("[2001:db8::1]:443".parse().unwrap())
        );
        let t: Target = " v6 = icmp:2001:db8::1 ".parse().unwrap();
        assert_eq!(t.name, "v6");
        assert_eq!(t.to_string(), "v6=icmp:2001:db8::1");
        let t: Target = "dns=dns:10.96.0.10".parse().unwrap();
        assert_eq!((t.protocol, t.name.as_str()), (Protocol::Dns, "dns"));
        assert_eq!(
            t.destination,
            Destination::Address("10.96.0.10:53".parse().unwrap())
        );
        assert_eq!(t.to_string(), "dns=dns:10.96.0.10:53");
        let t: Target = "api=https://198.51.100.1:8443/healthz;insecure"
            .parse()
            .unwrap();
        assert_eq!(t.protocol, Protocol::Http);
        assert!(t.http.as_ref().is_some_and(|h| h.tls && h.insecure));
        assert_eq!(t.to_string(), "api=https://198.51.100.1:8443/healthz");
        let t: Target = "dns:[fd00::a]:5353".parse().unwrap();
        assert_eq!(
            t.destination,
            Destination::Address("[fd00::a]:5353".parse().unwrap())
        );
    }

    #[test]
    fn rejects_bad_specs() {
        for bad in [
            "",
            "icmp",
            "udp:1.2.3.4:53",
            "dns:1.2.3.4:0",
            "dns:resolver",
            "dns:0.0.0.0",
            "icmp:not-an-ip",
            "tcp:1.2.3.4",
            "tcp:1.2.3.4:0",
            "tcp:2001:db8::1:443",
            "icmp:0.0.0.0",
            "icmp:224.0.0.1",
            "gateway=icmp:1.2.3.4",
            "a b=icmp:1.2.3.4",
            "=icmp:1.2.3.4",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?} accepted");
        }
        let e = "udp:1.2.3.4:53".parse::<Target>().unwrap_err().to_string();
        assert!(
            e.contains("udp:1.2.3.4:53") && e.contains("icmp, tcp, dns, http or https"),
            "{e}"
        );
    }

    #[test]
    fn per_pod_gateways_replace_the_fixed_ones_per_family() {
        let fixed = Gateways::default();
        assert_eq!(fixed.with(&[]), fixed);
        let ptp = fixed.with(&["10.244.0.1".parse().unwrap()]);
        assert_eq!(ptp.ipv4, Ipv4Addr::new(10, 244, 0, 1));
        assert_eq!(ptp.ipv6, fixed.ipv6);
        let v6 = fixed.with(&["fd00::1".parse().unwrap()]);
        assert_eq!(
            (v6.ipv4, v6.ipv6.to_string()),
            (fixed.ipv4, "fd00::1".into())
        );
    }

    #[test]
    fn probe_file_selectors() {
        let t = parse_probe_file(
            "web=tcp:198.51.100.1:443 selector=app=web,tier!=db\n\
             selector=icmp:198.51.100.2\n\
             v6 = icmp:2001:db8::1\tselector= env in (a, b) # comment\n",
        )
        .unwrap();
        assert_eq!(t[0].0.name, "web");
        assert_eq!(
            t[0].1.as_ref().map(ToString::to_string).as_deref(),
            Some("app=web,tier!=db")
        );
        assert_eq!((t[1].0.name.as_str(), t[1].1.is_none()), ("selector", true));
        assert_eq!(t[2].0.name, "v6");
        assert_eq!(t[2].1.as_ref().unwrap().to_string(), "env in (a, b)");
        let e = parse_probe_file("icmp:1.2.3.4\nweb=icmp:1.2.3.4 selector=app in (x\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("line 2: invalid label selector 'app in (x'"),
            "{e}"
        );
    }

    #[test]
    fn probe_file_and_uniqueness() {
        let t =
            parse_probe_file("# targets\nicmp:198.51.100.1\n\nweb=tcp:198.51.100.1:443 # https\n")
                .unwrap();
        assert_eq!(t.len(), 2);
        let e = parse_probe_file("icmp:1.2.3.4\nbogus\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(
            e.to_string().starts_with("line 2: invalid probe 'bogus'"),
            "{e}"
        );
        let t: Vec<Target> = t.into_iter().map(|(t, _)| t).collect();
        assert!(check_unique(&t).is_ok());
        let dup = [t[0].clone(), t[0].clone()];
        assert_eq!(
            check_unique(&dup),
            Err(DuplicateTarget("icmp:198.51.100.1".into()))
        );
    }
}
