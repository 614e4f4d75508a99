//! Live subscriptions ([`JournalWatch`](journal_core::JournalWatch)):
//! every append is announced, once committed, with a `pg_notify` on the
//! schema's channel naming the actors it wrote; one dedicated connection
//! per storage `LISTEN`s there and wakes the waiters of those actors.
//!
//! The announcement is not made inside the append's transaction: a
//! transaction that notifies takes PostgreSQL's notify lock at commit and
//! holds it through its WAL flush, so every notifying commit of the
//! cluster would run one after another (measured: 88-90% of group commit's
//! waits were on it, a quarter of the machine idle). A [`Notifier`] task
//! sends them after the commits instead, merged, in a transaction of its
//! own that does not wait for its flush.
//!
//! A notification only wakes: the waiter reads the journal again through
//! the pool. So a lost notification (the listener down, a writer that does
//! not announce) costs latency, never an entry.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Client, Notification, Socket};

use crate::error::pg_error;

/// Longest payload sent; beyond it the payload is empty, meaning "any
/// actor" (the server refuses payloads of 8,000 bytes and more).
const MAX_PAYLOAD: usize = 7_000;

/// Announces committed appends: a task of its own takes every payload
/// queued, merges them into as few notifications as fit, and sends them in
/// one statement on a pooled connection (`synchronous_commit` off:
/// a notification lost to a server crash costs a subscriber one poll).
/// Dropped with the last clone of its storage.
#[derive(Clone)]
pub(crate) struct Notifier(mpsc::UnboundedSender<String>);

impl Notifier {
    /// Starts the task, sending on `channel` through `pool`.
    pub(crate) fn spawn(pool: deadpool_postgres::Pool, channel: String) -> Self {
        let (sender, mut payloads) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(first) = payloads.recv().await {
                let mut queued = vec![first];
                while let Ok(next) = payloads.try_recv() {
                    queued.push(next);
                }
                let merged = merge(queued);
                if let Err(e) = send(&pool, &channel, &merged).await {
                    tracing::debug!(error = %e, "an announcement was not sent: subscribers poll");
                }
            }
        });
        Notifier(sender)
    }

    /// Announces `payload` (from [`payload`]) once the task gets to it.
    pub(crate) fn notify(&self, payload: String) {
        let _ = self.0.send(payload);
    }
}

/// Payloads joined into as few as fit; an empty one ("any actor") makes
/// the only one.
fn merge(queued: Vec<String>) -> Vec<String> {
    if queued.iter().any(String::is_empty) {
        return vec![String::new()];
    }
    let mut merged: Vec<String> = Vec::new();
    for payload in queued {
        match merged.last_mut() {
            Some(last) if last.len() + 1 + payload.len() <= MAX_PAYLOAD => {
                last.push('\n');
                last.push_str(&payload);
            }
            _ => merged.push(payload),
        }
    }
    merged
}

async fn send(
    pool: &deadpool_postgres::Pool,
    channel: &str,
    payloads: &[String],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // One statement, one round trip: its implicit transaction commits
    // without waiting for its flush (set_config's `true`: this transaction
    // only), which is all the notify lock is held for.
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "WITH c AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true))
             SELECT pg_notify($1, p) FROM c, unnest($2::text[]) AS p",
        )
        .await?;
    client.execute(&statement, &[&channel, &payloads]).await?;
    Ok(())
}

/// First wait before reconnecting a listener that failed; it doubles up to
/// [`MAX_BACKOFF`], and starts over once a connection listens again.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Opens the listener's connection: the client, and the notifications
/// its connection receives (the stream ends when the connection does).
pub(crate) type Connector = Arc<
    dyn Fn() -> BoxFuture<
            'static,
            Result<(Client, mpsc::UnboundedReceiver<Notification>), tokio_postgres::Error>,
        > + Send
        + Sync,
>;

/// A [`Connector`] with the pool's settings and TLS: a connection of its
/// own, driven by a task that forwards its notifications.
pub(crate) fn connector<T>(config: tokio_postgres::Config, tls: T) -> Connector
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    Arc::new(move || {
        let (config, tls) = (config.clone(), tls.clone());
        Box::pin(async move {
            let (client, mut connection) = config.connect(tls).await?;
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                let mut messages = futures::stream::poll_fn(|cx| connection.poll_message(cx));
                while let Some(message) = futures::StreamExt::next(&mut messages).await {
                    match message {
                        Ok(AsyncMessage::Notification(n)) => {
                            if sender.send(n).is_err() {
                                return;
                            }
                        }
                        Ok(AsyncMessage::Notice(notice)) => {
                            tracing::debug!(backend = crate::BACKEND, notice = %notice, "listener notice");
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(backend = crate::BACKEND, error = %pg_error(e), "the listener connection failed");
                            return;
                        }
                    }
                }
            });
            Ok((client, receiver))
        })
    })
}

/// The notification channel of a schema: `journal_<schema>`, cut to the 63
/// bytes a channel name may have. (Schemas whose names agree on those bytes
/// share a channel: their waiters are woken in vain now and then, which
/// costs a read, nothing more.)
pub(crate) fn channel(schema: &str) -> String {
    let mut channel = format!("journal_{schema}");
    // Schema names are ASCII (validated), so any cut is a char boundary.
    channel.truncate(63);
    channel
}

/// The payload announcing appends of `actors` (each given at least once,
/// duplicates next to each other): the distinct ids, escaped, one a line;
/// empty ("any actor") when that would be too long.
pub(crate) fn payload<'a>(actors: impl IntoIterator<Item = &'a str>) -> String {
    let mut payload = String::new();
    let mut last: Option<&str> = None;
    for actor in actors {
        if last == Some(actor) {
            continue;
        }
        if last.is_some() {
            payload.push('\n');
        }
        last = Some(actor);
        escape_into(&mut payload, actor);
        if payload.len() > MAX_PAYLOAD {
            return String::new();
        }
    }
    payload
}

/// An actor id as printable ASCII without `\n` (so any server encoding
/// takes it, and NUL never reaches a `text`): bytes outside `!`..=`~`, and
/// `%`, become `%XX`.
fn escape_into(out: &mut String, actor: &str) {
    for &byte in actor.as_bytes() {
        if byte.is_ascii_graphic() && byte != b'%' {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// The actor id of one escaped line, or `None` when it is malformed.
fn unescape(line: &str) -> Option<String> {
    let bytes = line.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let hex = line.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The waiters of one storage value (shared by its clones) and its
/// listener.
pub(crate) struct Watch {
    shared: Arc<Shared>,
    /// `LISTEN "<channel>"`.
    listen_sql: String,
    /// `None` for a storage made from a pool of the caller's: no settings
    /// to open a connection with, so waits last their timeout.
    connect: Option<Connector>,
    /// Dropped with the storage: the listener task then ends.
    stop: watch::Sender<()>,
}

struct Shared {
    state: Mutex<State>,
    /// Woken by every announcement, whatever its actors: the feed's
    /// waiters.
    any: watch::Sender<()>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            state: Mutex::default(),
            any: watch::Sender::new(()),
        }
    }
}

#[derive(Default)]
struct State {
    /// Waiters by actor id; an actor without waiters has no entry.
    actors: HashMap<String, Slot>,
    /// The listener task runs (it clears this when it ends, however).
    running: bool,
}

struct Slot {
    wake: watch::Sender<()>,
    waiters: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every waiter: they read again.
    fn wake_all(&self) {
        for slot in self.lock().actors.values() {
            slot.wake.send_replace(());
        }
        self.any.send_replace(());
    }

    /// Wakes the waiters of the actors a payload names (all of them for an
    /// empty or malformed one).
    fn dispatch(&self, payload: &str) {
        self.any.send_replace(());
        let state = self.lock();
        if payload.is_empty() {
            drop(state);
            return self.wake_all();
        }
        for line in payload.split('\n') {
            let Some(actor) = unescape(line) else {
                drop(state);
                return self.wake_all();
            };
            if let Some(slot) = state.actors.get(&actor) {
                slot.wake.send_replace(());
            }
        }
    }
}

impl Watch {
    pub(crate) fn new(channel: &str, connect: Option<Connector>) -> Self {
        Watch {
            shared: Arc::default(),
            listen_sql: format!("LISTEN \"{channel}\""),
            connect,
            stop: watch::Sender::new(()),
        }
    }

    /// Registers a waiter for `actor`: woken by every announcement of it
    /// from now on, until dropped. Starts the listener if it is not
    /// running.
    pub(crate) fn register(&self, actor: &str) -> Waiter {
        let mut state = self.shared.lock();
        let slot = state
            .actors
            .entry(actor.to_owned())
            .or_insert_with(|| Slot {
                wake: watch::Sender::new(()),
                waiters: 0,
            });
        slot.waiters += 1;
        let wake = slot.wake.subscribe();
        self.start(&mut state);
        Waiter {
            shared: Arc::clone(&self.shared),
            actor: Some(actor.to_owned()),
            wake,
        }
    }

    /// Registers a waiter woken by every announcement (of any actor) from
    /// now on, until dropped: the feed's. Starts the listener if it is not
    /// running.
    pub(crate) fn register_any(&self) -> Waiter {
        let mut state = self.shared.lock();
        let wake = self.shared.any.subscribe();
        self.start(&mut state);
        Waiter {
            shared: Arc::clone(&self.shared),
            actor: None,
            wake,
        }
    }

    /// Starts the listener unless it runs (or cannot: no connector, or no
    /// runtime).
    fn start(&self, state: &mut State) {
        if !state.running {
            if let (Some(connect), Ok(runtime)) =
                (&self.connect, tokio::runtime::Handle::try_current())
            {
                state.running = true;
                runtime.spawn(listen(
                    Arc::clone(&self.shared),
                    Arc::clone(connect),
                    self.listen_sql.clone(),
                    self.stop.subscribe(),
                ));
            }
        }
    }
}

/// One registered waiter; deregisters when dropped.
pub(crate) struct Waiter {
    shared: Arc<Shared>,
    /// `None` for a waiter of every announcement.
    actor: Option<String>,
    wake: watch::Receiver<()>,
}

impl Waiter {
    /// Returns once the actor was announced (or everyone woken) after the
    /// registration.
    pub(crate) async fn woken(&mut self) {
        // An error means the sender is gone (it never is while registered):
        // returning early is allowed.
        let _ = self.wake.changed().await;
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let Some(actor) = &self.actor else {
            return;
        };
        let mut state = self.shared.lock();
        if let Some(slot) = state.actors.get_mut(actor) {
            slot.waiters = slot.waiters.saturating_sub(1);
            if slot.waiters == 0 {
                state.actors.remove(actor);
            }
        }
    }
}

/// Marks the listener stopped when its task ends (returns, or is dropped
/// with its runtime), and wakes everyone: the next waiter starts another.
struct Running(Arc<Shared>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.lock().running = false;
        self.0.wake_all();
    }
}

/// The listener: connects, `LISTEN`s, dispatches notifications; when the
/// connection fails, wakes everyone and reconnects after a backoff. Ends
/// when the storage is dropped.
async fn listen(
    shared: Arc<Shared>,
    connect: Connector,
    listen_sql: String,
    mut stop: watch::Receiver<()>,
) {
    let _running = Running(Arc::clone(&shared));
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut listened = false;
        let session = session(&shared, &connect, &listen_sql, &mut listened);
        let ended = tokio::select! {
            _ = stop.changed() => return,
            ended = session => ended,
        };
        if let Err(e) = ended {
            tracing::warn!(backend = crate::BACKEND, error = %pg_error(e), "the journal listener is down; reconnecting");
        }
        if listened {
            // Appends meanwhile went unheard: everyone reads again.
            shared.wake_all();
            backoff = MIN_BACKOFF;
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's life: connect, `LISTEN`, then dispatch until the
/// connection ends. Sets `listened` once the `LISTEN` is in force.
async fn session(
    shared: &Shared,
    connect: &Connector,
    listen_sql: &str,
    listened: &mut bool,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut notifications) = connect().await?;
    client.batch_execute(listen_sql).await?;
    *listened = true;
    // Whatever was appended before the LISTEN took effect was not
    // announced to us: the waiters registered by now read again (the ones
    // registering later read after this, and see it).
    shared.wake_all();
    while let Some(notification) = notifications.recv().await {
        shared.dispatch(notification.payload());
    }
    drop(client);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_escapes_and_round_trips() {
        let actors = ["a", "a", "b c", "100%", "line\nbreak", "nul\0", "é", "b c"];
        let payload = payload(actors);
        assert!(payload.bytes().all(|b| b.is_ascii_graphic() || b == b'\n'));
        let back: Vec<String> = payload.split('\n').filter_map(unescape).collect();
        assert_eq!(
            back,
            ["a", "b c", "100%", "line\nbreak", "nul\0", "é", "b c"]
        );
    }

    #[test]
    fn long_payload_means_any_actor() {
        let actors: Vec<String> = (0..1_000).map(|i| format!("actor-{i:04}")).collect();
        assert_eq!(payload(actors.iter().map(String::as_str)), "");
    }

    #[test]
    fn malformed_lines_are_refused() {
        for line in ["%", "%4", "%zz", "%FF", "%C3"] {
            assert_eq!(unescape(line), None, "{line}");
        }
        assert_eq!(unescape("%C3%A9").as_deref(), Some("é"));
    }

    #[test]
    fn waiters_deregister() {
        let watch = Watch::new("journal_test", None);
        let one = watch.register("a");
        let two = watch.register("a");
        let other = watch.register("b");
        assert_eq!(watch.shared.lock().actors.len(), 2);
        drop(one);
        watch.shared.dispatch("a");
        assert!(two.wake.has_changed().unwrap_or(false));
        assert!(!other.wake.has_changed().unwrap_or(true));
        drop((two, other));
        assert!(watch.shared.lock().actors.is_empty());
    }

    #[test]
    fn channel_fits_a_name() {
        assert_eq!(channel("journal"), "journal_journal");
        assert_eq!(channel(&"x".repeat(63)).len(), 63);
    }
}
