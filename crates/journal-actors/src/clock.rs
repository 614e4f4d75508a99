//! The system's clock: milliseconds since the Unix epoch, read from Tokio's
//! clock (anchored to the wall clock at start), so that tests can pause and
//! advance time and the timer loop follows.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Wall-clock milliseconds, advancing with Tokio's clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch_ms: u64,
    start: Instant,
}

impl Clock {
    /// A clock reading the wall clock now.
    pub(crate) fn start() -> Self {
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Clock {
            epoch_ms,
            start: Instant::now(),
        }
    }

    /// Now, in milliseconds since the Unix epoch.
    pub(crate) fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.epoch_ms.saturating_add(elapsed)
    }

    /// How long until `at_ms` (zero when it has passed).
    pub(crate) fn until(&self, at_ms: u64) -> Duration {
        Duration::from_millis(at_ms.saturating_sub(self.now_ms()))
    }
}
