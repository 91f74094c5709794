use std::collections::HashSet;

use super::*;

/// `ALL` holds every value once, and the strings are distinct snake_case label values.
fn check<T: LabelEnum>(expected_len: usize) {
    assert_eq!(T::ALL.len(), expected_len, "{:?}", T::ALL);
    let values: HashSet<T> = T::ALL.iter().copied().collect();
    assert_eq!(values.len(), T::ALL.len(), "duplicate in ALL: {:?}", T::ALL);
    let strings: HashSet<&str> = T::ALL.iter().map(|v| v.as_str()).collect();
    assert_eq!(
        strings.len(),
        T::ALL.len(),
        "duplicate label value in {:?}",
        T::ALL
    );
    for s in strings {
        assert!(
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{s}"
        );
        assert_eq!(serde_json::to_value(s).unwrap(), s);
    }
}

/// The lengths come from exhaustive matches: adding a variant without a string (or a
/// string twice) fails here or does not compile.
#[test]
fn every_label_enum_is_complete_and_distinct() {
    fn pod(r: PodReason) -> usize {
        use PodReason::*;
        match r {
            InterfaceMissing
            | InterfaceDown
            | RouteMissing
            | RouteWrongInterface
            | RouteNotUnicast
            | ProxyArpDisabled
            | ForwardingDisabled
            | PodInterfaceDown
            | PodDefaultRouteMissing
            | VethNotOnBridge
            | BridgeDown
            | GatewayAddressMissing
            | PathMtuMismatch => 13,
        }
    }
    fn node(r: NodeReason) -> usize {
        use NodeReason::*;
        match r {
            ForwardingDisabled | TargetUnreachable | OrphanedRoute | OrphanedInterface
            | KubeWatchStalled | CalicoNodeStale | PeersUnreachable => 7,
        }
    }
    fn resync(r: ResyncCause) -> usize {
        use ResyncCause::*;
        match r {
            Startup | Periodic | Overrun | LinkDown | Error | Malformed => 6,
        }
    }
    fn restart(r: RestartReason) -> usize {
        use RestartReason::*;
        match r {
            Gone | ServerError | ClientError | Throttled | Connect | Timeout | Stalled | Closed
            | Decode => 9,
        }
    }
    fn result(r: ProbeResult) -> usize {
        use ProbeResult::*;
        match r {
            Ok | Timeout | Refused | Unreachable | Error | Servfail | Nxdomain | DnsRefused
            | WrongAnswer | BadStatus | TlsFailed => 11,
        }
    }
    check::<PodReason>(pod(PodReason::ALL[0]));
    check::<NodeReason>(node(NodeReason::ALL[0]));
    check::<ResyncCause>(resync(ResyncCause::ALL[0]));
    check::<RestartReason>(restart(RestartReason::ALL[0]));
    check::<ProbeResult>(result(ProbeResult::ALL[0]));
    check::<ControlPlaneReason>(match ControlPlaneReason::Ok {
        ControlPlaneReason::Ok
        | ControlPlaneReason::Pending
        | ControlPlaneReason::ServiceNotFound
        | ControlPlaneReason::NoReadyEndpoints
        | ControlPlaneReason::EndpointsUnreachable
        | ControlPlaneReason::TlsFailed
        | ControlPlaneReason::ClusterIpUnreachable => 7,
    });
    check::<Protocol>(match Protocol::Icmp {
        Protocol::Icmp | Protocol::Tcp | Protocol::Dns | Protocol::Http => 4,
    });
    check::<Direction>(match Direction::HostToPod {
        Direction::PodToTarget | Direction::HostToPod => 2,
    });
    check::<ProbeSkip>(match ProbeSkip::Label {
        ProbeSkip::Namespace | ProbeSkip::Label | ProbeSkip::Annotation => 3,
    });
    check::<ScopeIgnored>(match ScopeIgnored::TooLarge {
        ScopeIgnored::InvalidValue | ScopeIgnored::UnknownTarget | ScopeIgnored::TooLarge => 3,
    });
    let source = match SourceName::Node {
        SourceName::Node | SourceName::Kubernetes | SourceName::NodeUntilListed => 3,
    };
    assert_eq!(SourceName::ALL.len(), source);
    let names: HashSet<&str> = SourceName::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(names.len(), source);
}

#[test]
fn serialised_as_label_value() {
    assert_eq!(
        serde_json::to_value(NodeReason::KubeWatchStalled).unwrap(),
        "kube_watch_stalled"
    );
    assert_eq!(
        serde_json::to_value(Direction::PodToTarget).unwrap(),
        "pod_to_target"
    );
}
