//! TLS to a `tcp://` Docker Engine with a client certificate, as `docker --tlsverify` does:
//! the engine's certificate must be signed by the configured CA (the only one trusted) and be
//! valid for the host name or address dialled, and our certificate is presented.
//!
//! rustls on ring, the workspace's one crypto backend (see `ssh/mod.rs`): bollard's own `ssl`
//! feature would also trust the system's CAs and load the key only at handshake time, so a
//! bad key file would surface as a refused handshake. Here the files are read and checked
//! once, up front, and each API request gets its own TLS connection through bollard's custom
//! transport (as the SSH transport does); upgraded connections (exec, attach) work.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bollard::errors::Error as BollardError;
use bollard::{API_DEFAULT_VERSION, BollardRequest, Docker};
use hyper::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, AlertDescription, CertificateError, ClientConfig, RootCertStore};

/// The PEM files of a client TLS setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signed the engine's certificate.
    pub ca: PathBuf,
    /// Our certificate, and its private key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// `ca.pem`, `cert.pem` and `key.pem` in `dir` (the layout of `DOCKER_CERT_PATH`).
    pub fn in_dir(dir: &Path) -> TlsFiles {
        TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem") }
    }
}

/// Why TLS to an engine could not be set up or was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the TLS {what} {} holds no usable PEM {expected}", path.display())]
    Pem { what: &'static str, path: PathBuf, expected: &'static str },
    #[error("the client certificate {} and key {} do not go together", cert.display(), key.display())]
    KeyPair {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("\"{host}\" is not a host name or address TLS can verify")]
    ServerName { host: String },
    #[error("the TLS handshake or first request failed")]
    Handshake {
        /// The CA file, for the hint.
        ca: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl TlsError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            TlsError::Read { what, .. } | TlsError::Pem { what, .. } => format!(
                "point `tls.{}` at the PEM file (paths are relative to the config's directory; with DOCKER_TLS_VERIFY, DOCKER_CERT_PATH holds ca.pem, cert.pem and key.pem)",
                match *what {
                    "CA certificate" => "ca",
                    "client certificate" => "cert",
                    _ => "key",
                }
            ),
            TlsError::KeyPair { .. } => "`tls.key` must be the private key the client certificate was issued for".into(),
            TlsError::ServerName { .. } => "use the host name or IP address the engine's certificate was issued for".into(),
            TlsError::Handshake { source, ca, .. } => match rustls_error(source) {
                Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => format!(
                    "the engine's certificate is not signed by {}: is that the CA of the engine's `--tlscert`?",
                    ca.display()
                ),
                Some(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
                )) => "the engine's certificate is not issued for this host: connect with a name or address of its subjectAltName, or reissue it with this one".into(),
                Some(rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. } | CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
                )) => "the engine's certificate is expired or not valid yet: renew it (and check this machine's clock)".into(),
                Some(rustls::Error::AlertReceived(
                    AlertDescription::CertificateRequired
                    | AlertDescription::BadCertificate
                    | AlertDescription::UnknownCA
                    | AlertDescription::CertificateUnknown
                    | AlertDescription::AccessDenied,
                )) => "the engine refused our client certificate: sign `tls.cert` with the CA the engine trusts for clients (its `--tlscacert`)".into(),
                Some(_) => "is the engine started with --tlsverify, and are these its CA and a client certificate it trusts?".into(),
                None => "is the engine up, listening with TLS (`dockerd --tlsverify -H tcp://…`), and reachable from here?".into(),
            },
        }
    }
}

/// The rustls error behind an I/O error, if any (tokio-rustls and hyper wrap it).
fn rustls_error(err: &io::Error) -> Option<&rustls::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = err.get_ref().map(|e| e as _);
    while let Some(err) = source {
        if let Some(found) = err.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        // An io::Error's `source()` skips the error it wraps: look inside first.
        source = match err.downcast_ref::<io::Error>().and_then(|e| e.get_ref()) {
            Some(inner) => Some(inner as _),
            None => err.source(),
        };
    }
    None
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_path_buf(), source })
}

/// The client side of TLS to one engine: checked files, the address and the name to verify.
#[derive(Debug)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    ca: PathBuf,
}

impl TlsConnector {
    /// Reads and checks the files; `host` is what the certificate must be valid for.
    pub fn new(files: &TlsFiles, host: &str, port: u16) -> Result<TlsConnector, TlsError> {
        let pem = |what, path: &Path, expected| TlsError::Pem { what, path: path.to_path_buf(), expected };
        let ca_text = read("CA certificate", &files.ca)?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca_text) {
            let cert = cert.map_err(|_| pem("CA certificate", &files.ca, "certificate"))?;
            roots.add(cert).map_err(|_| pem("CA certificate", &files.ca, "certificate"))?;
        }
        if roots.is_empty() {
            return Err(pem("CA certificate", &files.ca, "certificate"));
        }
        let cert_text = read("client certificate", &files.cert)?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_text)
            .collect::<Result<_, _>>()
            .map_err(|_| pem("client certificate", &files.cert, "certificate"))?;
        if chain.is_empty() {
            return Err(pem("client certificate", &files.cert, "certificate"));
        }
        let key_text = read("client key", &files.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_text).map_err(|_| pem("client key", &files.key, "private key"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key_pair = |source| TlsError::KeyPair { cert: files.cert.clone(), key: files.key.clone(), source };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(key_pair)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(key_pair)?;
        // No session resumption: OpenSSL-based fronts that verify clients (stunnel, socat)
        // answer a resumption attempt without a session id context with `internal_error`,
        // and every request opens its own connection anyway.
        config.resumption = rustls::client::Resumption::disabled();
        let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let server_name =
            ServerName::try_from(bare.clone()).map_err(|_| TlsError::ServerName { host: host.to_string() })?;
        Ok(TlsConnector { config: Arc::new(config), host: bare, port, server_name, ca: files.ca.clone() })
    }

    /// A new TLS connection to the engine.
    pub async fn stream(&self) -> io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(Arc::clone(&self.config)).connect(self.server_name.clone(), tcp).await
    }

    /// Connects once and asks `GET /_ping`: a refused client certificate shows only after
    /// the handshake (TLS 1.3), so the first exchange is what proves the setup.
    pub async fn check(&self) -> Result<(), TlsError> {
        let handshake = |source| TlsError::Handshake { ca: self.ca.clone(), source };
        let stream = self.stream().await.map_err(handshake)?;
        let authority = format!("{}:{}", self.host, self.port);
        match crate::http::get(stream, &authority, "/_ping").await {
            Ok(_) => Ok(()),
            Err(err) => Err(handshake(io::Error::other(err))),
        }
    }
}

/// Seconds bollard waits for the headers of a response (as in `docker::connect`).
const TIMEOUT_SECS: u64 = 600;

/// A bollard client whose every request goes over a new TLS connection from `connector`.
pub fn docker(connector: Arc<TlsConnector>) -> Result<Docker, BollardError> {
    let transport = move |request: BollardRequest| {
        let connector = Arc::clone(&connector);
        async move { forward(&connector, request).await }
    };
    Docker::connect_with_custom_transport(transport, Some("http://docker"), TIMEOUT_SECS, API_DEFAULT_VERSION)
}

async fn forward(connector: &TlsConnector, request: BollardRequest) -> Result<Response<Incoming>, BollardError> {
    let stream = connector.stream().await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection.with_upgrades());
    Ok(sender.send_request(crate::ssh::origin_form(request)).await?)
}
