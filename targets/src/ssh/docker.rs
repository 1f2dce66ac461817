//! The Docker Engine of an SSH-reached host, through russh instead of the `ssh` binary.
//!
//! Each API request opens a new `direct-streamlocal` channel to the engine's socket, speaks
//! HTTP/1.1 on it (hyper) and hands bollard the response as it arrives: request bodies (an
//! image to load, a build context) are streamed out as bollard produces them, and response
//! bodies (an exported image, `docker events`, logs, build progress) are streamed in as the
//! engine sends them. Nothing is buffered whole. Upgraded connections (attach, exec) work too.

use std::sync::Arc;

use bollard::errors::Error as BollardError;
use bollard::{API_DEFAULT_VERSION, BollardRequest, Docker};
use hyper::Response;
use hyper::body::Incoming;
use hyper::header::{HOST, HeaderValue};
use hyper_util::rt::TokioIo;

use super::{Session, SshError, SshOptions, connect, host_port};
use crate::docker::Engine;

/// Where the Docker Engine listens on a Linux host.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// Seconds bollard waits for the headers of a response (as in `docker::connect`).
const TIMEOUT_SECS: u64 = 600;

/// A bollard client for the engine listening on `socket` on the session's host, with the API
/// version negotiated (engines down to API 1.41 work).
pub async fn docker_over_ssh(session: Arc<Session>, socket: &str) -> Result<Docker, SshError> {
    let address = format!("ssh://{}", session.address());
    let socket = socket.to_string();
    let transport = move |request: BollardRequest| {
        let session = Arc::clone(&session);
        let socket = socket.clone();
        async move { forward(&session, &socket, request).await }
    };
    let failed = |source| SshError::Docker { address: address.clone(), source };
    let docker =
        Docker::connect_with_custom_transport(transport, Some("http://docker"), TIMEOUT_SECS, API_DEFAULT_VERSION)
            .map_err(failed)?;
    docker.negotiate_version().await.map_err(failed)
}

/// Connects to `user@host:port` and to the Docker Engine there: the [`Engine`] (address
/// `ssh://user@host:port`) and the session, for commands and probes on the same connection.
pub async fn connect_engine(
    node: &str,
    host: &str,
    port: u16,
    user: &str,
    options: &SshOptions,
) -> Result<(Engine, Arc<Session>), SshError> {
    let session = Arc::new(connect(host, port, user, options).await?);
    let docker = docker_over_ssh(Arc::clone(&session), DEFAULT_DOCKER_SOCKET).await?;
    let address = format!("ssh://{user}@{}", host_port(host, port));
    Ok((Engine::new(docker, node, address), session))
}

/// One API request on its own channel. The connection task lives until the response body
/// (or the upgraded stream) is finished, then closes the channel.
async fn forward(session: &Session, socket: &str, request: BollardRequest) -> Result<Response<Incoming>, BollardError> {
    let stream = session.open_unix_stream(socket).await.map_err(std::io::Error::other)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection.with_upgrades());
    Ok(sender.send_request(origin_form(request)).await?)
}

/// bollard addresses custom transports with absolute URIs (`http://docker/v1.41/…`); on a
/// connection of its own a request carries the path and a `Host` header instead.
pub(crate) fn origin_form(request: BollardRequest) -> BollardRequest {
    let (mut parts, body) = request.into_parts();
    if let Some(path) = parts.uri.path_and_query().cloned() {
        parts.uri = path.into();
    }
    parts.headers.entry(HOST).or_insert(HeaderValue::from_static("docker"));
    BollardRequest::from_parts(parts, body)
}
