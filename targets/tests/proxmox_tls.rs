//! Trusting the Proxmox VE API's certificate (`targets::proxmox::tls`) against a real TLS
//! server on loopback (tokio-rustls, certificates made with the `openssl` CLI): a pinned
//! fingerprint, a CA file, the system roots, and the explicit insecure mode.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use rivet_targets::proxmox::tls::{Trust, client_config, format_fingerprint};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ServerConfig};

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|err| panic!("cannot run openssl ({err}): install the openssl package"));
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir`.
fn certificates(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca =
        vec!["req", "-x509", "-days", "2", "-subj", "/CN=test PVE cluster CA", "-keyout", "ca.key", "-out", "ca.pem"];
    ca.extend(ec);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-new", "-subj", "/CN=127.0.0.1", "-keyout", "node.key", "-out", "node.csr"];
    csr.extend(ec);
    openssl(dir, &csr);
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "node.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext",
            "-out",
            "node.pem",
        ],
    );
}

/// Serves TLS with the node certificate on a free loopback port, answering `ok` to each
/// connection; returns the port and the certificate's DER.
async fn serve(dir: &Path) -> (u16, Vec<u8>) {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("node.pem")).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("node.key")).unwrap();
    let der = chain[0].to_vec();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"ok").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    (port, der)
}

/// Connects with `trust` and reads the server's answer.
async fn connect(port: u16, trust: &Trust) -> Result<String, String> {
    let config = client_config(trust).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.map_err(|e| e.to_string())?;
    Ok(answer)
}

#[tokio::test]
async fn the_api_certificate_is_trusted_only_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let (port, der) = serve(dir.path()).await;
    let pin: [u8; 32] = Sha256::digest(&der).into();

    // The pinned fingerprint: accepted; any other: refused, both named.
    assert_eq!(connect(port, &Trust::Fingerprint(pin)).await.unwrap(), "ok");
    let mut other = pin;
    other[0] ^= 0xff;
    let refused = connect(port, &Trust::Fingerprint(other)).await.unwrap_err();
    assert!(refused.contains(&format_fingerprint(&pin)) && refused.contains(&format_fingerprint(&other)), "{refused}");

    // The CA that signed it: accepted; another CA: refused.
    assert_eq!(connect(port, &Trust::CaFile(dir.path().join("ca.pem"))).await.unwrap(), "ok");
    let elsewhere = tempfile::tempdir().unwrap();
    certificates(elsewhere.path());
    let refused = connect(port, &Trust::CaFile(elsewhere.path().join("ca.pem"))).await.unwrap_err();
    // (Same CA name, other key: the signature check is what refuses it.)
    assert!(refused.contains("invalid peer certificate"), "{refused}");
    let missing = connect(port, &Trust::CaFile(dir.path().join("nothing.pem"))).await.unwrap_err();
    assert!(missing.contains("cannot read the CA file"), "{missing}");

    // The system's roots do not know this cluster's CA.
    assert!(connect(port, &Trust::SystemRoots).await.is_err());

    // Only the explicit insecure mode takes any certificate.
    assert_eq!(connect(port, &Trust::Insecure).await.unwrap(), "ok");
}
