//! The fake's certificate: self-signed, new for every server, for `127.0.0.1` and `localhost`
//! (what a PVE node has until someone installs a real one), and its SHA-256 fingerprint in the
//! form `pvenode cert info` prints, which is what a client pins.

use std::sync::Arc;

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

pub(crate) struct Cert {
    pub pem: String,
    pub fingerprint: String,
    der: Vec<u8>,
    key_der: Vec<u8>,
}

impl Cert {
    pub fn generate() -> anyhow::Result<Cert> {
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(names)?;
        let der = cert.der().to_vec();
        let fingerprint = Sha256::digest(&der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
        Ok(Cert { pem: cert.pem(), fingerprint, der, key_der: signing_key.serialize_der() })
    }

    /// A TLS acceptor on ring (the workspace's one crypto backend), no ALPN, like pveproxy: clients fall back to HTTP/1.1.
    pub fn acceptor(&self) -> anyhow::Result<TlsAcceptor> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(self.der.clone())], key)
            .context("the fake PVE's certificate")?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}
