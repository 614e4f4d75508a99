//! Checkpoints: when to take them, how they are compressed, how they are
//! loaded safely, and how many are kept.

use std::sync::Arc;
use std::time::Duration;

use crate::config::DurabilityConfig;
use crate::error::{JournalError, JournalResult};
use crate::proto::{Checkpoint, CompressionType};
use crate::storage::JournalStorage;

/// Default limit of a checkpoint's state, compressed or not: 256 MiB.
pub const DEFAULT_MAX_CHECKPOINT_BYTES: u64 = 256 * 1024 * 1024;
/// Default number of checkpoints kept per actor.
pub const DEFAULT_CHECKPOINTS_TO_KEEP: usize = 2;
/// Default zstd level.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// States at least this large are (de)compressed on a blocking thread, off
/// the async runtime. On load, "large" is the larger of the stored bytes
/// and the decompressed size the checkpoint claims (decoding never produces
/// more than the claim, see [`inflate`]): a 64 MiB state stored in 6 KiB
/// is large.
pub(crate) const OFF_RUNTIME_BYTES: usize = 256 * 1024;

/// How checkpoints are taken, encoded, loaded and kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Take one after this many entries (0: never by count).
    pub interval: u64,
    /// Take one when this long has passed since the last (`None`: never by
    /// time).
    pub timeout: Option<Duration>,
    /// How state is compressed.
    pub compression: CompressionType,
    /// zstd level (1 to 22).
    pub level: i32,
    /// State schema version written, and required on load.
    pub schema_version: u32,
    /// Checkpoints kept per actor (at least 1).
    pub keep: usize,
    /// Truncate the journal up to the oldest kept checkpoint after saving.
    pub truncate_journal: bool,
    /// Largest state accepted on load, compressed and uncompressed.
    pub max_state_bytes: u64,
    /// Fail loading on an undecodable checkpoint instead of falling back.
    pub fail_on_corrupt: bool,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            interval: 100,
            timeout: None,
            compression: CompressionType::Zstd,
            level: DEFAULT_ZSTD_LEVEL,
            schema_version: 1,
            keep: DEFAULT_CHECKPOINTS_TO_KEEP,
            truncate_journal: false,
            max_state_bytes: DEFAULT_MAX_CHECKPOINT_BYTES,
            fail_on_corrupt: false,
        }
    }
}

impl CheckpointPolicy {
    /// The policy a [`DurabilityConfig`] describes; zero values mean the
    /// defaults.
    pub fn from_config(config: &DurabilityConfig) -> Self {
        let defaults = CheckpointPolicy::default();
        CheckpointPolicy {
            interval: config.checkpoint_interval,
            timeout: config
                .checkpoint_timeout
                .and_then(|d| Duration::try_from(d).ok())
                .filter(|d| !d.is_zero()),
            compression: CompressionType::try_from(config.compression)
                .unwrap_or(CompressionType::None),
            level: if config.compression_level == 0 {
                defaults.level
            } else {
                config.compression_level.clamp(1, 22)
            },
            schema_version: config.state_schema_version,
            keep: match config.checkpoints_to_keep {
                0 => defaults.keep,
                n => n as usize,
            },
            truncate_journal: config.truncate_after_checkpoint,
            max_state_bytes: match config.max_checkpoint_bytes {
                0 => defaults.max_state_bytes,
                n => n,
            },
            fail_on_corrupt: config.fail_on_corrupt_checkpoint,
        }
    }

    /// Whether a checkpoint is due after `entries` entries and `elapsed`
    /// time since the last one.
    pub fn is_due(&self, entries: u64, elapsed: Duration) -> bool {
        entries > 0
            && ((self.interval > 0 && entries >= self.interval)
                || self.timeout.is_some_and(|t| elapsed >= t))
    }

    /// A checkpoint of `state` after entry `sequence`, compressed as the
    /// policy says.
    pub fn encode(&self, actor_id: &str, sequence: u64, state: &[u8]) -> JournalResult<Checkpoint> {
        let mut checkpoint = Checkpoint::new(actor_id, sequence, Vec::new());
        checkpoint.uncompressed_size = state.len() as u64;
        checkpoint.state_schema_version = self.schema_version;
        checkpoint.compression = self.compression.into();
        checkpoint.state_data = match self.compression {
            CompressionType::None => state.to_vec(),
            CompressionType::Zstd => {
                compress(state, self.level).map_err(|e| JournalError::storage("checkpoint", e))?
            }
        };
        Ok(checkpoint)
    }

    /// A checkpoint of the state that is `pieces` end to end, after entry
    /// `sequence`. With zstd, each fresh piece is compressed into a frame of
    /// its own and each framed piece's frame copied as it is: concatenated
    /// zstd frames decode as the concatenation of their contents, so what
    /// is stored decodes like [`CheckpointPolicy::encode`]'s output, by any
    /// build. Without compression the fresh pieces are joined, and a
    /// framed piece is an error.
    pub(crate) fn encode_pieces(
        &self,
        actor_id: &str,
        sequence: u64,
        pieces: &[StatePiece],
    ) -> JournalResult<Checkpoint> {
        if self.compression == CompressionType::None {
            let mut state = Vec::with_capacity(pieces.iter().map(StatePiece::raw_len).sum());
            for piece in pieces {
                match piece {
                    StatePiece::Fresh(bytes) => state.extend_from_slice(bytes),
                    StatePiece::Framed { .. } => {
                        return Err(JournalError::storage(
                            "checkpoint",
                            "a compressed piece of a state stored uncompressed",
                        ))
                    }
                }
            }
            return self.encode(actor_id, sequence, &state);
        }
        let mut checkpoint = Checkpoint::new(actor_id, sequence, Vec::new());
        checkpoint.state_schema_version = self.schema_version;
        checkpoint.compression = CompressionType::Zstd.into();
        let (mut raw, mut stored) = (0u64, Vec::new());
        for piece in pieces {
            match piece {
                StatePiece::Fresh(bytes) if bytes.is_empty() => {}
                StatePiece::Fresh(bytes) => {
                    raw += bytes.len() as u64;
                    stored.extend(
                        compress(bytes, self.level)
                            .map_err(|e| JournalError::storage("checkpoint", e))?,
                    );
                }
                StatePiece::Framed { len, frame } => {
                    raw += *len as u64;
                    stored.extend_from_slice(frame);
                }
            }
        }
        if stored.is_empty() {
            // An empty state is still one frame, as `encode` writes it.
            stored =
                compress(&[], self.level).map_err(|e| JournalError::storage("checkpoint", e))?;
        }
        checkpoint.uncompressed_size = raw;
        checkpoint.state_data = stored;
        Ok(checkpoint)
    }

    /// The state of `checkpoint`, decompressed within `max_state_bytes`, of
    /// this policy's schema version; anything else is `CorruptCheckpoint`.
    pub fn decode(&self, checkpoint: &Checkpoint) -> JournalResult<Vec<u8>> {
        let corrupt = |reason: String| JournalError::CorruptCheckpoint {
            actor_id: checkpoint.actor_id.clone(),
            sequence: checkpoint.sequence,
            reason,
        };
        if checkpoint.state_schema_version != self.schema_version {
            return Err(corrupt(format!(
                "state schema version {}, this actor reads version {}",
                checkpoint.state_schema_version, self.schema_version
            )));
        }
        let limit = self.max_state_bytes;
        let claimed = checkpoint.uncompressed_size;
        if claimed > limit || checkpoint.state_data.len() as u64 > max_stored_bytes(limit) {
            return Err(corrupt(format!(
                "state of {claimed} bytes ({} stored) is over the limit of {limit}",
                checkpoint.state_data.len()
            )));
        }
        let state = match CompressionType::try_from(checkpoint.compression) {
            Ok(CompressionType::None) => checkpoint.state_data.clone(),
            Ok(CompressionType::Zstd) => {
                inflate(&checkpoint.state_data, claimed, limit).map_err(corrupt)?
            }
            Err(_) => {
                return Err(corrupt(format!(
                    "unknown compression {}",
                    checkpoint.compression
                )))
            }
        };
        if state.len() as u64 != claimed {
            return Err(corrupt(format!(
                "state is {} bytes, the checkpoint claims {claimed}",
                state.len()
            )));
        }
        Ok(state)
    }
}

/// A byte count as `usize` (saturating).
fn state_len(bytes: u64) -> usize {
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

/// zstd's smallest and largest window logs (`ZSTD_WINDOWLOG_MIN`,
/// `ZSTD_WINDOWLOG_MAX` on 64-bit targets).
const WINDOW_LOG_RANGE: (u32, u32) = (10, 31);

/// The window log a decoder accepts under `limit`: that of the smallest
/// power of two at least `limit`, within zstd's range. No frame of a state
/// within the limit needs a larger window.
fn window_log_max(limit: u64) -> u32 {
    let log = limit
        .max(1)
        .checked_next_power_of_two()
        .map_or(u64::BITS, u64::trailing_zeros);
    log.clamp(WINDOW_LOG_RANGE.0, WINDOW_LOG_RANGE.1)
}

/// Decompresses `data`, which must inflate to exactly `claimed` bytes
/// (`claimed <= limit`, checked by the caller).
///
/// The frames are decoded in one pass straight into a buffer of `claimed`
/// bytes, the only allocation that depends on the input: zstd's one-shot
/// decoder keeps no window of its own (the output is the window), so a
/// frame that declares a 2 GiB window costs no more than one that declares
/// 1 KiB, and a bomb stops with an error when the buffer is full. A frame
/// header that states a content size larger than the claim is refused
/// before anything is allocated. Besides the buffer, the decoder's context
/// takes a constant (under 256 KiB, allocated by the C library; the tests
/// check it with `ZSTD_sizeof_DCtx`).
fn inflate(data: &[u8], claimed: u64, limit: u64) -> Result<Vec<u8>, String> {
    let mut dctx = zstd::zstd_safe::DCtx::create();
    inflate_with(&mut dctx, data, claimed, limit)
}

/// [`inflate`] with a given decoder context (the tests measure it).
fn inflate_with(
    dctx: &mut zstd::zstd_safe::DCtx<'_>,
    data: &[u8],
    claimed: u64,
    limit: u64,
) -> Result<Vec<u8>, String> {
    let zstd_error = |code: usize| format!("zstd: {}", zstd::zstd_safe::get_error_name(code));
    match zstd::zstd_safe::get_frame_content_size(data) {
        Ok(Some(declared)) if declared > claimed => {
            return Err(format!(
                "the zstd frame declares {declared} bytes, the checkpoint claims {claimed}"
            ))
        }
        Ok(_) => {}
        Err(_) => return Err("the state is not a zstd frame".into()),
    }
    // The one-shot decoder needs no window; the limit is set all the same,
    // so that any window-keeping decoder this context is used with stays
    // within it.
    dctx.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(window_log_max(
        limit,
    )))
    .map_err(zstd_error)?;
    let capacity = usize::try_from(claimed)
        .map_err(|_| format!("a state of {claimed} bytes does not fit in memory"))?;
    let mut out = Vec::new();
    out.try_reserve_exact(capacity)
        .map_err(|e| format!("cannot allocate {claimed} bytes for the state: {e}"))?;
    dctx.decompress(&mut out, data).map_err(zstd_error)?;
    Ok(out)
}

/// The most bytes decoding `checkpoint` reads or writes under `limit`: the
/// stored bytes, or the claimed size when larger (decoding never writes
/// more than the claim, and a claim over the limit is refused before any
/// work).
fn decode_work(checkpoint: &Checkpoint, limit: u64) -> u64 {
    let claimed = match checkpoint.uncompressed_size {
        claim if claim > limit => 0,
        claim => claim,
    };
    (checkpoint.state_data.len() as u64).max(claimed)
}

/// Why a caller of [`CheckpointManager::load_newest_at`] did not take a
/// checkpoint's state.
#[derive(Debug)]
pub enum CheckpointRejection {
    /// The state is unusable (does not decode): try an older checkpoint,
    /// unless the policy says `fail_on_corrupt`.
    Skip(String),
    /// Loading must stop with this error (a state of another schema version
    /// that the actor cannot migrate: never silently dropped, rule 16).
    Fail(JournalError),
}

thread_local! {
    /// Each thread's zstd compression context, made once: a new context
    /// per checkpoint allocated and cleared its tables every time (a tenth
    /// of the facet's CPU with small states).
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// A piece of a checkpoint's state, for [`CheckpointManager::save_pieces`].
#[derive(Debug, Clone)]
pub(crate) enum StatePiece {
    /// Bytes compressed when the checkpoint is encoded.
    Fresh(Vec<u8>),
    /// `len` bytes compressed earlier into one zstd frame at the policy's
    /// level (by [`compress`]).
    Framed {
        /// The bytes' length before compression.
        len: usize,
        /// Their frame.
        frame: Arc<[u8]>,
    },
}

impl StatePiece {
    /// Its bytes before compression.
    fn raw_len(&self) -> usize {
        match self {
            StatePiece::Fresh(bytes) => bytes.len(),
            StatePiece::Framed { len, .. } => *len,
        }
    }
}

/// `state` compressed at `level` into one zstd frame, with this thread's
/// context.
pub(crate) fn compress(state: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.try_borrow_mut().map_err(std::io::Error::other)?;
        let compressor = match slot.as_mut() {
            Some(compressor) => {
                compressor.set_compression_level(level)?;
                compressor
            }
            None => slot.insert(zstd::bulk::Compressor::new(level)?),
        };
        compressor.compress(state)
    })
}

/// A checkpoint that loading passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedCheckpoint {
    /// Its sequence.
    pub sequence: u64,
    /// Why it was not used.
    pub reason: String,
}

/// The newest usable checkpoint, as the caller accepted it.
#[derive(Debug)]
pub struct LoadedCheckpoint<T> {
    /// The checkpoint's sequence: replay continues after it.
    pub sequence: u64,
    /// What the caller made of its state.
    pub value: T,
    /// Newer checkpoints that could not be used.
    pub skipped: Vec<SkippedCheckpoint>,
}

/// What saving a checkpoint did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedCheckpoint {
    /// The checkpoint's sequence.
    pub sequence: u64,
    /// State size before compression.
    pub raw_bytes: u64,
    /// State size as stored.
    pub stored_bytes: u64,
    /// Older checkpoints removed by retention.
    pub pruned: u64,
    /// The journal was truncated up to this sequence, if it was.
    pub truncated_to: Option<u64>,
}

/// Takes, loads and prunes checkpoints for actors of one storage.
#[derive(Clone)]
pub struct CheckpointManager {
    storage: Arc<dyn JournalStorage>,
    policy: CheckpointPolicy,
}

impl std::fmt::Debug for CheckpointManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointManager")
            .field("backend", &self.storage.backend_name())
            .field("policy", &self.policy)
            .finish()
    }
}

impl CheckpointManager {
    /// A manager over `storage` (by value or in an `Arc`).
    pub fn new(storage: impl JournalStorage + 'static, policy: CheckpointPolicy) -> Self {
        CheckpointManager {
            storage: Arc::new(storage),
            policy,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &CheckpointPolicy {
        &self.policy
    }

    /// Saves `state` as the checkpoint after `sequence`, then applies
    /// retention: keeps the newest `keep` checkpoints and, if the policy
    /// says so, truncates the journal up to the oldest kept one.
    #[tracing::instrument(level = "debug", skip(self, state), fields(backend = self.storage.backend_name(), bytes = state.len()))]
    pub async fn save(
        &self,
        actor_id: &str,
        sequence: u64,
        state: Vec<u8>,
    ) -> JournalResult<SavedCheckpoint> {
        self.save_pieces(actor_id, sequence, vec![StatePiece::Fresh(state)])
            .await
    }

    /// [`CheckpointManager::save`] of the state that is `pieces` end to
    /// end, some of it compressed already (framed pieces need the policy's
    /// compression to be zstd). The fresh pieces are compressed off the
    /// runtime when they are large together.
    #[tracing::instrument(level = "debug", skip(self, pieces), fields(backend = self.storage.backend_name(), pieces = pieces.len()))]
    pub(crate) async fn save_pieces(
        &self,
        actor_id: &str,
        sequence: u64,
        pieces: Vec<StatePiece>,
    ) -> JournalResult<SavedCheckpoint> {
        let raw_bytes: u64 = pieces.iter().map(|p| p.raw_len() as u64).sum();
        // One that loading would refuse is not saved: it would be skipped
        // at every activation, and with truncation the journal before it
        // would be gone.
        let limit = self.policy.max_state_bytes;
        if raw_bytes > limit {
            return Err(JournalError::InvalidCheckpoint(format!(
                "a state of {raw_bytes} bytes is over the checkpoint limit of {limit} bytes \
                 (max_checkpoint_bytes): not saved, as it could not be loaded"
            )));
        }
        let fresh: usize = pieces
            .iter()
            .map(|p| match p {
                StatePiece::Fresh(bytes) => bytes.len(),
                StatePiece::Framed { .. } => 0,
            })
            .sum();
        let checkpoint = if fresh >= OFF_RUNTIME_BYTES {
            let (policy, actor) = (self.policy.clone(), actor_id.to_owned());
            tokio::task::spawn_blocking(move || policy.encode_pieces(&actor, sequence, &pieces))
                .await
                .map_err(|e| JournalError::storage("checkpoint", e))??
        } else {
            self.policy.encode_pieces(actor_id, sequence, &pieces)?
        };
        self.store(actor_id, sequence, raw_bytes, checkpoint).await
    }

    /// Stores an encoded checkpoint of `raw_bytes` of state, then applies
    /// retention.
    async fn store(
        &self,
        actor_id: &str,
        sequence: u64,
        raw_bytes: u64,
        checkpoint: Checkpoint,
    ) -> JournalResult<SavedCheckpoint> {
        let stored_bytes = checkpoint.state_data.len() as u64;
        let most = max_stored_bytes(self.policy.max_state_bytes);
        if stored_bytes > most {
            return Err(JournalError::InvalidCheckpoint(format!(
                "a state stored in {stored_bytes} bytes is over the {most} bytes loading \
                 accepts (max_checkpoint_bytes and compression overhead): not saved"
            )));
        }
        self.storage.save_checkpoint(&checkpoint).await?;
        crate::metrics::checkpoint(state_len(raw_bytes), checkpoint.state_data.len());

        let kept = self.storage.list_checkpoints(actor_id).await?;
        let keep = self.policy.keep.max(1);
        let (mut pruned, mut truncated_to) = (0, None);
        if kept.len() > keep {
            let oldest_kept = kept[kept.len() - keep];
            pruned = self
                .storage
                .delete_checkpoints_before(actor_id, oldest_kept)
                .await?;
        }
        if self.policy.truncate_journal {
            if let Some(&oldest) = kept.get(kept.len().saturating_sub(keep)) {
                self.storage.truncate_to(actor_id, oldest).await?;
                truncated_to = Some(oldest);
            }
        }
        Ok(SavedCheckpoint {
            sequence,
            raw_bytes,
            stored_bytes,
            pruned,
            truncated_to,
        })
    }

    /// The state of checkpoint `checkpoint`, decoded off the runtime when
    /// large: when it is stored in many bytes or claims to decompress to
    /// many. Decoding never writes more than the claim, so the claim bounds
    /// the work; a claim over the policy's limit is refused at once, without
    /// decoding, and counts as nothing.
    pub async fn decode(&self, checkpoint: Checkpoint) -> JournalResult<Vec<u8>> {
        if decode_work(&checkpoint, self.policy.max_state_bytes) >= OFF_RUNTIME_BYTES as u64 {
            let policy = self.policy.clone();
            tokio::task::spawn_blocking(move || policy.decode(&checkpoint))
                .await
                .map_err(|e| JournalError::storage("checkpoint", e))?
        } else {
            self.policy.decode(&checkpoint)
        }
    }

    /// The state of `checkpoint` whatever its state schema version (the
    /// caller compares it), decoded off the runtime when large.
    pub async fn decode_any_version(&self, checkpoint: Checkpoint) -> JournalResult<Vec<u8>> {
        let manager = CheckpointManager {
            storage: Arc::clone(&self.storage),
            policy: CheckpointPolicy {
                schema_version: checkpoint.state_schema_version,
                ..self.policy.clone()
            },
        };
        manager.decode(checkpoint).await
    }

    /// The newest checkpoint with `sequence <= at_most` whose state decodes
    /// and that `accept` takes, given the state and its schema version.
    /// Older ones are tried when `accept` skips one or its bytes do not
    /// decode (unless the policy says `fail_on_corrupt`); `accept` failing
    /// stops loading with its error.
    pub async fn load_newest_at<T>(
        &self,
        actor_id: &str,
        at_most: u64,
        accept: impl FnMut(Vec<u8>, u32) -> Result<T, CheckpointRejection> + Send,
    ) -> JournalResult<Option<LoadedCheckpoint<T>>> {
        Ok(self.search_newest_at(actor_id, at_most, accept).await?.0)
    }

    /// As [`CheckpointManager::load_newest_at`], with the checkpoints
    /// passed over when none was usable (when one was, they are in its
    /// [`LoadedCheckpoint::skipped`] and the list is empty).
    pub async fn search_newest_at<T>(
        &self,
        actor_id: &str,
        at_most: u64,
        mut accept: impl FnMut(Vec<u8>, u32) -> Result<T, CheckpointRejection> + Send,
    ) -> JournalResult<(Option<LoadedCheckpoint<T>>, Vec<SkippedCheckpoint>)> {
        let mut skipped = Vec::new();
        for sequence in self
            .storage
            .list_checkpoints(actor_id)
            .await?
            .into_iter()
            .rev()
            .skip_while(|&sequence| sequence > at_most)
        {
            // A stored checkpoint whose bytes do not decode is as unusable
            // as one whose state does not: skipped unless the policy says
            // fail (other errors, such as the storage down, stop loading).
            let (version, decoded) = match self.storage.get_checkpoint(actor_id, sequence).await {
                Ok(Some(checkpoint)) => (
                    checkpoint.state_schema_version,
                    self.decode_any_version(checkpoint).await,
                ),
                Ok(None) => continue, // pruned meanwhile
                Err(e @ JournalError::CorruptCheckpoint { .. }) => (0, Err(e)),
                Err(e) => return Err(e),
            };
            let outcome: JournalResult<()> = match decoded {
                Ok(state) => match accept(state, version) {
                    Ok(value) => {
                        let loaded = LoadedCheckpoint {
                            sequence,
                            value,
                            skipped,
                        };
                        return Ok((Some(loaded), Vec::new()));
                    }
                    Err(CheckpointRejection::Fail(e)) => return Err(e),
                    Err(CheckpointRejection::Skip(reason)) => {
                        Err(JournalError::CorruptCheckpoint {
                            actor_id: actor_id.to_owned(),
                            sequence,
                            reason: format!("the actor rejected the state: {reason}"),
                        })
                    }
                },
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                if self.policy.fail_on_corrupt {
                    return Err(e);
                }
                tracing::warn!(actor_id, sequence, error = %e, "skipping an unusable checkpoint");
                skipped.push(SkippedCheckpoint {
                    sequence,
                    reason: e.to_string(),
                });
            }
        }
        Ok((None, skipped))
    }

    /// The newest checkpoint whose state decodes and that `accept` takes,
    /// trying older ones when a newer one fails (contract rule 16), or an
    /// error at the first failure when the policy says `fail_on_corrupt`.
    /// `None` when no checkpoint is usable. A checkpoint written under
    /// another state schema version than the policy's is not dropped: it is
    /// [`JournalError::RecoveryFailed`] naming both versions (load it with
    /// [`CheckpointManager::load_newest_at`], which hands `accept` its
    /// version, to migrate it).
    pub async fn load_latest<T>(
        &self,
        actor_id: &str,
        accept: impl FnMut(Vec<u8>) -> Result<T, String> + Send,
    ) -> JournalResult<Option<LoadedCheckpoint<T>>> {
        self.load_latest_at(actor_id, u64::MAX, accept).await
    }

    /// As [`CheckpointManager::load_latest`], among the checkpoints with
    /// `sequence <= at_most` (time travel: the state as it was then).
    pub async fn load_latest_at<T>(
        &self,
        actor_id: &str,
        at_most: u64,
        mut accept: impl FnMut(Vec<u8>) -> Result<T, String> + Send,
    ) -> JournalResult<Option<LoadedCheckpoint<T>>> {
        let current = self.policy.schema_version;
        self.load_newest_at(actor_id, at_most, |state, version| {
            if version != current {
                return Err(CheckpointRejection::Fail(JournalError::RecoveryFailed {
                    actor_id: actor_id.to_owned(),
                    reason: format!(
                        "a checkpoint's state is schema version {version} and this policy reads \
                         version {current}: load it with load_newest_at to migrate it"
                    ),
                }));
            }
            accept(state).map_err(CheckpointRejection::Skip)
        })
        .await
    }
}

/// The most stored (possibly compressed) bytes a checkpoint of at most
/// `limit` bytes of state may take: compression can add a little to data
/// that does not compress (a frame's header and each block's), more so
/// in the 4 KiB frames of a dedup window.
fn max_stored_bytes(limit: u64) -> u64 {
    limit.saturating_add(limit / 64).saturating_add(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CheckpointPolicy {
        CheckpointPolicy {
            max_state_bytes: 1 << 20,
            ..CheckpointPolicy::default()
        }
    }

    #[test]
    fn zstd_round_trip_and_ratio() {
        let state: Vec<u8> = b"balance=100;"
            .iter()
            .copied()
            .cycle()
            .take(100_000)
            .collect();
        let c = policy().encode("a", 1, &state).expect("encode");
        assert!(
            c.state_data.len() * 10 < state.len(),
            "{} bytes",
            c.state_data.len()
        );
        assert_eq!(policy().decode(&c).expect("decode"), state);
    }

    /// A state that does not compress, exactly at the limit, grows a little
    /// when compressed: it still loads.
    #[test]
    fn an_incompressible_state_at_the_limit_loads() {
        let limit = 4096u64;
        let tight = CheckpointPolicy {
            max_state_bytes: limit,
            ..CheckpointPolicy::default()
        };
        // Bytes of a simple generator: zstd finds nothing to compress.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let state: Vec<u8> = (0..limit)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect();
        let c = tight.encode("a", 1, &state).expect("encode");
        assert!(
            c.state_data.len() as u64 > limit,
            "it grew: {}",
            c.state_data.len()
        );
        assert!(c.state_data.len() as u64 <= max_stored_bytes(limit));
        assert_eq!(tight.decode(&c).expect("decode"), state);
    }

    #[test]
    fn lying_size_header_is_corrupt() {
        let mut c = policy().encode("a", 1, &[7u8; 1000]).expect("encode");
        c.uncompressed_size = 10;
        assert!(matches!(
            policy().decode(&c),
            Err(JournalError::CorruptCheckpoint { .. })
        ));
        c.uncompressed_size = 5000;
        assert!(matches!(
            policy().decode(&c),
            Err(JournalError::CorruptCheckpoint { .. })
        ));
        c.uncompressed_size = u64::MAX;
        assert!(matches!(
            policy().decode(&c),
            Err(JournalError::CorruptCheckpoint { .. })
        ));
    }

    #[test]
    fn zstd_bomb_is_refused_within_the_limit() {
        // 64 MiB of zeros compress to a few KiB; the limit is 1 MiB.
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).expect("compress");
        assert!(bomb.len() < 64 * 1024);
        let mut c = Checkpoint::new("a", 1, bomb);
        c.compression = CompressionType::Zstd.into();
        c.uncompressed_size = 1000; // lies, within the limit
        let err = policy().decode(&c).expect_err("a bomb must not decode");
        assert!(
            matches!(err, JournalError::CorruptCheckpoint { .. }),
            "{err}"
        );
    }

    #[test]
    fn garbage_and_other_versions_are_corrupt() {
        let mut c = Checkpoint::new("a", 1, vec![1, 2, 3, 4]);
        c.compression = CompressionType::Zstd.into();
        c.uncompressed_size = 4;
        assert!(matches!(
            policy().decode(&c),
            Err(JournalError::CorruptCheckpoint { .. })
        ));
        let mut v2 = policy().encode("a", 1, b"x").expect("encode");
        v2.state_schema_version = 2;
        assert!(matches!(
            policy().decode(&v2),
            Err(JournalError::CorruptCheckpoint { .. })
        ));
        let mut unknown = policy().encode("a", 1, b"x").expect("encode");
        unknown.compression = 99;
        assert!(matches!(
            policy().decode(&unknown),
            Err(JournalError::CorruptCheckpoint { .. })
        ));
    }

    /// A 10-byte zstd frame: a window of `2^window_log` bytes, no content
    /// size, one raw block holding `x`.
    fn wide_window_frame(window_log: u8) -> Vec<u8> {
        let mut frame = vec![0x28, 0xB5, 0x2F, 0xFD]; // magic
        frame.push(0x00); // no content size, not single-segment, no checksum
        frame.push((window_log - 10) << 3); // window descriptor, mantissa 0
        frame.extend_from_slice(&[0x09, 0x00, 0x00]); // last, raw, 1 byte
        frame.push(b'x');
        frame
    }

    #[test]
    fn window_log_follows_the_limit() {
        assert_eq!(window_log_max(0), 10);
        assert_eq!(window_log_max(1000), 10);
        assert_eq!(window_log_max(1024), 10);
        assert_eq!(window_log_max(1025), 11);
        assert_eq!(window_log_max(4 << 20), 22);
        assert_eq!(window_log_max((4 << 20) + 1), 23);
        assert_eq!(window_log_max(DEFAULT_MAX_CHECKPOINT_BYTES), 28);
        assert_eq!(window_log_max(u64::MAX), 31);
    }

    #[test]
    fn a_wide_window_costs_the_decoder_nothing() {
        let limit = 4 << 20;
        for window_log in [20, 26, 31] {
            let frame = wide_window_frame(window_log);
            assert_eq!(frame.len(), 10);
            let mut dctx = zstd::zstd_safe::DCtx::create();
            let state = inflate_with(&mut dctx, &frame, 1, limit).expect("inflate");
            assert_eq!(state, b"x");
            // The context's own memory, windows and stream buffers
            // included (ZSTD_sizeof_DCtx): a constant, not the window.
            let context = dctx.sizeof();
            println!("window 2^{window_log}: the decoder context holds {context} bytes");
            assert!(
                context < 256 * 1024,
                "window 2^{window_log}: {context} bytes"
            );
        }
        // The same frame through a window-keeping (streaming) decoder
        // would reserve the window: what the one-shot decoder avoids.
        let mut streaming = zstd::zstd_safe::DCtx::create();
        streaming
            .set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(27))
            .expect("window log");
        let frame = wide_window_frame(26);
        let mut out = [0u8; 16];
        let mut output = zstd::zstd_safe::OutBuffer::around(&mut out[..]);
        let mut input = zstd::zstd_safe::InBuffer::around(&frame);
        streaming
            .decompress_stream(&mut output, &mut input)
            .expect("stream");
        println!(
            "the same 10-byte frame, streamed: the decoder context holds {} bytes",
            streaming.sizeof()
        );
        assert!(streaming.sizeof() >= 64 << 20, "{}", streaming.sizeof());
    }

    #[test]
    fn bombs_and_lies_stop_at_the_claim() {
        let limit = 4 << 20;
        let mut dctx = zstd::zstd_safe::DCtx::create();
        // A frame that declares its size, larger than the claim: refused
        // before decoding.
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).expect("compress");
        let err = inflate_with(&mut dctx, &bomb, 1000, limit).expect_err("declared");
        assert!(err.contains("declares"), "{err}");
        // The same bomb without a declared size (a streaming encoder):
        // decoding stops when the claimed buffer is full.
        let mut streamed = Vec::new();
        let mut encoder = zstd::stream::write::Encoder::new(&mut streamed, 19).expect("encoder");
        std::io::Write::write_all(&mut encoder, &vec![0u8; 64 << 20]).expect("write");
        encoder.finish().expect("finish");
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&streamed).expect("header"),
            None
        );
        let err = inflate_with(&mut dctx, &streamed, 1000, limit).expect_err("bomb");
        assert!(err.starts_with("zstd: "), "{err}");
        assert!(dctx.sizeof() < 256 * 1024, "{}", dctx.sizeof());
        // Garbage is not a frame.
        assert!(inflate_with(&mut dctx, b"not zstd", 8, limit).is_err());
        assert!(inflate_with(&mut dctx, &[], 0, limit).is_err());
    }

    #[test]
    fn decode_work_counts_the_claim_within_the_limit() {
        let mut c = Checkpoint::new("a", 1, vec![0; 10]);
        c.uncompressed_size = 64 << 20;
        assert_eq!(decode_work(&c, 256 << 20), 64 << 20);
        assert_eq!(decode_work(&c, 1 << 20), 10, "refused at once: no work");
        c.uncompressed_size = 3;
        assert_eq!(decode_work(&c, 1 << 20), 10);
    }

    #[test]
    fn due_by_count_or_time() {
        let p = CheckpointPolicy {
            interval: 10,
            timeout: Some(Duration::from_secs(5)),
            ..policy()
        };
        assert!(!p.is_due(0, Duration::from_secs(60)));
        assert!(!p.is_due(9, Duration::from_secs(1)));
        assert!(p.is_due(10, Duration::ZERO));
        assert!(p.is_due(1, Duration::from_secs(5)));
        let never = CheckpointPolicy {
            interval: 0,
            timeout: None,
            ..policy()
        };
        assert!(!never.is_due(1_000_000, Duration::from_secs(1_000_000)));
    }
}
