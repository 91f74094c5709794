//! The commands in `docs/runbooks.md` that can run on a simulated Calico node, run there, and
//! checked to print what the runbook says they print. Each command is taken from the runbook
//! text itself (with its `<placeholders>` filled in), so a command edited in the runbook is the
//! command tested; one that disappears from the runbook fails the test.
//!
//! Not covered (no such thing on the simulated node): `crictl`, `calicoctl`, `conntrack`, and
//! `kubectl` and `curl` to the agent except in `PodnetPodStuckOnVanishedPod`'s section, whose
//! commands run against the real agent and the API double; the runbook's own text is checked
//! for the flags that make the others right (`crictl pods --name` anchored, `calicoctl` with a
//! namespace).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use podnet_testbed::cluster::{Cluster, api_pod};
use podnet_testbed::connects::keep_connecting;
use podnet_testbed::kong::{self, kong_admin};
use podnet_testbed::simnode::{NODE_IPV4, OUTSIDE_IPV4, PodSpec, SimNode, SimPod};

fn runbook() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/runbooks.md");
    std::fs::read_to_string(path).expect("docs/runbooks.md")
}

/// The runbook line that starts with `prefix` (inside a ```sh block), without its comment.
fn command(prefix: &str) -> String {
    let text = runbook();
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("docs/runbooks.md has no command starting {prefix:?}"));
    // Comments start at "  #" (a `#` inside a command, e.g. a regex, has no blank before).
    line.split("  #").next().unwrap().trim().to_owned()
}

/// Output of a shell command run in `netns` (`ip netns exec NETNS sh -c CMD`).
struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn sh_in(netns: &str, cmd: &str) -> Out {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "sh", "-c", cmd])
        .output()
        .expect("ip netns exec");
    let o = Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("$ {cmd}\n{}{}", o.stdout, o.stderr);
    o
}

fn fill(cmd: &str, pod: &SimPod) -> String {
    cmd.replace("<ip>", &pod.ipv4.to_string())
        .replace("<interface>", &pod.interface)
        .replace("<namespace>", &pod.namespace)
        .replace("<pod>", &pod.name)
        .replace("<node-ip>", &NODE_IPV4.to_string())
        .replace("<target-ip>", &OUTSIDE_IPV4.to_string())
}

#[test]
fn route_missing_commands_print_what_the_runbook_says() {
    let node = SimNode::new(2, &[]).unwrap();
    let ns = node.node_netns();
    let pod = node.pod(0).clone();

    // The interface name from namespace and pod name.
    let name = sh_in(ns, &fill(&command("echo \"cali$("), &pod));
    assert_eq!(name.stdout.trim(), pod.interface);

    // Healthy: the route is there, the interface UP, its peer's namespace found by netnsid.
    let show = fill(&command("ip route show <ip>"), &pod);
    let o = sh_in(ns, &show);
    assert!(
        o.stdout
            .contains(&format!("dev {} scope link", pod.interface)),
        "{}",
        o.stdout
    );
    let o = sh_in(ns, &fill(&command("ip link show <interface>"), &pod));
    assert!(
        o.stdout.contains(",UP,") || o.stdout.contains("<UP,"),
        "{}",
        o.stdout
    );
    // `link-netns NAME` when the peer's namespace is named (iproute2 resolves the id),
    // `link-netnsid N` otherwise; either leads to the pod's namespace.
    let o = sh_in(ns, &fill(&command("ip -d link show <interface>"), &pod));
    let after = |key: &str| {
        o.stdout
            .split_whitespace()
            .skip_while(|w| *w != key)
            .nth(1)
            .map(str::to_owned)
    };
    let o_list = sh_in(ns, &command("ip netns list"));
    let listed = o_list
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(pod.netns.as_str()))
        .unwrap_or_else(|| panic!("{} not in {}", pod.netns, o_list.stdout))
        .to_owned();
    match (after("link-netns"), after("link-netnsid")) {
        (Some(name), _) => assert_eq!(name, pod.netns),
        (None, Some(id)) => assert!(listed.contains(&format!("(id: {id})")), "{listed}"),
        (None, None) => panic!("neither link-netns nor link-netnsid: {}", o.stdout),
    }
    assert!(
        listed.contains("(id: "),
        "ip netns list shows the id: {listed}"
    );

    // The route goes: `ip route show` prints nothing and `ip route get` fails with
    // "Invalid argument" because only the IPAM block's blackhole matches.
    node.delete_route(0, pod.ipv4.into()).unwrap();
    let o = sh_in(ns, &show);
    assert_eq!(o.stdout.trim(), "", "ip route show must print nothing");
    let o = sh_in(ns, &fill(&command("ip route get <ip>"), &pod));
    assert!(!o.ok);
    assert!(
        o.stderr.contains("RTNETLINK answers: Invalid argument"),
        "{}",
        o.stderr
    );
    let runbook = runbook();
    assert!(runbook.contains("\"RTNETLINK answers: Invalid argument\""));

    // From inside the pod the node does not answer (`ip netns exec` nests fine).
    let ping = fill(
        &command("ip netns exec <cni-…> ping -c1 -W1 <node-ip>").replace("<cni-…>", &pod.netns),
        &pod,
    );
    let o = sh_in(ns, &ping);
    assert!(
        !o.ok,
        "ping from the pod must fail while its route is missing"
    );
    node.restore_routes(0).unwrap();
    let o = sh_in(ns, &ping);
    assert!(o.ok, "ping from the pod works again once the route is back");
}

#[test]
fn forwarding_and_egress_commands_print_what_the_runbook_says() {
    let node = SimNode::new(1, &[]).unwrap();
    let ns = node.node_netns();
    let pod = node.pod(0).clone();

    // `sysctl net.ipv4.ip_forward net.ipv6.conf.all.forwarding` shows forwarding off.
    let sysctl = command("sysctl net.ipv4.ip_forward");
    assert!(
        sh_in(ns, &sysctl)
            .stdout
            .contains("net.ipv4.ip_forward = 1")
    );
    node.set_forwarding(false).unwrap();
    assert!(
        sh_in(ns, &sysctl)
            .stdout
            .contains("net.ipv4.ip_forward = 0")
    );
    node.set_forwarding(true).unwrap();
    // The reasons table's `sysctl net.ipv4.conf.<interface>.proxy_arp`.
    let proxy_arp = fill("sysctl net.ipv4.conf.<interface>.proxy_arp", &pod);
    assert!(runbook().contains("`sysctl net.ipv4.conf.<interface>.proxy_arp`"));
    assert!(sh_in(ns, &proxy_arp).stdout.trim().ends_with("= 1"));
    node.set_proxy_arp(0, false).unwrap();
    assert!(sh_in(ns, &proxy_arp).stdout.trim().ends_with("= 0"));
    node.set_proxy_arp(0, true).unwrap();

    // `iptables-save -c | grep -E 'DROP|REJECT' | grep -v '^\[0:0\]'`: shows the rule that
    // dropped packets, hides the one that never matched.
    let table = "podnet-runbook";
    assert!(
        sh_in(
            ns,
            &format!(
                "iptables -N {table} && iptables -I FORWARD -j {table} && \
                 iptables -A {table} -d {OUTSIDE_IPV4} -j DROP && \
                 iptables -A {table} -d 203.0.113.1 -j REJECT"
            )
        )
        .ok
    );
    let o = sh_in(&pod.netns, &format!("ping -c1 -W1 {OUTSIDE_IPV4}"));
    assert!(!o.ok, "the DROP rule drops the pod's ping");
    let filter = command("iptables-save -c | grep -E 'DROP|REJECT'");
    let o = sh_in(ns, &filter);
    let lines: Vec<&str> = o.stdout.lines().filter(|l| l.contains(table)).collect();
    assert!(
        lines.iter().any(|l| l.contains("-j DROP")),
        "the rule that dropped is listed: {}",
        o.stdout
    );
    assert!(
        !lines.iter().any(|l| l.contains("-j REJECT")),
        "a rule that never matched is filtered out: {}",
        o.stdout
    );
    // `ip route get <target-ip>`: the node's way out.
    let o = sh_in(ns, &fill(&command("ip route get <target-ip>"), &pod));
    assert!(
        o.ok && o.stdout.contains(&OUTSIDE_IPV4.to_string()),
        "{}",
        o.stdout
    );
}

#[test]
fn orphan_commands_list_every_pod_route_and_interface() {
    let node = SimNode::new(2, &[]).unwrap();
    let ns = node.node_netns();
    let routes = sh_in(ns, &command("ip route show proto boot | grep cali"));
    let links = sh_in(ns, &command("ip -d link show type veth | grep -A1 cali"));
    for pod in node.pods() {
        assert!(routes.stdout.contains(&pod.interface), "{}", routes.stdout);
        assert!(links.stdout.contains(&pod.interface), "{}", links.stdout);
    }
}

#[test]
fn commands_that_cannot_run_here_carry_the_flags_that_make_them_right() {
    let text = runbook();
    // `crictl pods --name` is a regular expression: `web-1` also matches `web-10`.
    for l in text.lines().filter(|l| l.contains("crictl pods")) {
        assert!(l.contains("--name '^<pod>$'"), "unanchored crictl: {l}");
    }
    // calicoctl's namespaced resources need -n or -A (else only `default`).
    for l in text
        .lines()
        .filter(|l| l.contains("calicoctl get") && l.contains(" networkpolicy"))
    {
        assert!(
            l.contains(" -n ") || l.contains(" -A"),
            "calicoctl without -n: {l}"
        );
    }
    // The old filter that filtered nothing.
    assert!(!text.contains("grep -v ' 0:0\\]'"));
}

#[test]
fn mtu_mismatch_commands_show_the_two_mtus_and_lose_only_the_large_ping() {
    let node = SimNode::new(1, &[]).unwrap();
    let ns = node.node_netns();
    let pod = node.pod(0).clone();
    let in_pod = |prefix: &str| fill(&command(prefix).replace("<cni-…>", &pod.netns), &pod);
    let large = in_pod("ip netns exec <cni-…> ping -M do -s 1472");
    let small = in_pod("ip netns exec <cni-…> ping -M do -s 1372");
    assert!(
        sh_in(ns, &large).ok,
        "a healthy pod gets full-size packets through"
    );

    node.set_host_mtu(0, 1400).unwrap();
    let host = sh_in(ns, &fill(&command("ip link show <interface>"), &pod));
    assert!(host.stdout.contains("mtu 1400"), "{}", host.stdout);
    let eth0 = sh_in(ns, &in_pod("ip netns exec <cni-…> ip link show eth0"));
    assert!(eth0.stdout.contains("mtu 1500"), "{}", eth0.stdout);
    assert!(!sh_in(ns, &large).ok, "the full-size ping is lost");
    assert!(
        sh_in(ns, &small).ok,
        "a ping that fits the host side passes"
    );

    node.set_host_mtu(0, 1500).unwrap();
    assert!(sh_in(ns, &large).ok, "and passes again once the MTUs agree");
}

#[test]
fn the_host_policy_command_shows_the_rule_that_drops_pod_to_node_traffic() {
    let node = SimNode::new(1, &[]).unwrap();
    let ns = node.node_netns();
    let pod = node.pod(0).clone();
    let list = command("iptables -L INPUT -v -n | grep -iE 'DROP|REJECT'");
    assert!(!sh_in(ns, &list).stdout.contains("DROP"), "nothing yet");
    // What a host policy does (the rule lives in the simulated node's namespace only).
    assert!(sh_in(ns, "iptables -I INPUT -p icmp -j DROP").ok);
    let ping = format!("ping -c1 -W1 {NODE_IPV4}");
    assert!(
        !sh_in(&pod.netns, &ping).ok,
        "the pod cannot reach the node"
    );
    let o = sh_in(ns, &list);
    let line = o
        .stdout
        .lines()
        .find(|l| l.contains("DROP"))
        .unwrap_or_default();
    let packets: u64 = line
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(packets >= 1, "the rule and its counter: {}", o.stdout);
}

#[test]
fn stuck_on_vanished_pod_commands_name_the_stale_address_and_why() {
    let mut c = Cluster::new(2).unwrap();
    let ns = c.node.node_netns().to_owned();
    let kong = c.node.pod(0).clone();
    let victim = c.node.pod(1).clone();
    // Kong as its chart deploys it: only such pods are asked for the hint.
    let mut kong_pod = api_pod(&kong);
    kong_pod["metadata"]["labels"] = serde_json::json!({"app.kubernetes.io/name": "kong"});
    c.api.apply(kong_pod).unwrap();
    c.api.delete(&victim.namespace, &victim.name).unwrap();
    c.node.remove_pod(1).unwrap();
    let stale = SocketAddr::from((victim.ipv4, 8080));
    let ip = victim.ipv4.to_string();
    let agent = c
        .agent(
            env!("CARGO_BIN_EXE_podnet-agent").as_ref(),
            &["--probe-interval", "1s", "--probe-timeout", "500ms"],
        )
        .unwrap();
    let _admin = kong_admin(&kong.netns, Arc::new(AtomicBool::new(false))).unwrap();
    let down = Arc::new(Mutex::new(kong::db_status(false)));
    let _admin_tls = kong::kong_admin_tls(&kong.netns, down).unwrap();
    let _client = keep_connecting(&kong.netns, vec![stale]);
    // Kong's hint comes a round after the address is first reported (the agent asks Kong's
    // Admin API about a client it already tracks): the runbook's commands are run once both
    // are there, else its /status output races the hint.
    agent
        .wait_status(
            "the stale address reported with Kong's hint",
            Duration::from_secs(40),
            |s| {
                s["unanswered_connects"].as_array().is_some_and(|l| {
                    l.iter().any(|c| {
                        c["destination"] == stale.to_string()
                            && c["diagnosis"]
                                .as_str()
                                .is_some_and(|d| d.contains("Kong cannot reach its database"))
                    })
                })
            },
        )
        .unwrap();
    let in_kong = |prefix: &str| {
        command(prefix)
            .replace("<cni-…>", &kong.netns)
            .replace("<ip>", &ip)
    };
    let kubectl = |prefix: &str| {
        format!(
            "KUBECONFIG={} {}",
            c.kubeconfig.display(),
            command(prefix).replace("<ip>", &ip)
        )
    };

    // The agent's /status on the node names the client, the destination and the class.
    let o = sh_in(
        &ns,
        &command("curl -s http://127.0.0.1:9711/status | jq '.unanswered"),
    );
    assert!(o.ok, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("one JSON object");
    assert_eq!(v["destination"], stale.to_string().as_str(), "{v:#}");
    assert_eq!(v["pod"], kong.name.as_str(), "{v:#}");
    assert!(
        v["diagnosis"]
            .as_str()
            .unwrap_or("")
            .contains("Kong cannot reach its database"),
        "{v:#}"
    );
    // No pod has the address: kubectl finds none.
    let get = kubectl("kubectl get pods -A -o wide --field-selector status.podIP=");
    let o = sh_in(&ns, &get);
    assert!(o.ok && o.stdout.trim().is_empty(), "{}", o.stdout);
    assert!(o.stderr.contains("No resources found"), "{}", o.stderr);
    // The client's own sockets: connects to the stale address, in SYN-SENT.
    let o = sh_in(
        &ns,
        &in_kong("ip netns exec <cni-…> ss -tni state syn-sent"),
    );
    assert!(o.stdout.contains(&stale.to_string()), "{}", o.stdout);
    // Kong says why: its database is unreachable.
    let o = sh_in(
        &ns,
        &in_kong("ip netns exec <cni-…> curl -s http://127.0.0.1:8001/status"),
    );
    assert!(o.stdout.contains("\"reachable\": false"), "{}", o.stdout);
    // The same over TLS, where Kong's chart has its only admin listen.
    let o = sh_in(
        &ns,
        &in_kong("ip netns exec <cni-…> curl -sk https://127.0.0.1:8444/status"),
    );
    assert!(o.stdout.contains("\"reachable\": false"), "{}", o.stdout);

    // A pod gets the address: kubectl names it.
    let i = c
        .node
        .add_pod(PodSpec::named("team", "reborn").with_ipv4(victim.ipv4))
        .unwrap();
    c.api.apply(api_pod(c.node.pod(i))).unwrap();
    let o = sh_in(&ns, &get);
    assert!(
        o.ok && o.stdout.contains("reborn"),
        "{}{}",
        o.stdout,
        o.stderr
    );
}
