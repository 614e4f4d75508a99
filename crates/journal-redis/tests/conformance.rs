//! The whole conformance suite against the real standalone Redis, each test
//! under a key prefix of its own.

mod common;

journal_conformance::suite!(optional: async { common::storage(common::test_options()).await });
