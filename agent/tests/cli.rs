//! The binary's command line contract: bad input gets one line and exit code 2.

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_podnet-agent"))
}

#[test]
fn help_documents_every_flag_and_its_environment_variable() {
    let out = agent().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env) in [
        ("--listen", "PODNET_LISTEN"),
        ("--node-name", "NODE_NAME"),
        ("--interface-prefix", "PODNET_INTERFACE_PREFIX"),
        ("--resync-interval", "PODNET_RESYNC_INTERVAL"),
        ("--log-level", "PODNET_LOG"),
        ("--log-format", "PODNET_LOG_FORMAT"),
        ("--probe", "PODNET_PROBES"),
        ("--probe-file", "PODNET_PROBE_FILE"),
        ("--probe-interval", "PODNET_PROBE_INTERVAL"),
        ("--probe-timeout", "PODNET_PROBE_TIMEOUT"),
        ("--probe-failures", "PODNET_PROBE_FAILURES"),
        ("--probe-concurrency", "PODNET_PROBE_CONCURRENCY"),
        ("--no-probes", "PODNET_NO_PROBES"),
        ("--max-pod-series", "PODNET_MAX_POD_SERIES"),
        ("--pod-source", "PODNET_POD_SOURCE"),
        ("--kubeconfig", "KUBECONFIG"),
        ("--cni", "PODNET_CNI"),
        ("--wiring-grace", "PODNET_WIRING_GRACE"),
        ("--kube-watch-timeout", "PODNET_KUBE_WATCH_TIMEOUT"),
        (
            "--kube-unhealthy-threshold",
            "PODNET_KUBE_UNHEALTHY_THRESHOLD",
        ),
        ("--control-plane-checks", "PODNET_CONTROL_PLANE_CHECKS"),
        ("--control-plane-relist", "PODNET_CONTROL_PLANE_RELIST"),
        ("--dns-server", "PODNET_DNS_SERVER"),
        ("--cluster-domain", "PODNET_CLUSTER_DOMAIN"),
        ("--dns-name", "PODNET_DNS_NAME"),
        ("--dns-expect", "PODNET_DNS_EXPECT"),
        ("--probe-ca", "PODNET_PROBE_CA"),
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
        assert!(
            help.contains(&format!("env: {env}")),
            "{env} missing from --help:\n{help}"
        );
    }
}

fn assert_rejected(cmd: &mut Command, mention: &str) {
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line expected, got:\n{err}");
    assert!(err.contains(mention), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_flags_and_values_exit_2_with_one_line() {
    assert_rejected(agent().arg("--no-such-flag"), "--no-such-flag");
    assert_rejected(agent().args(["--listen", "nowhere"]), "--listen");
    assert_rejected(agent().args(["--dns-server", "kube-dns"]), "--dns-server");
    assert_rejected(agent().args(["--dns-name", "a..b"]), "--dns-name");
    assert_rejected(
        agent().args(["--probe-ca", "/nonexistent/ca.pem"]),
        "--probe-ca",
    );
    assert_rejected(
        agent().args(["--probe", "web=http://example.com/"]),
        "must be an IP address",
    );
    assert_rejected(
        agent().args(["--resync-interval", "10x"]),
        "--resync-interval",
    );
    assert_rejected(agent().args(["--resync-interval", "10ms"]), "at least 1s");
    assert_rejected(agent().args(["--log-format", "xml"]), "--log-format");
    assert_rejected(
        agent().args(["--interface-prefix", "a/b"]),
        "--interface-prefix",
    );
    assert_rejected(agent().args(["--log-level", "info,=["]), "--log-level");
    assert_rejected(
        agent().args(["--probe", "udp:1.2.3.4:53"]),
        "udp:1.2.3.4:53",
    );
    assert_rejected(
        agent().args(["--probe", "gateway=icmp:1.2.3.4"]),
        "built-in",
    );
    assert_rejected(
        agent().args(["--probe", "a=icmp:1.2.3.4", "--probe", "a=icmp:1.2.3.5"]),
        "used twice",
    );
    assert_rejected(
        agent().args(["--probe-file", "/nonexistent/probes"]),
        "--probe-file",
    );
    assert_rejected(agent().args(["--probe-timeout", "1h"]), "--probe-timeout");
    // Durations that would overflow `Instant + Duration`, or are zero.
    assert_rejected(
        agent().args(["--resync-interval", "99999999999999s"]),
        "between 1ms and 24h",
    );
    assert_rejected(agent().args(["--wiring-grace", "0s"]), "--wiring-grace");
    assert_rejected(
        agent().args(["--kube-unhealthy-threshold", "1e12"]),
        "--kube-unhealthy-threshold",
    );
    assert_rejected(agent().args(["--max-pod-series", "0"]), "--max-pod-series");
    assert_rejected(
        agent().args(["--test-fault", "explode:monitor"]),
        "--test-fault",
    );
    assert_rejected(agent().args(["--cni", "flannel"]), "--cni");
    assert_rejected(agent().args(["--pod-source", "everywhere"]), "--pod-source");
    assert_rejected(
        agent().args(["--control-plane-checks", "sometimes"]),
        "--control-plane-checks",
    );
    assert_rejected(
        agent().args(["--control-plane-relist", "10ms"]),
        "--control-plane-relist",
    );
    assert_rejected(
        agent().args([
            "--pod-source",
            "node",
            "--interface-prefix",
            "cali",
            "--control-plane-checks",
            "auto",
        ]),
        "--control-plane-checks needs the Kubernetes pod source",
    );
    assert_rejected(
        agent()
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(["--pod-source", "kubernetes"]),
        "--kubeconfig",
    );
    assert_rejected(
        agent().args(["--kubeconfig", "/nonexistent/kubeconfig"]),
        "--kubeconfig",
    );
    assert_rejected(
        agent().args(["--pod-source", "node", "--cni", "generic"]),
        "--interface-prefix",
    );
}

#[test]
fn a_bad_probe_file_names_its_line() {
    let dir = std::env::temp_dir().join(format!("podnet-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("probes");
    std::fs::write(&file, "# targets\nicmp:198.51.100.1\nnot-a-probe\n").unwrap();
    assert_rejected(agent().arg("--probe-file").arg(&file), "line 3");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn environment_variables_are_validated_too() {
    assert_rejected(agent().env("PODNET_LISTEN", "1.2.3.4"), "--listen");
    assert_rejected(
        agent().env("PODNET_RESYNC_INTERVAL", "soon"),
        "--resync-interval",
    );
    assert_rejected(agent().env("NODE_NAME", " "), "--node-name");
}

#[test]
fn enum_errors_list_the_allowed_values() {
    assert_rejected(
        agent().args(["--pod-source", "everywhere"]),
        "[possible values: auto, kubernetes, node]",
    );
    assert_rejected(
        agent().env("PODNET_LOG_FORMAT", "xml"),
        "[possible values: text, json]",
    );
}

#[test]
fn probe_timeout_longer_than_the_interval_is_rejected() {
    assert_rejected(
        agent().args(["--probe-timeout", "15s", "--probe-interval", "10s"]),
        "--probe-timeout (15s) must not exceed --probe-interval (10s)",
    );
    assert_rejected(
        agent()
            .env("PODNET_PROBE_TIMEOUT", "3s")
            .env("PODNET_PROBE_INTERVAL", "2s"),
        "--probe-interval",
    );
}

/// Flags that parse, then fail at the pod source check (after the probe check): which error
/// comes tells whether the probe check ran, i.e. what the values meant.
fn node_mode_without_prefix(cmd: &mut Command) -> &mut Command {
    cmd.args([
        "--probe-timeout",
        "15s",
        "--pod-source",
        "node",
        "--cni",
        "generic",
    ])
}

#[test]
fn no_probes_takes_the_usual_boolean_spellings() {
    for yes in ["1", "true", "yes", "on", "TRUE"] {
        // Probes off: the timeout is not checked; the next check fails.
        assert_rejected(
            node_mode_without_prefix(agent().env("PODNET_NO_PROBES", yes)),
            "--interface-prefix",
        );
    }
    for no in ["0", "false", "no", "off"] {
        assert_rejected(
            node_mode_without_prefix(agent().env("PODNET_NO_PROBES", no)),
            "--probe-timeout",
        );
    }
    assert_rejected(agent().env("PODNET_NO_PROBES", "maybe"), "--no-probes");
}

#[test]
fn compound_durations_are_accepted() {
    // 1m30s parses (the failure is the later pod source check, not the duration).
    assert_rejected(
        agent().args([
            "--wiring-grace",
            "1m30s",
            "--pod-source",
            "node",
            "--cni",
            "generic",
        ]),
        "--interface-prefix",
    );
    assert_rejected(agent().args(["--wiring-grace", "1m30"]), "--wiring-grace");
}

#[test]
fn probe_scoping_flags_are_documented_and_bad_ones_exit_2_with_one_line() {
    let out = agent().arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env) in [
        ("--builtin-probes", "PODNET_BUILTIN_PROBES"),
        (
            "--probe-exclude-namespaces",
            "PODNET_PROBE_EXCLUDE_NAMESPACES",
        ),
        ("--probe-selector", "PODNET_PROBE_SELECTORS"),
        ("--policy-engine", "PODNET_POLICY_ENGINE"),
    ] {
        assert!(
            help.contains(flag) && help.contains(&format!("env: {env}")),
            "{flag}"
        );
    }
    assert_rejected(
        agent().args(["--builtin-probes", "gatway"]),
        "[possible values: gateway, node, host-to-pod, none]",
    );
    assert_rejected(
        agent().args(["--builtin-probes", "none,node"]),
        "'none' cannot be combined",
    );
    assert_rejected(
        agent().args([
            "--probe",
            "dns=tcp:10.96.0.10:53",
            "--probe-selector",
            "dns=app in (a",
        ]),
        "invalid label selector 'app in (a'",
    );
    assert_rejected(
        agent().args(["--probe-selector", "dns=app=web"]),
        "no --probe or --probe-file target",
    );
    assert_rejected(
        agent()
            .args(["--probe", "dns=tcp:10.96.0.10:53"])
            .env("PODNET_PROBE_SELECTORS", "dns=app=web;dns=tier=db"),
        "has a selector already",
    );
    assert_rejected(
        agent().env("PODNET_PROBE_EXCLUDE_NAMESPACES", "ok,Not_OK"),
        "'Not_OK' is not a namespace name",
    );
    assert_rejected(
        agent().env("PODNET_POLICY_ENGINE", "cilium"),
        "[possible values: auto, calico, other, none]",
    );
    let dir = std::env::temp_dir().join(format!("podnet-cli-scoping-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("probes");
    std::fs::write(
        &file,
        "web=icmp:192.0.2.1 selector=app=web\nx=icmp:192.0.2.2 selector=a in (\n",
    )
    .unwrap();
    let result = std::panic::catch_unwind(|| {
        assert_rejected(
            agent().arg("--probe-file").arg(&file),
            "line 2: invalid label selector",
        );
    });
    std::fs::remove_dir_all(&dir).unwrap();
    result.unwrap();
}

#[test]
fn kong_selector_is_documented_and_a_bad_one_exits_2_with_one_line() {
    let out = agent().arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("--kong-selector") && help.contains("env: PODNET_KONG_SELECTOR"),
        "{help}"
    );
    assert_rejected(
        agent().args(["--kong-selector", "app in (kong"]),
        "invalid label selector 'app in (kong'",
    );
    assert_rejected(
        agent().env("PODNET_KONG_SELECTOR", "=kong"),
        "invalid label selector '=kong'",
    );
}
