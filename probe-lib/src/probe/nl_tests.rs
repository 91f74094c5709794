use super::*;

/// An `ifinfomsg` followed by these `(type, value)` attributes.
fn ifinfo(attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut p = vec![0u8; 16];
    for (kind, value) in attrs {
        let len = 4 + value.len() as u16;
        p.extend(len.to_ne_bytes());
        p.extend(kind.to_ne_bytes());
        p.extend(*value);
        p.resize(p.len().next_multiple_of(4), 0);
    }
    p
}

#[test]
fn the_mtu_attribute_is_found_and_malformed_attributes_are_not_read() {
    let name: &[u8] = b"eth0\0";
    let mtu = 1500u32.to_ne_bytes();
    assert_eq!(link_mtu(&ifinfo(&[(3, name), (4, &mtu)])), Some(1500));
    assert_eq!(link_mtu(&ifinfo(&[(3, name)])), None);
    assert_eq!(link_mtu(&ifinfo(&[(4, &[1, 2])])), None, "short value");
    assert_eq!(link_mtu(&[0u8; 10]), None, "short header");
    let mut bad = ifinfo(&[(4, &mtu)]);
    bad[16] = 200; // a length beyond the message
    assert_eq!(link_mtu(&bad), None);
    let mut zero = ifinfo(&[(3, name), (4, &mtu)]);
    zero[16] = 0; // a zero length would loop forever
    zero[17] = 0;
    assert_eq!(link_mtu(&zero), None);
}

/// `rtmsg` bytes: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
fn rtmsg(family: u8, dst_len: u8, table: u8, kind: u8) -> [u8; 12] {
    [family, dst_len, 0, 0, table, 4, 0, kind, 0, 0, 0, 0]
}

#[test]
fn only_main_table_unicast_defaults_of_the_family_count() {
    let main = crate::host::MAIN_TABLE as u8;
    assert!(is_default_route(
        &rtmsg(AF_INET, 0, main, RTN_UNICAST),
        AF_INET
    ));
    assert!(is_default_route(
        &rtmsg(AF_INET6, 0, main, RTN_UNICAST),
        AF_INET6
    ));
    // Another family, a prefix, another table, a blackhole (type 6), a short message.
    assert!(!is_default_route(
        &rtmsg(AF_INET6, 0, main, RTN_UNICAST),
        AF_INET
    ));
    assert!(!is_default_route(
        &rtmsg(AF_INET, 1, main, RTN_UNICAST),
        AF_INET
    ));
    assert!(!is_default_route(
        &rtmsg(AF_INET, 0, 100, RTN_UNICAST),
        AF_INET
    ));
    assert!(!is_default_route(&rtmsg(AF_INET, 0, main, 6), AF_INET));
    assert!(!is_default_route(&[AF_INET, 0, 0], AF_INET));
}

/// In a namespace of its own (a thread that unshared; gone with the thread, nothing to
/// clean up), `ip -batch` these commands, then run `f` there.
fn in_fresh_netns<R: Send + 'static>(
    commands: Vec<String>,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (root?)");
        // `ip` forks from this thread, so it runs in this thread's namespace.
        let mut child = std::process::Command::new("ip")
            .args(["-batch", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = io::BufWriter::new(child.stdin.take().unwrap());
            for c in &commands {
                writeln!(stdin, "{c}").unwrap();
            }
        }
        assert!(child.wait().unwrap().success());
        f()
    })
    .join()
    .unwrap()
}

/// The kernel's own link message carries the MTU where `link_mtu` looks for it.
#[test]
fn the_pod_interface_mtu_is_read_from_the_kernel() {
    let cmds = vec![
        "link add eth0 mtu 1400 type veth peer name eth1".to_owned(),
        "link set eth1 up".to_owned(),
        "link set eth0 up".to_owned(),
    ];
    let side = in_fresh_netns(cmds, || {
        let out = std::process::Command::new("ip")
            .args(["-o", "link", "show", "eth0"])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&out.stdout);
        let index: u32 = out.split(':').next().unwrap().trim().parse().unwrap();
        BlockingNetlink::open().and_then(|mut nl| nl.pod_side(index, true, false))
    })
    .unwrap();
    assert_eq!(side.mtu, Some(1400));
    assert!(side.interface_up);
}

/// A pod namespace with 100,000 routes: the default route is found without reading them;
/// without a default route the read gives up after `MAX_MESSAGES`, quickly either way.
#[test]
fn a_crowded_route_table_is_not_read() {
    let mut cmds = vec![
        "link add eth0 type veth peer name eth1".to_owned(),
        "link set eth1 up".to_owned(),
        "link set eth0 up".to_owned(),
    ];
    cmds.extend((0..100_000u32).map(|i| {
        format!(
            "route add 10.{}.{}.{}/32 dev eth0",
            100 + (i >> 16),
            (i >> 8) & 0xff,
            i & 0xff
        )
    }));
    let (with, without) = in_fresh_netns(cmds, || {
        // `ip -o link show eth0`: "N: eth0: <…".
        let out = std::process::Command::new("ip")
            .args(["-o", "link", "show", "eth0"])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&out.stdout);
        let index: u32 = out.split(':').next().unwrap().trim().parse().unwrap();
        let read = || {
            let started = Instant::now();
            let side = BlockingNetlink::open().and_then(|mut nl| nl.pod_side(index, true, false));
            (side.map(|s| s.default_route_v4), started.elapsed())
        };
        let status = std::process::Command::new("ip")
            .args(["route", "add", "default", "dev", "eth0"])
            .status()
            .unwrap();
        assert!(status.success());
        let with = read();
        let status = std::process::Command::new("ip")
            .args(["route", "del", "default"])
            .status()
            .unwrap();
        assert!(status.success());
        (with, read())
    });
    assert_eq!(with.0.unwrap(), Some(true));
    assert!(with.1 < REQUEST_DEADLINE, "{:?}", with.1);
    let err = without.0.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert!(without.1 < REQUEST_DEADLINE * 3, "{:?}", without.1);
}
