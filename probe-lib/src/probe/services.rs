//! Targets named by Service (`svc/<namespace>/<name>:<port>`, the `kube-dns` Service) turned
//! into addresses before every round, from the Service watch's latest map: a round uses the
//! ClusterIP the API has now, and a target without one is left out (not a failure of the pod).
//! Pure.

use super::target::{Destination, Target};
use crate::model::ServiceMap;

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
