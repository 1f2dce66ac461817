//! A raw HTTPS client of the fake, for the testkit's own tests of it: one request per new TLS
//! connection that trusts only the fake's certificate, parameters form-encoded as PVE takes
//! them, any `Authorization` (or none). rivetctl's own client is `targets::proxmox::client`.

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use super::FakePve;

/// An answer: status, reason phrase, JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub reason: String,
    pub body: Value,
}

pub enum Auth {
    Token,
    None,
    Header(String),
}

/// One request on a new TLS connection that trusts only the fake's certificate.
pub async fn send(
    pve: &FakePve,
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    auth: Auth,
) -> anyhow::Result<Answer> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(pve.ca_pem().as_bytes())?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let address = pve.url().trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&address).await?;
    let name = ServerName::try_from("127.0.0.1")?.to_owned();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    let form: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    let (uri, body) = match method {
        "POST" | "PUT" => (format!("/api2/json{path}"), form),
        _ if form.is_empty() => (format!("/api2/json{path}"), String::new()),
        _ => (format!("/api2/json{path}?{form}"), String::new()),
    };
    let mut request = hyper::Request::builder().method(method).uri(uri).header("host", address);
    if !body.is_empty() {
        request = request.header("content-type", "application/x-www-form-urlencoded");
    }
    match auth {
        Auth::Token => {
            let value = format!("PVEAPIToken={}={}", pve.token_id(), pve.token_secret());
            request = request.header("authorization", value);
        }
        Auth::Header(value) => request = request.header("authorization", value),
        Auth::None => {}
    }
    let response = sender.send_request(request.body(Full::new(Bytes::from(body)))?).await?;
    let status = response.status().as_u16();
    let reason = match response.extensions().get::<hyper::ext::ReasonPhrase>() {
        Some(reason) => String::from_utf8_lossy(reason.as_bytes()).into_owned(),
        None => response.status().canonical_reason().unwrap_or("").to_string(),
    };
    let body = serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?;
    Ok(Answer { status, reason, body })
}

/// A new ed25519 key pair in `dir` (`ssh-keygen`, no passphrase): the private key's path and
/// the public key's line. PVE checks `ssh-public-keys` with `ssh-keygen -l`, so tests need
/// real keys.
pub fn keypair(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let key = dir.join(name);
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ops@example.net", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen (openssh-client) must be installed");
    assert!(ok.success(), "ssh-keygen failed");
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("the public key").trim().to_string();
    (key, public)
}
