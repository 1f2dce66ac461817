//! Waiting for an agent container to pass the health gate ([`orchestrator::gate`]): what
//! `infra up` does for each agent container it creates or replaces. The rollout drives the
//! same gate through its state machine. This module only probes, reads the clock and
//! sleeps; the gate decides.

use std::collections::HashMap;
use std::time::Duration;

use orchestrator::gate::{ProbeReport, Rules};

use super::Engine;
use super::health::{LOG_TAIL, Readiness, last_logs};
use crate::probe::{self, Reach};

/// How agent containers are gated.
#[derive(Clone)]
pub struct GateOptions {
    /// The agents' health port and endpoints (`deployment.health`).
    pub port: u16,
    pub live_path: String,
    pub health_path: String,
    /// `deployment.update.min_healthy_time`.
    pub min_healthy_time: Duration,
    /// `deployment.update.probe_interval` and `probe_timeout`.
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    /// How each node's containers are reached for probes, by node name.
    pub reaches: HashMap<String, Reach>,
}

/// The version an image says it holds (`org.opencontainers.image.version`), if any: what
/// the gate expects `GET /health` to report.
pub async fn image_version(engine: &Engine, image: &str) -> Option<String> {
    let info = engine.call().inspect_image(image).await.ok()?;
    info.config?.labels?.get("org.opencontainers.image.version").cloned()
}

/// Probes `container` (reached at its address on `network`) every `probe_interval` until
/// the gate passes, fails on a definite signal, or `deadline` passes. The version expected
/// is `image`'s; `infra up` also waits for the engine's own health check to pass. Engine
/// errors are returned; a failed gate is a [`Readiness::Failed`] with the last log lines.
pub async fn wait_gate(
    engine: &Engine,
    options: &GateOptions,
    container: &str,
    network: &str,
    image: &str,
    deadline: Duration,
) -> Result<Readiness, bollard::errors::Error> {
    let reach = options.reaches.get(&engine.node).cloned().unwrap_or(Reach::Local);
    let version = image_version(engine, image).await;
    let rules = Rules {
        min_healthy_time_ms: millis(options.min_healthy_time),
        deadline_ms: millis(deadline),
        engine_check: true,
    };
    let target = probe::Target {
        container,
        network,
        port: options.port,
        live_path: &options.live_path,
        health_path: &options.health_path,
    };
    let probe = || async {
        match probe::probe(engine, &reach, &target, options.probe_timeout).await {
            Ok(report) => Ok(report),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                Ok(ProbeReport::default())
            }
            Err(error) => Err(error),
        }
    };
    match crate::gate::hold(version.as_deref(), rules, options.probe_interval, probe).await? {
        crate::gate::Held::Passed => Ok(Readiness::Ready),
        crate::gate::Held::Failed { failure, report } => {
            let logs = if report.logs.is_empty() { last_logs(engine, container, LOG_TAIL).await } else { report.logs };
            Ok(Readiness::Failed { reason: failure.to_string(), logs })
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
