//! Field and label selectors, parsed and matched as kube-apiserver does for pods.
//!
//! Field selectors (`k8s.io/apimachinery/pkg/fields`): comma-separated `field=value`,
//! `field==value` or `field!=value` terms (backslash escapes `\,` `\=` `\\`), over the fields
//! pods support (`pkg/registry/core/pod.ToSelectableFields`); any other field is an error, which
//! the real server answers with 400 `field label not supported: X`.
//!
//! Label selectors (`k8s.io/apimachinery/pkg/labels`): `k=v`, `k==v`, `k!=v`, `k`, `!k`,
//! `k in (a,b)`, `k notin (a,b)`, comma conjunctions. `k!=v` and `notin` also match objects
//! without the label, as in Kubernetes.

use serde_json::Value;

/// A pod field a field selector may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodField {
    Name,
    Namespace,
    NodeName,
    RestartPolicy,
    SchedulerName,
    ServiceAccountName,
    HostNetwork,
    Phase,
    PodIp,
    NominatedNodeName,
}

impl PodField {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "metadata.name" => Self::Name,
            "metadata.namespace" => Self::Namespace,
            "spec.nodeName" => Self::NodeName,
            "spec.restartPolicy" => Self::RestartPolicy,
            "spec.schedulerName" => Self::SchedulerName,
            "spec.serviceAccountName" => Self::ServiceAccountName,
            "spec.hostNetwork" => Self::HostNetwork,
            "status.phase" => Self::Phase,
            "status.podIP" => Self::PodIp,
            "status.nominatedNodeName" => Self::NominatedNodeName,
            _ => return None,
        })
    }

    /// The field's value as the apiserver renders it; missing or mistyped → `""`.
    fn value(self, pod: &Value) -> String {
        let s = |ptr: &str| pod.pointer(ptr).and_then(Value::as_str).unwrap_or("");
        match self {
            Self::Name => s("/metadata/name").to_owned(),
            Self::Namespace => s("/metadata/namespace").to_owned(),
            Self::NodeName => s("/spec/nodeName").to_owned(),
            Self::RestartPolicy => s("/spec/restartPolicy").to_owned(),
            Self::SchedulerName => s("/spec/schedulerName").to_owned(),
            Self::ServiceAccountName => s("/spec/serviceAccountName").to_owned(),
            Self::HostNetwork => pod
                .pointer("/spec/hostNetwork")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string(),
            Self::Phase => s("/status/phase").to_owned(),
            // The apiserver uses the first entry of podIPs, which mirrors podIP.
            Self::PodIp => pod
                .pointer("/status/podIPs/0/ip")
                .and_then(Value::as_str)
                .unwrap_or_else(|| s("/status/podIP"))
                .to_owned(),
            Self::NominatedNodeName => s("/status/nominatedNodeName").to_owned(),
        }
    }
}

/// The node name of a pod (`spec.nodeName`), `""` when unscheduled or malformed.
pub(crate) fn node_name(pod: &Value) -> &str {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

#[derive(Debug, Clone)]
struct FieldTerm {
    field: PodField,
    equal: bool,
    value: String,
}

/// A parsed field selector (a conjunction of terms); empty matches everything.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldSelector {
    terms: Vec<FieldTerm>,
}

/// Split on separators not preceded by a backslash, keeping escapes in the pieces.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            cur.push(c);
            escaped = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl FieldSelector {
    /// Parse; the error is the message kube-apiserver sends back with 400 BadRequest.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in split_unescaped(s, ',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let (lhs, equal, rhs) = ["!=", "==", "="]
                .iter()
                .find_map(|op| {
                    find_unescaped(term, op)
                        .map(|i| (&term[..i], *op != "!=", &term[i + op.len()..]))
                })
                .ok_or_else(|| format!("invalid selector: '{s}'; can't understand '{term}'"))?;
            let name = unescape(lhs.trim());
            let field = PodField::parse(&name)
                .ok_or_else(|| format!("field label not supported: {name}"))?;
            terms.push(FieldTerm {
                field,
                equal,
                value: unescape(rhs.trim()),
            });
        }
        Ok(FieldSelector { terms })
    }

    /// Whether the pod matches every term.
    pub(crate) fn matches(&self, pod: &Value) -> bool {
        self.terms
            .iter()
            .all(|t| (t.field.value(pod) == t.value) == t.equal)
    }

    /// The node named by an equality term on `spec.nodeName`, for the node index.
    pub(crate) fn node_name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == PodField::NodeName && t.equal)
            .map(|t| t.value.as_str())
    }

    /// No terms: matches everything.
    pub(crate) fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

fn find_unescaped(s: &str, pat: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i..].starts_with(pat) {
            return Some(i);
        }
        i += 1;
    }
    None
}

#[derive(Debug, Clone)]
enum LabelOp {
    Exists,
    NotExists,
    In(Vec<String>),
    NotIn(Vec<String>),
}

/// A parsed label selector (a conjunction of requirements); empty matches everything.
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelSelector {
    reqs: Vec<(String, LabelOp)>,
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl LabelSelector {
    /// Parse; the error is the message kube-apiserver sends back with 400 BadRequest.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        // Split on commas outside parentheses.
        let mut depth = 0usize;
        let mut parts = vec![String::new()];
        for c in s.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if c == ',' && depth == 0 {
                parts.push(String::new());
            } else if let Some(p) = parts.last_mut() {
                p.push(c);
            }
        }
        for part in parts {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let bad = || {
                format!("unable to parse requirement: found '{part}', expected: valid requirement")
            };
            let req = if let Some(key) = part.strip_prefix('!') {
                (key.trim().to_owned(), LabelOp::NotExists)
            } else if let Some((k, v)) = part.split_once("!=") {
                (
                    k.trim().to_owned(),
                    LabelOp::NotIn(vec![v.trim().to_owned()]),
                )
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (k.trim().to_owned(), LabelOp::In(vec![v.trim().to_owned()]))
            } else if let Some((k, rest)) = split_set_op(part, " notin ") {
                (k, LabelOp::NotIn(parse_set(rest).ok_or_else(bad)?))
            } else if let Some((k, rest)) = split_set_op(part, " in ") {
                (k, LabelOp::In(parse_set(rest).ok_or_else(bad)?))
            } else {
                (part.to_owned(), LabelOp::Exists)
            };
            let values_ok = match &req.1 {
                LabelOp::In(v) | LabelOp::NotIn(v) => v.iter().all(|v| valid_value(v)),
                _ => true,
            };
            if !valid_key(&req.0) || !values_ok {
                return Err(bad());
            }
            reqs.push(req);
        }
        Ok(LabelSelector { reqs })
    }

    /// Whether the object's `metadata.labels` satisfy every requirement.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        self.reqs.iter().all(|(key, op)| {
            let v = labels.and_then(|l| l.get(key)).and_then(Value::as_str);
            match op {
                LabelOp::Exists => v.is_some(),
                LabelOp::NotExists => v.is_none(),
                LabelOp::In(set) => v.is_some_and(|v| set.iter().any(|s| s == v)),
                LabelOp::NotIn(set) => v.is_none_or(|v| set.iter().all(|s| s != v)),
            }
        })
    }

    /// No requirements: matches everything.
    pub(crate) fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }
}

fn split_set_op(part: &str, op: &str) -> Option<(String, String)> {
    let i = part.find(op)?;
    Some((
        part[..i].trim().to_owned(),
        part[i + op.len()..].trim().to_owned(),
    ))
}

fn parse_set(s: String) -> Option<Vec<String>> {
    let inner = s.strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_owned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "a", "namespace": "shop", "labels": {"app": "web", "tier": "fe"}},
            "spec": {"nodeName": "node-1", "hostNetwork": true},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}]}
        })
    }

    #[test]
    fn field_selectors() {
        let p = pod();
        let m = |s: &str| FieldSelector::parse(s).unwrap().matches(&p);
        assert!(m(""));
        assert!(m("spec.nodeName=node-1"));
        assert!(m("spec.nodeName==node-1,metadata.namespace=shop"));
        assert!(!m("spec.nodeName!=node-1"));
        assert!(!m("spec.nodeName=node-1,metadata.name=b"));
        assert!(m(
            "spec.hostNetwork=true,status.phase=Running,status.podIP=10.0.0.1"
        ));
        assert!(m("status.nominatedNodeName="));
        // What podnet asks for: this node's pods that still run.
        let running = "spec.nodeName=node-1,status.phase!=Failed,status.phase!=Succeeded";
        assert!(m(running));
        let mut failed = p.clone();
        failed["status"]["phase"] = "Failed".into();
        assert!(!FieldSelector::parse(running).unwrap().matches(&failed));
        failed["status"]["phase"] = "Succeeded".into();
        assert!(!FieldSelector::parse(running).unwrap().matches(&failed));
        assert_eq!(
            FieldSelector::parse(running).unwrap().node_name(),
            Some("node-1")
        );
        assert_eq!(
            FieldSelector::parse("spec.nodeName=n,metadata.name!=x")
                .unwrap()
                .node_name(),
            Some("n")
        );
        assert_eq!(
            FieldSelector::parse("spec.foo=x").unwrap_err(),
            "field label not supported: spec.foo"
        );
        assert!(FieldSelector::parse("nonsense").is_err());
    }

    #[test]
    fn escaped_field_values() {
        let p = json!({"metadata": {"name": "a,b=c"}});
        assert!(
            FieldSelector::parse(r"metadata.name=a\,b\=c")
                .unwrap()
                .matches(&p)
        );
    }

    #[test]
    fn label_selectors() {
        let p = pod();
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&p);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("missing!=x"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        assert!(m("app in (db, web),tier notin (be)"));
        assert!(!m("app notin (web)"));
        assert!(LabelSelector::parse("app=(x").is_err());
    }
}
