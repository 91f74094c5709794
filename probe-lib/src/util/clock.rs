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
}
