//! Property tests of what the probe path parses: `--probe` specifications and probe files
//! (operator input, echoed in errors), and ICMP replies (a hostile pod or peer controls
//! them). Never a panic; specifications round-trip through their display form; a reply
//! counts only for exactly the probe it answers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;
use surge_ping::{IcmpPacket, Icmpv4Packet, Icmpv6Packet, PingIdentifier, PingSequence};

use super::driver::reply_matches;
use super::target::{Destination, Protocol, Target, parse_probe_file};
use crate::util::props::{cases, hostile_string, mutate, mutation};

fn unicast() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::from(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::from(Ipv6Addr::from(b))),
    ]
    // Mapped, not filtered: a million cases would exceed proptest's reject limit.
    .prop_map(|ip| {
        if ip.is_unspecified() || ip.is_multicast() {
            IpAddr::from([192, 0, 2, 1])
        } else {
            ip
        }
    })
}

fn target() -> impl Strategy<Value = Target> {
    (
        "[A-Za-z0-9_.:\\[\\]-]{1,64}",
        any::<bool>(),
        unicast(),
        1..=u16::MAX,
    )
        .prop_map(|(name, tcp, ip, port)| Target {
            // Not a built-in name (mapped, not filtered, like the addresses).
            name: if ["gateway", "node", "pod"].contains(&name.as_str()) {
                format!("x{name}")
            } else {
                name
            },
            protocol: if tcp { Protocol::Tcp } else { Protocol::Icmp },
            destination: Destination::Address(SocketAddr::new(ip, if tcp { port } else { 0 })),
            http: None,
            service: None,
        })
}

/// What any accepted specification must be.
fn check(t: &Target) {
    assert!((1..=64).contains(&t.name.len()), "{t:?}");
    assert!(
        t.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:[]".contains(c))
    );
    assert!(!["gateway", "node", "pod"].contains(&t.name.as_str()));
    let Destination::Address(sa) = t.destination else {
        panic!("a parsed target has an address: {t:?}")
    };
    assert!(!sa.ip().is_unspecified() && !sa.ip().is_multicast());
    assert_eq!(sa.port() == 0, t.protocol == Protocol::Icmp);
}

/// An IPv4 packet (as a raw socket reads it) carrying `icmp`; `ihl_words` below 5 is a lie
/// in the header (the header is 20 bytes all the same).
fn ipv4(src: Ipv4Addr, ihl_words: u8, icmp: &[u8]) -> Vec<u8> {
    let hl = usize::from(ihl_words.max(5)) * 4;
    let mut p = vec![0u8; hl];
    p[0] = 0x40 | ihl_words;
    p[2..4].copy_from_slice(&((hl + icmp.len()) as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 1;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&[192, 0, 2, 1]);
    p.extend_from_slice(icmp);
    p
}

fn echo(kind: u8, ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut e = vec![kind, 0, 0, 0];
    e.extend_from_slice(&ident.to_be_bytes());
    e.extend_from_slice(&seq.to_be_bytes());
    e.extend_from_slice(payload);
    e
}

proptest! {
    #![proptest_config(cases(512))]

    /// Every valid target prints as a specification that parses back to it, also with
    /// blanks around its parts.
    #[test]
    fn props_target_spec_round_trips(t in target(), pad in "[ \t]{0,2}") {
        let spec = t.to_string();
        prop_assert_eq!(spec.parse::<Target>(), Ok(t.clone()));
        let (name, body) = spec.split_once('=').unwrap();
        let padded = format!("{pad}{name}{pad}={pad}{body}{pad}");
        prop_assert_eq!(padded.parse::<Target>(), Ok(t));
    }

    /// Hostile strings and mutations of valid specifications: never a panic; anything
    /// accepted is a well-formed target.
    #[test]
    fn props_target_spec_hostile(
        t in target(),
        raw in hostile_string(),
        muts in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mutated = String::from_utf8_lossy(&mutate(t.to_string().into_bytes(), &muts)).into_owned();
        for s in [raw, mutated] {
            if let Ok(t) = s.parse::<Target>() {
                check(&t);
            }
        }
    }

    /// A probe file of valid lines, comments, blank lines and CRLF parses to its targets;
    /// one bad line is reported with its own line number.
    #[test]
    fn props_probe_file_lines(
        targets in proptest::collection::vec(target(), 0..8),
        comments in proptest::collection::vec(proptest::option::of("[ #a-z]{0,12}"), 8),
        crlf in any::<bool>(),
        bad_at in proptest::option::of(0..9usize),
    ) {
        let eol = if crlf { "\r\n" } else { "\n" };
        let mut lines = Vec::new();
        for (t, c) in targets.iter().zip(&comments) {
            if let Some(c) = c {
                lines.push(format!("# {c}"));
                lines.push(String::new());
            }
            lines.push(format!("  {t} # {}", c.as_deref().unwrap_or("")));
        }
        let bad_line = bad_at.map(|i| {
            let i = i.min(lines.len());
            lines.insert(i, "tcp:198.51.100.1".to_owned());
            i + 1
        });
        let text = lines.join(eol);
        match (parse_probe_file(&text), bad_line) {
            (Ok(got), None) => {
                prop_assert!(got.iter().all(|(_, selector)| selector.is_none()));
                let got: Vec<_> = got.into_iter().map(|(t, _)| t).collect();
                prop_assert_eq!(got, targets);
            }
            (Err(e), Some(line)) => prop_assert_eq!(e.line, line),
            (other, _) => prop_assert!(false, "{:?} for {:?}", other, text),
        }
    }

    /// ICMP echo replies and errors quoting our echo, as a raw socket reads them, mutated
    /// every way: decoding never panics, and a reply matches only the probe it names.
    #[test]
    fn props_icmp_replies(
        v6 in any::<bool>(),
        error in any::<bool>(),
        ident in any::<u16>(),
        seq in any::<u16>(),
        ihl in prop_oneof![Just(5u8), 0..16u8],
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        muts in proptest::collection::vec(mutation(), 0..4),
    ) {
        let target = Ipv4Addr::new(198, 51, 100, 7);
        let target6: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let buf = if v6 {
            if error {
                // Time exceeded quoting our echo request (IPv6 header, then the echo).
                let mut q = vec![0u8; 40];
                q[0] = 0x60;
                q[6] = 58;
                q[24..40].copy_from_slice(&target6.octets());
                q.extend(echo(128, ident, seq, &payload));
                let mut e = vec![3, 0, 0, 0, 0, 0, 0, 0];
                e.extend(q);
                e
            } else {
                echo(129, ident, seq, &payload)
            }
        } else if error {
            let quoted = ipv4(Ipv4Addr::new(192, 0, 2, 1), 5, &echo(8, ident, seq, &payload));
            let mut quoted = quoted;
            quoted[16..20].copy_from_slice(&target.octets());
            let mut e = vec![11, 0, 0, 0, 0, 0, 0, 0];
            e.extend(quoted);
            ipv4(Ipv4Addr::new(192, 0, 2, 254), ihl, &e)
        } else {
            ipv4(target, ihl, &echo(0, ident, seq, &payload))
        };
        let intact = muts.is_empty() && (v6 || ihl >= 5);
        let buf = mutate(buf, &muts);
        let decoded = if v6 {
            Icmpv6Packet::decode(&buf, target6).map(IcmpPacket::V6)
        } else {
            Icmpv4Packet::decode(&buf, socket2::Type::RAW, target, Ipv4Addr::new(192, 0, 2, 1))
                .map(IcmpPacket::V4)
        };
        let addr: IpAddr = if v6 { target6.into() } else { target.into() };
        let (ident, seq) = (PingIdentifier(ident), PingSequence(seq));
        match decoded {
            Ok(p) if intact => {
                prop_assert!(reply_matches(&p, addr, Some(ident), seq));
                prop_assert!(!reply_matches(&p, addr, Some(PingIdentifier(ident.0 ^ 1)), seq));
                prop_assert!(!reply_matches(&p, addr, Some(ident), PingSequence(seq.0 ^ 1)));
                prop_assert!(!reply_matches(&p, "192.0.2.99".parse().unwrap(), Some(ident), seq));
            }
            Err(e) if intact => prop_assert!(false, "an intact reply did not decode: {}", e),
            _ => {}
        }
    }
}
