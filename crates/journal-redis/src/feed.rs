//! The feed over all actors and per tag (contract rule 28): per-bucket
//! streams of references, written by the append script (see the crate
//! docs, "Feed").
//!
//! Each bucket has a feed stream; the append script adds one reference
//! (actor id, first and last sequence of the batch) to it in the same
//! script as the entries, so references are in the bucket's commit order
//! and a stream only ever grows at its end. An offset holds, per bucket
//! that moved, the id of the last reference read (and, when a page ended
//! inside a batch, the last sequence given of it). A read takes the next
//! references of every bucket, interleaves them by stream id, and resolves
//! them into entries (an `XRANGE` of each actor's stream, then its
//! incarnation).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{self, StreamExt, TryStreamExt};
use journal_core::feed::{invalid_offset, FeedFilter, FeedItem, FeedOffset, JournalFeed};
use journal_core::{JournalEntry, JournalResult};
use redis::Value;

use crate::error::{bad_reply, redis_error, BACKEND};
use crate::keys::{self, BUCKETS};
use crate::{decode_entries, into_array, RedisJournalStorage};

/// References read per bucket in the first round of a page: every bucket
/// is read in that round, so this keeps it small. A later round (an
/// `XREAD` of the buckets that had more) costs about a millisecond, more
/// than parsing a few hundred references read in vain: with two, one
/// round fills a page of 1,000 when a hundred buckets hold batches of
/// several entries (with one it took two rounds, with 16 it parsed 1,552
/// references to use 100).
const FIRST_COUNT: usize = 2;

/// The most references read per bucket in one later round.
const MAX_COUNT: usize = 1_000;

/// Rounds of reads a page makes once it holds an entry (while it holds
/// none, it reads on until the references run out).
const MAX_ROUNDS: usize = 4;

/// Buckets resolved at once.
const RESOLVE_CONCURRENCY: usize = 16;

/// How long the cluster's slot map is used before it is read again (it is
/// read again at once after any redirection).
const NODE_MAP_TTL: Duration = Duration::from_secs(5);

/// How long a list of the buckets with a feed ([`KnownBuckets`]) is used
/// at most: a writer of a build before the count was kept creates feeds
/// without counting them, and a reader sees them within this long.
const RELIST_EVERY: Duration = Duration::from_secs(1);

/// The buckets that had a feed stream when the count of such buckets
/// (`Keys::feed_buckets`, kept by the append script on one server) was
/// `count`: feed streams are never removed, so while the count stays, no
/// other bucket has one, and a page reads only these.
#[derive(Debug, Clone)]
pub(crate) struct KnownBuckets {
    count: Counted,
    buckets: Vec<u16>,
    listed: Instant,
}

/// The count of buckets with a feed as read: its `n` and `id` fields, as
/// stored (`None` where absent).
pub(crate) type Counted = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A stream entry id, `<ms>-<seq>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct StreamId {
    ms: u64,
    seq: u64,
}

impl StreamId {
    fn parse(text: &str) -> Option<Self> {
        let (ms, seq) = text.split_once('-')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The smallest id after this one, if any.
    /// The id just before this one (`0-0` stays): reading after it reads
    /// this one again.
    fn previous(self) -> Self {
        match (self.ms, self.seq) {
            (ms, seq) if seq > 0 => StreamId { ms, seq: seq - 1 },
            (ms, _) if ms > 0 => StreamId {
                ms: ms - 1,
                seq: u64::MAX,
            },
            _ => self,
        }
    }

    fn next(self) -> Option<Self> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(StreamId { ms: self.ms, seq }),
            None => self.ms.checked_add(1).map(|ms| StreamId { ms, seq: 0 }),
        }
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Where a reader is in one bucket's feed: the last reference read, and
/// the last sequence given of it when only part of it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    id: StreamId,
    through: Option<u64>,
}

/// The first character of an offset: which feed made it.
fn marker(filter: &FeedFilter) -> char {
    match filter {
        FeedFilter::All => 'a',
        FeedFilter::Tag(_) => 't',
    }
}

/// Reads an offset: empty (the start), or the feed's marker, then
/// `bucket:ms-seq[:through]` per bucket that moved, in bucket order,
/// separated by commas.
fn parse_offset(
    filter: &FeedFilter,
    offset: &FeedOffset,
) -> JournalResult<BTreeMap<u16, Position>> {
    let mut positions = BTreeMap::new();
    if offset.is_start() {
        return Ok(positions);
    }
    let bad = |why: &str| invalid_offset(BACKEND, offset, why);
    let text = offset.as_str();
    let Some(rest) = text.strip_prefix(marker(filter)) else {
        return Err(bad("it does not start with this feed's marker"));
    };
    let mut previous: Option<u16> = None;
    for part in rest.split(',') {
        let mut fields = part.split(':');
        let (Some(bucket), Some(id), through, None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(bad("a part is not bucket:id[:sequence]"));
        };
        let bucket = bucket
            .parse::<u16>()
            .ok()
            .filter(|b| *b < BUCKETS && bucket.bytes().all(|c| c.is_ascii_digit()))
            .ok_or_else(|| bad("a bucket out of range"))?;
        if previous.is_some_and(|p| p >= bucket) {
            return Err(bad("buckets out of order"));
        }
        previous = Some(bucket);
        let id = StreamId::parse(id).ok_or_else(|| bad("a stream id that is not ms-seq"))?;
        let through = match through {
            None => None,
            Some(t) if !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()) => Some(
                t.parse::<u64>()
                    .map_err(|_| bad("a sequence out of range"))?,
            ),
            Some(_) => return Err(bad("a sequence that is not a number")),
        };
        positions.insert(bucket, Position { id, through });
    }
    Ok(positions)
}

#[cfg(test)]
fn encode_offset(filter: &FeedFilter, positions: &BTreeMap<u16, Position>) -> FeedOffset {
    FeedOffset::new(Segments::of(positions).text(marker(filter)))
}

/// Consecutive references of one actor and incarnation in a bucket, read
/// as one range of the actor's stream: their indices in the caller's list,
/// and the sequences from the first's first to the last's last.
struct RangeRead {
    refs: Vec<usize>,
    first: u64,
    last: u64,
}

/// One bucket's part of an offset: `bucket:ms-seq[:through]`.
fn segment(bucket: u16, position: &Position) -> String {
    let mut text = String::with_capacity(24);
    // Writing to a String cannot fail.
    let _ = write!(text, "{bucket}:{}", position.id);
    if let Some(through) = position.through {
        let _ = write!(text, ":{through}");
    }
    text
}

/// The parts of the offset a page is at, kept as the page moves, joined
/// once and patched in place where a bucket's part changes, so that each
/// item's offset is one copy of that text rather than a join of every
/// bucket's part ([`encode_offset`] gives the same text).
struct Segments {
    parts: BTreeMap<u16, String>,
    /// The parts in bucket order, separated by commas.
    joined: String,
    /// Where each bucket's part lies in `joined`.
    spans: BTreeMap<u16, std::ops::Range<usize>>,
}

impl Segments {
    fn of(positions: &BTreeMap<u16, Position>) -> Self {
        let mut segments = Segments {
            parts: positions
                .iter()
                .map(|(&bucket, position)| (bucket, segment(bucket, position)))
                .collect(),
            joined: String::new(),
            spans: BTreeMap::new(),
        };
        segments.join();
        segments
    }

    fn join(&mut self) {
        self.joined.clear();
        self.spans.clear();
        for (i, (&bucket, part)) in self.parts.iter().enumerate() {
            if i > 0 {
                self.joined.push(',');
            }
            let start = self.joined.len();
            self.joined.push_str(part);
            self.spans.insert(bucket, start..self.joined.len());
        }
    }

    fn set(&mut self, bucket: u16, position: &Position) {
        let part = segment(bucket, position);
        let Some(span) = self.spans.get(&bucket).cloned() else {
            // A bucket not in the offset yet: joined again (once a bucket).
            self.parts.insert(bucket, part);
            self.join();
            return;
        };
        let (old, new) = (span.len(), part.len());
        self.joined.replace_range(span.clone(), &part);
        self.spans.insert(bucket, span.start..span.start + new);
        if old != new {
            for later in self
                .spans
                .range_mut(bucket.saturating_add(1)..)
                .map(|(_, s)| s)
            {
                *later = later.start + new - old..later.end + new - old;
            }
        }
        self.parts.insert(bucket, part);
    }

    /// The offset's text, after the feed's `marker`.
    fn text(&self, marker: char) -> String {
        let mut text = String::with_capacity(1 + self.joined.len());
        text.push(marker);
        text.push_str(&self.joined);
        text
    }
}

/// The offsets of one page's items: the positions the page started from,
/// then each move of a bucket's position in the order the page made them;
/// offset `n` is the start with the first `n` moves made. Texts are made
/// on demand: patched from the last one made when asked for in order (an
/// item's text then costs one copy), or joined afresh from the positions
/// (the last item's alone: one join, whatever the page moved).
struct PageOffsets {
    marker: char,
    start: BTreeMap<u16, Position>,
    moves: Vec<(u16, Position)>,
    /// The positions after every move so far (the page reads on from them).
    now: BTreeMap<u16, Position>,
    /// The last text made, and after how many moves: patched from there.
    made: std::sync::Mutex<Option<(usize, Segments)>>,
    /// Each offset's text once made (offset `n` at `n`).
    texts: Vec<std::sync::OnceLock<String>>,
}

impl PageOffsets {
    fn new(filter: &FeedFilter, start: BTreeMap<u16, Position>) -> Self {
        PageOffsets {
            marker: marker(filter),
            now: start.clone(),
            start,
            moves: Vec::new(),
            made: std::sync::Mutex::new(None),
            texts: Vec::new(),
        }
    }

    /// Where each bucket's reading stands after the moves so far.
    fn positions(&self) -> &BTreeMap<u16, Position> {
        &self.now
    }

    /// Done moving: room for each offset's text.
    fn finished(mut self) -> Self {
        self.texts = (0..=self.moves.len())
            .map(|_| std::sync::OnceLock::new())
            .collect();
        self
    }

    /// Bucket `bucket` moved to `position`.
    fn moved(&mut self, bucket: u16, position: Position) {
        self.moves.push((bucket, position));
        self.now.insert(bucket, position);
    }

    /// The moves made so far: the index of the offset after them.
    fn moves(&self) -> usize {
        self.moves.len()
    }
}

impl journal_core::OffsetTexts for PageOffsets {
    fn text(&self, index: usize) -> &str {
        let index = index.min(self.moves.len());
        match self.texts.get(index) {
            Some(text) => text.get_or_init(|| self.make(index)),
            None => "",
        }
    }
}

impl PageOffsets {
    /// Makes the text of offset `index`.
    fn make(&self, index: usize) -> String {
        let mut made = self
            .made
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match made.as_mut() {
            Some((done, segments))
                if index
                    .checked_sub(*done)
                    .is_some_and(|steps| steps <= segments.parts.len().max(8)) =>
            {
                // A few moves on from the text made last: patched in.
                for (bucket, position) in &self.moves[*done..index] {
                    segments.set(*bucket, position);
                }
                *done = index;
            }
            _ => {
                // None made, far from it, or before it: the positions
                // then, joined once.
                let mut positions = self.start.clone();
                positions.extend(self.moves[..index].iter().copied());
                *made = Some((index, Segments::of(&positions)));
            }
        }
        made.as_ref()
            .map_or_else(String::new, |(_, segments)| segments.text(self.marker))
    }
}

/// One feed reference: a batch of one actor, or a run of its tagged
/// entries.
#[derive(Debug, Clone)]
struct Reference {
    bucket: u16,
    id: StreamId,
    actor: String,
    first: u64,
    last: u64,
    incarnation: Vec<u8>,
}

/// Reads an `XRANGE` reply of a feed stream.
fn parse_references(bucket: u16, reply: Value) -> JournalResult<Vec<Reference>> {
    let bad = || bad_reply("a feed reference");
    let mut references = Vec::new();
    for item in into_array(reply) {
        let mut parts = into_array(item).into_iter();
        let (Some(Value::BulkString(id)), Some(fields)) = (parts.next(), parts.next()) else {
            return Err(bad());
        };
        let id = std::str::from_utf8(&id)
            .ok()
            .and_then(StreamId::parse)
            .ok_or_else(bad)?;
        let (mut actor, mut first, mut last, mut incarnation) = (None, None, None, Vec::new());
        for pair in into_array(fields).chunks_exact(2) {
            let (Value::BulkString(name), Value::BulkString(value)) = (&pair[0], &pair[1]) else {
                return Err(bad());
            };
            let number = || {
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
            };
            match name.as_slice() {
                b"a" => actor = String::from_utf8(value.clone()).ok(),
                b"f" => first = number(),
                b"l" => last = number(),
                b"g" => incarnation.clone_from(value),
                _ => {}
            }
        }
        let (Some(actor), Some(first), Some(last)) = (actor, first, last) else {
            return Err(bad());
        };
        references.push(Reference {
            bucket,
            id,
            actor,
            first,
            last,
            incarnation,
        });
    }
    Ok(references)
}

/// The slot ranges of a cluster and the node serving each, as `CLUSTER
/// SLOTS` gives them, and when they were read.
pub(crate) type NodeMap = Option<(Instant, Vec<(u16, u16, String)>)>;

fn parse_slots(reply: Value) -> Vec<(u16, u16, String)> {
    let mut ranges = Vec::new();
    for range in into_array(reply) {
        let mut parts = into_array(range).into_iter();
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(node)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let mut node = into_array(node).into_iter();
        let (Some(host), Some(Value::Int(port))) = (node.next(), node.next()) else {
            continue;
        };
        let host = match host {
            Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Value::SimpleString(text) => text,
            _ => continue,
        };
        if let (Ok(start), Ok(end)) = (u16::try_from(start), u16::try_from(end)) {
            ranges.push((start, end, format!("{host}:{port}")));
        }
    }
    ranges
}

impl RedisJournalStorage {
    fn feed_key(&self, filter: &FeedFilter, bucket: u16) -> Vec<u8> {
        let keys = self.inner.keys.bucket(bucket);
        match filter {
            FeedFilter::All => keys.feed(),
            FeedFilter::Tag(tag) => keys.tag_feed(tag),
        }
    }

    /// The buckets grouped by the node serving them: one group of all on
    /// one server; per primary on a cluster (the slot map read at most
    /// every few seconds).
    async fn bucket_groups(&self, buckets: &[u16]) -> Vec<Vec<u16>> {
        if !self.is_clustered() {
            return vec![buckets.to_vec()];
        }
        let cached = self
            .inner
            .feed_nodes
            .lock()
            .ok()
            .and_then(|map| map.clone())
            .filter(|(at, _)| at.elapsed() < NODE_MAP_TTL)
            .map(|(_, ranges)| ranges);
        let ranges = if let Some(ranges) = cached {
            ranges
        } else {
            let read = async {
                let mut lease = self.lease().await.ok()?;
                let reply: Value = lease
                    .query_slot(&redis::cmd("CLUSTER").arg("SLOTS").clone(), 0)
                    .await
                    .ok()?;
                Some(parse_slots(reply))
            };
            let ranges = read.await.unwrap_or_default();
            if let Ok(mut map) = self.inner.feed_nodes.lock() {
                *map = Some((Instant::now(), ranges.clone()));
            }
            ranges
        };
        let mut groups: BTreeMap<String, Vec<u16>> = BTreeMap::new();
        for &bucket in buckets {
            let slot = keys::slot_of_bucket(bucket);
            let node = ranges
                .iter()
                .find(|(start, end, _)| (*start..=*end).contains(&slot))
                .map_or_else(|| format!("slot {slot}"), |(_, _, node)| node.clone());
            groups.entry(node).or_default().push(bucket);
        }
        groups.into_values().collect()
    }

    fn forget_nodes(&self) {
        if let Ok(mut map) = self.inner.feed_nodes.lock() {
            *map = None;
        }
    }

    /// Up to `count` references of each bucket after its position:
    /// one pipeline per node, and a command of its own (which the cluster
    /// client routes and redirects) for a bucket the pipeline's node did
    /// not serve.
    async fn read_references(
        &self,
        filter: &FeedFilter,
        buckets: &[u16],
        positions: &BTreeMap<u16, Position>,
        count: usize,
    ) -> JournalResult<Vec<(u16, Vec<Reference>)>> {
        let command = |bucket: u16| -> Option<redis::Cmd> {
            let start = match positions.get(&bucket) {
                None => "-".to_owned(),
                Some(Position {
                    id,
                    through: Some(_),
                }) => id.to_string(),
                Some(Position { id, through: None }) => id.next()?.to_string(),
            };
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(self.feed_key(filter, bucket))
                .arg(start)
                .arg("+")
                .arg("COUNT")
                .arg(count);
            Some(cmd)
        };
        let clustered = self.is_clustered();
        if !clustered {
            return self
                .read_references_at_once(filter, buckets, positions, count)
                .await;
        }
        let groups = self.bucket_groups(buckets).await;
        let reads = groups.into_iter().map(|group| {
            let command = &command;
            async move {
                let commands: Vec<(u16, redis::Cmd)> = group
                    .iter()
                    .filter_map(|&b| command(b).map(|cmd| (b, cmd)))
                    .collect();
                let Some(&(first, _)) = commands.first() else {
                    return Ok(Vec::new());
                };
                let mut pipe = redis::pipe();
                for (_, cmd) in &commands {
                    pipe.add_command(cmd.clone());
                }
                let replies = {
                    let mut lease = self.lease().await?;
                    lease
                        .query_pipe_values(&pipe, keys::slot_of_bucket(first))
                        .await
                };
                let replies = match replies {
                    Ok(replies) if replies.len() == commands.len() => replies,
                    Ok(_) if !clustered => return Err(bad_reply("a feed read")),
                    Err(e) if !clustered => return Err(redis_error(e)),
                    // The node map is stale (a slot moved, a failover):
                    // each bucket on its own, redirected as needed.
                    _ => {
                        self.forget_nodes();
                        vec![Value::Nil; 0]
                    }
                };
                let mut out = Vec::with_capacity(commands.len());
                let mut retry = Vec::new();
                if replies.is_empty() {
                    retry.extend(commands.iter().cloned());
                } else {
                    for ((bucket, cmd), reply) in commands.iter().zip(replies) {
                        match reply {
                            Value::ServerError(e) if clustered => {
                                tracing::debug!(backend = BACKEND, bucket, error = ?e, "feed read redirected");
                                retry.push((*bucket, cmd.clone()));
                            }
                            Value::ServerError(e) => return Err(redis_error(e.into())),
                            reply => out.push((*bucket, parse_references(*bucket, reply)?)),
                        }
                    }
                }
                if !retry.is_empty() {
                    self.forget_nodes();
                    let retried: Vec<(u16, Vec<Reference>)> = stream::iter(retry)
                        .map(|(bucket, cmd)| async move {
                            let reply: Value = self.query(&cmd).await?;
                            Ok::<_, journal_core::JournalError>((
                                bucket,
                                parse_references(bucket, reply)?,
                            ))
                        })
                        .buffer_unordered(RESOLVE_CONCURRENCY)
                        .try_collect()
                        .await?;
                    out.extend(retried);
                }
                Ok::<_, journal_core::JournalError>(out)
            }
        });
        let read = futures::future::try_join_all(reads).await?;
        Ok(read.into_iter().flatten().collect())
    }

    /// [`Self::read_references`] on one server: one `XREAD` over the
    /// buckets' streams, which answers only for the streams that hold
    /// references after their position (most buckets have none). The
    /// first round of a page over all actors reads only the buckets known
    /// to have a feed while the count of such buckets stays as it was when
    /// they were listed ([`KnownBuckets`]), and every bucket otherwise.
    async fn read_references_at_once(
        &self,
        filter: &FeedFilter,
        buckets: &[u16],
        positions: &BTreeMap<u16, Position>,
        count: usize,
    ) -> JournalResult<Vec<(u16, Vec<Reference>)>> {
        let every = self.inner.count_feeds
            && *filter == FeedFilter::All
            && buckets.len() == usize::from(BUCKETS);
        if !every {
            let (_, read) = self.xread(filter, buckets, positions, count, false).await?;
            return Ok(read);
        }
        let known = self
            .inner
            .feed_buckets
            .lock()
            .ok()
            .and_then(|known| known.clone())
            .filter(|known| known.listed.elapsed() < RELIST_EVERY);
        if let Some(known) = known {
            let narrowed = sorted_union(known.buckets.iter().copied(), positions.keys().copied());
            let (counted, read) = self
                .xread(filter, &narrowed, positions, count, true)
                .await?;
            if counted.as_ref() == Some(&known.count) {
                return Ok(read);
            }
        }
        // A bucket may have a feed the list does not know of: every bucket,
        // then the list made again.
        let (counted, read) = self.xread(filter, buckets, positions, count, true).await?;
        let listed = sorted_union(positions.keys().copied(), read.iter().map(|(b, _)| *b));
        if let Ok(mut known) = self.inner.feed_buckets.lock() {
            *known = counted.map(|count| KnownBuckets {
                count,
                buckets: listed,
                listed: Instant::now(),
            });
        }
        Ok(read)
    }

    /// One `XREAD` of `count` references per bucket of `buckets` after its
    /// position; with `counted`, after an `HMGET` of the count of buckets
    /// with a feed in the same pipeline, which it returns (`None` without
    /// it, or when the key is not a hash).
    async fn xread(
        &self,
        filter: &FeedFilter,
        buckets: &[u16],
        positions: &BTreeMap<u16, Position>,
        count: usize,
        counted: bool,
    ) -> JournalResult<(Option<Counted>, Vec<(u16, Vec<Reference>)>)> {
        let mut keys: Vec<Vec<u8>> = Vec::with_capacity(buckets.len());
        let mut after: Vec<String> = Vec::with_capacity(buckets.len());
        let mut bucket_of: HashMap<Vec<u8>, u16> = HashMap::with_capacity(buckets.len());
        for &bucket in buckets {
            // XREAD reads after an id: a reference read in part is read
            // again from just before it.
            let id = match positions.get(&bucket) {
                None => "0-0".to_owned(),
                Some(Position { id, through: None }) => id.to_string(),
                Some(Position {
                    id,
                    through: Some(_),
                }) => id.previous().to_string(),
            };
            let key = self.feed_key(filter, bucket);
            bucket_of.insert(key.clone(), bucket);
            keys.push(key);
            after.push(id);
        }
        let mut pipe = redis::pipe();
        if counted {
            pipe.cmd("HMGET")
                .arg(self.inner.keys.feed_buckets())
                .arg("n")
                .arg("id");
        }
        if !keys.is_empty() {
            pipe.cmd("XREAD")
                .arg("COUNT")
                .arg(count)
                .arg("STREAMS")
                .arg(&keys)
                .arg(&after);
        }
        if pipe.is_empty() {
            return Ok((None, Vec::new()));
        }
        let mut replies = self
            .lease()
            .await?
            .query_pipe_values(&pipe, 0)
            .await
            .map_err(redis_error)?
            .into_iter();
        let field = |value: Option<Value>| match value {
            Some(Value::Nil) => Ok(None),
            Some(Value::BulkString(bytes)) => Ok(Some(bytes)),
            _ => Err(bad_reply("the count of buckets with a feed")),
        };
        let buckets_counted = if counted {
            match replies.next() {
                Some(Value::Array(fields)) if fields.len() == 2 => {
                    let mut fields = fields.into_iter();
                    Some((field(fields.next())?, field(fields.next())?))
                }
                // Not a hash (another program's key): not trusted, every
                // bucket is read.
                Some(Value::ServerError(_)) => None,
                _ => return Err(bad_reply("the count of buckets with a feed")),
            }
        } else {
            None
        };
        if keys.is_empty() {
            return Ok((buckets_counted, Vec::new()));
        }
        let streams: Vec<(Value, Value)> = match replies.next() {
            Some(Value::Nil) => Vec::new(),
            Some(Value::Map(pairs)) => pairs,
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::Array(pair) if pair.len() == 2 => {
                        let mut pair = pair.into_iter();
                        match (pair.next(), pair.next()) {
                            (Some(key), Some(entries)) => Ok((key, entries)),
                            _ => Err(bad_reply("a feed read")),
                        }
                    }
                    _ => Err(bad_reply("a feed read")),
                })
                .collect::<JournalResult<_>>()?,
            Some(Value::ServerError(e)) => return Err(redis_error(e.into())),
            _ => return Err(bad_reply("a feed read")),
        };
        let mut out = Vec::with_capacity(streams.len());
        for (key, entries) in streams {
            let key = match key {
                Value::BulkString(bytes) => bytes,
                Value::SimpleString(text) => text.into_bytes(),
                _ => return Err(bad_reply("a feed read")),
            };
            let Some(&bucket) = bucket_of.get(&key) else {
                return Err(bad_reply("a feed read"));
            };
            out.push((bucket, parse_references(bucket, entries)?));
        }
        Ok((buckets_counted, out))
    }

    /// Resolves references into their entries: per bucket, consecutive
    /// references of one actor (and incarnation) become one `XRANGE` of the
    /// actor's stream, followed by an `HGET` of the actor's incarnation,
    /// sent as one pipeline per node (a bucket's keys share its slot). The
    /// incarnation is read after the entries on the same connection, which
    /// runs them in order: when it is still the reference's, no deletion
    /// came between the reference and the read, so the entries are the
    /// ones it named; otherwise the reference gives nothing. Plain commands
    /// in place of a read-only script per bucket: a script's `XRANGE` is
    /// turned into Lua tables and back, which doubled the cost of a page.
    async fn resolve(&self, references: &[Reference]) -> JournalResult<Vec<Vec<JournalEntry>>> {
        let by_bucket = range_reads(references);
        let buckets: Vec<u16> = by_bucket.keys().copied().collect();
        let groups = self.bucket_groups(&buckets).await;
        let by_bucket = &by_bucket;
        let resolved: Vec<Vec<(usize, Vec<JournalEntry>)>> = stream::iter(groups)
            .map(|group| async move {
                let reads: Vec<(u16, &RangeRead)> = group
                    .iter()
                    .flat_map(|&b| {
                        by_bucket
                            .get(&b)
                            .into_iter()
                            .flatten()
                            .map(move |read| (b, read))
                    })
                    .collect();
                let Some(&(first_bucket, _)) = reads.first() else {
                    return Ok(Vec::new());
                };
                let mut pipe = redis::pipe();
                for &(bucket, read) in &reads {
                    for cmd in self.range_read(bucket, read, references) {
                        pipe.add_command(cmd);
                    }
                }
                let replies = {
                    let mut lease = self.lease().await?;
                    lease
                        .query_pipe_values(&pipe, keys::slot_of_bucket(first_bucket))
                        .await
                };
                let mut replies = match replies {
                    Ok(replies) if replies.len() == 2 * reads.len() => replies.into_iter(),
                    // The node map is stale, or the pipeline failed: each
                    // read on its own below.
                    _ => {
                        self.forget_nodes();
                        Vec::new().into_iter()
                    }
                };
                let mut out = Vec::new();
                for &(bucket, read) in &reads {
                    let (entries, incarnation) = match (replies.next(), replies.next()) {
                        (Some(entries), Some(incarnation))
                            if !matches!(entries, Value::ServerError(_))
                                && !matches!(incarnation, Value::ServerError(_)) =>
                        {
                            (entries, incarnation)
                        }
                        // A slot that moved: this read again on its own,
                        // the entries first (redirected as needed).
                        _ => {
                            tracing::debug!(backend = BACKEND, bucket, "feed resolve sent again");
                            let [entries, incarnation] = self.range_read(bucket, read, references);
                            let entries: Value = self.query(&entries).await?;
                            let incarnation: Value = self.query(&incarnation).await?;
                            (entries, incarnation)
                        }
                    };
                    out.extend(split_read(read, references, entries, incarnation)?);
                }
                Ok::<_, journal_core::JournalError>(out)
            })
            .buffer_unordered(RESOLVE_CONCURRENCY)
            .try_collect()
            .await?;
        let mut entries = vec![Vec::new(); references.len()];
        for (i, got) in resolved.into_iter().flatten() {
            if let Some(slot) = entries.get_mut(i) {
                *slot = got;
            }
        }
        Ok(entries)
    }

    /// The two commands of a [`RangeRead`]: the entries, then the actor's
    /// incarnation.
    fn range_read(
        &self,
        bucket: u16,
        read: &RangeRead,
        references: &[Reference],
    ) -> [redis::Cmd; 2] {
        let actor = references[read.refs[0]].actor.as_str();
        let mut entries = redis::cmd("XRANGE");
        entries
            .arg(self.inner.keys.actor(actor).entries())
            .arg(format!("{}-0", read.first))
            .arg(read.last.to_string());
        let mut incarnation = redis::cmd("HGET");
        incarnation
            .arg(self.inner.keys.bucket(bucket).incarnations())
            .arg(actor);
        [entries, incarnation]
    }
}

/// The buckets of `a` and of `b`, in order, once each.
fn sorted_union(a: impl Iterator<Item = u16>, b: impl Iterator<Item = u16>) -> Vec<u16> {
    let mut buckets: Vec<u16> = a.chain(b).collect();
    buckets.sort_unstable();
    buckets.dedup();
    buckets
}

/// A page's references as range reads, per bucket: consecutive references
/// of one actor and incarnation with adjoining sequences make one read.
fn range_reads(references: &[Reference]) -> BTreeMap<u16, Vec<RangeRead>> {
    let mut by_bucket: BTreeMap<u16, Vec<RangeRead>> = BTreeMap::new();
    for (i, reference) in references.iter().enumerate() {
        // A reference naming an actor of another bucket (which only a hand
        // edit makes) would read across slots: it gives nothing.
        if keys::bucket_of(&reference.actor) != reference.bucket {
            continue;
        }
        let reads = by_bucket.entry(reference.bucket).or_default();
        let joins = reads.last().is_some_and(|read| {
            let head = &references[read.refs[0]];
            head.actor == reference.actor
                && head.incarnation == reference.incarnation
                && read.last.checked_add(1) == Some(reference.first)
        });
        match reads.last_mut() {
            Some(read) if joins => {
                read.last = reference.last;
                read.refs.push(i);
            }
            _ => reads.push(RangeRead {
                refs: vec![i],
                first: reference.first,
                last: reference.last,
            }),
        }
    }
    by_bucket
}

/// Hands each reference of `read` its entries from the read's two replies:
/// none when the actor's incarnation is not the references' any more.
fn split_read(
    read: &RangeRead,
    references: &[Reference],
    entries: Value,
    incarnation: Value,
) -> JournalResult<Vec<(usize, Vec<JournalEntry>)>> {
    let head = &references[read.refs[0]];
    let current = match incarnation {
        Value::Nil => Vec::new(),
        Value::BulkString(bytes) => bytes,
        _ => return Err(bad_reply("an actor's incarnation")),
    };
    let mut entries = if current == head.incarnation {
        decode_entries(&head.actor, entries)?
    } else {
        Vec::new()
    }
    .into_iter()
    .peekable();
    let mut out = Vec::with_capacity(read.refs.len());
    for &i in &read.refs {
        let last = references[i].last;
        let mut own = Vec::new();
        while let Some(entry) = entries.next_if(|e| e.sequence <= last) {
            own.push(entry);
        }
        out.push((i, own));
    }
    Ok(out)
}

/// The feed (contract rule 28) from per-bucket streams of references that
/// the append script writes with the entries (see the crate docs, "Feed").
#[async_trait]
impl JournalFeed for RedisJournalStorage {
    /// Reads the next references of every bucket (one pipelined `XRANGE`
    /// per bucket, a pipeline per node), interleaves them by stream id,
    /// and resolves them into entries. Each bucket's references are taken
    /// in stream order, so each actor's entries come in sequence order.
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn read_feed(
        &self,
        filter: &FeedFilter,
        after: &FeedOffset,
        max: usize,
    ) -> JournalResult<Vec<FeedItem>> {
        let positions = parse_offset(filter, after)?;
        // Each item's offset is the page's first positions with the moves
        // made before it: its text is made only when asked for
        // (`PageOffsets`), so a page costs one offset text, not one per
        // item (each as long as the buckets the reader has seen).
        let mut page = PageOffsets::new(filter, positions);
        let mut fed: Vec<FeedItem> = Vec::new();
        let mut moves: Vec<usize> = Vec::new();
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut active: Vec<u16> = (0..BUCKETS).collect();
        let mut rounds = 0;
        'rounds: while fed.len() < max && !active.is_empty() {
            if !fed.is_empty() && rounds >= MAX_ROUNDS {
                break;
            }
            rounds += 1;
            let need = max - fed.len();
            let count = if rounds == 1 {
                need.min(FIRST_COUNT)
            } else {
                need.div_ceil(active.len()).clamp(1, MAX_COUNT)
            };
            let read = self
                .read_references(filter, &active, page.positions(), count)
                .await?;
            active = read
                .iter()
                .filter(|(_, refs)| refs.len() >= count)
                .map(|(bucket, _)| *bucket)
                .collect();
            active.sort_unstable();
            let mut references: Vec<Reference> =
                read.into_iter().flat_map(|(_, refs)| refs).collect();
            references.sort_by_key(|r| (r.id, r.bucket));
            for reference in &mut references {
                if let Some(Position {
                    id,
                    through: Some(through),
                }) = page.positions().get(&reference.bucket)
                {
                    if *id == reference.id {
                        reference.first = reference.first.max(through.saturating_add(1));
                    }
                }
            }
            let mut rest = references.as_slice();
            while !rest.is_empty() {
                let need = u64::try_from(max - fed.len()).unwrap_or(u64::MAX);
                let mut estimate = 0u64;
                let mut take = 0;
                for reference in rest {
                    take += 1;
                    let size = reference
                        .last
                        .checked_sub(reference.first)
                        .map_or(0, |d| d.saturating_add(1));
                    estimate = estimate.saturating_add(size);
                    if estimate >= need {
                        break;
                    }
                }
                let (chunk, tail) = rest.split_at(take.min(rest.len()));
                rest = tail;
                let resolved = self.resolve(chunk).await?;
                for (reference, entries) in chunk.iter().zip(resolved) {
                    for entry in entries {
                        if entry.sequence < reference.first || entry.sequence > reference.last {
                            continue;
                        }
                        if fed.len() >= max {
                            break 'rounds;
                        }
                        let whole = entry.sequence >= reference.last;
                        let position = Position {
                            id: reference.id,
                            through: (!whole).then_some(entry.sequence),
                        };
                        page.moved(reference.bucket, position);
                        moves.push(page.moves());
                        fed.push(FeedItem {
                            offset: FeedOffset::start(),
                            entry,
                        });
                    }
                    // Read to its end (entries truncated or deleted since
                    // are not there): the next read starts after it.
                    let position = Position {
                        id: reference.id,
                        through: None,
                    };
                    page.moved(reference.bucket, position);
                }
                if fed.len() >= max {
                    break 'rounds;
                }
            }
        }
        let texts: Arc<dyn journal_core::OffsetTexts> = Arc::new(page.finished());
        for (item, moves) in fed.iter_mut().zip(moves) {
            item.offset = FeedOffset::deferred(Arc::clone(&texts), moves);
        }
        Ok(fed)
    }

    /// Waits out `timeout` (the feed's poll interval), checking the offset
    /// first: Redis has no wake-up across buckets, so a reader polls.
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn wait_for_feed(
        &self,
        filter: &FeedFilter,
        after: &FeedOffset,
        timeout: Duration,
    ) -> JournalResult<()> {
        parse_offset(filter, after)?;
        tokio::time::sleep(timeout).await;
        Ok(())
    }
}

/// Projections' offsets in one hash (`projections`, in bucket 0's slot), by
/// name: as durable as the server's persistence makes a write (no `WAIT`).
#[async_trait]
impl journal_core::ProjectionStore for RedisJournalStorage {
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn load_offset(&self, projection: &str) -> JournalResult<Option<FeedOffset>> {
        journal_core::projection::validate_projection_name(projection)?;
        let mut cmd = redis::cmd("HGET");
        cmd.arg(self.inner.keys.projections())
            .arg(projection.as_bytes());
        let stored: Option<Vec<u8>> = self.query(&cmd).await?;
        stored
            .map(|bytes| {
                String::from_utf8(bytes).map(FeedOffset::new).map_err(|_| {
                    journal_core::JournalError::storage(
                        BACKEND,
                        "a stored projection offset is not UTF-8",
                    )
                })
            })
            .transpose()
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn save_offset(&self, projection: &str, offset: &FeedOffset) -> JournalResult<()> {
        journal_core::projection::validate_projection_name(projection)?;
        let any_tag = FeedFilter::Tag(String::new());
        if parse_offset(&FeedFilter::All, offset).is_err() {
            parse_offset(&any_tag, offset)?;
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.inner.keys.projections())
            .arg(projection.as_bytes())
            .arg(offset.as_str().as_bytes());
        let _: i64 = self.query(&cmd).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_foreign_ones_are_refused() {
        let mut positions = BTreeMap::new();
        positions.insert(
            3,
            Position {
                id: StreamId { ms: 17, seq: 2 },
                through: None,
            },
        );
        positions.insert(
            1023,
            Position {
                id: StreamId { ms: 18, seq: 0 },
                through: Some(5),
            },
        );
        let offset = encode_offset(&FeedFilter::All, &positions);
        assert_eq!(offset.as_str(), "a3:17-2,1023:18-0:5");
        assert_eq!(
            parse_offset(&FeedFilter::All, &offset).ok(),
            Some(positions)
        );
        let tag = FeedFilter::Tag("x".into());
        assert!(parse_offset(&tag, &offset).is_err());
        for bad in [
            "a",
            "a1024:1-0",
            "a3:1-0,3:1-0",
            "a3:1-0,2:1-0",
            "a3:1",
            "a3:1-0:",
            "a3:1-0:x",
            "a3:1-0:1:2",
            "a+3:1-0",
            "a3:+1-0",
            "-1",
            "\u{0}",
            "99999999999999999999999999999",
        ] {
            assert!(
                parse_offset(&FeedFilter::All, &FeedOffset::new(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    /// An offset patched bucket by bucket, through parts growing and
    /// shrinking, reads as the same positions joined afresh.
    #[test]
    fn patched_offsets_equal_joined_ones() {
        let mut positions: BTreeMap<u16, Position> = BTreeMap::new();
        positions.insert(
            7,
            Position {
                id: StreamId { ms: 4, seq: 1 },
                through: None,
            },
        );
        let mut page = PageOffsets::new(&FeedFilter::All, positions.clone());
        let mut expected = vec![encode_offset(&FeedFilter::All, &positions)];
        let steps = [
            (5, 1, None),
            (900, 22, Some(7)),
            (5, 1_000_000, Some(12_345)),
            (0, 3, None),
            (5, 2, None),
            (900, 22, None),
            (1023, 9, Some(1)),
            (0, 123_456_789, Some(99)),
        ];
        for (bucket, ms, through) in steps {
            let position = Position {
                id: StreamId { ms, seq: 0 },
                through,
            };
            page.moved(bucket, position);
            positions.insert(bucket, position);
            assert_eq!(page.positions(), &positions);
            assert_eq!(page.moves(), expected.len());
            expected.push(encode_offset(&FeedFilter::All, &positions));
        }
        let texts: Arc<dyn journal_core::OffsetTexts> = Arc::new(page.finished());
        let offset = |n: usize| FeedOffset::deferred(Arc::clone(&texts), n);
        // In order, as a reader goes through a page, then backwards (each
        // made again from the start), then the last alone.
        for (n, want) in expected.iter().enumerate() {
            assert_eq!(&offset(n), want, "offset {n} in order");
            assert_eq!(
                parse_offset(&FeedFilter::All, &offset(n)).expect("parse"),
                parse_offset(&FeedFilter::All, want).expect("parse")
            );
        }
        for (n, want) in expected.iter().enumerate().rev() {
            assert_eq!(&offset(n), want, "offset {n} backwards");
        }
        assert_eq!(offset(steps.len()).as_str(), expected[steps.len()].as_str());
        let tag = PageOffsets::new(&FeedFilter::Tag("x".into()), positions.clone()).finished();
        let text = journal_core::OffsetTexts::text(&tag, 0);
        assert_eq!(
            text,
            encode_offset(&FeedFilter::Tag("x".into()), &positions).as_str()
        );
    }

    #[test]
    fn stream_ids_step_on() {
        assert_eq!(
            StreamId { ms: 1, seq: 2 }.next(),
            Some(StreamId { ms: 1, seq: 3 })
        );
        assert_eq!(
            StreamId {
                ms: 1,
                seq: u64::MAX
            }
            .next(),
            Some(StreamId { ms: 2, seq: 0 })
        );
        assert_eq!(
            StreamId {
                ms: u64::MAX,
                seq: u64::MAX
            }
            .next(),
            None
        );
    }
}
