//! Every closed set of label values podnet exports: reasons, causes, results. Each enum is
//! declared once with its stable string, so `ALL` cannot miss a variant and `as_str` cannot
//! disagree with it (the values are documented in `docs/metrics.md`).

use serde::{Serialize, Serializer};

/// An enum whose values are Prometheus label values and `/status` strings.
pub trait LabelEnum: Copy + Eq + std::hash::Hash + std::fmt::Debug + 'static {
    /// Every value, in declaration order.
    const ALL: &'static [Self];
    /// Stable label value.
    fn as_str(self) -> &'static str;
}

/// Declares a label enum: the variants, `ALL` (generated from the same list, so complete by
/// construction), `as_str`, and serialisation as that string.
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident => $value:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, for zero-initialised counters, documentation and exhaustive tests.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// Stable label value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $value,)+
                }
            }
        }

        impl LabelEnum for $name {
            const ALL: &'static [Self] = $name::ALL;
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

label_enum! {
    /// Why one pod is not wired correctly (the `reason` label of `podnet_pod_problem`).
    pub enum PodReason {
        /// The pod's host-side interface does not exist.
        InterfaceMissing => "interface_missing",
        /// The host-side interface is administratively down or has no carrier.
        InterfaceDown => "interface_down",
        /// No `<podIP>/32` (`/128`) route in the main table.
        RouteMissing => "route_missing",
        /// The pod IP's route goes out of another device.
        RouteWrongInterface => "route_wrong_interface",
        /// The pod IP's route is a blackhole, unreachable or prohibit route.
        RouteNotUnicast => "route_not_unicast",
        /// `proxy_arp` is off on the host interface: the pod cannot resolve its gateway
        /// 169.254.1.1.
        ProxyArpDisabled => "proxy_arp_disabled",
        /// Forwarding is off on the host interface (while on for the node): nothing the pod
        /// sends leaves the node.
        ForwardingDisabled => "forwarding_disabled",
        /// Inside the pod's namespace, its end of the veth is down (seen by the prober).
        PodInterfaceDown => "pod_interface_down",
        /// Inside the pod's namespace, the default route of the IP's family is missing (seen
        /// by the prober).
        PodDefaultRouteMissing => "pod_default_route_missing",
        /// Bridge CNIs (`--cni bridge`): the pod's veth is not a port of a bridge, so nothing
        /// routed to the bridge reaches the pod.
        VethNotOnBridge => "veth_not_on_bridge",
        /// Bridge CNIs: the bridge the pod's veth is a port of is down (the kernel also drops
        /// the pod subnet's route).
        BridgeDown => "bridge_down",
        /// ptp and bridge CNIs: the interface that must hold the pod's gateway address (the
        /// host veth for ptp, the bridge for bridge) has no address of the pod's family.
        GatewayAddressMissing => "gateway_address_missing",
        /// A don't-fragment echo as large as the pod's eth0 MTU gets no answer from its gateway
        /// while small echoes do: the path's MTU is smaller than the pod's, so large packets
        /// are dropped (seen by the prober).
        PathMtuMismatch => "path_mtu_mismatch",
    }
}

label_enum! {
    /// Why the node as a whole cannot carry pod traffic (the `reason` label of
    /// `podnet_node_problem`).
    pub enum NodeReason {
        /// `net.ipv4.ip_forward` (or `net.ipv6.conf.all.forwarding` with IPv6 pods) is 0.
        ForwardingDisabled => "forwarding_disabled",
        /// A probe target fails from every pod while their gateways answer: the target or the
        /// path beyond the node is broken (detail: the target's name).
        TargetUnreachable => "target_unreachable",
        /// A pod route (`/32`, `/128` via a pod interface) for an IP no pod here owns.
        OrphanedRoute => "orphaned_route",
        /// A pod interface that belongs to no pod here.
        OrphanedInterface => "orphaned_interface",
        /// The Kubernetes watch has been unhealthy for longer than the threshold: the pod set
        /// may be stale.
        KubeWatchStalled => "kube_watch_stalled",
        /// calico-node's felix reports ready while pods the API runs here lack their routes or
        /// felix counts fewer endpoints than the API has pods (the incident: calico#6032).
        CalicoNodeStale => "calico_node_stale",
        /// At least half of the other nodes sampled over the cross-node probe's last rounds
        /// (`--peer-probes`, `verdict/peers.rs`) fail from here, from a pod and from the host:
        /// this node's own path off the node is broken, not n remote nodes (detail: `k of n`).
        PeersUnreachable => "peers_unreachable",
    }
}

label_enum! {
    /// Why another node's pod address block is not routed toward that node (the `reason` label
    /// of `podnet_remote_block_problem`).
    pub enum BlockReason {
        /// Nothing but the default route, a non-unicast aggregate or no route at all covers the
        /// block: traffic to that node's pods is dropped or leaves by the default gateway.
        RemoteBlockRouteMissing => "remote_block_route_missing",
        /// The block's route leads elsewhere: another node's address, an unknown gateway, or
        /// no gateway at all.
        RemoteBlockRouteWrongNextHop => "remote_block_route_wrong_next_hop",
    }
}

label_enum! {
    /// Why a full re-dump of the host state happened (the `cause` label of
    /// `podnet_netlink_resyncs_total`).
    pub enum ResyncCause {
        /// The first dump after start.
        Startup => "startup",
        /// The periodic safety net (`--resync-interval`).
        Periodic => "periodic",
        /// The kernel dropped notifications (`ENOBUFS`).
        Overrun => "overrun",
        /// A link went down or vanished: the kernel drops its routes without telling anyone.
        LinkDown => "link_down",
        /// The event subscription failed and was re-established, or a dump failed and is
        /// retried.
        Error => "error",
        /// A notification did not decode (skipped with a warning): re-read what it described.
        Malformed => "malformed",
    }
}

label_enum! {
    /// Why the Kubernetes watch started over (the `reason` label of
    /// `podnet_kube_watch_restarts_total`).
    pub enum RestartReason {
        /// 410 Gone: the resource version was compacted away; a fresh list follows.
        Gone => "gone",
        /// A 5xx answer or watch `ERROR` event.
        ServerError => "server_error",
        /// Any other error status (4xx).
        ClientError => "client_error",
        /// 429 Too Many Requests: the next attempt waits the server's `Retry-After`.
        Throttled => "throttled",
        /// The connection could not be made or broke.
        Connect => "connect",
        /// A list page or the start of a watch took too long.
        Timeout => "timeout",
        /// A watch sent nothing, not even a bookmark, for longer than its timeout plus a margin.
        Stalled => "stalled",
        /// The server ended the watch before its timeout.
        Closed => "closed",
        /// An answer could not be decoded.
        Decode => "decode",
    }
}

label_enum! {
    /// Result of one probe (the `result` label).
    pub enum ProbeResult {
        /// Answered.
        Ok => "ok",
        /// No answer within `--probe-timeout`.
        Timeout => "timeout",
        /// TCP reset: the path works, nothing listens. Not a reachability failure.
        Refused => "refused",
        /// An ICMP unreachable came back, or the kernel had no route (EHOSTUNREACH,
        /// ENETUNREACH).
        Unreachable => "unreachable",
        /// Anything else (socket errors, a namespace that could not be entered).
        Error => "error",
        /// DNS: the server answered SERVFAIL (it could not resolve; CoreDNS upstream or API).
        Servfail => "servfail",
        /// DNS: the server answered NXDOMAIN for the probed name.
        Nxdomain => "nxdomain",
        /// DNS: the server answered REFUSED. Not `refused`, which is a TCP reset and means the
        /// path works; a DNS server refusing the query is a failure.
        DnsRefused => "dns_refused",
        /// DNS: an answer without an A/AAAA record, or with an address that is not expected.
        WrongAnswer => "wrong_answer",
        /// HTTP: a response whose status is not of the expected class.
        BadStatus => "bad_status",
        /// HTTPS: the TLS handshake failed (certificate rejected, not TLS, protocol error).
        TlsFailed => "tls_failed",
    }
}

impl ProbeResult {
    /// Counts towards "cannot reach": everything but ok and refused.
    pub const fn is_failure(self) -> bool {
        !matches!(self, ProbeResult::Ok | ProbeResult::Refused)
    }

    /// Whether a probe of `protocol` can end this way: an ICMP echo is never refused (only a
    /// TCP connect is), so `podnet_probes_total` pre-creates no series that cannot move.
    /// The DNS answers are possible only for DNS, and a DNS probe is never `refused`.
    pub const fn possible_for(self, protocol: Protocol) -> bool {
        match self {
            ProbeResult::Refused => matches!(protocol, Protocol::Tcp | Protocol::Http),
            ProbeResult::Servfail
            | ProbeResult::Nxdomain
            | ProbeResult::DnsRefused
            | ProbeResult::WrongAnswer => matches!(protocol, Protocol::Dns),
            ProbeResult::BadStatus | ProbeResult::TlsFailed => matches!(protocol, Protocol::Http),
            _ => true,
        }
    }
}

label_enum! {
    /// Probe protocol (the `protocol` label).
    pub enum Protocol {
        /// ICMP / ICMPv6 echo.
        Icmp => "icmp",
        /// TCP connect.
        Tcp => "tcp",
        /// A DNS query (UDP, TCP when the answer is truncated).
        Dns => "dns",
        /// An HTTP(S) GET (status line checked).
        Http => "http",
    }
}

label_enum! {
    /// Where a probe is sent from (the `direction` label).
    pub enum Direction {
        /// From inside the pod's network namespace to a target.
        PodToTarget => "pod_to_target",
        /// From the host to the pod's IP.
        HostToPod => "host_to_pod",
    }
}

label_enum! {
    /// Why a pod is not probed at all (the `reason` label of `podnet_pods_probes_skipped`);
    /// its route and wiring are still verified.
    pub enum ProbeSkip {
        /// `--probe-exclude-namespaces` names its namespace.
        Namespace => "namespace",
        /// It carries the label `podnet.io/probes=false`.
        Label => "label",
        /// It carries the annotation `podnet.io/probes: "false"`.
        Annotation => "annotation",
    }
}

label_enum! {
    /// What of a pod's probe scoping (its `podnet.io/…` label or annotations) was ignored (the
    /// `reason` label of `podnet_probe_scope_ignored_total`): the pod is probed as if it were
    /// not there.
    pub enum ScopeIgnored {
        /// A value that is neither true nor false (`podnet.io/probes`).
        InvalidValue => "invalid_value",
        /// `podnet.io/skip-probes` names a target that is not configured.
        UnknownTarget => "unknown_target",
        /// Labels or the annotation were larger than podnet reads (see docs/metrics.md).
        TooLarge => "too_large",
    }
}

/// Where the expected pods come from (`pod_source` in `/status`). Not a label: one value
/// carries an explanation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SourceName {
    /// Node mode: the node's own interfaces.
    #[default]
    Node,
    /// The Kubernetes API.
    Kubernetes,
    /// The Kubernetes API is the source, but no list has completed yet: the node's own
    /// interfaces stand in.
    NodeUntilListed,
}

impl SourceName {
    /// Every value.
    pub const ALL: &'static [SourceName] = &[
        SourceName::Node,
        SourceName::Kubernetes,
        SourceName::NodeUntilListed,
    ];

    /// The `/status` string.
    pub const fn as_str(self) -> &'static str {
        match self {
            SourceName::Node => "node",
            SourceName::Kubernetes => "kubernetes",
            SourceName::NodeUntilListed => "node (waiting for the Kubernetes API)",
        }
    }
}

impl Serialize for SourceName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

label_enum! {
    /// What stands between kube-apiserver on this control-plane node and a Service it calls
    /// (an aggregated API, an admission or CRD conversion webhook): the `reason` label of
    /// `podnet_controlplane_service_problem`.
    pub enum ControlPlaneReason {
        /// The ClusterIP and every ready endpoint complete a TCP connect and a TLS handshake.
        Ok => "ok",
        /// Not probed yet (just discovered, or the first round is still running).
        Pending => "pending",
        /// The Service does not exist, is headless or ExternalName, or lacks the port.
        ServiceNotFound => "service_not_found",
        /// The Service has no ready endpoint for the port.
        NoReadyEndpoints => "no_ready_endpoints",
        /// A ready endpoint does not accept a TCP connection from this host: the host cannot
        /// reach the pod network (see the route verdicts for that pod or its node's block).
        EndpointsUnreachable => "endpoints_unreachable",
        /// TCP connects but the TLS handshake fails (not TLS, or a broken server).
        TlsFailed => "tls_failed",
        /// Endpoints answer but the ClusterIP does not: no service proxy on this host.
        ClusterIpUnreachable => "cluster_ip_unreachable",
    }
}

#[cfg(test)]
#[path = "labels_tests.rs"]
mod tests;

label_enum! {
    /// Where a pod's unanswered connects go (the `class` label of
    /// `podnet_pod_unanswered_connects`).
    pub enum ConnectClass {
        /// A pod on this node (its route and probes say whether the node is at fault).
        NodePod => "node_pod",
        /// An address in the cluster's pod network that belongs to no pod: the client uses a
        /// stale address (a deleted pod's IP).
        VanishedPodIp => "vanished_pod_ip",
        /// A live pod on another node that does not answer.
        UnansweredPod => "unanswered_pod",
        /// In the cluster's pod network, but whose it is could not be asked (no API, rate
        /// limit, API error).
        PodIpUnverified => "pod_ip_unverified",
        /// A Service ClusterIP.
        Service => "service",
        /// Outside the cluster's pod and Service networks.
        Outside => "outside",
    }
}

label_enum! {
    /// Why a target named by Service (`svc/<namespace>/<name>:<port>`, or the `kube-dns`
    /// Service) has no address to probe (the `reason` label of
    /// `podnet_service_target_unresolved`): it is not probed, and no pod is judged on it.
    pub enum ServiceUnresolved {
        /// The Service has not been read yet (the API has not answered).
        Pending => "pending",
        /// The API has no such Service.
        Absent => "absent",
        /// It has no ClusterIP (headless, or `ExternalName`).
        NoClusterIp => "no_cluster_ip",
        /// None of its ports is the named port.
        NoPort => "no_port",
    }
}
