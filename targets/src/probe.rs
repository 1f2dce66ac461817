//! Health probes of an agent container: is it running, does `GET /health/live` answer 200,
//! what do `status` and `version` of `GET /health` say.
//!
//! The agent's port is not published; it is reached at the container's address on its
//! network — from here for a local engine, from the node itself (through the SSH
//! connection) for a remote one, and from inside the container (an exec through the
//! engine, [`crate::docker::exec`]) for a `tcp://` engine.

use std::sync::Arc;
use std::time::Duration;

use orchestrator::rollout::ProbeReport;

use crate::docker::Engine;
use crate::ssh::Session;

/// How a node's containers are reached for probes.
#[derive(Clone)]
pub enum Reach {
    /// Directly over TCP (the engine runs on this machine).
    Local,
    /// From the node, through its SSH connection.
    Ssh(Arc<Session>),
    /// From inside the container, through the engine's exec API (a `tcp://` engine: the
    /// container addresses of another machine do not route from here).
    Engine,
}

async fn get_local(host: &str, port: u16, path: &str) -> Result<(u16, Vec<u8>), String> {
    let stream = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| e.to_string())?;
    crate::http::get(stream, &format!("{host}:{port}"), path).await.map_err(|e| e.to_string())
}

/// `GET http://host:port{path}` as the node sees it, within `limit`.
pub async fn http_get(
    reach: &Reach,
    host: &str,
    port: u16,
    path: &str,
    limit: Duration,
) -> Result<(u16, Vec<u8>), String> {
    match reach {
        Reach::Local => match tokio::time::timeout(limit, get_local(host, port, path)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {}s", limit.as_secs_f64())),
        },
        Reach::Ssh(session) => session.http_get(host, port, path, limit).await.map_err(|e| e.to_string()),
        Reach::Engine => Err("probes through the engine need the container: use `get`".into()),
    }
}

/// `GET path` on the container's `port`, the way `reach` gets there: at its `address` for
/// [`Reach::Local`] and [`Reach::Ssh`], inside `container` for [`Reach::Engine`].
pub async fn get(
    engine: &Engine,
    reach: &Reach,
    container: &str,
    address: &str,
    port: u16,
    path: &str,
    limit: Duration,
) -> Result<(u16, Vec<u8>), String> {
    match reach {
        Reach::Engine => crate::docker::exec::http_get(engine, container, port, path, limit).await,
        _ => http_get(reach, address, port, path, limit).await,
    }
}

/// Where to find an agent's health endpoints.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub container: &'a str,
    /// The network whose address to use.
    pub network: &'a str,
    pub port: u16,
    pub live_path: &'a str,
    pub health_path: &'a str,
}

/// Probes one agent container. Engine errors are returned (the node may be unreachable);
/// an endpoint that does not answer is a failed probe, not an error.
pub async fn probe(
    engine: &Engine,
    reach: &Reach,
    target: &Target<'_>,
    limit: Duration,
) -> Result<ProbeReport, bollard::errors::Error> {
    let info = engine.call().inspect_container(target.container, None).await?;
    let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
    let address = info
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .and_then(|n| n.get(target.network))
        .and_then(|n| n.ip_address.clone())
        .filter(|ip| !ip.is_empty());
    let mut report = ProbeReport { running, ..ProbeReport::default() };
    let Some(address) = address.filter(|_| running) else { return Ok(report) };
    if let Ok((status, _)) = get(engine, reach, target.container, &address, target.port, target.live_path, limit).await
    {
        report.live = status == 200;
    }
    if let Ok((_, body)) = get(engine, reach, target.container, &address, target.port, target.health_path, limit).await
        && let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&body)
    {
        report.status = doc.get("status").and_then(|s| s.as_str()).map(str::to_string);
        report.version = doc.get("version").and_then(|v| v.as_str()).map(str::to_string);
    }
    Ok(report)
}
