//! TLS to the real server (feature `tls-rustls`). The local server's
//! certificate is the Debian "snakeoil" one, self-signed for `localhost`.

#![cfg(feature = "tls-rustls")]

mod common;

use std::sync::Arc;

use journal_core::journal_entry::Entry;
use journal_core::{JournalEntry, JournalStorage};
use journal_postgres::rustls::pki_types::pem::PemObject;
use journal_postgres::rustls::pki_types::CertificateDer;
use journal_postgres::rustls::{self, ClientConfig, RootCertStore};
use journal_postgres::{PostgresJournalStorage, PostgresOptions};

const SERVER_CERT: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// The test server's URL, by the name its certificate is for, asking for TLS.
fn tls_url() -> String {
    format!(
        "{}?sslmode=require",
        common::url().replace("127.0.0.1", "localhost")
    )
}

fn trusting(cert: CertificateDer<'static>) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.add(cert).expect("a usable root certificate");
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn server_certificate() -> Option<CertificateDer<'static>> {
    match CertificateDer::from_pem_file(SERVER_CERT) {
        Ok(cert) => Some(cert),
        Err(e) => {
            let advice = format!("the server's certificate {SERVER_CERT} is not readable ({e})");
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{advice}");
            eprintln!("SKIPPED: {advice}");
            None
        }
    }
}

#[tokio::test]
async fn tls_with_a_trusted_root_encrypts_and_works() {
    let Some(cert) = server_certificate() else {
        return;
    };
    // Skips (locally) when the server is down.
    if common::storage(common::test_options()).await.is_none() {
        return;
    }
    let options = PostgresOptions {
        schema: common::fresh_schema(),
        ..common::test_options()
    };
    let storage = PostgresJournalStorage::open_with_tls(&tls_url(), options, trusting(cert))
        .await
        .expect("TLS connection trusting the server's certificate");
    let entry = JournalEntry::new(
        "tls-actor",
        1,
        Entry::message_received("m", "T", b"secret".to_vec()),
    );
    storage.append_entry(&entry).await.expect("append over TLS");
    assert_eq!(
        storage.replay_from("tls-actor", 1).await.expect("replay"),
        vec![entry]
    );
    let client = storage.pool().get().await.expect("client");
    let encrypted: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(encrypted, "the connection is not encrypted");
}

#[tokio::test]
async fn tls_refuses_an_untrusted_certificate() {
    if server_certificate().is_none() || common::storage(common::test_options()).await.is_none() {
        return;
    }
    let options = PostgresOptions {
        schema: common::fresh_schema(),
        connect_timeout: std::time::Duration::from_secs(5),
        ..common::test_options()
    };
    // The default roots are the Mozilla ones: a self-signed certificate is
    // not among them.
    let error = PostgresJournalStorage::open(&tls_url(), options)
        .await
        .expect_err("a self-signed certificate must not be trusted by default");
    let text = format!("{error} {error:?}").to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("tls"),
        "{error}"
    );
    eprintln!("refused as expected: {error}");
}
