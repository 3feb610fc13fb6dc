//! The server's certificate and key (PEM files, as a kubernetes.io/tls Secret mounts them),
//! polled for changes: each new handshake gets the certificate in force, and connections
//! already open keep theirs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::reload::{LoadError, Watched};

/// A certificate that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// TLS for the listener.
#[derive(Debug, Clone)]
pub struct ServerTls {
    certificate: Arc<Watched<Arc<CertifiedKey>>>,
}

impl ServerTls {
    /// Loads `cert` (the chain, leaf first) and `key`, and checks them every `interval`.
    pub fn start(cert: PathBuf, key: PathBuf, interval: Duration) -> Result<Self, TlsError> {
        super::install_crypto_provider();
        let certificate = Watched::start("TLS certificate", vec![cert, key], interval, |files| {
            certified_key(&files[0], &files[1]).map(Arc::new)
        })?;
        Ok(Self { certificate })
    }

    /// An acceptor offering HTTP/2 and HTTP/1.1 by ALPN.
    pub fn acceptor(&self) -> TlsAcceptor {
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(Arc::clone(&self.certificate))));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }
}

#[derive(Debug)]
struct Resolver(Arc<Watched<Arc<CertifiedKey>>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.load()))
    }
}

fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("certificate file: {err}"))?;
    if chain.is_empty() {
        return Err("the certificate file holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| format!("key file: {err}"))?;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let certified = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|err| format!("certificate and key: {err}"))?;
    Ok(certified)
}
