#![doc = include_str!("../README.md")]

pub mod adversarial;
pub mod cutoff;
pub mod events;
pub mod facet;
pub mod feed;
pub mod fixture;
pub mod forwarding;
pub mod limits;
pub mod model;
pub mod pair;
pub mod projection;
pub mod rules;
pub mod spans;
pub mod subscribe;
pub mod tck;
pub mod timers;
pub mod volume;

/// Stamps out one `#[test]` per property of the suite, each calling the given
/// async expression for a fresh storage.
///
/// ```
/// # use journal_memory::MemoryJournalStorage;
/// journal_conformance::suite!(async { MemoryJournalStorage::new() });
/// ```
///
/// When the storage may be unavailable (a server that is not running), the
/// expression gives an `Option`, and `None` ends each test early:
///
/// ```
/// # use journal_memory::MemoryJournalStorage;
/// async fn storage_if_reachable() -> Option<MemoryJournalStorage> {
///     Some(MemoryJournalStorage::new())
/// }
/// journal_conformance::suite!(optional: async { storage_if_reachable().await });
/// ```
///
/// The expression is evaluated once per test, and should give a store of its
/// own (a fresh file, schema or key prefix): the listing and stats tests count
/// what is in it. Every test also uses fresh actor ids.
#[macro_export]
macro_rules! suite {
    (optional: $make:expr) => {
        $crate::__suite_tests!(@optional $make);
    };
    ($make:expr) => {
        $crate::__suite_tests!(@plain $make);
    };
}

/// The list of the suite's tests, as `module::name`.
#[doc(hidden)]
#[macro_export]
macro_rules! __suite_tests {
    (@$mode:ident $make:expr) => {
        $crate::__suite_tests! {@$mode $make;
            rules::rule01_first_append_is_sequence_one,
            rules::rule01_append_needs_highest_plus_one,
            rules::rule01_conflict_writes_nothing,
            rules::rule01_sequences_are_per_actor,
            rules::rule01_racing_writers_one_wins_each_sequence,
            rules::rule02_batch_appends_contiguous_entries,
            rules::rule02_batch_is_all_or_nothing,
            rules::rule02_empty_batch_is_a_noop,
            rules::rule02_batch_must_start_at_highest_plus_one,
            rules::rule04_empty_actor_id_rejected,
            rules::rule04_actor_id_byte_limit,
            rules::rule04_sequence_zero_rejected,
            rules::rule04_missing_variant_rejected,
            rules::rule04_oversized_entry_rejected,
            rules::rule04_batch_mixing_actors_rejected,
            rules::rule04_batch_with_gap_rejected,
            rules::rule05_retry_of_stored_entry_is_ok,
            rules::rule05_same_sequence_other_id_conflicts,
            rules::rule05_retry_of_stored_batch_is_ok,
            rules::rule05_concurrent_retries_store_one_copy,
            rules::rule05_retry_of_truncated_entry_conflicts,
            rules::rule06_replay_returns_entries_field_by_field,
            rules::rule06_from_zero_equals_from_one,
            rules::rule06_from_past_highest_is_empty,
            rules::rule06_unknown_actor_is_empty,
            rules::rule06_eight_mib_payload_round_trips,
            rules::rule07_stream_agrees_with_list,
            rules::rule07_stream_of_unknown_actor_is_empty,
            rules::rule07_stream_starts_after_truncation,
            rules::rule08_highest_of_unknown_actor_is_zero,
            rules::rule08_highest_tracks_appends_and_batches,
            rules::rule09_readers_never_see_partial_batch,
            rules::rule09_reads_between_polls_of_a_batch_see_it_whole,
            rules::rule10_checkpoint_sequence_must_be_in_range,
            rules::rule10_checkpoint_save_is_idempotent,
            rules::rule10_checkpoint_for_unknown_actor_rejected,
            rules::rule11_no_checkpoint_is_none,
            rules::rule11_latest_is_highest_sequence,
            rules::rule12_checkpoint_bytes_are_opaque,
            rules::rule13_pruning_keeps_newest_checkpoints,
            rules::rule14_truncate_keeps_highest_and_next_append,
            rules::rule14_truncate_past_highest_keeps_highest,
            rules::rule14_truncate_zero_and_repeat_are_noops,
            rules::rule14_checkpoints_survive_truncation,
            rules::rule15_delete_forgets_everything,
            rules::rule15_delete_leaves_other_actors_alone,
            rules::rule15_deleted_actor_starts_over_at_one,
            rules::rule20_concurrent_appends_of_many_actors,
            rules::rule20_checkpoints_and_appends_interleave,
            rules::listing_streams_every_actor,
            rules::listing_pages_resume_at_cursor,
            rules::stats_count_actors_entries_checkpoints,
            rules::summary_describes_one_actor,
            tck::tck_replay_all,
            tck::tck_replay_from_lower_bound,
            tck::tck_replay_to_upper_bound,
            tck::tck_replay_between_bounds,
            tck::tck_replay_with_max,
            tck::tck_replay_nothing,
            tck::tck_replay_stops_inside_batch,
            tck::tck_after_truncation,
            tck::tck_truncate_everything_keeps_highest,
            tck::tck_snapshots_latest_and_by_sequence,
            tck::tck_snapshot_overwrite,
            tck::tck_snapshot_sizes,
            facet::facet_recovery_from_checkpoint_equals_full_replay,
            facet::facet_side_effects_not_rerun_on_replay,
            facet::facet_replay_divergence_detected,
            facet::facet_redelivered_message_not_reprocessed,
            facet::facet_undecodable_checkpoint_falls_back,
            facet::facet_oversized_state_is_not_checkpointed,
            facet::facet_crash_before_processed_recovers,
            facet::facet_unjournaled_effect_runs_again,
            facet::facet_checkpoints_hold_real_state,
            facet::facet_handler_error_journaled,
            facet::facet_time_and_random_replay_identically,
            facet::facet_retention_truncates_and_recovers,
            facet::facet_truncated_journal_without_checkpoint_fails,
            facet::facet_replay_disabled_starts_fresh,
            facet::facet_interrupted_message_with_fewer_effects_diverges,
            facet::facet_missing_entries_after_checkpoint_fail_recovery,
            facet::facet_rebuild_at_is_the_state_then,
            facet::facet_default_config_is_durable,
            facet::facet_swallowed_journal_error_fails_the_message,
            facet::facet_retries_reappend_the_same_entry,
            facet::facet_bad_message_fails_alone,
            facet::facet_dedup_retention_and_recorded_replies,
            facet::facet_changed_request_or_outcome_diverges,
            facet::facet_state_schema_bump_migrates,
            facet::facet_time_travel_never_runs_effects,
            facet::facet_failed_message_state_is_not_handed_out,
            facet::facet_idle_actor_checkpoints_after_timeout,
            facet::facet_attach_refuses_a_second_durability_facet,
            facet::facet_seed_snippet_runs,
            facet::facet_reply_too_large_fails_alone,
            facet::facet_interrupted_then_followed_message_stays_recognised,
            facet::facet_checkpoints_list_the_window_only,
            facet::facet_batched_writes_recover_the_same,
            facet::facet_random_key_is_durable_before_the_outside_sees_it,
            facet::facet_unjournaled_effect_runs_again_on_recovery,
            facet::facet_refused_end_of_message_keeps_no_state,
            events::rule25_events_persist_with_the_command_end,
            events::rule25_recovery_applies_events_and_runs_no_command,
            events::rule25_time_travel_stands_after_any_event,
            events::rule26_old_versions_read_through_the_upcaster,
            events::rule26_unknown_event_type_is_named,
            adversarial::ids_round_trip_everywhere,
            adversarial::ids_do_not_collide,
            limits::limits_sequence_above_max_rejected,
            limits::limits_sequence_up_to_max_reaches_storage,
            limits::limits_unbounded_reads_and_truncation,
            limits::limits_checkpoint_above_max_rejected,
            limits::rule04_message_received_without_message_id_rejected,
            limits::rule04_entry_id_with_nul_rejected,
            model::prop_matches_reference_model,
            model::prop_any_batch_split_replays_the_same,
            model::prop_ranges_and_streams_agree_with_replay_from,
            volume::volume_lists_and_streams_match_written,
            volume::volume_ranges_match_written,
            volume::volume_stream_reads_page_by_page
        }
    };
    (@plain $make:expr; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::__private::run(async { ::core::option::Option::Some($make.await) }, $crate::$module::$name);
            }
        )*
    };
    (@optional $make:expr; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::__private::run($make, $crate::$module::$name);
            }
        )*
    };
    (@list $make:expr; $($module:ident :: $name:ident),* $(,)?) => {
        ::std::vec![
            $(
                $crate::SuiteTest {
                    module: ::core::stringify!($module),
                    name: ::core::stringify!($name),
                    run: |storage| ::std::boxed::Box::pin($crate::$module::$name(storage)),
                },
            )*
        ]
    };
}

/// One test of the suite, to run the suite programmatically (as the
/// mutation self-test does, against deliberately broken storages).
#[derive(Clone, Copy)]
pub struct SuiteTest {
    /// The module it lives in (`rules`, `tck`, `facet`, ...).
    pub module: &'static str,
    /// Its name, as the test [`suite!`] stamps out.
    pub name: &'static str,
    /// The test itself: panics when the storage breaks the contract.
    pub run: fn(std::sync::Arc<dyn journal_core::JournalStorage>) -> TestFuture,
}

/// What a [`SuiteTest`] gives to run.
pub type TestFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

impl std::fmt::Debug for SuiteTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}::{}", self.module, self.name)
    }
}

/// Every test [`suite!`] stamps out, in its order. Each must run on a
/// multi-threaded tokio runtime, as [`suite!`] runs it.
pub fn suite_tests() -> Vec<SuiteTest> {
    __suite_tests!(@list ())
}

/// Stamps out one `#[test]` per test of [`pair`]: each gets two storage
/// values on one store (two connections, pools or clients; for the memory
/// backend, two clones of one store) from the given async expression,
/// which gives the pair as a tuple.
///
/// ```
/// # use journal_memory::MemoryJournalStorage;
/// journal_conformance::pair_suite!(async {
///     let store = MemoryJournalStorage::new();
///     (store.clone(), store)
/// });
/// ```
///
/// As with [`suite!`], `optional:` takes an expression giving an `Option`
/// of the pair, and `None` ends each test early.
#[macro_export]
macro_rules! pair_suite {
    (optional: $make:expr) => {
        $crate::__pair_tests!(@optional $make);
    };
    ($make:expr) => {
        $crate::__pair_tests!(@plain $make);
    };
}

/// The list of the pair tests.
#[doc(hidden)]
#[macro_export]
macro_rules! __pair_tests {
    (@$mode:ident $make:expr) => {
        $crate::__pair_tests!(@$mode $make;
            pair_writes_through_one_read_through_the_other,
            pair_racing_writers_one_wins_each_sequence,
            pair_concurrent_retries_store_one_copy,
            pair_reads_through_the_other_see_whole_batches
        );
    };
    (@plain $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::__private::run_pair(async { ::core::option::Option::Some($make.await) }, $crate::pair::$name);
            }
        )*
    };
    (@optional $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::__private::run_pair($make, $crate::pair::$name);
            }
        )*
    };
}

/// Stamps out one `#[test]` per test of [`timers`], the due-timer index
/// (contract rules 23 and 24), each calling the given async expression for a
/// fresh [`TimerStore`](journal_core::TimerStore).
///
/// ```
/// # use journal_memory::MemoryJournalStorage;
/// journal_conformance::timer_suite!(async { MemoryJournalStorage::new() });
/// ```
///
/// As with [`suite!`], `optional:` takes an expression giving an `Option`
/// of the store, and `None` ends each test early (print why, and under
/// `CI=true` panic instead).
///
/// The expression is evaluated once per test and must give a store of its
/// own (a new file, schema or key prefix): a claim takes every due timer of
/// the store, so tests sharing one would take each other's timers.
#[macro_export]
macro_rules! timer_suite {
    (optional: $make:expr) => {
        $crate::__timer_tests!(@optional $make);
    };
    ($make:expr) => {
        $crate::__timer_tests!(@plain $make);
    };
}

/// The list of the timer tests.
#[doc(hidden)]
#[macro_export]
macro_rules! __timer_tests {
    (@$mode:ident $make:expr) => {
        $crate::__timer_tests! {@$mode $make;
            timers_schedule_then_get,
            timers_reschedule_replaces_and_drops_claim,
            timers_cancel_before_due_never_fires,
            timers_cancel_under_lease_is_refused,
            timers_claim_due_earliest_first_at_most_max,
            timers_lease_blocks_then_expires,
            timers_complete_needs_the_current_claim,
            timers_next_due,
            timers_invalid_rejected_nothing_stored,
            timers_hostile_ids_round_trip,
            timers_racing_claimers_claim_each_once,
            timers_dead_claimer_leaves_timers_to_another,
            timers_ten_thousand_claimed_in_pages,
            prop_timers_match_model
        }
    };
    (@plain $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::__private::run_timers(async { ::core::option::Option::Some($make.await) }, $crate::timers::$name);
            }
        )*
    };
    (@optional $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::__private::run_timers($make, $crate::timers::$name);
            }
        )*
    };
    (@list $make:expr; $($name:ident),* $(,)?) => {
        ::std::vec![
            $(
                $crate::TimerSuiteTest {
                    name: ::core::stringify!($name),
                    run: |store| ::std::boxed::Box::pin($crate::timers::$name(store)),
                },
            )*
        ]
    };
}

/// Stamps out the feed tests (contract rule 28) for a
/// [`JournalFeed`](journal_core::JournalFeed) store, one `#[test]` each:
///
/// ```
/// # use journal_memory::MemoryJournalStorage;
/// journal_conformance::feed_suite!(async { MemoryJournalStorage::new() });
/// ```
///
/// The expression is evaluated once per test and must give a store of its
/// own: a feed over all actors carries every actor of the store.
/// `optional:` takes an expression giving an `Option`, as for [`suite!`].
#[macro_export]
macro_rules! feed_suite {
    (optional: $make:expr) => {
        $crate::__feed_tests!($make);
    };
    ($make:expr) => {
        $crate::__feed_tests!(async { ::core::option::Option::Some($make.await) });
    };
}

/// The list of the feed tests.
#[doc(hidden)]
#[macro_export]
macro_rules! __feed_tests {
    ($make:expr) => {
        $crate::__feed_tests! {@each $make;
            feed_every_entry_once_in_actor_order,
            feed_resumes_from_a_stored_offset,
            feed_follows_new_entries,
            feed_concurrent_writers_never_skip,
            feed_by_tag,
            feed_refuses_foreign_offsets,
            feed_after_truncation_and_deletion,
            feed_tag_after_truncation_and_deletion
        }
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::__private::run_feed($make, $crate::feed::$name);
            }
        )*
    };
}

/// Stamps out the projection tests (contract rule 29) for a
/// [`ProjectionStore`](journal_core::ProjectionStore), one `#[test]` each:
///
/// ```
/// # use journal_memory::MemoryJournalStorage;
/// journal_conformance::projection_suite!(async { MemoryJournalStorage::new() });
/// ```
///
/// Each test needs a store of its own; `optional:` as for [`suite!`].
#[macro_export]
macro_rules! projection_suite {
    (optional: $make:expr) => {
        $crate::__projection_tests!($make);
    };
    ($make:expr) => {
        $crate::__projection_tests!(async { ::core::option::Option::Some($make.await) });
    };
}

/// The list of the projection tests.
#[doc(hidden)]
#[macro_export]
macro_rules! __projection_tests {
    ($make:expr) => {
        $crate::__projection_tests! {@each $make;
            projection_offsets_round_trip,
            projection_resumes_from_its_stored_offset,
            projection_failure_before_the_offset_redelivers
        }
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::__private::run_projection($make, $crate::projection::$name);
            }
        )*
    };
}

/// Stamps out the live-subscription tests (contract rule 27) for a
/// [`JournalWatch`](journal_core::JournalWatch) store, one `#[test]` each:
///
/// ```
/// # use journal_memory::MemoryJournalStorage;
/// journal_conformance::subscribe_suite!(async { MemoryJournalStorage::new() });
/// ```
///
/// `optional:` takes an expression giving an `Option` of the store, as for
/// [`suite!`]. The subscriptions wait without polling: entries must reach
/// them through the backend's own wake-up.
#[macro_export]
macro_rules! subscribe_suite {
    (optional: $make:expr) => {
        $crate::__subscribe_tests!(@optional $make);
    };
    ($make:expr) => {
        $crate::__subscribe_tests!(@optional async { ::core::option::Option::Some($make.await) });
    };
}

/// The list of the subscription tests.
#[doc(hidden)]
#[macro_export]
macro_rules! __subscribe_tests {
    (@optional $make:expr) => {
        $crate::__subscribe_tests! {@each $make;
            subscribe_stored_then_live,
            subscribe_from_middle_and_future,
            subscribe_unknown_actor_waits,
            subscribe_batches_through_small_pages,
            subscribe_sees_only_its_actor,
            subscribe_many_subscribers_and_writers,
            subscribe_truncation_is_reported,
            subscribe_deletion_is_reported,
            subscribe_recreation_is_reported,
            subscribe_backpressure_resumes_in_order
        }
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::__private::run_watch($make, $crate::subscribe::$name);
            }
        )*
    };
}

/// Stamps out the subscription test across two storage values of one store
/// (two pools, two connections, as two processes have): `$make` gives an
/// `Option` of the pair, the first subscribed to, the second written
/// through.
#[macro_export]
macro_rules! subscribe_pair_suite {
    (optional: $make:expr) => {
        #[test]
        fn subscribe_sees_another_writer() {
            $crate::__private::run_watch_pair(
                $make,
                $crate::subscribe::subscribe_sees_another_writer,
            );
        }
    };
}

/// One test of [`timer_suite!`], to run the timer tests programmatically
/// (as the mutation self-test does, against deliberately broken stores).
#[derive(Clone, Copy)]
pub struct TimerSuiteTest {
    /// Its name, as [`timer_suite!`] stamps it out.
    pub name: &'static str,
    /// The test itself: panics when the store breaks the contract.
    pub run: fn(std::sync::Arc<dyn journal_core::TimerStore>) -> TestFuture,
}

impl std::fmt::Debug for TimerSuiteTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "timers::{}", self.name)
    }
}

/// Every test [`timer_suite!`] stamps out, in its order. Each must run on
/// a multi-threaded tokio runtime, with a store of its own.
pub fn timer_suite_tests() -> Vec<TimerSuiteTest> {
    __timer_tests!(@list ())
}

#[doc(hidden)]
pub mod __private {
    use std::future::Future;
    use std::sync::Arc;

    use journal_core::{JournalStorage, TimerStore};

    /// The runtime each suite test runs on.
    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("a tokio runtime for the test")
    }

    /// Runs one pair test on a multi-threaded runtime of its own.
    pub fn run_pair<S, U, M, T, F>(make: M, test: T)
    where
        S: JournalStorage + 'static,
        U: JournalStorage + 'static,
        M: Future<Output = Option<(S, U)>>,
        T: FnOnce(Arc<dyn JournalStorage>, Arc<dyn JournalStorage>) -> F,
        F: Future<Output = ()>,
    {
        runtime().block_on(async move {
            if let Some((one, other)) = make.await {
                test(Arc::new(one), Arc::new(other)).await;
            }
        });
    }

    /// Runs one timer test on a multi-threaded runtime of its own.
    pub fn run_timers<S, M, T, F>(make: M, test: T)
    where
        S: TimerStore + 'static,
        M: Future<Output = Option<S>>,
        T: FnOnce(Arc<dyn TimerStore>) -> F,
        F: Future<Output = ()>,
    {
        runtime().block_on(async move {
            if let Some(store) = make.await {
                test(Arc::new(store)).await;
            }
        });
    }

    /// Runs one projection test on a multi-threaded runtime of its own.
    pub fn run_projection<S, M, T, F>(make: M, test: T)
    where
        S: journal_core::ProjectionStore + 'static,
        M: Future<Output = Option<S>>,
        T: FnOnce(Arc<dyn journal_core::ProjectionStore>) -> F,
        F: Future<Output = ()>,
    {
        runtime().block_on(async move {
            if let Some(store) = make.await {
                test(Arc::new(store)).await;
            }
        });
    }

    /// Runs one feed test on a multi-threaded runtime of its own.
    pub fn run_feed<S, M, T, F>(make: M, test: T)
    where
        S: journal_core::JournalFeed + 'static,
        M: Future<Output = Option<S>>,
        T: FnOnce(Arc<dyn journal_core::JournalFeed>) -> F,
        F: Future<Output = ()>,
    {
        runtime().block_on(async move {
            if let Some(store) = make.await {
                test(Arc::new(store)).await;
            }
        });
    }

    /// Runs one subscription test on a multi-threaded runtime of its own.
    pub fn run_watch<S, M, T, F>(make: M, test: T)
    where
        S: journal_core::JournalWatch + 'static,
        M: Future<Output = Option<S>>,
        T: FnOnce(Arc<dyn journal_core::JournalWatch>) -> F,
        F: Future<Output = ()>,
    {
        runtime().block_on(async move {
            if let Some(store) = make.await {
                test(Arc::new(store)).await;
            }
        });
    }

    /// Runs the subscription test across two storage values of one store.
    pub fn run_watch_pair<S, U, M, T, F>(make: M, test: T)
    where
        S: journal_core::JournalWatch + 'static,
        U: JournalStorage + 'static,
        M: Future<Output = Option<(S, U)>>,
        T: FnOnce(Arc<dyn journal_core::JournalWatch>, Arc<dyn JournalStorage>) -> F,
        F: Future<Output = ()>,
    {
        runtime().block_on(async move {
            if let Some((one, other)) = make.await {
                test(Arc::new(one), Arc::new(other)).await;
            }
        });
    }

    /// Runs one suite test on a multi-threaded runtime of its own.
    pub fn run<S, M, T, F>(make: M, test: T)
    where
        S: JournalStorage + 'static,
        M: Future<Output = Option<S>>,
        T: FnOnce(Arc<dyn JournalStorage>) -> F,
        F: Future<Output = ()>,
    {
        runtime().block_on(async move {
            if let Some(storage) = make.await {
                test(Arc::new(storage)).await;
            }
        });
    }
}
