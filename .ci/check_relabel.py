#!/usr/bin/env python3
"""The shipped scrape configs label the agent's target as the alerts expect (.ci/static-checks).

  check_relabel.py PROMETHEUS_YAML SERVICEMONITOR_YAML

Runs each config's relabelling through the real Prometheus code (`promtool check
service-discovery`) on a target as Kubernetes discovery would hand it over (Debian's Prometheus
has no Kubernetes discovery: the discovered `__meta_kubernetes_*` labels are given as static
labels), and checks the result: `node` is the node's name, the agent pod is kept as
`agent_namespace`/`agent_pod`, and no `namespace`, `pod` or `container` label is left that
node-level series (which have none of their own) would take for the checked pod's.

The ServiceMonitor's relabelings run after the ones prometheus-operator generates, which set
`namespace`, `service`, `pod`, `container` and `endpoint`: those are reproduced here.
"""
import json
import os
import subprocess
import sys
import tempfile

import yaml

# What Kubernetes pod discovery hands over for the agent's metrics port.
DISCOVERED = {
    "__meta_kubernetes_namespace": "podnet",
    "__meta_kubernetes_pod_name": "podnet-agent-x7k2p",
    "__meta_kubernetes_pod_node_name": "node-a",
    "__meta_kubernetes_pod_container_name": "agent",
    "__meta_kubernetes_pod_container_port_name": "metrics",
    "__meta_kubernetes_service_name": "podnet",
}
WANT = {"node": "node-a", "agent_namespace": "podnet", "agent_pod": "podnet-agent-x7k2p"}
FORBIDDEN = ("namespace", "pod", "container")

# prometheus-operator's own relabelling before an endpoint's `relabelings` (the part that
# sets target labels; see its generated scrape configs).
OPERATOR_PREFIX = [
    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
    {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
    {"target_label": "endpoint", "replacement": "metrics"},
]

CAMEL = {"sourceLabels": "source_labels", "targetLabel": "target_label"}


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def relabelled(name, relabel_configs):
    """The target's labels after `relabel_configs`, computed by promtool."""
    cfg = {"scrape_configs": [{
        "job_name": "podnet",
        "static_configs": [{"targets": ["192.0.2.11:9710"], "labels": DISCOVERED}],
        "relabel_configs": relabel_configs,
    }]}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(cfg, f)
    try:
        out = subprocess.run(["promtool", "check", "service-discovery", f.name, "podnet"],
                             check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    targets = json.loads(out)
    if len(targets) != 1 or not targets[0].get("labels"):
        fail(f"{name}: the agent's metrics target was dropped by the relabelling: {out}")
    return targets[0]["labels"]


def check(name, labels):
    for k, v in WANT.items():
        if labels.get(k) != v:
            fail(f"{name}: target label {k} is {labels.get(k)!r}, want {v!r}: {labels}")
    for k in FORBIDDEN:
        if k in labels:
            fail(f"{name}: target label {k}={labels[k]!r} would pass for the checked pod's "
                 f"on node-level series: {labels}")
    print(f"{name}: agent target labelled {sorted(k for k in labels if not k.startswith('__'))}")


def main(prometheus_yaml, servicemonitor_yaml):
    with open(prometheus_yaml) as f:
        job = next(j for j in yaml.safe_load(f)["scrape_configs"] if j["job_name"] == "podnet")
    check(prometheus_yaml, relabelled(prometheus_yaml, job.get("relabel_configs", [])))

    with open(servicemonitor_yaml) as f:
        sm = yaml.safe_load(f)
    for ep in sm["spec"]["endpoints"]:
        rules = [{CAMEL.get(k, k): v for k, v in r.items()} for r in ep.get("relabelings", [])]
        check(f"{servicemonitor_yaml} (port {ep.get('port')})",
              relabelled(servicemonitor_yaml, OPERATOR_PREFIX + rules))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        fail(__doc__)
    main(*sys.argv[1:])
