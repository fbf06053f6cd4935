//! TLS configuration, ring-only: pgwire, rustls and tokio-rustls default to aws-lc-rs, and
//! two compiled-in providers make `ServerConfig::builder()` panic at run time, so every config
//! here names the ring provider explicitly.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Pem { path: path.display().to_string(), reason: e.to_string() }
}

/// Server config for client-facing TLS from PEM certificate chain and key files.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| pem_err(cert_file, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert_file, e))?;
    if certs.is_empty() {
        return Err(pem_err(cert_file, "no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| pem_err(key_file, e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// Client config for TLS to a shard, verifying its certificate against `ca_file`.
pub fn client_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| pem_err(ca_file, e))? {
        roots.add(cert.map_err(|e| pem_err(ca_file, e))?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
