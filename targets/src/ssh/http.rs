//! Plain HTTP/1.1 through the SSH connection: a health probe of a container address that only
//! the remote host can reach (`GET http://10.0.3.5:3000/health` from the host itself).

use std::time::Duration;

use super::{Session, SshError, host_port};

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
    let exchange = async {
        let stream = session.open_tcp_stream(host, port).await?;
        crate::http::get(stream, &authority, path).await.map_err(|source| SshError::Http {
            address: session.address(),
            request: request_text.clone(),
            source,
        })
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(result) => result,
        Err(_) => Err(SshError::Timeout { address: session.address(), command: request_text, timeout: limit }),
    }
}
