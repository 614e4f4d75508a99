//! TLS with rustls (feature `tls-rustls`).

use std::sync::Arc;

use journal_core::{JournalError, JournalResult};

/// TLS 1.2 and 1.3 with the ring provider, verified against the Mozilla
/// root certificates.
pub(crate) fn default_client_config() -> JournalResult<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| JournalError::storage("postgres", format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}
