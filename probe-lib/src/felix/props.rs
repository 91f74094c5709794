//! Property tests of the felix answer readers: the status line, the body split and the
//! Prometheus text sample lookup. felix is a local peer, but a broken or impersonated one
//! must not crash or mislead the agent.

use proptest::prelude::*;

use super::parse::{body, health, sample, status_code};
use crate::util::props::{cases, hostile_string, mutate, mutation};

fn header_lines() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec("[A-Za-z-]{1,12}: [ -~]{0,30}", 0..5)
}

proptest! {
    #![proptest_config(cases(512))]

    /// A well-formed answer gives back its code and its body exactly; any mutation of it
    /// gives some answer or none, never a panic.
    #[test]
    fn props_answer_status_and_body(
        minor in 0..2u8,
        code in 100..600u16,
        reason in "[A-Za-z ]{0,20}",
        headers in header_lines(),
        content in proptest::collection::vec(any::<u8>(), 0..200),
        muts in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut answer = format!("HTTP/1.{minor} {code} {reason}\r\n").into_bytes();
        for h in &headers {
            answer.extend_from_slice(h.as_bytes());
            answer.extend_from_slice(b"\r\n");
        }
        answer.extend_from_slice(b"\r\n");
        answer.extend_from_slice(&content);
        prop_assert_eq!(status_code(&answer), Some(code));
        prop_assert_eq!(body(&answer), Some(&content[..]));
        prop_assert_eq!(health(code).is_some(), [200, 204, 503].contains(&code));
        let bad = mutate(answer, &muts);
        let _ = status_code(&bad).map(health);
        if let Some(b) = body(&bad) {
            prop_assert!(b.len() <= bad.len() - 4);
        }
    }

    /// A sample is found by its exact name among comments, longer names, labelled series
    /// and noise; only a finite, non-negative value counts.
    #[test]
    fn props_sample_lookup(
        value in prop_oneof![any::<f64>(), 0.0..1e6f64, Just(f64::NAN), Just(f64::INFINITY)],
        noise in proptest::collection::vec(hostile_string(), 0..6),
        position in any::<prop::sample::Index>(),
    ) {
        const NAME: &str = "felix_active_local_endpoints";
        let mut lines: Vec<String> = noise
            .into_iter()
            .map(|n| n.replace('\n', " ").replace(NAME, "x"))
            .collect();
        lines.push(format!("# HELP {NAME} 1"));
        lines.push(format!("{NAME}_total 5"));
        lines.push(format!("{NAME}{{a=\"b\"}} 6"));
        let at = position.index(lines.len() + 1);
        lines.insert(at, format!("{NAME} {value}"));
        let text = lines.join("\n");
        let want = (value.is_finite() && value >= 0.0).then_some(value);
        prop_assert_eq!(sample(&text, NAME), want);
    }

    /// Any text at all: no panic, and whatever is found is finite and non-negative.
    #[test]
    fn props_sample_any_text(text in hostile_string(), name in "[a-z_]{0,10}") {
        if let Some(v) = sample(&text, &name) {
            prop_assert!(v.is_finite() && v >= 0.0);
        }
        let _ = status_code(text.as_bytes());
    }
}
