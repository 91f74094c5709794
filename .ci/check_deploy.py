#!/usr/bin/env python3
"""Consistency checks for deploy/ that no off-the-shelf validator makes (.ci/static-checks).

Subcommands:
  alerts RULES TESTS RUNBOOKS      every alert follows the conventions, has a runbook section
                                   and unit tests that see it both silent and firing
  prometheusrule RENDERED RULES OUT  the rendered PrometheusRule's spec equals the rule file;
                                   writes the spec to OUT for promtool
  manifests RENDERED               the rendered objects fit together (selectors, ports,
                                   ServiceAccount, RBAC, capabilities, ServiceMonitor)
  promconfig CONFIG OUT            copy of a Prometheus config with kubernetes_sd_configs
                                   checked here and replaced by static_configs (Debian's
                                   Prometheus is built without Kubernetes discovery)
  dashboard JSON OUT               Grafana dashboard fields; writes every panel query as a
                                   recording rule to OUT so promtool parses the PromQL
"""
import json
import re
import sys

import yaml


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


SEVERITIES = {"critical", "warning", "info"}


def alerts(rules_path, tests_path, runbooks_path):
    rules = [r for g in load(rules_path)["groups"] for r in g["rules"] if "alert" in r]
    with open(runbooks_path) as f:
        headings = {
            re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
            for line in f
            if line.startswith("## ")
        }
    with open(runbooks_path) as f:
        table = {
            m.group(1): (m.group(2), m.group(3))
            for m in re.finditer(r"^\| \[(\w+)\]\(#\w+\) \| (\w+) \| (\w+) \|", f.read(), re.M)
        }
    with open("README.md") as f:
        readme = {
            m.group(1): (m.group(2), m.group(3))
            for m in re.finditer(r"^\| `(Podnet\w+)` \| (\w+) \| (\w+) \|", f.read(), re.M)
        }
    silent, firing = set(), set()
    for t in load(tests_path)["tests"]:
        for case in t.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    names = set()
    for r in rules:
        name = r["alert"]
        if name in names:
            fail(f"alert {name} defined twice")
        names.add(name)
        if not re.fullmatch(r"Podnet(?:[A-Z][a-z0-9]*)+", name):
            fail(f"{name}: not CamelCase with the Podnet prefix")
        sev = r.get("labels", {}).get("severity")
        if sev not in SEVERITIES:
            fail(f"{name}: severity {sev!r} is not one of {sorted(SEVERITIES)}")
        ann = r.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not ann.get(key):
                fail(f"{name}: no {key} annotation")
        url = ann["runbook_url"]
        if not url.startswith("https://github.com/podnet/podnet/blob/main/docs/runbooks.md#"):
            fail(f"{name}: runbook_url {url} does not point into docs/runbooks.md")
        anchor = url.split("#", 1)[1]
        if anchor != name.lower():
            fail(f"{name}: runbook anchor #{anchor} should be #{name.lower()}")
        if anchor not in headings:
            fail(f"{name}: docs/runbooks.md has no '## {name}' section")
        if "for" not in r:
            fail(f"{name}: no for: duration")
        if table.get(name) != (sev, r["for"]):
            fail(f"{name}: docs/runbooks.md's table says {table.get(name)}, the rule ({sev}, {r['for']})")
        if readme.get(name) != (sev, r["for"]):
            fail(f"{name}: README.md's alert table says {readme.get(name)}, the rule ({sev}, {r['for']})")
        if name not in firing:
            fail(f"{name}: no unit test in which it fires")
        if name not in silent:
            fail(f"{name}: no unit test in which it stays silent")
    for doc, listed in (("docs/runbooks.md", table), ("README.md", readme)):
        if set(listed) != names:
            fail(f"{doc}'s alert table lists {sorted(set(listed) ^ names)} differently from the rules")
    if "PodnetPodRouteMissing" not in names:
        fail("PodnetPodRouteMissing is missing")
    print(f"{len(names)} alerts: conventions, runbook sections and unit tests (firing and silent) ok")


def prometheusrule(rendered, rules_path, out):
    docs = [d for d in load_all(rendered) if d.get("kind") == "PrometheusRule"]
    if len(docs) != 1:
        fail(f"{rendered}: expected one PrometheusRule, found {len(docs)}")
    spec = docs[0]["spec"]
    if spec != load(rules_path):
        fail(f"the PrometheusRule's spec differs from {rules_path}: run deploy/gen-prometheusrule")
    with open(out, "w") as f:
        yaml.safe_dump(spec, f, sort_keys=False)
    print(f"PrometheusRule spec == {rules_path}")


CAPS = {"NET_ADMIN", "NET_RAW", "SYS_ADMIN"}
# Only together with hostPID (deploy/proc-fallback).
PROC_FALLBACK_CAP = "SYS_PTRACE"
AGENT_RULES = [(("",), "pods", ("list", "watch"))]
# The Services probes name (the kube-dns Service for the DNS probe, svc/... targets):
# probe-lib/src/kube/services.rs lists and watches each by metadata.name.
SERVICE_RULE = (("",), "services", ("list", "watch"))
CONTROL_PLANE_RULES = sorted([
    (("apiregistration.k8s.io",), "apiservices", ("list",)),
    (("admissionregistration.k8s.io",), "validatingwebhookconfigurations", ("list",)),
    (("admissionregistration.k8s.io",), "mutatingwebhookconfigurations", ("list",)),
    (("apiextensions.k8s.io",), "customresourcedefinitions", ("list",)),
    (("",), "services", ("get",)),
    (("",), "nodes", ("get",)),
    (("discovery.k8s.io",), "endpointslices", ("list",)),
])

# The node condition (agent/src/notify.rs: GET and strategic-merge PATCH of nodes/<name>/status)
# and Events (events.k8s.io/v1 create, merge-PATCH of a series), unless the DaemonSet turns
# them off with PODNET_NO_CONDITIONS / PODNET_NO_EVENTS.
CONDITION_RULE = (("",), "nodes/status", ("get", "patch"))
EVENT_RULE = (("events.k8s.io",), "events", ("create", "patch"))
AUTH_DELEGATOR_RULES = [
    (("authentication.k8s.io",), "tokenreviews", ("create",)),
    (("authorization.k8s.io",), "subjectaccessreviews", ("create",)),
]


def manifests(rendered):
    docs = load_all(rendered)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    def selected(selector, labels):
        return all(labels.get(k) == v for k, v in selector.items())

    for ds in by_kind.get("DaemonSet", []):
        spec, tpl = ds["spec"], ds["spec"]["template"]
        pod = tpl["spec"]
        labels = tpl["metadata"]["labels"]
        if not selected(spec["selector"]["matchLabels"], labels):
            fail("DaemonSet selector does not match its pod template")
        if spec.get("updateStrategy", {}).get("type") != "RollingUpdate":
            fail("DaemonSet is not RollingUpdate")
        if not pod.get("hostNetwork"):
            fail("DaemonSet is not hostNetwork")
        if pod.get("priorityClassName") != "system-node-critical":
            fail("DaemonSet priorityClassName is not system-node-critical")
        # GKE (and any API server limiting critical priorities) admits them outside
        # kube-system only with a ResourceQuota scoped to that priority in the namespace.
        if ds["metadata"].get("namespace") != "kube-system" and not any(
            q["metadata"].get("namespace") == ds["metadata"].get("namespace")
            and {"scopeName": "PriorityClass", "operator": "In", "values": [pod["priorityClassName"]]}
            in q["spec"].get("scopeSelector", {}).get("matchExpressions", [])
            for q in by_kind.get("ResourceQuota", [])
        ):
            fail(f"no ResourceQuota for {pod['priorityClassName']} in the DaemonSet's namespace (rejected on GKE)")
        if pod.get("nodeSelector", {}).get("kubernetes.io/os") != "linux":
            fail("DaemonSet does not select kubernetes.io/os: linux (it would land on Windows nodes)")
        unavailable = spec["updateStrategy"].get("rollingUpdate", {}).get("maxUnavailable")
        if not (isinstance(unavailable, str) and re.fullmatch(r"([1-9]|[1-9][0-9])%", unavailable)):
            fail(f"rollout maxUnavailable {unavailable!r} does not scale with the fleet (want a percentage)")
        if {"operator": "Exists"} not in pod.get("tolerations", []):
            fail("DaemonSet does not tolerate every taint (control-plane nodes)")
        sas = {(s["metadata"]["name"], s["metadata"].get("namespace")) for s in by_kind.get("ServiceAccount", [])}
        if (pod["serviceAccountName"], ds["metadata"].get("namespace")) not in sas:
            fail(f"ServiceAccount {pod['serviceAccountName']} is not in the same kustomization")
        (c,) = pod["containers"]
        # deploy/release pins the image by digest (a manifest list of amd64 and arm64 images);
        # only that image may go to every architecture, a tag is amd64 only.
        by_digest = "@" in c["image"]
        if by_digest and not re.fullmatch(r"[a-z0-9.:/_-]+@sha256:[0-9a-f]{64}", c["image"]):
            fail(f"image {c['image']} is not REPOSITORY@sha256:<64 hex digits>")
        arch = pod.get("nodeSelector", {}).get("kubernetes.io/arch")
        if arch is None and not by_digest:
            fail("DaemonSet selects every architecture but its image is no multi-arch release by digest")
        if arch not in (None, "amd64"):
            fail(f"DaemonSet selects kubernetes.io/arch {arch}: the image is built for amd64 and arm64 only")
        env = {e["name"]: e for e in c.get("env", [])}
        if env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "spec.nodeName":
            fail("NODE_NAME does not come from the downward API (spec.nodeName)")
        sc = c["securityContext"]
        if sc.get("privileged") or not sc.get("readOnlyRootFilesystem"):
            fail("agent container is privileged or has a writable root filesystem")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or set(sc["capabilities"]["add"]) - {PROC_FALLBACK_CAP} != CAPS:
            fail(f"agent capabilities are not exactly drop ALL + {sorted(CAPS)} (+ {PROC_FALLBACK_CAP})")
        if (PROC_FALLBACK_CAP in sc["capabilities"]["add"]) != bool(pod.get("hostPID")):
            fail("SYS_PTRACE and hostPID (the /proc fallback) only together")
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = c.get(probe, {}).get("httpGet", {})
            if get.get("path") != path or get.get("port") not in ports:
                fail(f"{probe} is not GET {path} on a named container port")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        if mounts.get("/var/run/netns", {}).get("mountPropagation") != "HostToContainer":
            fail("/var/run/netns is not mounted with HostToContainer propagation")
        res = c.get("resources", {})
        if not res.get("requests", {}).get("cpu") or not res.get("requests", {}).get("memory"):
            fail("agent has no CPU and memory requests")
        if not res.get("limits", {}).get("memory"):
            fail("agent has no memory limit")
        # A CFS quota throttles the agent's single runtime thread and skews RTTs and timeouts.
        if "cpu" in res.get("limits", {}):
            fail("agent has a CPU limit: its one runtime thread would be throttled (probe timing)")
        listen = env.get("PODNET_LISTEN", {}).get("value", "0.0.0.0:9710")
        if int(listen.rsplit(":", 1)[1]) != ports["metrics"]:
            fail(f"PODNET_LISTEN {listen} is not the metrics port {ports['metrics']}")
        if listen != "$(HOST_IP):9710" or env.get("HOST_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "status.hostIP":
            fail("PODNET_LISTEN is not the node's own IP ($(HOST_IP) from status.hostIP)")
        if not env.get("PODNET_STATUS_LISTEN", {}).get("value", "127.0.0.1:").startswith(("127.", "[::1]")):
            fail("PODNET_STATUS_LISTEN is not a loopback address")
        secure = env.get("PODNET_SECURE_METRICS", {}).get("value") == "true"
        for probe in ("livenessProbe", "readinessProbe"):
            if (c[probe]["httpGet"].get("scheme", "HTTP") == "HTTPS") != secure:
                fail(f"{probe} scheme does not match PODNET_SECURE_METRICS")
        for svc in by_kind.get("Service", []):
            if not selected(svc["spec"]["selector"], labels):
                fail(f"Service {svc['metadata']['name']} does not select the agent pods")
            if svc["spec"].get("clusterIP") != "None":
                fail(f"Service {svc['metadata']['name']} is not headless")
            for p in svc["spec"]["ports"]:
                if p["targetPort"] not in ports:
                    fail(f"Service port {p['name']} targets {p['targetPort']}, not a container port")

    secure = any(
        e.get("name") == "PODNET_SECURE_METRICS" and e.get("value") == "true"
        for ds in by_kind.get("DaemonSet", [])
        for c in ds["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
    )
    remote_blocks = {
        e.get("value")
        for ds in by_kind.get("DaemonSet", [])
        for c in ds["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
        if e.get("name") == "PODNET_REMOTE_BLOCKS"
    } - {"off"}
    # Exactly the verbs the code uses: the agent's own role; with --secure-metrics the reviews
    # and a reader role for Prometheus (the only binding to a subject outside the kustomization);
    # with --remote-blocks what probe-lib/src/kube/blocks/ lists and watches.
    def env_true(name):
        return any(
            e.get("name") == name and str(e.get("value")).lower() in ("1", "true", "yes", "on")
            for ds in by_kind.get("DaemonSet", [])
            for c in ds["spec"]["template"]["spec"]["containers"]
            for e in c.get("env", [])
        )
    agent_rules = list(AGENT_RULES)
    dns_off = any(
        e.get("name") == "PODNET_DNS_SERVICE" and e.get("value") == "none"
        for ds in by_kind.get("DaemonSet", [])
        for c in ds["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
    )
    if not dns_off:
        agent_rules.append(SERVICE_RULE)
    if not env_true("PODNET_NO_CONDITIONS"):
        agent_rules.append(CONDITION_RULE)
    if not env_true("PODNET_NO_EVENTS"):
        agent_rules.append(EVENT_RULE)
    want_roles = {"podnet-agent": sorted(agent_rules)}
    if remote_blocks:
        want_roles["podnet-agent-remote-blocks"] = sorted(
            [(("",), "nodes", ("list", "watch"))]
            + ([(("crd.projectcalico.org",), "blockaffinities", ("list", "watch"))]
               if "calico" in remote_blocks else [])
        )
    control_plane = {
        e.get("value")
        for ds in by_kind.get("DaemonSet", [])
        for c in ds["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
        if e.get("name") == "PODNET_CONTROL_PLANE_CHECKS"
    } - {"off"}
    # With --control-plane-checks: what probe-lib/src/controlplane/read.rs lists and gets.
    if control_plane:
        want_roles["podnet-agent-control-plane"] = CONTROL_PLANE_RULES
    if secure:
        want_roles["podnet-agent-auth-delegator"] = AUTH_DELEGATOR_RULES
        want_roles["podnet-metrics-reader"] = [(("nonResourceURLs",), "/metrics", ("get",))]
    roles = {}
    for role in by_kind.get("ClusterRole", []):
        roles[role["metadata"]["name"]] = sorted(
            (tuple(r["apiGroups"]), res, tuple(sorted(r["verbs"])))
            for r in role["rules"]
            for res in r.get("resources", [])
        ) + sorted(
            (("nonResourceURLs",), url, tuple(sorted(r["verbs"])))
            for r in role["rules"]
            for url in r.get("nonResourceURLs", [])
        )
    if by_kind.get("DaemonSet") and roles != want_roles:
        fail(f"ClusterRoles grant {roles}, want exactly {want_roles}")
    for b in by_kind.get("ClusterRoleBinding", []):
        if b["roleRef"]["name"] not in roles:
            fail(f"ClusterRoleBinding {b['metadata']['name']} refers to an unknown ClusterRole")
        if b["roleRef"]["name"] == "podnet-metrics-reader":
            continue
        sas = {(s["metadata"]["name"], s["metadata"].get("namespace")) for s in by_kind.get("ServiceAccount", [])}
        for s in b["subjects"]:
            if (s["name"], s.get("namespace")) not in sas:
                fail(f"ClusterRoleBinding subject {s} is not the agent's ServiceAccount")

    for sm in by_kind.get("ServiceMonitor", []):
        svcs = [s for s in by_kind.get("Service", []) if s["metadata"].get("namespace") == sm["metadata"].get("namespace")]
        match = [s for s in svcs if selected(sm["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
        if len(match) != 1:
            fail(f"ServiceMonitor selects {len(match)} Services, want 1")
        if match[0]["metadata"]["name"] != "podnet":
            fail("the Service must be named podnet: its name is the job label the alerts select")
        names = {p["name"] for p in match[0]["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            if ep.get("port") not in names:
                fail(f"ServiceMonitor endpoint port {ep.get('port')} is not a Service port")
            if ep.get("honorLabels") is not True:
                fail("ServiceMonitor endpoint without honorLabels: the checked pods' labels would be lost")
            if not any(r.get("targetLabel") == "node" for r in ep.get("relabelings", [])):
                fail("ServiceMonitor endpoint does not set the node label")
            if secure and (ep.get("scheme") != "https" or not (ep.get("bearerTokenFile") or ep.get("authorization"))):
                fail("ServiceMonitor endpoint must scrape the secure agent over https with a bearer token")
    kinds = ", ".join(f"{k} x{len(v)}" for k, v in sorted(by_kind.items()))
    print(f"{rendered}: consistent ({kinds})")


K8S_SD_KEYS = {"role", "namespaces", "selectors", "api_server", "kubeconfig_file", "attach_metadata",
               "basic_auth", "authorization", "oauth2", "bearer_token", "bearer_token_file",
               "tls_config", "proxy_url", "follow_redirects", "enable_http2"}


def promconfig(path, out):
    cfg = load(path)
    for job in cfg.get("scrape_configs", []):
        sds = job.pop("kubernetes_sd_configs", None)
        if sds is None:
            continue
        for sd in sds:
            unknown = set(sd) - K8S_SD_KEYS
            if unknown:
                fail(f"job {job['job_name']}: unknown kubernetes_sd_configs keys {sorted(unknown)}")
            if sd.get("role") not in {"node", "service", "pod", "endpoints", "endpointslice", "ingress"}:
                fail(f"job {job['job_name']}: bad role {sd.get('role')}")
            for sel in sd.get("selectors", []):
                if set(sel) - {"role", "label", "field"} or sel.get("role") != sd["role"]:
                    fail(f"job {job['job_name']}: bad selector {sel}")
        job["static_configs"] = [{"targets": ["placeholder:9710"]}]
        if job["job_name"] == "podnet" and not job.get("honor_labels"):
            fail("job podnet without honor_labels")
    with open(out, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    print(f"{path}: kubernetes_sd_configs ok, rest handed to promtool")


def dashboard(path, out):
    with open(path) as f:
        d = json.load(f)
    for key in ("title", "uid", "schemaVersion", "panels"):
        if not d.get(key):
            fail(f"dashboard has no {key}")
    if not isinstance(d["schemaVersion"], int) or d["schemaVersion"] < 30:
        fail("dashboard schemaVersion is not a recent integer")
    var_names = {v["name"] for v in d.get("templating", {}).get("list", [])}
    exprs, ids = [], set()
    panels = list(d["panels"])
    for p in panels:
        panels.extend(p.get("panels", []))
        if p.get("id") in ids:
            fail(f"panel id {p.get('id')} used twice")
        ids.add(p.get("id"))
        if p.get("type") == "row":
            continue
        for k in ("title", "type", "gridPos", "targets", "datasource"):
            if not p.get(k):
                fail(f"panel {p.get('title')!r} has no {k}")
        for t in p["targets"]:
            if not t.get("expr") or not t.get("refId"):
                fail(f"panel {p['title']!r}: a target without expr or refId")
            exprs.append((p["title"], t["expr"]))
    for title, e in exprs:
        for v in re.findall(r"\$(\w+)", e):
            if v not in var_names and not v.startswith("__"):
                fail(f"panel {title!r} uses undefined variable ${v}")
    # Several clusters in one Prometheus: every query selects by the cluster variable.
    if "cluster" not in var_names:
        fail("dashboard has no cluster variable")
    for title, e in exprs:
        if "$cluster" not in e:
            fail(f"panel {title!r}: query does not select cluster=~\"$cluster\": {e}")
    # Grafana's variables → something promtool can parse.
    subst = lambda e: (e.replace("$__rate_interval", "5m").replace("$node", ".*")
                       .replace("$cluster", ".*"))
    rules = [{"record": f"dashboard:panel_{i}", "expr": subst(e)} for i, (_, e) in enumerate(exprs)]
    with open(out, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, sort_keys=False)
    print(f"{path}: {len(ids)} panels, {len(exprs)} queries; uid {d['uid']}")


if __name__ == "__main__":
    cmds = {"alerts": alerts, "prometheusrule": prometheusrule, "manifests": manifests,
            "promconfig": promconfig, "dashboard": dashboard}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        fail(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
