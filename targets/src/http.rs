//! One plain HTTP/1.1 GET over any byte stream (a TCP connection, an SSH channel): the
//! status and the body, read up to a limit so a misbehaving service cannot fill memory.

use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper::body::Bytes;
use hyper::header::HOST;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// The most of a response body kept.
pub const MAX_BODY: usize = 1024 * 1024;

/// Any failure of the exchange.
pub type HttpError = Box<dyn std::error::Error + Send + Sync>;

/// `GET {path}` with `Host: {authority}` over `stream`.
pub async fn get<S>(stream: S, authority: &str, path: &str) -> Result<(u16, Vec<u8>), HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request = Request::get(path).header(HOST, authority).body(Empty::<Bytes>::new())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_BODY).collect().await?;
    Ok((status, body.to_bytes().to_vec()))
}
