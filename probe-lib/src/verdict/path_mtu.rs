//! The path-MTU verdict: a pod whose don't-fragment echo, as large as its eth0 MTU, goes
//! unanswered by its gateway while its small echoes are answered has a path narrower than its
//! MTU — small packets (DNS, handshakes, pings) pass, full-size ones (TLS certificates, bulk
//! transfers) vanish. Pure.

use std::net::IpAddr;

use super::probes::TargetVerdict;
use super::{PodProblem, PodReason};
use crate::probe::report::PathMtuState;
use crate::probe::target::{Direction, GATEWAY_TARGET};

/// `path_mtu_mismatch` for every family whose path-MTU probe failed `threshold` times in a
/// row while the same family's small gateway probe is answered (if that fails too, the
/// gateway is unreachable, which the gateway probe reports; a size is not the problem).
pub(super) fn path_mtu_problems(
    ips: &[IpAddr],
    states: &[PathMtuState],
    probes: &[TargetVerdict],
    threshold: u32,
) -> Vec<PodProblem> {
    states
        .iter()
        .filter(|s| s.is_failing(threshold))
        .filter_map(|s| {
            let v4 = s.address.is_ipv4();
            let small_answered = probes.iter().any(|t| {
                t.state.target == GATEWAY_TARGET
                    && t.state.direction == Direction::PodToTarget
                    && t.state.address.is_ipv4() == v4
                    && !t.state.last.is_failure()
                    && t.state.probes > 0
            });
            let ip = ips.iter().find(|ip| ip.is_ipv4() == v4)?;
            small_answered.then(|| PodProblem {
                reason: PodReason::PathMtuMismatch,
                ip: Some(*ip),
                detail: format!(
                    "the pod's eth0 MTU is {}: a {}-byte don't-fragment echo to its gateway {} \
                     failed {} times in a row ({}{}) while small echoes are answered: the path \
                     carries less than the pod's MTU",
                    s.mtu,
                    s.size,
                    s.address,
                    s.consecutive_failures,
                    s.last.as_str(),
                    s.detail
                        .as_deref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default(),
                ),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::probe::outcome::{Observation, ProbeResult};
    use crate::probe::report::{DestState, PathMtuObservation};
    use crate::probe::target::Protocol;

    const POD_V4: &str = "10.244.0.2";
    const POD_V6: &str = "fd00::2";
    const GW_V4: &str = "169.254.1.1";
    const GW_V6: &str = "fe80::ecee:eeff:feee:eeee";

    fn obs(result: ProbeResult) -> Observation {
        if result.is_failure() {
            Observation::failed(result, "no reply")
        } else {
            Observation::answered(result, Duration::from_micros(90))
        }
    }

    fn gateway(address: &str, result: ProbeResult) -> TargetVerdict {
        let mut state = DestState::new(
            GATEWAY_TARGET,
            Protocol::Icmp,
            Direction::PodToTarget,
            address.parse().unwrap(),
            None,
        );
        state.record(&obs(result));
        TargetVerdict {
            state,
            failing: false,
            node_wide: false,
            pending: false,
            diagnosis: None,
            hint: None,
        }
    }

    /// The state after these path-MTU results, sized to MTU 1500.
    fn mtu_state(address: &str, results: &[ProbeResult]) -> PathMtuState {
        results
            .iter()
            .fold(None, |prev: Option<PathMtuState>, r| {
                let o = PathMtuObservation {
                    address: address.parse().unwrap(),
                    mtu: 1500,
                    size: 1500,
                    observation: obs(*r),
                };
                Some(PathMtuState::next(prev.as_ref(), &o))
            })
            .unwrap()
    }

    fn ips() -> Vec<IpAddr> {
        vec![POD_V4.parse().unwrap(), POD_V6.parse().unwrap()]
    }

    use ProbeResult::{Ok as OK, Timeout as TO, Unreachable};

    #[test]
    fn large_lost_small_answered_is_a_mismatch_naming_the_mtu_and_the_size() {
        let p = path_mtu_problems(
            &ips(),
            &[mtu_state(GW_V4, &[TO, TO])],
            &[gateway(GW_V4, OK)],
            2,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].reason, PodReason::PathMtuMismatch);
        assert_eq!(p[0].ip, Some(POD_V4.parse().unwrap()));
        assert!(p[0].detail.contains("MTU is 1500"), "{}", p[0].detail);
        assert!(p[0].detail.contains("1500-byte"), "{}", p[0].detail);
        assert!(p[0].detail.contains(GW_V4), "{}", p[0].detail);
    }

    #[test]
    fn one_lost_probe_is_not_confirmed_and_an_answer_clears_it() {
        let gw = [gateway(GW_V4, OK)];
        assert!(path_mtu_problems(&ips(), &[mtu_state(GW_V4, &[TO])], &gw, 2).is_empty());
        let back = mtu_state(GW_V4, &[TO, TO, OK]);
        assert_eq!(back.consecutive_failures, 0);
        assert!(path_mtu_problems(&ips(), &[back], &gw, 2).is_empty());
        let again = mtu_state(GW_V4, &[TO, TO, OK, Unreachable, TO]);
        assert_eq!(path_mtu_problems(&ips(), &[again], &gw, 2).len(), 1);
    }

    #[test]
    fn a_gateway_that_does_not_answer_small_echoes_is_not_an_mtu_problem() {
        let p = path_mtu_problems(
            &ips(),
            &[mtu_state(GW_V4, &[TO, TO])],
            &[gateway(GW_V4, TO)],
            2,
        );
        assert!(p.is_empty(), "{p:?}");
        // Nor without any gateway probe of the family to compare with.
        let p = path_mtu_problems(
            &ips(),
            &[mtu_state(GW_V4, &[TO, TO])],
            &[gateway(GW_V6, OK)],
            2,
        );
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn each_family_is_judged_on_its_own() {
        let p = path_mtu_problems(
            &ips(),
            &[mtu_state(GW_V4, &[OK]), mtu_state(GW_V6, &[TO, TO])],
            &[gateway(GW_V4, OK), gateway(GW_V6, OK)],
            2,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].ip, Some(POD_V6.parse().unwrap()));
        // A family the pod has no IP of is not reported (no IP to put it on).
        let v4_only: Vec<IpAddr> = vec![POD_V4.parse().unwrap()];
        let p = path_mtu_problems(
            &v4_only,
            &[mtu_state(GW_V6, &[TO, TO])],
            &[gateway(GW_V6, OK)],
            2,
        );
        assert!(p.is_empty(), "{p:?}");
    }
}
