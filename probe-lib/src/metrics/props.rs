//! Property test of the exporter against hostile pod identities: whatever characters a
//! pod's namespace, name and interface hold (quotes, backslashes, newlines, any Unicode;
//! lengths within the API server's limits, which `kube::parse_pod` enforces), each problem
//! is exactly one escaped sample line: no label value can end a line or a series.

use proptest::prelude::*;

use super::tests::{pod, render};
use crate::model::PodId;
use crate::util::props::cases;
use crate::verdict::{PodProblem, PodReason, PodVerdict, Verdicts};

fn escaped(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn hostile_id() -> impl Strategy<Value = String> {
    prop_oneof!["[\\PC\"\\\\\n\r\t\u{0}]{0,40}", "[a-z0-9-]{1,253}"]
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn props_hostile_pod_identities_are_escaped_labels(
        ids in proptest::collection::vec((hostile_id(), hostile_id(), "[\\PC\"\n]{1,15}"), 1..6),
    ) {
        let pods: Vec<PodVerdict> = ids
            .iter()
            .enumerate()
            .map(|(i, (ns, name, interface))| {
                let mut p = pod(i + 1, vec![PodProblem {
                    reason: PodReason::RouteMissing,
                    ip: None,
                    detail: "x".into(),
                }]);
                // An index keeps the identities distinct, as the API does.
                p.pod.id = PodId { namespace: format!("{ns}{i}"), name: name.clone() };
                p.pod.interface = interface.clone();
                p
            })
            .collect();
        let text = render(Verdicts { pods: pods.clone(), node: vec![] });
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("podnet_pod_problem{")).collect();
        prop_assert_eq!(lines.len(), pods.len(), "{}", text);
        prop_assert!(lines.iter().all(|l| l.ends_with("} 1")), "{}", text);
        for p in &pods {
            let want = format!(
                "namespace=\"{}\",pod=\"{}\",interface=\"{}\"",
                escaped(&p.pod.id.namespace),
                escaped(&p.pod.id.name),
                escaped(&p.pod.interface)
            );
            prop_assert!(lines.iter().any(|l| l.contains(&want)), "{} not in {}", want, text);
        }
        // As many lines as with plain identities: nothing injected anywhere else either.
        let plain: Vec<PodVerdict> = (0..pods.len())
            .map(|i| pod(i + 1, pods[i].problems.clone()))
            .collect();
        let plain = render(Verdicts { pods: plain, node: vec![] });
        prop_assert_eq!(text.lines().count(), plain.lines().count());
    }
}
