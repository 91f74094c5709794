//! Property tests of the command line: every flag's value parser with hostile and mutated
//! values (through `Args::try_parse_from`, the path the environment variables take too:
//! clap hands an env value to the same parser; the environment itself is process-wide, so
//! these tests pass values as `--flag=VALUE`), durations as Go and Kubernetes write them,
//! and the one-line error the agent prints. Plus the bearer token reader of the HTTP side.

use std::time::Duration;

use clap::error::ErrorKind;
use proptest::prelude::*;

use super::*;

/// `ci` cases in `cargo test`; `PROPTEST_CASES` (the long runs) overrides it.
fn cases(ci: u32) -> proptest::test_runner::Config {
    let mut c = proptest::test_runner::Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = ci;
    }
    c.max_shrink_iters = 4096;
    c
}

/// Every flag that takes a value on the command line, with a valid one (`--secure-metrics`
/// and `--no-probes` take none; their variables are clap's `BoolishValueParser`).
const FLAGS: &[(&str, &str)] = &[
    ("listen", "192.0.2.10:9710"),
    ("status-listen", "127.0.0.1:9711"),
    ("http-header-timeout", "5s"),
    ("http-request-timeout", "10s"),
    ("http-max-connections", "512"),
    ("node-name", "node-a"),
    ("pod-source", "kubernetes"),
    ("cni", "calico"),
    ("remote-blocks", "off"),
    ("calico-felix-health", "127.0.0.1:9099"),
    ("calico-felix-metrics", "off"),
    ("calico-felix-interval", "10s"),
    ("interface-prefix", "cali"),
    ("wiring-grace", "1m30s"),
    ("kube-watch-timeout", "60s"),
    ("kube-unhealthy-threshold", "60s"),
    ("resync-interval", "60s"),
    ("probe", "web=tcp:198.51.100.1:443,icmp:2001:db8::1"),
    ("probe-interval", "10s"),
    ("probe-timeout", "1s"),
    ("probe-failures", "2"),
    ("probe-concurrency", "32"),
    ("max-pod-series", "2000"),
    ("log-level", "info,podnet=debug"),
    ("log-format", "json"),
];

fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,30}",
        "[0-9.hms]{0,12}",
        "[\\PC\n\r\t\u{0}\u{202e}]{0,20}",
        Just("Usage: x\nFor more information".to_owned()),
        (1usize..5000).prop_map(|n| "9".repeat(n)),
    ]
}

/// Mutate a valid value: cut, repeat, insert a character.
fn mutated(valid: &str, cut: usize, insert: char) -> String {
    let mut chars: Vec<char> = valid.chars().collect();
    let at = cut % (chars.len() + 1);
    match cut % 3 {
        0 => chars.truncate(at),
        1 => chars.insert(at, insert),
        _ => chars.extend(valid.chars()),
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(cases(256))]

    /// Any value for any flag: parsed or refused, never a panic; a refusal prints as one
    /// line (what `kubectl logs` shows).
    #[test]
    fn props_flags_hostile_values(
        flag in 0..FLAGS.len(),
        raw in hostile_value(),
        cut in any::<usize>(),
        insert in any::<char>(),
    ) {
        let (name, valid) = FLAGS[flag];
        for value in [raw, mutated(valid, cut, insert)] {
            let arg = format!("--{name}={value}");
            match Args::try_parse_from(["podnet-agent", arg.as_str()]) {
                Ok(a) => {
                    // Accepted durations are inside the bounds every flag shares.
                    for d in [a.wiring_grace, a.resync_interval, a.probe_interval, a.probe_timeout] {
                        prop_assert!((MIN_DURATION..=MAX_DURATION).contains(&d));
                    }
                }
                Err(e) => {
                    prop_assert!(!matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion));
                    let line = crate::one_line(&e.render().to_string());
                    prop_assert!(!line.is_empty() && !line.contains('\n'), "{:?}", line);
                }
            }
        }
    }

    /// The valid value of every flag parses (a generator sanity check, and a guard that a
    /// flag keeps accepting what the docs show).
    #[test]
    fn props_flags_valid_values(flag in 0..FLAGS.len()) {
        let (name, valid) = FLAGS[flag];
        let arg = format!("--{name}={valid}");
        prop_assert!(Args::try_parse_from(["podnet-agent", arg.as_str()]).is_ok(), "{}", arg);
    }

    /// Durations print and parse back; Go-style parts add up; whatever parses is in bounds.
    #[test]
    fn props_durations(
        ms in 1..=86_400_000u64,
        parts in (0..30u64, 0..90u64, 0..90u64, 0..1500u64),
        raw in hostile_value(),
    ) {
        let d = Duration::from_millis(ms);
        prop_assert_eq!(parse_duration(&humantime(d)), Ok(d));
        let (h, m, s, x) = parts;
        let text = format!("{h}h{m}m{s}s{x}ms");
        let want = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + x);
        match parse_duration(&text) {
            Ok(got) => prop_assert_eq!(got, want),
            Err(_) => prop_assert!(want < MIN_DURATION || want > MAX_DURATION, "{} refused", text),
        }
        if let Ok(d) = parse_duration(&raw) {
            prop_assert!((MIN_DURATION..=MAX_DURATION).contains(&d));
        }
    }

    /// `--probe` lists split on commas into exactly the targets of their parts.
    #[test]
    fn props_probe_lists(ports in proptest::collection::vec(1..=u16::MAX, 1..6)) {
        let specs: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("t{i}=tcp:198.51.100.{}:{p}", i + 1))
            .collect();
        let arg = format!("--probe={}", specs.join(","));
        let a = Args::try_parse_from(["podnet-agent", arg.as_str()]).unwrap();
        let want: Vec<Target> = specs.iter().map(|s| s.parse().unwrap()).collect();
        prop_assert_eq!(a.probes, want);
    }

    /// `Authorization` values: a bearer token comes back exactly; anything else is none or
    /// a non-empty token, never a panic.
    #[test]
    fn props_bearer_tokens(
        scheme in prop_oneof![Just("Bearer".to_owned()), Just("bearer".to_owned()), Just("Basic".to_owned()), "[A-Za-z]{0,8}"],
        token in "[A-Za-z0-9._~+/=-]{1,200}",
        raw in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        use hyper::HeaderMap;
        use hyper::header::{AUTHORIZATION, HeaderValue};
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(&format!("{scheme} {token}")).unwrap());
        let want = scheme.eq_ignore_ascii_case("bearer").then_some(token.as_str());
        prop_assert_eq!(crate::http::bearer(&h), want);
        if let Ok(v) = HeaderValue::from_bytes(&raw) {
            h.insert(AUTHORIZATION, v);
            prop_assert!(crate::http::bearer(&h).is_none_or(|t| !t.is_empty()));
        }
    }
}
