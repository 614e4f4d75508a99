//! Mapping SQLite's errors onto `JournalError`.

use journal_core::JournalError;
use rusqlite::ErrorCode;

const BACKEND: &str = "sqlite";

/// Whether SQLite says to try again later (another process holds a lock).
pub(crate) fn is_retryable(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// `Unavailable` for lock timeouts, `Storage` for everything else (a full
/// disk, a read-only file, corruption), with SQLite's message.
pub(crate) fn db_error(e: &rusqlite::Error) -> JournalError {
    let message = match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => format!("database or disk is full ({e})"),
        Some(ErrorCode::ReadOnly) => format!("the journal file is read-only ({e})"),
        Some(ErrorCode::CannotOpen) => format!("cannot open the journal file ({e})"),
        Some(ErrorCode::NotADatabase) => format!("not an SQLite database ({e})"),
        Some(ErrorCode::DatabaseCorrupt) => format!("the database file is damaged ({e})"),
        _ => e.to_string(),
    };
    if is_retryable(e) {
        JournalError::unavailable(BACKEND, message)
    } else {
        JournalError::storage(BACKEND, message)
    }
}

/// The error every caller of a failed group gets.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    retryable: bool,
    message: String,
}

impl Failure {
    pub(crate) fn of(e: &rusqlite::Error) -> Self {
        Failure {
            retryable: is_retryable(e),
            message: db_error(e).to_string(),
        }
    }

    /// For operations rolled back with their group because another
    /// operation made SQLite abort the transaction (a full disk, an I/O
    /// error): they did not fail themselves, and may succeed when retried.
    pub(crate) fn rolled_back_with_group() -> Self {
        Failure {
            retryable: true,
            message: "rolled back with its group: SQLite aborted the transaction".into(),
        }
    }

    pub(crate) fn stopped() -> Self {
        Failure {
            retryable: true,
            message: "the journal's writer thread has stopped".into(),
        }
    }

    pub(crate) fn to_error(&self) -> JournalError {
        if self.retryable {
            JournalError::unavailable(BACKEND, self.message.clone())
        } else {
            JournalError::storage(BACKEND, self.message.clone())
        }
    }
}
