//! TLS: loads a PEM certificate chain and key into a rustls acceptor, optionally requiring client
//! certificates signed by given CAs (mutual TLS); and the client side of the internal gRPC
//! connections ([`ClientTls`]: the CAs trusted for peers, the name checked, the certificate a
//! client presents for mutual TLS).

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

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
    /// The file of CAs the internal client trusts holds no usable PEM certificate.
    #[error("grpc.client_tls_ca {0}: no usable PEM CA certificate found")]
    NoServerCa(String),
    /// Only one of the client certificate and its key is set.
    #[error("grpc.client_cert and grpc.client_key: set both or neither (mutual TLS)")]
    HalfIdentity,
    /// A client certificate is set but no CA to trust, so there would be no TLS to present it in.
    #[error("grpc.client_cert is set but grpc.client_tls_ca is not: mutual TLS needs TLS")]
    IdentityWithoutCa,
    /// The client certificate file holds no PEM certificate.
    #[error("grpc.client_cert {0}: no PEM certificate found")]
    NoClientCertificate(String),
    /// The client key file holds no PEM private key.
    #[error("grpc.client_key {0}: no PEM private key found")]
    NoClientKey(String),
    /// The name to check in peers' certificates is neither a DNS name nor an IP address.
    #[error("grpc.client_tls_name {0:?}: not a DNS name or IP address")]
    BadServerName(String),
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

fn private_key(path: &str) -> Result<Option<PrivateKeyDer<'static>>, TlsError> {
    rustls_pemfile::private_key(&mut read(path)?.as_slice()).map_err(|source| TlsError::Read {
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
    let certs = certificates(cert_path)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_path.to_string()));
    }
    let key = private_key(key_path)?.ok_or_else(|| TlsError::NoKey(key_path.to_string()))?;
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

/// TLS for the connections the internal gRPC client opens: which CAs sign the peers'
/// certificates, which name a peer's certificate must carry, and (mutual TLS) the certificate
/// this process presents. Cheap to clone: one rustls configuration shared by every shard.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Loads the PEM CA file `ca_path`; with `identity` (certificate chain file, key file) the
    /// client presents that certificate (mutual TLS). `server_name` is the name every peer's
    /// certificate must carry; `None` checks the peer's IP address instead (the address a
    /// registry or a static list gives is an IP, so certificates name it as an IP SAN). ALPN
    /// offers `h2` only: gRPC needs HTTP/2.
    pub fn load(
        ca_path: &str,
        identity: Option<(&str, &str)>,
        server_name: Option<&str>,
    ) -> Result<ClientTls, TlsError> {
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(certificates(ca_path)?);
        if added == 0 {
            return Err(TlsError::NoServerCa(ca_path.to_string()));
        }
        let server_name = server_name
            .map(|name| {
                ServerName::try_from(name.to_string())
                    .map_err(|_| TlsError::BadServerName(name.to_string()))
            })
            .transpose()?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rejected(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert_path, key_path)) => {
                let certs = certificates(cert_path)?;
                if certs.is_empty() {
                    return Err(TlsError::NoClientCertificate(cert_path.to_string()));
                }
                let key = private_key(key_path)?
                    .ok_or_else(|| TlsError::NoClientKey(key_path.to_string()))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| TlsError::Rejected(format!("grpc.client_cert: {e}")))?
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// [`ClientTls::load`] from optional settings as config holds them: `None` without a CA
    /// (plaintext); a certificate without its key (or the reverse) is an error.
    pub fn from_settings(
        ca_path: Option<&str>,
        cert_path: Option<&str>,
        key_path: Option<&str>,
        server_name: Option<&str>,
    ) -> Result<Option<ClientTls>, TlsError> {
        let identity = match (cert_path, key_path) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err(TlsError::HalfIdentity),
        };
        match ca_path {
            Some(ca) => ClientTls::load(ca, identity, server_name).map(Some),
            None if identity.is_some() => Err(TlsError::IdentityWithoutCa),
            None => Ok(None),
        }
    }

    /// The connector (rustls client configuration).
    pub fn connector(&self) -> &TlsConnector {
        &self.connector
    }

    /// The name a peer at `ip` must prove: the configured one, else the IP itself.
    pub fn server_name(&self, ip: IpAddr) -> ServerName<'static> {
        self.server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(ip.into()))
    }
}
