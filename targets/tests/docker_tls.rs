//! `tcp://` engines: TLS with client certificates against this machine's engine behind a
//! socat TLS front (as `dockerd --tlsverify` serves it), plain HTTP only when asked for, and
//! probes through the engine's exec API over that TLS connection.

mod tls_front;

use std::process::Command;
use std::time::Duration;

use orchestrator::config::rules::{Endpoint, TcpSecurity};
use rivet_targets::docker::{self, ConnectError, Engine};
use tls_front::{Certs, Front};

fn endpoint(front: &Front) -> Endpoint {
    Endpoint::Tcp { host: "127.0.0.1".into(), port: front.port }
}

fn tls(certs: &Certs, ca: &str, cert: &str, key: &str) -> TcpSecurity {
    let path = |name: &str| certs.path(name).to_string_lossy().into_owned();
    TcpSecurity::Tls { ca: path(ca), cert: path(cert), key: path(key) }
}

async fn refused(endpoint: &Endpoint, security: &TcpSecurity) -> ConnectError {
    match docker::connect("n1", endpoint, security).await {
        Ok(engine) => panic!("connected to {} although it should be refused", engine.address),
        Err(err) => err,
    }
}

/// The error with its sources, as the binary prints it.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}

#[tokio::test]
async fn the_client_certificate_reaches_the_engine_over_tls() {
    let certs = Certs::new();
    let front = Front::tls(&certs, "server", &[]);
    let engine = docker::connect("n1", &endpoint(&front), &tls(&certs, "ca.pem", "cert.pem", "key.pem"))
        .await
        .unwrap_or_else(|err| panic!("{}\nhint: {}", chain(&err), err.hint()));
    assert!(!engine.plain_tcp);
    assert_eq!(engine.address, format!("tcp://127.0.0.1:{}", front.port));
    let version = engine.call().version().await.expect("the engine answers over TLS");
    assert!(version.api_version.is_some());
}

#[tokio::test]
async fn a_wrong_ca_a_foreign_client_certificate_and_a_wrong_name_are_refused_with_hints() {
    let certs = Certs::new();
    let front = Front::tls(&certs, "server", &[]);
    let cases = [
        (tls(&certs, "other-ca.pem", "cert.pem", "key.pem"), "not signed by"),
        (tls(&certs, "ca.pem", "other-cert.pem", "other-key.pem"), "refused our client certificate"),
    ];
    for (security, hint) in cases {
        let err = refused(&endpoint(&front), &security).await;
        assert!(matches!(err, ConnectError::Tls { .. }), "{}", chain(&err));
        assert!(err.hint().contains(hint), "{} / hint: {}", chain(&err), err.hint());
    }
    let wrong_name = Front::tls(&certs, "wrongname", &[]);
    let err = refused(&endpoint(&wrong_name), &tls(&certs, "ca.pem", "cert.pem", "key.pem")).await;
    assert!(err.hint().contains("not issued for this host"), "{} / hint: {}", chain(&err), err.hint());
}

#[tokio::test]
async fn unusable_files_are_named_before_connecting() {
    let certs = Certs::new();
    let nowhere = Endpoint::Tcp { host: "127.0.0.1".into(), port: 9 };
    let err = refused(&nowhere, &tls(&certs, "ca.pem", "cert.pem", "missing.pem")).await;
    assert!(chain(&err).contains("cannot read the TLS client key"), "{}", chain(&err));
    assert!(err.hint().contains("tls.key"), "{}", err.hint());
    let err = refused(&nowhere, &tls(&certs, "ca.pem", "cert.pem", "other-key.pem")).await;
    assert!(chain(&err).contains("do not go together"), "{}", chain(&err));
    let err = refused(&nowhere, &tls(&certs, "server.ext", "cert.pem", "key.pem")).await;
    assert!(chain(&err).contains("holds no usable PEM certificate"), "{}", chain(&err));
}

#[tokio::test]
async fn plain_tcp_needs_the_explicit_opt_in() {
    let front = Front::plain(&[]);
    let err = refused(&endpoint(&front), &TcpSecurity::Unset).await;
    assert!(matches!(err, ConnectError::PlainTcp { from_env: false, .. }), "{}", chain(&err));
    assert!(err.hint().contains("tls:") && err.hint().contains("insecure: true"), "{}", err.hint());
    let engine = docker::connect("n1", &endpoint(&front), &TcpSecurity::Insecure).await.expect("plain HTTP, asked for");
    assert!(engine.plain_tcp, "the runtime warns on engines marked plain_tcp");
    engine.call().ping().await.unwrap();
}

/// A container that answers HTTP on 127.0.0.1:3100 with busybox nc, removed on drop.
struct Server {
    name: String,
}

impl Server {
    fn start(answer: &str) -> Server {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("rivet-exec-probe-{}-{nanos}", std::process::id());
        let script = format!("while :; do printf '{answer}' | nc -l -p 3100 >/dev/null; done");
        let output = Command::new("docker")
            .args([
                "run",
                "-d",
                "--rm",
                "--network",
                "none",
                "--name",
                &name,
                "rivetos-base:busybox",
                "sh",
                "-c",
                &script,
            ])
            .output()
            .expect("docker CLI");
        assert!(output.status.success(), "docker run: {}", String::from_utf8_lossy(&output.stderr));
        Server { name }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.name]).output();
    }
}

async fn probe_until(engine: &Engine, server: &Server) -> (u16, Vec<u8>) {
    let mut last = String::new();
    for _ in 0..50 {
        match docker::exec::http_get(engine, &server.name, 3100, "/health", Duration::from_secs(2)).await {
            Ok(answer) => return answer,
            Err(err) => last = err,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no answer through exec: {last}");
}

#[tokio::test]
async fn probes_run_inside_the_container_through_the_tls_engine() {
    let certs = Certs::new();
    let front = Front::tls(&certs, "server", &[]);
    let engine = docker::connect("n1", &endpoint(&front), &tls(&certs, "ca.pem", "cert.pem", "key.pem")).await.unwrap();
    let healthy = Server::start(r#"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{"status":"healthy"}"#);
    assert_eq!(probe_until(&engine, &healthy).await, (200, br#"{"status":"healthy"}"#.to_vec()));
    let failing = Server::start(r#"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nno"#);
    assert_eq!(probe_until(&engine, &failing).await, (503, Vec::new()));
    let err =
        docker::exec::http_get(&engine, &healthy.name, 3999, "/health", Duration::from_secs(1)).await.unwrap_err();
    assert!(err.contains("Connection refused"), "{err}");
}
