//! Streaming replay with one page prefetched.

use futures::stream::{self, StreamExt};
use journal_core::EntryStream;

use crate::ops::{self, RawPage};
use crate::threads::Pending;
use crate::SqliteJournalStorage;

struct State {
    storage: SqliteJournalStorage,
    actor_id: String,
    page_size: usize,
    /// The page being consumed and the next row of it.
    current: RawPage,
    index: usize,
    /// The next page, already requested; `None` once the journal ended.
    next: Option<Pending<RawPage>>,
    /// A consumed page whose buffers the next request reuses.
    spare: RawPage,
}

/// Requests the page starting at `from`, filled into `recycled` (a page the
/// consumer is done with), so page buffers are allocated once per stream
/// and never freed on another thread.
fn fetch(
    storage: &SqliteJournalStorage,
    actor_id: &str,
    from: u64,
    page_size: usize,
    recycled: RawPage,
) -> Pending<RawPage> {
    let span = tracing::debug_span!("replay_page", backend = crate::BACKEND, actor_id, from);
    let actor_id = actor_id.to_owned();
    // Started now, on a reader thread; awaited later.
    storage.read_now(move |conn| {
        let _entered = span.enter();
        ops::replay_range(conn, &actor_id, from, u64::MAX, page_size, recycled)
    })
}

pub(crate) fn replay(
    storage: SqliteJournalStorage,
    actor_id: &str,
    from: u64,
    page_size: usize,
) -> EntryStream<'static> {
    let page_size = page_size.max(1);
    let next = Some(fetch(
        &storage,
        actor_id,
        from.max(1),
        page_size,
        RawPage::default(),
    ));
    let state = State {
        storage,
        actor_id: actor_id.to_owned(),
        page_size,
        current: RawPage::default(),
        index: 0,
        next,
        spare: RawPage::default(),
    };
    stream::unfold(state, |mut state| async move {
        if state.index >= state.current.len() {
            let page = match state.next.take()?.await {
                Ok(page) => page,
                Err(e) => return Some((Err(e), state)),
            };
            // A full page may have more behind it: ask for it now, into the
            // buffers of the page just consumed.
            let consumed = std::mem::replace(&mut state.current, page);
            state.spare = consumed;
            state.index = 0;
            if state.current.len() == state.page_size {
                if let Some(after) = state.current.last_sequence().and_then(|s| s.checked_add(1)) {
                    let recycled = std::mem::take(&mut state.spare);
                    state.next = Some(fetch(
                        &state.storage,
                        &state.actor_id,
                        after,
                        state.page_size,
                        recycled,
                    ));
                }
            }
        }
        let entry = state.current.decode(&state.actor_id, state.index)?;
        state.index += 1;
        if entry.is_err() {
            state.next = None;
            state.index = state.current.len();
        }
        Some((entry, state))
    })
    .boxed()
}
