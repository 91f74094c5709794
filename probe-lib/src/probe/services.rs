//! Targets named by Service (`svc/<namespace>/<name>:<port>`, the `kube-dns` Service) turned
//! into addresses before every round, from the Service watch's latest map: a round uses the
//! ClusterIP the API has now, and a target without one is left out (not a failure of the pod).
//! Also the parsing of those targets (`svc/…`, `http(s)://svc/…`).
//! Pure.

use super::target::{Destination, Protocol, Target};
use crate::model::{ServiceMap, ServiceRef, parse_service_port};

/// `http(s)://svc/<namespace>/<name>:<port>[/PATH][;…]`: the options as for an address, the
/// `Host` header (and SNI) the Service's name, `<name>.<namespace>.svc`, unless `;host=`.
pub(super) fn http_service(
    tls: bool,
    addr: &str,
) -> Result<(ServiceRef, super::http::HttpSpec), &'static str> {
    let rest = &addr["//svc/".len()..];
    let (namespace, after) = rest
        .split_once('/')
        .ok_or("expected svc/<namespace>/<name>:<port>")?;
    let end = after.find(['/', ';']).unwrap_or(after.len());
    let port = parse_service_port(&format!("{namespace}/{}", &after[..end]))?;
    // The rest parses as for an address; the placeholder is replaced before every round.
    let (_, mut spec) =
        super::http::parse(tls, &format!("//192.0.2.0:{}{}", port.port, &after[end..]))?;
    if spec.host == "192.0.2.0" {
        spec.host = format!("{}.{}.svc", port.name, port.namespace);
    }
    Ok((port, spec))
}

/// `NAME=svc/<namespace>/<name>:<port>`: a TCP connect to the Service's ClusterIP and port.
/// The name is required (checked by the caller): the specification would be a poor `target`
/// label.
pub(super) fn service_target(name: &str, port: &str) -> Result<Target, &'static str> {
    let port = parse_service_port(port)?;
    Ok(Target {
        name: name.to_owned(),
        protocol: Protocol::Tcp,
        destination: Destination::Service,
        http: None,
        service: Some(std::sync::Arc::new(port)),
    })
}

/// `targets` as this round probes them: Service targets with their current ClusterIP and port,
/// those that do not resolve (or without a map: no Service watch) left out; others as they are.
pub fn resolve_targets<'a>(
    targets: impl IntoIterator<Item = &'a Target>,
    map: Option<&ServiceMap>,
) -> Vec<Target> {
    targets
        .into_iter()
        .filter_map(|t| match (&t.destination, &t.service) {
            (Destination::Service, Some(port)) => {
                let sa = map?.resolve(port).ok()?;
                Some(Target {
                    destination: Destination::Address(sa),
                    ..t.clone()
                })
            }
            (Destination::Service, None) => None,
            _ => Some(t.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServiceState;

    #[test]
    fn service_targets() {
        let t: Target = "web=svc/shop/web:8080".parse().unwrap();
        assert_eq!(
            (t.protocol, t.destination, t.name.as_str()),
            (Protocol::Tcp, Destination::Service, "web")
        );
        assert_eq!(t.service.as_ref().unwrap().to_string(), "shop/web:8080");
        assert_eq!(t.to_string(), "web=svc/shop/web:8080");
        for bad in [
            "svc/shop/web:8080",
            "web=svc/shop/web",
            "web=svc/shop/web:0",
            "web=svc/Shop/web:80",
            "web=svc/web:80",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?} accepted");
        }
        let t: Target = "api=https://svc/shop/api:8443/healthz;insecure"
            .parse()
            .unwrap();
        assert_eq!(
            (t.protocol, t.destination),
            (Protocol::Http, Destination::Service)
        );
        let h = t.http.as_ref().unwrap();
        assert!(h.tls && h.insecure);
        assert_eq!(
            (h.host.as_str(), h.path.as_str()),
            ("api.shop.svc", "/healthz")
        );
        assert_eq!(t.service.as_ref().unwrap().to_string(), "shop/api:8443");
        assert_eq!(t.to_string(), "api=https://svc/shop/api:8443/healthz");
        let t: Target = "w=http://svc/shop/web:80;5xx;host=web.example"
            .parse()
            .unwrap();
        let h = t.http.as_ref().unwrap();
        assert_eq!(
            (h.host.as_str(), h.path.as_str(), h.expect_class),
            ("web.example", "/", 5)
        );
        for bad in [
            "http://svc/shop/web:80/",
            "w=http://svc/shop/web/",
            "w=http://svc/shop",
            "w=https://svc/shop/web:80/;bogus",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?} accepted");
        }
        let e = "web=svc/web:80".parse::<Target>().unwrap_err().to_string();
        assert!(
            e.contains("<namespace>/<name>") && e.contains("svc/NAMESPACE"),
            "{e}"
        );
    }

    #[test]
    fn service_targets_follow_the_map() {
        let targets: Vec<Target> = ["web=svc/shop/web:80", "ext=tcp:198.51.100.1:443"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let addresses = |map: Option<&ServiceMap>| -> Vec<String> {
            resolve_targets(&targets, map)
                .iter()
                .map(|t| match t.destination {
                    Destination::Address(sa) => format!("{}={sa}", t.name),
                    _ => panic!("unresolved {t}"),
                })
                .collect()
        };
        // No watch, or not read yet: only the fixed target.
        assert_eq!(addresses(None), ["ext=198.51.100.1:443"]);
        let mut map = ServiceMap::default();
        assert_eq!(addresses(Some(&map)), ["ext=198.51.100.1:443"]);
        let key = targets[0].service.as_ref().unwrap().key();
        let at = |ip: &str| ServiceState::Present {
            cluster_ips: vec![ip.parse().unwrap()],
            ports: vec![80],
        };
        map.services.insert(key.clone(), at("10.96.0.20"));
        assert_eq!(
            addresses(Some(&map)),
            ["web=10.96.0.20:80", "ext=198.51.100.1:443"]
        );
        // The ClusterIP changed: the next round probes the new one only.
        map.services.insert(key.clone(), at("10.96.0.21"));
        assert_eq!(
            addresses(Some(&map)),
            ["web=10.96.0.21:80", "ext=198.51.100.1:443"]
        );
        map.services.insert(key, ServiceState::Absent);
        assert_eq!(addresses(Some(&map)), ["ext=198.51.100.1:443"]);
    }
}
