//! Mapping fred's errors onto `JournalError`.

use fred::error::{Error, ErrorKind};
use journal_core::JournalError;

pub(crate) const BACKEND: &str = "redis";

/// Server replies that a retry may cure: a server loading its data, a
/// cluster reshaping or failing over, a replica not yet promoted.
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
/// a server in transition), `Storage` for the rest.
pub(crate) fn redis_error(e: Error) -> JournalError {
    let transient = match e.kind() {
        ErrorKind::IO
        | ErrorKind::Timeout
        | ErrorKind::Canceled
        | ErrorKind::Backpressure
        | ErrorKind::Routing
        | ErrorKind::Cluster => true,
        _ => TRANSIENT_REPLIES
            .iter()
            .any(|reply| e.details().starts_with(reply)),
    };
    if transient {
        JournalError::unavailable(BACKEND, e)
    } else {
        JournalError::storage(BACKEND, e)
    }
}

/// Whether the server lost its script cache.
pub(crate) fn is_noscript(e: &Error) -> bool {
    e.details().starts_with("NOSCRIPT")
}

/// A reply of an unexpected shape.
pub(crate) fn bad_reply(what: &str) -> JournalError {
    JournalError::storage(BACKEND, format!("unexpected reply from the server: {what}"))
}
