//! Wall-clock time as exported: Unix seconds (the Prometheus convention for timestamps).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serializer;

/// Seconds since the Unix epoch; 0 for a time before it (a clock set far back).
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Serde: an optional time as Unix seconds, `null` when absent or before the epoch.
pub fn serialize_unix_seconds<S: Serializer>(
    t: &Option<SystemTime>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// RFC 3339 in UTC as Kubernetes writes its times: `2026-12-01T02:03:04Z` (`Time`), or with
/// `micros` six fractional digits (`MicroTime`, e.g. an Event's `eventTime`). A time before the
/// epoch is written as the epoch.
pub fn rfc3339(t: SystemTime, micros: bool) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm, shifted to March).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let frac = if micros {
        format!(".{:06}", d.subsec_micros())
    } else {
        String::new()
    };
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}{frac}Z")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(unix_seconds(UNIX_EPOCH + Duration::from_millis(1500)), 1.5);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(1)), 0.0);
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::new(&mut out);
        serialize_unix_seconds(&Some(UNIX_EPOCH + Duration::from_secs(7)), &mut ser).unwrap();
        assert_eq!(out, b"7.0");
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH, false), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day of a century year divisible by 400), 2026-12-01.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723);
        assert_eq!(rfc3339(t, false), "2000-02-29T01:02:03Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_796_090_559_000_042);
        assert_eq!(rfc3339(t, true), "2026-12-01T02:02:39.000042Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5), false),
            "1970-01-01T00:00:00Z"
        );
    }
}
