//! TLS: loads a PEM certificate chain and key into a rustls acceptor, optionally requiring client
//! certificates signed by given CAs (mutual TLS).

use std::io;
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
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
    /// The client CA file holds no usable PEM certificate.
    #[error("grpc.client_ca {0}: no usable PEM CA certificate found")]
    NoClientCa(String),
    /// rustls refused the pair (key does not match, unsupported algorithm).
    #[error("tls: certificate/key rejected: {0}")]
    Rejected(String),
}

fn read(path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_string(),
        source,
    })
}

fn certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    rustls_pemfile::certs(&mut read(path)?.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            path: path.to_string(),
            source,
        })
}

/// Builds an acceptor from PEM files, offering `alpn` protocols in order.
pub fn load_acceptor(
    cert_path: &str,
    key_path: &str,
    alpn: &[&[u8]],
) -> Result<TlsAcceptor, TlsError> {
    load_acceptor_with_clients(cert_path, key_path, alpn, None)
}

/// Like [`load_acceptor`]; with `client_ca`, a client must present a certificate chain that
/// verifies against the CA certificates in that PEM file, or the handshake fails.
pub fn load_acceptor_with_clients(
    cert_path: &str,
    key_path: &str,
    alpn: &[&[u8]],
    client_ca: Option<&str>,
) -> Result<TlsAcceptor, TlsError> {
    let key_pem = read(key_path)?;
    let certs = certificates(cert_path)?;
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
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rejected(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(certificates(path)?);
            if added == 0 {
                return Err(TlsError::NoClientCa(path.to_string()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Rejected(format!("grpc.client_ca {path}: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rejected(e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}
