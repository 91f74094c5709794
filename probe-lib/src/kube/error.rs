//! Why one list or watch attempt ended, typed: the restart reason comes from the variant (and
//! kube's error kept as the source), never from an error message's text.

use std::io;
use std::time::Duration;

use crate::model::RestartReason;

/// One list or watch attempt failed; the loop counts [`WatchError::reason`] and starts over.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The API client returned an error (an error status, a broken connection, a bad answer).
    #[error("{verb}: {source}")]
    Api {
        /// `list` or `watch`.
        verb: &'static str,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// A list page or the start of a watch took longer than the request timeout.
    #[error("{verb} request timed out after {after:?}")]
    RequestTimeout {
        /// `list` or `watch`.
        verb: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The watch sent nothing, not even a bookmark or its own end.
    #[error("nothing from the watch for {0:?}")]
    Stalled(Duration),
    /// The server ended the watch before its timeout.
    #[error("the watch ended early")]
    ClosedEarly,
    /// A list page that is not a list (truncated, not JSON, metadata too big).
    #[error("{0}")]
    Page(String),
    /// A watch `ERROR` event (410 means our resource version was compacted away).
    #[error("watch error event {code}: {message}")]
    ErrorEvent {
        /// HTTP-style status code of the event.
        code: u16,
        /// The server's message.
        message: String,
    },
}

impl WatchError {
    /// The `reason` label this failure is counted under.
    pub fn reason(&self) -> RestartReason {
        match self {
            WatchError::Api { source, .. } => classify(source),
            WatchError::RequestTimeout { .. } => RestartReason::Timeout,
            WatchError::Stalled(_) => RestartReason::Stalled,
            WatchError::ClosedEarly => RestartReason::Closed,
            WatchError::Page(_) => RestartReason::Decode,
            WatchError::ErrorEvent { code, .. } => status_reason(*code),
        }
    }

    /// The server asked us to slow down (429): `Some(its Retry-After)` when it said how long,
    /// `Some(None)` when it did not; `None` for any other failure.
    pub fn retry_after(&self) -> Option<Option<Duration>> {
        let (code, secs) = match self {
            WatchError::Api {
                source: kube::Error::Api(s),
                ..
            } => (
                s.code,
                s.details.as_ref().map_or(0, |d| d.retry_after_seconds),
            ),
            WatchError::ErrorEvent { code, .. } => (*code, 0),
            _ => return None,
        };
        (code == 429).then(|| (secs > 0).then(|| Duration::from_secs(u64::from(secs))))
    }

    /// Only a fresh list helps: the version is gone, or the watch's state cannot be trusted.
    /// Anything else watches again from the same resource version.
    pub fn needs_relist(&self) -> bool {
        matches!(self, WatchError::Stalled(_) | WatchError::ErrorEvent { .. })
            || self.reason() == RestartReason::Gone
    }
}

fn status_reason(code: u16) -> RestartReason {
    match code {
        410 => RestartReason::Gone,
        429 => RestartReason::Throttled,
        500.. => RestartReason::ServerError,
        _ => RestartReason::ClientError,
    }
}

/// By variant; a connection-level error is a timeout when an `io::Error` of kind `TimedOut`
/// is anywhere in its source chain (hyper-timeout's read timeout), otherwise `connect`.
fn classify(e: &kube::Error) -> RestartReason {
    match e {
        kube::Error::Api(s) => status_reason(s.code),
        kube::Error::SerdeError(_)
        | kube::Error::LinesCodecMaxLineLengthExceeded
        | kube::Error::FromUtf8(_) => RestartReason::Decode,
        other if timed_out(other) => RestartReason::Timeout,
        _ => RestartReason::Connect,
    }
}

fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> WatchError {
        WatchError::Api {
            verb: "watch",
            source: kube::Error::Api(Box::new(
                kube::core::Status::failure("x", "y").with_code(code),
            )),
        }
    }

    #[test]
    fn classified_by_variant() {
        assert_eq!(api(410).reason(), RestartReason::Gone);
        assert!(api(410).needs_relist());
        assert_eq!(api(503).reason(), RestartReason::ServerError);
        assert!(!api(503).needs_relist());
        assert_eq!(api(403).reason(), RestartReason::ClientError);
        let timeout = WatchError::Api {
            verb: "list",
            source: kube::Error::ReadEvents(io::Error::new(io::ErrorKind::TimedOut, "slow")),
        };
        assert_eq!(timeout.reason(), RestartReason::Timeout);
        // The words "timed out" in a message mean nothing; the kind does.
        let reset = WatchError::Api {
            verb: "list",
            source: kube::Error::ReadEvents(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "timed out",
            )),
        };
        assert_eq!(reset.reason(), RestartReason::Connect);
        assert_eq!(
            WatchError::Api {
                verb: "list",
                source: kube::Error::LinesCodecMaxLineLengthExceeded
            }
            .reason(),
            RestartReason::Decode
        );
        let gone = WatchError::ErrorEvent {
            code: 410,
            message: "too old".into(),
        };
        assert_eq!(gone.reason(), RestartReason::Gone);
        assert!(gone.needs_relist());
        assert!(WatchError::Stalled(Duration::from_secs(1)).needs_relist());
        assert!(!WatchError::ClosedEarly.needs_relist());
        assert_eq!(WatchError::ClosedEarly.reason(), RestartReason::Closed);
    }
}
