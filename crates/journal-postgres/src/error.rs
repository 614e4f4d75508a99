//! Mapping driver and pool errors onto `JournalError`.

use journal_core::JournalError;
use tokio_postgres::error::SqlState;

const BACKEND: &str = "postgres";

/// `Unavailable` for what a retry may cure (a lost or refused connection, a
/// timeout, a terminated backend, a serialization failure), `Storage` for
/// the rest.
pub(crate) fn pg_error(e: tokio_postgres::Error) -> JournalError {
    let retryable = match e.code() {
        Some(code) => [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::CONNECTION_EXCEPTION,
            SqlState::CONNECTION_FAILURE,
            SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::QUERY_CANCELED,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::LOCK_NOT_AVAILABLE,
        ]
        .contains(code),
        // No SQLSTATE: the connection itself failed (closed, I/O, timeout).
        None => e.is_closed() || std::error::Error::source(&e).is_some_and(is_io),
    };
    // A failed TLS handshake (an untrusted certificate) will fail again.
    let tls = e.to_string().contains("TLS");
    let unavailable = (retryable || e.is_closed()) && !tls;
    let e = Detailed::new(e);
    if unavailable {
        JournalError::unavailable(BACKEND, e)
    } else {
        JournalError::storage(BACKEND, e)
    }
}

/// A driver error whose text says what happened: the driver's own says only
/// "db error" or "error connecting to server", leaving the server's message
/// or the I/O error to its source.
#[derive(Debug)]
struct Detailed {
    text: String,
    source: tokio_postgres::Error,
}

impl Detailed {
    fn new(source: tokio_postgres::Error) -> Self {
        let mut text = source.to_string();
        if let Some(db) = source.as_db_error() {
            text = format!("{text}: {} {}", db.severity(), db.message());
            if let Some(detail) = db.detail() {
                text = format!("{text} ({detail})");
            }
        } else if let Some(inner) = std::error::Error::source(&source) {
            text = format!("{text}: {inner}");
        }
        Detailed { text, source }
    }
}

impl std::fmt::Display for Detailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Detailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn is_io(source: &(dyn std::error::Error + 'static)) -> bool {
    source.is::<std::io::Error>()
}

/// Errors of the connection pool.
pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> JournalError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_error(e),
        deadpool_postgres::PoolError::Timeout(_) | deadpool_postgres::PoolError::Closed => {
            JournalError::unavailable(BACKEND, e)
        }
        other => JournalError::storage(BACKEND, other.to_string()),
    }
}
