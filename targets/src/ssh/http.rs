//! Plain HTTP/1.1 through the SSH connection: a health probe of a container address that only
//! the remote host can reach (`GET http://10.0.3.5:3000/health` from the host itself).

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper::body::Bytes;
use hyper::header::HOST;
use hyper_util::rt::TokioIo;

use super::{Session, SshError, host_port};

/// The most of a response body kept: health documents are small, and a probe must not let a
/// misbehaving service fill memory.
const MAX_BODY: usize = 1024 * 1024;

/// `GET http://host:port{path}` as seen from the remote host: the status and the body, all
/// within `limit`.
pub(super) async fn get(
    session: &Session,
    host: &str,
    port: u16,
    path: &str,
    limit: Duration,
) -> Result<(u16, Vec<u8>), SshError> {
    let authority = host_port(host, port);
    let request_text = format!("GET http://{authority}{path}");
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| SshError::Http {
        address: session.address(),
        request: request_text.clone(),
        source,
    };
    let exchange = async {
        let request =
            Request::get(path).header(HOST, &authority).body(Empty::<Bytes>::new()).map_err(|e| failed(e.into()))?;
        let stream = session.open_tcp_stream(host, port).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| failed(e.into()))?;
        tokio::spawn(connection);
        let response = sender.send_request(request).await.map_err(|e| failed(e.into()))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY).collect().await.map_err(failed)?;
        Ok((status, body.to_bytes().to_vec()))
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(result) => result,
        Err(_) => Err(SshError::Timeout { address: session.address(), command: request_text, timeout: limit }),
    }
}
