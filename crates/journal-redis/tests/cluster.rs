//! The whole conformance suite against a real Redis Cluster of three
//! primaries (each with a replica), which `cargo xtask ci` starts from the
//! machine's `redis-server` and stops after the run.

mod common;

journal_conformance::suite!(optional: async { common::cluster_storage(common::test_options()).await });
