//! Policy-aware diagnosis: a probe that fails while the pod's wiring is clean and its gateway
//! answers is, on a node that enforces network policy, most likely denied by a policy — say so
//! (and how to check) instead of blaming NAT or the uplink. Pure: the texts and when they apply.
//!
//! The engine is known from configuration (`--policy-engine`, by default Calico with `--cni
//! calico`), not read from the host's ruleset: the agent's image has no iptables, and a
//! netfilter dump per round would cost more than the hint is worth.

use crate::model::Direction;
use crate::probe::target::NODE_TARGET;

/// A network policy engine enforcing policy on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyEngine {
    /// Calico's felix (iptables, nftables or eBPF dataplane).
    Calico,
    /// Another engine (Cilium, kube-router, Antrea, a cloud's policy agent).
    Other,
}

impl PolicyEngine {
    /// Name in texts.
    pub const fn as_str(self) -> &'static str {
        match self {
            PolicyEngine::Calico => "calico",
            PolicyEngine::Other => "a network policy engine",
        }
    }
}

/// `diagnosis` of a pod's failing probe a policy may explain.
pub const NETWORK_POLICY: &str = "network_policy";

/// What a node-wide failure of the `node` target means, whatever the engine: the pods reach
/// their gateway (the host) but not the host's own address, so the packets die in the host's
/// INPUT path. Nothing leaves the node; the uplink cannot be the cause.
pub const NODE_TARGET_HINT: &str = "the pods reach their gateway but not the node's own \
address: a host policy or firewall on this node drops pod -> host traffic (INPUT chain; Calico: \
DefaultEndpointToHostAction=Drop or a host endpoint policy); the pods' wiring is fine and the \
uplink is not involved. Check on the node: iptables -S INPUT; iptables -L INPUT -v -n; \
calicoctl get felixconfiguration default -o yaml | grep -i EndpointToHost; calicoctl get \
hostendpoints. Not a page on default-deny clusters: --builtin-probes without node";

/// The hint for a pod's probe to `target` in `direction` that fails while the pod's wiring is
/// fine and its gateway answers, on a node where `engine` enforces policy.
pub fn pod_hint(
    engine: PolicyEngine,
    target: &str,
    direction: Direction,
    namespace: &str,
) -> String {
    let ns = if namespace.is_empty() {
        "<namespace>"
    } else {
        namespace
    };
    let calico = if engine == PolicyEngine::Calico {
        format!(
            "; calicoctl get networkpolicy -n {ns} -o wide; calicoctl get globalnetworkpolicy -o wide"
        )
    } else {
        String::new()
    };
    let what = match direction {
        Direction::HostToPod => {
            "a network policy on the pod's ingress may drop host -> pod traffic"
        }
        Direction::PodToTarget if target == NODE_TARGET => {
            "a host policy may drop pod -> node traffic (Calico: DefaultEndpointToHostAction, host endpoint policies)"
        }
        Direction::PodToTarget => {
            "a network policy may drop this (the pod's egress or the target's ingress)"
        }
    };
    format!(
        "{what} ({} enforces policy on this node); the pod's wiring is fine and its gateway \
         answers. Check: kubectl get networkpolicy -n {ns}{calico}. Expected? annotate the pod \
         podnet.io/skip-probes={target}",
        engine.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_policy_and_how_to_check_never_the_uplink() {
        let h = pod_hint(PolicyEngine::Calico, "dns", Direction::PodToTarget, "shop");
        assert!(h.starts_with("a network policy may drop this"), "{h}");
        assert!(h.contains("kubectl get networkpolicy -n shop"), "{h}");
        assert!(
            h.contains("calicoctl get networkpolicy -n shop -o wide"),
            "{h}"
        );
        assert!(h.contains("podnet.io/skip-probes=dns"), "{h}");
        let h = pod_hint(PolicyEngine::Other, "node", Direction::PodToTarget, "");
        assert!(
            h.contains("host policy") && h.contains("-n <namespace>"),
            "{h}"
        );
        assert!(!h.contains("calicoctl"), "{h}");
        let h = pod_hint(PolicyEngine::Other, "pod", Direction::HostToPod, "a");
        assert!(h.contains("ingress"), "{h}");
        for h in [NODE_TARGET_HINT.to_owned(), h] {
            assert!(!h.contains("NAT") && !h.contains("uplink is broken"), "{h}");
        }
        assert!(NODE_TARGET_HINT.contains("uplink is not involved"));
    }
}
