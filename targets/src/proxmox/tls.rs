//! Trusting the Proxmox VE API's TLS certificate. A PVE node serves a certificate signed by
//! the cluster's own CA (`/etc/pve/pve-root-ca.pem`), so the usual set-ups are:
//! - a pinned SHA-256 fingerprint of the node's certificate (`deployment.proxmox.fingerprint`,
//!   as the PVE GUI shows it: `AB:CD:…`, 32 bytes), checked exactly, with the handshake's
//!   signatures still verified against that certificate;
//! - a CA file (`deployment.proxmox.ca_file`, the cluster CA or a company CA): the usual
//!   WebPKI checks, the host name included, against that CA only;
//! - the system's roots, for a certificate from a public CA (ACME).
//!
//! There is no silent insecure mode: [`Trust::Insecure`] exists only for an explicit
//! `insecure: true`, and whoever builds it warns on every run. Everything runs on the
//! workspace's one crypto backend, ring.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme,
};

/// How the API's certificate is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The certificate whose DER has this SHA-256, and no other.
    Fingerprint([u8; 32]),
    /// Certificates this CA file signed (for the API's host name).
    CaFile(PathBuf),
    /// Certificates the system's roots sign.
    SystemRoots,
    /// Any certificate: only for an explicit `insecure: true`, warned about on every run.
    Insecure,
}

/// Why TLS to the API cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("deployment.proxmox.fingerprint {text:?} is not a SHA-256 fingerprint ({problem})")]
    Fingerprint { text: String, problem: &'static str },
    #[error("cannot read the CA file {path}: {source}")]
    ReadCa { path: PathBuf, source: std::io::Error },
    #[error("the CA file {path} holds no PEM certificate")]
    NoCa { path: PathBuf },
    #[error("no usable root certificates on this system ({problem})")]
    NoSystemRoots { problem: String },
    #[error("cannot set up TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Reads a fingerprint as the PVE GUI shows it (`AB:CD:…`; colons optional, any case).
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], TlsError> {
    let bad = |problem| TlsError::Fingerprint { text: text.to_string(), problem };
    let hex_digits: String = text.trim().chars().filter(|c| *c != ':').collect();
    if hex_digits.len() != 64 {
        return Err(bad("it needs 32 bytes: 64 hex digits, colons allowed"));
    }
    let bytes = hex::decode(&hex_digits).map_err(|_| bad("only hex digits and colons are allowed"))?;
    Ok(bytes.try_into().expect("64 hex digits are 32 bytes"))
}

/// `AB:CD:…`, as the PVE GUI shows a fingerprint.
pub fn format_fingerprint(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// Why a handshake failed, in words: the pin mismatch names both fingerprints.
pub fn handshake_reason(err: &std::io::Error) -> String {
    match err.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner)))) => inner.to_string(),
        Some(other) => other.to_string(),
        None => err.to_string(),
    }
}

/// The TLS client configuration for `trust`.
pub fn client_config(trust: &Trust) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions()?;
    let config = match trust {
        Trust::Fingerprint(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { pin: Some(*pin), provider }))
            .with_no_client_auth(),
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { pin: None, provider }))
            .with_no_client_auth(),
        Trust::CaFile(path) => builder.with_root_certificates(ca_roots(path)?).with_no_client_auth(),
        Trust::SystemRoots => builder.with_root_certificates(system_roots()?).with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn ca_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let text = std::fs::read(path).map_err(|source| TlsError::ReadCa { path: path.to_path_buf(), source })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&text).flatten() {
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCa { path: path.to_path_buf() });
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let problem = found.errors.first().map_or("none found".to_string(), ToString::to_string);
        return Err(TlsError::NoSystemRoots { problem });
    }
    Ok(roots)
}

/// Accepts exactly the certificate of the pinned fingerprint (PVE's self-signed case: no
/// chain or name to check), or any certificate when there is no pin (`insecure: true`); the
/// handshake's signatures are verified against the certificate either way.
#[derive(Debug)]
struct Pinned {
    pin: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

/// A certificate fingerprint that is not the pinned one, named in the handshake error.
#[derive(Debug)]
struct NotPinned {
    seen: String,
    pinned: String,
}

impl std::fmt::Display for NotPinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the server's certificate has fingerprint {}, not the pinned {}", self.seen, self.pinned)
    }
}

impl std::error::Error for NotPinned {}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = self.pin else { return Ok(ServerCertVerified::assertion()) };
        let seen: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if seen == pin {
            return Ok(ServerCertVerified::assertion());
        }
        let mismatch = NotPinned { seen: format_fingerprint(&seen), pinned: format_fingerprint(&pin) };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(mismatch)))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_as_the_gui_shows_them() {
        let text = "ab:cd:ef:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";
        let pin = parse_fingerprint(text).unwrap();
        assert_eq!(format_fingerprint(&pin), text.to_uppercase());
        assert_eq!(parse_fingerprint(&text.replace(':', "")).unwrap(), pin);
        assert!(parse_fingerprint("AB:CD").unwrap_err().to_string().contains("32 bytes"));
        let wrong = text.replacen("ab", "zz", 1);
        assert!(parse_fingerprint(&wrong).unwrap_err().to_string().contains("hex"));
    }
}
