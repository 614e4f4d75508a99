//! How entries, checkpoints, sizes and progress are shown.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};

use indicatif::{ProgressBar, ProgressStyle};
use journal_core::journal_entry::Entry;
use journal_core::{Checkpoint, CompressionType, JournalEntry, ProcessingResult};
use serde_json::{json, Map, Value};

/// Lines to stdout. When the reader goes away (`journal verify ... | head`)
/// the rest is dropped quietly, and the command still ends with its own
/// outcome.
pub struct Printer {
    out: std::io::BufWriter<std::io::Stdout>,
    eager: bool,
    closed: bool,
}

impl Printer {
    /// A printer writing in blocks: for long listings.
    pub fn new() -> Self {
        Printer {
            out: std::io::BufWriter::new(std::io::stdout()),
            eager: false,
            closed: false,
        }
    }

    /// A printer writing each line at once: for progress reports.
    pub fn eager() -> Self {
        Printer {
            eager: true,
            ..Printer::new()
        }
    }

    /// Whether the reader went away.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Prints one line, control characters escaped.
    pub fn line(&mut self, line: impl std::fmt::Display) -> Result<(), crate::backend::Failure> {
        if self.closed {
            return Ok(());
        }
        // Every line is cleaned: ids and texts from a journal are data.
        let line = line.to_string();
        let written = writeln!(self.out, "{}", clean(&line)).and_then(|()| {
            if self.eager {
                self.out.flush()
            } else {
                Ok(())
            }
        });
        self.settle(written)
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) -> Result<(), crate::backend::Failure> {
        if self.closed {
            return Ok(());
        }
        let flushed = self.out.flush();
        self.settle(flushed)
    }

    fn settle(&mut self, result: std::io::Result<()>) -> Result<(), crate::backend::Failure> {
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(crate::backend::Failure::new(format!(
                "cannot write the output: {e}"
            ))),
        }
    }
}

/// Text from the journal with control characters escaped, so that an id
/// holding a newline or a terminal escape cannot forge or garble output.
pub fn clean(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(
            text.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

/// A progress bar on stderr when it is a terminal; hidden otherwise, so
/// piped and logged output stays plain.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("  {msg:<10} [{bar:30}] {human_pos}/{human_len} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// Bytes as text when they are printable UTF-8, otherwise as hex; long
/// values are cut.
pub fn bytes(data: &[u8]) -> String {
    const SHOWN: usize = 48;
    if data.is_empty() {
        return "\"\"".into();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if text.chars().all(|c| !c.is_control()) {
            let cut: String = text.chars().take(SHOWN).collect();
            return if cut.len() < text.len() {
                format!("{cut:?}... ({} bytes)", data.len())
            } else {
                format!("{cut:?}")
            };
        }
    }
    let mut out = String::from("0x");
    for b in data.iter().take(SHOWN / 2) {
        let _ = write!(out, "{b:02x}");
    }
    if data.len() > SHOWN / 2 {
        let _ = write!(out, "... ({} bytes)", data.len());
    }
    out
}

fn hex(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 2);
    for b in data {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `bytes` in JSON: `NAME_hex` always, `NAME_text` when valid UTF-8.
fn put_bytes(object: &mut Map<String, Value>, name: &str, data: &[u8]) {
    object.insert(format!("{name}_hex"), Value::String(hex(data)));
    if let Ok(text) = std::str::from_utf8(data) {
        object.insert(format!("{name}_text"), Value::String(text.to_owned()));
    }
}

fn result_name(result: i32) -> &'static str {
    match ProcessingResult::try_from(result) {
        Ok(ProcessingResult::Success) => "success",
        Ok(ProcessingResult::Error) => "error",
        Ok(ProcessingResult::Retry) => "retry",
        Ok(ProcessingResult::Unspecified) | Err(_) => "unspecified",
    }
}

fn seconds(duration: Option<&journal_core::prost_types::Duration>) -> String {
    duration.map_or_else(
        || "-".into(),
        |d| format!("{}.{:03}s", d.seconds, d.nanos / 1_000_000),
    )
}

/// One line a person reads: sequence, time, kind and what it says.
pub fn entry_line(entry: &JournalEntry) -> String {
    let time = entry
        .timestamp
        .map_or_else(|| "-".into(), |t| t.to_string());
    let body = match &entry.entry {
        None => "(no body)".into(),
        Some(Entry::MessageReceived(m)) => format!(
            "message_received     {} type={} from={} payload={}",
            m.message_id,
            m.message_type,
            if m.sender_id.is_empty() {
                "-"
            } else {
                &m.sender_id
            },
            bytes(&m.payload)
        ),
        Some(Entry::MessageProcessed(m)) => {
            let mut line = format!(
                "message_processed    {} {}",
                m.message_id,
                result_name(m.result)
            );
            if !m.error_message.is_empty() {
                let _ = write!(line, " error={:?}", m.error_message);
            }
            if !m.response_payload.is_empty() {
                let _ = write!(line, " reply={}", bytes(&m.response_payload));
            }
            line
        }
        Some(Entry::SideEffectExecuted(e)) => {
            let mut line = format!(
                "side_effect_executed {} type={} response={}",
                e.effect_id,
                e.effect_type,
                bytes(&e.response)
            );
            if !e.error.is_empty() {
                let _ = write!(line, " error={:?}", e.error);
            }
            line
        }
        Some(Entry::StateChanged(s)) => format!(
            "state_changed        {} {} -> {}",
            s.change_type,
            bytes(&s.old_state),
            bytes(&s.new_state)
        ),
        Some(Entry::TimerScheduled(t)) => format!(
            "timer_scheduled      {} delay={} data={}",
            t.timer_id,
            seconds(t.delay.as_ref()),
            bytes(&t.timer_data)
        ),
        Some(Entry::TimerFired(t)) => format!("timer_fired          {}", t.timer_id),
        Some(Entry::TimerCancelled(t)) => format!("timer_cancelled      {}", t.timer_id),
        Some(Entry::EventRecorded(e)) => {
            let mut line = format!(
                "event_recorded       {} v{} {}",
                e.event_type,
                e.schema_version.max(1),
                bytes(&e.payload)
            );
            if !e.tags.is_empty() {
                let _ = write!(line, " tags={}", e.tags.join(","));
            }
            line
        }
        Some(Entry::PromiseCreated(p)) => format!(
            "promise_created      {} timeout={}",
            p.promise_id,
            seconds(p.timeout.as_ref())
        ),
        Some(Entry::PromiseResolved(p)) => {
            let mut line = format!(
                "promise_resolved     {} result={}",
                p.promise_id,
                bytes(&p.result)
            );
            if !p.error.is_empty() {
                let _ = write!(line, " error={:?}", p.error);
            }
            line
        }
    };
    format!("{:>8}  {time}  {body}", entry.sequence)
}

/// One JSON object with every field of the entry; bytes as `*_hex` (and
/// `*_text` when UTF-8).
pub fn entry_json(entry: &JournalEntry) -> Value {
    let mut object = Map::new();
    object.insert("actor_id".into(), json!(entry.actor_id));
    object.insert("sequence".into(), json!(entry.sequence));
    object.insert("entry_id".into(), json!(entry.id));
    object.insert(
        "timestamp".into(),
        entry
            .timestamp
            .map_or(Value::Null, |t| Value::String(t.to_string())),
    );
    object.insert("correlation_id".into(), json!(entry.correlation_id));
    object.insert(
        "kind".into(),
        json!(entry.entry.as_ref().map_or("none", Entry::kind)),
    );
    match &entry.entry {
        None => {}
        Some(Entry::MessageReceived(m)) => {
            object.insert("message_id".into(), json!(m.message_id));
            object.insert("sender_id".into(), json!(m.sender_id));
            object.insert("message_type".into(), json!(m.message_type));
            put_bytes(&mut object, "payload", &m.payload);
            object.insert("metadata".into(), json!(m.metadata));
        }
        Some(Entry::MessageProcessed(m)) => {
            object.insert("message_id".into(), json!(m.message_id));
            object.insert("result".into(), json!(result_name(m.result)));
            object.insert("error_message".into(), json!(m.error_message));
            put_bytes(&mut object, "response_payload", &m.response_payload);
        }
        Some(Entry::SideEffectExecuted(e)) => {
            object.insert("effect_id".into(), json!(e.effect_id));
            object.insert("effect_type".into(), json!(e.effect_type));
            put_bytes(&mut object, "request", &e.request);
            put_bytes(&mut object, "response", &e.response);
            object.insert("error".into(), json!(e.error));
        }
        Some(Entry::StateChanged(s)) => {
            object.insert("change_type".into(), json!(s.change_type));
            put_bytes(&mut object, "old_state", &s.old_state);
            put_bytes(&mut object, "new_state", &s.new_state);
        }
        Some(Entry::TimerScheduled(t)) => {
            object.insert("timer_id".into(), json!(t.timer_id));
            object.insert("delay".into(), json!(seconds(t.delay.as_ref())));
            put_bytes(&mut object, "timer_data", &t.timer_data);
            object.insert("target_actor_id".into(), json!(t.target_actor_id));
            object.insert("target_actor_type".into(), json!(t.target_actor_type));
            object.insert("message_type".into(), json!(t.message_type));
            if let Some(due) = &t.due_at {
                object.insert(
                    "due_at".into(),
                    json!(format!("{}.{:09}", due.seconds, due.nanos)),
                );
            }
        }
        Some(Entry::TimerFired(t)) => {
            object.insert("timer_id".into(), json!(t.timer_id));
        }
        Some(Entry::TimerCancelled(t)) => {
            object.insert("timer_id".into(), json!(t.timer_id));
        }
        Some(Entry::EventRecorded(e)) => {
            object.insert("event_type".into(), json!(e.event_type));
            object.insert("schema_version".into(), json!(e.schema_version.max(1)));
            put_bytes(&mut object, "payload", &e.payload);
            object.insert("tags".into(), json!(e.tags));
            object.insert("metadata".into(), json!(e.metadata));
        }
        Some(Entry::PromiseCreated(p)) => {
            object.insert("promise_id".into(), json!(p.promise_id));
            object.insert("timeout".into(), json!(seconds(p.timeout.as_ref())));
        }
        Some(Entry::PromiseResolved(p)) => {
            object.insert("promise_id".into(), json!(p.promise_id));
            put_bytes(&mut object, "result", &p.result);
            object.insert("error".into(), json!(p.error));
        }
    }
    Value::Object(object)
}

/// A checkpoint's metadata (not its state), as JSON.
pub fn checkpoint_json(checkpoint: &Checkpoint) -> Value {
    json!({
        "actor_id": checkpoint.actor_id,
        "sequence": checkpoint.sequence,
        "timestamp": checkpoint.timestamp.map(|t| t.to_string()),
        "compression": compression_name(checkpoint.compression),
        "stored_bytes": checkpoint.state_data.len(),
        "uncompressed_bytes": checkpoint.uncompressed_size,
        "state_schema_version": checkpoint.state_schema_version,
        "metadata": checkpoint.metadata,
    })
}

/// A checkpoint's metadata in one line.
pub fn checkpoint_line(checkpoint: &Checkpoint) -> String {
    format!(
        "checkpoint at {} taken {}: {} state, {} stored ({}), schema version {}",
        checkpoint.sequence,
        checkpoint
            .timestamp
            .map_or_else(|| "-".into(), |t| t.to_string()),
        size(checkpoint.uncompressed_size),
        size(checkpoint.state_data.len() as u64),
        compression_name(checkpoint.compression),
        checkpoint.state_schema_version
    )
}

fn compression_name(compression: i32) -> &'static str {
    match CompressionType::try_from(compression) {
        Ok(CompressionType::None) => "none",
        Ok(CompressionType::Zstd) => "zstd",
        Err(_) => "unknown",
    }
}

/// A byte count a person reads: B, KiB, MiB, GiB.
#[allow(clippy::cast_precision_loss)]
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// How `faster` (taking `fast` seconds) compares with `slow` seconds:
/// `2.4x faster`, or `1.7x slower` when it is not, never `0.6x faster`.
pub fn speedup(slow: f64, fast: f64) -> String {
    let (slow, fast) = (slow.max(1e-9), fast.max(1e-9));
    if slow >= fast {
        format!("{:.1}x faster", slow / fast)
    } else {
        format!("{:.1}x slower", fast / slow)
    }
}

/// Quotes `word` for a POSIX shell when it holds anything but plain
/// characters (`?`, `&`, spaces in a URL or path), so a printed command
/// can be pasted into bash or zsh as is.
pub fn shell_quoted(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:@=,+%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// `n` and the noun that goes with it: `1 actor`, `31,996 actors`.
pub fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", count(n), if n == 1 { one } else { many })
}

/// `n` with thousands separators (`31,996`).
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_for_people_and_shells() {
        assert_eq!(counted(1, "actor", "actors"), "1 actor");
        assert_eq!(counted(31_996, "actor", "actors"), "31,996 actors");
        assert_eq!(counted(0, "problem", "problems"), "0 problems");
        assert_eq!(speedup(2.4, 1.0), "2.4x faster");
        assert_eq!(speedup(0.6, 1.0), "1.7x slower");
        assert_eq!(shell_quoted("sqlite:/tmp/j.db"), "sqlite:/tmp/j.db");
        assert_eq!(
            shell_quoted("postgres://db/test?schema=x"),
            "'postgres://db/test?schema=x'"
        );
        assert_eq!(shell_quoted("it's"), "'it'\\''s'");
    }

    #[test]
    fn bytes_are_text_or_hex_and_cut() {
        assert_eq!(bytes(b"120"), "\"120\"");
        assert_eq!(bytes(&[0, 255]), "0x00ff");
        assert_eq!(bytes(b""), "\"\"");
        let long = bytes(&[7u8; 100]);
        assert!(long.ends_with("... (100 bytes)"), "{long}");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(12), "12");
    }

    #[test]
    fn entries_become_json_with_every_field() {
        let entry = JournalEntry::new(
            "a",
            3,
            Entry::message_received("m1", "deposit", b"50".to_vec()),
        );
        let value = entry_json(&entry);
        assert_eq!(value["sequence"], 3);
        assert_eq!(value["kind"], "message_received");
        assert_eq!(value["payload_text"], "50");
        assert_eq!(value["payload_hex"], "3530");
        assert!(entry_line(&entry).contains("m1 type=deposit"));
    }
}
