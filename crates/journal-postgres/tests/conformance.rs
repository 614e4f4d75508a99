//! The whole conformance suite against the real PostgreSQL server, each
//! test in a schema of its own.

mod common;

journal_conformance::suite!(optional: async { common::storage(common::test_options()).await });
