//! Lenient reading of the few fields the control-plane check needs: who references which
//! Service port (APIServices, webhook configurations, CRD conversion webhooks), a Service's
//! ClusterIP and port mapping, an EndpointSlice's ready addresses, and kube-apiserver's
//! `--enable-aggregator-routing`. Anything malformed is skipped, never fatal; every list read
//! is bounded.

use std::net::IpAddr;

use serde_json::Value;

use crate::model::{ApiServiceCondition, ServiceRef};

/// Longest object name accepted (Kubernetes' limit for DNS subdomains).
const MAX_NAME: usize = 253;
/// Most webhooks read from one configuration, ports from one Service or slice, endpoints
/// from one slice, addresses from one endpoint, arguments from one command line.
const MAX_ITEMS: usize = 1000;
/// Longest condition message kept.
const MAX_MESSAGE: usize = 512;
/// The port kube-apiserver calls when a `service` reference has none.
const DEFAULT_PORT: u16 = 443;

fn name_str(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str)
        .filter(|n| !n.is_empty() && n.len() <= MAX_NAME)
}

/// `metadata.name`, if sane.
pub(crate) fn name(obj: &Value) -> Option<&str> {
    name_str(obj.pointer("/metadata/name"))
}

fn array(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().take(MAX_ITEMS))
        .into_iter()
        .flatten()
}

fn port_number(v: Option<&Value>) -> Option<u16> {
    v.and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

/// A `{namespace, name, port}` service reference (`port` defaults to 443).
fn service_ref(v: &Value) -> Option<ServiceRef> {
    let namespace = name_str(v.get("namespace"))?.to_owned();
    let name = name_str(v.get("name"))?.to_owned();
    let port = match v.get("port") {
        None | Some(Value::Null) => DEFAULT_PORT,
        p => port_number(p)?,
    };
    Some(ServiceRef {
        namespace,
        name,
        port,
    })
}

/// An APIService served by a Service (`spec.service`), with its `Available` condition; local
/// APIServices (no `spec.service`) are always available and not returned.
pub(crate) fn apiservice(obj: &Value) -> Option<ApiServiceCondition> {
    let name = name(obj)?.to_owned();
    let service = service_ref(obj.pointer("/spec/service")?)?;
    let cond = array(obj.pointer("/status/conditions"))
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Available"));
    let text = |k: &str| {
        let s = cond
            .and_then(|c| c.get(k))
            .and_then(Value::as_str)
            .unwrap_or("");
        truncate(s, MAX_MESSAGE)
    };
    let available = match cond.and_then(|c| c.get("status")).and_then(Value::as_str) {
        Some("True") => Some(true),
        Some("False") => Some(false),
        _ => None,
    };
    Some(ApiServiceCondition {
        name,
        service,
        available,
        reason: text("reason"),
        message: text("message"),
    })
}

/// The Service references of a Validating/MutatingWebhookConfiguration's webhooks
/// (`webhooks[].clientConfig.service`; URL webhooks are not Services).
pub(crate) fn webhook_services(obj: &Value) -> Vec<ServiceRef> {
    let mut refs: Vec<ServiceRef> = array(obj.get("webhooks"))
        .filter_map(|w| service_ref(w.pointer("/clientConfig/service")?))
        .collect();
    refs.sort();
    refs.dedup();
    refs
}

/// A CRD's conversion webhook Service (`spec.conversion.webhook.clientConfig.service`).
pub(crate) fn crd_service(obj: &Value) -> Option<ServiceRef> {
    let conversion = obj.pointer("/spec/conversion")?;
    if conversion.get("strategy").and_then(Value::as_str) != Some("Webhook") {
        return None;
    }
    service_ref(conversion.pointer("/webhook/clientConfig/service")?)
}

/// How a Service port reaches its pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServicePort {
    /// The ClusterIP (the first of `clusterIPs`).
    pub(crate) cluster_ip: IpAddr,
    /// The service port's name: EndpointSlice ports are matched by it.
    pub(crate) port_name: String,
}

/// The ClusterIP and port name of `port` in a Service, or why kube-apiserver cannot call it
/// (as kube-aggregator's `ResolveCluster` refuses it).
pub(crate) fn service_port(svc: &Value, port: u16) -> Result<ServicePort, String> {
    let spec = svc.get("spec").ok_or("the Service has no spec")?;
    let kind = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if kind == "ExternalName" {
        return Err("the Service is of type ExternalName (not checked)".into());
    }
    let ip = spec.get("clusterIP").and_then(Value::as_str).unwrap_or("");
    if ip.is_empty() || ip == "None" {
        return Err("the Service is headless (no ClusterIP)".into());
    }
    let cluster_ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("the Service's clusterIP {ip:?} is not an IP"))?;
    let p = array(spec.get("ports"))
        .find(|p| port_number(p.get("port")) == Some(port))
        .ok_or_else(|| {
            format!("the Service has no port {port} (kube-aggregator: ServicePortError)")
        })?;
    let port_name = p
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    Ok(ServicePort {
        cluster_ip,
        port_name,
    })
}

/// The ready addresses of an EndpointSlice with the port named `port_name`, as
/// `(address, port)` (kube-aggregator's endpoint resolver matches ports by name).
/// `conditions.ready` unset counts as ready, as in Kubernetes; FQDN slices are skipped.
pub(crate) fn ready_endpoints(slice: &Value, port_name: &str) -> Vec<(IpAddr, u16)> {
    let family = slice.get("addressType").and_then(Value::as_str);
    if !matches!(family, Some("IPv4" | "IPv6")) {
        return Vec::new();
    }
    let Some(target) = array(slice.get("ports"))
        .find(|p| p.get("name").and_then(Value::as_str).unwrap_or("") == port_name)
        .and_then(|p| port_number(p.get("port")))
    else {
        return Vec::new();
    };
    array(slice.get("endpoints"))
        .filter(|e| e.pointer("/conditions/ready").and_then(Value::as_bool) != Some(false))
        .flat_map(|e| array(e.get("addresses")))
        .filter_map(|a| a.as_str()?.parse::<IpAddr>().ok())
        .map(|ip| (ip, target))
        .collect()
}

/// kube-apiserver's `--enable-aggregator-routing` from its mirror pod's command line
/// (`command` then `args` of the container named kube-apiserver, else the first): Go's pflag
/// reads `--flag` as true and `--flag=<bool>` (strconv.ParseBool); absent is false.
pub(crate) fn aggregator_routing(pod: &Value) -> bool {
    const FLAG: &str = "--enable-aggregator-routing";
    let containers: Vec<&Value> = array(pod.pointer("/spec/containers")).collect();
    let container = containers
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some("kube-apiserver"))
        .or(containers.first());
    let Some(c) = container else { return false };
    let mut value = false;
    for arg in array(c.get("command")).chain(array(c.get("args"))) {
        let Some(arg) = arg.as_str() else { continue };
        // The last occurrence wins, as in pflag.
        if arg == FLAG {
            value = true;
        } else if let Some(v) = arg.strip_prefix(FLAG).and_then(|r| r.strip_prefix('=')) {
            value = matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True");
        }
    }
    value
}

/// Whether a Node carries the control-plane role label.
pub(crate) fn is_control_plane_node(node: &Value) -> bool {
    node.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .is_some_and(|l| l.contains_key("node-role.kubernetes.io/control-plane"))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
