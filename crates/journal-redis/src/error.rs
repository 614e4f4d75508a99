//! Mapping redis-rs's errors onto `JournalError`.

use journal_core::JournalError;
use redis::{ErrorKind, RedisError, ServerErrorKind};

pub(crate) const BACKEND: &str = "redis";

/// Server replies that a retry may cure beyond what the driver retried
/// itself: a server loading its data, a cluster reshaping or failing over,
/// a replica not yet promoted, a script running too long.
const TRANSIENT_REPLIES: [&str; 7] = [
    "LOADING",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "READONLY",
    "BUSY",
    "NOREPLICAS",
];

/// `Unavailable` for what a retry may cure (a lost connection, a timeout,
/// a server in transition), `Storage` for the rest. The message is the
/// driver's, which names no password.
pub(crate) fn redis_error(e: RedisError) -> JournalError {
    let transient = match e.kind() {
        ErrorKind::Io
        | ErrorKind::ClusterConnectionNotFound
        | ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly,
        ) => true,
        _ => {
            e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.code()
                    .is_some_and(|code| TRANSIENT_REPLIES.contains(&code))
        }
    };
    if transient {
        JournalError::unavailable(BACKEND, e)
    } else {
        JournalError::storage(BACKEND, e)
    }
}

/// Whether the server lost its script cache.
pub(crate) fn is_noscript(e: &RedisError) -> bool {
    matches!(e.kind(), ErrorKind::Server(ServerErrorKind::NoScript)) || e.code() == Some("NOSCRIPT")
}

/// A reply of an unexpected shape.
pub(crate) fn bad_reply(what: &str) -> JournalError {
    JournalError::storage(BACKEND, format!("unexpected reply from the server: {what}"))
}
