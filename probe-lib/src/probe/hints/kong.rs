//! Kong: its Admin API's `GET /status` on the pod's loopback. In DB mode
//! `database.reachable: false` means the ingress controller cannot write new targets, so the
//! proxy keeps its cached ones (the runbook's third incident); DB-less mode has
//! `configuration_hash` instead (all zeros: no configuration loaded).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use serde_json::Value;

use super::{ClientHint, Hint, http_get};

/// Kong's Admin API on the pod's loopback.
#[derive(Debug, Clone, Copy)]
pub struct Kong {
    /// The admin port (Kong's default: 8001).
    pub admin_port: u16,
}

/// What Kong's `/status` says; `None` when it is not Kong's.
pub fn from_status(body: &[u8]) -> Option<Hint> {
    let v: Value = serde_json::from_slice(body).ok()?;
    // Kong's shape: a `server` object with connection counters, and `database` (DB mode) or
    // `configuration_hash` (DB-less).
    v.get("server")?.as_object()?;
    let hint = |cause: Option<&str>, detail: String| Hint {
        kind: "kong",
        cause: cause.map(str::to_owned),
        detail,
    };
    if let Some(hash) = v.get("configuration_hash").and_then(Value::as_str) {
        return Some(if hash.bytes().all(|b| b == b'0') {
            hint(
                Some(
                    "Kong (DB-less) has no configuration loaded, so it has no current upstream targets",
                ),
                "Kong DB-less, configuration_hash empty".to_owned(),
            )
        } else {
            let hash: String = hash.chars().take(64).collect();
            hint(
                None,
                format!(
                    "Kong DB-less, configuration_hash {hash}: check that the controller pushes configuration after deploys"
                ),
            )
        });
    }
    match v.get("database")?.get("reachable")?.as_bool()? {
        false => Some(hint(
            Some("Kong cannot reach its database, so new upstream targets are not written"),
            "Kong /status: database.reachable false".to_owned(),
        )),
        true => Some(hint(
            None,
            "Kong /status: database.reachable true".to_owned(),
        )),
    }
}

impl ClientHint for Kong {
    fn read(&self, deadline: Instant) -> Option<Hint> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.admin_port));
        from_status(&http_get(addr, "/status", deadline)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kong_status_answers() {
        let db = |reachable: bool| {
            format!(
                r#"{{"database":{{"reachable":{reachable}}},"memory":{{}},"server":{{"connections_active":1,"total_requests":5}}}}"#
            )
        };
        let down = from_status(db(false).as_bytes()).unwrap();
        assert!(down.cause.unwrap().contains("cannot reach its database"));
        assert_eq!(from_status(db(true).as_bytes()).unwrap().cause, None);
        let empty = r#"{"configuration_hash":"00000000000000000000000000000000","server":{}}"#;
        assert!(from_status(empty.as_bytes()).unwrap().cause.is_some());
        let loaded = r#"{"configuration_hash":"a1b2","server":{}}"#;
        let h = from_status(loaded.as_bytes()).unwrap();
        assert!(h.cause.is_none() && h.detail.contains("a1b2"));
        // Not Kong, or hostile: no hint.
        for body in [
            r#"{"database":{"reachable":false}}"#,
            r#"{"server":{},"database":{"reachable":"no"}}"#,
            "[]",
            "not json",
            "",
        ] {
            assert_eq!(from_status(body.as_bytes()), None, "{body}");
        }
    }
}
