//! TLS: loads a PEM certificate chain and key into a rustls acceptor (ALPN `http/1.1`).

use std::io;
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// Why TLS could not be set up; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("tls: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("tls.cert {0}: no PEM certificate found")]
    NoCertificate(String),
    /// The key file holds no PEM private key.
    #[error("tls.key {0}: no PEM private key found")]
    NoKey(String),
    /// rustls refused the pair (key does not match, unsupported algorithm).
    #[error("tls: certificate/key rejected: {0}")]
    Rejected(String),
}

/// Builds an acceptor from PEM files, offering `alpn` protocols in order.
pub fn load_acceptor(
    cert_path: &str,
    key_path: &str,
    alpn: &[&[u8]],
) -> Result<TlsAcceptor, TlsError> {
    let read = |path: &str| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_string(),
            source,
        })
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            path: cert_path.to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_path.to_string()));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| TlsError::Read {
            path: key_path.to_string(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey(key_path.to_string()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rejected(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rejected(e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}
