//! The two answers felix gives: a health status (`libcalico-go/lib/health`: 200 or 204 when
//! good, 503 when not, with a component table as the body) and the Prometheus text exposition.

/// The HTTP status code of a raw HTTP/1.x answer (`HTTP/1.1 204 No Content`).
pub(crate) fn status_code(answer: &[u8]) -> Option<u16> {
    let line_end = answer.iter().position(|b| *b == b'\n')?;
    let line = std::str::from_utf8(&answer[..line_end]).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

/// A health status as good (`Some(true)`), bad (`Some(false)`) or unknown.
pub(crate) fn health(code: u16) -> Option<bool> {
    match code {
        200 | 204 => Some(true),
        503 => Some(false),
        _ => None,
    }
}

/// The body of a raw HTTP/1.x answer (after the blank line).
pub(crate) fn body(answer: &[u8]) -> Option<&[u8]> {
    let at = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some(&answer[at + 4..])
}

/// The value of an unlabelled sample `name` in a Prometheus text exposition.
pub(crate) fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let rest = l.strip_prefix(name)?;
            let rest = rest.strip_prefix(' ')?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .filter(|v| v.is_finite() && *v >= 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_answers() {
        let ok = b"HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n";
        assert_eq!(status_code(ok).and_then(health), Some(true));
        let bad = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 3\r\n\r\nbad";
        assert_eq!(status_code(bad).and_then(health), Some(false));
        assert_eq!(body(bad), Some(&b"bad"[..]));
        assert_eq!(
            status_code(b"HTTP/1.1 404 Not Found\r\n\r\n").and_then(health),
            None
        );
        assert_eq!(status_code(b"garbage\n"), None);
        assert_eq!(status_code(b""), None);
    }

    #[test]
    fn samples() {
        let text = "# HELP felix_active_local_endpoints Number of active endpoints on this host.\n\
                    # TYPE felix_active_local_endpoints gauge\n\
                    felix_active_local_endpoints 7\n\
                    felix_active_local_endpoints_x 9\n\
                    felix_resync_state 3\n\
                    felix_bad NaN\n";
        assert_eq!(sample(text, "felix_active_local_endpoints"), Some(7.0));
        assert_eq!(sample(text, "felix_resync_state"), Some(3.0));
        assert_eq!(sample(text, "felix_bad"), None);
        assert_eq!(sample(text, "felix_missing"), None);
    }
}
