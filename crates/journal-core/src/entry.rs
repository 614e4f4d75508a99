//! Constructors and small accessors for the generated types.

use std::fmt;
use std::time::SystemTime;

use crate::error::{JournalError, JournalResult};
use crate::proto::{
    journal_entry::Entry, Checkpoint, CompressionType, JournalEntry, MessageProcessed,
    MessageReceived, PostgresConfig, ProcessingResult, RedisConfig, SideEffectExecuted,
    StateChanged,
};
use crate::redact::redact_url;

/// A new entry id: a ULID, sortable by creation time.
pub fn new_entry_id() -> String {
    ulid::Ulid::generate().to_string()
}

/// The current time as a protobuf timestamp.
pub fn now_timestamp() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

impl JournalEntry {
    /// An entry with a fresh ULID id and the current time.
    ///
    /// ```
    /// use journal_core::{JournalEntry, journal_entry::Entry};
    /// let e = JournalEntry::new("account-7", 1, Entry::message_received("m-1", "Deposit", b"100".to_vec()));
    /// assert_eq!(e.sequence, 1);
    /// assert_eq!(e.id.len(), 26);
    /// ```
    pub fn new(actor_id: impl Into<String>, sequence: u64, entry: Entry) -> Self {
        JournalEntry {
            id: new_entry_id(),
            actor_id: actor_id.into(),
            sequence,
            timestamp: Some(now_timestamp()),
            correlation_id: String::new(),
            entry: Some(entry),
        }
    }

    /// The same entry with a correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, correlation_id: impl Into<String>) -> Self {
        self.correlation_id = correlation_id.into();
        self
    }

    /// The name of the entry's variant ("message_received", ...), or
    /// "none" when it has none.
    pub fn kind(&self) -> &'static str {
        self.entry.as_ref().map_or("none", Entry::kind)
    }
}

impl JournalEntry {
    /// Decodes an entry a backend stored for `actor_id` at `sequence`, and
    /// checks that it is that entry: bytes that do not decode, or that hold
    /// another actor's or another sequence's entry, are `CorruptEntry`.
    pub fn decode_stored(actor_id: &str, sequence: u64, bytes: &[u8]) -> JournalResult<Self> {
        let corrupt = |reason: String| JournalError::CorruptEntry {
            actor_id: actor_id.to_owned(),
            sequence,
            reason,
        };
        let entry =
            <JournalEntry as prost::Message>::decode(bytes).map_err(|e| corrupt(e.to_string()))?;
        if entry.actor_id != actor_id || entry.sequence != sequence {
            return Err(corrupt(format!(
                "the stored bytes hold entry {} of actor {:?}",
                entry.sequence, entry.actor_id
            )));
        }
        Ok(entry)
    }
}

impl Checkpoint {
    /// Decodes a checkpoint a backend stored for `actor_id` at `sequence`,
    /// and checks that it is that checkpoint; otherwise `CorruptCheckpoint`.
    pub fn decode_stored(actor_id: &str, sequence: u64, bytes: &[u8]) -> JournalResult<Self> {
        let corrupt = |reason: String| JournalError::CorruptCheckpoint {
            actor_id: actor_id.to_owned(),
            sequence,
            reason,
        };
        let checkpoint =
            <Checkpoint as prost::Message>::decode(bytes).map_err(|e| corrupt(e.to_string()))?;
        if checkpoint.actor_id != actor_id || checkpoint.sequence != sequence {
            return Err(corrupt(format!(
                "the stored bytes hold checkpoint {} of actor {:?}",
                checkpoint.sequence, checkpoint.actor_id
            )));
        }
        Ok(checkpoint)
    }
}

impl Entry {
    /// A received message with no sender and no metadata.
    pub fn message_received(
        message_id: impl Into<String>,
        message_type: impl Into<String>,
        payload: Vec<u8>,
    ) -> Self {
        Entry::MessageReceived(MessageReceived {
            message_id: message_id.into(),
            message_type: message_type.into(),
            payload,
            ..MessageReceived::default()
        })
    }

    /// A message handled with the given result.
    pub fn message_processed(
        message_id: impl Into<String>,
        result: ProcessingResult,
        error_message: impl Into<String>,
        response_payload: Vec<u8>,
    ) -> Self {
        Entry::MessageProcessed(MessageProcessed {
            message_id: message_id.into(),
            result: result.into(),
            error_message: error_message.into(),
            response_payload,
            reply_dropped: false,
        })
    }

    /// A state change.
    pub fn state_changed(
        change_type: impl Into<String>,
        old_state: Vec<u8>,
        new_state: Vec<u8>,
    ) -> Self {
        Entry::StateChanged(StateChanged {
            old_state,
            new_state,
            change_type: change_type.into(),
        })
    }

    /// A side effect's recorded outcome.
    pub fn side_effect(
        effect_id: impl Into<String>,
        effect_type: impl Into<String>,
        request: Vec<u8>,
        response: Vec<u8>,
        error: impl Into<String>,
    ) -> Self {
        Entry::SideEffectExecuted(SideEffectExecuted {
            effect_id: effect_id.into(),
            effect_type: effect_type.into(),
            request,
            response,
            error: error.into(),
            result_dropped: false,
        })
    }

    /// The variant's name in snake case, as in the proto file.
    pub fn kind(&self) -> &'static str {
        match self {
            Entry::MessageReceived(_) => "message_received",
            Entry::MessageProcessed(_) => "message_processed",
            Entry::StateChanged(_) => "state_changed",
            Entry::SideEffectExecuted(_) => "side_effect_executed",
            Entry::TimerScheduled(_) => "timer_scheduled",
            Entry::TimerFired(_) => "timer_fired",
            Entry::PromiseCreated(_) => "promise_created",
            Entry::PromiseResolved(_) => "promise_resolved",
            Entry::TimerCancelled(_) => "timer_cancelled",
            Entry::EventRecorded(_) => "event_recorded",
        }
    }
}

impl Checkpoint {
    /// An uncompressed checkpoint of `state` taken after entry `sequence`,
    /// stamped with the current time and state schema version 1.
    pub fn new(actor_id: impl Into<String>, sequence: u64, state: Vec<u8>) -> Self {
        Checkpoint {
            actor_id: actor_id.into(),
            sequence,
            timestamp: Some(now_timestamp()),
            uncompressed_size: state.len() as u64,
            state_data: state,
            compression: CompressionType::None.into(),
            metadata: std::collections::BTreeMap::new(),
            state_schema_version: 1,
        }
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("schema", &self.schema)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .finish()
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("pool_size", &self.pool_size)
            .field("wait_replicas", &self.wait_replicas)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_debug_hides_the_password() {
        let pg = PostgresConfig {
            url: "postgres://app:s3cret@db:5432/j".into(),
            ..PostgresConfig::default()
        };
        let redis = RedisConfig {
            url: "redis://:hunter2@cache:6379".into(),
            ..RedisConfig::default()
        };
        let shown = format!("{pg:?} {redis:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(shown.contains("db:5432"), "{shown}");
    }

    #[test]
    fn stored_bytes_must_be_the_entry_asked_for() {
        use prost::Message;
        let e = JournalEntry::new("a", 3, Entry::message_received("m", "T", vec![1]));
        let bytes = e.encode_to_vec();
        assert_eq!(
            JournalEntry::decode_stored("a", 3, &bytes).expect("decodes"),
            e
        );
        for (actor, seq, bytes) in [
            ("a", 4, &bytes[..]),
            ("b", 3, &bytes[..]),
            ("a", 3, &[0xff, 0xff, 0xff][..]),
        ] {
            assert!(matches!(
                JournalEntry::decode_stored(actor, seq, bytes),
                Err(JournalError::CorruptEntry { .. })
            ));
        }
        let c = Checkpoint::new("a", 2, b"state".to_vec());
        let bytes = c.encode_to_vec();
        assert_eq!(
            Checkpoint::decode_stored("a", 2, &bytes).expect("decodes"),
            c
        );
        assert!(matches!(
            Checkpoint::decode_stored("a", 1, &bytes),
            Err(JournalError::CorruptCheckpoint { .. })
        ));
    }

    #[test]
    fn kinds_name_every_variant() {
        let e = JournalEntry::new("a", 1, Entry::side_effect("e", "http", vec![], vec![], ""));
        assert_eq!(e.kind(), "side_effect_executed");
        assert_eq!(JournalEntry::default().kind(), "none");
    }
}
