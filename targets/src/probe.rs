//! Health probes of an agent container: is it running, does `GET /health/live` answer 200,
//! what do `status` and `version` of `GET /health` say, and what does the engine say about
//! it (an exit, restarts, its own health check; with the last log lines when that looks
//! wrong): the signals the gate fails on at once.
//!
//! The agent's port is not published; it is reached at the container's address on its
//! network — from here for a local engine, from the node itself (through the SSH
//! connection) for a remote one, and from inside the container (an exec through the
//! engine, [`crate::docker::exec`]) for a `tcp://` engine.

use std::sync::Arc;
use std::time::Duration;

use bollard::models::{ContainerState, ContainerStateStatusEnum, HealthStatusEnum};
use orchestrator::gate::{EngineHealth, EngineReport, Exit, ProbeReport};

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
    let engine_report = engine_view(info.state.as_ref(), info.restart_count);
    let address = info
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .and_then(|n| n.get(target.network))
        .and_then(|n| n.ip_address.clone())
        .filter(|ip| !ip.is_empty());
    let mut report = ProbeReport { running, engine: engine_report, ..ProbeReport::default() };
    if report.engine.signal(0).is_some() {
        report.logs = crate::docker::health::last_logs(engine, target.container, crate::docker::health::LOG_TAIL).await;
    }
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

/// What the engine says about a container: restarts, how its process ended, its own check.
fn engine_view(state: Option<&ContainerState>, restart_count: Option<i64>) -> EngineReport {
    let Some(state) = state else { return EngineReport::default() };
    let status = state.status.unwrap_or(ContainerStateStatusEnum::EMPTY);
    let ended = matches!(
        status,
        ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD | ContainerStateStatusEnum::RESTARTING
    );
    let health = state.health.as_ref().and_then(|health| match health.status? {
        HealthStatusEnum::STARTING => Some(EngineHealth::Starting),
        HealthStatusEnum::HEALTHY => Some(EngineHealth::Healthy),
        HealthStatusEnum::UNHEALTHY => {
            let output = health.log.as_ref().and_then(|log| log.last()).and_then(|r| r.output.clone());
            Some(EngineHealth::Unhealthy { output: output.unwrap_or_default() })
        }
        _ => None,
    });
    EngineReport {
        restarts: restart_count.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        restarting: status == ContainerStateStatusEnum::RESTARTING,
        exit: ended.then(|| Exit { code: state.exit_code.unwrap_or(-1), oom_killed: state.oom_killed == Some(true) }),
        health,
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::{Health, HealthcheckResult};

    use super::*;

    fn state(status: ContainerStateStatusEnum, exit_code: i64, health: Option<HealthStatusEnum>) -> ContainerState {
        let log = Some(vec![HealthcheckResult { output: Some("wget: 503\n".into()), ..Default::default() }]);
        ContainerState {
            status: Some(status),
            running: Some(status == ContainerStateStatusEnum::RUNNING),
            exit_code: Some(exit_code),
            oom_killed: Some(false),
            health: health.map(|status| Health { status: Some(status), log: log.clone(), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn the_engines_view_carries_exits_restarts_and_its_own_check() {
        use ContainerStateStatusEnum as S;
        let view = |s: ContainerState, restarts| engine_view(Some(&s), Some(restarts));
        let running = view(state(S::RUNNING, 0, Some(HealthStatusEnum::HEALTHY)), 2);
        assert_eq!(
            running,
            EngineReport { restarts: 2, restarting: false, exit: None, health: Some(EngineHealth::Healthy) }
        );
        let exited = view(state(S::EXITED, 1, None), 0);
        assert_eq!(exited.exit, Some(Exit { code: 1, oom_killed: false }));
        assert_eq!(exited.signal(0).map(|s| s.name()), Some("exited"));
        let restarting = view(state(S::RESTARTING, 1, None), 3);
        assert!(restarting.restarting && restarting.exit.is_some());
        assert_eq!(restarting.signal(3).map(|s| s.name()), Some("restarting"));
        let unhealthy = view(state(S::RUNNING, 0, Some(HealthStatusEnum::UNHEALTHY)), 0);
        assert_eq!(unhealthy.health, Some(EngineHealth::Unhealthy { output: "wget: 503\n".into() }));
        assert_eq!(view(state(S::CREATED, 0, Some(HealthStatusEnum::STARTING)), 0).signal(0), None);
        assert_eq!(engine_view(None, None), EngineReport::default());
    }
}
