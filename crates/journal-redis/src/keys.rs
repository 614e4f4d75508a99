//! Where an actor's data lives: the key layout (see the crate docs).
//!
//! Every actor belongs to one of [`BUCKETS`] buckets, chosen by a stable
//! hash of its id. A bucket's keys all carry the same hash tag, picked so
//! that bucket `b` lands in cluster slot `16 * b`: the buckets spread evenly
//! over the 16,384 slots, an actor's keys and its bucket's index share one
//! slot (so one script can update them together), and no actor id is ever
//! part of a hash tag, whatever braces it holds.

use std::sync::OnceLock;

/// Buckets actors are spread over. Part of the key layout: changing it
/// moves every actor.
pub const BUCKETS: u16 = 1024;

const SLOTS: u16 = 16_384;

/// The hash tag of each bucket: the shortest decimal string whose cluster
/// slot is `16 * bucket`.
fn tags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let step = SLOTS / BUCKETS;
        let mut tags: Vec<Option<String>> = vec![None; usize::from(BUCKETS)];
        let mut missing = usize::from(BUCKETS);
        let mut candidate: u64 = 0;
        while missing > 0 {
            let text = candidate.to_string();
            let slot = key_slot(text.as_bytes());
            if slot.is_multiple_of(step) {
                let bucket = usize::from(slot / step);
                if tags[bucket].is_none() {
                    tags[bucket] = Some(text);
                    missing -= 1;
                }
            }
            candidate += 1;
        }
        tags.into_iter().flatten().collect()
    })
}

/// The cluster slot of a key: CRC16 (XMODEM) of its hash tag, the part
/// between the first `{` and the next `}` when that part is not empty, or of
/// the whole key, modulo 16,384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % SLOTS
}

/// FNV-1a (64 bit): a stable hash, the same in every process and release.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The bucket of an actor: FNV-1a (64 bit) of its id, modulo [`BUCKETS`].
pub fn bucket_of(actor_id: &str) -> u16 {
    (fnv1a(actor_id.as_bytes()) % u64::from(BUCKETS)) as u16
}

/// Shards of the due-timer index. Part of the key layout: changing it
/// moves every timer.
pub const TIMER_SHARDS: u16 = 16;

/// The shard of a timer: FNV-1a (64 bit) of its id, modulo
/// [`TIMER_SHARDS`].
pub fn timer_shard_of(timer_id: &str) -> u16 {
    (fnv1a(timer_id.as_bytes()) % u64::from(TIMER_SHARDS)) as u16
}

/// The cluster slot of a bucket (taken modulo [`BUCKETS`]).
pub fn slot_of_bucket(bucket: u16) -> u16 {
    (bucket % BUCKETS) * (SLOTS / BUCKETS)
}

/// Key names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// The keys of one actor, all in one slot. Each key is built when asked
/// for, so a call pays only for the keys it uses.
#[derive(Debug, Clone, Copy)]
pub struct ActorKeys<'a> {
    keys: &'a Keys,
    actor_id: &'a str,
    bucket: u16,
}

impl ActorKeys<'_> {
    /// The actor's highest sequence (a string holding an integer).
    pub fn highest(&self) -> Vec<u8> {
        self.keys.key(self.bucket, "h:", self.actor_id)
    }

    /// The actor's entries (a stream, entry id `<sequence>-0`).
    pub fn entries(&self) -> Vec<u8> {
        self.keys.key(self.bucket, "e:", self.actor_id)
    }

    /// The sequences of the actor's checkpoints (a sorted set).
    pub fn checkpoint_index(&self) -> Vec<u8> {
        self.keys.key(self.bucket, "k:", self.actor_id)
    }

    /// The actor's checkpoints by sequence (a hash).
    pub fn checkpoints(&self) -> Vec<u8> {
        self.keys.key(self.bucket, "c:", self.actor_id)
    }

    /// The actor's bucket.
    pub fn bucket(&self) -> BucketKeys<'_> {
        self.keys.bucket(self.bucket)
    }

    /// The count of buckets with a feed ([`Keys::feed_buckets`]).
    pub fn feed_buckets(&self) -> Vec<u8> {
        self.keys.feed_buckets()
    }

    /// The cluster slot all of these keys are in.
    pub fn slot(&self) -> u16 {
        slot_of_bucket(self.bucket)
    }
}

/// The keys of one bucket.
#[derive(Debug, Clone, Copy)]
pub struct BucketKeys<'a> {
    keys: &'a Keys,
    bucket: u16,
}

impl BucketKeys<'_> {
    /// The actor ids of the bucket (a sorted set, all scores 0).
    pub fn actors(&self) -> Vec<u8> {
        self.keys.key(self.bucket, "actors", "")
    }

    /// The bucket's feed (a stream): one reference per append, `a` the
    /// actor id, `f` and `l` the first and last sequence of the batch, `g`
    /// the actor's incarnation when it was deleted before. Written by the
    /// append script, in the bucket's commit order.
    pub fn feed(&self) -> Vec<u8> {
        self.keys.key(self.bucket, "feed", "")
    }

    /// The bucket's feed of one tag (a stream of references, as
    /// [`BucketKeys::feed`]). The tag is hex-encoded after the hash tag:
    /// its text never shapes a key's slot.
    pub fn tag_feed(&self, tag: &str) -> Vec<u8> {
        let mut hex = String::with_capacity(2 * tag.len());
        for byte in tag.as_bytes() {
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        self.keys.key(self.bucket, "g:", &hex)
    }

    /// How many times each actor of the bucket was deleted (a hash, actor
    /// id to count; actors never deleted have no field): a feed reference
    /// made before a deletion names another incarnation and is skipped.
    pub fn incarnations(&self) -> Vec<u8> {
        self.keys.key(self.bucket, "gen", "")
    }

    /// The cluster slot of the bucket's keys.
    pub fn slot(&self) -> u16 {
        slot_of_bucket(self.bucket)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The keys of one shard of the due-timer index, all in one slot: the
/// slot of bucket `shard * BUCKETS / TIMER_SHARDS`, so the shards spread
/// evenly over the slots (shard `s` is in slot `1024 * s`).
#[derive(Debug, Clone, Copy)]
pub struct TimerShardKeys<'a> {
    keys: &'a Keys,
    shard: u16,
}

impl TimerShardKeys<'_> {
    fn bucket(&self) -> u16 {
        self.shard * (BUCKETS / TIMER_SHARDS)
    }

    /// Every timer of the shard by due time (a sorted set; equal due times
    /// in byte order of the ids). Claimed timers stay in it.
    pub fn due(&self) -> Vec<u8> {
        self.keys.key(self.bucket(), "t:due", "")
    }

    /// The shard's claimed timers by the end of their lease (a sorted set).
    pub fn leases(&self) -> Vec<u8> {
        self.keys.key(self.bucket(), "t:lease", "")
    }

    /// The shard's timer records by id (a hash; see `timers::encode`).
    pub fn records(&self) -> Vec<u8> {
        self.keys.key(self.bucket(), "t:rec", "")
    }

    /// The token of each claimed timer's latest claim, by id (a hash).
    pub fn claims(&self) -> Vec<u8> {
        self.keys.key(self.bucket(), "t:claim", "")
    }

    /// The four keys in the order the timer scripts take them: due,
    /// leases, records, claims.
    pub fn all(&self) -> [Vec<u8>; 4] {
        [self.due(), self.leases(), self.records(), self.claims()]
    }

    /// The cluster slot all of these keys are in.
    pub fn slot(&self) -> u16 {
        slot_of_bucket(self.bucket())
    }
}

impl Keys {
    /// The keys of a shard of the due-timer index (`shard <
    /// TIMER_SHARDS`).
    pub fn timer_shard(&self, shard: u16) -> TimerShardKeys<'_> {
        TimerShardKeys {
            keys: self,
            shard: shard % TIMER_SHARDS,
        }
    }

    /// Projections' offsets by name (a hash, in bucket 0's slot).
    pub fn projections(&self) -> Vec<u8> {
        self.key(0, "projections", "")
    }

    /// How many buckets have a feed stream (a hash, on one server only:
    /// `n` the count, `id` the id of the first entry of the append that
    /// began it): the append script adds one when it creates a bucket's
    /// `feed`, so a feed reader that knows which buckets had one at a
    /// count reads only those while the count stays. A count lost and
    /// begun again has another `id`.
    pub fn feed_buckets(&self) -> Vec<u8> {
        self.key(0, "feedbuckets", "")
    }

    /// Keys under `prefix` (already validated).
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, bucket: u16, kind: &str, actor_id: &str) -> Vec<u8> {
        let tag = &tags()[usize::from(bucket % BUCKETS)];
        let mut key =
            Vec::with_capacity(self.prefix.len() + tag.len() + kind.len() + actor_id.len() + 4);
        key.extend_from_slice(self.prefix.as_bytes());
        key.extend_from_slice(b":{");
        key.extend_from_slice(tag.as_bytes());
        key.extend_from_slice(b"}:");
        key.extend_from_slice(kind.as_bytes());
        key.extend_from_slice(actor_id.as_bytes());
        key
    }

    /// The keys of a bucket (taken modulo [`BUCKETS`]: there are no
    /// others).
    pub fn bucket(&self, bucket: u16) -> BucketKeys<'_> {
        BucketKeys {
            keys: self,
            bucket: bucket % BUCKETS,
        }
    }

    /// The keys of an actor.
    pub fn actor<'a>(&'a self, actor_id: &'a str) -> ActorKeys<'a> {
        ActorKeys {
            keys: self,
            actor_id,
            bucket: bucket_of(actor_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_are_the_ones_redis_computes() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"123456789"), 0x31C3 % SLOTS);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }

    /// The public helpers take any bucket number without a panic: past
    /// the last bucket they wrap around.
    #[test]
    fn bucket_numbers_past_the_last_wrap_around() {
        let keys = Keys::new("p");
        for beyond in [BUCKETS, BUCKETS + 7, 4096, u16::MAX] {
            assert_eq!(slot_of_bucket(beyond), slot_of_bucket(beyond % BUCKETS));
            assert_eq!(
                keys.bucket(beyond).feed(),
                keys.bucket(beyond % BUCKETS).feed()
            );
        }
    }

    #[test]
    fn every_bucket_has_a_tag_in_its_own_slot() {
        let tags = tags();
        assert_eq!(tags.len(), usize::from(BUCKETS));
        for (bucket, tag) in tags.iter().enumerate() {
            assert_eq!(key_slot(tag.as_bytes()), slot_of_bucket(bucket as u16));
        }
    }

    #[test]
    fn all_keys_of_an_actor_share_one_slot_whatever_its_id() {
        let keys = Keys::new("journal");
        for id in [
            "a",
            "{",
            "}",
            "}{x}",
            "{x}",
            "{}",
            "a{b}c",
            "\u{1F980} {crab}",
            "with:colons:and%",
            "'; DROP TABLE x; --",
        ] {
            let k = keys.actor(id);
            for key in [
                k.highest(),
                k.entries(),
                k.checkpoint_index(),
                k.checkpoints(),
                k.bucket().actors(),
                k.bucket().feed(),
                k.bucket().incarnations(),
                k.bucket().tag_feed(id),
            ] {
                assert_eq!(key_slot(&key[..]), k.slot(), "{id:?}");
            }
        }
    }

    #[test]
    fn timer_shards_spread_over_the_slots_and_keep_their_keys_together() {
        let keys = Keys::new("journal");
        let mut slots = Vec::new();
        for shard in 0..TIMER_SHARDS {
            let k = keys.timer_shard(shard);
            assert_eq!(k.slot(), shard * (SLOTS / TIMER_SHARDS));
            for key in k.all() {
                assert_eq!(key_slot(&key), k.slot());
            }
            slots.push(k.slot());
        }
        slots.dedup();
        assert_eq!(slots.len(), usize::from(TIMER_SHARDS));
        let mut counts = vec![0u32; usize::from(TIMER_SHARDS)];
        for i in 0..16_000 {
            counts[usize::from(timer_shard_of(&format!("order-{i}/reminder")))] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..=1_200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn actors_spread_over_the_buckets() {
        let mut counts = vec![0u32; usize::from(BUCKETS)];
        for i in 0..102_400 {
            counts[usize::from(bucket_of(&format!("actor-{i}")))] += 1;
        }
        // 100 per bucket on average; a sound hash keeps every bucket near it.
        assert!(
            counts.iter().all(|&c| (40..=160).contains(&c)),
            "{counts:?}"
        );
    }
}
